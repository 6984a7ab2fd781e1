//! Optional PostgreSQL storage for the keepers' records, and the up/degraded tracking that the
//! chain keepers' Redis cache (in `keeper-ton`) shares.
//!
//! Stores are optional and neither is ever on the critical path: the chain is the source of
//! truth. [`Store::connect`] never fails; a store that is unreachable at start or lost mid-run
//! *degrades* — one log line, `keeper_store_up{store}` = 0, alert `store_degraded:{store}` — and
//! every call to it returns [`StoreError::Unavailable`] at once until a background probe sees it
//! answer again (then the alert resolves). Calls that do reach a store are bounded by a short
//! timeout, so a cycle never hangs on storage. The store logs its own failures; callers may ignore
//! the `Err` of a record call.

mod health;
pub mod pg;

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

use sqlx::PgPool;
use tracing::{info, warn};

pub use crate::migrations::{MigrationSet, Migrations};
pub use health::Health;
pub use pg::{column, migrate, pg_err};

use crate::alert::Alerter;
use crate::config::StorageSettings;
use crate::telemetry::metrics::Metrics;

/// Which store an operation concerns; also the `store` label of the store metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StoreKind {
    /// PostgreSQL: the records.
    Postgres,
    /// Redis: cache, pub/sub and the wallet lease.
    Redis,
}

impl StoreKind {
    /// The metric label and alert subject: `postgres` or `redis`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Redis => "redis",
        }
    }
}

impl fmt::Display for StoreKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a storage call did not happen or did not succeed. Never carries a password.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store has no URL configured; nothing was attempted.
    #[error("{store} is not configured")]
    NotConfigured {
        /// The store concerned.
        store: StoreKind,
    },
    /// The store is degraded (it failed earlier and has not answered a probe since); the call
    /// was skipped so the cycle is not slowed down.
    #[error("{store} is unavailable (degraded); {op} skipped")]
    Unavailable {
        /// The store concerned.
        store: StoreKind,
        /// The skipped operation.
        op: &'static str,
    },
    /// The store did not answer within the operation timeout.
    #[error("{store} did not answer {op} within {timeout:?}")]
    Timeout {
        /// The store concerned.
        store: StoreKind,
        /// The operation that timed out.
        op: &'static str,
        /// The bound that was exceeded.
        timeout: Duration,
    },
    /// A storage URL is unusable (the URL itself is not repeated: it may hold a password).
    #[error("{store} URL {url} is unusable: {problem}")]
    InvalidUrl {
        /// The store concerned.
        store: StoreKind,
        /// The URL with its password redacted.
        url: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The schema name is not a plain lower-case SQL identifier.
    #[error("schema {0:?} must be a lower-case SQL identifier (a-z, 0-9, _; at most 63)")]
    InvalidSchema(String),
    /// PostgreSQL answered with an error, or the connection failed.
    #[error("postgres {op} failed: {source}")]
    Postgres {
        /// The operation that failed.
        op: &'static str,
        /// The driver's error.
        #[source]
        source: sqlx::Error,
    },
    /// Applying the embedded migrations failed.
    #[error("migrating schema {schema} failed: {source}")]
    Migrate {
        /// The schema being migrated.
        schema: String,
        /// The migrator's error.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// Redis answered with an error, or the connection failed.
    #[error("redis {op} failed: {source}")]
    Redis {
        /// The operation that failed.
        op: &'static str,
        /// The client's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
        /// True when the server could not be reached or the connection broke.
        outage: bool,
    },
    /// An update addressed a row that does not exist.
    #[error("{table} has no row with id {id}")]
    NoSuchRow {
        /// The table.
        table: &'static str,
        /// The id looked for.
        id: i64,
    },
    /// A stored value is not one the keepers write (a column was edited by hand?).
    #[error("{table}.{column} holds unexpected value {value:?}")]
    BadValue {
        /// The table.
        table: &'static str,
        /// The column.
        column: &'static str,
        /// The value found.
        value: String,
    },
}

impl StoreError {
    /// True when the error means the store is unreachable (connection refused or lost, timeout),
    /// as opposed to the store answering with an error; only those degrade the store.
    pub fn is_outage(&self) -> bool {
        match self {
            Self::Unavailable { .. } | Self::Timeout { .. } => true,
            Self::Postgres { source, .. } => pg::is_outage(source),
            Self::Migrate { source, .. } => match source {
                sqlx::migrate::MigrateError::Execute(e) => pg::is_outage(e),
                _ => false,
            },
            Self::Redis { outage, .. } => *outage,
            Self::NotConfigured { .. }
            | Self::InvalidUrl { .. }
            | Self::InvalidSchema(_)
            | Self::NoSuchRow { .. }
            | Self::BadValue { .. } => false,
        }
    }

    /// True when the store is simply not configured (callers usually ignore this one silently).
    pub fn is_not_configured(&self) -> bool {
        matches!(self, Self::NotConfigured { .. })
    }
}

/// Time bounds of storage calls.
#[derive(Debug, Clone, Copy)]
pub struct StoreTimeouts {
    /// Bound of one connection attempt (at start, by probes, for the Postgres lease connection).
    pub connect: Duration,
    /// Bound of one operation, connection included.
    pub op: Duration,
    /// How often a background probe checks each configured store (and revives a degraded one).
    pub probe_every: Duration,
}

impl Default for StoreTimeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(3),
            op: Duration::from_secs(2),
            probe_every: Duration::from_secs(5),
        }
    }
}

/// Bound of one migration run once connected (the migrator may wait for another instance's).
const MIGRATION_LIMIT: Duration = Duration::from_secs(60);

/// Handle to the optional stores; cheap to clone, shared by the keeper's tasks.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    postgres: Option<PgState>,
    /// A URL was configured but could not be used: a wallet lease must not fall back to
    /// another backend (or to "always held") because of it.
    postgres_unusable: bool,
    timeouts: StoreTimeouts,
    metrics: Arc<Metrics>,
    alerter: Alerter,
}

struct PgState {
    pool: PgPool,
    options: sqlx::postgres::PgConnectOptions,
    schema: String,
    /// What this binary migrates at start.
    migrations: Migrations,
    /// Set once migrations were applied (or were not asked for), so a probe that revives a
    /// database that was down at start applies them then.
    migrated: tokio::sync::Mutex<bool>,
    health: Health,
}

impl fmt::Debug for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Store")
            .field("postgres", &self.inner.postgres.as_ref().map(|p| &p.schema))
            .finish()
    }
}

impl Store {
    /// Connects to PostgreSQL if configured, with the default [`StoreTimeouts`]. Never fails: an
    /// unusable or unreachable database is logged, alerted and degraded, and the keeper runs on.
    pub async fn connect(
        settings: &StorageSettings,
        metrics: Arc<Metrics>,
        alerter: Alerter,
    ) -> Store {
        Self::connect_with(settings, metrics, alerter, StoreTimeouts::default()).await
    }

    /// Like [`Store::connect`] with explicit time bounds.
    pub async fn connect_with(
        settings: &StorageSettings,
        metrics: Arc<Metrics>,
        alerter: Alerter,
        timeouts: StoreTimeouts,
    ) -> Store {
        let pg_health = || Health::new(StoreKind::Postgres, metrics.clone(), alerter.clone());

        let postgres = match &settings.database_url {
            None => None,
            Some(url) => match pg::pool(url, &settings.db_schema, timeouts) {
                Ok((pool, options)) => Some(PgState {
                    pool,
                    options,
                    schema: settings.db_schema.clone(),
                    migrations: settings.migrations,
                    migrated: tokio::sync::Mutex::new(!settings.migrate_on_start),
                    health: pg_health(),
                }),
                Err(e) => {
                    // Config validation normally catches this; stay up without records.
                    warn!(error = %e, "PostgreSQL is configured but unusable: records are off");
                    pg_health().degrade(&e);
                    None
                }
            },
        };
        let postgres_unusable = postgres.is_none() && settings.database_url.is_some();
        let store = Store {
            inner: Arc::new(Inner {
                postgres,
                postgres_unusable,
                timeouts,
                metrics,
                alerter,
            }),
        };
        // First look now, so the start-up log says where things stand.
        probe_postgres(store.inner.clone()).await;
        if store.inner.postgres.is_some() {
            tokio::spawn(probe_loop(Arc::downgrade(&store.inner)));
        }
        store
    }

    /// A store with nothing configured (tests, tools): records nothing.
    pub async fn none(metrics: Arc<Metrics>) -> Store {
        let settings = StorageSettings::default();
        Self::connect(&settings, metrics, Alerter::disabled()).await
    }

    /// True when a database URL is configured (whether or not it answers right now).
    pub fn postgres_configured(&self) -> bool {
        self.inner.postgres.is_some()
    }

    /// True when a database URL was configured but could not be used (a wallet lease must then
    /// not fall back to "always held").
    pub fn postgres_unusable(&self) -> bool {
        self.inner.postgres_unusable
    }

    /// True while PostgreSQL is configured and not degraded.
    pub fn postgres_up(&self) -> bool {
        self.inner
            .postgres
            .as_ref()
            .is_some_and(|p| p.health.is_up())
    }

    /// How to open a dedicated session (the wallet lease's), when PostgreSQL is configured.
    pub fn pg_connect_options(&self) -> Option<&sqlx::postgres::PgConnectOptions> {
        self.inner.postgres.as_ref().map(|p| &p.options)
    }

    /// Reports a PostgreSQL call made outside [`Store::pg`] (a dedicated session such as the
    /// wallet lease's) that failed, so health, metrics and alerts see it.
    pub fn report_pg_failure(&self, e: &StoreError) {
        if let Some(pg) = &self.inner.postgres {
            pg.health.count_error();
            pg.health.failed(e);
        }
    }

    /// The time bounds of storage calls.
    pub fn timeouts(&self) -> StoreTimeouts {
        self.inner.timeouts
    }

    /// The registry the store reports to.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.inner.metrics
    }

    /// A health tracker for another store of `kind` (the Redis cache), reporting to the same
    /// metrics and alerter as this one.
    pub fn health_for(&self, kind: StoreKind) -> Health {
        Health::new(kind, self.inner.metrics.clone(), self.inner.alerter.clone())
    }

    /// The PostgreSQL pool (connections use the keepers' schema), for queries this module does
    /// not offer; calls through it are not bounded or health-tracked.
    pub fn pg_pool(&self) -> Option<&PgPool> {
        self.inner.postgres.as_ref().map(|p| &p.pool)
    }

    /// Runs a PostgreSQL operation gated by health and bounded by the op timeout: how keepers
    /// read and write their own tables.
    pub async fn pg<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(PgPool) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let Some(pg) = &self.inner.postgres else {
            return Err(StoreError::NotConfigured {
                store: StoreKind::Postgres,
            });
        };
        let fut = f(pg.pool.clone());
        bounded(&pg.health, op, self.inner.timeouts.op, fut).await
    }
}

/// Gates on health, bounds by `limit`, and feeds the outcome back into health.
pub async fn bounded<T>(
    health: &Health,
    op: &'static str,
    limit: Duration,
    fut: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    if !health.is_up() {
        let e = StoreError::Unavailable {
            store: health.kind(),
            op,
        };
        health.count_error();
        return Err(e);
    }
    let result = match tokio::time::timeout(limit, fut).await {
        Ok(r) => r,
        Err(_) => Err(StoreError::Timeout {
            store: health.kind(),
            op,
            timeout: limit,
        }),
    };
    match &result {
        Ok(_) => health.ok(),
        Err(e) => {
            health.count_error();
            health.failed(e);
        }
    }
    result
}

/// One look at PostgreSQL: `SELECT 1`, and the migrations if still due.
async fn probe_postgres(inner: Arc<Inner>) {
    let Some(pg) = &inner.postgres else { return };
    let t = inner.timeouts;
    let mut migrated = pg.migrated.lock().await;
    let result = if *migrated {
        let limit = t.connect.max(t.op);
        tokio::time::timeout(limit, pg::ping(&pg.pool))
            .await
            .unwrap_or(Err(StoreError::Timeout {
                store: StoreKind::Postgres,
                op: "probe",
                timeout: limit,
            }))
    } else {
        let r = pg::migrate_with(
            &pg.options,
            &pg.schema,
            pg.migrations,
            t.connect,
            MIGRATION_LIMIT,
        )
        .await;
        if r.is_ok() {
            info!(schema = %pg.schema, "database migrations applied");
            *migrated = true;
        }
        r
    };
    drop(migrated);
    match result {
        Ok(()) => pg.health.ok(),
        // A database that answers but cannot be migrated is as good as down for records.
        Err(e) => pg.health.degrade(&e),
    }
}

async fn probe_loop(inner: Weak<Inner>) {
    let every = match inner.upgrade() {
        Some(i) => i.timeouts.probe_every,
        None => return,
    };
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(inner) = inner.upgrade() else { return };
        probe_postgres(inner).await;
    }
}

//! PostgreSQL: connection options bound to the keepers' schema, the embedded migrations, and the
//! typed records (tables agreed in `migrations/0001_keepers.sql`).
//!
//! Plain `sqlx::query` with binds throughout (no compile-time checked macros: building must not
//! need a database). The free functions here take a pool and are neither bounded nor
//! health-tracked; [`super::Store`] wraps them with both.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::migrate::{Migrate, MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions, PgRow};
use sqlx::{AssertSqlSafe, Connection, PgPool, Row};

use super::{StoreError, StoreKind, StoreTimeouts};
use crate::secret::SecretUrl;

/// The migrations in `migrations/`, embedded at build time.
pub static MIGRATOR: Migrator = sqlx::migrate!("../migrations");

/// The migrator's bookkeeping table, unqualified: it lands in the keepers' schema.
const MIGRATIONS_TABLE: &str = "_sqlx_migrations";

/// Session name of the keepers' pooled connections (visible in `pg_stat_activity`).
const APPLICATION_NAME: &str = "keeper";

fn pg_err(op: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Postgres { op, source }
}

/// True when a driver error means the server could not be reached or the connection broke.
pub(super) fn is_outage(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        // Server shutting down or refusing sessions: admin_shutdown, crash_shutdown,
        // cannot_connect_now, too_many_connections.
        sqlx::Error::Database(d) => matches!(
            d.code().as_deref(),
            Some("57P01" | "57P02" | "57P03" | "53300")
        ),
        _ => false,
    }
}

/// Rejects anything but a plain lower-case identifier: the schema name is spliced into SQL and
/// into the `search_path` startup option.
fn check_schema(schema: &str) -> Result<(), StoreError> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && schema
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidSchema(schema.to_owned()))
    }
}

/// Connection options whose sessions start with `search_path` set to `schema` only, so every
/// unqualified name — the migrator's `_sqlx_migrations` included — lives in the keepers' schema
/// and `public` is never touched.
pub fn connect_options(url: &SecretUrl, schema: &str) -> Result<PgConnectOptions, StoreError> {
    check_schema(schema)?;
    let options = PgConnectOptions::from_str(url.expose()).map_err(|e| StoreError::InvalidUrl {
        store: StoreKind::Postgres,
        url: url.redacted(),
        // sqlx's message names the URL part at fault, never the URL itself.
        problem: e.to_string(),
    })?;
    Ok(options
        .options([("search_path", schema)])
        .application_name(APPLICATION_NAME))
}

/// A lazily connecting pool: building it never waits for the server.
pub(super) fn pool(
    url: &SecretUrl,
    schema: &str,
    timeouts: StoreTimeouts,
) -> Result<(PgPool, PgConnectOptions), StoreError> {
    let options = connect_options(url, schema)?;
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .min_connections(0)
        .acquire_timeout(timeouts.op)
        .idle_timeout(Duration::from_secs(300))
        .connect_lazy_with(options.clone());
    Ok((pool, options))
}

/// Creates the schema when missing and applies the embedded migrations on `conn` (whose
/// `search_path` is that schema). Applying twice is a no-op.
pub(super) async fn apply_migrations(
    conn: &mut PgConnection,
    schema: &str,
) -> Result<(), StoreError> {
    check_schema(schema)?;
    let create = format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"");
    if let Err(e) = sqlx::raw_sql(AssertSqlSafe(create))
        .execute(&mut *conn)
        .await
    {
        // Two instances creating the schema at once: the loser sees a duplicate; that is fine.
        let duplicate = matches!(&e, sqlx::Error::Database(d)
            if matches!(d.code().as_deref(), Some("23505" | "42P06")));
        if !duplicate {
            return Err(StoreError::Postgres {
                op: "create schema",
                source: e,
            });
        }
    }
    let migrate_err = |source| StoreError::Migrate {
        schema: schema.to_owned(),
        source,
    };
    conn.lock().await.map_err(migrate_err)?;
    let result = run_locked(conn).await;
    let unlocked = conn.unlock().await;
    result.map_err(migrate_err)?;
    unlocked.map_err(migrate_err)
}

/// What `Migrator::run` does, spelled out over the `Migrate` trait: `Migrator::run` is generic
/// over `Acquire`, and that bound makes any spawned future calling it fail the compiler's
/// "not general enough" check (the probe that migrates a late database is spawned).
async fn run_locked(conn: &mut PgConnection) -> Result<(), MigrateError> {
    conn.ensure_migrations_table(MIGRATIONS_TABLE).await?;
    if let Some(version) = conn.dirty_version(MIGRATIONS_TABLE).await? {
        return Err(MigrateError::Dirty(version));
    }
    let applied = conn.list_applied_migrations(MIGRATIONS_TABLE).await?;
    if let Some(gone) = applied.iter().find(|a| !MIGRATOR.version_exists(a.version)) {
        return Err(MigrateError::VersionMissing(gone.version));
    }
    for migration in MIGRATOR.iter() {
        if migration.migration_type.is_down_migration() {
            continue;
        }
        match applied.iter().find(|a| a.version == migration.version) {
            Some(done) if done.checksum != migration.checksum => {
                return Err(MigrateError::VersionMismatch(migration.version));
            }
            Some(_) => {}
            None => {
                conn.apply(MIGRATIONS_TABLE, migration).await?;
            }
        }
    }
    Ok(())
}

/// Applies the embedded migrations to the database at `url`, in `schema` (created if missing).
/// Used by the `migrate` subcommand and at start when `migrate_on_start` is set.
pub async fn migrate(url: &SecretUrl, schema: &str) -> Result<(), StoreError> {
    let options = connect_options(url, schema)?;
    migrate_with(
        &options,
        schema,
        Duration::from_secs(30),
        Duration::from_secs(300),
    )
    .await
}

/// Migrates over a dedicated session, never a pooled one: the migrator holds a session-level
/// advisory lock, and if a timeout abandons the run, dropping the session is what frees it.
pub(super) async fn migrate_with(
    options: &PgConnectOptions,
    schema: &str,
    connect_limit: Duration,
    run_limit: Duration,
) -> Result<(), StoreError> {
    let mut conn = tokio::time::timeout(connect_limit, PgConnection::connect_with(options))
        .await
        .map_err(|_| StoreError::Timeout {
            store: StoreKind::Postgres,
            op: "connect",
            timeout: connect_limit,
        })?
        .map_err(pg_err("connect"))?;
    let result = tokio::time::timeout(run_limit, apply_migrations(&mut conn, schema))
        .await
        .unwrap_or(Err(StoreError::Timeout {
            store: StoreKind::Postgres,
            op: "migrate",
            timeout: run_limit,
        }));
    // Closing politely is a courtesy; the outcome is the migration's.
    let _ = tokio::time::timeout(connect_limit, conn.close()).await;
    result
}

pub(super) async fn ping(pool: &PgPool) -> Result<(), StoreError> {
    sqlx::query("SELECT 1")
        .execute(pool)
        .await
        .map(|_| ())
        .map_err(pg_err("ping"))
}

macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident, $table:literal, $column:literal { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name {
            $($(#[$vmeta])* $variant),+
        }

        impl $name {
            /// The text stored in the column.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $text),+
                }
            }

            fn parse(value: &str) -> Result<Self, StoreError> {
                match value {
                    $($text => Ok(Self::$variant),)+
                    other => Err(StoreError::BadValue {
                        table: $table,
                        column: $column,
                        value: other.to_owned(),
                    }),
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(
    /// Why a price update was sent (`pricing_oracle_updates.reason`).
    UpdateReason, "pricing_oracle_updates", "reason" {
        /// The aggregate moved at least `deviation_bps` from the on-chain price.
        Deviation = "deviation",
        /// The on-chain value was older than the heartbeat.
        Heartbeat = "heartbeat",
        /// `--force`.
        Forced = "forced",
        /// No on-chain value was known.
        Initial = "initial",
    }
);

text_enum!(
    /// Where a price update stands (`pricing_oracle_updates.status`).
    UpdateStatus, "pricing_oracle_updates", "status" {
        /// Sent to the chain, not yet confirmed.
        Sent = "sent",
        /// The wallet seqno moved and the oracle reads back the value.
        Confirmed = "confirmed",
        /// Expired, rejected or did not land.
        Failed = "failed",
        /// `--dry-run`: built and signed, never sent.
        DryRun = "dry_run",
    }
);

text_enum!(
    /// Health verdict of a bridge (`bridge_health_snapshots.status`).
    BridgeStatus, "bridge_health_snapshots", "status" {
        /// Every signal is fine.
        Healthy = "healthy",
        /// Some signal is off.
        Degraded = "degraded",
        /// The bridge is considered down.
        Offline = "offline",
        /// Not enough signals to tell.
        Unknown = "unknown",
    }
);

text_enum!(
    /// Where a backup run stands (`backup_runs.status`).
    BackupStatus, "backup_runs", "status" {
        /// Started, not finished (or the process died).
        Running = "running",
        /// Stored (and verified when asked).
        Success = "success",
        /// Failed; `error` says why.
        Failed = "failed",
    }
);

/// A price update to record (one row of `pricing_oracle_updates`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewPriceUpdate {
    /// Asset symbol (`USDT`).
    pub asset: String,
    /// On-chain asset id.
    pub asset_id: i32,
    /// Price with 6 decimals.
    pub price_micro: i64,
    /// The per-source quotes that made the aggregate (a JSON array).
    pub quotes: serde_json::Value,
    /// Why it is published.
    pub reason: UpdateReason,
    /// The sending wallet's address.
    pub wallet: String,
    /// The wallet seqno the message was signed for.
    pub seqno: Option<i64>,
    /// Hash of the external message, once known.
    pub message_hash: Option<String>,
    /// Initial status: usually `sent` or `dry_run`.
    pub status: UpdateStatus,
    /// The aggregate's observation time (the on-chain timestamp).
    pub observed_at: DateTime<Utc>,
}

/// The outcome of a recorded price update. `None` fields keep what is stored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatusChange {
    /// The new status.
    pub status: UpdateStatus,
    /// Why it failed.
    pub error: Option<String>,
    /// Hash of the external message that landed (or was last sent).
    pub message_hash: Option<String>,
    /// When the chain confirmed it.
    pub confirmed_at: Option<DateTime<Utc>>,
}

/// A recorded price update.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PriceUpdateRecord {
    /// Row id.
    pub id: i64,
    /// Asset symbol.
    pub asset: String,
    /// On-chain asset id.
    pub asset_id: i32,
    /// Price with 6 decimals.
    pub price_micro: i64,
    /// Per-source quotes (JSON array).
    pub quotes: serde_json::Value,
    /// Why it was published.
    pub reason: UpdateReason,
    /// Sending wallet.
    pub wallet: String,
    /// Wallet seqno used.
    pub seqno: Option<i64>,
    /// External message hash.
    pub message_hash: Option<String>,
    /// Where it stands.
    pub status: UpdateStatus,
    /// Why it failed.
    pub error: Option<String>,
    /// Observation time of the aggregate.
    pub observed_at: DateTime<Utc>,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
    /// When the chain confirmed it.
    pub confirmed_at: Option<DateTime<Utc>>,
}

/// A bridge health snapshot to record.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct NewBridgeSnapshot {
    /// On-chain bridge id.
    pub bridge_id: i32,
    /// Bridge name.
    pub bridge: String,
    /// Score 0..1.
    pub score: f64,
    /// Verdict.
    pub status: BridgeStatus,
    /// The on-chain `is_online` bit.
    pub is_online: bool,
    /// Last time seen healthy or active.
    pub last_seen: Option<DateTime<Utc>>,
    /// The signals that decided it (a JSON array).
    pub signals: serde_json::Value,
    /// Whether this cycle published it on-chain.
    pub published: bool,
    /// Hash of the external message, when published.
    pub message_hash: Option<String>,
}

/// A recorded bridge health snapshot.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BridgeSnapshotRecord {
    /// Row id.
    pub id: i64,
    /// On-chain bridge id.
    pub bridge_id: i32,
    /// Bridge name.
    pub bridge: String,
    /// Score 0..1.
    pub score: f64,
    /// Verdict.
    pub status: BridgeStatus,
    /// The on-chain `is_online` bit.
    pub is_online: bool,
    /// Last time seen healthy or active.
    pub last_seen: Option<DateTime<Utc>>,
    /// Deciding signals (JSON array).
    pub signals: serde_json::Value,
    /// Whether it was published on-chain.
    pub published: bool,
    /// External message hash.
    pub message_hash: Option<String>,
    /// When it was recorded.
    pub created_at: DateTime<Utc>,
}

/// How a backup run ended; start from [`BackupOutcome::success`] or [`BackupOutcome::failed`].
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackupOutcome {
    /// Final status (`success` or `failed`).
    pub status: BackupStatus,
    /// Local path of the artifact.
    pub location: Option<String>,
    /// Object key in S3-compatible storage.
    pub remote_key: Option<String>,
    /// Artifact size.
    pub size_bytes: Option<i64>,
    /// Hex SHA-256 of the artifact.
    pub sha256: Option<String>,
    /// The JSON manifest.
    pub manifest: Option<serde_json::Value>,
    /// `list` or `restore`.
    pub verify_mode: Option<String>,
    /// Whether verification passed.
    pub verified: Option<bool>,
    /// Why it failed.
    pub error: Option<String>,
}

impl BackupOutcome {
    /// A successful run; fill in the artifact fields.
    pub fn success() -> Self {
        Self {
            status: BackupStatus::Success,
            location: None,
            remote_key: None,
            size_bytes: None,
            sha256: None,
            manifest: None,
            verify_mode: None,
            verified: None,
            error: None,
        }
    }

    /// A failed run and why.
    pub fn failed(error: impl Into<String>) -> Self {
        Self {
            status: BackupStatus::Failed,
            error: Some(error.into()),
            ..Self::success()
        }
    }
}

/// A recorded backup run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackupRunRecord {
    /// Row id.
    pub id: i64,
    /// Start time.
    pub started_at: DateTime<Utc>,
    /// End time.
    pub finished_at: Option<DateTime<Utc>>,
    /// Where it stands.
    pub status: BackupStatus,
    /// The database dumped.
    pub database: String,
    /// Local path of the artifact.
    pub location: Option<String>,
    /// Object key in S3-compatible storage.
    pub remote_key: Option<String>,
    /// Artifact size.
    pub size_bytes: Option<i64>,
    /// Hex SHA-256.
    pub sha256: Option<String>,
    /// The JSON manifest.
    pub manifest: Option<serde_json::Value>,
    /// `list` or `restore`.
    pub verify_mode: Option<String>,
    /// Whether verification passed.
    pub verified: Option<bool>,
    /// Why it failed.
    pub error: Option<String>,
}

fn get<'r, T>(row: &'r PgRow, column: &'static str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres>,
{
    row.try_get(column).map_err(pg_err("decode row"))
}

const PRICE_COLUMNS: &str = "id, asset, asset_id, price_micro, quotes, reason, wallet, seqno, \
     message_hash, status, error, observed_at, created_at, confirmed_at";

fn price_record(row: &PgRow) -> Result<PriceUpdateRecord, StoreError> {
    Ok(PriceUpdateRecord {
        id: get(row, "id")?,
        asset: get(row, "asset")?,
        asset_id: get(row, "asset_id")?,
        price_micro: get(row, "price_micro")?,
        quotes: get(row, "quotes")?,
        reason: UpdateReason::parse(get(row, "reason")?)?,
        wallet: get(row, "wallet")?,
        seqno: get(row, "seqno")?,
        message_hash: get(row, "message_hash")?,
        status: UpdateStatus::parse(get(row, "status")?)?,
        error: get(row, "error")?,
        observed_at: get(row, "observed_at")?,
        created_at: get(row, "created_at")?,
        confirmed_at: get(row, "confirmed_at")?,
    })
}

/// Inserts a price update; returns its id.
pub async fn insert_price_update(pool: &PgPool, u: &NewPriceUpdate) -> Result<i64, StoreError> {
    sqlx::query_scalar(
        "INSERT INTO pricing_oracle_updates \
         (asset, asset_id, price_micro, quotes, reason, wallet, seqno, message_hash, status, observed_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) RETURNING id",
    )
    .bind(&u.asset)
    .bind(u.asset_id)
    .bind(u.price_micro)
    .bind(&u.quotes)
    .bind(u.reason.as_str())
    .bind(&u.wallet)
    .bind(u.seqno)
    .bind(&u.message_hash)
    .bind(u.status.as_str())
    .bind(u.observed_at)
    .fetch_one(pool)
    .await
    .map_err(pg_err("insert price update"))
}

/// Sets the status of price update `id`; `None` fields of `change` keep their stored value.
pub async fn set_price_update_status(
    pool: &PgPool,
    id: i64,
    change: &StatusChange,
) -> Result<(), StoreError> {
    let done = sqlx::query(
        "UPDATE pricing_oracle_updates SET status = $2, error = COALESCE($3, error), \
         message_hash = COALESCE($4, message_hash), confirmed_at = COALESCE($5, confirmed_at) \
         WHERE id = $1",
    )
    .bind(id)
    .bind(change.status.as_str())
    .bind(&change.error)
    .bind(&change.message_hash)
    .bind(change.confirmed_at)
    .execute(pool)
    .await
    .map_err(pg_err("update price update status"))?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NoSuchRow {
            table: "pricing_oracle_updates",
            id,
        });
    }
    Ok(())
}

/// The newest update of `asset`.
pub async fn latest_price_update(
    pool: &PgPool,
    asset: &str,
) -> Result<Option<PriceUpdateRecord>, StoreError> {
    let sql = format!(
        "SELECT {PRICE_COLUMNS} FROM pricing_oracle_updates WHERE asset = $1 \
         ORDER BY created_at DESC, id DESC LIMIT 1"
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(asset)
        .fetch_optional(pool)
        .await
        .map_err(pg_err("read latest price update"))?;
    row.as_ref().map(price_record).transpose()
}

/// The newest update of every asset, ordered by asset.
pub async fn latest_price_updates(pool: &PgPool) -> Result<Vec<PriceUpdateRecord>, StoreError> {
    let sql = format!(
        "SELECT DISTINCT ON (asset) {PRICE_COLUMNS} FROM pricing_oracle_updates \
         ORDER BY asset, created_at DESC, id DESC"
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .fetch_all(pool)
        .await
        .map_err(pg_err("read latest price updates"))?;
    rows.iter().map(price_record).collect()
}

const BRIDGE_COLUMNS: &str = "id, bridge_id, bridge, score, status, is_online, last_seen, signals, \
     published, message_hash, created_at";

fn bridge_record(row: &PgRow) -> Result<BridgeSnapshotRecord, StoreError> {
    Ok(BridgeSnapshotRecord {
        id: get(row, "id")?,
        bridge_id: get(row, "bridge_id")?,
        bridge: get(row, "bridge")?,
        score: get(row, "score")?,
        status: BridgeStatus::parse(get(row, "status")?)?,
        is_online: get(row, "is_online")?,
        last_seen: get(row, "last_seen")?,
        signals: get(row, "signals")?,
        published: get(row, "published")?,
        message_hash: get(row, "message_hash")?,
        created_at: get(row, "created_at")?,
    })
}

/// Inserts a bridge snapshot; returns its id.
pub async fn insert_bridge_snapshot(
    pool: &PgPool,
    s: &NewBridgeSnapshot,
) -> Result<i64, StoreError> {
    sqlx::query_scalar(
        "INSERT INTO bridge_health_snapshots \
         (bridge_id, bridge, score, status, is_online, last_seen, signals, published, message_hash) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING id",
    )
    .bind(s.bridge_id)
    .bind(&s.bridge)
    .bind(s.score)
    .bind(s.status.as_str())
    .bind(s.is_online)
    .bind(s.last_seen)
    .bind(&s.signals)
    .bind(s.published)
    .bind(&s.message_hash)
    .fetch_one(pool)
    .await
    .map_err(pg_err("insert bridge snapshot"))
}

/// The newest snapshot of bridge `bridge_id`.
pub async fn latest_bridge_snapshot(
    pool: &PgPool,
    bridge_id: i32,
) -> Result<Option<BridgeSnapshotRecord>, StoreError> {
    let sql = format!(
        "SELECT {BRIDGE_COLUMNS} FROM bridge_health_snapshots WHERE bridge_id = $1 \
         ORDER BY created_at DESC, id DESC LIMIT 1"
    );
    let row = sqlx::query(AssertSqlSafe(sql))
        .bind(bridge_id)
        .fetch_optional(pool)
        .await
        .map_err(pg_err("read latest bridge snapshot"))?;
    row.as_ref().map(bridge_record).transpose()
}

/// The newest snapshot of every bridge, ordered by bridge id.
pub async fn latest_bridge_snapshots(
    pool: &PgPool,
) -> Result<Vec<BridgeSnapshotRecord>, StoreError> {
    let sql = format!(
        "SELECT DISTINCT ON (bridge_id) {BRIDGE_COLUMNS} FROM bridge_health_snapshots \
         ORDER BY bridge_id, created_at DESC, id DESC"
    );
    let rows = sqlx::query(AssertSqlSafe(sql))
        .fetch_all(pool)
        .await
        .map_err(pg_err("read latest bridge snapshots"))?;
    rows.iter().map(bridge_record).collect()
}

const BACKUP_COLUMNS: &str = "id, started_at, finished_at, status, database, location, remote_key, \
     size_bytes, sha256, manifest, verify_mode, verified, error";

fn backup_record(row: &PgRow) -> Result<BackupRunRecord, StoreError> {
    Ok(BackupRunRecord {
        id: get(row, "id")?,
        started_at: get(row, "started_at")?,
        finished_at: get(row, "finished_at")?,
        status: BackupStatus::parse(get(row, "status")?)?,
        database: get(row, "database")?,
        location: get(row, "location")?,
        remote_key: get(row, "remote_key")?,
        size_bytes: get(row, "size_bytes")?,
        sha256: get(row, "sha256")?,
        manifest: get(row, "manifest")?,
        verify_mode: get(row, "verify_mode")?,
        verified: get(row, "verified")?,
        error: get(row, "error")?,
    })
}

/// Inserts a `running` backup run for `database`; returns its id.
pub async fn start_backup_run(pool: &PgPool, database: &str) -> Result<i64, StoreError> {
    sqlx::query_scalar(
        "INSERT INTO backup_runs (status, database) VALUES ('running', $1) RETURNING id",
    )
    .bind(database)
    .fetch_one(pool)
    .await
    .map_err(pg_err("start backup run"))
}

/// Finishes backup run `id`: stamps `finished_at` and stores the outcome.
pub async fn finish_backup_run(
    pool: &PgPool,
    id: i64,
    o: &BackupOutcome,
) -> Result<(), StoreError> {
    let status = o.status;
    let done = sqlx::query(
        "UPDATE backup_runs SET finished_at = now(), status = $2, location = $3, remote_key = $4, \
         size_bytes = $5, sha256 = $6, manifest = $7, verify_mode = $8, verified = $9, error = $10 \
         WHERE id = $1",
    )
    .bind(id)
    .bind(status.as_str())
    .bind(&o.location)
    .bind(&o.remote_key)
    .bind(o.size_bytes)
    .bind(&o.sha256)
    .bind(&o.manifest)
    .bind(&o.verify_mode)
    .bind(o.verified)
    .bind(&o.error)
    .execute(pool)
    .await
    .map_err(pg_err("finish backup run"))?;
    if done.rows_affected() == 0 {
        return Err(StoreError::NoSuchRow {
            table: "backup_runs",
            id,
        });
    }
    Ok(())
}

/// The newest `limit` backup runs, newest first, optionally of one status only. Successful runs
/// are ordered by `finished_at` (served by the `(status, finished_at DESC)` index), the others
/// by `started_at`.
pub async fn latest_backup_runs(
    pool: &PgPool,
    status: Option<BackupStatus>,
    limit: u32,
) -> Result<Vec<BackupRunRecord>, StoreError> {
    let limit = i64::from(limit);
    let rows = match status {
        Some(BackupStatus::Success) => {
            let sql = format!(
                "SELECT {BACKUP_COLUMNS} FROM backup_runs WHERE status = 'success' \
                 ORDER BY finished_at DESC, id DESC LIMIT $1"
            );
            sqlx::query(AssertSqlSafe(sql)).bind(limit).fetch_all(pool).await
        }
        Some(other) => {
            let sql = format!(
                "SELECT {BACKUP_COLUMNS} FROM backup_runs WHERE status = $2 \
                 ORDER BY started_at DESC, id DESC LIMIT $1"
            );
            sqlx::query(AssertSqlSafe(sql))
                .bind(limit)
                .bind(other.as_str())
                .fetch_all(pool)
                .await
        }
        None => {
            let sql = format!(
                "SELECT {BACKUP_COLUMNS} FROM backup_runs ORDER BY started_at DESC, id DESC LIMIT $1"
            );
            sqlx::query(AssertSqlSafe(sql)).bind(limit).fetch_all(pool).await
        }
    }
    .map_err(pg_err("list backup runs"))?;
    rows.iter().map(backup_record).collect()
}

//! The chain keepers' stores: PostgreSQL (the shared [`Store`]) plus Redis for latest-value
//! hashes, pub/sub channels and the lease keys. Keepers name their own hashes and channels; every
//! key gets the configured prefix (`REDIS_PREFIX`). Redis degrades and recovers like PostgreSQL:
//! one log line, `keeper_store_up{store="redis"}`, alert `store_degraded:redis`.

use std::collections::HashMap;
use std::future::Future;
use std::ops::Deref;
use std::sync::{Arc, RwLock, Weak};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tracing::{info, warn};

use keeper_runtime::alert::Alerter;
use keeper_runtime::config::StorageSettings;
use keeper_runtime::secret::SecretUrl;
use keeper_runtime::store::{Health, Store, StoreError, StoreKind, StoreTimeouts, bounded};
use keeper_runtime::telemetry::Metrics;

/// True when a Redis error means the server could not be reached or the connection broke.
fn is_outage(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
}

/// A Redis client error as a [`StoreError`] of operation `op`.
pub(crate) fn redis_error(op: &'static str, source: redis::RedisError) -> StoreError {
    StoreError::Redis {
        op,
        outage: is_outage(&source),
        source: Box::new(source),
    }
}

fn redis_err(op: &'static str) -> impl FnOnce(redis::RedisError) -> StoreError {
    move |source| redis_error(op, source)
}

/// A client and a lazily connecting, self-reconnecting connection manager: building it never
/// waits for the server. Reconnection retries are few and short because the store's own probe
/// paces recovery.
fn manager(
    url: &SecretUrl,
    timeouts: StoreTimeouts,
) -> Result<(redis::Client, ConnectionManagerConfig, ConnectionManager), StoreError> {
    let client = redis::Client::open(url.expose()).map_err(|e| StoreError::InvalidUrl {
        store: StoreKind::Redis,
        url: url.redacted(),
        // The client's message names the problem (scheme, missing TLS support), not the URL.
        problem: e.to_string(),
    })?;
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeouts.connect))
        .set_response_timeout(Some(timeouts.op))
        .set_number_of_retries(1)
        .set_min_delay(Duration::from_millis(50))
        .set_max_delay(Duration::from_millis(500));
    let conn = ConnectionManager::new_lazy_with_config(client.clone(), config.clone())
        .map_err(redis_err("connect"))?;
    Ok((client, config, conn))
}

/// `{prefix}lock:{wallet}`
pub(crate) fn lock_key(prefix: &str, wallet: &str) -> String {
    format!("{prefix}lock:{wallet}")
}

/// `{prefix}lock:{wallet}:token`: the fencing counter, incremented on each acquisition.
pub(crate) fn token_key(prefix: &str, wallet: &str) -> String {
    format!("{prefix}lock:{wallet}:token")
}

async fn ping(conn: &mut ConnectionManager) -> Result<(), StoreError> {
    redis::cmd("PING")
        .query_async::<String>(conn)
        .await
        .map(|_| ())
        .map_err(redis_err("ping"))
}

async fn hset(
    conn: &mut ConnectionManager,
    key: &str,
    fields: &[(&str, String)],
) -> Result<(), StoreError> {
    if fields.is_empty() {
        return Ok(());
    }
    let mut cmd = redis::cmd("HSET");
    cmd.arg(key);
    for (f, v) in fields {
        cmd.arg(*f).arg(v);
    }
    cmd.query_async::<i64>(conn)
        .await
        .map(|_| ())
        .map_err(redis_err("HSET"))
}

async fn hgetall(
    conn: &mut ConnectionManager,
    key: &str,
) -> Result<HashMap<String, String>, StoreError> {
    redis::cmd("HGETALL")
        .arg(key)
        .query_async(conn)
        .await
        .map_err(redis_err("HGETALL"))
}

async fn publish(
    conn: &mut ConnectionManager,
    channel: &str,
    message: &str,
) -> Result<u64, StoreError> {
    redis::cmd("PUBLISH")
        .arg(channel)
        .arg(message)
        .query_async(conn)
        .await
        .map_err(redis_err("PUBLISH"))
}

/// A configured Redis: the client, its self-reconnecting connection, and its health.
pub(crate) struct RedisState {
    client: redis::Client,
    config: ConnectionManagerConfig,
    /// Replaced by the probe when a connection manager stops recovering on its own.
    conn: RwLock<ConnectionManager>,
    pub(crate) health: Health,
}

impl RedisState {
    /// Builds the client without waiting for the server; an unusable URL is logged, alerted
    /// and leaves Redis off.
    fn open(
        url: &SecretUrl,
        timeouts: StoreTimeouts,
        health: impl FnOnce() -> Health,
    ) -> Option<Self> {
        match manager(url, timeouts) {
            Ok((client, config, conn)) => Some(Self {
                client,
                config,
                conn: RwLock::new(conn),
                health: health(),
            }),
            Err(e) => {
                warn!(error = %e, "Redis is configured but unusable: cache, pub/sub and the Redis lease are off");
                health().degrade(&e);
                None
            }
        }
    }

    pub(crate) fn conn(&self) -> ConnectionManager {
        match self.conn.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    fn renew_connection(&self) {
        match ConnectionManager::new_lazy_with_config(self.client.clone(), self.config.clone()) {
            Ok(fresh) => match self.conn.write() {
                Ok(mut c) => *c = fresh,
                Err(poisoned) => *poisoned.into_inner() = fresh,
            },
            Err(e) => tracing::debug!(error = %e, "could not rebuild the redis connection"),
        }
    }
}

/// One look at Redis: `PING`; a failed probe rebuilds the connection manager.
async fn probe_redis(r: &RedisState, timeouts: StoreTimeouts) {
    let limit = timeouts.connect.max(timeouts.op);
    let mut conn = r.conn();
    let result = tokio::time::timeout(limit, ping(&mut conn))
        .await
        .unwrap_or(Err(StoreError::Timeout {
            store: StoreKind::Redis,
            op: "probe",
            timeout: limit,
        }));
    match result {
        Ok(()) => r.health.ok(),
        Err(e) => {
            // Whatever the error, a Redis that does not answer PING is not usable.
            r.health.degrade(&e);
            r.renew_connection();
        }
    }
}

async fn probe_loop(redis: Weak<RedisState>, timeouts: StoreTimeouts) {
    let mut tick = tokio::time::interval(timeouts.probe_every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    loop {
        tick.tick().await;
        let Some(r) = redis.upgrade() else { return };
        probe_redis(&r, timeouts).await;
    }
}

/// PostgreSQL (through [`Deref`] to [`Store`]) and the optional Redis cache: what a chain
/// keeper records into, caches in, and leases its wallet through. Cheap to clone.
#[derive(Clone)]
pub struct ChainStore {
    pg: Store,
    redis: Option<Arc<RedisState>>,
    /// A Redis URL was configured but could not be used: the lease must not fall back.
    redis_unusable: bool,
    prefix: String,
    lease_ttl: Duration,
}

impl std::fmt::Debug for ChainStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainStore")
            .field("postgres", &self.pg)
            .field("redis", &self.redis.is_some())
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl Deref for ChainStore {
    type Target = Store;
    fn deref(&self) -> &Store {
        &self.pg
    }
}

impl ChainStore {
    /// Connects to whatever is configured, with the default [`StoreTimeouts`]. Never fails: an
    /// unusable or unreachable store is logged, alerted and degraded, and the keeper runs on.
    pub async fn connect(
        settings: &StorageSettings,
        metrics: Arc<Metrics>,
        alerter: Alerter,
    ) -> ChainStore {
        Self::connect_with(settings, metrics, alerter, StoreTimeouts::default()).await
    }

    /// Like [`ChainStore::connect`] with explicit time bounds.
    pub async fn connect_with(
        settings: &StorageSettings,
        metrics: Arc<Metrics>,
        alerter: Alerter,
        timeouts: StoreTimeouts,
    ) -> ChainStore {
        let pg = Store::connect_with(settings, metrics, alerter, timeouts).await;
        let redis = settings.redis_url.as_ref().and_then(|url| {
            RedisState::open(url, timeouts, || pg.health_for(StoreKind::Redis)).map(Arc::new)
        });
        say_what_is_not_recorded(
            settings.database_url.is_some(),
            settings.redis_url.is_some(),
        );
        if let Some(r) = &redis {
            probe_redis(r, timeouts).await;
            tokio::spawn(probe_loop(Arc::downgrade(r), timeouts));
        }
        ChainStore {
            redis_unusable: redis.is_none() && settings.redis_url.is_some(),
            redis,
            pg,
            prefix: settings.redis_prefix.clone(),
            lease_ttl: Duration::from_secs(settings.lease_ttl),
        }
    }

    /// A store with nothing configured (tests, tools): records nothing, the lease is local.
    pub async fn none(metrics: Arc<Metrics>) -> ChainStore {
        let settings = StorageSettings::default();
        Self::connect(&settings, metrics, Alerter::disabled()).await
    }

    /// The PostgreSQL side alone.
    pub fn postgres(&self) -> &Store {
        &self.pg
    }

    /// True when a Redis URL is configured (whether or not it answers right now).
    pub fn redis_configured(&self) -> bool {
        self.redis.is_some()
    }

    /// True while the store is configured and not degraded.
    pub fn is_up(&self, store: StoreKind) -> bool {
        match store {
            StoreKind::Postgres => self.pg.postgres_up(),
            StoreKind::Redis => self.redis.as_ref().is_some_and(|r| r.health.is_up()),
        }
    }

    pub(crate) fn redis_state(&self) -> Option<&RedisState> {
        self.redis.as_deref()
    }

    pub(crate) fn redis_unusable(&self) -> bool {
        self.redis_unusable
    }

    pub(crate) fn lease_ttl(&self) -> Duration {
        self.lease_ttl
    }

    /// Runs a Redis operation gated by health and bounded by the op timeout.
    pub async fn redis<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let Some(r) = &self.redis else {
            return Err(StoreError::NotConfigured {
                store: StoreKind::Redis,
            });
        };
        let fut = f(r.conn());
        bounded(&r.health, op, self.pg.timeouts().op, fut).await
    }

    /// The Redis key prefix (`REDIS_PREFIX`).
    pub fn redis_prefix(&self) -> &str {
        &self.prefix
    }

    /// Writes fields of the hash `{prefix}{key}` (`price:USDT`, `bridge_health:3`).
    pub async fn put_hash(&self, key: &str, fields: &[(&str, String)]) -> Result<(), StoreError> {
        let key = format!("{}{key}", self.prefix);
        self.redis("HSET", |mut conn| async move {
            hset(&mut conn, &key, fields).await
        })
        .await
    }

    /// Reads the hash `{prefix}{key}` (empty when absent).
    pub async fn get_hash(&self, key: &str) -> Result<HashMap<String, String>, StoreError> {
        let key = format!("{}{key}", self.prefix);
        self.redis("HGETALL", |mut conn| async move {
            hgetall(&mut conn, &key).await
        })
        .await
    }

    /// Publishes `message` on a pub/sub channel; returns how many subscribers received it.
    pub async fn publish(&self, channel: &str, message: &str) -> Result<u64, StoreError> {
        self.redis("PUBLISH", |mut conn| async move {
            publish(&mut conn, channel, message).await
        })
        .await
    }
}

/// Says once, at start, what is not recorded or cached for lack of a configured store.
fn say_what_is_not_recorded(postgres: bool, redis: bool) {
    match (postgres, redis) {
        (false, false) => info!(
            "no DATABASE_URL and no REDIS_URL: price updates, bridge snapshots and backup runs are \
             not recorded, nothing is cached or published on Redis, and the wallet lease is local \
             to this process (run a single instance per wallet)"
        ),
        (false, true) => info!(
            "no DATABASE_URL: price updates, bridge snapshots and backup runs are not recorded"
        ),
        (true, false) => info!(
            "no REDIS_URL: nothing is cached or published on Redis; the wallet lease uses a \
             PostgreSQL advisory lock"
        ),
        (true, true) => {}
    }
}

//! Redis: latest-value hashes, pub/sub channels and the lease keys. Keepers name their own hashes
//! and channels; every key gets the configured prefix (`REDIS_PREFIX`).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tracing::warn;

use super::health::Health;
use super::{Inner, Store, StoreError, StoreKind, StoreTimeouts, bounded, lease};
use crate::secret::SecretUrl;

/// True when a Redis error means the server could not be reached or the connection broke.
pub(super) fn is_outage(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_unrecoverable_error()
}

fn redis_err(op: &'static str) -> impl FnOnce(redis::RedisError) -> StoreError {
    move |source| StoreError::Redis { op, source }
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
pub(super) fn lock_key(prefix: &str, wallet: &str) -> String {
    format!("{prefix}lock:{wallet}")
}

/// `{prefix}lock:{wallet}:token`: the fencing counter, incremented on each acquisition.
pub(super) fn token_key(prefix: &str, wallet: &str) -> String {
    format!("{prefix}lock:{wallet}:token")
}

pub(super) async fn ping(conn: &mut ConnectionManager) -> Result<(), StoreError> {
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
pub(super) struct RedisState {
    client: redis::Client,
    config: ConnectionManagerConfig,
    /// Replaced by the probe when a connection manager stops recovering on its own.
    conn: RwLock<ConnectionManager>,
    pub(super) health: Health,
}

impl RedisState {
    pub(super) fn health(&self) -> &Health {
        &self.health
    }

    /// Builds the client without waiting for the server; an unusable URL is logged, alerted
    /// and leaves Redis off.
    pub(super) fn open(
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

    pub(super) fn conn(&self) -> ConnectionManager {
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
pub(super) async fn probe_redis(inner: Arc<Inner>) {
    let Some(r) = &inner.redis else { return };
    let limit = inner.timeouts.connect.max(inner.timeouts.op);
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

impl Store {
    /// Runs a Redis operation gated by health and bounded by the op timeout.
    pub async fn redis<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<T, StoreError>>,
    {
        let Some(r) = &self.inner.redis else {
            return Err(StoreError::NotConfigured {
                store: StoreKind::Redis,
            });
        };
        let fut = f(r.conn());
        bounded(&r.health, op, self.inner.timeouts.op, fut).await
    }

    /// The Redis key prefix (`REDIS_PREFIX`).
    pub fn redis_prefix(&self) -> &str {
        &self.inner.prefix
    }

    /// Writes fields of the hash `{prefix}{key}` (`price:USDT`, `bridge_health:3`).
    pub async fn put_hash(&self, key: &str, fields: &[(&str, String)]) -> Result<(), StoreError> {
        let key = format!("{}{key}", self.inner.prefix);
        self.redis("HSET", |mut conn| async move {
            hset(&mut conn, &key, fields).await
        })
        .await
    }

    /// Reads the hash `{prefix}{key}` (empty when absent).
    pub async fn get_hash(&self, key: &str) -> Result<HashMap<String, String>, StoreError> {
        let key = format!("{}{key}", self.inner.prefix);
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

    /// The wallet lease for `wallet`, contended under the name `holder_id`: Redis when
    /// configured, else a PostgreSQL advisory lock, else always held.
    pub fn lease(&self, wallet: &str, holder_id: &str) -> lease::WalletLease {
        lease::WalletLease::new(self.inner.clone(), wallet, holder_id)
    }
}

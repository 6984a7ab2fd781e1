//! Redis: latest-value hashes and pub/sub channels (names fixed by DESIGN §7).

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use super::{StoreError, StoreKind, StoreTimeouts};
use crate::secret::SecretUrl;

/// A pub/sub channel the keepers publish on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Channel {
    /// `pricing_oracle`: price updates.
    PricingOracle,
    /// `bridge_health`: bridge health changes.
    BridgeHealth,
}

impl Channel {
    /// The channel name on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PricingOracle => "pricing_oracle",
            Self::BridgeHealth => "bridge_health",
        }
    }
}

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
pub(super) fn manager(
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

/// `{prefix}price:{asset}`
pub(super) fn price_key(prefix: &str, asset: &str) -> String {
    format!("{prefix}price:{asset}")
}

/// `{prefix}bridge_health:{id}`
pub(super) fn bridge_key(prefix: &str, bridge_id: i32) -> String {
    format!("{prefix}bridge_health:{bridge_id}")
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

pub(super) async fn hset(
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

pub(super) async fn hgetall(
    conn: &mut ConnectionManager,
    key: &str,
) -> Result<HashMap<String, String>, StoreError> {
    redis::cmd("HGETALL")
        .arg(key)
        .query_async(conn)
        .await
        .map_err(redis_err("HGETALL"))
}

pub(super) async fn publish(
    conn: &mut ConnectionManager,
    channel: Channel,
    message: &str,
) -> Result<u64, StoreError> {
    redis::cmd("PUBLISH")
        .arg(channel.as_str())
        .arg(message)
        .query_async(conn)
        .await
        .map_err(redis_err("PUBLISH"))
}

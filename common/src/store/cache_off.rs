//! Built without the `redis` feature (db-backup): Redis is never connected, whatever the
//! configuration says, and the binary links no Redis client.

use std::sync::Arc;

use super::health::Health;
use super::{Inner, StoreTimeouts};
use crate::secret::SecretUrl;

/// Uninhabited: without the feature there is never a Redis connection.
pub(super) enum RedisState {}

impl RedisState {
    /// Never opens anything; says once that the URL is ignored.
    pub(super) fn open(
        _url: &SecretUrl,
        _timeouts: StoreTimeouts,
        _health: impl FnOnce() -> Health,
    ) -> Option<Self> {
        tracing::info!("REDIS_URL is set but this binary does not use Redis: ignored");
        None
    }

    /// Unreachable: no value of this type exists.
    pub(super) fn health(&self) -> &Health {
        match *self {}
    }
}

/// Nothing to probe.
pub(super) async fn probe_redis(_inner: Arc<Inner>) {}

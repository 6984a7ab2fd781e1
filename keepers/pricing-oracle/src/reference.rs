//! What a decision is compared with when the oracle cannot be read: this keeper's own last
//! publication, from PostgreSQL, else Redis, else memory. An unreadable oracle is not an
//! empty one: treating it as empty would republish every asset as `initial` on every tick.

use std::collections::HashMap;

use keeper_ton::cache::ChainStore;
use serde::Serialize;

use crate::policy::OnChain;
use crate::records;

/// Where the value a decision was compared with came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// `get_price` on the oracle.
    Chain,
    /// This keeper's last confirmed row in PostgreSQL.
    Postgres,
    /// This keeper's last publication cached in Redis.
    Redis,
    /// This process's last confirmed publication.
    Memory,
    /// Nothing known.
    Unknown,
}

/// This keeper's own publications, for when the oracle cannot be read.
#[derive(Debug, Default)]
pub struct OwnRecord {
    memory: HashMap<String, OnChain>,
}

impl OwnRecord {
    /// Remembers a confirmed publication.
    pub fn remember(&mut self, asset: &str, value: OnChain) {
        self.memory.insert(asset.to_owned(), value);
    }

    /// The last value this keeper published for `asset`: PostgreSQL when configured and
    /// reachable, else Redis, else this process's memory. Memory wins when it is newer: it
    /// also holds sends the wallet confirmed but the unreadable oracle could not verify.
    pub async fn last(&self, store: &ChainStore, asset: &str) -> (Option<OnChain>, Origin) {
        let stored = self.stored(store, asset).await;
        match (stored, self.memory.get(asset)) {
            ((Some(s), origin), Some(m)) if s.timestamp >= m.timestamp => (Some(s), origin),
            (_, Some(m)) => (Some(*m), Origin::Memory),
            (stored, None) => stored,
        }
    }

    async fn stored(&self, store: &ChainStore, asset: &str) -> (Option<OnChain>, Origin) {
        if store.postgres_configured() {
            match records::latest_confirmed_price_update(store, asset).await {
                Ok(Some(r)) => {
                    let value = OnChain {
                        price_micro: u64::try_from(r.price_micro).unwrap_or(0),
                        timestamp: u64::try_from(r.observed_at.timestamp()).unwrap_or(0),
                    };
                    return (Some(value), Origin::Postgres);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(asset, error = %e, "own last publication unreadable"),
            }
        }
        if store.redis_configured() {
            match store.get_hash(&format!("price:{asset}")).await {
                Ok(fields) => {
                    let num = |k: &str| fields.get(k).and_then(|v| v.parse::<u64>().ok());
                    if let (Some(price_micro), Some(timestamp)) =
                        (num("price_micro"), num("timestamp"))
                    {
                        let value = OnChain {
                            price_micro,
                            timestamp,
                        };
                        return (Some(value), Origin::Redis);
                    }
                }
                Err(e) => tracing::warn!(asset, error = %e, "cached publication unreadable"),
            }
        }
        (None, Origin::Unknown)
    }
}

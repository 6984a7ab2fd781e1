//! Where each bridge's verdict history lives between ticks and processes: the
//! `bridge_health_verdicts` table when PostgreSQL is configured, else the Redis hash
//! `{prefix}bridge_verdicts:{id}`, else this process's memory only.

use keeper_runtime::store::{StoreError, pg_err};
use keeper_ton::cache::ChainStore;

use crate::confirm::History;

/// Reads a bridge's history; `None` when nothing is stored (or the store is unreachable, which
/// is logged: the bridge then starts from no history, the cautious side for offline).
pub async fn load(store: &ChainStore, bridge_id: u8) -> Option<History> {
    if store.postgres_configured() {
        match store
            .pg("read verdict history", |pool| async move {
                let row: Option<serde_json::Value> = sqlx::query_scalar(
                    "SELECT history FROM bridge_health_verdicts WHERE bridge_id = $1",
                )
                .bind(i32::from(bridge_id))
                .fetch_optional(&pool)
                .await
                .map_err(pg_err("read verdict history"))?;
                Ok::<_, StoreError>(row)
            })
            .await
        {
            Ok(row) => return row.and_then(|v| serde_json::from_value(v).ok()),
            Err(e) => tracing::warn!(bridge_id, error = %e, "verdict history unreadable"),
        }
    }
    if store.redis_configured() {
        match store.get_hash(&key(bridge_id)).await {
            Ok(fields) => {
                return fields
                    .get("history")
                    .and_then(|t| serde_json::from_str(t).ok());
            }
            Err(e) => tracing::warn!(bridge_id, error = %e, "verdict history unreadable"),
        }
    }
    None
}

/// Stores a bridge's history where [`load`] finds it.
pub async fn save(store: &ChainStore, bridge_id: u8, history: &History) {
    let Ok(json) = serde_json::to_value(history) else {
        return;
    };
    if store.postgres_configured() {
        let saved = store
            .pg("write verdict history", |pool| {
                let json = json.clone();
                async move {
                    sqlx::query(
                        "INSERT INTO bridge_health_verdicts (bridge_id, history, updated_at) \
                         VALUES ($1, $2, now()) ON CONFLICT (bridge_id) \
                         DO UPDATE SET history = EXCLUDED.history, updated_at = now()",
                    )
                    .bind(i32::from(bridge_id))
                    .bind(json)
                    .execute(&pool)
                    .await
                    .map_err(pg_err("write verdict history"))?;
                    Ok::<_, StoreError>(())
                }
            })
            .await;
        match saved {
            Ok(()) => return,
            Err(e) => tracing::warn!(bridge_id, error = %e, "verdict history not stored"),
        }
    }
    if store.redis_configured()
        && let Err(e) = store
            .put_hash(&key(bridge_id), &[("history", json.to_string())])
            .await
    {
        tracing::warn!(bridge_id, error = %e, "verdict history not cached");
    }
}

fn key(bridge_id: u8) -> String {
    format!("bridge_verdicts:{bridge_id}")
}

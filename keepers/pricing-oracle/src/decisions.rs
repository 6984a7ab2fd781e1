//! The `pricing_oracle_decisions` table: every tick's decision per asset (quotes with lineage
//! and observation time, rejections and why, the aggregate, the value compared with, the action
//! and its reason), so "why was this price published at that time?" has an answer.

use chrono::{DateTime, TimeZone, Utc};
use keeper_runtime::store::{Store, StoreError, column, pg_err};
use serde::Serialize;
use sqlx::PgPool;
use sqlx::postgres::PgRow;

use crate::report::{Action, AssetDecision};

/// One recorded decision, as `history` prints it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DecisionRecord {
    /// When the tick decided.
    pub tick_at: DateTime<Utc>,
    /// Asset symbol.
    pub asset: String,
    /// `publish`, `hold`, `skip` or `no_quorum`.
    pub action: String,
    /// Why.
    pub reason: String,
    /// The aggregate, 6 decimals.
    pub price_micro: Option<i64>,
    /// The value it was compared with (on-chain, or the keeper's own record), 6 decimals.
    pub onchain_micro: Option<i64>,
    /// Median observation time of the quotes used.
    pub observed_at: Option<DateTime<Utc>>,
    /// Every quote with its source, lineage, price, time and fate.
    pub quotes: serde_json::Value,
    /// Lineages, breaker word, where the compared value came from, published timestamp.
    pub detail: serde_json::Value,
}

fn action_name(a: Action) -> &'static str {
    match a {
        Action::Publish => "publish",
        Action::Hold => "hold",
        Action::Skip => "skip",
        Action::NoQuorum => "no_quorum",
    }
}

impl DecisionRecord {
    /// The row for one asset's decision in a tick.
    pub fn of(tick_at: DateTime<Utc>, d: &AssetDecision, mode: &str) -> Self {
        Self {
            tick_at,
            asset: d.asset.clone(),
            action: action_name(d.action).to_owned(),
            reason: d.reason.clone(),
            price_micro: d.price_micro.and_then(|p| i64::try_from(p).ok()),
            onchain_micro: d.on_chain.and_then(|c| i64::try_from(c.price_micro).ok()),
            observed_at: d.observed_at.and_then(|t| Utc.timestamp_opt(t, 0).single()),
            quotes: serde_json::to_value(&d.quotes).unwrap_or_default(),
            detail: serde_json::json!({
                "lineages": d.lineages,
                "breaker": d.breaker,
                "compared_with": d.compared_with,
                "onchain_timestamp": d.on_chain.map(|c| c.timestamp),
                "timestamp": d.timestamp,
                "held": d.held,
                "mode": mode,
            }),
        }
    }
}

/// Records one tick's decisions in one statement.
pub async fn insert_decisions(store: &Store, rows: &[DecisionRecord]) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    store
        .pg("insert decisions", |pool| async move {
            sql::insert(&pool, rows).await
        })
        .await
}

/// Decisions of `asset` since `since`, oldest first (at most `limit`).
pub async fn decisions_since(
    store: &Store,
    asset: &str,
    since: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<DecisionRecord>, StoreError> {
    store
        .pg("read decisions", |pool| async move {
            sql::since(&pool, asset, since, limit).await
        })
        .await
}

/// Moves a live tick held at or after `since`, by asset: the last decision of each asset, when
/// it was a hold.
pub async fn recent_holds(
    store: &Store,
    since: DateTime<Utc>,
) -> Result<Vec<(String, crate::breaker::Pending)>, StoreError> {
    store
        .pg("read recent holds", |pool| async move {
            sql::recent_holds(&pool, since).await
        })
        .await
}

mod sql {
    use super::*;

    pub async fn insert(pool: &PgPool, rows: &[DecisionRecord]) -> Result<(), StoreError> {
        let mut b = sqlx::QueryBuilder::new(
            "INSERT INTO pricing_oracle_decisions \
             (tick_at, asset, action, reason, price_micro, onchain_micro, observed_at, quotes, detail) ",
        );
        b.push_values(rows, |mut r, d| {
            r.push_bind(d.tick_at)
                .push_bind(&d.asset)
                .push_bind(&d.action)
                .push_bind(&d.reason)
                .push_bind(d.price_micro)
                .push_bind(d.onchain_micro)
                .push_bind(d.observed_at)
                .push_bind(&d.quotes)
                .push_bind(&d.detail);
        });
        b.build()
            .execute(pool)
            .await
            .map_err(pg_err("insert decisions"))?;
        Ok(())
    }

    pub async fn recent_holds(
        pool: &PgPool,
        since: DateTime<Utc>,
    ) -> Result<Vec<(String, crate::breaker::Pending)>, StoreError> {
        let rows: Vec<(String, String, serde_json::Value)> = sqlx::query_as(
            "SELECT DISTINCT ON (asset) asset, action, detail FROM pricing_oracle_decisions \
             WHERE tick_at >= $1 AND detail->>'mode' = 'live' \
             ORDER BY asset, tick_at DESC, id DESC",
        )
        .bind(since)
        .fetch_all(pool)
        .await
        .map_err(pg_err("read recent holds"))?;
        Ok(rows
            .into_iter()
            .filter(|(_, action, _)| action == "hold")
            .filter_map(|(asset, _, detail)| {
                let held = serde_json::from_value(detail.get("held")?.clone()).ok()?;
                Some((asset, held))
            })
            .collect())
    }

    fn record(row: &PgRow) -> Result<DecisionRecord, StoreError> {
        Ok(DecisionRecord {
            tick_at: column(row, "tick_at")?,
            asset: column(row, "asset")?,
            action: column(row, "action")?,
            reason: column(row, "reason")?,
            price_micro: column(row, "price_micro")?,
            onchain_micro: column(row, "onchain_micro")?,
            observed_at: column(row, "observed_at")?,
            quotes: column(row, "quotes")?,
            detail: column(row, "detail")?,
        })
    }

    pub async fn since(
        pool: &PgPool,
        asset: &str,
        since: DateTime<Utc>,
        limit: i64,
    ) -> Result<Vec<DecisionRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT tick_at, asset, action, reason, price_micro, onchain_micro, observed_at, \
             quotes, detail FROM pricing_oracle_decisions \
             WHERE asset = $1 AND tick_at >= $2 ORDER BY tick_at, id LIMIT $3",
        )
        .bind(asset)
        .bind(since)
        .bind(limit)
        .fetch_all(pool)
        .await
        .map_err(pg_err("read decisions"))?;
        rows.iter().map(record).collect()
    }
}

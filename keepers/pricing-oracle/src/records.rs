//! The `pricing_oracle_updates` table: one row per price update, from sent to confirmed.

use chrono::{DateTime, Utc};
use keeper_runtime::store::{Store, StoreError, column, pg_err};
use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgPool};

/// Redis pub/sub channel of price updates.
pub const CHANNEL: &str = "pricing_oracle";

keeper_runtime::text_enum!(
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

keeper_runtime::text_enum!(
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

/// Records a price update; returns its id (for [`set_price_update_status`]).
pub async fn insert_price_update(
    store: &Store,
    update: &NewPriceUpdate,
) -> Result<i64, StoreError> {
    store
        .pg("insert price update", |pool| async move {
            sql::insert_price_update(&pool, update).await
        })
        .await
}

/// Moves a recorded price update to its outcome (confirmed, failed…).
pub async fn set_price_update_status(
    store: &Store,
    id: i64,
    change: &StatusChange,
) -> Result<(), StoreError> {
    store
        .pg("update price update status", |pool| async move {
            sql::set_price_update_status(&pool, id, change).await
        })
        .await
}

/// The newest recorded update of one asset.
pub async fn latest_price_update(
    store: &Store,
    asset: &str,
) -> Result<Option<PriceUpdateRecord>, StoreError> {
    store
        .pg("read latest price update", |pool| async move {
            sql::latest_price_update(&pool, asset).await
        })
        .await
}

/// The newest confirmed update of one asset: what this keeper last put on chain.
pub async fn latest_confirmed_price_update(
    store: &Store,
    asset: &str,
) -> Result<Option<PriceUpdateRecord>, StoreError> {
    store
        .pg("read latest confirmed price update", |pool| async move {
            sql::latest_confirmed_price_update(&pool, asset).await
        })
        .await
}

/// The newest recorded update of every asset, ordered by asset.
pub async fn latest_price_updates(store: &Store) -> Result<Vec<PriceUpdateRecord>, StoreError> {
    store
        .pg("read latest price updates", |pool| async move {
            sql::latest_price_updates(&pool).await
        })
        .await
}

/// The queries, on a plain pool; [`Store::pg`] bounds them and tracks health.
mod sql {
    use super::*;

    const PRICE_COLUMNS: &str = "id, asset, asset_id, price_micro, quotes, reason, wallet, seqno, \
         message_hash, status, error, observed_at, created_at, confirmed_at";

    fn price_record(row: &PgRow) -> Result<PriceUpdateRecord, StoreError> {
        Ok(PriceUpdateRecord {
            id: column(row, "id")?,
            asset: column(row, "asset")?,
            asset_id: column(row, "asset_id")?,
            price_micro: column(row, "price_micro")?,
            quotes: column(row, "quotes")?,
            reason: UpdateReason::parse(column(row, "reason")?)?,
            wallet: column(row, "wallet")?,
            seqno: column(row, "seqno")?,
            message_hash: column(row, "message_hash")?,
            status: UpdateStatus::parse(column(row, "status")?)?,
            error: column(row, "error")?,
            observed_at: column(row, "observed_at")?,
            created_at: column(row, "created_at")?,
            confirmed_at: column(row, "confirmed_at")?,
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

    /// The newest confirmed update of `asset`.
    pub async fn latest_confirmed_price_update(
        pool: &PgPool,
        asset: &str,
    ) -> Result<Option<PriceUpdateRecord>, StoreError> {
        let sql = format!(
            "SELECT {PRICE_COLUMNS} FROM pricing_oracle_updates \
             WHERE asset = $1 AND status = 'confirmed' \
             ORDER BY observed_at DESC, id DESC LIMIT 1"
        );
        let row = sqlx::query(AssertSqlSafe(sql))
            .bind(asset)
            .fetch_optional(pool)
            .await
            .map_err(pg_err("read latest confirmed price update"))?;
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
}

/// The pricing keeper's tables (`pricing_oracle_updates`, `pricing_oracle_decisions`).
pub static PRICING_ORACLE_MIGRATIONS: keeper_runtime::store::MigrationSet =
    keeper_runtime::store::MigrationSet {
        owner: "pricing-oracle",
        migrator: sqlx::migrate!("../../migrations/pricing-oracle"),
        table: "_pricing_oracle_migrations",
    };

/// Everything `pricing-oracle migrate` (and a start with `migrate_on_start`) creates: its own
/// tables and the chain keepers' in-flight journal.
pub static MIGRATIONS: keeper_runtime::store::Migrations = &[
    &PRICING_ORACLE_MIGRATIONS,
    &keeper_ton::journal::TON_MIGRATIONS,
];

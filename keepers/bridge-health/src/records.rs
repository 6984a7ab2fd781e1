//! The `bridge_health_snapshots` table: one row per bridge per tick.

use chrono::{DateTime, Utc};
use keeper_runtime::store::{Store, StoreError, column, pg_err};
use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgPool};

/// Redis pub/sub channel of bridge health changes.
pub const CHANNEL: &str = "bridge_health";

keeper_runtime::text_enum!(
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

/// Records a bridge health snapshot; returns its id.
pub async fn insert_bridge_snapshot(
    store: &Store,
    snapshot: &NewBridgeSnapshot,
) -> Result<i64, StoreError> {
    store
        .pg("insert bridge snapshot", |pool| async move {
            sql::insert_bridge_snapshot(&pool, snapshot).await
        })
        .await
}

/// The newest snapshot of one bridge.
pub async fn latest_bridge_snapshot(
    store: &Store,
    bridge_id: i32,
) -> Result<Option<BridgeSnapshotRecord>, StoreError> {
    store
        .pg("read latest bridge snapshot", |pool| async move {
            sql::latest_bridge_snapshot(&pool, bridge_id).await
        })
        .await
}

/// The newest snapshot of every bridge, ordered by bridge id.
pub async fn latest_bridge_snapshots(
    store: &Store,
) -> Result<Vec<BridgeSnapshotRecord>, StoreError> {
    store
        .pg("read latest bridge snapshots", |pool| async move {
            sql::latest_bridge_snapshots(&pool).await
        })
        .await
}

/// The queries, on a plain pool; [`Store::pg`] bounds them and tracks health.
mod sql {
    use super::*;

    const BRIDGE_COLUMNS: &str = "id, bridge_id, bridge, score, status, is_online, last_seen, signals, \
         published, message_hash, created_at";

    fn bridge_record(row: &PgRow) -> Result<BridgeSnapshotRecord, StoreError> {
        Ok(BridgeSnapshotRecord {
            id: column(row, "id")?,
            bridge_id: column(row, "bridge_id")?,
            bridge: column(row, "bridge")?,
            score: column(row, "score")?,
            status: BridgeStatus::parse(column(row, "status")?)?,
            is_online: column(row, "is_online")?,
            last_seen: column(row, "last_seen")?,
            signals: column(row, "signals")?,
            published: column(row, "published")?,
            message_hash: column(row, "message_hash")?,
            created_at: column(row, "created_at")?,
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
}

/// The bridge keeper's tables (`bridge_health_snapshots`, `bridge_health_verdicts`).
pub static BRIDGE_HEALTH_MIGRATIONS: keeper_runtime::store::MigrationSet =
    keeper_runtime::store::MigrationSet {
        owner: "bridge-health",
        migrator: sqlx::migrate!("../../migrations/bridge-health"),
        table: "_bridge_health_migrations",
    };

/// Everything `bridge-health migrate` (and a start with `migrate_on_start`) creates: its own
/// tables and the chain keepers' in-flight journal.
pub static MIGRATIONS: keeper_runtime::store::Migrations = &[
    &BRIDGE_HEALTH_MIGRATIONS,
    &keeper_ton::journal::TON_MIGRATIONS,
];

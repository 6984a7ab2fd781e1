//! The `backup_runs` table: one row per backup run, from running to success or failure.

use chrono::{DateTime, Utc};
use keeper_runtime::store::{Store, StoreError, column, pg_err};
use serde::Serialize;
use sqlx::postgres::PgRow;
use sqlx::{AssertSqlSafe, PgPool};

/// `backup_runs` and its bookkeeping: all db-backup ever creates, and only in the records
/// database (`BACKUP_RECORDS_URL`).
pub static BACKUP_RUNS_MIGRATIONS: keeper_runtime::store::MigrationSet =
    keeper_runtime::store::MigrationSet {
        owner: "db-backup",
        migrator: sqlx::migrate!("../../migrations/db-backup"),
        table: "_db_backup_migrations",
    };

/// What db-backup migrates.
pub static MIGRATIONS: keeper_runtime::store::Migrations = &[&BACKUP_RUNS_MIGRATIONS];

/// Applies db-backup's migrations (only `backup_runs`) to the records database, in `schema`.
pub async fn migrate(
    url: &keeper_runtime::secret::SecretUrl,
    schema: &str,
) -> Result<(), StoreError> {
    keeper_runtime::store::migrate(url, schema, MIGRATIONS).await
}

keeper_runtime::text_enum!(
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

/// Records the start of a backup run (status `running`); returns its id.
pub async fn start_backup_run(store: &Store, database: &str) -> Result<i64, StoreError> {
    store
        .pg("start backup run", |pool| async move {
            sql::start_backup_run(&pool, database).await
        })
        .await
}

/// Records how a backup run ended (`success` or `failed`) and stamps `finished_at`.
pub async fn finish_backup_run(
    store: &Store,
    id: i64,
    outcome: &BackupOutcome,
) -> Result<(), StoreError> {
    store
        .pg("finish backup run", |pool| async move {
            sql::finish_backup_run(&pool, id, outcome).await
        })
        .await
}

/// The newest `limit` backup runs, newest first, optionally of one status only (successful runs
/// by `finished_at`, others by `started_at`).
pub async fn latest_backup_runs(
    store: &Store,
    status: Option<BackupStatus>,
    limit: u32,
) -> Result<Vec<BackupRunRecord>, StoreError> {
    store
        .pg("list backup runs", |pool| async move {
            sql::latest_backup_runs(&pool, status, limit).await
        })
        .await
}

/// Closes `running` rows of `database` as failed: they belong to runs that died (SIGKILL, OOM,
/// power) before recording an outcome. Call only while holding the backup lock, so none of them
/// is alive. Returns how many rows were closed.
pub async fn close_interrupted_runs(store: &Store, database: &str) -> Result<u64, StoreError> {
    store
        .pg("close interrupted backup runs", |pool| async move {
            sql::close_interrupted_runs(&pool, database).await
        })
        .await
}

/// Records a verification of an existing backup on every successful run that produced the
/// artifact with digest `sha256`; returns how many rows were updated.
pub async fn record_verification(
    store: &Store,
    sha256: &str,
    verified: bool,
    verify_mode: &str,
    manifest: Option<serde_json::Value>,
) -> Result<u64, StoreError> {
    store
        .pg("record backup verification", |pool| async move {
            sql::record_verification(&pool, sha256, verified, verify_mode, manifest).await
        })
        .await
}

/// The queries, on a plain pool; [`Store::pg`] bounds them and tracks health.
mod sql {
    use super::*;

    const BACKUP_COLUMNS: &str = "id, started_at, finished_at, status, database, location, remote_key, \
         size_bytes, sha256, manifest, verify_mode, verified, error";

    fn backup_record(row: &PgRow) -> Result<BackupRunRecord, StoreError> {
        Ok(BackupRunRecord {
            id: column(row, "id")?,
            started_at: column(row, "started_at")?,
            finished_at: column(row, "finished_at")?,
            status: BackupStatus::parse(column(row, "status")?)?,
            database: column(row, "database")?,
            location: column(row, "location")?,
            remote_key: column(row, "remote_key")?,
            size_bytes: column(row, "size_bytes")?,
            sha256: column(row, "sha256")?,
            manifest: column(row, "manifest")?,
            verify_mode: column(row, "verify_mode")?,
            verified: column(row, "verified")?,
            error: column(row, "error")?,
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

    /// Marks `running` rows of `database` failed, with the reason in `error`.
    pub async fn close_interrupted_runs(pool: &PgPool, database: &str) -> Result<u64, StoreError> {
        sqlx::query(
            "UPDATE backup_runs SET status = 'failed', finished_at = now(), \
             error = 'interrupted: the process ended before recording an outcome' \
             WHERE status = 'running' AND database = $1",
        )
        .bind(database)
        .execute(pool)
        .await
        .map(|done| done.rows_affected())
        .map_err(pg_err("close interrupted backup runs"))
    }

    /// Stores a verification result on the successful runs of artifact `sha256`.
    pub async fn record_verification(
        pool: &PgPool,
        sha256: &str,
        verified: bool,
        verify_mode: &str,
        manifest: Option<serde_json::Value>,
    ) -> Result<u64, StoreError> {
        sqlx::query(
            "UPDATE backup_runs SET verified = $1, verify_mode = $2, manifest = $3 \
             WHERE sha256 = $4 AND status = 'success'",
        )
        .bind(verified)
        .bind(verify_mode)
        .bind(manifest)
        .bind(sha256)
        .execute(pool)
        .await
        .map(|done| done.rows_affected())
        .map_err(pg_err("record backup verification"))
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
}

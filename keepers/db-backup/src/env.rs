//! The environment variables the backup job reads, and the settings they set.

use keeper_runtime::config::{COMMON_ENV, EnvBinding, Kind, bind, bind_secret};

/// The job's own environment bindings; the shared ones of its sections are added by [`bindings`].
const BACKUP_ENV: &[EnvBinding] = &[
    bind("BACKUP_DIR", "backup.dir", Kind::Str),
    bind("BACKUP_S3_URL", "backup.s3_url", Kind::Str),
    bind("BACKUP_KEEP_LOCAL", "backup.keep_local", Kind::Bool),
    bind(
        "BACKUP_S3_PART_SIZE_MIB",
        "backup.s3_part_size_mib",
        Kind::Int,
    ),
    bind("BACKUP_SCHEDULE", "backup.schedule", Kind::Str),
    bind("BACKUP_VERIFY", "backup.verify", Kind::Str),
    bind_secret(
        "BACKUP_VERIFY_DATABASE_URL",
        "backup.verify_database_url",
        Kind::Str,
    ),
    bind_secret("AWS_ACCESS_KEY_ID", "backup.s3_access_key_id", Kind::Str),
    bind_secret(
        "AWS_SECRET_ACCESS_KEY",
        "backup.s3_secret_access_key",
        Kind::Str,
    ),
    bind_secret("AWS_SESSION_TOKEN", "backup.s3_session_token", Kind::Str),
    bind_secret(
        "TARGET_DATABASE_URL",
        "backup.target_database_url",
        Kind::Str,
    ),
    bind("PG_DUMP_PATH", "backup.pg_dump_path", Kind::Str),
    bind("PG_RESTORE_PATH", "backup.pg_restore_path", Kind::Str),
    bind("BACKUP_ZSTD_LEVEL", "backup.zstd_level", Kind::Int),
    bind("BACKUP_ZSTD_THREADS", "backup.zstd_threads", Kind::Int),
    bind("BACKUP_KEEP_LAST", "backup.keep_last", Kind::Int),
    bind("BACKUP_KEEP_DAILY", "backup.keep_daily", Kind::Int),
    bind("BACKUP_KEEP_WEEKLY", "backup.keep_weekly", Kind::Int),
    bind("BACKUP_KEEP_MONTHLY", "backup.keep_monthly", Kind::Int),
    bind("BACKUP_RECORDS", "backup.records", Kind::Bool),
    bind_secret("BACKUP_RECORDS_URL", "backup.records_url", Kind::Str),
    bind_secret(
        "BACKUP_RECORDS_DATABASE_URL",
        "backup.records_database_url",
        Kind::Str,
    ),
    bind("BACKUP_LOCK_TIMEOUT", "backup.lock_timeout", Kind::Int),
    bind(
        "BACKUP_LOCK_WAIT_TIMEOUT",
        "backup.lock_wait_timeout",
        Kind::Int,
    ),
    bind("BACKUP_GLOBALS", "backup.globals", Kind::Bool),
    bind(
        "BACKUP_GLOBALS_PASSWORDS",
        "backup.globals_passwords",
        Kind::Bool,
    ),
    bind("BACKUP_AGE_RECIPIENTS", "backup.age_recipients", Kind::List),
    bind(
        "BACKUP_AGE_IDENTITY_FILE",
        "backup.age_identity_file",
        Kind::Str,
    ),
    bind("BACKUP_DRILL_CRON", "backup.drill_cron", Kind::Str),
    bind("BACKUP_STALE_AFTER", "backup.stale_after", Kind::Int),
    bind("BACKUP_NAME", "backup.name", Kind::Str),
    bind_secret("PUSHGATEWAY_URL", "backup.pushgateway_url", Kind::Str),
    bind("METRICS_TEXTFILE", "backup.metrics_textfile", Kind::Str),
];

/// Sections of the shared settings this binary embeds; bindings of other sections (a shared
/// env file may carry `TON_RPC_URL`) are ignored rather than rejected.
const SHARED_SECTIONS: &[&str] = &["storage.", "alerts.", "telemetry.", "runner."];

/// Every environment binding the job reads.
pub fn bindings() -> Vec<EnvBinding> {
    COMMON_ENV
        .iter()
        .filter(|b| SHARED_SECTIONS.iter().any(|s| b.path.starts_with(s)))
        .chain(BACKUP_ENV)
        .copied()
        .collect()
}

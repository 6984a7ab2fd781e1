//! Settings of the backup job: `[backup]` plus the shared storage, alert, telemetry and runner
//! sections. `DATABASE_URL` (`storage.database_url`) is the database that is backed up; only
//! the commands that back up need it (`restore`, `verify`, `list`, `prune` work without it).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keeper_runtime::config::{
    AlertSettings, ConfigError, Env, Layers, RunnerSettings, StorageSettings, TelemetrySettings,
    validate, validate_shared,
};
use keeper_runtime::runner::Schedule;
use keeper_runtime::secret::{Secret, SecretUrl};
use serde::Deserialize;

/// Default ops server address of the backup job.
pub const DEFAULT_METRICS_ADDR: &str = "127.0.0.1:9103";

/// The built-in defaults: the shipped, commented example file, compiled in.
pub const DEFAULTS: &str = include_str!("../../../config/db-backup.toml");

/// How a fresh backup is checked before it is published.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyMode {
    /// No check beyond the checksum computed while writing.
    None,
    /// Checksum re-read from disk and `pg_restore --list` (the archive's table of contents).
    #[default]
    List,
    /// Checksum, full restore into a scratch database, row counts compared with the manifest.
    Restore,
}

impl VerifyMode {
    /// The mode as written in manifests and `backup_runs.verify_mode`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::List => "list",
            Self::Restore => "restore",
        }
    }
}

/// `[backup]`: what to dump, where to put it, how to check and keep it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackupSettings {
    /// Directory of local backups and of the temp file of a running dump (`BACKUP_DIR`).
    pub dir: PathBuf,
    /// `s3://bucket/prefix` for remote copies (`BACKUP_S3_URL`); region and endpoint come from
    /// the standard AWS environment (`AWS_REGION`, `AWS_ENDPOINT_URL`, …).
    pub s3_url: Option<String>,
    /// S3 access key id (`AWS_ACCESS_KEY_ID`, or a file); unset: web identity, container or
    /// instance credentials.
    pub s3_access_key_id: Option<Arc<Secret>>,
    /// S3 secret access key (`AWS_SECRET_ACCESS_KEY`, or a file).
    pub s3_secret_access_key: Option<Arc<Secret>>,
    /// Temporary-credential session token (`AWS_SESSION_TOKEN`, or a file).
    pub s3_session_token: Option<Arc<Secret>>,
    /// Database `restore` writes into when `--target-database-url` is not given
    /// (`TARGET_DATABASE_URL`, or a file): keeps the password off the command line.
    pub target_database_url: Option<Arc<SecretUrl>>,
    /// Keep the local copy after a successful upload (`BACKUP_KEEP_LOCAL`).
    pub keep_local: bool,
    /// Multipart part size in MiB, 5 to 5120 (`BACKUP_S3_PART_SIZE_MIB`); two parts are in
    /// flight at a time, so this bounds upload memory.
    pub s3_part_size_mib: u64,
    /// Cron schedule of the daemon, seconds first (`BACKUP_SCHEDULE`).
    pub schedule: String,
    /// `none`, `list` or `restore` (`BACKUP_VERIFY`).
    pub verify: VerifyMode,
    /// Server for scratch restores (`BACKUP_VERIFY_DATABASE_URL`): a database on it the job can
    /// connect to with the right to `CREATE DATABASE`.
    pub verify_database_url: Option<Arc<SecretUrl>>,
    /// The `pg_dump` to run (`PG_DUMP_PATH`).
    pub pg_dump_path: PathBuf,
    /// The `pg_restore` to run (`PG_RESTORE_PATH`); default: beside `pg_dump_path`.
    pub pg_restore_path: Option<PathBuf>,
    /// zstd level, 1 (fast) to 19 (`BACKUP_ZSTD_LEVEL`). Default 1: on the benchmark database
    /// (hashes, decimals, jsonb) level 1 is both twice as fast as 3 and 5% smaller.
    pub zstd_level: i32,
    /// zstd worker threads; 0 = one per CPU (`BACKUP_ZSTD_THREADS`).
    pub zstd_threads: u32,
    /// The N newest backups whatever their dates (`BACKUP_KEEP_LAST`), on top of GFS.
    pub keep_last: u32,
    /// GFS: newest backup of each of the last N days that have one (`BACKUP_KEEP_DAILY`).
    pub keep_daily: u32,
    /// GFS: newest backup of each of the last N ISO weeks that have one (`BACKUP_KEEP_WEEKLY`).
    pub keep_weekly: u32,
    /// GFS: newest backup of each of the last N months that have one (`BACKUP_KEEP_MONTHLY`).
    pub keep_monthly: u32,
    /// Record runs in `backup_runs` when a records database is set (`BACKUP_RECORDS`).
    pub records: bool,
    /// Database holding `backup_runs` (`BACKUP_RECORDS_URL`); unset: no run records, the
    /// manifests are the history. It may name the backed-up database: only `backup_runs` (and
    /// db-backup's migration bookkeeping) is then created there.
    pub records_url: Option<Arc<SecretUrl>>,
    /// The earlier name of `records_url` (`BACKUP_RECORDS_DATABASE_URL`), still honoured.
    pub records_database_url: Option<Arc<SecretUrl>>,
    /// Seconds to wait for another run's lock before giving up; 0 = give up at once
    /// (`BACKUP_LOCK_TIMEOUT`).
    pub lock_timeout: u64,
    /// Seconds `pg_dump` (and the row counts beside it) may queue for a table lock before the
    /// run fails naming the table, 1 to 3600 (`BACKUP_LOCK_WAIT_TIMEOUT`). Without a limit a
    /// dump queued behind an ACCESS EXCLUSIVE request blocks every later query on that table.
    pub lock_wait_timeout: u64,
    /// Take the cluster globals (`pg_dumpall --globals-only`: roles, memberships, role
    /// settings, tablespaces) as a second artifact of every backup (`BACKUP_GLOBALS`).
    pub globals: bool,
    /// Include role password hashes in the globals (`BACKUP_GLOBALS_PASSWORDS`); needs a
    /// superuser (they are read from `pg_authid`) and makes the globals a credential store.
    pub globals_passwords: bool,
    /// age recipients (`age1…` X25519 or SSH public keys) every artifact is encrypted for
    /// (`BACKUP_AGE_RECIPIENTS`, comma-separated); empty: not encrypted.
    pub age_recipients: Vec<String>,
    /// Identity file (age or unencrypted OpenSSH private key) used to decrypt for `restore`,
    /// `verify` and the daemon's verification (`BACKUP_AGE_IDENTITY_FILE`).
    pub age_identity_file: Option<PathBuf>,
    /// Cron schedule (seconds first, UTC) of restore drills: the daemon restores the newest
    /// backup into a scratch database on `verify_database_url` and records the result
    /// (`BACKUP_DRILL_CRON`); unset: no drills.
    pub drill_cron: Option<String>,
    /// Seconds without a successful backup before `backup_stale` fires (`BACKUP_STALE_AFTER`);
    /// default: two schedule periods plus a quarter period (at most an hour) of slack.
    pub stale_after: Option<u64>,
    /// Name used in file names instead of the database name (`BACKUP_NAME`).
    pub name: Option<String>,
    /// Pushgateway base URL for one-shot runs (`PUSHGATEWAY_URL`).
    pub pushgateway_url: Option<Arc<SecretUrl>>,
    /// node-exporter textfile for one-shot runs (`METRICS_TEXTFILE`, must end in `.prom`).
    pub metrics_textfile: Option<PathBuf>,
}

impl Default for BackupSettings {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("/var/lib/db-backup"),
            s3_url: None,
            s3_access_key_id: None,
            s3_secret_access_key: None,
            s3_session_token: None,
            target_database_url: None,
            keep_local: true,
            s3_part_size_mib: 8,
            schedule: "0 0 */6 * * *".into(),
            verify: VerifyMode::List,
            verify_database_url: None,
            pg_dump_path: PathBuf::from("pg_dump"),
            pg_restore_path: None,
            zstd_level: 1,
            zstd_threads: 0,
            keep_last: 0,
            keep_daily: 7,
            keep_weekly: 4,
            keep_monthly: 6,
            records: true,
            records_url: None,
            records_database_url: None,
            lock_timeout: 0,
            lock_wait_timeout: 60,
            globals: true,
            globals_passwords: false,
            age_recipients: Vec::new(),
            age_identity_file: None,
            drill_cron: None,
            stale_after: None,
            name: None,
            pushgateway_url: None,
            metrics_textfile: None,
        }
    }
}

/// Everything `db-backup` reads.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct BackupConfig {
    /// `[backup]`
    pub backup: BackupSettings,
    /// `[storage]`: `DATABASE_URL` is the source database; `DB_SCHEMA` holds `backup_runs`.
    pub storage: StorageSettings,
    /// `[alerts]`
    pub alerts: AlertSettings,
    /// `[telemetry]`
    pub telemetry: TelemetrySettings,
    /// `[runner]`: `shutdown_grace` bounds how long SIGTERM waits for a running dump.
    pub runner: RunnerSettings,
}

/// A parsed `s3://bucket/prefix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// Bucket name.
    pub bucket: String,
    /// Key prefix without leading or trailing `/` (may be empty).
    pub prefix: String,
}

impl S3Location {
    /// Parses `s3://bucket[/prefix]`.
    pub fn parse(setting: &str, raw: &str) -> Result<Self, ConfigError> {
        let rest = raw.strip_prefix("s3://").ok_or_else(|| {
            ConfigError::new(
                setting,
                format!("{raw:?} must look like s3://bucket/prefix"),
            )
        })?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let bucket_ok = (3..=63).contains(&bucket.len())
            && bucket
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
        if !bucket_ok {
            return Err(ConfigError::new(
                setting,
                format!("bucket {bucket:?} is not a valid S3 bucket name (3-63 of a-z 0-9 . -)"),
            ));
        }
        let prefix = prefix.trim_matches('/').to_owned();
        if prefix.split('/').any(|p| p == "." || p == "..") || prefix.contains("//") {
            return Err(ConfigError::new(
                setting,
                format!("prefix {prefix:?} has an empty, . or .. segment"),
            ));
        }
        Ok(Self {
            bucket: bucket.to_owned(),
            prefix,
        })
    }
}

impl std::fmt::Display for S3Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.prefix.is_empty() {
            write!(f, "s3://{}", self.bucket)
        } else {
            write!(f, "s3://{}/{}", self.bucket, self.prefix)
        }
    }
}

/// Settings after validation, with derived values resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The raw layered settings.
    pub raw: BackupConfig,
    /// The source database (`DATABASE_URL`), needed only to back up: see [`Settings::source`].
    pub source_url: Option<Arc<SecretUrl>>,
    /// Where `backup_runs` lives, if records are on (`BACKUP_RECORDS_URL`).
    pub records_url: Option<Arc<SecretUrl>>,
    /// Remote location, if configured.
    pub s3: Option<S3Location>,
    /// The parsed `BACKUP_SCHEDULE`.
    pub schedule: Schedule,
    /// `pg_restore` to run.
    pub pg_restore_path: PathBuf,
    /// `pg_dumpall` for the globals: beside `pg_dump`.
    pub pg_dumpall_path: PathBuf,
    /// The parsed `BACKUP_DRILL_CRON`.
    pub drill_cron: Option<Schedule>,
    /// Effective zstd worker count.
    pub zstd_threads: u32,
    /// Ops server address.
    pub metrics_addr: SocketAddr,
}

impl Settings {
    /// Loads the layers and validates every setting, naming the first bad one.
    pub fn load(file: Option<&Path>, env: &dyn Env) -> Result<Self, ConfigError> {
        let raw = Layers::new(DEFAULTS, file, env, &crate::env::bindings()).load()?;
        Self::validate(raw)
    }

    fn validate(raw: BackupConfig) -> Result<Self, ConfigError> {
        validate_shared(&raw.runner, &raw.telemetry, &raw.alerts, &raw.storage)?;
        let b = &raw.backup;
        if b.dir.as_os_str().is_empty() {
            return Err(ConfigError::new(
                "backup.dir (BACKUP_DIR)",
                "must not be empty",
            ));
        }
        let s3 = b
            .s3_url
            .as_deref()
            .map(|u| S3Location::parse("backup.s3_url (BACKUP_S3_URL)", u))
            .transpose()?;
        if !b.keep_local && s3.is_none() {
            return Err(ConfigError::new(
                "backup.keep_local (BACKUP_KEEP_LOCAL)",
                "false needs backup.s3_url (BACKUP_S3_URL): backups would be kept nowhere",
            ));
        }
        if b.s3_access_key_id.is_some() != b.s3_secret_access_key.is_some() {
            return Err(ConfigError::new(
                "backup.s3_secret_access_key (AWS_SECRET_ACCESS_KEY)",
                "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are set together or not at all",
            ));
        }
        if let Some(url) = &b.target_database_url {
            validate::url_with_scheme(
                "backup.target_database_url (TARGET_DATABASE_URL)",
                url.expose(),
                &["postgres", "postgresql"],
                true,
            )?;
        }
        let schedule = parse_schedule("backup.schedule (BACKUP_SCHEDULE)", &b.schedule)?;
        if schedule.period().is_none() {
            return Err(ConfigError::new(
                "backup.schedule (BACKUP_SCHEDULE)",
                format!("cron expression {:?} never fires twice", b.schedule),
            ));
        }
        let drill_cron = match &b.drill_cron {
            Some(expr) => {
                let expr = parse_schedule("backup.drill_cron (BACKUP_DRILL_CRON)", expr)?;
                if b.verify_database_url.is_none() {
                    return Err(ConfigError::new(
                        "backup.drill_cron (BACKUP_DRILL_CRON)",
                        "restore drills need backup.verify_database_url (BACKUP_VERIFY_DATABASE_URL)",
                    ));
                }
                Some(expr)
            }
            None => None,
        };
        if b.verify == VerifyMode::Restore && b.verify_database_url.is_none() {
            return Err(ConfigError::new(
                "backup.verify (BACKUP_VERIFY)",
                "restore needs backup.verify_database_url (BACKUP_VERIFY_DATABASE_URL)",
            ));
        }
        if let Some(u) = &b.verify_database_url {
            validate::url_with_scheme(
                "backup.verify_database_url (BACKUP_VERIFY_DATABASE_URL)",
                u.expose(),
                &["postgres", "postgresql"],
                true,
            )?;
        }
        for (setting, url) in [
            ("backup.records_url (BACKUP_RECORDS_URL)", &b.records_url),
            (
                "backup.records_database_url (BACKUP_RECORDS_DATABASE_URL)",
                &b.records_database_url,
            ),
        ] {
            if let Some(u) = url {
                validate::url_with_scheme(setting, u.expose(), &["postgres", "postgresql"], true)?;
            }
        }
        if let Some(u) = &b.pushgateway_url {
            validate::url_with_scheme(
                "backup.pushgateway_url (PUSHGATEWAY_URL)",
                u.expose(),
                &["http", "https"],
                true,
            )?;
        }
        if let Some(p) = &b.metrics_textfile
            && p.extension().is_none_or(|e| e != "prom")
        {
            return Err(ConfigError::new(
                "backup.metrics_textfile (METRICS_TEXTFILE)",
                format!(
                    "{} must end in .prom (node-exporter reads only those)",
                    p.display()
                ),
            ));
        }
        if let Err(e) = crate::crypt::parse_recipients(&b.age_recipients) {
            return Err(ConfigError::new(
                "backup.age_recipients (BACKUP_AGE_RECIPIENTS)",
                e.to_string(),
            ));
        }
        if !(1..=3600).contains(&b.lock_wait_timeout) {
            return Err(ConfigError::new(
                "backup.lock_wait_timeout (BACKUP_LOCK_WAIT_TIMEOUT)",
                format!("{} is outside 1..=3600 seconds", b.lock_wait_timeout),
            ));
        }
        if !(1..=19).contains(&b.zstd_level) {
            return Err(ConfigError::new(
                "backup.zstd_level (BACKUP_ZSTD_LEVEL)",
                format!("{} is outside 1..=19", b.zstd_level),
            ));
        }
        if !(5..=5120).contains(&b.s3_part_size_mib) {
            return Err(ConfigError::new(
                "backup.s3_part_size_mib (BACKUP_S3_PART_SIZE_MIB)",
                format!(
                    "{} is outside 5..=5120 (S3 part limits)",
                    b.s3_part_size_mib
                ),
            ));
        }
        if b.zstd_threads > 64 {
            return Err(ConfigError::new(
                "backup.zstd_threads (BACKUP_ZSTD_THREADS)",
                format!("{} is more than 64", b.zstd_threads),
            ));
        }
        if b.keep_last + b.keep_daily + b.keep_weekly + b.keep_monthly == 0 {
            return Err(ConfigError::new(
                "backup.keep_daily (BACKUP_KEEP_DAILY)",
                "daily, weekly and monthly retention are all 0: every backup would be pruned",
            ));
        }
        if let Some(s) = b.stale_after {
            validate::nonzero("backup.stale_after (BACKUP_STALE_AFTER)", s)?;
        }
        if let Some(n) = &b.name {
            check_name("backup.name (BACKUP_NAME)", n)?;
        }
        let source_url = raw.storage.database_url.clone();
        let pg_restore_path = b
            .pg_restore_path
            .clone()
            .unwrap_or_else(|| sibling(&b.pg_dump_path, "pg_restore"));
        let zstd_threads = if b.zstd_threads == 0 {
            std::thread::available_parallelism()
                .map(|n| n.get() as u32)
                .unwrap_or(2)
        } else {
            b.zstd_threads
        };
        let records_url = if b.records {
            b.records_url
                .clone()
                .or_else(|| b.records_database_url.clone())
        } else {
            None
        };
        let metrics_addr = raw.telemetry.metrics_addr.unwrap_or_else(|| {
            DEFAULT_METRICS_ADDR
                .parse()
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9103)))
        });
        Ok(Self {
            source_url,
            records_url,
            s3,
            schedule,
            pg_restore_path,
            pg_dumpall_path: sibling(&b.pg_dump_path, "pg_dumpall"),
            drill_cron,
            zstd_threads,
            metrics_addr,
            raw,
        })
    }

    /// The database to back up: required by `run`, `--once`, `--dry-run`, and nothing else.
    pub fn source(&self) -> Result<&Arc<SecretUrl>, ConfigError> {
        self.source_url.as_ref().ok_or_else(|| {
            ConfigError::new(
                "storage.database_url (DATABASE_URL)",
                "is required: it is the database to back up",
            )
        })
    }

    /// The `[backup]` section.
    pub fn backup(&self) -> &BackupSettings {
        &self.raw.backup
    }

    /// Seconds without success before `backup_stale` fires.
    pub fn stale_after(&self) -> Duration {
        if let Some(s) = self.backup().stale_after {
            return Duration::from_secs(s);
        }
        let period = self
            .schedule
            .period()
            .unwrap_or(Duration::from_secs(6 * 3600));
        period * 2 + (period / 4).min(Duration::from_secs(3600))
    }
}

/// Names go into file names and S3 keys: keep them to a safe alphabet.
pub fn check_name(setting: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            setting,
            format!("{name:?} must be 1-100 of A-Z a-z 0-9 _ - . and not start with ."),
        ))
    }
}

/// `pg_restore` beside a `pg_dump` given with a directory, else `pg_restore` from PATH.
fn sibling(pg_dump: &Path, name: &str) -> PathBuf {
    match pg_dump.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join(name),
        _ => PathBuf::from(name),
    }
}

/// Parses a cron setting with the runner's parser, naming the setting when it does not parse.
fn parse_schedule(setting: &str, expr: &str) -> Result<Schedule, ConfigError> {
    Schedule::parse(expr).map_err(|e| {
        ConfigError::new(
            setting,
            format!("cron expression {expr:?} does not parse: {}", e.reason),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let env: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Settings::load(None, &env)
    }

    const DB: (&str, &str) = ("DATABASE_URL", "postgres://u:hunter2@db:5432/app");

    #[test]
    fn defaults_follow_the_design() {
        let s = load(&[DB]).unwrap();
        assert_eq!(s.schedule.as_str(), "0 0 */6 * * *");
        assert_eq!(s.backup().verify, VerifyMode::List);
        assert_eq!(
            (
                s.backup().keep_daily,
                s.backup().keep_weekly,
                s.backup().keep_monthly
            ),
            (7, 4, 6)
        );
        assert_eq!(s.metrics_addr.port(), 9103);
        assert_eq!(s.pg_restore_path, PathBuf::from("pg_restore"));
        // Nothing is written into the database being backed up unless asked.
        assert!(s.records_url.is_none());
        let rec = "postgres://u:pw@records:5432/ops";
        let s = load(&[DB, ("BACKUP_RECORDS_URL", rec)]).unwrap();
        assert_eq!(s.records_url.as_ref().map(|u| u.expose()), Some(rec));
        let s = load(&[DB, ("BACKUP_RECORDS_DATABASE_URL", rec)]).unwrap();
        assert_eq!(s.records_url.as_ref().map(|u| u.expose()), Some(rec));
        let s = load(&[DB, ("BACKUP_RECORDS_URL", rec), ("BACKUP_RECORDS", "false")]).unwrap();
        assert!(s.records_url.is_none());
        // 2 × 6 h + 1 h of slack.
        assert_eq!(s.stale_after(), Duration::from_secs(13 * 3600));
    }

    #[test]
    fn bad_settings_name_the_setting_and_hide_secrets() {
        // Restoring, verifying and listing work without the source; backing up does not.
        let e = load(&[]).unwrap().source().unwrap_err();
        assert!(e.setting.contains("DATABASE_URL"), "{e}");
        let e = load(&[DB, ("BACKUP_RECORDS_URL", "mysql://u:hunter2@db/r")]).unwrap_err();
        assert!(e.setting.contains("BACKUP_RECORDS_URL") && !e.to_string().contains("hunter2"));
        let e = load(&[DB, ("BACKUP_VERIFY", "restore")]).unwrap_err();
        assert!(e.to_string().contains("BACKUP_VERIFY_DATABASE_URL"), "{e}");
        let e = load(&[DB, ("BACKUP_VERIFY", "sometimes")]).unwrap_err();
        assert!(e.setting.contains("BACKUP_VERIFY"), "{e}");
        let e = load(&[DB, ("BACKUP_SCHEDULE", "every day")]).unwrap_err();
        assert!(e.setting.contains("BACKUP_SCHEDULE"), "{e}");
        let e = load(&[DB, ("BACKUP_S3_URL", "https://bucket/x")]).unwrap_err();
        assert!(e.setting.contains("BACKUP_S3_URL"), "{e}");
        let e = load(&[DB, ("BACKUP_ZSTD_LEVEL", "25")]).unwrap_err();
        assert!(e.setting.contains("BACKUP_ZSTD_LEVEL"), "{e}");
        let e = load(&[DB, ("METRICS_TEXTFILE", "/tmp/x.txt")]).unwrap_err();
        assert!(e.setting.contains("METRICS_TEXTFILE"), "{e}");
        let e = load(&[("DATABASE_URL", "mysql://u:hunter2@db/app")]).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = load(&[DB, ("BACKUP_KEEP_LOCAL", "false")]).unwrap_err();
        assert!(e.to_string().contains("BACKUP_S3_URL"), "{e}");
    }

    #[test]
    fn the_example_file_parses_and_states_the_defaults() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/db-backup.toml");
        let env: HashMap<String, String> = [DB]
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let from_file = Settings::load(Some(&file), &env).unwrap();
        let defaults = load(&[DB]).unwrap();
        assert_eq!(
            format!("{:?}", from_file.raw.backup),
            format!("{:?}", defaults.raw.backup)
        );
        assert_eq!(from_file.metrics_addr, defaults.metrics_addr);
        assert_eq!(from_file.schedule.as_str(), defaults.schedule.as_str());
    }

    #[test]
    fn other_keepers_env_is_ignored() {
        assert!(load(&[DB, ("TON_RPC_URL", "not a url"), ("KEEPER_MNEMONIC", "x")]).is_ok());
    }

    #[test]
    fn s3_urls_and_schedules() {
        let l = S3Location::parse("s", "s3://backups/prod/db/").unwrap();
        assert_eq!(
            (l.bucket.as_str(), l.prefix.as_str()),
            ("backups", "prod/db")
        );
        assert_eq!(S3Location::parse("s", "s3://backups").unwrap().prefix, "");
        assert!(S3Location::parse("s", "s3://Bad_Bucket/x").is_err());
        assert!(S3Location::parse("s", "s3://bucket/a/../b").is_err());
        let period = |expr| Schedule::parse(expr).unwrap().period();
        assert_eq!(
            Schedule::parse("*/5 * * * *").unwrap().as_str(),
            "0 */5 * * * *"
        );
        assert_eq!(
            period("0 0 2,14 * * *"),
            Some(Duration::from_secs(12 * 3600))
        );
        assert_eq!(period("0 0 3 * * *"), Some(Duration::from_secs(24 * 3600)));
        assert_eq!(
            load(&[DB, ("BACKUP_STALE_AFTER", "60")])
                .unwrap()
                .stale_after(),
            Duration::from_secs(60)
        );
    }
}

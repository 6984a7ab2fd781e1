//! One backup run, start to finish: lock, snapshot, dump, verify, publish, upload, record,
//! prune. Either a complete, checksummed backup is published, or nothing is and the run says
//! why (record, metric, `backup_failed` alert, exit 1).

use std::path::PathBuf;
use std::time::Instant;

use crate::records::BackupOutcome;
use chrono::{DateTime, Utc};
use keeper_runtime::alert::{Alert, Severity};
use keeper_runtime::runner::CycleReport;
use keeper_runtime::telemetry::metrics::labels;
use serde::Serialize;

use crate::app::App;
use crate::config::VerifyMode;
use crate::dump::{self, DumpSpec, Killer};
use crate::libpq::LibpqTarget;
use crate::manifest::{
    BackupId, Compression, Encryption, GlobalsArtifact, MANIFEST_FORMAT, Manifest, SourceIdentity,
};
use crate::pg::{self, PgError, Source};
use crate::prune::{self, PruneReport};
use crate::store::local::LocalStore;
use crate::verify::{Verifier, run_blocking};

/// Alert raised when a run fails; resolved by the next success.
pub const BACKUP_FAILED: &str = "backup_failed";

/// How a backup run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RunOutcome {
    /// A complete, checksummed (and, when asked, verified) backup was published.
    Success,
    /// Nothing was published; `error` says why.
    Failure,
    /// Another run held the backup lock; nothing was attempted.
    Busy,
}

impl RunOutcome {
    /// The text in summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Busy => "busy",
        }
    }
}

/// What a run did, printed by `--once` and shown in `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// How it ended.
    pub outcome: RunOutcome,
    /// The database label.
    pub database: String,
    /// When the run started.
    pub started_at: DateTime<Utc>,
    /// Wall time in seconds.
    pub duration_seconds: f64,
    /// The published backup.
    pub backup: Option<Manifest>,
    /// Local archive path, if kept.
    pub local_path: Option<String>,
    /// Remote archive URL, if uploaded.
    pub remote_url: Option<String>,
    /// Why it failed.
    pub error: Option<String>,
    /// What retention did.
    pub prune: Option<PruneReport>,
}

impl CycleReport for RunReport {
    /// One line for logs and systemd STATUS.
    fn summary(&self) -> String {
        match (&self.backup, &self.error) {
            (Some(m), None) => format!(
                "backup {} ok: {} bytes in {:.1} s{}",
                m.id(),
                m.size_bytes,
                self.duration_seconds,
                m.verification
                    .as_ref()
                    .map(|v| format!(", verified ({})", v.mode.as_str()))
                    .unwrap_or_default()
            ),
            (_, Some(e)) => format!("backup of {} {}: {e}", self.database, self.outcome.as_str()),
            (None, None) => format!("backup of {} {}", self.database, self.outcome.as_str()),
        }
    }
}

/// A failure with the state to clean up after.
struct Failure {
    error: anyhow::Error,
    busy: bool,
    /// The archive was published locally before a later step (the upload) failed.
    kept: Option<(Manifest, PathBuf)>,
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(e: E) -> Self {
        Self {
            error: e.into(),
            busy: false,
            kept: None,
        }
    }
}

/// Runs one backup. `killer` stops it early (shutdown, timeout): the dump is killed, temp files
/// removed, and the run ends as a failure.
pub async fn run(app: &App, killer: &Killer) -> RunReport {
    let started = Instant::now();
    let started_at = Utc::now();
    let mut report = RunReport {
        outcome: RunOutcome::Failure,
        database: app.label.clone(),
        started_at,
        duration_seconds: 0.0,
        backup: None,
        local_path: None,
        remote_url: None,
        error: None,
        prune: None,
    };
    let mut record_id: Option<i64> = None;
    let result = attempt(app, killer, &mut record_id, &mut report).await;
    report.duration_seconds = started.elapsed().as_secs_f64();
    let b = Some(&app.backup_metrics);
    match result {
        Ok(manifest) => {
            report.outcome = RunOutcome::Success;
            if let Some(b) = b {
                b.last_success_timestamp
                    .set(manifest.finished_at.timestamp());
                b.size_bytes.set(manifest.size_bytes as i64);
                b.duration_seconds.set(report.duration_seconds);
                b.runs
                    .get_or_create(&labels([("outcome", "success")]))
                    .inc();
            }
            app.alerter.resolve(BACKUP_FAILED);
            tracing::info!(
                backup = %manifest.id(),
                size_bytes = manifest.size_bytes,
                duration_seconds = report.duration_seconds,
                "backup complete"
            );
            report.backup = Some(manifest);
        }
        Err(f) if f.busy => {
            report.outcome = RunOutcome::Busy;
            report.error = Some(format!("{:#}", f.error));
            tracing::error!(error = %format!("{:#}", f.error), "backup not started");
        }
        Err(f) => {
            let msg = format!("{:#}", f.error);
            if let Some((m, path)) = f.kept {
                report.local_path = Some(path.display().to_string());
                report.backup = Some(m);
            }
            if let Some(b) = b {
                b.duration_seconds.set(report.duration_seconds);
                b.runs
                    .get_or_create(&labels([("outcome", "failure")]))
                    .inc();
            }
            tracing::error!(database = %app.label, error = %msg, "backup failed");
            app.alerter.fire(
                Alert::new(
                    BACKUP_FAILED,
                    Severity::Critical,
                    format!("db-backup: backup of {} failed: {msg}", app.label),
                )
                .label("database", app.label.clone()),
            );
            report.error = Some(msg);
        }
    }
    finish_record(app, record_id, &report).await;
    report
}

async fn attempt(
    app: &App,
    killer: &Killer,
    record_id: &mut Option<i64>,
    report: &mut RunReport,
) -> Result<Manifest, Failure> {
    let s = &app.settings;
    let b = s.backup();
    let source_url = s.source().map_err(anyhow::Error::from)?;
    let mut source = match Source::open(source_url).await {
        Ok(src) => src,
        Err(e) => {
            start_record(app, record_id).await;
            return Err(e.into());
        }
    };
    let wait = std::time::Duration::from_secs(b.lock_timeout);
    let taken = tokio::select! {
        r = source.lock(wait) => r.map_err(anyhow::Error::from),
        () = killer.cancelled() => Err(anyhow::anyhow!(
            "stopped while waiting for the backup lock: {}",
            killer.reason().unwrap_or_default()
        )),
    };
    if let Err(e) = taken {
        let busy = matches!(e.downcast_ref::<PgError>(), Some(PgError::Locked { .. }));
        if !busy {
            start_record(app, record_id).await;
        }
        source.close().await;
        return Err(Failure {
            error: e,
            busy,
            kept: None,
        });
    }
    close_interrupted(app).await;
    start_record(app, record_id).await;
    let result = locked(app, killer, &mut source, report).await;
    source.close().await;
    result
}

/// The part of a run that holds the lock.
async fn locked(
    app: &App,
    killer: &Killer,
    source: &mut Source,
    report: &mut RunReport,
) -> Result<Manifest, Failure> {
    let s = &app.settings;
    let b = s.backup();
    let (pg_dump_version, client_major) = pg::tool_version(&b.pg_dump_path).await?;
    pg::check_dump_version(&b.pg_dump_path, client_major, &source.info)?;

    clean_leftovers(app).await;
    let id = fresh_id(app).await?;
    let tmp = app.local.temp_path(&id);
    let spec_target =
        LibpqTarget::new(s.source().map_err(anyhow::Error::from)?).map_err(PgError::from)?;
    let snapshot = source.export_snapshot(b.lock_wait_timeout).await?;
    tracing::info!(backup = %id, snapshot = %snapshot, "dumping");

    let spec_target_address = crate::restore::address(&spec_target);
    let spec = DumpSpec {
        pg_dump: b.pg_dump_path.clone(),
        target: spec_target,
        snapshot: snapshot.clone(),
        level: b.zstd_level,
        threads: s.zstd_threads,
        lock_wait_timeout_seconds: b.lock_wait_timeout,
        check_client_connection: source.info.major() >= 14,
        age_recipients: b.age_recipients.clone(),
    };
    let dumping = {
        let (tmp, killer) = (tmp.clone(), killer.clone());
        tokio::task::spawn_blocking(move || dump::dump_to_file(&spec, &tmp, &killer))
    };
    // Row counts run in the exporting transaction while pg_dump reads the same snapshot. Both
    // may wait on table locks; a stop request abandons the counting session.
    let counts: anyhow::Result<_> = tokio::select! {
        c = source.row_counts() => c.map_err(anyhow::Error::from),
        () = killer.cancelled() => Err(anyhow::anyhow!(
            "stopped while counting rows: {}",
            killer.reason().unwrap_or_default()
        )),
    };
    if let Err(e) = &counts {
        // The session may still have a query in flight: never reuse it.
        source.abandon();
        killer.kill(&format!("row counts failed: {e:#}"));
    }
    let dumped = match dumping.await {
        Ok(r) => r,
        Err(e) => Err(dump::DumpError::Stopped(format!("dump thread failed: {e}"))),
    };
    let ended = source.end_snapshot().await;
    // The dump's error comes first: after a failed count it says why it was stopped.
    let finished = (|| -> anyhow::Result<_> {
        let out = dumped?;
        let counts = counts?;
        ended?;
        Ok((out, counts))
    })();
    let (out, counts) = match finished {
        Ok(v) => v,
        Err(e) => {
            remove_off_runtime(&tmp).await;
            return Err(e.into());
        }
    };
    // The cluster globals, a second artifact of the same backup: without the roles, a restore
    // into a fresh cluster fails on every OWNER TO and GRANT.
    let gtmp = app.local.globals_temp_path(&id);
    let encryption = (!b.age_recipients.is_empty()).then(|| Encryption {
        algorithm: "age".into(),
        recipients: b
            .age_recipients
            .iter()
            .map(|r| crate::crypt::fingerprint(r))
            .collect(),
    });
    let encrypted = encryption.is_some();
    let globals = if b.globals {
        let spec = dump::GlobalsSpec {
            pg_dumpall: s.pg_dumpall_path.clone(),
            target: LibpqTarget::new(s.source().map_err(anyhow::Error::from)?)
                .map_err(PgError::from)?,
            role_passwords: b.globals_passwords,
            level: b.zstd_level,
            age_recipients: b.age_recipients.clone(),
        };
        let taken = {
            let (gtmp, killer) = (gtmp.clone(), killer.clone());
            tokio::task::spawn_blocking(move || dump::globals_to_file(&spec, &gtmp, &killer)).await
        };
        match taken {
            Ok(Ok(out)) => Some(GlobalsArtifact {
                file: id.globals_file(encrypted),
                size_bytes: out.size,
                sha256: out.sha256,
                role_passwords: b.globals_passwords,
            }),
            Ok(Err(e)) => {
                discard(&tmp, &gtmp).await;
                return Err(anyhow::Error::new(e)
                    .context("taking the cluster globals (BACKUP_GLOBALS=false to skip them)")
                    .into());
            }
            Err(e) => {
                discard(&tmp, &gtmp).await;
                return Err(anyhow::anyhow!("globals thread failed: {e}").into());
            }
        }
    } else {
        None
    };
    let mut manifest = Manifest {
        format: MANIFEST_FORMAT,
        name: id.db.clone(),
        database: source.info.database.clone(),
        file: id.archive_name(encrypted),
        server_version: source.info.version.clone(),
        server_version_num: source.info.version_num,
        pg_dump_version,
        snapshot,
        started_at: id.at,
        finished_at: Utc::now(),
        size_bytes: out.size,
        dump_bytes: out.dump_bytes,
        sha256: out.sha256,
        compression: Compression {
            algorithm: "zstd".into(),
            level: b.zstd_level,
            threads: s.zstd_threads,
        },
        row_counts: counts,
        verification: None,
        tool: concat!("db-backup ", env!("CARGO_PKG_VERSION")).into(),
        system_identifier: source.info.system_identifier.clone(),
        source: Some(source_identity(&spec_target_address, &source.info)),
        encryption,
        globals,
    };

    if b.verify != VerifyMode::None {
        let verifier = Verifier {
            pg_restore: &s.pg_restore_path,
            scratch_server: b.verify_database_url.as_deref(),
            killer,
            identity: b.age_identity_file.as_deref(),
        };
        let verified = verifier.verify(b.verify, &tmp, &manifest).await;
        match &verified {
            Ok(v) => app.backup_metrics.record_restore(v),
            Err(f) => app.backup_metrics.record_restore(&f.record),
        }
        match verified {
            Ok(v) => {
                tracing::info!(backup = %id, detail = %v.detail, "verified");
                manifest.verification = Some(v);
            }
            Err(f) => {
                discard(&tmp, &gtmp).await;
                return Err(anyhow::Error::new(f.error)
                    .context(format!("verification ({}) failed", b.verify.as_str()))
                    .into());
            }
        }
    }
    if let Some(reason) = killer.reason() {
        discard(&tmp, &gtmp).await;
        return Err(anyhow::anyhow!("stopped before publishing: {reason}").into());
    }

    let published = {
        let (local, tmp, m) = (app.local.clone(), tmp.clone(), manifest.clone());
        let g = m.globals.is_some().then(|| gtmp.clone());
        run_blocking(move || {
            local
                .publish(&tmp, g.as_deref(), &m)
                .map_err(anyhow::Error::from)
        })
        .await
    };
    let dump_path = match published {
        Ok(p) => p,
        Err(e) => {
            discard(&tmp, &gtmp).await;
            return Err(e.into());
        }
    };

    if let Some(remote) = &app.remote {
        let upload = tokio::select! {
            r = remote.upload(&dump_path, &manifest) => r.map_err(anyhow::Error::from),
            () = killer.cancelled() => Err(anyhow::anyhow!("upload stopped: {}", killer.reason().unwrap_or_default())),
        };
        match upload {
            Ok(url) => report.remote_url = Some(url),
            Err(e) => {
                return Err(Failure {
                    error: e.context(format!(
                        "upload to {} failed; the local backup {} is kept",
                        remote.location(),
                        dump_path.display()
                    )),
                    busy: false,
                    kept: Some((manifest, dump_path)),
                });
            }
        }
        let id = manifest.id();
        if !b.keep_local
            && let Err(e) = app.local.blocking(move |l| l.delete(&id)).await
        {
            tracing::warn!(error = %e, "cannot remove the local copy after upload");
        }
    }
    if b.keep_local || app.remote.is_none() {
        report.local_path = Some(dump_path.display().to_string());
    }

    // Retention only after a complete success, still under the lock.
    report.prune = Some(prune::prune(app, false).await);
    Ok(manifest)
}

/// Removes a run's temp archive and temp globals on the blocking pool.
/// What the manifest records about the source: the address `DATABASE_URL` names and what the
/// server says about itself, so `restore` can refuse it without its URL.
fn source_identity(
    address: &Option<(String, u16, String)>,
    info: &pg::ServerInfo,
) -> SourceIdentity {
    let (host, port) = address
        .as_ref()
        .map(|(h, p, _)| (h.clone(), *p))
        .unwrap_or_else(|| (String::new(), 0));
    SourceIdentity {
        system_identifier: info.system_identifier.clone(),
        database: info.database.clone(),
        host,
        port,
        server_addr: info.server_addr.clone(),
        server_port: info.server_port,
    }
}

async fn discard(tmp: &std::path::Path, globals_tmp: &std::path::Path) {
    remove_off_runtime(tmp).await;
    remove_off_runtime(globals_tmp).await;
}

/// Removes a temp file on the blocking pool.
async fn remove_off_runtime(path: &std::path::Path) {
    let path = path.to_path_buf();
    let _ = tokio::task::spawn_blocking(move || LocalStore::remove_file(&path)).await;
}

/// Removes leftovers of killed or failed runs of this database (temp files, manifest-less
/// archives and objects). Never fails the run: a leftover is untidy, not dangerous.
async fn clean_leftovers(app: &App) {
    let local = app.local.clone();
    let label = app.label.clone();
    match tokio::task::spawn_blocking(move || local.clean_leftovers(&label)).await {
        Ok(Ok(removed)) => {
            for p in removed {
                tracing::info!(path = %p.display(), "removed leftover of an earlier run");
            }
        }
        Ok(Err(e)) => tracing::warn!(error = %e, "cannot clean leftovers"),
        Err(e) => tracing::warn!(error = %e, "cannot clean leftovers"),
    }
    if let Some(r) = &app.remote {
        match r.clean_leftovers(&app.label).await {
            Ok(removed) => {
                for k in removed {
                    tracing::info!(key = %k, "removed remote leftover of an earlier run");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot clean remote leftovers"),
        }
    }
}

/// A name not used yet: two runs within one second get different seconds.
async fn fresh_id(app: &App) -> anyhow::Result<BackupId> {
    for _ in 0..3 {
        let id = BackupId::new(&app.label, Utc::now());
        let remote_taken = match &app.remote {
            Some(r) => r.get_manifest(&id).await.is_ok(),
            None => false,
        };
        let local_taken = {
            let id = id.clone();
            app.local.blocking(move |l| Ok(l.exists(&id))).await?
        };
        if !local_taken && !remote_taken {
            return Ok(id);
        }
        let wait = 1_000 - Utc::now().timestamp_subsec_millis().min(999);
        tokio::time::sleep(std::time::Duration::from_millis(u64::from(wait) + 5)).await;
    }
    anyhow::bail!("cannot find an unused backup name for {}", app.label)
}

/// Rows still `running` for this database belong to runs that died (SIGKILL, OOM, power):
/// holding the lock, this run knows none of them is alive, so they are closed as failed.
async fn close_interrupted(app: &App) {
    let Some(store) = &app.records else { return };
    match crate::records::close_interrupted_runs(store, &app.label).await {
        Ok(0) => {}
        Ok(runs) => tracing::warn!(runs, "closed runs interrupted earlier as failed"),
        Err(e) => tracing::warn!(error = %e, "cannot close interrupted runs in backup_runs"),
    }
}

async fn start_record(app: &App, id: &mut Option<i64>) {
    let Some(store) = &app.records else { return };
    match crate::records::start_backup_run(store, &app.label).await {
        Ok(n) => *id = Some(n),
        Err(e) => tracing::warn!(error = %e, "cannot record the run in backup_runs"),
    }
}

async fn finish_record(app: &App, id: Option<i64>, report: &RunReport) {
    let Some(store) = &app.records else { return };
    if report.outcome == RunOutcome::Busy {
        return;
    }
    let id = match id {
        Some(id) => id,
        None => {
            // The start was not recorded (records down at the time); try a complete row now.
            match crate::records::start_backup_run(store, &app.label).await {
                Ok(id) => id,
                Err(_) => return,
            }
        }
    };
    let v = report.backup.as_ref().and_then(|m| m.verification.as_ref());
    let outcome = match &report.error {
        None => BackupOutcome::success(),
        Some(e) => BackupOutcome::failed(e.clone()),
    };
    let outcome = BackupOutcome {
        location: report.local_path.clone(),
        remote_key: report.remote_url.clone(),
        size_bytes: report.backup.as_ref().map(|m| m.size_bytes as i64),
        sha256: report.backup.as_ref().map(|m| m.sha256.clone()),
        manifest: report
            .backup
            .as_ref()
            .and_then(|m| serde_json::to_value(m).ok()),
        verify_mode: Some(app.settings.backup().verify.as_str().to_owned()),
        verified: v.map(|v| v.ok),
        ..outcome
    };
    if let Err(e) = crate::records::finish_backup_run(store, id, &outcome).await {
        tracing::warn!(error = %e, "cannot record the run's outcome in backup_runs");
    }
}

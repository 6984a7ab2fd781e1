//! `list`, `restore`, `verify`, `prune`, `migrate`: finding a backup by file, key, name or
//! `latest`, and what is done with it. Every path that restores checks the SHA-256 over the
//! whole archive first.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use keeper_runtime::alert::Alerter;
use keeper_runtime::cli::{EXIT_FAILED, EXIT_OK, Output, print_as};
use keeper_runtime::runner::Shutdown;
use keeper_runtime::secret::SecretUrl;
use object_store::PutMode;
use serde::Serialize;

use crate::app::{App, registry};
use crate::archive;
use crate::config::{Settings, VerifyMode};
use crate::dump::Killer;
use crate::file::read_bounded;
use crate::libpq::LibpqTarget;
use crate::manifest::{
    BackupId, MAX_MANIFEST_BYTES, MAX_SIDECAR_BYTES, Manifest, Verification, parse_sidecar,
};
use crate::store::BackupStore as _;
use crate::store::local::LocalStore;
use crate::verify::{Verifier, run_blocking};

/// One row of `list`.
#[derive(Debug, Clone, Serialize)]
pub struct Listed {
    /// Backup name.
    pub name: String,
    /// Database label.
    pub database: String,
    /// When it was taken.
    pub started_at: chrono::DateTime<chrono::Utc>,
    /// Archive size, if the manifest is readable.
    pub size_bytes: Option<u64>,
    /// `complete`, or what is wrong.
    pub status: String,
    /// Local archive path, if present locally.
    pub local: Option<String>,
    /// Remote archive URL, if present remotely.
    pub remote: Option<String>,
    /// Last verification.
    pub verification: Option<Verification>,
    /// Seconds since the backup was taken, when listed.
    pub age_seconds: i64,
    /// Whether the artifacts are age-encrypted (`None`: no readable manifest says).
    pub encrypted: Option<bool>,
    /// `local`, `s3`, `both`, or `-` when no archive is present anywhere.
    pub location: &'static str,
}

impl Listed {
    fn new(id: &BackupId) -> Self {
        Self {
            name: id.base(),
            database: id.db.clone(),
            started_at: id.at,
            size_bytes: None,
            status: String::new(),
            local: None,
            remote: None,
            verification: None,
            age_seconds: (chrono::Utc::now() - id.at).num_seconds().max(0),
            encrypted: None,
            location: "-",
        }
    }
}

/// Local and remote backups of every database, merged by name, newest first.
pub async fn list(app: &App) -> anyhow::Result<Vec<Listed>> {
    let mut rows: std::collections::BTreeMap<BackupId, Listed> = Default::default();
    let mut problems: std::collections::BTreeMap<BackupId, Vec<String>> = Default::default();
    for b in app.local.list_backups().await? {
        let (size, verification, encrypted) = match &b.manifest {
            Ok(m) => (
                Some(m.size_bytes),
                m.verification.clone(),
                Some(m.encryption.is_some()),
            ),
            Err(e) => {
                problems
                    .entry(b.id.clone())
                    .or_default()
                    .push(format!("local: {e}"));
                (None, None, None)
            }
        };
        if !b.dump_present {
            problems
                .entry(b.id.clone())
                .or_default()
                .push("local: archive missing".into());
        }
        rows.insert(
            b.id.clone(),
            Listed {
                size_bytes: size,
                local: b.dump_present.then(|| b.archive.clone()),
                verification,
                encrypted,
                ..Listed::new(&b.id)
            },
        );
    }
    if let Some(r) = &app.remote {
        for b in r.list_backups().await? {
            let entry = rows
                .entry(b.id.clone())
                .or_insert_with(|| Listed::new(&b.id));
            match &b.manifest {
                Ok(m) => {
                    entry.size_bytes = entry.size_bytes.or(Some(m.size_bytes));
                    entry.encrypted = entry.encrypted.or(Some(m.encryption.is_some()));
                    // The newer verification wins (a remote re-verify may be the latest).
                    if let Some(v) = &m.verification
                        && entry.verification.as_ref().is_none_or(|e| e.at < v.at)
                    {
                        entry.verification = Some(v.clone());
                    }
                }
                Err(e) => problems
                    .entry(b.id.clone())
                    .or_default()
                    .push(format!("remote: {e}")),
            }
            if b.dump_present {
                entry.remote = Some(b.archive.clone());
            } else {
                problems
                    .entry(b.id.clone())
                    .or_default()
                    .push("remote: archive missing".into());
            }
        }
    }
    let mut out: Vec<Listed> = rows
        .into_iter()
        .map(|(id, mut l)| {
            l.status = match problems.remove(&id) {
                None => "complete".into(),
                Some(p) => p.join("; "),
            };
            l.location = match (&l.local, &l.remote) {
                (Some(_), Some(_)) => "both",
                (Some(_), None) => "local",
                (None, Some(_)) => "s3",
                (None, None) => "-",
            };
            l
        })
        .collect();
    out.reverse();
    Ok(out)
}

/// A located backup.
pub enum Located {
    /// An archive on this machine.
    Local {
        /// The archive.
        path: PathBuf,
        /// Its manifest, when there is one.
        manifest: Option<Manifest>,
        /// The digest to check against.
        sha256: String,
    },
    /// An archive in the bucket.
    Remote {
        /// Its manifest.
        manifest: Manifest,
    },
}

impl Located {
    fn manifest(&self) -> Option<&Manifest> {
        match self {
            Self::Local { manifest, .. } => manifest.as_ref(),
            Self::Remote { manifest } => Some(manifest),
        }
    }
}

/// Finds `from`: `latest`, a path to a `.dump.zst` file, a backup name, or an S3 key/URL.
pub async fn locate(app: &App, from: &str) -> anyhow::Result<Located> {
    if from == "latest" {
        app.require_label("--from latest")?;
        let m = app.newest_manifest().await.ok_or_else(|| {
            anyhow!(
                "no complete backup of {} found locally or remotely",
                app.label
            )
        })?;
        return by_id(app, &m.id()).await;
    }
    let as_path = PathBuf::from(from);
    if let Some(found) =
        tokio::task::spawn_blocking(move || as_path.is_file().then(|| local_file(&as_path)))
            .await
            .map_err(|e| anyhow!("file-system worker failed: {e}"))?
    {
        return found;
    }
    let last = from
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(from);
    let id = BackupId::parse_file_name(last)
        .map(|(id, _)| id)
        .or_else(|| BackupId::parse_base(last))
        .ok_or_else(|| {
            anyhow!("{from:?} is neither an existing file, `latest`, a backup name like app-20260101T000000Z, nor a key of one")
        })?;
    by_id(app, &id).await
}

async fn by_id(app: &App, id: &BackupId) -> anyhow::Result<Located> {
    let store = app.local.clone();
    let id_owned = id.clone();
    let found = tokio::task::spawn_blocking(move || {
        store
            .existing_archive(&id_owned)
            .map(|local| local_file(&local))
    })
    .await
    .map_err(|e| anyhow!("file-system worker failed: {e}"))?;
    if let Some(Ok(found)) = found
        && found.manifest().is_some()
    {
        return Ok(found);
    }
    if let Some(r) = &app.remote {
        match r.get_manifest(id).await {
            Ok(manifest) => return Ok(Located::Remote { manifest }),
            Err(e) => tracing::debug!(error = %e, "not found remotely"),
        }
    }
    bail!(
        "backup {id} not found locally in {} or remotely",
        app.local.dir().display()
    )
}

/// A local archive with the manifest and/or sidecar beside it; neither → refuse. Blocking.
fn local_file(path: &Path) -> anyhow::Result<Located> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| anyhow!("{} has no usable file name", path.display()))?;
    let dir = path.parent().unwrap_or(Path::new("."));
    let id = BackupId::parse_file_name(name).map(|(id, _)| id);
    let manifest = match &id {
        Some(id) => {
            let mp = dir.join(id.manifest_name());
            match read_bounded(&mp, MAX_MANIFEST_BYTES) {
                Ok(bytes) => Some(
                    Manifest::for_id(&bytes, id).map_err(|e| anyhow!("{}: {e}", mp.display()))?,
                ),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => bail!("cannot read {}: {e}", mp.display()),
            }
        }
        None => None,
    };
    let sidecar = read_bounded(&dir.join(format!("{name}.sha256")), MAX_SIDECAR_BYTES)
        .ok()
        .and_then(|t| parse_sidecar(&String::from_utf8_lossy(&t)));
    let sha256 = match (&manifest, sidecar) {
        (Some(m), Some(s)) if !m.sha256.eq_ignore_ascii_case(&s) => bail!(
            "manifest and .sha256 sidecar of {} disagree ({} vs {s}); refusing",
            path.display(),
            m.sha256
        ),
        (Some(m), _) => m.sha256.clone(),
        (None, Some(s)) => s,
        (None, None) => bail!(
            "no manifest or .sha256 sidecar beside {}: refusing to restore an archive that cannot be checked",
            path.display()
        ),
    };
    Ok(Located::Local {
        path: path.to_path_buf(),
        manifest,
        sha256,
    })
}

/// A checked archive on local disk; a download is removed when this is dropped.
struct Checked {
    path: PathBuf,
    manifest: Option<Manifest>,
    temp: bool,
}

impl Drop for Checked {
    fn drop(&mut self) {
        if self.temp {
            LocalStore::remove_file(&self.path);
        }
    }
}

/// Brings the archive to local disk if needed and checks its SHA-256 over every byte.
async fn fetch_checked(app: &App, found: Located) -> anyhow::Result<Checked> {
    match found {
        Located::Local {
            path,
            manifest,
            sha256,
        } => {
            let p = path.clone();
            let size = run_blocking(move || archive::check_sha256(&p, &sha256)).await?;
            tracing::info!(path = %path.display(), size, "checksum matches");
            Ok(Checked {
                path,
                manifest,
                temp: false,
            })
        }
        Located::Remote { manifest } => {
            let remote = app
                .remote
                .as_ref()
                .ok_or_else(|| anyhow!("remote backup without BACKUP_S3_URL"))?;
            let id = manifest.id();
            let dest = app.local.download_path(&id);
            let checked = Checked {
                path: dest.clone(),
                manifest: Some(manifest.clone()),
                temp: true,
            };
            let (sha, size) = remote.download_name(&manifest.file, &dest).await?;
            if !sha.eq_ignore_ascii_case(&manifest.sha256) {
                bail!(
                    "checksum mismatch for {}: expected {}, downloaded {sha} ({size} bytes); nothing restored",
                    remote.url_of(&manifest.file),
                    manifest.sha256
                );
            }
            tracing::info!(key = %remote.url_of(&manifest.file), size, "downloaded; checksum matches");
            Ok(checked)
        }
    }
}

/// What `restore` did.
#[derive(Debug, Serialize)]
pub struct RestoreReport {
    /// The backup restored.
    pub backup: String,
    /// The target, password redacted.
    pub target: String,
    /// Tables whose rows were counted and compared before commit.
    pub tables_checked: usize,
    /// Rows in those tables.
    pub rows: i64,
    /// The counts were compared inside the restore's transaction (false: no manifest, nothing
    /// to compare with; the restore was still one transaction).
    pub checked_before_commit: bool,
    /// `--clean`: the backup's objects were dropped and recreated.
    pub clean: bool,
    /// `--with-globals`: what applying the cluster globals did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub globals: Option<crate::globals::GlobalsReport>,
}

/// How `restore` writes.
#[derive(Debug, Clone, Copy, Default)]
pub struct RestoreOptions {
    /// Skip ownership and privileges.
    pub no_owner: bool,
    /// Allow a non-empty target; drop the backup's objects there first.
    pub clean: bool,
    /// Apply the backup's cluster globals (roles, memberships) first, skipping existing roles.
    pub with_globals: bool,
}

/// Restores `from` into `target` after checking its checksum, refusing the source database
/// and (without `clean`) a target with tables; commits only when the row counts match.
pub async fn restore(
    app: &App,
    from: &str,
    target: &SecretUrl,
    opts: RestoreOptions,
    killer: &Killer,
) -> anyhow::Result<RestoreReport> {
    let found = locate(app, from).await?;
    crate::restore::check_target(
        target,
        app.settings.source_url.as_deref(),
        found.manifest(),
        opts.clean,
    )
    .await?;
    let checked = fetch_checked(app, found).await?;
    let backup = checked
        .manifest
        .as_ref()
        .map(|m| m.id().base())
        .unwrap_or_else(|| checked.path.display().to_string());
    let check_sql = checked
        .manifest
        .as_ref()
        .map(|m| crate::restore::count_check_sql(&m.row_counts))
        .transpose()?;
    let globals = if opts.with_globals {
        Some(
            crate::globals::apply(
                app,
                &checked.path,
                checked.temp,
                checked.manifest.as_ref(),
                target,
                killer,
            )
            .await?,
        )
    } else {
        None
    };
    tracing::info!(backup = %backup, target = %target.redacted(), clean = opts.clean, "restoring");
    {
        let tool = app.settings.pg_restore_path.clone();
        let psql = crate::restore::psql_beside(&tool);
        let path = checked.path.clone();
        let t = LibpqTarget::new(target)?;
        let killer = killer.clone();
        let check_sql = check_sql.clone();
        let decrypt = archive::Decrypt::new(
            checked.manifest.as_ref(),
            app.settings.backup().age_identity_file.as_deref(),
        )
        .or_by_name(&path);
        run_blocking(move || {
            archive::restore_checked(
                &archive::CheckedRestore {
                    pg_restore: &tool,
                    psql: &psql,
                    target: &t,
                    no_owner: opts.no_owner,
                    clean: opts.clean,
                    check_sql,
                },
                (&path, &decrypt),
                &killer,
            )
        })
        .await
        .context("restore (rolled back, nothing committed)")?;
    }
    let (tables_checked, rows) = checked
        .manifest
        .as_ref()
        .map(|m| (m.row_counts.len(), m.row_counts.values().sum()))
        .unwrap_or((0, 0));
    Ok(RestoreReport {
        backup,
        target: target.redacted(),
        tables_checked,
        rows,
        checked_before_commit: check_sql.is_some(),
        clean: opts.clean,
        globals,
    })
}

/// Verifies `from` and records the result in its manifest(s) and `backup_runs`.
pub async fn verify(
    app: &App,
    from: &str,
    mode: VerifyMode,
    killer: &Killer,
) -> anyhow::Result<Verification> {
    let found = locate(app, from).await?;
    let manifest = found.manifest().cloned().ok_or_else(|| {
        anyhow!("{from}: no manifest to verify against (a sidecar alone only allows restore)")
    })?;
    // The verifier checks the digest itself, so a mismatch becomes a recorded failed
    // verification rather than an early error.
    let checked = match found {
        Located::Local { path, .. } => Checked {
            path,
            manifest: None,
            temp: false,
        },
        Located::Remote { .. } => {
            let remote = app
                .remote
                .as_ref()
                .ok_or_else(|| anyhow!("remote backup without BACKUP_S3_URL"))?;
            let id = manifest.id();
            let dest = app.local.download_path(&id);
            let checked = Checked {
                path: dest.clone(),
                manifest: None,
                temp: true,
            };
            remote.download_name(&manifest.file, &dest).await?;
            checked
        }
    };
    let verifier = Verifier {
        pg_restore: &app.settings.pg_restore_path,
        scratch_server: app.settings.backup().verify_database_url.as_deref(),
        killer,
        identity: app.settings.backup().age_identity_file.as_deref(),
    };
    let verification = match verifier.verify(mode, &checked.path, &manifest).await {
        Ok(v) => v,
        Err(f) => f.record,
    };
    app.backup_metrics.record_restore(&verification);
    let updated = Manifest {
        verification: Some(verification.clone()),
        ..manifest
    };
    let id = updated.id();
    // Record the outcome wherever this backup lives.
    let rewritten = {
        let updated = updated.clone();
        app.local
            .blocking(move |l| {
                if l.dir().join(&updated.file).is_file() {
                    l.rewrite_manifest(&updated)?;
                }
                Ok(())
            })
            .await
    };
    if let Err(e) = rewritten {
        tracing::warn!(error = %e, "cannot update the local manifest");
    }
    if let Some(r) = &app.remote
        && r.get_manifest(&id).await.is_ok()
        && let Err(e) = r.put_manifest(&updated, PutMode::Overwrite).await
    {
        tracing::warn!(error = %e, "cannot update the remote manifest");
    }
    if let Some(store) = &app.records
        && let Err(e) = crate::records::record_verification(
            store,
            &updated.sha256,
            verification.ok,
            mode.as_str(),
            serde_json::to_value(&updated).ok(),
        )
        .await
    {
        tracing::warn!(error = %e, "cannot update backup_runs");
    }
    Ok(verification)
}

/// One backup `verify --all` looked at.
#[derive(Debug, Serialize)]
pub struct VerifiedBackup {
    /// Backup name.
    pub name: String,
    /// Whether it passed (a backup that could not be checked, or is incomplete, did not).
    pub ok: bool,
    /// What was checked, or what is wrong.
    pub detail: String,
}

/// What `verify --all` found.
#[derive(Debug, Serialize)]
pub struct VerifyAllReport {
    /// How the backups were checked.
    pub mode: VerifyMode,
    /// Every backup within retention, newest first, and the incomplete ones.
    pub backups: Vec<VerifiedBackup>,
    /// Names of those that failed.
    pub bad: Vec<String>,
}

/// Verifies every backup that retention keeps (of `BACKUP_NAME`'s database, or of every
/// database when no name is set), recording each outcome like `verify --from`; incomplete
/// backups (unreadable manifest, missing archive) count as bad. A backup stored both locally
/// and in the bucket is checked from the local copy.
pub async fn verify_all(
    app: &App,
    mode: VerifyMode,
    killer: &Killer,
) -> anyhow::Result<VerifyAllReport> {
    let mut backups = Vec::new();
    let mut by_db: std::collections::BTreeMap<String, Vec<(BackupId, bool)>> = Default::default();
    for row in list(app).await? {
        if !app.label.is_empty() && row.database != app.label {
            continue;
        }
        match BackupId::parse_base(&row.name) {
            Some(id) if row.status == "complete" => by_db
                .entry(row.database.clone())
                .or_default()
                .push((id, row.verification.as_ref().is_some_and(|v| v.ok))),
            _ => backups.push(VerifiedBackup {
                name: row.name,
                ok: false,
                detail: row.status,
            }),
        }
    }
    let policy = crate::prune::policy(app);
    for candidates in by_db.values() {
        for (id, _) in crate::retention::plan(candidates, policy).keep {
            let name = id.base();
            let checked = match verify(app, &name, mode, killer).await {
                Ok(v) => VerifiedBackup {
                    name,
                    ok: v.ok,
                    detail: v.detail,
                },
                Err(e) => VerifiedBackup {
                    name,
                    ok: false,
                    detail: format!("{e:#}"),
                },
            };
            if !checked.ok {
                tracing::error!(backup = %checked.name, detail = %checked.detail, "verification failed");
            }
            backups.push(checked);
        }
    }
    backups.sort_by(|a, b| b.name.cmp(&a.name));
    let bad = backups
        .iter()
        .filter(|b| !b.ok)
        .map(|b| b.name.clone())
        .collect();
    Ok(VerifyAllReport { mode, backups, bad })
}

/// The restore target: the flag, else `TARGET_DATABASE_URL` from the settings (which can come
/// from a file and keeps the password off the command line).
pub fn target_url(
    flag: Option<String>,
    configured: Option<&Arc<SecretUrl>>,
) -> anyhow::Result<Arc<SecretUrl>> {
    if let Some(raw) = flag {
        let url = SecretUrl::new(raw);
        keeper_runtime::config::validate::url_with_scheme(
            "--target-database-url",
            url.expose(),
            &["postgres", "postgresql"],
            true,
        )?;
        return Ok(Arc::new(url));
    }
    configured.cloned().ok_or_else(|| {
        anyhow!("restore needs --target-database-url URL (or TARGET_DATABASE_URL, or TARGET_DATABASE_URL_FILE)")
    })
}

/// What `restore` is asked to do.
#[derive(Debug, Clone, Default)]
pub struct RestoreRequest {
    /// `latest`, a `.dump.zst` file, a backup name or its S3 key.
    pub from: String,
    /// `--target-database-url`, else `TARGET_DATABASE_URL` from the settings.
    pub target_database_url: Option<String>,
    /// How to write.
    pub options: RestoreOptions,
    /// `--identity`, else `BACKUP_AGE_IDENTITY_FILE`.
    pub identity: Option<PathBuf>,
}

/// `list`: prints local and remote backups; the exit code.
pub async fn list_command(settings: Settings, output: Output) -> anyhow::Result<i32> {
    let app = App::new(settings, registry(), Alerter::disabled(), false).await?;
    let rows = list(&app).await?;
    print_as(output, &rows, || list_text(&rows));
    Ok(EXIT_OK)
}

/// `prune`: applies retention now (or, `dry_run`, shows what it would delete); the exit code.
pub async fn prune_command(
    settings: Settings,
    dry_run: bool,
    output: Output,
) -> anyhow::Result<i32> {
    let app = App::new(settings, registry(), Alerter::disabled(), false).await?;
    let report = crate::prune::prune(&app, dry_run).await;
    print_as(output, &report, || prune_text(&report));
    Ok(if report.errors.is_empty() {
        EXIT_OK
    } else {
        EXIT_FAILED
    })
}

/// `restore`: restores a backup into an existing database after checking its checksum; the
/// exit code.
pub async fn restore_command(
    mut settings: Settings,
    request: RestoreRequest,
    output: Output,
) -> anyhow::Result<i32> {
    if request.identity.is_some() {
        settings.raw.backup.age_identity_file = request.identity;
    }
    let target = target_url(
        request.target_database_url,
        settings.raw.backup.target_database_url.as_ref(),
    )?;
    let app = App::new(settings, registry(), Alerter::disabled(), false).await?;
    let (shutdown, killer) = (Shutdown::new(), Killer::default());
    stop_on_signal(&shutdown, &killer);
    let report = restore(&app, &request.from, &target, request.options, &killer).await?;
    print_as(output, &report, || {
        if report.checked_before_commit {
            format!(
                "restored {} into {}: {} tables, {} rows, counts equal to the manifest (checked before commit)",
                report.backup, report.target, report.tables_checked, report.rows
            )
        } else {
            format!(
                "restored {} into {} in one transaction; no manifest, so row counts were not checked",
                report.backup, report.target
            )
        }
    });
    Ok(EXIT_OK)
}

/// `verify`: verifies a backup `mode` deep (default: `BACKUP_VERIFY`, or `list` when that is
/// `none`) and records the result; without `from`, every backup retention keeps
/// ([`verify_all`]). The exit code (1 when a verification failed).
pub async fn verify_command(
    mut settings: Settings,
    from: Option<&str>,
    mode: Option<VerifyMode>,
    identity: Option<PathBuf>,
    output: Output,
) -> anyhow::Result<i32> {
    if identity.is_some() {
        settings.raw.backup.age_identity_file = identity;
    }
    let mode = match mode.unwrap_or(settings.backup().verify) {
        VerifyMode::Restore => VerifyMode::Restore,
        VerifyMode::None | VerifyMode::List => VerifyMode::List,
    };
    let app = App::new(settings, registry(), Alerter::disabled(), true).await?;
    let (shutdown, killer) = (Shutdown::new(), Killer::default());
    stop_on_signal(&shutdown, &killer);
    let Some(from) = from else {
        let report = verify_all(&app, mode, &killer).await?;
        if mode == VerifyMode::Restore {
            app.export_restore_metrics().await;
        }
        print_as(output, &report, || verify_all_text(&report));
        return Ok(if report.bad.is_empty() {
            EXIT_OK
        } else {
            EXIT_FAILED
        });
    };
    let v = verify(&app, from, mode, &killer).await?;
    // A drill run from cron (or a CronJob) reports through the Pushgateway/textfile.
    if mode == VerifyMode::Restore {
        app.export_restore_metrics().await;
    }
    print_as(output, &v, || {
        format!(
            "verification ({}) {}: {}",
            v.mode.as_str(),
            if v.ok { "passed" } else { "FAILED" },
            v.detail
        )
    });
    Ok(if v.ok { EXIT_OK } else { EXIT_FAILED })
}

/// `migrate`: creates `backup_runs` (only it, with db-backup's own bookkeeping) in the records
/// database; without one there is nothing to create. The exit code.
pub async fn migrate_command(settings: Settings) -> anyhow::Result<i32> {
    let Some(url) = settings.records_url.clone() else {
        println!(
            "no records database (BACKUP_RECORDS_URL): db-backup keeps no tables, nothing to migrate"
        );
        return Ok(EXIT_OK);
    };
    crate::records::migrate(&url, &settings.raw.storage.db_schema).await?;
    println!(
        "migrations applied to schema {} of {}",
        settings.raw.storage.db_schema,
        url.redacted()
    );
    Ok(EXIT_OK)
}

/// Kills a run's children as soon as a stop signal arrives (one-shot commands: a CronJob pod or
/// a timer being stopped wants a clean failure now, not a dump that outlives the grace period).
fn stop_on_signal(shutdown: &Shutdown, killer: &Killer) {
    if let Err(e) = shutdown.install_signal_handlers() {
        tracing::warn!(error = %e, "cannot install signal handlers");
    }
    let (s, k) = (shutdown.clone(), killer.clone());
    tokio::spawn(async move {
        s.wait().await;
        k.kill("stop signal received");
    });
}

fn list_text(rows: &[Listed]) -> String {
    if rows.is_empty() {
        return "no backups".into();
    }
    let mut out = format!(
        "{:<40} {:>8} {:>10} {:<9} {:<10} {:<6} {}\n",
        "BACKUP", "AGE", "SIZE", "ENCRYPTED", "VERIFIED", "WHERE", "STATUS"
    );
    for r in rows {
        let verified = match &r.verification {
            Some(v) if v.ok => v.mode.as_str().to_owned(),
            Some(_) => "FAILED".to_owned(),
            None => "no".to_owned(),
        };
        let encrypted = match r.encrypted {
            Some(true) => "age",
            Some(false) => "no",
            None => "?",
        };
        out.push_str(&format!(
            "{:<40} {:>8} {:>10} {:<9} {:<10} {:<6} {}\n",
            r.name,
            age_text(r.age_seconds),
            r.size_bytes.map(size_text).unwrap_or_else(|| "?".into()),
            encrypted,
            verified,
            r.location,
            r.status
        ));
    }
    out.trim_end().to_owned()
}

/// `45m`, `5h12m`, `3d04h`: enough to judge a backup's age at a glance.
fn age_text(seconds: i64) -> String {
    let (d, h, m) = (
        seconds / 86_400,
        seconds % 86_400 / 3600,
        seconds % 3600 / 60,
    );
    match (d, h) {
        (0, 0) => format!("{m}m"),
        (0, _) => format!("{h}h{m:02}m"),
        _ => format!("{d}d{h:02}h"),
    }
}

/// Bytes in binary units with one decimal.
fn size_text(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn verify_all_text(r: &VerifyAllReport) -> String {
    let mut out = String::new();
    for b in &r.backups {
        let verdict = if b.ok { "ok    " } else { "FAILED" };
        out.push_str(&format!("{verdict} {} ({})\n", b.name, b.detail));
    }
    if r.backups.is_empty() {
        out.push_str("no backups within retention\n");
    } else if r.bad.is_empty() {
        out.push_str(&format!(
            "all {} backups passed verification ({})\n",
            r.backups.len(),
            r.mode.as_str()
        ));
    } else {
        out.push_str(&format!(
            "{} of {} backups FAILED verification ({}): {}\n",
            r.bad.len(),
            r.backups.len(),
            r.mode.as_str(),
            r.bad.join(", ")
        ));
    }
    out.trim_end().to_owned()
}

fn prune_text(r: &crate::prune::PruneReport) -> String {
    let verb = if r.dry_run { "would delete" } else { "deleted" };
    let mut out = String::new();
    let mut section = |name: &str, l: &crate::prune::LocationReport| {
        out.push_str(&format!(
            "{name}: keep {}, {verb} {}\n",
            l.keep.len(),
            l.delete.len()
        ));
        for k in &l.keep {
            let reasons: Vec<String> = k
                .reasons
                .iter()
                .map(|x| {
                    serde_json::to_value(x)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default()
                })
                .collect();
            out.push_str(&format!("  keep   {} ({})\n", k.name, reasons.join(", ")));
        }
        for d in &l.delete {
            out.push_str(&format!("  delete {d}\n"));
        }
        for b in &l.broken {
            out.push_str(&format!("  broken {b} (left alone)\n"));
        }
    };
    section("local", &r.local);
    if let Some(remote) = &r.remote {
        section("remote", remote);
    }
    for e in &r.errors {
        out.push_str(&format!("error: {e}\n"));
    }
    out.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_and_sizes_read_at_a_glance() {
        assert_eq!(age_text(59), "0m");
        assert_eq!(age_text(45 * 60), "45m");
        assert_eq!(age_text(5 * 3600 + 12 * 60), "5h12m");
        assert_eq!(age_text(3 * 86_400 + 4 * 3600 + 59), "3d04h");
        assert_eq!(size_text(512), "512 B");
        assert_eq!(size_text(230_800_000), "220.1 MiB");
    }
}

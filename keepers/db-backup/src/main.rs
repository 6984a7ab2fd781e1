//! `db-backup`: logical PostgreSQL backups an operator can bet on.
//!
//! `pg_dump -Fc -Z0` in an exported snapshot → zstd → SHA-256 → fsync'd file → manifest; optional
//! S3 copy; verification; GFS retention; a daemon on a cron schedule or one run (`--once`).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use keeper_runtime::alert::{Alert, Alerter, Severity};
use keeper_runtime::cli::{
    CommonArgs, EXIT_FAILED, EXIT_OK, EXIT_USAGE, Output, print_cycle, run_async,
};
use keeper_runtime::config::ProcessEnv;
use keeper_runtime::runner::CycleReport;
use keeper_runtime::runner::Shutdown;
use keeper_runtime::telemetry::Metrics;
use serde::Serialize;

use db_backup::app::App;
use db_backup::config::{Settings, VerifyMode};
use db_backup::dump::Killer;
use db_backup::{commands, daemon, export, job, manifest, metrics, pg, prune};

/// Logical PostgreSQL backups: dump, compress, checksum, store (local and/or S3), verify, prune.
///
/// Settings come from defaults < --config FILE < environment (BACKUP_DIR, BACKUP_S3_URL,
/// BACKUP_SCHEDULE, BACKUP_VERIFY, DATABASE_URL, …; see the README) < flags.
#[derive(Debug, Parser)]
#[command(name = "db-backup", version)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModeArg {
    /// Checksum, full decompression and `pg_restore --list`.
    List,
    /// Checksum, restore into a scratch database, compare every table's row count.
    Restore,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Back up on BACKUP_SCHEDULE as a daemon (the default), or once with --once.
    Run,
    /// List local and remote backups with status and verification.
    List,
    /// Restore a backup into an existing database, after checking its checksum.
    Restore {
        /// `latest`, a `.dump.zst` file, a backup name (app-20260101T000000Z) or its S3 key.
        #[arg(long, value_name = "FILE|KEY|latest")]
        from: String,
        /// Database to restore into (or TARGET_DATABASE_URL, which keeps the password out of
        /// the process list).
        #[arg(long, value_name = "URL")]
        target_database_url: Option<String>,
        /// Do not restore ownership and privileges (roles of the source may not exist here).
        #[arg(long)]
        no_owner: bool,
        /// Restore into a database that already has tables: the backup's objects are dropped
        /// and recreated (others are left alone). Without it such a target is refused.
        #[arg(long)]
        clean: bool,
        /// First apply the backup's cluster globals (roles, memberships, role settings,
        /// tablespaces), skipping roles that exist; for a restore into a fresh cluster.
        #[arg(long)]
        with_globals: bool,
        /// age identity file (or unencrypted OpenSSH private key) for an encrypted backup;
        /// default BACKUP_AGE_IDENTITY_FILE.
        #[arg(long, value_name = "FILE")]
        identity: Option<std::path::PathBuf>,
    },
    /// Verify an existing backup (or, with --all, every backup retention keeps) and record the
    /// result in its manifest and backup_runs.
    Verify {
        /// `latest`, a `.dump.zst` file, a backup name or its S3 key.
        #[arg(long, value_name = "FILE|KEY|latest", required_unless_present = "all")]
        from: Option<String>,
        /// Every backup within retention (of BACKUP_NAME's database, or of all); exits 1
        /// naming the bad ones.
        #[arg(long, conflicts_with = "from")]
        all: bool,
        /// How (default: BACKUP_VERIFY, or `list` when that is `none`).
        #[arg(long, value_enum)]
        mode: Option<ModeArg>,
        /// age identity file for an encrypted backup; default BACKUP_AGE_IDENTITY_FILE.
        #[arg(long, value_name = "FILE")]
        identity: Option<std::path::PathBuf>,
    },
    /// Apply GFS retention now (with --dry-run: only show what would be deleted).
    Prune,
    /// Create the backup_runs table in BACKUP_RECORDS_URL (only it, with db-backup's own
    /// migration bookkeeping) and exit.
    Migrate,
}

fn main() -> ExitCode {
    if let Some(code) = db_backup::child::run_trampoline_if_asked() {
        return ExitCode::from(code);
    }
    keeper_runtime::disable_core_dumps();
    // /proc/self/exe still execs after the binary on disk was replaced by an upgrade.
    db_backup::child::use_trampoline(std::path::PathBuf::from("/proc/self/exe"));
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            return ExitCode::from(code as u8);
        }
    };
    let settings = match Settings::load(cli.common.config.as_deref(), &ProcessEnv) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_USAGE as u8);
        }
    };
    // Before the runtime's threads exist: nothing later (a child, a crash report) sees them.
    keeper_runtime::scrub_secret_env(&db_backup::env::bindings(), &[]);
    run_async(async_main(cli, settings))
}

async fn async_main(cli: Cli, settings: Settings) -> i32 {
    let _guard = match keeper_runtime::telemetry::init_tracing(&settings.raw.telemetry, "db-backup")
    {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    keeper_runtime::install_crypto_provider();
    match dispatch(cli, settings).await {
        Ok(code) => code,
        Err(e) => {
            let usage = e
                .downcast_ref::<keeper_runtime::config::ConfigError>()
                .is_some();
            eprintln!("error: {e:#}");
            if usage { EXIT_USAGE } else { EXIT_FAILED }
        }
    }
}

fn print<T: Serialize>(output: Output, value: &T, text: impl FnOnce() -> String) {
    match output {
        Output::Json => match serde_json::to_string_pretty(value) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("error: cannot encode output: {e}"),
        },
        Output::Text => println!("{}", text()),
    }
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

async fn dispatch(cli: Cli, settings: Settings) -> anyhow::Result<i32> {
    let common = cli.common;
    let mut registry = Metrics::new("db-backup");
    let backup_metrics = metrics::BackupMetrics::register(&mut registry);
    let metrics = (Arc::new(registry), backup_metrics);
    let command = cli.command.unwrap_or(Command::Run);
    match command {
        Command::Migrate => {
            let Some(url) = settings.records_url.clone() else {
                println!(
                    "no records database (BACKUP_RECORDS_URL): db-backup keeps no tables, nothing to migrate"
                );
                return Ok(EXIT_OK);
            };
            db_backup::records::migrate(&url, &settings.raw.storage.db_schema).await?;
            println!(
                "migrations applied to schema {} of {}",
                settings.raw.storage.db_schema,
                url.redacted()
            );
            Ok(EXIT_OK)
        }
        Command::List => {
            let app = App::new(settings, metrics, Alerter::disabled(), false).await?;
            let rows = commands::list(&app).await?;
            print(common.output, &rows, || list_text(&rows));
            Ok(EXIT_OK)
        }
        Command::Prune => {
            let app = App::new(settings, metrics, Alerter::disabled(), false).await?;
            let report = prune::prune(&app, common.dry_run).await;
            print(common.output, &report, || prune_text(&report));
            Ok(if report.errors.is_empty() {
                EXIT_OK
            } else {
                EXIT_FAILED
            })
        }
        Command::Restore {
            from,
            target_database_url,
            no_owner,
            clean,
            with_globals,
            identity,
        } => {
            let mut settings = settings;
            if identity.is_some() {
                settings.raw.backup.age_identity_file = identity;
            }
            let target = commands::target_url(
                target_database_url,
                settings.raw.backup.target_database_url.as_ref(),
            )?;
            let app = App::new(settings, metrics, Alerter::disabled(), false).await?;
            let (shutdown, killer) = (Shutdown::new(), Killer::default());
            stop_on_signal(&shutdown, &killer);
            let opts = commands::RestoreOptions {
                no_owner,
                clean,
                with_globals,
            };
            let report = commands::restore(&app, &from, &target, opts, &killer).await?;
            print(common.output, &report, || {
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
        Command::Verify {
            from,
            all,
            mode,
            identity,
        } => {
            let mut settings = settings;
            if identity.is_some() {
                settings.raw.backup.age_identity_file = identity;
            }
            let mode = match (mode, settings.backup().verify) {
                (Some(ModeArg::List), _) | (None, VerifyMode::None | VerifyMode::List) => {
                    VerifyMode::List
                }
                (Some(ModeArg::Restore), _) | (None, VerifyMode::Restore) => VerifyMode::Restore,
            };
            let app = App::new(settings, metrics, Alerter::disabled(), true).await?;
            let (shutdown, killer) = (Shutdown::new(), Killer::default());
            stop_on_signal(&shutdown, &killer);
            let Some(from) = from.filter(|_| !all) else {
                let report = commands::verify_all(&app, mode, &killer).await?;
                if mode == VerifyMode::Restore {
                    export_restore_metrics(&app).await;
                }
                print(common.output, &report, || verify_all_text(&report));
                return Ok(if report.bad.is_empty() {
                    EXIT_OK
                } else {
                    EXIT_FAILED
                });
            };
            let v = commands::verify(&app, &from, mode, &killer).await?;
            // A drill run from cron (or a CronJob) reports through the Pushgateway/textfile.
            if mode == VerifyMode::Restore {
                export_restore_metrics(&app).await;
            }
            print(common.output, &v, || {
                format!(
                    "verification ({}) {}: {}",
                    v.mode.as_str(),
                    if v.ok { "passed" } else { "FAILED" },
                    v.detail
                )
            });
            Ok(if v.ok { EXIT_OK } else { EXIT_FAILED })
        }
        Command::Run if common.dry_run => {
            settings.source()?;
            let app = App::new(settings, metrics, Alerter::disabled(), false).await?;
            let plan = dry_run(&app).await;
            print(common.output, &plan, || {
                serde_json::to_string_pretty(&plan).unwrap_or_default()
            });
            Ok(if plan.ready { EXIT_OK } else { EXIT_FAILED })
        }
        Command::Run if common.once => {
            settings.source()?;
            let alerter = Alerter::start(&settings.raw.alerts, "db-backup", metrics.0.clone());
            let app = Arc::new(App::new(settings, metrics, alerter.clone(), true).await?);
            let before = app.seed_metrics().await;
            let shutdown = Shutdown::new();
            shutdown.install_signal_handlers()?;
            let (run, report) = daemon::once(app.clone(), shutdown).await;
            if report
                .as_ref()
                .is_some_and(|r| r.outcome == job::RunOutcome::Failure)
            {
                check_stale(&app, before.as_ref());
            }
            export_metrics(&app).await;
            alerter.flush(Duration::from_secs(10)).await;
            let error = run.result.as_ref().err().map(|e| e.message());
            print_cycle(report.as_ref(), CycleReport::to_text, error, common.output);
            Ok(run.exit_code())
        }
        Command::Run => {
            settings.source()?;
            let alerter = Alerter::start(&settings.raw.alerts, "db-backup", metrics.0.clone());
            let app = Arc::new(App::new(settings, metrics, alerter, true).await?);
            let shutdown = Shutdown::new();
            shutdown.install_signal_handlers()?;
            daemon::run(app, shutdown).await
        }
    }
}

/// One-shot staleness: a failed run whose last success is older than the threshold also
/// raises `backup_stale` (the daemon does this on its heartbeat instead).
fn check_stale(app: &App, newest: Option<&manifest::Manifest>) {
    let Some(m) = newest else { return };
    let age = (chrono::Utc::now() - m.finished_at)
        .to_std()
        .unwrap_or_default();
    let limit = app.settings.stale_after();
    if age > limit {
        app.alerter.fire(
            Alert::new(
                daemon::BACKUP_STALE,
                Severity::Critical,
                format!(
                    "db-backup: no successful backup of {} for {} s (last {}, threshold {} s)",
                    app.label,
                    age.as_secs(),
                    m.id(),
                    limit.as_secs()
                ),
            )
            .label("database", app.label.clone()),
        );
    }
}

/// Pushes / writes the restore-verification metrics only (a drill must not overwrite what the
/// last backup run reported).
async fn export_restore_metrics(app: &App) {
    export_body(app, export::restore_text).await;
}

async fn export_metrics(app: &App) {
    export_body(app, export::backup_text).await;
}

/// Sends a metrics exposition to the Pushgateway and/or the node-exporter textfile, whichever
/// is configured; failures are logged, never fatal to the run they describe.
async fn export_body(app: &App, render: fn(&Metrics) -> String) {
    let b = app.settings.backup();
    if b.pushgateway_url.is_none() && b.metrics_textfile.is_none() {
        return;
    }
    let body = render(&app.metrics);
    if let Some(url) = &b.pushgateway_url
        && let Err(e) = export::push(url, &app.label, body.clone()).await
    {
        tracing::warn!(error = %e, "cannot push metrics");
    }
    if let Some(path) = b.metrics_textfile.clone() {
        match tokio::task::spawn_blocking(move || export::write_textfile(&path, &body)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot write the metrics textfile"),
            Err(e) => tracing::warn!(error = %e, "cannot write the metrics textfile"),
        }
    }
}

#[derive(Debug, Serialize)]
struct DryRun {
    ready: bool,
    database: String,
    server_version: Option<String>,
    pg_dump_version: Option<String>,
    lock_free: Option<bool>,
    would_write: String,
    local_dir: String,
    remote: Option<String>,
    verify: VerifyMode,
    retention: prune::PruneReport,
    problems: Vec<String>,
}

impl DryRun {
    fn unready(app: &App, problem: String) -> Self {
        Self {
            ready: false,
            database: app.label.clone(),
            server_version: None,
            pg_dump_version: None,
            lock_free: None,
            would_write: String::new(),
            local_dir: app.local.dir().display().to_string(),
            remote: app.remote.as_ref().map(|r| r.location().to_string()),
            verify: app.settings.backup().verify,
            retention: prune::PruneReport::default(),
            problems: vec![problem],
        }
    }
}

/// Everything a run checks before dumping, and what retention would delete; writes nothing.
async fn dry_run(app: &App) -> DryRun {
    let s = &app.settings;
    let mut problems = Vec::new();
    let mut server_version = None;
    let mut lock_free = None;
    let tool = pg::tool_version(&s.backup().pg_dump_path).await;
    // The dispatcher checked the source is configured.
    let Ok(source_url) = s.source() else {
        return DryRun::unready(app, "DATABASE_URL is not set".into());
    };
    match pg::Source::open(source_url).await {
        Ok(mut src) => {
            server_version = Some(src.info.version.clone());
            if let Ok((_, major)) = &tool
                && let Err(e) = pg::check_dump_version(&s.backup().pg_dump_path, *major, &src.info)
            {
                problems.push(e.to_string());
            }
            match src.lock(Duration::ZERO).await {
                Ok(()) => lock_free = Some(true),
                Err(e @ pg::PgError::Locked { .. }) => {
                    lock_free = Some(false);
                    problems.push(e.to_string());
                }
                Err(e) => problems.push(e.to_string()),
            }
            src.close().await;
        }
        Err(e) => problems.push(e.to_string()),
    }
    if let Err(e) = &tool {
        problems.push(e.to_string());
    }
    let id = manifest::BackupId::new(&app.label, chrono::Utc::now());
    DryRun {
        ready: problems.is_empty(),
        database: app.label.clone(),
        server_version,
        pg_dump_version: tool.ok().map(|(v, _)| v),
        lock_free,
        would_write: id.archive_name(!app.settings.backup().age_recipients.is_empty()),
        local_dir: app.local.dir().display().to_string(),
        remote: app.remote.as_ref().map(|r| r.location().to_string()),
        verify: s.backup().verify,
        retention: prune::prune(app, true).await,
        problems,
    }
}

fn list_text(rows: &[commands::Listed]) -> String {
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

/// `45m`, `5h12m`, `3d4h`: enough to judge a backup's age at a glance.
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

fn verify_all_text(r: &commands::VerifyAllReport) -> String {
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

fn prune_text(r: &prune::PruneReport) -> String {
    let verb = if r.dry_run { "would delete" } else { "deleted" };
    let mut out = String::new();
    let mut section = |name: &str, l: &prune::LocationReport| {
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

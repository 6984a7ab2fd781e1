//! `run` as a daemon (and `--once`, and `--dry-run`): the shared runner on the `BACKUP_SCHEDULE`
//! cron cadence, with `backup_stale` as its staleness alert, the ops server, and readiness once
//! the source database answered.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use keeper_runtime::alert::{Alert, Alerter, Severity};
use keeper_runtime::cli::{EXIT_FAILED, EXIT_OK, Output, print_as, print_cycle};
use keeper_runtime::runner::{
    Cycle as _, CycleReport, CycleRun, Runner, Schedule, Shutdown, Staleness, Timing,
};
use keeper_runtime::tasks::{OnEarlyExit, Supervisor};
use keeper_runtime::telemetry::{Health, serve_ops};
use serde::Serialize;

use crate::app::{App, registry};
use crate::config::{Settings, VerifyMode};
use crate::cycle::BackupCycle;
use crate::dump::Killer;
use crate::job::RunReport;
use crate::pg;

/// Alert raised when no backup succeeded for two schedule periods.
pub const BACKUP_STALE: &str = "backup_stale";
/// How often readiness re-checks the source database until it answered once.
const PROBE_EVERY: Duration = Duration::from_secs(30);
/// How long a run cut by a stop may take to clean up before the process exits anyway.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);
const KEEPER: &str = "db-backup";

/// The runner's durations: a run may outlast one period (the next firing then waits), but a
/// hung one must not block backups forever (`CYCLE_TIMEOUT`, default two periods, at least an
/// hour; `backup_stale` pages long before).
fn timing(settings: &Settings) -> Timing {
    let period = settings.schedule.period().unwrap_or(PROBE_EVERY);
    let runner = &settings.raw.runner;
    Timing {
        interval: period,
        cycle_timeout: runner
            .cycle_timeout
            .map(Duration::from_secs)
            .unwrap_or_else(|| (period * 2).max(Duration::from_secs(3600))),
        shutdown_grace: Duration::from_secs(runner.shutdown_grace),
        stale_intervals: 1,
    }
}

fn runner(app: &App, timing: Timing, health: &Health, shutdown: &Shutdown) -> Runner {
    Runner::new(
        KEEPER,
        timing,
        app.metrics.clone(),
        health.clone(),
        app.alerter.clone(),
        shutdown.clone(),
    )
}

fn health() -> Health {
    let health = Health::new(KEEPER, PROBE_EVERY, &["config", "database"]);
    health.mark_ready("config");
    health
}

/// Runs until SIGTERM/SIGINT; returns the exit code (1 when a supervised task that must not
/// stop, the ops server, ended early).
///
/// Background tasks are supervised: the readiness probe and the restore drills are restarted
/// with backoff when they end or panic early (backups go on without them); the ops server
/// stops the process.
pub async fn run(app: Arc<App>, shutdown: Shutdown) -> anyhow::Result<i32> {
    let settings = &app.settings;
    let timing = timing(settings);
    let health = health();
    let mut tasks = Supervisor::new(shutdown.clone());
    let ops = serve_ops(
        settings.metrics_addr,
        app.metrics.clone(),
        health.clone(),
        shutdown.clone(),
    )
    .await?;
    let ops_addr = ops.local_addr();
    ops.supervise(&mut tasks);
    let newest = app.seed_metrics().await;
    let stale = Staleness::new(
        app.alerter.clone(),
        BACKUP_STALE,
        Severity::Critical,
        settings.stale_after(),
    )
    .context(&format!("db-backup: backups of {}", app.label));
    {
        let (app, health, shutdown) = (app.clone(), health.clone(), shutdown.clone());
        tasks.spawn("readiness-probe", OnEarlyExit::RESTART, move || {
            let (app, health, shutdown) = (app.clone(), health.clone(), shutdown.clone());
            async move {
                probe_until_ready(app, health, shutdown.clone()).await;
                // Done once ready: idle until the stop, so that only an early end is one.
                shutdown.wait().await;
            }
        });
    }
    tracing::info!(
        schedule = %settings.schedule,
        next = settings.schedule.next_after(Utc::now()).map(|t| t.to_rfc3339()),
        stale_after_seconds = settings.stale_after().as_secs(),
        addr = %ops_addr,
        "db-backup daemon started"
    );
    if let Some(cron) = settings.drill_cron.clone() {
        let (app, shutdown) = (app.clone(), shutdown.clone());
        tasks.spawn("restore-drills", OnEarlyExit::RESTART, move || {
            drills(app.clone(), cron.clone(), shutdown.clone())
        });
    }
    let mut runner = runner(&app, timing, &health, &shutdown)
        .with_cron(settings.schedule.clone())
        .with_staleness(stale, newest.map(|m| m.finished_at));
    let mut cycle = BackupCycle::new(app.clone(), health);
    let mut code = runner.run_forever(&mut cycle).await;
    cycle.drain(DRAIN_LIMIT).await;
    shutdown.trigger();
    tasks
        .join(timing.shutdown_grace.max(Duration::from_secs(1)))
        .await;
    if let Some(failed) = tasks.failure() {
        tracing::error!(task = failed.task, reason = %failed.reason, "db-backup stopped: a task it needs ended");
        code = EXIT_FAILED;
    }
    tracing::info!("db-backup daemon stopped");
    Ok(code)
}

/// One backup now (`--once`): a stop signal stops it at once (a CronJob pod or a timer being
/// stopped wants a clean failure now, not a dump that outlives its grace period).
pub async fn once(app: Arc<App>, shutdown: Shutdown) -> (CycleRun<RunReport>, Option<RunReport>) {
    let timing = Timing {
        shutdown_grace: Duration::ZERO,
        ..timing(&app.settings)
    };
    let health = health();
    let mut runner = runner(&app, timing, &health, &shutdown);
    let mut cycle = BackupCycle::new(app.clone(), health);
    let run = runner.run_once(&mut cycle).await;
    cycle.drain(DRAIN_LIMIT).await;
    (run, cycle.last_report().cloned())
}

/// Restore drills on `BACKUP_DRILL_CRON`: the newest backup restored into a scratch database,
/// every table's row count compared; the outcome, its duration and any per-table difference go
/// into the manifest, `backup_runs` and the `backup_restore_*` metrics. A drill never blocks a
/// backup (it takes no run lock: it only reads a published backup).
async fn drills(app: Arc<App>, cron: Schedule, shutdown: Shutdown) {
    loop {
        let Some(next) = cron.next_after(Utc::now()) else {
            tracing::warn!(cron = %cron, "restore drill schedule never fires again");
            return;
        };
        let wait = (next - Utc::now()).to_std().unwrap_or_default();
        tokio::select! {
            () = shutdown.wait() => return,
            () = tokio::time::sleep(wait) => {}
        }
        let killer = Killer::default();
        let stop = {
            let (shutdown, killer) = (shutdown.clone(), killer.clone());
            tokio::spawn(async move {
                shutdown.wait().await;
                killer.kill("stop signal received");
            })
        };
        match crate::commands::verify(&app, "latest", VerifyMode::Restore, &killer).await {
            Ok(v) if v.ok => tracing::info!(
                duration_seconds = v.duration_seconds.unwrap_or_default(),
                detail = %v.detail,
                "restore drill passed"
            ),
            Ok(v) => tracing::error!(detail = %v.detail, "restore drill FAILED"),
            Err(e) => tracing::error!(error = %format!("{e:#}"), "restore drill could not run"),
        }
        stop.abort();
    }
}

/// Readiness: the source database answered once (a successful backup also says so).
async fn probe_until_ready(app: Arc<App>, health: Health, shutdown: Shutdown) {
    let mut every = tokio::time::interval(PROBE_EVERY);
    while !health.pending().is_empty() && !shutdown.is_triggered() {
        tokio::select! {
            () = shutdown.wait() => return,
            _ = every.tick() => {}
        }
        let opened = match app.settings.source() {
            Ok(url) => crate::pg::Source::open(url).await,
            Err(e) => {
                tracing::error!(error = %e, "no source database");
                return;
            }
        };
        match opened {
            Ok(src) => {
                health.mark_ready("database");
                src.close().await;
            }
            Err(e) => tracing::warn!(error = %e, "source database not reachable yet"),
        }
    }
}

/// `run`: a dry run (`dry_run`: what a run would do, writing nothing), one backup (`once`),
/// or the daemon; the exit code.
pub async fn run_command(
    settings: Settings,
    once: bool,
    dry_run: bool,
    output: Output,
) -> anyhow::Result<i32> {
    // Only backing up needs the source; restore, verify, list and prune work without it.
    settings.source()?;
    let metrics = registry();
    if dry_run {
        let app = App::new(settings, metrics, Alerter::disabled(), false).await?;
        let plan = plan(&app).await;
        print_as(output, &plan, || {
            serde_json::to_string_pretty(&plan).unwrap_or_default()
        });
        return Ok(if plan.ready { EXIT_OK } else { EXIT_FAILED });
    }
    let alerter = Alerter::start(&settings.raw.alerts, KEEPER, metrics.0.clone());
    if !once {
        let app = Arc::new(App::new(settings, metrics, alerter, true).await?);
        let shutdown = Shutdown::new();
        shutdown.install_signal_handlers()?;
        return run(app, shutdown).await;
    }
    let app = Arc::new(App::new(settings, metrics, alerter.clone(), true).await?);
    let before = app.seed_metrics().await;
    let shutdown = Shutdown::new();
    shutdown.install_signal_handlers()?;
    let (run, report) = self::once(app.clone(), shutdown).await;
    if report
        .as_ref()
        .is_some_and(|r| r.outcome == crate::job::RunOutcome::Failure)
    {
        check_stale(&app, before.as_ref());
    }
    app.export_metrics().await;
    alerter.flush(Duration::from_secs(10)).await;
    let error = run.result.as_ref().err().map(|e| e.message());
    print_cycle(report.as_ref(), CycleReport::to_text, error, output);
    Ok(run.exit_code())
}

/// One-shot staleness: a failed run whose last success is older than the threshold also
/// raises `backup_stale` (the daemon does this on its heartbeat instead).
fn check_stale(app: &App, newest: Option<&crate::manifest::Manifest>) {
    let Some(m) = newest else { return };
    let age = (Utc::now() - m.finished_at).to_std().unwrap_or_default();
    let limit = app.settings.stale_after();
    if age > limit {
        app.alerter.fire(
            Alert::new(
                BACKUP_STALE,
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

/// What `run --dry-run` prints.
#[derive(Debug, Serialize)]
struct Plan {
    ready: bool,
    database: String,
    server_version: Option<String>,
    pg_dump_version: Option<String>,
    lock_free: Option<bool>,
    would_write: String,
    local_dir: String,
    remote: Option<String>,
    verify: VerifyMode,
    retention: crate::prune::PruneReport,
    problems: Vec<String>,
}

/// Everything a run checks before dumping, and what retention would delete; writes nothing.
async fn plan(app: &App) -> Plan {
    let s = &app.settings;
    let mut problems = Vec::new();
    let mut server_version = None;
    let mut lock_free = None;
    let tool = pg::tool_version(&s.backup().pg_dump_path).await;
    let opened = match s.source() {
        Ok(url) => pg::Source::open(url).await.map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match opened {
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
        Err(e) => problems.push(e),
    }
    if let Err(e) = &tool {
        problems.push(e.to_string());
    }
    let id = crate::manifest::BackupId::new(&app.label, Utc::now());
    Plan {
        ready: problems.is_empty(),
        database: app.label.clone(),
        server_version,
        pg_dump_version: tool.ok().map(|(v, _)| v),
        lock_free,
        would_write: id.archive_name(!app.settings.backup().age_recipients.is_empty()),
        local_dir: app.local.dir().display().to_string(),
        remote: app.remote.as_ref().map(|r| r.location().to_string()),
        verify: s.backup().verify,
        retention: crate::prune::prune(app, true).await,
        problems,
    }
}

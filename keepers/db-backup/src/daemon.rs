//! `run` without `--once`: backups on `BACKUP_SCHEDULE` (tokio-cron-scheduler), the ops server,
//! `backup_stale`, systemd notifications, and a graceful stop.
//!
//! The scheduler only signals "a backup is due"; one worker runs backups one at a time, so a
//! firing while a backup is still running is counted as skipped, never run in parallel. A
//! heartbeat (every 30 s) keeps `/healthz` honest, pings the systemd watchdog and re-checks
//! staleness, independently of how long a backup takes; a hung backup is bounded by the run
//! timeout (`CYCLE_TIMEOUT`, default two schedule periods, at least an hour) instead.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use keeper_common::alert::Severity;
use keeper_common::runner::{Shutdown, Staleness};
use keeper_common::telemetry::metrics::labels;
use keeper_common::telemetry::{CycleRecord, Health, serve_ops};
use sd_notify::NotifyState;
use tokio::sync::mpsc;
use tokio_cron_scheduler::{Job, JobScheduler};

use crate::app::App;
use crate::dump::Killer;
use crate::job::{self, RunReport};

/// Alert raised when no backup succeeded for two schedule periods.
pub const BACKUP_STALE: &str = "backup_stale";
/// Heartbeat of the loop (liveness, watchdog, staleness).
const HEARTBEAT: Duration = Duration::from_secs(30);

fn notify(states: &[NotifyState<'_>]) {
    if std::env::var_os("NOTIFY_SOCKET").is_some()
        && let Err(e) = sd_notify::notify(states)
    {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

fn last_success(app: &App) -> Option<DateTime<Utc>> {
    let ts = app.backup_metrics.last_success_timestamp.get();
    (ts > 0).then(|| DateTime::from_timestamp(ts, 0)).flatten()
}

/// Runs until SIGTERM/SIGINT; returns the exit code.
pub async fn run(app: Arc<App>, shutdown: Shutdown) -> anyhow::Result<i32> {
    let settings = &app.settings;
    let health = Health::new("db-backup", HEARTBEAT, &["config", "database"]);
    health.mark_ready("config");
    let ops = serve_ops(
        settings.metrics_addr,
        app.metrics.clone(),
        health.clone(),
        shutdown.clone(),
    )
    .await?;

    app.seed_metrics().await;
    let mut stale = Staleness::new(
        app.alerter.clone(),
        BACKUP_STALE,
        Severity::Critical,
        settings.stale_after(),
    )
    .context(&format!("db-backup: backups of {}", app.label));

    let period = crate::config::schedule_period(&settings.schedule).unwrap_or(HEARTBEAT);
    // A backup may legitimately outlast one period (the next firing is then skipped); a hung
    // one must not block backups forever. `backup_stale` pages long before this anyway.
    let run_timeout = settings
        .raw
        .runner
        .cycle_timeout
        .map(Duration::from_secs)
        .unwrap_or_else(|| (period * 2).max(Duration::from_secs(3600)));
    let grace = Duration::from_secs(settings.raw.runner.shutdown_grace);

    // The scheduler only says "due"; capacity 1 so a due signal while one waits is dropped.
    let (due_tx, mut due_rx) = mpsc::channel::<()>(1);
    let mut sched = JobScheduler::new().await?;
    let metrics = app.metrics.clone();
    let job = Job::new_async(settings.schedule.as_str(), move |_id, _lock| {
        let tx = due_tx.clone();
        let metrics = metrics.clone();
        Box::pin(async move {
            if tx.try_send(()).is_err() {
                metrics
                    .ticks_skipped
                    .get_or_create(&labels([("keeper", "db-backup")]))
                    .inc();
                tracing::warn!("a backup is due while the previous one is still running: skipped");
            }
        })
    })
    .map_err(|e| anyhow::anyhow!("BACKUP_SCHEDULE {:?}: {e}", settings.schedule))?;
    sched.add(job).await?;
    sched.start().await?;
    let next = crate::config::next_fire(&settings.schedule, Utc::now());
    tracing::info!(
        schedule = %settings.schedule,
        next = ?next,
        stale_after_seconds = settings.stale_after().as_secs(),
        addr = %ops.local_addr(),
        "db-backup daemon started"
    );
    notify(&[
        NotifyState::Ready,
        NotifyState::Status(&format!("waiting; next backup {next:?}")),
    ]);

    probe_database(&app, &health).await;
    let mut heartbeat = tokio::time::interval(HEARTBEAT);
    let mut running: Option<(tokio::task::JoinHandle<RunReport>, Killer)> = None;
    let mut tick: u64 = 0;
    let mut kill_at: Option<tokio::time::Instant> = None;
    loop {
        let kill_sleep = async {
            match kill_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = shutdown.wait(), if kill_at.is_none() && !shutdown.is_forced() => {
                health.set_draining();
                notify(&[NotifyState::Stopping]);
                if running.is_none() {
                    break;
                }
                tracing::info!(grace_seconds = grace.as_secs(), "stop requested: letting the running backup finish");
                kill_at = Some(tokio::time::Instant::now() + grace);
            }
            () = kill_sleep => {
                if let Some((_, killer)) = &running {
                    killer.kill("shutdown grace period over");
                }
                kill_at = Some(tokio::time::Instant::now() + Duration::from_secs(3600));
            }
            () = shutdown.wait_forced(), if running.is_some() && shutdown.is_triggered() => {
                if let Some((_, killer)) = &running {
                    killer.kill("second stop signal");
                }
            }
            due = due_rx.recv(), if running.is_none() && !shutdown.is_triggered() => {
                if due.is_none() {
                    break;
                }
                tick += 1;
                let killer = Killer::default();
                let (a, k) = (app.clone(), killer.clone());
                let handle = tokio::spawn(async move {
                    let timer = {
                        let k = k.clone();
                        tokio::spawn(async move {
                            tokio::time::sleep(run_timeout).await;
                            k.kill(&format!("run exceeded the timeout of {} s", run_timeout.as_secs()));
                        })
                    };
                    let report = job::run(&a, &k).await;
                    timer.abort();
                    report
                });
                notify(&[NotifyState::Status("backup running")]);
                running = Some((handle, killer));
            }
            joined = async {
                match running.as_mut() {
                    Some((h, _)) => h.await,
                    None => std::future::pending().await,
                }
            }, if running.is_some() => {
                running = None;
                match joined {
                    Ok(report) => {
                        if report.outcome == "success" {
                            health.mark_ready("database");
                        }
                        finished(&app, &health, tick, &report);
                    }
                    Err(e) => tracing::error!(error = %e, "backup task panicked"),
                }
                stale.check("", last_success(&app), Utc::now());
                if shutdown.is_triggered() {
                    break;
                }
            }
            _ = heartbeat.tick() => {
                health.tick_completed();
                notify(&[NotifyState::Watchdog]);
                stale.check("", last_success(&app), Utc::now());
                if running.is_none() && !health.pending().is_empty() {
                    probe_database(&app, &health).await;
                }
            }
        }
    }
    let _ = sched.shutdown().await;
    app.alerter.flush(Duration::from_secs(5)).await;
    shutdown.trigger();
    ops.stopped().await;
    tracing::info!("db-backup daemon stopped");
    Ok(keeper_common::cli::EXIT_OK)
}

fn finished(app: &App, health: &Health, tick: u64, report: &RunReport) {
    let outcome = match report.outcome {
        "success" => "success",
        "busy" => "skipped",
        _ => "failure",
    };
    app.metrics.record_cycle(outcome, report.duration_seconds);
    if outcome == "success" {
        app.metrics
            .last_success
            .get_or_create(&labels([("keeper", "db-backup")]))
            .set(Utc::now().timestamp());
    }
    let summary = report.summary();
    health.record_cycle(CycleRecord {
        tick,
        outcome: outcome.to_owned(),
        started_at: report.started_at,
        duration_seconds: report.duration_seconds,
        summary: summary.clone(),
        report: serde_json::to_value(report).ok(),
        error: report.error.clone(),
    });
    if let Some(m) = &report.backup {
        health.set_published("last_backup", m.id().base());
    }
    notify(&[NotifyState::Status(&summary)]);
}

/// Readiness: the source database answered once.
async fn probe_database(app: &App, health: &Health) {
    match crate::pg::Source::open(&app.settings.source_url).await {
        Ok(src) => {
            health.mark_ready("database");
            src.close().await;
        }
        Err(e) => tracing::warn!(error = %e, "source database not reachable yet"),
    }
}

//! One backup as a runner cycle: the shared runner owns the cron cadence, `--once`, the run
//! timeout, the SIGTERM drain, sd_notify and `backup_stale`; this owns the run.
//!
//! The run itself goes on a task of its own, so when the runner cuts the cycle (timeout, end of
//! the shutdown grace period, second signal) the dump is killed and the run still cleans up
//! (temp files removed, `backup_runs` row finished, lock released) before the process exits:
//! see [`BackupCycle::drain`].

use std::sync::Arc;
use std::time::Duration;

use keeper_runtime::runner::{Cycle, CycleContext, CycleError, CycleReport, Shutdown};
use keeper_runtime::telemetry::Health;
use tokio::task::JoinHandle;

use crate::app::App;
use crate::dump::Killer;
use crate::job::{self, RunOutcome, RunReport};

/// The backup job's cycle; lives for the whole process.
pub struct BackupCycle {
    app: Arc<App>,
    health: Health,
    inflight: Option<JoinHandle<RunReport>>,
    last: Option<RunReport>,
}

impl BackupCycle {
    /// A cycle backing up `app`'s database; marks `database` ready in `health` on success.
    pub fn new(app: Arc<App>, health: Health) -> Self {
        Self {
            app,
            health,
            inflight: None,
            last: None,
        }
    }

    /// Waits (at most `limit`) for a run the runner cut short to finish cleaning up; its report.
    pub async fn drain(&mut self, limit: Duration) -> Option<RunReport> {
        let handle = self.inflight.take()?;
        match tokio::time::timeout(limit, handle).await {
            Ok(Ok(report)) => {
                self.last = Some(report.clone());
                Some(report)
            }
            Ok(Err(e)) => {
                tracing::error!(error = %e, "backup task failed");
                None
            }
            Err(_) => {
                tracing::warn!(
                    limit_seconds = limit.as_secs(),
                    "the stopped backup did not finish cleaning up in time"
                );
                None
            }
        }
    }
}

/// Kills the run's children when the cycle is dropped before the run finished, saying why.
struct KillOnDrop {
    killer: Killer,
    shutdown: Shutdown,
    once: bool,
    armed: bool,
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let reason = match (self.shutdown.is_triggered(), self.once) {
            (true, true) => "stop signal received",
            (true, false) => "shutdown grace period over",
            (false, _) => "run exceeded the cycle timeout (runner.cycle_timeout / CYCLE_TIMEOUT)",
        };
        self.killer.kill(reason);
    }
}

impl Cycle for BackupCycle {
    type Report = RunReport;

    async fn run(&mut self, ctx: &CycleContext) -> Result<RunReport, CycleError> {
        let killer = Killer::default();
        let mut guard = KillOnDrop {
            killer: killer.clone(),
            shutdown: ctx.shutdown.clone(),
            once: ctx.once,
            armed: true,
        };
        let app = self.app.clone();
        let handle = self
            .inflight
            .insert(tokio::spawn(async move { job::run(&app, &killer).await }));
        let joined = handle.await;
        guard.armed = false;
        self.inflight = None;
        let report = joined.map_err(|e| CycleError::failed(format!("backup task failed: {e}")))?;
        self.last = Some(report.clone());
        match report.outcome {
            RunOutcome::Success => {
                self.health.mark_ready("database");
                if let Some(m) = &report.backup {
                    self.health.set_published("last_backup", m.id().base());
                }
                Ok(report)
            }
            // A daemon tick that finds another instance backing up is fine; a one-shot run
            // that could not back up has failed its job.
            RunOutcome::Busy if !ctx.once => {
                Err(CycleError::skipped(report.summary()).with_report(&report))
            }
            RunOutcome::Busy | RunOutcome::Failure => {
                Err(CycleError::failed(report.summary()).with_report(&report))
            }
        }
    }

    fn last_report(&self) -> Option<&RunReport> {
        self.last.as_ref()
    }
}

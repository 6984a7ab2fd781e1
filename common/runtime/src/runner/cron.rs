//! Cron cadence: tokio-cron-scheduler says when a cycle is due; the runner runs
//! it. A firing while a cycle runs waits (one at most); further firings are counted as skipped.

use tokio::sync::mpsc;
use tokio_cron_scheduler::{Job, JobScheduler};

/// The scheduler could not take the schedule.
#[derive(Debug, thiserror::Error)]
#[error("cron schedule {schedule:?}: {reason}")]
pub struct CronError {
    /// The expression.
    pub schedule: String,
    /// What the scheduler said.
    pub reason: String,
}

/// A running scheduler and the "due" signals it sends.
pub(super) struct CronTicker {
    scheduler: JobScheduler,
    due: mpsc::Receiver<()>,
}

impl CronTicker {
    /// Starts firing on `schedule` (seconds field first); `on_skip` runs for a firing that found
    /// one already waiting.
    pub(super) async fn start(
        schedule: &str,
        on_skip: impl Fn() + Send + Sync + 'static,
    ) -> Result<Self, CronError> {
        let fail = |e: &dyn std::fmt::Display| CronError {
            schedule: schedule.to_owned(),
            reason: e.to_string(),
        };
        let (tx, due) = mpsc::channel::<()>(1);
        let on_skip = std::sync::Arc::new(on_skip);
        let job = Job::new_async(schedule, move |_id, _scheduler| {
            let (tx, on_skip) = (tx.clone(), on_skip.clone());
            Box::pin(async move {
                if tx.try_send(()).is_err() {
                    on_skip();
                }
            })
        })
        .map_err(|e| fail(&e))?;
        let scheduler = JobScheduler::new().await.map_err(|e| fail(&e))?;
        scheduler.add(job).await.map_err(|e| fail(&e))?;
        scheduler.start().await.map_err(|e| fail(&e))?;
        Ok(Self { scheduler, due })
    }

    /// Waits for the next firing; `None` once the scheduler is gone.
    pub(super) async fn due(&mut self) -> Option<()> {
        self.due.recv().await
    }

    /// Stops the scheduler.
    pub(super) async fn stop(mut self) {
        if let Err(e) = self.scheduler.shutdown().await {
            tracing::debug!(error = %e, "cron scheduler did not stop cleanly");
        }
    }
}

//! The runner's cron cadence: a task that sleeps until the next firing and signals "due". A
//! firing while a cycle runs waits (one at most); further firings are counted as skipped.

use chrono::Utc;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::JoinHandle;

use crate::schedule::Schedule;

/// The firing task and the "due" signals it sends.
pub(super) struct CronTicker {
    task: JoinHandle<()>,
    due: mpsc::Receiver<()>,
}

impl CronTicker {
    /// Starts firing on `schedule`; `on_skip` runs for a firing that found one already waiting.
    pub(super) fn start(schedule: Schedule, on_skip: impl Fn() + Send + 'static) -> Self {
        let (tx, due) = mpsc::channel::<()>(1);
        let task = tokio::spawn(async move {
            let mut after = Utc::now();
            // A schedule that never fires again ends the task; `due` then answers `None`.
            while let Some(next) = schedule.next_after(after) {
                // The wall clock decides when; a sleep that overshoots (suspend, a stalled
                // runtime) fires the missed firings at once, and they count as skipped.
                let wait = (next - Utc::now()).to_std().unwrap_or_default();
                tokio::time::sleep(wait).await;
                match tx.try_send(()) {
                    Ok(()) => {}
                    Err(TrySendError::Full(())) => on_skip(),
                    Err(TrySendError::Closed(())) => return,
                }
                after = next;
            }
        });
        Self { task, due }
    }

    /// Waits for the next firing; `None` once the schedule fires no more.
    pub(super) async fn due(&mut self) -> Option<()> {
        self.due.recv().await
    }

    /// Stops firing.
    pub(super) fn stop(self) {
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn ticker_signals_due_and_counts_firings_nobody_took() {
        let skipped = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = skipped.clone();
        let mut t = CronTicker::start(Schedule::parse("* * * * * *").unwrap(), move || {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        });
        assert_eq!(t.due().await, Some(()));
        // Nobody takes the next firings for a while: one waits, the rest are skipped.
        tokio::time::sleep(Duration::from_millis(3_200)).await;
        assert_eq!(t.due().await, Some(()));
        assert!(skipped.load(std::sync::atomic::Ordering::Relaxed) >= 1);
        t.stop();
    }
}

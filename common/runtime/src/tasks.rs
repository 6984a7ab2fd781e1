//! Supervised background tasks: every long-lived task a keeper spawns is tracked by name, so one
//! that returns or panics before the stop is logged (task name, panic message) and either
//! restarted with backoff or stops the process with exit code 1, and the stop joins them all
//! within the grace period.
//!
//! With `panic = "abort"` (the release profile) a panic still aborts the whole process before
//! any supervisor sees it; what supervision catches there is a task that *returns* early. Builds
//! that unwind (tests, debug) also get the panic message and the restart.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::{JoinError, JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::shutdown::Shutdown;

/// What happens when a supervised task ends (returns or panics) before the stop was requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnEarlyExit {
    /// Started again after a delay that doubles from `min_delay` up to `max_delay` with each
    /// early end in a row (a run that lasted longer than `max_delay` resets it): for work whose
    /// absence the keeper survives, such as a periodic probe or a restore drill.
    Restart {
        /// Delay before the first restart.
        min_delay: Duration,
        /// Longest delay between restarts.
        max_delay: Duration,
    },
    /// The stop is requested for the whole process and [`Supervisor::failure`] names the task,
    /// for `main` to exit with code 1: for tasks without which the keeper must not run on
    /// silently (the ops server that liveness probes read).
    StopProcess,
}

impl OnEarlyExit {
    /// Restart after 1 s, backing off up to 60 s.
    pub const RESTART: Self = Self::Restart {
        min_delay: Duration::from_secs(1),
        max_delay: Duration::from_secs(60),
    };
}

/// The supervised task that stopped the process, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFailure {
    /// The task's name.
    pub task: &'static str,
    /// `returned` or `panicked: <message>`.
    pub reason: String,
}

/// Tracks a process's long-lived tasks; see the module documentation.
pub struct Supervisor {
    shutdown: Shutdown,
    set: JoinSet<()>,
    names: HashMap<tokio::task::Id, &'static str>,
    failure: Arc<Mutex<Option<TaskFailure>>>,
}

impl Supervisor {
    /// A supervisor whose tasks stop with `shutdown`; a [`OnEarlyExit::StopProcess`] task that
    /// fails triggers it.
    pub fn new(shutdown: Shutdown) -> Self {
        Self {
            shutdown,
            set: JoinSet::new(),
            names: HashMap::new(),
            failure: Arc::new(Mutex::new(None)),
        }
    }

    /// Spawns the task `start()` builds under `name`, started again by calling `start` when
    /// `on_exit` says so. The task itself must end soon after the shutdown switch fires.
    pub fn spawn<F, Fut>(&mut self, name: &'static str, on_exit: OnEarlyExit, start: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let driver = drive(
            name,
            on_exit,
            start,
            self.shutdown.clone(),
            self.failure.clone(),
        );
        let id = self.set.spawn(driver).id();
        self.names.insert(id, name);
    }

    /// Takes over an already spawned task under `name`; it cannot be restarted, so ending
    /// before the stop counts as [`OnEarlyExit::StopProcess`].
    pub fn adopt(&mut self, name: &'static str, task: JoinHandle<()>) {
        let mut task = Some(task);
        self.spawn(name, OnEarlyExit::StopProcess, move || {
            let task = task.take();
            async move {
                if let Some(task) = task {
                    let guard = AbortOnDrop(task);
                    // A panic re-raised here reaches the driver as this task's panic.
                    if let Err(e) = guard.join().await {
                        std::panic::resume_unwind(panic_payload(e));
                    }
                }
            }
        });
    }

    /// The task that stopped the process, if one did: `main` then exits with code 1.
    pub fn failure(&self) -> Option<TaskFailure> {
        self.failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Waits for every task to end, at most `grace` (call after the shutdown switch fired);
    /// tasks still running then are aborted and their names returned.
    pub async fn join(&mut self, grace: Duration) -> Vec<&'static str> {
        let deadline = Instant::now() + grace;
        loop {
            match tokio::time::timeout_at(deadline, self.set.join_next_with_id()).await {
                Ok(Some(Ok((id, ())))) => {
                    self.names.remove(&id);
                }
                Ok(Some(Err(e))) => {
                    // The driver itself never panics; an abort is the only other way out.
                    self.names.remove(&e.id());
                }
                Ok(None) => return Vec::new(),
                Err(_) => break,
            }
        }
        let mut late: Vec<&'static str> = self.names.values().copied().collect();
        late.sort_unstable();
        tracing::error!(
            tasks = ?late,
            grace_ms = grace.as_millis() as u64,
            "supervised tasks did not stop within the grace period: aborting them"
        );
        self.set.abort_all();
        while self.set.join_next().await.is_some() {}
        late
    }
}

/// Aborts the task when dropped, so a driver aborted by [`Supervisor::join`] takes its task
/// along.
struct AbortOnDrop(JoinHandle<()>);

impl AbortOnDrop {
    async fn join(mut self) -> Result<(), JoinError> {
        (&mut self.0).await
    }
}

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

fn panic_payload(e: JoinError) -> Box<dyn std::any::Any + Send> {
    match e.try_into_panic() {
        Ok(payload) => payload,
        Err(e) => Box::new(format!("task {e}")),
    }
}

/// `returned`, or `panicked: <message>`.
fn describe(outcome: Result<(), JoinError>) -> String {
    match outcome {
        Ok(()) => "returned".to_owned(),
        Err(e) if e.is_cancelled() => "cancelled".to_owned(),
        Err(e) => {
            let payload = panic_payload(e);
            let message = payload
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| payload.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a non-text panic payload".to_owned());
            format!("panicked: {message}")
        }
    }
}

async fn drive<F, Fut>(
    name: &'static str,
    on_exit: OnEarlyExit,
    mut start: F,
    shutdown: Shutdown,
    failure: Arc<Mutex<Option<TaskFailure>>>,
) where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut delay = match on_exit {
        OnEarlyExit::Restart { min_delay, .. } => min_delay,
        OnEarlyExit::StopProcess => Duration::ZERO,
    };
    loop {
        let started = Instant::now();
        let outcome = AbortOnDrop(tokio::spawn(start())).join().await;
        if shutdown.is_triggered() {
            if let Err(e) = outcome
                && e.is_panic()
            {
                let reason = describe(Err(e));
                tracing::error!(task = name, reason = %reason, "supervised task failed while stopping");
            }
            return;
        }
        let reason = describe(outcome);
        match on_exit {
            OnEarlyExit::Restart {
                min_delay,
                max_delay,
            } => {
                if started.elapsed() > max_delay {
                    delay = min_delay;
                }
                tracing::error!(
                    task = name,
                    reason = %reason,
                    restart_in_ms = delay.as_millis() as u64,
                    "supervised task stopped early: restarting it"
                );
                tokio::select! {
                    () = shutdown.wait() => return,
                    () = tokio::time::sleep(delay) => {}
                }
                delay = (delay * 2).min(max_delay);
            }
            OnEarlyExit::StopProcess => {
                tracing::error!(
                    task = name,
                    reason = %reason,
                    "supervised task stopped early: stopping the process"
                );
                failure
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .get_or_insert(TaskFailure { task: name, reason });
                shutdown.trigger();
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    const FAST: OnEarlyExit = OnEarlyExit::Restart {
        min_delay: Duration::from_millis(10),
        max_delay: Duration::from_millis(40),
    };

    #[tokio::test]
    async fn a_panicking_task_is_restarted_until_it_runs() {
        let shutdown = Shutdown::new();
        let mut sup = Supervisor::new(shutdown.clone());
        let starts = Arc::new(AtomicU32::new(0));
        let (s, stop) = (starts.clone(), shutdown.clone());
        sup.spawn("flaky", FAST, move || {
            let (s, stop) = (s.clone(), stop.clone());
            async move {
                if s.fetch_add(1, Ordering::SeqCst) < 2 {
                    panic!("boom");
                }
                stop.wait().await;
            }
        });
        let third = async {
            while starts.load(Ordering::SeqCst) < 3 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(5), third)
            .await
            .unwrap();
        shutdown.trigger();
        assert!(sup.join(Duration::from_secs(5)).await.is_empty());
        assert_eq!(starts.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_critical_task_that_ends_stops_the_process() {
        let shutdown = Shutdown::new();
        let mut sup = Supervisor::new(shutdown.clone());
        sup.spawn("ops", OnEarlyExit::StopProcess, || async {
            panic!("listener gone");
        });
        tokio::time::timeout(Duration::from_secs(5), shutdown.wait())
            .await
            .unwrap();
        assert_eq!(
            sup.failure(),
            Some(TaskFailure {
                task: "ops",
                reason: "panicked: listener gone".into()
            })
        );
        assert!(sup.join(Duration::from_secs(5)).await.is_empty());
    }

    #[tokio::test]
    async fn an_adopted_task_that_returns_stops_the_process() {
        let shutdown = Shutdown::new();
        let mut sup = Supervisor::new(shutdown.clone());
        sup.adopt("server", tokio::spawn(async {}));
        tokio::time::timeout(Duration::from_secs(5), shutdown.wait())
            .await
            .unwrap();
        assert_eq!(sup.failure().map(|f| f.reason), Some("returned".into()));
    }

    #[tokio::test]
    async fn the_stop_joins_within_the_grace_period_and_aborts_the_rest() {
        let shutdown = Shutdown::new();
        let mut sup = Supervisor::new(shutdown.clone());
        let stop = shutdown.clone();
        sup.spawn("polite", OnEarlyExit::RESTART, move || {
            let stop = stop.clone();
            async move { stop.wait().await }
        });
        let dropped = Arc::new(AtomicU32::new(0));
        let d = dropped.clone();
        sup.spawn("stubborn", OnEarlyExit::RESTART, move || {
            let guard = Counted(d.clone());
            async move {
                let _guard = guard;
                std::future::pending::<()>().await;
            }
        });
        tokio::task::yield_now().await;
        shutdown.trigger();
        let began = Instant::now();
        let late = sup.join(Duration::from_millis(200)).await;
        assert_eq!(late, vec!["stubborn"]);
        assert!(
            began.elapsed() < Duration::from_secs(2),
            "{:?}",
            began.elapsed()
        );
        // The stubborn task itself was aborted, not only its driver.
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(dropped.load(Ordering::SeqCst), 1);
    }

    struct Counted(Arc<AtomicU32>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

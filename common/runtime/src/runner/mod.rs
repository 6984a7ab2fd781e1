//! The interval loop every keeper uses.
//!
//! A keeper implements [`Cycle`] (one pass of its job) and hands it to a [`Runner`], which ticks
//! on a fixed cadence without ever overlapping cycles, bounds each cycle by a timeout, counts and
//! logs outcomes, keeps `/healthz` and `/status` current, raises `keeper_stale`, talks to
//! systemd, and drains gracefully on SIGTERM/SIGINT.

mod cadence;
mod cron;
mod cycle;
mod notify;
pub mod staleness;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::{Instant, Interval};
use tracing::Instrument as _;

use crate::alert::{Alerter, Severity};
use crate::cli::{EXIT_FAILED, EXIT_OK};
use crate::config::RunnerSettings;
pub use crate::schedule::{CronError, Schedule};
pub use crate::shutdown::Shutdown;
use crate::telemetry::health::LIVENESS_INTERVALS;
use crate::telemetry::metrics::labels;
use crate::telemetry::{CycleRecord, Health, Metrics};
pub use cycle::{
    Cycle, CycleContext, CycleError, CycleReport, CycleRun, ErrorKind, Outcome, Transient,
};
use notify::Notifier;
pub use staleness::Staleness;

/// Alert key raised when the keeper has gone `stale_intervals` intervals without a good cycle.
pub const KEEPER_STALE: &str = "keeper_stale";
/// Longest wait for queued alert notifications when stopping.
const ALERT_FLUSH: Duration = Duration::from_secs(5);
/// How often a cron-scheduled runner shows it is alive between (and during) long cycles.
const CRON_HEARTBEAT: Duration = Duration::from_secs(30);

/// Durations of the loop, from [`RunnerSettings`] (whole seconds) or finer for tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// Time between ticks.
    pub interval: Duration,
    /// Longest a cycle may run.
    pub cycle_timeout: Duration,
    /// Time the in-flight cycle gets after a stop signal.
    pub shutdown_grace: Duration,
    /// `keeper_stale` fires after this many intervals without a good cycle.
    pub stale_intervals: u32,
}

impl From<&RunnerSettings> for Timing {
    fn from(s: &RunnerSettings) -> Self {
        let interval = s.period();
        Self {
            interval,
            cycle_timeout: s.cycle_timeout.map(Duration::from_secs).unwrap_or(interval),
            shutdown_grace: Duration::from_secs(s.shutdown_grace),
            stale_intervals: s.stale_intervals.max(1),
        }
    }
}

impl Timing {
    /// How long `/healthz` tolerates no completed tick: 3 intervals, but always more than one
    /// full cycle timeout plus an interval (a long allowed cycle is not a hang).
    pub fn liveness_window(&self) -> Duration {
        (self.interval * LIVENESS_INTERVALS).max(self.cycle_timeout + self.interval)
    }
}

enum Ended<T> {
    Finished(T),
    TimedOut,
    Cancelled,
}

/// Drives a [`Cycle`] once or on an interval.
pub struct Runner {
    keeper: String,
    timing: Timing,
    metrics: Arc<Metrics>,
    health: Health,
    alerter: Alerter,
    shutdown: Shutdown,
    notifier: Notifier,
    stale: Staleness,
    last_good: Option<DateTime<Utc>>,
    /// Only a successful cycle resets staleness (not a skipped one): set by `with_staleness`.
    stale_needs_success: bool,
    tick: u64,
    /// Cron schedule; the interval ticker when `None`.
    cron: Option<Schedule>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("keeper", &self.keeper)
            .field("timing", &self.timing)
            .field("tick", &self.tick)
            .finish_non_exhaustive()
    }
}

impl Runner {
    /// A runner for `keeper`; sets the health timing from `timing` (a `&RunnerSettings` works).
    pub fn new(
        keeper: &str,
        timing: impl Into<Timing>,
        metrics: Arc<Metrics>,
        health: Health,
        alerter: Alerter,
        shutdown: Shutdown,
    ) -> Self {
        let timing = timing.into();
        health.set_timing(timing.interval, timing.liveness_window());
        let stale = Staleness::new(
            alerter.clone(),
            KEEPER_STALE,
            Severity::Critical,
            timing.interval * timing.stale_intervals,
        )
        .context(&format!("{keeper}: no successful cycle"));
        Self {
            keeper: keeper.to_owned(),
            timing,
            metrics,
            health,
            alerter,
            shutdown,
            notifier: Notifier::from_env(),
            stale,
            last_good: None,
            stale_needs_success: false,
            tick: 0,
            cron: None,
        }
    }

    /// Replaces `keeper_stale` with the keeper's own staleness alert, and says when the job last
    /// succeeded before this process (so a restart does not forget it). Only a successful cycle
    /// resets it: a skipped one (another instance holds the job's lock) produced nothing.
    pub fn with_staleness(mut self, stale: Staleness, last_good: Option<DateTime<Utc>>) -> Self {
        self.stale = stale;
        self.last_good = last_good;
        self.stale_needs_success = true;
        self
    }

    /// Ticks on a cron schedule (see [`Schedule`]) instead of the interval; liveness then
    /// comes from a heartbeat every 30 s, during long cycles too.
    pub fn with_cron(mut self, schedule: Schedule) -> Self {
        self.health
            .set_timing(CRON_HEARTBEAT, CRON_HEARTBEAT * LIVENESS_INTERVALS);
        self.cron = Some(schedule);
        self
    }

    /// The timing in force.
    pub fn timing(&self) -> Timing {
        self.timing
    }

    /// Runs one cycle (`--once`) and waits briefly for alert delivery; use
    /// [`CycleRun::exit_code`] for the process exit code.
    pub async fn run_once<C: Cycle>(&mut self, cycle: &mut C) -> CycleRun<C::Report> {
        let (mut no_watchdog, mut no_heartbeat) = (None, None);
        let run = self
            .execute(cycle, true, &mut no_watchdog, &mut no_heartbeat)
            .await;
        self.health.tick_completed();
        self.alerter.flush(ALERT_FLUSH).await;
        run
    }

    /// Ticks until a stop signal, then lets the in-flight cycle finish within the grace period.
    /// Returns the process exit code: 0 after a graceful stop, 1 after a fatal cycle error.
    pub async fn run_forever<C: Cycle>(&mut self, cycle: &mut C) -> i32 {
        let mut ticker = self.ticker();
        let mut watchdog = self
            .notifier
            .watchdog_every()
            .map(|every| tokio::time::interval_at(Instant::now() + every, every));
        let mut heartbeat = ticker.heartbeat();
        self.notifier
            .ready(&format!("started; {}", ticker.describe()));
        tracing::info!(
            keeper = %self.keeper,
            cadence = %ticker.describe(),
            cycle_timeout_s = self.timing.cycle_timeout.as_secs_f64(),
            "runner started"
        );
        let mut code = EXIT_OK;
        loop {
            let skipped = tokio::select! {
                biased;
                () = self.shutdown.wait() => break,
                due = ticker.due() => match due {
                    Some(skipped) => skipped,
                    None => break,
                },
                () = next_tick(&mut watchdog) => {
                    self.notifier.watchdog();
                    continue;
                }
                () = next_tick(&mut heartbeat) => {
                    self.health.tick_completed();
                    self.stale.check("", self.last_good, Utc::now());
                    continue;
                }
            };
            if skipped > 0 {
                self.metrics
                    .ticks_skipped
                    .get_or_create(&labels([("keeper", &self.keeper)]))
                    .inc_by(skipped);
                tracing::warn!(
                    keeper = %self.keeper,
                    skipped,
                    "previous cycle ran past the next tick; skipped ticks"
                );
            }
            let run = self
                .execute(cycle, false, &mut watchdog, &mut heartbeat)
                .await;
            self.health.tick_completed();
            self.notifier.watchdog();
            self.stale.check("", self.last_good, Utc::now());
            if matches!(&run.result, Err(e) if e.kind() == ErrorKind::Fatal) {
                tracing::error!(keeper = %self.keeper, "fatal cycle error: stopping");
                code = EXIT_FAILED;
                break;
            }
            if self.shutdown.is_triggered() {
                break;
            }
        }
        ticker.stop();
        self.health.set_draining();
        self.notifier.stopping("stopping");
        tracing::info!(keeper = %self.keeper, code, "runner stopped");
        self.alerter.flush(ALERT_FLUSH).await;
        code
    }

    async fn execute<C: Cycle>(
        &mut self,
        cycle: &mut C,
        once: bool,
        watchdog: &mut Option<Interval>,
        heartbeat: &mut Option<Interval>,
    ) -> CycleRun<C::Report> {
        self.tick += 1;
        let tick = self.tick;
        let started = Instant::now();
        let started_at = Utc::now();
        let ctx = CycleContext {
            tick,
            once,
            deadline: started + self.timing.cycle_timeout,
            shutdown: self.shutdown.clone(),
        };
        let span = tracing::info_span!(
            "cycle",
            keeper = %self.keeper,
            tick,
            outcome = tracing::field::Empty,
            duration_ms = tracing::field::Empty,
        );
        let grace = self.timing.shutdown_grace;
        let mut grace_end = self.shutdown.is_triggered().then(|| started + grace);
        let ended = {
            let fut = cycle.run(&ctx).instrument(span.clone());
            tokio::pin!(fut);
            loop {
                tokio::select! {
                    biased;
                    r = &mut fut => break Ended::Finished(r),
                    () = self.shutdown.wait_forced() => break Ended::Cancelled,
                    () = tokio::time::sleep_until(ctx.deadline) => break Ended::TimedOut,
                    () = tokio::time::sleep_until(grace_end.unwrap_or(ctx.deadline)),
                        if grace_end.is_some() => break Ended::Cancelled,
                    () = self.shutdown.wait(), if grace_end.is_none() => {
                        self.health.set_draining();
                        self.notifier.stopping("stopping: finishing the in-flight cycle");
                        grace_end = Some(Instant::now() + grace);
                    }
                    () = next_tick(watchdog) => self.notifier.watchdog(),
                    () = next_tick(heartbeat) => self.health.tick_completed(),
                }
            }
        };
        let duration = started.elapsed();
        let secs = duration.as_secs_f64();
        let (outcome, result) = match ended {
            Ended::Finished(Ok(report)) => (Outcome::Success, Ok(report)),
            Ended::Finished(Err(e)) => match e.kind() {
                ErrorKind::Skipped => (Outcome::Skipped, Err(e)),
                ErrorKind::Failed | ErrorKind::Fatal => (Outcome::Failure, Err(e)),
            },
            Ended::TimedOut => (
                Outcome::Timeout,
                Err(CycleError::failed(format!(
                    "cycle timed out after {secs:.1} s (runner.cycle_timeout / CYCLE_TIMEOUT)"
                ))),
            ),
            Ended::Cancelled => (
                Outcome::Cancelled,
                Err(CycleError::failed(format!(
                    "cycle cut after {secs:.1} s: stopping (runner.shutdown_grace / SHUTDOWN_GRACE)"
                ))),
            ),
        };

        let (summary, report, error) = match &result {
            Ok(r) => (r.summary(), serde_json::to_value(r).ok(), None),
            Err(e) => (
                format!("{outcome}: {}", e.message()),
                e.report().cloned(),
                Some(e.message().to_owned()),
            ),
        };
        self.metrics.record_cycle(outcome.as_str(), secs);
        if outcome == Outcome::Success {
            self.metrics
                .last_success
                .get_or_create(&labels([("keeper", &self.keeper)]))
                .set(started_at.timestamp() + duration.as_secs() as i64);
        }
        let good = match outcome {
            Outcome::Success => true,
            Outcome::Skipped => !self.stale_needs_success,
            _ => false,
        };
        if good {
            self.last_good = Some(Utc::now());
        }
        span.record("outcome", outcome.as_str());
        span.record("duration_ms", duration.as_millis() as u64);
        let _entered = span.enter();
        let duration_ms = duration.as_millis() as u64;
        match outcome {
            Outcome::Success | Outcome::Skipped => tracing::info!(
                keeper = %self.keeper, tick, outcome = outcome.as_str(), duration_ms,
                summary = %summary, "cycle finished"
            ),
            _ => tracing::warn!(
                keeper = %self.keeper, tick, outcome = outcome.as_str(), duration_ms,
                error = error.as_deref().unwrap_or_default(), "cycle finished"
            ),
        }
        drop(_entered);
        self.notifier
            .status(&format!("tick {tick} {outcome}: {summary}"));
        self.health.record_cycle(CycleRecord {
            tick,
            outcome: outcome.as_str().to_owned(),
            started_at,
            duration_seconds: secs,
            summary,
            report,
            error,
        });
        CycleRun {
            tick,
            outcome,
            duration,
            result,
        }
    }
}

/// The next tick of an optional interval; never resolves when there is none.
async fn next_tick(interval: &mut Option<Interval>) {
    match interval {
        Some(i) => {
            i.tick().await;
        }
        None => std::future::pending().await,
    }
}

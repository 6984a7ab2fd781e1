//! The interval loop every keeper uses.
//!
//! A keeper implements [`Cycle`] (one pass of its job) and hands it to a [`Runner`], which ticks
//! on a fixed cadence without ever overlapping cycles, bounds each cycle by a timeout, counts and
//! logs outcomes, keeps `/healthz` and `/status` current, raises `keeper_stale`, talks to
//! systemd, and drains gracefully on SIGTERM/SIGINT.

#[cfg(feature = "cron")]
mod cron;
mod notify;
pub mod staleness;

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable as _};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use tokio::time::{Instant, Interval, MissedTickBehavior};
use tracing::Instrument as _;

use crate::alert::{Alerter, Severity};
use crate::cli::{EXIT_FAILED, EXIT_OK};
use crate::config::RunnerSettings;
pub use crate::shutdown::Shutdown;
use crate::telemetry::health::LIVENESS_INTERVALS;
use crate::telemetry::metrics::labels;
use crate::telemetry::{CycleRecord, Health, Metrics};
#[cfg(feature = "cron")]
pub use cron::CronError;
use notify::Notifier;
pub use staleness::Staleness;

/// Alert key raised when the keeper has gone `stale_intervals` intervals without a good cycle.
pub const KEEPER_STALE: &str = "keeper_stale";
/// Longest wait for queued alert notifications when stopping.
const ALERT_FLUSH: Duration = Duration::from_secs(5);
/// How often a cron-scheduled runner shows it is alive between (and during) long cycles.
#[cfg(feature = "cron")]
const CRON_HEARTBEAT: Duration = Duration::from_secs(30);

/// What a cycle produced; its one-line summary goes to systemd's STATUS and the cycle log event,
/// the whole value (as JSON) to `/status`.
pub trait CycleReport: Serialize + Send + Sync {
    /// One line saying what the cycle did (`published 2 of 3 assets`).
    fn summary(&self) -> String;

    /// The report for a terminal (`--once` without `--output json`); the summary line unless
    /// the keeper renders more.
    fn to_text(&self) -> String {
        format!("{}\n", self.summary())
    }
}

impl CycleReport for () {
    fn summary(&self) -> String {
        "ok".to_owned()
    }
}

impl CycleReport for String {
    fn summary(&self) -> String {
        self.clone()
    }
}

impl CycleReport for Value {
    fn summary(&self) -> String {
        self.to_string()
    }
}

/// One pass of a keeper's job.
pub trait Cycle: Send {
    /// The cycle's result.
    type Report: CycleReport;

    /// Runs one cycle. It may be cut at `ctx.deadline` or after the shutdown grace period, so
    /// it should reach decisions early and can watch `ctx.shutdown` to wrap up.
    fn run(
        &mut self,
        ctx: &CycleContext,
    ) -> impl Future<Output = Result<Self::Report, CycleError>> + Send;

    /// The report of the last cycle, whether it succeeded or not (what `--once` prints).
    fn last_report(&self) -> Option<&Self::Report> {
        None
    }
}

/// What kind of non-success a cycle reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The job failed this time (quorum not met, send failed): exit 1 with `--once`, the loop
    /// goes on.
    Failed,
    /// The cycle chose not to work, and that is fine (another instance holds the wallet lease):
    /// exit 0, outcome `skipped`.
    Skipped,
    /// Continuing is pointless (the configuration contradicts the chain): the loop stops with
    /// exit 1 so the supervisor restarts or pages.
    Fatal,
}

/// Why a cycle did not succeed.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct CycleError {
    message: String,
    kind: ErrorKind,
    report: Option<Value>,
}

impl CycleError {
    /// The cycle failed (exit 1 with `--once`).
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            kind: ErrorKind::Failed,
            report: None,
        }
    }

    /// The cycle deliberately did nothing (exit 0, outcome `skipped`).
    pub fn skipped(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Skipped,
            ..Self::failed(message)
        }
    }

    /// The loop must stop (exit 1).
    pub fn fatal(message: impl Into<String>) -> Self {
        Self {
            kind: ErrorKind::Fatal,
            ..Self::failed(message)
        }
    }

    /// Attaches what the cycle did get done, shown by `/status` and `--output json`.
    pub fn with_report(mut self, report: &impl Serialize) -> Self {
        self.report = serde_json::to_value(report).ok();
        self
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The partial report attached by [`CycleError::with_report`].
    pub fn report(&self) -> Option<&Value> {
        self.report.as_ref()
    }
}

impl From<anyhow::Error> for CycleError {
    fn from(e: anyhow::Error) -> Self {
        Self::failed(format!("{e:#}"))
    }
}

/// How a cycle ended; the label of `keeper_cycles_total{outcome}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Completed.
    Success,
    /// Deliberately did nothing.
    Skipped,
    /// Returned an error.
    Failure,
    /// Cut at the cycle timeout.
    Timeout,
    /// Cut at the end of the shutdown grace period (or by a second signal).
    Cancelled,
}

impl Outcome {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Skipped => "skipped",
            Self::Failure => "failure",
            Self::Timeout => "timeout",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether the keeper did its job (or deliberately had none).
    pub fn is_ok(self) -> bool {
        matches!(self, Self::Success | Self::Skipped)
    }
}

impl Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of one cycle as seen by the runner.
#[derive(Debug)]
pub struct CycleRun<R> {
    /// Tick number (1 is the first).
    pub tick: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// Wall time.
    pub duration: Duration,
    /// The report, or why there is none (timeouts and cancellations included).
    pub result: Result<R, CycleError>,
}

impl<R> CycleRun<R> {
    /// Exit code of a `--once` run: 0 success or skipped, 1 anything else.
    pub fn exit_code(&self) -> i32 {
        if self.outcome.is_ok() {
            EXIT_OK
        } else {
            EXIT_FAILED
        }
    }
}

/// What a cycle knows about its run.
#[derive(Debug, Clone)]
pub struct CycleContext {
    /// Tick number since start (1 is the first).
    pub tick: u64,
    /// True for `--once` runs.
    pub once: bool,
    /// When the runner cuts this cycle.
    pub deadline: Instant,
    /// Fires when the process is asked to stop; wrap up (reach a decision) and return.
    pub shutdown: Shutdown,
}

/// Errors that say whether another try could succeed; used by [`CycleContext::retry`].
pub trait Transient {
    /// Whether another try could succeed.
    fn is_transient(&self) -> bool;
    /// How long the server asked us to wait before the next try.
    fn retry_after(&self) -> Option<Duration> {
        None
    }
}

impl Transient for crate::http::HttpError {
    fn is_transient(&self) -> bool {
        self.is_retryable()
    }
    fn retry_after(&self) -> Option<Duration> {
        crate::http::HttpError::retry_after(self)
    }
}

impl CycleContext {
    /// Time left before the runner cuts this cycle.
    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Whether the process is stopping.
    pub fn stopping(&self) -> bool {
        self.shutdown.is_triggered()
    }

    /// Runs `op` with `policy` (see [`crate::retry`]) while its error is transient, honouring
    /// `Retry-After`, and never sleeping past the cycle deadline or into a shutdown.
    pub async fn retry<T, E, F, Fut>(
        &self,
        what: &str,
        policy: ExponentialBuilder,
        op: F,
    ) -> Result<T, E>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, E>>,
        E: Transient + Display,
    {
        op.retry(policy)
            .sleep(tokio::time::sleep)
            .when(|e: &E| e.is_transient() && !self.stopping())
            .adjust(|e: &E, next| {
                let next = crate::retry::honour_retry_after(
                    next,
                    e.retry_after(),
                    Duration::from_secs(30),
                )?;
                // Sleeping past the deadline only to be cut: give up now with the real error.
                (next < self.remaining()).then_some(next)
            })
            .notify(|e: &E, next| {
                tracing::warn!(what, error = %e, retry_in_ms = next.as_millis() as u64, "retrying");
            })
            .await
    }
}

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
    tick: u64,
    /// Cron schedule; the interval ticker when `None`.
    #[cfg(feature = "cron")]
    cron: Option<String>,
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
            tick: 0,
            #[cfg(feature = "cron")]
            cron: None,
        }
    }

    /// Replaces `keeper_stale` with the keeper's own staleness alert, and says when the job last
    /// succeeded before this process (so a restart does not forget it).
    pub fn with_staleness(mut self, stale: Staleness, last_good: Option<DateTime<Utc>>) -> Self {
        self.stale = stale;
        self.last_good = last_good;
        self
    }

    /// Ticks on a cron schedule (seconds field first) instead of the interval; liveness then
    /// comes from a heartbeat every 30 s, during long cycles too.
    #[cfg(feature = "cron")]
    pub fn with_cron(mut self, schedule: &str) -> Self {
        self.health
            .set_timing(CRON_HEARTBEAT, CRON_HEARTBEAT * LIVENESS_INTERVALS);
        self.cron = Some(schedule.to_owned());
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
        let mut ticker = match self.ticker().await {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(keeper = %self.keeper, error = %e, "cannot start the schedule");
                return EXIT_FAILED;
            }
        };
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
        ticker.stop().await;
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
            Ended::Finished(Err(e)) => match e.kind {
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
                format!("{outcome}: {}", e.message),
                e.report.clone(),
                Some(e.message.clone()),
            ),
        };
        self.metrics.record_cycle(outcome.as_str(), secs);
        if outcome == Outcome::Success {
            self.metrics
                .last_success
                .get_or_create(&labels([("keeper", &self.keeper)]))
                .set(started_at.timestamp() + duration.as_secs() as i64);
        }
        if outcome.is_ok() {
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

/// What says a cycle is due: a fixed interval, or a cron schedule.
enum Ticker {
    Interval(Interval),
    #[cfg(feature = "cron")]
    Cron(cron::CronTicker, String),
}

impl Runner {
    async fn ticker(&self) -> Result<Ticker, Box<dyn std::error::Error + Send + Sync>> {
        #[cfg(feature = "cron")]
        if let Some(schedule) = &self.cron {
            let (metrics, keeper) = (self.metrics.clone(), self.keeper.clone());
            let ticker = cron::CronTicker::start(schedule, move || {
                metrics
                    .ticks_skipped
                    .get_or_create(&labels([("keeper", &keeper)]))
                    .inc();
                tracing::warn!(keeper = %keeper, "a cycle is due while one is still waiting: skipped");
            })
            .await?;
            return Ok(Ticker::Cron(ticker, schedule.clone()));
        }
        let mut interval = tokio::time::interval(self.timing.interval);
        interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
        Ok(Ticker::Interval(interval))
    }
}

impl Ticker {
    /// Waits until a cycle is due; how many ticks were missed meanwhile (`None`: no more).
    async fn due(&mut self) -> Option<u64> {
        match self {
            Self::Interval(i) => {
                let scheduled = i.tick().await;
                let late = Instant::now().saturating_duration_since(scheduled);
                Some((late.as_nanos() / i.period().as_nanos()) as u64)
            }
            #[cfg(feature = "cron")]
            Self::Cron(c, _) => c.due().await.map(|()| 0),
        }
    }

    /// Liveness between cycles: only a cron schedule needs one (an interval ticks often).
    fn heartbeat(&self) -> Option<Interval> {
        match self {
            Self::Interval(_) => None,
            #[cfg(feature = "cron")]
            Self::Cron(..) => Some(tokio::time::interval_at(
                Instant::now() + CRON_HEARTBEAT,
                CRON_HEARTBEAT,
            )),
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Interval(i) => format!("ticking every {} s", i.period().as_secs_f64()),
            #[cfg(feature = "cron")]
            Self::Cron(_, schedule) => format!("on schedule {schedule}"),
        }
    }

    async fn stop(self) {
        match self {
            Self::Interval(_) => {}
            #[cfg(feature = "cron")]
            Self::Cron(c, _) => c.stop().await,
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

//! What a keeper hands the runner: a [`Cycle`] and its [`CycleReport`], and what the runner says
//! back: how each cycle ended ([`Outcome`], [`CycleRun`]), the context a cycle runs in, and
//! retries bounded by its deadline.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable as _};
use serde::Serialize;
use serde_json::Value;
use tokio::time::Instant;

use crate::cli::{EXIT_FAILED, EXIT_OK};
use crate::shutdown::Shutdown;

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
    exit_code: Option<i32>,
}

impl CycleError {
    /// The cycle failed (exit 1 with `--once`).
    pub fn failed(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            kind: ErrorKind::Failed,
            report: None,
            exit_code: None,
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

    /// A `--once` exit code of its own instead of 1 (e.g. [`crate::cli::EXIT_UNFUNDED`]), so
    /// scripts can tell this failure apart.
    pub fn with_exit_code(mut self, code: i32) -> Self {
        self.exit_code = Some(code);
        self
    }

    /// The `--once` exit code set by [`CycleError::with_exit_code`], if any.
    pub fn exit_code(&self) -> Option<i32> {
        self.exit_code
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
    /// Exit code of a `--once` run: 0 success or skipped, the cycle error's own code when it
    /// has one, 1 anything else.
    pub fn exit_code(&self) -> i32 {
        if self.outcome.is_ok() {
            EXIT_OK
        } else if let Err(e) = &self.result
            && let Some(code) = e.exit_code()
            && self.outcome == Outcome::Failure
        {
            code
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

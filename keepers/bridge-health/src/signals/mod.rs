//! Bridge-health signals: each a small typed check of one upstream, with its own timeout,
//! retries and metrics. A check that cannot read its upstream reports [`Verdict::Unknown`],
//! never "healthy".

pub mod axelar;
pub mod evm_call;
pub mod fetch;
pub mod peg;
pub mod spec;
pub mod threshold;
pub mod tvl;
pub mod volume;
pub mod wormhole_health;
pub mod wormhole_limit;
pub mod wormhole_queue;

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use keeper_runtime::http::HttpError;
use keeper_runtime::telemetry::Metrics;
use keeper_sources::InvalidValue;
use serde::{Deserialize, Serialize};

use spec::{SignalSpec, UpstreamSettings};

/// What one signal says about its bridge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// Within every threshold.
    Healthy,
    /// Past the warning threshold.
    Degraded,
    /// Past the critical threshold: the bridge is considered offline.
    Critical,
    /// The upstream could not be read or answered nonsense; says nothing about the bridge.
    Unknown,
}

impl Verdict {
    /// Contribution to the bridge score; `None` for unknown (it is left out, not counted healthy).
    pub fn score(self) -> Option<f64> {
        match self {
            Self::Healthy => Some(1.0),
            Self::Degraded => Some(0.5),
            Self::Critical => Some(0.0),
            Self::Unknown => None,
        }
    }

    /// Severity order among known verdicts: healthy < degraded < critical.
    pub fn rank(self) -> u8 {
        match self {
            Self::Healthy => 0,
            Self::Degraded => 1,
            Self::Critical => 2,
            Self::Unknown => 0,
        }
    }

    /// The lowercase name used in summaries and alerts.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Critical => "critical",
            Self::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The verdict a check hands out when its condition trips (configurable per signal).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Trip {
    /// Tripping makes the bridge degraded.
    Degraded,
    /// Tripping makes the bridge offline.
    Critical,
}

impl From<Trip> for Verdict {
    fn from(t: Trip) -> Self {
        match t {
            Trip::Degraded => Self::Degraded,
            Trip::Critical => Self::Critical,
        }
    }
}

/// Why a signal could not be read. Messages name the upstream and what was wrong with its
/// answer, never a URL (a URL may carry a key).
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    /// Transport, timeout, rate limit or an error status.
    #[error(transparent)]
    Http(#[from] HttpError),
    /// The body was not in the documented format.
    #[error("{upstream}: malformed response: {reason}")]
    Malformed {
        /// Which upstream.
        upstream: &'static str,
        /// What did not parse or made no sense.
        reason: String,
    },
    /// The upstream answered with its own documented error object.
    #[error("{upstream}: error: {message}")]
    Upstream {
        /// Which upstream.
        upstream: &'static str,
        /// The upstream's message.
        message: String,
    },
    /// A value the check needs was absent from an otherwise valid answer.
    #[error("{upstream}: {what} missing from the response")]
    Missing {
        /// Which upstream.
        upstream: &'static str,
        /// What was absent.
        what: String,
    },
    /// The value is older than the check accepts.
    #[error("{upstream}: {what} is {age_secs}s old (max {max_secs}s)")]
    Stale {
        /// Which upstream.
        upstream: &'static str,
        /// What is stale.
        what: String,
        /// Its age.
        age_secs: i64,
        /// The accepted age.
        max_secs: u64,
    },
    /// The value is stamped later than the keeper's clock allows (clock skew tolerance).
    #[error("{upstream}: {what} is stamped {ahead_secs}s in the future")]
    FromFuture {
        /// Which upstream.
        upstream: &'static str,
        /// What is from the future.
        what: String,
        /// Seconds ahead of the keeper's clock.
        ahead_secs: i64,
    },
    /// The check did not finish within its overall deadline (all retries included).
    #[error("{upstream}: no answer within {after:?} (retries included)")]
    Deadline {
        /// Which upstream.
        upstream: &'static str,
        /// The deadline.
        after: Duration,
    },
    /// The check depends on a client this process has not configured.
    #[error("{0}")]
    NotConfigured(String),
    /// A shared prefetch (e.g. one batched price request for every peg) failed.
    #[error("{0}")]
    Shared(Arc<str>),
    /// The Ethereum JSON-RPC call failed on every endpoint.
    #[error("{0}")]
    Rpc(String),
}

impl SignalError {
    /// Malformed-answer shorthand.
    pub fn malformed(upstream: &'static str, reason: impl Into<String>) -> Self {
        Self::Malformed {
            upstream,
            reason: reason.into(),
        }
    }

    /// Label for `keeper_source_requests_total{outcome}`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Http(e) => e.outcome(),
            Self::Malformed { .. } => "malformed",
            Self::Upstream { .. } => "api_error",
            Self::Missing { .. } => "missing",
            Self::Stale { .. } => "stale",
            Self::FromFuture { .. } => "from_future",
            Self::Deadline { .. } => "timeout",
            Self::NotConfigured(_) => "not_configured",
            Self::Shared(_) => "error",
            Self::Rpc(_) => "rpc_error",
        }
    }

    /// Worth another try within this cycle.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Http(e) => e.is_retryable(),
            _ => false,
        }
    }
}

/// A successful reading: the verdict and the facts behind it.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// Healthy, degraded or critical (never unknown: an unreadable signal is an error).
    pub verdict: Verdict,
    /// The observed values, for summaries, records and alerts.
    pub value: serde_json::Value,
    /// One human phrase: what was seen against which threshold.
    pub why: String,
    /// The bridge was seen moving value (feeds `last_seen` even when it is not healthy).
    pub active: bool,
    /// When the upstream says its data was observed, unix seconds; `None` when its answer
    /// carries no time (the fetch time stands in).
    pub observed_at: Option<i64>,
}

impl Observation {
    /// An observation with no activity evidence and no time of its own.
    pub fn new(verdict: Verdict, value: serde_json::Value, why: impl Into<String>) -> Self {
        Self {
            verdict,
            value,
            why: why.into(),
            active: false,
            observed_at: None,
        }
    }

    /// The same observation stamped with the upstream's own time, unix seconds.
    pub fn at(mut self, observed_at: i64) -> Self {
        self.observed_at = Some(observed_at);
        self
    }
}

/// One signal's outcome in a cycle, as it appears in summaries, records and alerts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SignalReport {
    /// The signal's name, unique within its bridge (`tvl:orbit-bridge`, `peg:jUSDT`).
    pub signal: String,
    /// The check's kind (`tvl`, `peg`, `volume_stall`, …).
    pub kind: &'static str,
    /// The check's verdict.
    pub verdict: Verdict,
    /// The observed values; null when unknown.
    pub value: serde_json::Value,
    /// What was seen and why it got this verdict (the error when unknown).
    pub why: String,
    /// Activity was observed.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub active: bool,
    /// Weight in the bridge score.
    pub weight: f64,
    /// For an unknown signal: the recent non-healthy verdict still held for it (see decision).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<Verdict>,
    /// When what the verdict rests on was observed, unix seconds: the upstream's own time, else
    /// when it was fetched; `None` when unknown. A published `last_seen` is this time, not the
    /// keeper's clock.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub observed_at: Option<i64>,
}

impl SignalReport {
    /// Builds the report from a check's result fetched at `fetched_at` (unix seconds).
    pub fn from_result(
        spec: &SignalSpec,
        result: Result<Observation, SignalError>,
        fetched_at: i64,
    ) -> Self {
        match result {
            Ok(o) => Self {
                signal: spec.name.clone(),
                kind: spec.check.kind(),
                verdict: o.verdict,
                value: o.value,
                why: o.why,
                active: o.active,
                weight: spec.weight,
                held: None,
                // Never later than the fetch: an upstream clock ahead of ours must not make an
                // observation look newer than it can be.
                observed_at: Some(o.observed_at.map_or(fetched_at, |t| t.min(fetched_at))),
            },
            Err(e) => Self {
                signal: spec.name.clone(),
                kind: spec.check.kind(),
                verdict: Verdict::Unknown,
                value: serde_json::Value::Null,
                why: e.to_string(),
                active: false,
                weight: spec.weight,
                held: None,
                observed_at: None,
            },
        }
    }
}

/// A price quote for a peg check: USD price and the source's own timestamp.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PegQuote {
    /// USD price.
    pub price: f64,
    /// Unix seconds of the price point.
    pub timestamp: i64,
}

/// One source's part of the peg batch: per key the quote or why its entry was unusable (keys
/// the API left out are absent); the whole part fails when its request did.
pub type SourceBatch = Result<HashMap<String, Result<PegQuote, InvalidValue>>, Arc<str>>;

/// The prefetched peg quotes of a cycle: one batched request per source for every peg key.
#[derive(Debug, Clone)]
pub struct PegBatch {
    /// DefiLlama coins, keyed by coin key (`ton:EQ…`).
    pub defillama: SourceBatch,
    /// CoinGecko token prices, keyed by `platform:address`.
    pub coingecko: SourceBatch,
}

impl Default for PegBatch {
    fn default() -> Self {
        Self {
            defillama: Ok(HashMap::new()),
            coingecko: Ok(HashMap::new()),
        }
    }
}

/// The cycle's peg batch as a shared future: started once, awaited by every peg signal, so the
/// one request overlaps with the other signals.
pub type PegFuture =
    futures_util::future::Shared<futures_util::future::BoxFuture<'static, PegBatch>>;

/// A peg batch that is already known (tests, and cycles without peg signals).
pub fn ready_pegs(batch: PegBatch) -> PegFuture {
    use futures_util::FutureExt as _;
    futures_util::future::ready(batch).boxed().shared()
}

/// Reads an argument-less `bool` contract function on Ethereum (`eth_call` with failover).
pub trait BoolCall: Send + Sync {
    /// Calls `selector` on `contract` at the latest block.
    fn call_bool<'a>(
        &'a self,
        contract: &'a str,
        selector: [u8; 4],
    ) -> futures_util::future::BoxFuture<'a, Result<bool, SignalError>>;
}

/// Everything a check needs for one cycle.
pub struct Ctx<'a> {
    /// Shared HTTP client.
    pub http: &'a reqwest::Client,
    /// Base URLs and defaults of the HTTP upstreams.
    pub upstreams: &'a UpstreamSettings,
    /// Where per-request outcomes and latencies are counted.
    pub metrics: Option<&'a Metrics>,
    /// Cycle time, unix seconds.
    pub now: i64,
    /// Peg quotes fetched once for the cycle.
    pub pegs: &'a PegFuture,
    /// Ethereum JSON-RPC, when configured.
    pub eth: Option<&'a dyn BoolCall>,
}

/// Runs one signal's check within its overall deadline and turns the outcome into a report.
pub async fn run(spec: &SignalSpec, ctx: &Ctx<'_>) -> SignalReport {
    let policy = fetch::Policy::for_spec(spec, ctx.upstreams);
    let deadline = policy.deadline();
    let fut = async {
        use spec::Check;
        match &spec.check {
            Check::Peg(c) => peg::check(c, ctx).await,
            Check::Tvl(c) => tvl::check(c, ctx, &policy).await,
            Check::VolumeStall(c) => volume::check(c, ctx, &policy).await,
            Check::WormholeHealth(c) => wormhole_health::check(c, ctx, &policy).await,
            Check::WormholeGovernorQueue(c) => wormhole_queue::check(c, ctx, &policy).await,
            Check::WormholeGovernorLimit(c) => wormhole_limit::check(c, ctx, &policy).await,
            Check::AxelarTvlAlert(c) => axelar::check(c, ctx, &policy).await,
            Check::EvmCall(c) => evm_call::check(c, ctx, &policy).await,
        }
    };
    let span = tracing::info_span!(
        "signal",
        signal = %spec.name,
        kind = spec.check.kind(),
        upstream = spec.check.upstream()
    );
    let result =
        match tokio::time::timeout(deadline, tracing::Instrument::instrument(fut, span)).await {
            Ok(r) => r,
            Err(_) => Err(SignalError::Deadline {
                upstream: spec.check.upstream(),
                after: deadline,
            }),
        };
    if let Err(e) = &result {
        tracing::warn!(signal = %spec.name, error = %e, "signal unreadable");
    }
    SignalReport::from_result(spec, result, chrono::Utc::now().timestamp())
}

/// Formats a USD amount compactly for messages (`62.0 M USD`).
pub fn usd(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.2} B USD", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.2} M USD", v / 1e6)
    } else if a >= 1e3 {
        format!("{:.1} k USD", v / 1e3)
    } else {
        format!("{v:.2} USD")
    }
}

/// Requires a finite, non-negative number from an upstream.
pub fn non_negative(upstream: &'static str, field: &str, v: f64) -> Result<f64, SignalError> {
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(SignalError::malformed(
            upstream,
            format!("{field} is {v}, expected a non-negative number"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_has_no_score_and_never_ranks_above_known() {
        assert_eq!(Verdict::Unknown.score(), None);
        assert_eq!(Verdict::Healthy.score(), Some(1.0));
        assert!(Verdict::Critical.rank() > Verdict::Degraded.rank());
        assert_eq!(usd(62_000_000.0), "62.00 M USD");
        assert!(non_negative("x", "f", -1.0).is_err());
    }
}

//! One HTTP exchange with a price upstream: bounded body, error classification (JSON or HTML
//! error pages), metrics, retries with backoff and jitter, and `Retry-After` honoured across
//! ticks.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::Retryable;
use bytes::Bytes;
use serde::Deserialize;
use tracing::Instrument;

use super::RequestPolicy;
use keeper_runtime::http::{self, HttpError};
use keeper_runtime::telemetry::Metrics;

/// Why a source's request produced nothing usable. Messages name the upstream, never a URL or key.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// Transport, timeout, HTTP status or oversized body.
    #[error("{err}{suffix}", err = .0, suffix = rate_limit_body(.0))]
    Http(#[from] HttpError),
    /// A success status whose body is not the documented shape.
    #[error("{upstream}: malformed response: {detail}")]
    Malformed {
        /// Which upstream.
        upstream: String,
        /// What did not parse.
        detail: String,
    },
    /// The upstream asked us to wait (`Retry-After`) and that time has not passed yet.
    #[error("{upstream}: rate limited, not calling again for {}s (Retry-After)", remaining.as_secs().max(1))]
    BackingOff {
        /// Which upstream.
        upstream: String,
        /// Time left before the next call is allowed.
        remaining: Duration,
    },
    /// The source's whole fetch ran past its deadline.
    #[error("{upstream}: no answer within the {after:?} deadline")]
    Deadline {
        /// Which upstream.
        upstream: String,
        /// The deadline.
        after: Duration,
    },
}

/// A 429's body description (its `Display` leaves it out), e.g. `: error 429: You've exceeded…`.
fn rate_limit_body(e: &HttpError) -> String {
    match e {
        HttpError::RateLimited { body, .. } if !body.is_empty() => format!(": {body}"),
        _ => String::new(),
    }
}

impl SourceError {
    /// Worth another try within the tick.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Http(e) => e.is_retryable(),
            Self::Malformed { .. } | Self::BackingOff { .. } | Self::Deadline { .. } => false,
        }
    }

    /// The server-requested delay, for 429s.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Http(e) => e.retry_after(),
            _ => None,
        }
    }

    /// A short label for `keeper_source_requests_total{outcome}`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Http(e) => e.outcome(),
            Self::Malformed { .. } => "malformed",
            Self::BackingOff { .. } => "backing_off",
            Self::Deadline { .. } => "deadline",
        }
    }
}

/// "Do not call before" for one upstream, set from a `Retry-After` the retry budget could not
/// wait out, so the next ticks respect it too.
#[derive(Debug, Default, Clone)]
pub struct Gate(Arc<Mutex<Option<Instant>>>);

impl Gate {
    /// Errs while the upstream asked us to wait.
    pub fn check(&self, upstream: &str) -> Result<(), SourceError> {
        let guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match *guard {
            Some(until) if until > Instant::now() => Err(SourceError::BackingOff {
                upstream: upstream.to_owned(),
                remaining: until - Instant::now(),
            }),
            _ => Ok(()),
        }
    }

    /// Time left before calls are allowed again, if blocked.
    pub fn remaining(&self) -> Option<Duration> {
        let guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        guard.filter(|u| *u > now).map(|u| u - now)
    }

    /// Blocks calls for `d` from now (keeps a later existing block).
    pub fn block_for(&self, d: Duration) {
        let until = Instant::now() + d;
        let mut guard = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none_or(|u| u < until) {
            *guard = Some(until);
        }
    }
}

/// The backoff of `policy` (`backon`, exponential with jitter).
pub fn backoff(policy: &RequestPolicy) -> backon::ExponentialBuilder {
    keeper_runtime::retry::backoff(policy.attempts.max(1), policy.min_delay, policy.max_delay)
}

/// Chooses the delay before the next try: the computed backoff, stretched to a `Retry-After`
/// when that fits under the policy's cap. A longer `Retry-After` ends the retries and blocks
/// the gate until then.
pub fn next_delay(
    gate: &Gate,
    policy: &RequestPolicy,
    computed: Option<Duration>,
    retry_after: Option<Duration>,
) -> Option<Duration> {
    if let Some(ra) = retry_after {
        gate.block_for(ra);
        if ra > policy.max_delay {
            return None;
        }
    }
    keeper_runtime::retry::honour_retry_after(computed, retry_after, policy.max_delay)
}

/// Reduces an error body to a message: CoinGecko's `{"status":{"error_code","error_message"}}`,
/// `{"message"}`, `{"error"}` (string or JSON-RPC object), an HTML page, or a snippet.
pub fn describe_error_body(body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct CgStatus {
        error_code: Option<i64>,
        error_message: Option<String>,
    }
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ErrorField {
        Text(String),
        Rpc {
            code: Option<i64>,
            message: Option<String>,
        },
        Other(serde::de::IgnoredAny),
    }
    #[derive(Deserialize)]
    struct Shape {
        status: Option<CgStatus>,
        message: Option<String>,
        error: Option<ErrorField>,
    }
    let short = |s: &str| -> String { s.chars().take(200).collect() };
    if let Ok(shape) = serde_json::from_slice::<Shape>(body) {
        if let Some(CgStatus {
            error_code,
            error_message,
        }) = shape.status
        {
            return format!(
                "error {}: {}",
                error_code.map_or_else(|| "?".to_owned(), |c| c.to_string()),
                short(error_message.as_deref().unwrap_or(""))
            );
        }
        match shape.error {
            Some(ErrorField::Text(t)) => return short(&t),
            Some(ErrorField::Rpc { code, message }) => {
                return format!(
                    "error {}: {}",
                    code.map_or_else(|| "?".to_owned(), |c| c.to_string()),
                    short(message.as_deref().unwrap_or(""))
                );
            }
            _ => {}
        }
        if let Some(m) = shape.message {
            return short(&m);
        }
    }
    http::snippet(body)
}

/// Performs one request/response exchange and returns the status, `Retry-After` and body.
pub async fn exchange(
    upstream: &str,
    request: reqwest::RequestBuilder,
    timeout: Duration,
) -> Result<(u16, Option<Duration>, Bytes), HttpError> {
    let resp = request
        .send()
        .await
        .map_err(|e| http::transport_error(upstream, &e, timeout))?;
    let status = resp.status().as_u16();
    let retry = http::retry_after(resp.headers());
    let body = http::read_limited(upstream, resp, timeout).await?;
    Ok((status, retry, body))
}

/// Turns a non-success status into an [`HttpError`] with a readable body description.
pub fn status_error(
    upstream: &str,
    status: u16,
    retry_after: Option<Duration>,
    body: &[u8],
) -> HttpError {
    if status == 429 {
        HttpError::RateLimited {
            upstream: upstream.to_owned(),
            retry_after,
            body: describe_error_body(body),
        }
    } else {
        HttpError::Status {
            upstream: upstream.to_owned(),
            status,
            body: describe_error_body(body),
        }
    }
}

/// An HTTP upstream answering GETs with JSON: CoinGecko and DefiLlama.
#[derive(Clone)]
pub struct HttpUpstream {
    /// Name used in errors, logs and metrics (`coingecko`, `defillama`).
    pub name: &'static str,
    client: reqwest::Client,
    policy: RequestPolicy,
    metrics: Option<Arc<Metrics>>,
    gate: Gate,
}

impl HttpUpstream {
    /// A client for `name` with the policy's timeout.
    pub fn new(name: &'static str, policy: RequestPolicy, metrics: Option<Arc<Metrics>>) -> Self {
        Self {
            name,
            client: http::client(policy.timeout),
            policy,
            metrics,
            gate: Gate::default(),
        }
    }

    /// The HTTP client, for building requests.
    pub fn client(&self) -> &reqwest::Client {
        &self.client
    }

    /// GETs with retries: `build` makes a fresh request for each try and `parse` reads a 2xx
    /// body; a body that does not parse is an error that is counted and not retried.
    pub async fn get<T, E: std::fmt::Display>(
        &self,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
        parse: impl Fn(&[u8]) -> Result<T, E>,
    ) -> Result<T, SourceError> {
        if let Err(e) = self.gate.check(self.name) {
            if let Some(m) = &self.metrics {
                m.source_requests
                    .get_or_create(&keeper_runtime::telemetry::metrics::labels([
                        ("source", self.name),
                        ("outcome", e.outcome()),
                    ]))
                    .inc();
            }
            return Err(e);
        }
        let once = || async {
            let started = Instant::now();
            let span = tracing::info_span!("upstream_request", source = self.name);
            let result = match exchange(self.name, build(&self.client), self.policy.timeout)
                .instrument(span)
                .await
            {
                Ok((status, _, body)) if (200..300).contains(&status) => {
                    parse(&body).map_err(|detail| SourceError::Malformed {
                        upstream: self.name.to_owned(),
                        detail: detail.to_string(),
                    })
                }
                Ok((status, ra, body)) => Err(SourceError::Http(status_error(
                    self.name, status, ra, &body,
                ))),
                Err(e) => Err(SourceError::Http(e)),
            };
            if let Some(m) = &self.metrics {
                let outcome = result.as_ref().map_or_else(SourceError::outcome, |_| "ok");
                m.record_source_request(self.name, outcome, started.elapsed().as_secs_f64());
            }
            result
        };
        once.retry(backoff(&self.policy))
            .when(SourceError::is_retryable)
            .adjust(|e, computed| next_delay(&self.gate, &self.policy, computed, e.retry_after()))
            .notify(|e, after| {
                tracing::warn!(source = self.name, error = %e, retry_in = ?after, "retrying");
            })
            .await
    }
}

//! One HTTP exchange per attempt, retried with backoff (honouring `Retry-After`), each attempt
//! counted in `keeper_source_requests_total` and `keeper_source_latency_seconds`.

use std::time::{Duration, Instant};

use backon::Retryable;
use keeper_runtime::{http, retry};

use super::{Ctx, SignalError};

/// Timeout and retries of one signal.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// Per-request timeout.
    pub timeout: Duration,
    /// Tries in total.
    pub attempts: u32,
    /// First backoff delay.
    pub min_delay: Duration,
    /// Longest wait a `Retry-After` may impose within a cycle.
    pub retry_after_cap: Duration,
}

impl Policy {
    /// Bound on the whole check: every attempt timing out plus the longest waits in between.
    pub fn deadline(&self) -> Duration {
        let n = self.attempts;
        self.timeout * n + self.retry_after_cap * n.saturating_sub(1) + Duration::from_secs(1)
    }
}

/// Joins a base URL and a path without doubling or losing the slash.
pub fn join(base: &str, path: &str) -> String {
    format!(
        "{}/{}",
        base.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

/// Sends `request()` (rebuilt per attempt), reads the bounded body and parses it, retrying
/// transport errors, timeouts, 429 and 5xx. A parse failure is final: the same body would come
/// back.
pub async fn fetch<T, R, P>(
    ctx: &Ctx<'_>,
    policy: &Policy,
    upstream: &'static str,
    request: R,
    parse: P,
) -> Result<T, SignalError>
where
    R: Fn() -> reqwest::RequestBuilder,
    P: Fn(&[u8]) -> Result<T, SignalError>,
{
    retrying(ctx, policy, upstream, || async {
        match http::send(upstream, request().timeout(policy.timeout), policy.timeout).await {
            Ok(body) => parse(&body),
            Err(e) => Err(SignalError::Http(e)),
        }
    })
    .await
}

/// Runs `attempt` until it succeeds, fails for good or the tries are used up; each attempt is
/// counted with its outcome and latency, and a server's `Retry-After` stretches the backoff.
pub async fn retrying<T, A, F>(
    ctx: &Ctx<'_>,
    policy: &Policy,
    upstream: &'static str,
    attempt: A,
) -> Result<T, SignalError>
where
    A: Fn() -> F,
    F: Future<Output = Result<T, SignalError>>,
{
    let counted = || async {
        let started = Instant::now();
        let result = attempt().await;
        record(ctx, upstream, &result, started);
        result
    };
    let cap = policy.retry_after_cap;
    counted
        .retry(retry::backoff(
            policy.attempts,
            policy.min_delay,
            policy.min_delay * 16,
        ))
        .when(SignalError::is_retryable)
        .adjust(move |e: &SignalError, computed| {
            let ra = match e {
                SignalError::Http(h) => h.retry_after(),
                _ => None,
            };
            retry::honour_retry_after(computed, ra, cap)
        })
        .notify(|e, after| tracing::debug!(%upstream, error = %e, ?after, "retrying"))
        .await
}

/// Counts one attempt with its outcome and latency.
pub fn record<T>(ctx: &Ctx<'_>, upstream: &str, result: &Result<T, SignalError>, started: Instant) {
    if let Some(m) = ctx.metrics {
        let outcome = match result {
            Ok(_) => "ok",
            Err(e) => e.outcome(),
        };
        m.record_source_request(upstream, outcome, started.elapsed().as_secs_f64());
    }
}

/// Parses a JSON body into `T`, reporting an HTML page or a type mismatch as malformed.
pub fn json<T: serde::de::DeserializeOwned>(
    upstream: &'static str,
    body: &[u8],
) -> Result<T, SignalError> {
    serde_json::from_slice(body).map_err(|e| {
        let shown = http::snippet(body);
        if shown == "<html page>" {
            SignalError::malformed(upstream, "an HTML page instead of JSON")
        } else {
            SignalError::malformed(upstream, format!("{e}"))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_keeps_exactly_one_slash() {
        assert_eq!(join("http://a/", "/x/y"), "http://a/x/y");
        assert_eq!(join("http://a", "x"), "http://a/x");
    }

    #[test]
    fn html_is_reported_as_malformed_json() {
        let e = json::<serde_json::Value>("up", b"<!DOCTYPE html><html></html>").unwrap_err();
        assert_eq!(
            e.to_string(),
            "up: malformed response: an HTML page instead of JSON"
        );
        assert!(!e.is_retryable());
    }

    #[test]
    fn deadline_covers_every_attempt() {
        let p = Policy {
            timeout: Duration::from_secs(10),
            attempts: 3,
            min_delay: Duration::from_millis(200),
            retry_after_cap: Duration::from_secs(5),
        };
        assert_eq!(p.deadline(), Duration::from_secs(41));
    }
}

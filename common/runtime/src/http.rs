//! One HTTP client setup and one error type for every upstream (sources, toncenter, alerts).

use std::time::Duration;

use reqwest::header::{HeaderMap, RETRY_AFTER};

/// Largest upstream body read into memory; anything longer is an error, not an allocation.
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// Why an HTTP exchange with an upstream failed. Messages carry the upstream's name and status,
/// never a URL (URLs may carry keys).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Connection refused, DNS, TLS, reset.
    #[error("{upstream}: request failed: {reason}")]
    Transport {
        /// Which upstream.
        upstream: String,
        /// What went wrong, without the URL.
        reason: String,
    },
    /// No answer within the per-request timeout.
    #[error("{upstream}: timed out after {after:?}")]
    Timeout {
        /// Which upstream.
        upstream: String,
        /// The timeout that elapsed.
        after: Duration,
    },
    /// HTTP 429: rate limited.
    #[error("{upstream}: rate limited (HTTP 429){}", retry_after.map(|d| format!(", retry after {}s", d.as_secs())).unwrap_or_default())]
    RateLimited {
        /// Which upstream.
        upstream: String,
        /// The server's `Retry-After`, if any.
        retry_after: Option<Duration>,
        /// Start of the body (JSON or an HTML page).
        body: String,
    },
    /// Any other non-success status.
    #[error("{upstream}: HTTP {status}: {body}")]
    Status {
        /// Which upstream.
        upstream: String,
        /// The HTTP status code.
        status: u16,
        /// Start of the body, with an HTML page reduced to a marker.
        body: String,
    },
    /// The body exceeded [`MAX_BODY_BYTES`].
    #[error("{upstream}: response body larger than {limit} bytes")]
    TooLarge {
        /// Which upstream.
        upstream: String,
        /// The limit that was hit.
        limit: usize,
    },
}

impl HttpError {
    /// Worth retrying: transport errors, timeouts, 429 and 5xx.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Transport { .. } | Self::Timeout { .. } | Self::RateLimited { .. } => true,
            Self::Status { status, .. } => *status >= 500,
            Self::TooLarge { .. } => false,
        }
    }

    /// The server-requested delay, for 429s.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// A short label for metrics: `timeout`, `transport`, `rate_limited`, `http_5xx`, `http_4xx`, `too_large`.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::Transport { .. } => "transport",
            Self::Timeout { .. } => "timeout",
            Self::RateLimited { .. } => "rate_limited",
            Self::Status { status, .. } if *status >= 500 => "http_5xx",
            Self::Status { .. } => "http_4xx",
            Self::TooLarge { .. } => "too_large",
        }
    }
}

/// The shared client for `timeout`: rustls, a user agent, connect and request timeouts. Clients
/// are built once per distinct timeout and shared (cloning one shares its connection pool), so
/// the process holds one TLS root store and one pool per timeout, not one per upstream.
pub fn client(timeout: Duration) -> reqwest::Client {
    static CLIENTS: std::sync::OnceLock<std::sync::Mutex<Vec<(Duration, reqwest::Client)>>> =
        std::sync::OnceLock::new();
    let clients = CLIENTS.get_or_init(Default::default);
    let mut clients = clients.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, c)) = clients.iter().find(|(t, _)| *t == timeout) {
        return c.clone();
    }
    let c = build_client(timeout);
    clients.push((timeout, c.clone()));
    c
}

#[allow(clippy::expect_used)] // the one deliberate panic: no TLS backend is a build defect
fn build_client(timeout: Duration) -> reqwest::Client {
    crate::install_crypto_provider();
    reqwest::Client::builder()
        .user_agent(concat!("tonsurance-keepers/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .timeout(timeout)
        .pool_idle_timeout(Duration::from_secs(30))
        // The APIs we call never redirect, and a followed redirect would carry our key headers
        // (X-API-Key, CoinGecko's) to wherever it points: a 3xx is an error instead.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        // Only fails when no TLS backend can be initialised, which is a build defect.
        .expect("HTTP client with rustls builds")
}

/// Maps a reqwest error to [`HttpError`] without keeping its URL.
pub fn transport_error(upstream: &str, e: &reqwest::Error, timeout: Duration) -> HttpError {
    if e.is_timeout() {
        return HttpError::Timeout {
            upstream: upstream.to_owned(),
            after: timeout,
        };
    }
    let reason = if e.is_connect() {
        "connection failed".to_owned()
    } else if e.is_body() || e.is_decode() {
        "response body interrupted".to_owned()
    } else {
        "transport error".to_owned()
    };
    HttpError::Transport {
        upstream: upstream.to_owned(),
        reason,
    }
}

/// Parses `Retry-After` given in seconds (the form CoinGecko, toncenter and Infura use).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Reduces a body for an error message: at most 200 chars, an HTML page shown as `<html page>`.
pub fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(&body[..body.len().min(512)]);
    let trimmed = text.trim_start();
    if trimmed.starts_with('<') {
        return "<html page>".to_owned();
    }
    trimmed.chars().take(200).collect()
}

/// Sends a request and reads the whole body (bounded), classifying failures.
/// A success status returns the body; 429 and other statuses become [`HttpError`]s.
pub async fn send(
    upstream: &str,
    request: reqwest::RequestBuilder,
    timeout: Duration,
) -> Result<bytes::Bytes, HttpError> {
    let resp = request
        .send()
        .await
        .map_err(|e| transport_error(upstream, &e, timeout))?;
    let status = resp.status();
    let retry = retry_after(resp.headers());
    let body = read_limited(upstream, resp, timeout).await?;
    if status.is_success() {
        return Ok(body);
    }
    if status.as_u16() == 429 {
        return Err(HttpError::RateLimited {
            upstream: upstream.to_owned(),
            retry_after: retry,
            body: snippet(&body),
        });
    }
    Err(HttpError::Status {
        upstream: upstream.to_owned(),
        status: status.as_u16(),
        body: snippet(&body),
    })
}

/// Reads a body chunk by chunk, failing once it exceeds [`MAX_BODY_BYTES`].
pub async fn read_limited(
    upstream: &str,
    mut resp: reqwest::Response,
    timeout: Duration,
) -> Result<bytes::Bytes, HttpError> {
    if resp
        .content_length()
        .is_some_and(|n| n > MAX_BODY_BYTES as u64)
    {
        return Err(HttpError::TooLarge {
            upstream: upstream.to_owned(),
            limit: MAX_BODY_BYTES,
        });
    }
    let mut buf = bytes::BytesMut::new();
    while let Some(chunk) = resp
        .chunk()
        .await
        .map_err(|e| transport_error(upstream, &e, timeout))?
    {
        if buf.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(HttpError::TooLarge {
                upstream: upstream.to_owned(),
                limit: MAX_BODY_BYTES,
            });
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn html_bodies_are_not_echoed() {
        assert_eq!(
            snippet(b"<!DOCTYPE html><html>Cloudflare</html>"),
            "<html page>"
        );
        assert_eq!(snippet(b"{\"status\":1}"), "{\"status\":1}");
    }
}

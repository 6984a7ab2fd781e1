//! A small Ethereum JSON-RPC client for `eth_call`: batching, failover across the configured
//! endpoints in order, error classification (reverts, rate limits, `"0x"`), bounded retries.
//! Chainlink uses it for feeds; the bridge keeper for `allowLock()`-style boolean checks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy_primitives::{Address, Bytes};
use alloy_sol_types::SolType;
use serde::Deserialize;
use serde_json::value::RawValue;
use tracing::Instrument;

use super::RequestPolicy;
use super::config::host_of;
use super::upstream::{Gate, backoff, describe_error_body, exchange, status_error};
use keeper_runtime::http::{self, HttpError};
use keeper_runtime::secret::Secret;
use keeper_runtime::telemetry::Metrics;

/// One `eth_call` against the latest block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EthCall {
    /// The contract.
    pub to: Address,
    /// Selector and arguments.
    pub data: Bytes,
}

impl EthCall {
    /// A call of an argument-less function by its 4-byte selector.
    pub fn selector(to: Address, selector: [u8; 4]) -> Self {
        Self {
            to,
            data: Bytes::copy_from_slice(&selector),
        }
    }
}

/// What kind of failure an [`RpcError`] is; decides retry and failover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcErrorKind {
    /// Connection failed or was cut.
    Transport,
    /// No answer within the per-request timeout.
    Timeout,
    /// Non-success HTTP status that is not a rate limit.
    Http,
    /// HTTP 429 or a rate-limit JSON-RPC code (-32005, -32012, -32016, 429).
    RateLimited,
    /// The call reverted (code 3, or -32000 "execution reverted").
    Revert,
    /// `result: "0x"`: no contract at the address, or an empty revert.
    EmptyResult,
    /// Any other JSON-RPC error object.
    Rpc,
    /// The body or result is not valid JSON-RPC, or the ABI does not decode.
    Malformed,
    /// The endpoint asked us to wait (`Retry-After`) and that time has not passed.
    BackingOff,
}

impl RpcErrorKind {
    /// Worth another round after a backoff (failover to the next endpoint happens regardless).
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            Self::Transport | Self::Timeout | Self::Http | Self::RateLimited | Self::Rpc
        )
    }

    /// A short label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Transport => "transport",
            Self::Timeout => "timeout",
            Self::Http => "http_error",
            Self::RateLimited => "rate_limited",
            Self::Revert => "revert",
            Self::EmptyResult => "empty_result",
            Self::Rpc => "rpc_error",
            Self::Malformed => "malformed",
            Self::BackingOff => "backing_off",
        }
    }
}

/// A failed `eth_call`: which endpoint (by position and host, never the URL), what kind, and
/// the node's code and message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{endpoint}: {}{}: {detail}", kind.as_str(), code.map(|c| format!(" (code {c})")).unwrap_or_default())]
pub struct RpcError {
    /// `eth_rpc#N (host)`.
    pub endpoint: String,
    /// The classification.
    pub kind: RpcErrorKind,
    /// The JSON-RPC error code, when there was one.
    pub code: Option<i64>,
    /// The node's message or what went wrong.
    pub detail: String,
    /// A requested wait: `Retry-After` or Infura's `data.backoff_seconds`.
    pub retry_after: Option<Duration>,
}

impl RpcError {
    fn new(endpoint: &str, kind: RpcErrorKind, detail: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.to_owned(),
            kind,
            code: None,
            detail: detail.into(),
            retry_after: None,
        }
    }

    fn from_http(endpoint: &str, e: &HttpError) -> Self {
        let kind = match e {
            HttpError::Transport { .. } => RpcErrorKind::Transport,
            HttpError::Timeout { .. } => RpcErrorKind::Timeout,
            HttpError::RateLimited { .. } => RpcErrorKind::RateLimited,
            HttpError::Status { .. } => RpcErrorKind::Http,
            HttpError::TooLarge { .. } => RpcErrorKind::Malformed,
        };
        Self {
            retry_after: e.retry_after(),
            ..Self::new(endpoint, kind, e.to_string())
        }
    }
}

/// Classifies a JSON-RPC error object by code and message (reference §3 "Error shapes").
pub fn classify_rpc_error(code: i64, message: &str) -> RpcErrorKind {
    let m = message.to_ascii_lowercase();
    if code == 3 || m.contains("revert") {
        RpcErrorKind::Revert
    } else if matches!(code, -32005 | -32012 | -32016 | 429)
        || m.contains("rate limit")
        || m.contains("rate-limit")
        || m.contains("exceeded")
        || m.contains("capacity")
        || m.contains("credits")
    {
        RpcErrorKind::RateLimited
    } else {
        RpcErrorKind::Rpc
    }
}

#[derive(Deserialize)]
struct ErrorObject {
    code: i64,
    #[serde(default)]
    message: String,
    #[serde(default)]
    data: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
struct Response {
    #[serde(default)]
    id: Option<Box<RawValue>>,
    #[serde(default)]
    result: Option<Box<RawValue>>,
    #[serde(default)]
    error: Option<ErrorObject>,
}

struct Endpoint {
    url: Arc<Secret>,
    name: String,
    gate: Gate,
}

/// An `eth_call` client over one or more JSON-RPC endpoints, tried in order.
pub struct EvmRpc {
    endpoints: Vec<Endpoint>,
    client: reqwest::Client,
    policy: RequestPolicy,
    metrics: Option<Arc<Metrics>>,
    label: &'static str,
}

impl EvmRpc {
    /// A client over `urls` (validated http(s) URLs, possibly with keys in their path).
    /// `label` is the `source` label of its request metrics (`chainlink`, `eth_rpc`…).
    pub fn new(
        urls: &[Arc<Secret>],
        policy: RequestPolicy,
        metrics: Option<Arc<Metrics>>,
        label: &'static str,
    ) -> Self {
        let endpoints = urls
            .iter()
            .enumerate()
            .map(|(i, u)| Endpoint {
                url: u.clone(),
                name: format!("eth_rpc#{} ({})", i + 1, host_of(u.expose())),
                gate: Gate::default(),
            })
            .collect();
        Self {
            endpoints,
            client: http::client(policy.timeout),
            policy,
            metrics,
            label,
        }
    }

    /// One `eth_call`; errors after every endpoint and retry failed.
    pub async fn eth_call(&self, call: &EthCall) -> Result<Bytes, RpcError> {
        self.eth_call_batch(std::slice::from_ref(call))
            .await
            .pop()
            .unwrap_or_else(|| {
                Err(RpcError::new(
                    "eth_rpc",
                    RpcErrorKind::Malformed,
                    "no result",
                ))
            })
    }

    /// Calls an argument-less `bool` function (e.g. `allowLock()`, selector `0x69d38e1c`).
    pub async fn call_bool(&self, to: Address, selector: [u8; 4]) -> Result<bool, RpcError> {
        let out = self.eth_call(&EthCall::selector(to, selector)).await?;
        <alloy_sol_types::sol_data::Bool as SolType>::abi_decode_validate(&out).map_err(|e| {
            RpcError::new(
                "eth_rpc",
                RpcErrorKind::Malformed,
                format!("not an ABI bool: {e}"),
            )
        })
    }

    /// Several `eth_call`s in one JSON-RPC batch per endpoint. Calls that fail on one endpoint
    /// (transport, HTTP, rate limit, revert, `"0x"`) are tried on the next; rounds repeat with
    /// backoff while a failure is transient. Results are in the order of `calls`.
    pub async fn eth_call_batch(&self, calls: &[EthCall]) -> Vec<Result<Bytes, RpcError>> {
        let n = calls.len();
        let mut done: Vec<Option<Bytes>> = vec![None; n];
        let no_endpoint =
            RpcError::new("eth_rpc", RpcErrorKind::Transport, "no endpoint configured");
        let mut last: Vec<RpcError> = vec![no_endpoint; n];
        let mut delays = backon::BackoffBuilder::build(backoff(&self.policy));
        loop {
            for ep in &self.endpoints {
                let pending: Vec<usize> = (0..n).filter(|i| done[*i].is_none()).collect();
                if pending.is_empty() {
                    break;
                }
                if ep.gate.check(&ep.name).is_err() {
                    let e = RpcError::new(
                        &ep.name,
                        RpcErrorKind::BackingOff,
                        "rate limited earlier; waiting out its Retry-After",
                    );
                    for i in &pending {
                        last[*i] = e.clone();
                    }
                    continue;
                }
                match self.post(ep, calls, &pending).await {
                    Err(e) => {
                        if let Some(ra) = e.retry_after {
                            ep.gate.block_for(ra);
                        }
                        tracing::warn!(source = self.label, error = %e, "eth_call batch failed");
                        for i in &pending {
                            last[*i] = e.clone();
                        }
                    }
                    Ok(mut answers) => {
                        for i in pending {
                            match answers.remove(&(i as u64 + 1)) {
                                Some(Ok(b)) => done[i] = Some(b),
                                Some(Err(e)) => last[i] = e,
                                None => {
                                    last[i] = RpcError::new(
                                        &ep.name,
                                        RpcErrorKind::Malformed,
                                        format!("no response with id {} in the batch", i + 1),
                                    );
                                }
                            }
                        }
                    }
                }
            }
            let pending: Vec<usize> = (0..n).filter(|i| done[*i].is_none()).collect();
            if pending.is_empty()
                || !pending.iter().any(|i| {
                    last[*i].kind.is_retryable() || last[*i].kind == RpcErrorKind::BackingOff
                })
            {
                break;
            }
            let Some(mut delay) = delays.next() else {
                break;
            };
            // All endpoints waiting out a Retry-After: wait for the first, if it is soon enough.
            let soonest = self
                .endpoints
                .iter()
                .filter_map(|e| e.gate.remaining())
                .min();
            if self.endpoints.iter().all(|e| e.gate.remaining().is_some()) {
                match soonest {
                    Some(s) if s <= self.policy.max_delay => delay = delay.max(s),
                    _ => break,
                }
            }
            tracing::debug!(source = self.label, retry_in = ?delay, pending = pending.len(), "retrying eth_call batch");
            tokio::time::sleep(delay).await;
        }
        done.into_iter()
            .zip(last)
            .map(|(d, e)| d.ok_or(e))
            .collect()
    }

    /// Sends the `pending` calls to one endpoint; a whole-request failure is `Err`, per-call
    /// results are keyed by call index.
    async fn post(
        &self,
        ep: &Endpoint,
        calls: &[EthCall],
        pending: &[usize],
    ) -> Result<HashMap<u64, Result<Bytes, RpcError>>, RpcError> {
        let requests: Vec<serde_json::Value> = pending
            .iter()
            .map(|i| {
                let c = &calls[*i];
                serde_json::json!({
                    "jsonrpc": "2.0",
                    "id": *i as u64 + 1,
                    "method": "eth_call",
                    "params": [{"to": c.to.to_string(), "data": c.data.to_string()}, "latest"],
                })
            })
            .collect();
        let body = if requests.len() == 1 {
            requests[0].clone()
        } else {
            serde_json::Value::Array(requests)
        };
        let started = Instant::now();
        let span = tracing::info_span!(
            "upstream_request",
            source = self.label,
            endpoint = %ep.name,
            calls = pending.len()
        );
        let result = self.post_once(ep, &body, pending).instrument(span).await;
        if let Some(m) = &self.metrics {
            let outcome = result.as_ref().map_or_else(|e| e.kind.as_str(), |_| "ok");
            m.record_source_request(self.label, outcome, started.elapsed().as_secs_f64());
        }
        result
    }

    async fn post_once(
        &self,
        ep: &Endpoint,
        body: &serde_json::Value,
        pending: &[usize],
    ) -> Result<HashMap<u64, Result<Bytes, RpcError>>, RpcError> {
        let rb = self
            .client
            .post(ep.url.expose())
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .json(body);
        let (status, retry_after, bytes) = exchange(&ep.name, rb, self.policy.timeout)
            .await
            .map_err(|e| RpcError::from_http(&ep.name, &e))?;
        if !(200..300).contains(&status) {
            // Providers put a JSON-RPC error in 429/5xx bodies (Infura -32005 with backoff_seconds).
            if let Some(mut e) = whole_error(&ep.name, &bytes) {
                if status == 429 {
                    e.kind = RpcErrorKind::RateLimited;
                }
                e.retry_after = retry_after.or(e.retry_after);
                e.detail = format!("HTTP {status}: {}", e.detail);
                return Err(e);
            }
            return Err(RpcError::from_http(
                &ep.name,
                &status_error(&ep.name, status, retry_after, &bytes),
            ));
        }
        let text = std::str::from_utf8(&bytes)
            .map_err(|_| RpcError::new(&ep.name, RpcErrorKind::Malformed, "body is not UTF-8"))?
            .trim_start();
        let responses: Vec<Response> = if text.starts_with('[') {
            serde_json::from_str(text)
        } else {
            serde_json::from_str::<Response>(text).map(|r| vec![r])
        }
        .map_err(|e| {
            RpcError::new(
                &ep.name,
                RpcErrorKind::Malformed,
                format!(
                    "not JSON-RPC: {e} (body starts {:?})",
                    describe_error_body(&bytes)
                ),
            )
        })?;
        // One error object without a usable id answers the whole batch (rate limits do this).
        if let [only] = responses.as_slice()
            && let Some(err) = &only.error
        {
            let id = only.id.as_ref().and_then(|r| r.get().parse::<u64>().ok());
            let answers_the_one_call = pending.len() == 1 && id == Some(pending[0] as u64 + 1);
            if !answers_the_one_call {
                return Err(rpc_error(&ep.name, err));
            }
        }
        let mut out = HashMap::with_capacity(responses.len());
        for r in responses {
            let Some(id) = r.id.as_ref().and_then(|raw| raw.get().parse::<u64>().ok()) else {
                continue;
            };
            let answer = match (r.result, r.error) {
                (_, Some(err)) => Err(rpc_error(&ep.name, &err)),
                (Some(res), None) => decode_result(&ep.name, &res),
                (None, None) => Err(RpcError::new(
                    &ep.name,
                    RpcErrorKind::Malformed,
                    "response has neither result nor error",
                )),
            };
            out.insert(id, answer);
        }
        Ok(out)
    }
}

/// A JSON-RPC error object from a non-2xx body, if the body holds one.
fn whole_error(endpoint: &str, body: &[u8]) -> Option<RpcError> {
    let text = std::str::from_utf8(body).ok()?.trim_start();
    let r: Response = if text.starts_with('[') {
        serde_json::from_str::<Vec<Response>>(text)
            .ok()?
            .into_iter()
            .next()?
    } else {
        serde_json::from_str(text).ok()?
    };
    r.error.map(|e| rpc_error(endpoint, &e))
}

fn rpc_error(endpoint: &str, e: &ErrorObject) -> RpcError {
    #[derive(Deserialize)]
    struct InfuraData {
        backoff_seconds: Option<f64>,
    }
    let backoff = e
        .data
        .as_ref()
        .and_then(|d| serde_json::from_str::<InfuraData>(d.get()).ok())
        .and_then(|d| d.backoff_seconds)
        .filter(|s| s.is_finite() && *s >= 0.0 && *s < 86_400.0)
        .map(Duration::from_secs_f64);
    RpcError {
        endpoint: endpoint.to_owned(),
        kind: classify_rpc_error(e.code, &e.message),
        code: Some(e.code),
        detail: e.message.chars().take(200).collect(),
        retry_after: backoff,
    }
}

fn decode_result(endpoint: &str, raw: &RawValue) -> Result<Bytes, RpcError> {
    let text: String = serde_json::from_str(raw.get()).map_err(|_| {
        RpcError::new(
            endpoint,
            RpcErrorKind::Malformed,
            format!(
                "result is not a hex string: {}",
                raw.get().chars().take(64).collect::<String>()
            ),
        )
    })?;
    let hex = text.strip_prefix("0x").ok_or_else(|| {
        RpcError::new(
            endpoint,
            RpcErrorKind::Malformed,
            "result does not start with 0x",
        )
    })?;
    if hex.is_empty() {
        return Err(RpcError::new(
            endpoint,
            RpcErrorKind::EmptyResult,
            "result \"0x\": no contract at the address or an empty revert",
        ));
    }
    hex::decode(hex).map(Bytes::from).map_err(|e| {
        RpcError::new(
            endpoint,
            RpcErrorKind::Malformed,
            format!("result is not hex: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_shapes_are_classified() {
        assert_eq!(
            classify_rpc_error(3, "execution reverted: No data present"),
            RpcErrorKind::Revert
        );
        assert_eq!(
            classify_rpc_error(-32000, "execution reverted"),
            RpcErrorKind::Revert
        );
        assert_eq!(
            classify_rpc_error(-32005, "daily request count exceeded, request rate limited"),
            RpcErrorKind::RateLimited
        );
        assert_eq!(
            classify_rpc_error(
                429,
                "Your app has exceeded its compute units per second capacity"
            ),
            RpcErrorKind::RateLimited
        );
        assert_eq!(
            classify_rpc_error(-32012, "credits limited to 6000/sec"),
            RpcErrorKind::RateLimited
        );
        assert_eq!(
            classify_rpc_error(-32016, "over rate limit"),
            RpcErrorKind::RateLimited
        );
        assert_eq!(
            classify_rpc_error(-32000, "header not found"),
            RpcErrorKind::Rpc
        );
        let e = rpc_error(
            "x",
            &serde_json::from_str(
                r#"{"code":-32005,"message":"m","data":{"current_rps":13.2,"allowed_rps":10.0,"backoff_seconds":30.0}}"#,
            )
            .unwrap(),
        );
        assert_eq!(e.retry_after, Some(Duration::from_secs(30)));
    }

    #[test]
    fn results_decode() {
        let raw = RawValue::from_string("\"0x\"".into()).unwrap();
        assert_eq!(
            decode_result("x", &raw).unwrap_err().kind,
            RpcErrorKind::EmptyResult
        );
        let raw = RawValue::from_string("\"0x0001\"".into()).unwrap();
        assert_eq!(decode_result("x", &raw).unwrap().as_ref(), &[0, 1]);
        let raw = RawValue::from_string("\"0xzz\"".into()).unwrap();
        assert_eq!(
            decode_result("x", &raw).unwrap_err().kind,
            RpcErrorKind::Malformed
        );
        let raw = RawValue::from_string("null".into()).unwrap();
        assert_eq!(
            decode_result("x", &raw).unwrap_err().kind,
            RpcErrorKind::Malformed
        );
    }
}

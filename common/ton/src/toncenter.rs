//! toncenter HTTP API v2: JSON-RPC (`…/api/v2/jsonRPC`) or REST (`…/api/v2/`), `X-API-Key`,
//! retries of 429/5xx with backoff, errors carrying the HTTP status and toncenter's `code`/`error`.

use crate::metrics::ChainMetrics;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use num_bigint::BigInt;
use serde_json::{Value, json};
use tonlib_core::TonAddress;
use tonlib_core::cell::{ArcCell, BagOfCells};

use super::endpoints::{ALERT_AFTER_FAILURES, Api, Freshest, Node, dedupe_labels};
use super::settings::TonSettings;
use super::transport::{
    AccountState, AddressInformation, ChainViews, GetMethodResult, IndexedMessage,
    IndexedTransaction, SentMessage, StackValue, TonTransport, Transaction, TransportError,
    WalletInformation,
};
use keeper_runtime::alert::{Alert, Alerter, Severity};
use keeper_runtime::http;
use keeper_runtime::secret::Secret;
use keeper_runtime::telemetry::metrics::{Metrics, labels};

/// Longest `Retry-After` honoured: a cycle must not stall for minutes on one call.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(10);

/// A toncenter v2 client over one or more interchangeable endpoints. Cheap to clone.
///
/// Reads go to the first endpoint that is up and fail over on transport errors, timeouts, 429
/// and 5xx; an endpoint whose chain time or wallet seqno is behind what another one showed is
/// passed over for that read. A signed message goes to every endpoint that is up. Each
/// endpoint has its own request budget, so steady state stays under its rate limit.
#[derive(Clone)]
pub struct Toncenter {
    client: reqwest::Client,
    nodes: Arc<[Node]>,
    timeout: Duration,
    policy: ExponentialBuilder,
    observer: Option<Observer>,
    freshest: Arc<Mutex<Freshest>>,
    requests: Arc<AtomicU64>,
}

/// Where endpoint health is reported.
#[derive(Clone)]
struct Observer {
    metrics: Arc<Metrics>,
    alerter: Alerter,
}

impl std::fmt::Debug for Toncenter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Toncenter")
            .field("endpoints", &self.endpoint_labels())
            .finish()
    }
}

fn config_error(problem: impl Into<String>) -> TransportError {
    TransportError::Decode {
        method: "configuration",
        problem: problem.into(),
    }
}

/// Alert key prefix of an endpoint that keeps failing: `endpoint_down:{host[:port]}`.
pub const ENDPOINT_DOWN: &str = "endpoint_down";

/// Requests per second a toncenter endpoint allows without an API key, and with one.
pub const DEFAULT_RPS_WITHOUT_KEY: u32 = 1;
/// See [`DEFAULT_RPS_WITHOUT_KEY`].
pub const DEFAULT_RPS_WITH_KEY: u32 = 10;

impl Toncenter {
    /// From `[ton]`: every endpoint of `rpc_urls` (or `rpc_url`) with its key, the request
    /// budget (`max_rps`, default 1 request/s without a key and 10 with one), `request_timeout`.
    pub fn new(settings: &TonSettings) -> Result<Self, TransportError> {
        let endpoints = settings.endpoints().map_err(|e| config_error(e.problem))?;
        let nodes = endpoints
            .into_iter()
            .map(|(url, key): (String, Option<Arc<Secret>>)| {
                let rps = settings.max_rps.unwrap_or(if key.is_some() {
                    DEFAULT_RPS_WITH_KEY
                } else {
                    DEFAULT_RPS_WITHOUT_KEY
                });
                Node::parse(url.as_str(), key, rps).map_err(config_error)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_nodes(nodes, Duration::from_secs(settings.request_timeout))
    }

    /// One endpoint without a request budget: one ending in `jsonRPC` is used for JSON-RPC,
    /// anything else as the REST base (`https://toncenter.com/api/v2/`; a bare host gets
    /// `/api/v2/` appended).
    pub fn with_endpoint(
        url: &str,
        api_key: Option<Arc<Secret>>,
        timeout: Duration,
    ) -> Result<Self, TransportError> {
        Self::with_endpoints(&[(url, api_key)], 0, timeout)
    }

    /// Several endpoints in order of preference, each allowed `max_rps` requests per second
    /// (0: no budget).
    pub fn with_endpoints(
        endpoints: &[(&str, Option<Arc<Secret>>)],
        max_rps: u32,
        timeout: Duration,
    ) -> Result<Self, TransportError> {
        let nodes = endpoints
            .iter()
            .map(|(url, key)| Node::parse(url, key.clone(), max_rps).map_err(config_error))
            .collect::<Result<Vec<_>, _>>()?;
        Self::from_nodes(nodes, timeout)
    }

    fn from_nodes(mut nodes: Vec<Node>, timeout: Duration) -> Result<Self, TransportError> {
        if nodes.is_empty() {
            return Err(config_error("no TON endpoint configured (ton.rpc_urls)"));
        }
        dedupe_labels(&mut nodes);
        Ok(Self {
            client: http::client(timeout),
            nodes: nodes.into(),
            timeout,
            policy: keeper_runtime::retry::upstream(),
            observer: None,
            freshest: Arc::default(),
            requests: Arc::default(),
        })
    }

    /// Replaces the retry policy (tests use short delays).
    pub fn with_retry(mut self, policy: ExponentialBuilder) -> Self {
        self.policy = policy;
        self
    }

    /// Reports `keeper_ton_endpoint_requests_total`, `keeper_ton_endpoint_up`,
    /// `keeper_ton_endpoint_budget_rps` and `endpoint_down:{endpoint}` through `metrics` and
    /// `alerter`.
    pub fn observed(mut self, metrics: Arc<Metrics>, alerter: Alerter) -> Self {
        for n in self.nodes.iter() {
            ChainMetrics::of(&metrics)
                .endpoint_up
                .get_or_create(&labels([("endpoint", n.label.as_str())]))
                .set(1);
            ChainMetrics::of(&metrics)
                .endpoint_budget
                .get_or_create(&labels([("endpoint", n.label.as_str())]))
                .set(n.budget.rps());
        }
        self.observer = Some(Observer { metrics, alerter });
        self
    }

    /// True when the first endpoint talks JSON-RPC rather than REST.
    pub fn is_json_rpc(&self) -> bool {
        self.nodes
            .first()
            .is_some_and(|n| matches!(n.api, Api::JsonRpc(_)))
    }

    /// The endpoints as they appear in metrics and alerts: host and port, never path or key.
    pub fn endpoint_labels(&self) -> Vec<String> {
        self.nodes.iter().map(|n| n.label.clone()).collect()
    }

    /// Requests made (all endpoints) since the last call; the tick's request count.
    pub fn take_request_count(&self) -> u64 {
        self.requests.swap(0, Ordering::Relaxed)
    }

    /// Calls `method` with `params` on the first endpoint that is up, failing over and retrying
    /// transient failures, and returns `result`.
    pub async fn call(
        &self,
        method: &'static str,
        params: Value,
        post: bool,
    ) -> Result<Value, TransportError> {
        self.call_checked(method, params, post, |_: &Value| Ok(()))
            .await
    }

    /// [`Toncenter::call`], passing over an endpoint whose answer `fresh` finds behind another's.
    async fn call_checked(
        &self,
        method: &'static str,
        params: Value,
        post: bool,
        fresh: impl Fn(&Value) -> Result<(), String>,
    ) -> Result<Value, TransportError> {
        (|| self.round(method, &params, post, &fresh))
            .retry(self.policy)
            .sleep(tokio::time::sleep)
            .when(TransportError::is_retryable)
            .adjust(|e: &TransportError, next| {
                keeper_runtime::retry::honour_retry_after(next, e.retry_after(), RETRY_AFTER_CAP)
            })
            .notify(|e: &TransportError, next| {
                tracing::warn!(method, error = %e, retry_in_ms = next.as_millis() as u64, "toncenter call failed, retrying");
            })
            .await
    }

    /// Endpoints that are up in list order, then the others (they may have recovered).
    fn in_order(&self) -> impl Iterator<Item = &Node> {
        let up = self.nodes.iter().filter(|n| n.is_up());
        up.chain(self.nodes.iter().filter(|n| !n.is_up()))
    }

    /// One pass over the endpoints: the first good answer, or the last failure.
    async fn round(
        &self,
        method: &'static str,
        params: &Value,
        post: bool,
        fresh: &impl Fn(&Value) -> Result<(), String>,
    ) -> Result<Value, TransportError> {
        let mut last = None;
        for node in self.in_order() {
            match self.call_node(node, method, params, post).await {
                Ok(v) => match fresh(&v) {
                    Ok(()) => {
                        self.note_success(node);
                        return Ok(v);
                    }
                    Err(problem) => {
                        let e = TransportError::Lagging { method, problem };
                        self.note_failure(node, &e);
                        last = Some(e);
                    }
                },
                Err(e) if e.is_retryable() => {
                    self.note_failure(node, &e);
                    last = Some(e);
                }
                Err(e) => {
                    // A definitive answer (4xx, a refused message): the endpoint works.
                    self.note_success(node);
                    return Err(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| config_error("no TON endpoint configured")))
    }

    /// Sends `params` to every endpoint that is up (all of them when none is) at once: the
    /// first acceptance wins; otherwise a refusal of the message when every endpoint refused it;
    /// otherwise the last failure (an endpoint that failed may have taken the message, so a
    /// refusal by the others is not the last word on it).
    async fn fan_out(&self, method: &'static str, params: Value) -> Result<Value, TransportError> {
        let once = || async {
            let up: Vec<&Node> = self.nodes.iter().filter(|n| n.is_up()).collect();
            let targets = if up.is_empty() {
                self.nodes.iter().collect()
            } else {
                up
            };
            let answers = futures_util::future::join_all(
                targets
                    .iter()
                    .map(|n| self.call_node(n, method, &params, true)),
            )
            .await;
            let mut accepted = None;
            let mut refused = None;
            let mut last = None;
            for (node, answer) in targets.iter().zip(answers) {
                match answer {
                    Ok(v) => {
                        self.note_success(node);
                        accepted.get_or_insert(v);
                    }
                    Err(e) if e.is_retryable() => {
                        self.note_failure(node, &e);
                        last = Some(e);
                    }
                    Err(e) => {
                        self.note_success(node);
                        refused.get_or_insert(e);
                    }
                }
            }
            match (accepted, last, refused) {
                (Some(v), _, _) => Ok(v),
                (None, Some(e), _) => Err(e),
                (None, None, Some(e)) => Err(e),
                (None, None, None) => Err(config_error("no TON endpoint configured")),
            }
        };
        once.retry(self.policy)
            .sleep(tokio::time::sleep)
            .when(TransportError::is_retryable)
            .adjust(|e: &TransportError, next| {
                keeper_runtime::retry::honour_retry_after(next, e.retry_after(), RETRY_AFTER_CAP)
            })
            .notify(|e: &TransportError, next| {
                tracing::warn!(method, error = %e, retry_in_ms = next.as_millis() as u64, "no TON endpoint took the message, retrying");
            })
            .await
    }

    fn count(&self, node: &Node, outcome: &str) {
        if let Some(o) = &self.observer {
            ChainMetrics::of(&o.metrics)
                .endpoint_requests
                .get_or_create(&labels([
                    ("endpoint", node.label.as_str()),
                    ("outcome", outcome),
                ]))
                .inc();
        }
    }

    fn note_success(&self, node: &Node) {
        let was_alerting = node.succeeded();
        self.count(node, "ok");
        if let Some(o) = &self.observer {
            ChainMetrics::of(&o.metrics)
                .endpoint_up
                .get_or_create(&labels([("endpoint", node.label.as_str())]))
                .set(1);
            if was_alerting {
                o.alerter
                    .resolve(&format!("{ENDPOINT_DOWN}:{}", node.label));
            }
        }
    }

    fn note_failure(&self, node: &Node, error: &TransportError) {
        let failures = node.failed(matches!(error, TransportError::Lagging { .. }));
        let outcome = match error {
            TransportError::Lagging { .. } => "lagging",
            e if e.status() == Some(429) => "rate_limited",
            _ => "error",
        };
        self.count(node, outcome);
        if self.nodes.len() > 1 {
            tracing::warn!(endpoint = %node.label, error = %error, "TON endpoint failed; trying the next");
        }
        if let Some(o) = &self.observer {
            ChainMetrics::of(&o.metrics)
                .endpoint_up
                .get_or_create(&labels([("endpoint", node.label.as_str())]))
                .set(0);
            if failures >= ALERT_AFTER_FAILURES {
                o.alerter.fire(
                    Alert::new(
                        format!("{ENDPOINT_DOWN}:{}", node.label),
                        Severity::Warning,
                        format!(
                            "TON endpoint {} failed {failures} requests in a row: {error}",
                            node.label
                        ),
                    )
                    .label("endpoint", node.label.clone()),
                );
            }
        }
    }

    /// One request to `node`, paced by its budget; a 429 lowers that budget.
    async fn call_node(
        &self,
        node: &Node,
        method: &'static str,
        params: &Value,
        post: bool,
    ) -> Result<Value, TransportError> {
        let answer = self.request_node(node, method, params, post).await;
        self.learn_rate(node, answer.as_ref().err());
        answer
    }

    /// Feeds a 429 to the endpoint's budget and reports the budget.
    fn learn_rate(&self, node: &Node, error: Option<&TransportError>) {
        if let Some(e) = error.filter(|e| e.status() == Some(429)) {
            node.budget.rate_limited(e.retry_after());
        }
        if let Some(o) = &self.observer {
            ChainMetrics::of(&o.metrics)
                .endpoint_budget
                .get_or_create(&labels([("endpoint", node.label.as_str())]))
                .set(node.budget.rps());
        }
    }

    async fn request_node(
        &self,
        node: &Node,
        method: &'static str,
        params: &Value,
        post: bool,
    ) -> Result<Value, TransportError> {
        node.pace().await;
        self.requests.fetch_add(1, Ordering::Relaxed);
        let request = match &node.api {
            Api::JsonRpc(url) => self.client.post(url.clone()).json(&json!({
                "id": "1", "jsonrpc": "2.0", "method": method, "params": params,
            })),
            Api::Rest(base) => {
                let url = base.join(method).map_err(|e| config_error(e.to_string()))?;
                if post {
                    self.client.post(url).json(params)
                } else {
                    let query: Vec<(String, String)> = params
                        .as_object()
                        .map(|o| {
                            o.iter()
                                .map(|(k, v)| {
                                    let text = match v {
                                        Value::String(s) => s.clone(),
                                        other => other.to_string(),
                                    };
                                    (k.clone(), text)
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    self.client.get(url).query(&query)
                }
            }
        };
        let request = match &node.api_key {
            Some(k) => request.header("X-API-Key", k.expose()),
            None => request,
        };
        let upstream = "toncenter";
        let resp = request
            .send()
            .await
            .map_err(|e| map_http(method, http::transport_error(upstream, &e, self.timeout)))?;
        let status = resp.status().as_u16();
        let retry_after = http::retry_after(resp.headers());
        let body = http::read_limited(upstream, resp, self.timeout)
            .await
            .map_err(|e| map_http(method, e))?;
        let parsed: Option<Value> = serde_json::from_slice(&body).ok();
        let ok_flag = parsed
            .as_ref()
            .and_then(|v| v.get("ok"))
            .and_then(Value::as_bool);
        if (200..300).contains(&status) && ok_flag != Some(false) {
            let Some(v) = parsed else {
                return Err(TransportError::Decode {
                    method,
                    problem: format!("body is not JSON: {}", http::snippet(&body)),
                });
            };
            if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
                // A JSON-RPC error object with HTTP 200.
                let (code, text) = match err {
                    Value::Object(o) => (
                        o.get("code").and_then(Value::as_i64),
                        o.get("message")
                            .and_then(Value::as_str)
                            .unwrap_or("")
                            .to_owned(),
                    ),
                    other => (v.get("code").and_then(Value::as_i64), value_text(other)),
                };
                return Err(TransportError::Api {
                    method,
                    status,
                    code,
                    error: text,
                    retry_after: None,
                });
            }
            return v
                .get("result")
                .cloned()
                .ok_or_else(|| TransportError::Decode {
                    method,
                    problem: "no `result` field".into(),
                });
        }
        let (code, error) = match &parsed {
            Some(v) => (
                v.get("code").and_then(Value::as_i64),
                v.get("error")
                    .filter(|e| !e.is_null())
                    .or_else(|| v.get("result"))
                    .map(value_text)
                    .unwrap_or_else(|| http::snippet(&body)),
            ),
            None => (None, http::snippet(&body)),
        };
        // `ok: false` with HTTP 200 still counts as the code it names.
        let status = if (200..300).contains(&status) {
            code.and_then(|c| u16::try_from(c).ok()).unwrap_or(500)
        } else {
            status
        };
        Err(TransportError::Api {
            method,
            status,
            code,
            error,
            retry_after,
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every update is a single write, so a poisoned value is still consistent.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.chars().take(300).collect(),
        other => other.to_string().chars().take(300).collect(),
    }
}

fn map_http(method: &'static str, e: http::HttpError) -> TransportError {
    match e {
        http::HttpError::Timeout { after, .. } => TransportError::Timeout { method, after },
        http::HttpError::Transport { reason, .. } => TransportError::Transport { method, reason },
        http::HttpError::TooLarge { limit, .. } => TransportError::Decode {
            method,
            problem: format!("response larger than {limit} bytes"),
        },
        http::HttpError::RateLimited {
            retry_after, body, ..
        } => TransportError::Api {
            method,
            status: 429,
            code: Some(429),
            error: body,
            retry_after,
        },
        http::HttpError::Status { status, body, .. } => TransportError::Api {
            method,
            status,
            code: None,
            error: body,
            retry_after: None,
        },
    }
}

fn decode(method: &'static str, problem: impl Into<String>) -> TransportError {
    TransportError::Decode {
        method,
        problem: problem.into(),
    }
}

/// Reads an integer given as a JSON number or a string (toncenter uses both for balances and lts).
/// A u32 field sent as a number or a decimal string: `None` when absent or null, an error
/// naming the field when it is anything else or out of range.
fn u32_field(v: &Value, key: &str) -> Result<Option<u32>, String> {
    let n = match v.get(key) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(t)) => t.trim().parse::<u64>().ok(),
        Some(_) => None,
    };
    n.and_then(|n| u32::try_from(n).ok())
        .map(Some)
        .ok_or_else(|| format!("{key} is not a u32"))
}

/// An i32 (an exit code) sent as a number or a decimal string; `None` when absent, malformed
/// or out of range.
fn i32_field(v: &Value, key: &str) -> Option<i32> {
    let n = match v.get(key)? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    };
    n.and_then(|n| i32::try_from(n).ok())
}

fn int_field(v: &Value, key: &str) -> Option<u128> {
    match v.get(key)? {
        Value::Number(n) => n.as_u64().map(u128::from),
        Value::String(s) if s.is_empty() => Some(0),
        Value::String(s) => s.parse().ok(),
        _ => None,
    }
}

/// Parses a stack number: decimal, `0x…` or `-0x…` (toncenter returns hex, others decimal).
pub fn parse_stack_number(text: &str) -> Option<BigInt> {
    let t = text.trim();
    let (neg, rest) = match t.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, t),
    };
    let n = if let Some(hex) = rest.strip_prefix("0x").or_else(|| rest.strip_prefix("0X")) {
        if hex.is_empty() {
            return None;
        }
        BigInt::parse_bytes(hex.as_bytes(), 16)?
    } else {
        if rest.is_empty() || !rest.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        BigInt::parse_bytes(rest.as_bytes(), 10)?
    };
    Some(if neg { -n } else { n })
}

fn parse_boc(b64: &str) -> Option<ArcCell> {
    let raw = B64.decode(b64.trim()).ok()?;
    BagOfCells::parse(&raw).ok()?.single_root().ok()
}

/// Parses one stack entry in either of toncenter's shapes: `["num","0x1"]` or a tonlib object
/// (`{"@type":"tvm.stackEntryNumber","number":{"number":"1"}}`).
fn parse_stack_entry(v: &Value) -> Option<StackValue> {
    if let Some(arr) = v.as_array() {
        let kind = arr.first()?.as_str()?;
        let val = arr.get(1);
        return match kind {
            "num" | "int" | "number" => {
                let text = match val? {
                    Value::String(s) => s.clone(),
                    Value::Number(n) => n.to_string(),
                    _ => return None,
                };
                parse_stack_number(&text).map(StackValue::Num)
            }
            "cell" | "tvm.Cell" => cell_of(val?).map(StackValue::Cell),
            "slice" | "tvm.Slice" => cell_of(val?).map(StackValue::Slice),
            "tuple" | "list" | "tvm.Tuple" | "tvm.List" => {
                let elements = val?.get("elements")?.as_array()?;
                elements
                    .iter()
                    .map(parse_stack_entry)
                    .collect::<Option<Vec<_>>>()
                    .map(StackValue::Tuple)
            }
            "null" => Some(StackValue::Null),
            _ => None,
        };
    }
    let obj = v.as_object()?;
    match obj.get("@type")?.as_str()? {
        "tvm.stackEntryNumber" => {
            let n = obj.get("number")?.get("number")?;
            let text = match n {
                Value::String(s) => s.clone(),
                Value::Number(x) => x.to_string(),
                _ => return None,
            };
            parse_stack_number(&text).map(StackValue::Num)
        }
        "tvm.stackEntryCell" => cell_of(obj.get("cell")?).map(StackValue::Cell),
        "tvm.stackEntrySlice" => cell_of(obj.get("slice")?).map(StackValue::Slice),
        "tvm.stackEntryTuple" | "tvm.stackEntryList" => {
            let inner = obj.get("tuple").or_else(|| obj.get("list"))?;
            let elements = inner.get("elements")?.as_array()?;
            elements
                .iter()
                .map(parse_stack_entry)
                .collect::<Option<Vec<_>>>()
                .map(StackValue::Tuple)
        }
        "tvm.stackEntryNull" => Some(StackValue::Null),
        _ => None,
    }
}

fn cell_of(v: &Value) -> Option<ArcCell> {
    match v {
        Value::String(s) => parse_boc(s),
        Value::Object(o) => o.get("bytes").and_then(Value::as_str).and_then(parse_boc),
        _ => None,
    }
}

/// `last_transaction_id.lt` of a result; 0 when absent or out of range.
fn last_transaction_lt(v: &Value) -> u64 {
    v.get("last_transaction_id")
        .and_then(|id| int_field(id, "lt"))
        .and_then(|lt| u64::try_from(lt).ok())
        .unwrap_or(0)
}

/// Parses a `runGetMethod` result object.
pub fn parse_run_result(
    method: &'static str,
    v: &Value,
) -> Result<GetMethodResult, TransportError> {
    let exit_code =
        i32_field(v, "exit_code").ok_or_else(|| decode(method, "no exit_code in range"))?;
    let stack = match v.get("stack") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, e)| {
                parse_stack_entry(e).ok_or_else(|| {
                    decode(
                        method,
                        format!("stack entry #{i} not understood: {}", value_text(e)),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(decode(
                method,
                format!("stack is not a list: {}", value_text(other)),
            ));
        }
    };
    Ok(GetMethodResult {
        exit_code,
        stack,
        last_transaction_lt: last_transaction_lt(v),
    })
}

impl Toncenter {
    /// `GET …/api/v3/transactionsByMessage` on the first endpoint that is up, has a `/api/v2`
    /// path to derive it from and has not lately answered that it has no index.
    async fn v3_by_message(
        &self,
        msg_hash_hex: &str,
    ) -> Result<Option<Vec<IndexedTransaction>>, TransportError> {
        let Some((node, url)) = self
            .in_order()
            .filter(|n| n.has_index())
            .find_map(|n| v3_url(n).map(|u| (n, u)))
        else {
            return Ok(None);
        };
        let answer = self.v3_request(node, url, msg_hash_hex).await;
        self.learn_rate(node, answer.as_ref().err());
        answer
    }

    async fn v3_request(
        &self,
        node: &Node,
        url: url::Url,
        msg_hash_hex: &str,
    ) -> Result<Option<Vec<IndexedTransaction>>, TransportError> {
        const M: &str = "transactionsByMessage";
        node.pace().await;
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut request = self.client.get(url).query(&[
            ("msg_hash", msg_hash_hex),
            ("direction", "in"),
            ("limit", "10"),
        ]);
        if let Some(k) = &node.api_key {
            request = request.header("X-API-Key", k.expose());
        }
        let resp = request
            .send()
            .await
            .map_err(|e| map_http(M, http::transport_error("toncenter", &e, self.timeout)))?;
        let status = resp.status().as_u16();
        let retry_after = http::retry_after(resp.headers());
        if status == 404 {
            node.lacks_index();
            return Ok(None);
        }
        let body = http::read_limited("toncenter", resp, self.timeout)
            .await
            .map_err(|e| map_http(M, e))?;
        if !(200..300).contains(&status) {
            return Err(TransportError::Api {
                method: M,
                status,
                code: None,
                error: http::snippet(&body),
                retry_after,
            });
        }
        let v: Value = serde_json::from_slice(&body)
            .map_err(|_| decode(M, format!("body is not JSON: {}", http::snippet(&body))))?;
        parse_transactions_by_message(&v).map(Some)
    }
}

/// The v3 URL next to a v2 endpoint (`…/api/v2/…` → `…/api/v3/transactionsByMessage`).
fn v3_url(node: &Node) -> Option<url::Url> {
    let url = match &node.api {
        Api::JsonRpc(u) | Api::Rest(u) => u,
    };
    let path = url.path();
    let at = path.find("/api/v2")?;
    let mut v3 = url.clone();
    v3.set_path(&format!("{}/api/v3/transactionsByMessage", &path[..at]));
    Some(v3)
}

fn lt_field(m: &Value) -> u64 {
    int_field(m, "created_lt")
        .and_then(|lt| u64::try_from(lt).ok())
        .unwrap_or(0)
}

/// A v2 `raw.message` as an [`IndexedMessage`].
fn v2_message(m: &Value) -> IndexedMessage {
    IndexedMessage {
        hash: m["hash"].as_str().unwrap_or("").to_owned(),
        destination: m["destination"].as_str().unwrap_or("").to_owned(),
        value_nanoton: int_field(m, "value").unwrap_or(0),
        fwd_fee_nanoton: int_field(m, "fwd_fee").unwrap_or(0),
        created_lt: lt_field(m),
    }
}

fn indexed(t: &Value) -> IndexedTransaction {
    let compute = &t["description"]["compute_ph"];
    IndexedTransaction {
        account: t["account"].as_str().unwrap_or("").to_owned(),
        hash: t["hash"].as_str().unwrap_or("").to_owned(),
        exit_code: i32_field(compute, "exit_code"),
        total_fees_nanoton: int_field(t, "total_fees").unwrap_or(0),
        in_value_nanoton: t.get("in_msg").and_then(|m| int_field(m, "value")),
        out_msgs: t["out_msgs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|m| {
                        Some(IndexedMessage {
                            hash: m["hash"].as_str()?.to_owned(),
                            destination: m["destination"].as_str().unwrap_or("").to_owned(),
                            value_nanoton: int_field(m, "value").unwrap_or(0),
                            fwd_fee_nanoton: int_field(m, "fwd_fee").unwrap_or(0),
                            created_lt: lt_field(m),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}

impl TonTransport for Toncenter {
    async fn transactions_by_message(
        &self,
        msg_hash_hex: &str,
    ) -> Result<Option<Vec<IndexedTransaction>>, TransportError> {
        self.v3_by_message(msg_hash_hex).await
    }

    async fn wallet_information(
        &self,
        address: &TonAddress,
    ) -> Result<WalletInformation, TransportError> {
        const M: &str = "getWalletInformation";
        let key = address.to_hex();
        // Parsed exactly as the answer is below: a seqno sent as a string is checked too, and
        // one out of range is never stored as the maximum (the answer fails to decode instead).
        let fresh = |v: &Value| match u32_field(v, "seqno") {
            Ok(Some(seqno)) => lock(&self.freshest).seqno(&key, seqno),
            _ => Ok(()),
        };
        let v = self
            .call_checked(M, json!({ "address": address.to_hex() }), false, fresh)
            .await?;
        parse_wallet_information(&v)
    }

    async fn address_information(
        &self,
        address: &TonAddress,
    ) -> Result<AddressInformation, TransportError> {
        const M: &str = "getAddressInformation";
        let fresh = |v: &Value| match int_field(v, "sync_utime").and_then(|t| u64::try_from(t).ok())
        {
            Some(t) => lock(&self.freshest).chain_time(t),
            None => Ok(()),
        };
        let v = self
            .call_checked(M, json!({ "address": address.to_hex() }), false, fresh)
            .await?;
        parse_address_information(&v)
    }

    async fn address_views(&self, address: &TonAddress) -> ChainViews {
        const M: &str = "getAddressInformation";
        let params = json!({ "address": address.to_hex() });
        // No lag check: each answer counts as that endpoint's own word, and only what enough of
        // them agree on is believed. One passed over for being behind is asked too (the bar it
        // missed may be one endpoint running ahead); one that is down is not.
        let asked: Vec<&Node> = match self
            .nodes
            .iter()
            .filter(|n| n.has_a_say())
            .collect::<Vec<_>>()
        {
            some if !some.is_empty() => some,
            _ => self.nodes.iter().collect(),
        };
        let answers = futures_util::future::join_all(asked.iter().map(|n| async {
            match self.call_node(n, M, &params, false).await {
                // The budget has just learned the endpoint's pace: one more try in it, or a
                // shared keyless endpoint would leave the tick without its wallet read.
                Err(e) if e.status() == Some(429) => self.call_node(n, M, &params, false).await,
                answer => answer,
            }
        }))
        .await;
        let mut answered = Vec::with_capacity(answers.len());
        for (node, answer) in asked.iter().zip(answers) {
            match answer.and_then(|v| parse_address_information(&v)) {
                Ok(info) => {
                    self.note_success(node);
                    answered.push(info);
                }
                Err(e) => {
                    tracing::debug!(endpoint = %node.label, error = %e, "no chain view from this endpoint");
                    if e.is_retryable() {
                        self.note_failure(node, &e);
                    }
                }
            }
        }
        ChainViews {
            asked: asked.len(),
            answered,
        }
    }

    async fn run_get_method(
        &self,
        address: &TonAddress,
        method: &str,
        args: &[i64],
    ) -> Result<GetMethodResult, TransportError> {
        const M: &str = "runGetMethod";
        let stack: Vec<Value> = args.iter().map(|a| json!(["num", a.to_string()])).collect();
        let v = self
            .call(
                M,
                json!({ "address": address.to_hex(), "method": method, "stack": stack }),
                true,
            )
            .await?;
        parse_run_result(M, &v)
    }

    async fn send_boc(&self, boc: &[u8]) -> Result<SentMessage, TransportError> {
        const M: &str = "sendBocReturnHash";
        let v = self.fan_out(M, json!({ "boc": B64.encode(boc) })).await?;
        let hash = v
            .get("hash")
            .and_then(Value::as_str)
            .ok_or_else(|| decode(M, "no hash"))?
            .to_owned();
        let hash_norm = v
            .get("hash_norm")
            .and_then(Value::as_str)
            .map(str::to_owned);
        Ok(SentMessage { hash, hash_norm })
    }

    async fn transactions(
        &self,
        address: &TonAddress,
        limit: u32,
    ) -> Result<Vec<Transaction>, TransportError> {
        const M: &str = "getTransactions";
        let v = self
            .call(M, json!({ "address": address.to_hex(), "limit": limit.clamp(1, 100), "archival": false }), false)
            .await?;
        parse_transactions(&v)
    }
}

/// Parses a `getAddressInformation` result.
pub fn parse_address_information(v: &Value) -> Result<AddressInformation, TransportError> {
    const M: &str = "getAddressInformation";
    let state_text = v
        .get("state")
        .and_then(Value::as_str)
        .unwrap_or("uninitialized");
    let state = AccountState::parse(state_text)
        .ok_or_else(|| decode(M, format!("unknown state {state_text:?}")))?;
    let balance_nanoton =
        int_field(v, "balance").ok_or_else(|| decode(M, "balance missing or not a number"))?;
    let data = match v.get("data").and_then(Value::as_str) {
        Some(s) if !s.is_empty() => {
            Some(parse_boc(s).ok_or_else(|| decode(M, "data is not a base64 BoC"))?)
        }
        _ => None,
    };
    let sync_utime = int_field(v, "sync_utime")
        .and_then(|t| u64::try_from(t).ok())
        .ok_or_else(|| decode(M, "sync_utime missing or out of range"))?;
    Ok(AddressInformation {
        state,
        balance_nanoton,
        data,
        sync_utime,
    })
}

/// Parses a `getWalletInformation` result.
pub fn parse_wallet_information(v: &Value) -> Result<WalletInformation, TransportError> {
    const M: &str = "getWalletInformation";
    let state_text = v
        .get("account_state")
        .and_then(Value::as_str)
        .unwrap_or("uninitialized");
    let state = AccountState::parse(state_text)
        .ok_or_else(|| decode(M, format!("unknown account_state {state_text:?}")))?;
    let balance_nanoton =
        int_field(v, "balance").ok_or_else(|| decode(M, "balance missing or not a number"))?;
    let seqno = u32_field(v, "seqno").map_err(|problem| decode(M, problem))?;
    let last_transaction_lt = last_transaction_lt(v);
    Ok(WalletInformation {
        state,
        balance_nanoton,
        seqno,
        wallet_type: v
            .get("wallet_type")
            .and_then(Value::as_str)
            .map(str::to_owned),
        last_transaction_lt,
    })
}

/// Parses a `getTransactions` result.
pub fn parse_transactions(v: &Value) -> Result<Vec<Transaction>, TransportError> {
    const M: &str = "getTransactions";
    let items = v
        .as_array()
        .ok_or_else(|| decode(M, "result is not a list"))?;
    let mut out = Vec::with_capacity(items.len());
    for t in items {
        let id = t
            .get("transaction_id")
            .ok_or_else(|| decode(M, "transaction without transaction_id"))?;
        let in_msg = t.get("in_msg").filter(|m| !m.is_null());
        out.push(Transaction {
            utime: int_field(t, "utime")
                .and_then(|u| u64::try_from(u).ok())
                .unwrap_or(0),
            lt: int_field(id, "lt")
                .and_then(|u| u64::try_from(u).ok())
                .ok_or_else(|| decode(M, "transaction lt missing"))?,
            hash: id
                .get("hash")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            in_msg_body_hash: in_msg
                .and_then(|m| m.get("body_hash"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            in_msg_hash: in_msg
                .and_then(|m| m.get("hash"))
                .and_then(Value::as_str)
                .map(str::to_owned),
            out_msgs: t
                .get("out_msgs")
                .and_then(Value::as_array)
                .map_or(0, Vec::len),
            fee_nanoton: int_field(t, "fee").unwrap_or(0),
            exit_code: t
                .get("data")
                .and_then(Value::as_str)
                .filter(|d| !d.is_empty())
                .and_then(|d| B64.decode(d).ok())
                .and_then(|boc| super::txboc::compute_exit_code(&boc)),
            in_msg_source: in_msg
                .and_then(|m| m.get("source"))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned),
            in_msg_created_lt: in_msg.map(lt_field).filter(|lt| *lt > 0),
            out_messages: t
                .get("out_msgs")
                .and_then(Value::as_array)
                .map(|a| a.iter().map(v2_message).collect())
                .unwrap_or_default(),
        });
    }
    Ok(out)
}

/// Parses a v3 `transactionsByMessage` body.
pub fn parse_transactions_by_message(v: &Value) -> Result<Vec<IndexedTransaction>, TransportError> {
    const M: &str = "transactionsByMessage";
    let items = v
        .get("transactions")
        .and_then(Value::as_array)
        .ok_or_else(|| decode(M, "no transactions list"))?;
    Ok(items.iter().map(indexed).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Field names the parsers read, so hostile documents reach into them.
    const KEYS: &[&str] = &[
        "account_state",
        "state",
        "balance",
        "seqno",
        "wallet_type",
        "last_transaction_id",
        "lt",
        "hash",
        "data",
        "sync_utime",
        "transaction_id",
        "utime",
        "in_msg",
        "out_msgs",
        "body_hash",
        "fee",
        "source",
        "created_lt",
        "destination",
        "value",
        "fwd_fee",
        "transactions",
        "account",
        "description",
        "compute_ph",
        "exit_code",
        "total_fees",
        "stack",
        "number",
        "@type",
        "elements",
        "bytes",
        "cell",
    ];

    /// Texts that look like numbers, or nearly.
    fn hostile_text() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("NaN".to_owned()),
            Just("-inf".to_owned()),
            Just("1e309".to_owned()),
            Just("-1".to_owned()),
            Just("0x".to_owned()),
            Just("0xffffffffffffffffffffffffffffffffffffffff".to_owned()),
            Just(u128::MAX.to_string()),
            Just(format!("{}0", u128::MAX)),
            Just(String::new()),
            Just("active".to_owned()),
            "[0-9]{1,60}",
            "-?[0-9a-fx.eE+-]{0,24}",
            "[A-Za-z0-9+/=]{0,64}",
            prop::collection::vec(any::<char>(), 0..40).prop_map(|c| c.into_iter().collect()),
            (1usize..200_000).prop_map(|n| "9".repeat(n)),
        ]
    }

    fn hostile_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            any::<f64>()
                .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
            hostile_text().prop_map(Value::String),
        ];
        leaf.prop_recursive(6, 64, 8, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::vec((prop::sample::select(KEYS), inner), 0..8).prop_map(
                    |fields| Value::Object(
                        fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
                    )
                ),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn hostile_documents_are_parsed_or_refused_never_a_panic(doc in hostile_json()) {
            // Each parser gets the document as it is and in the shape it expects around it.
            let list = Value::Array(vec![doc.clone()]);
            let v3 = json!({ "transactions": [doc.clone()] });
            for d in [&doc, &list] {
                check(parse_address_information(d));
                check(parse_wallet_information(d));
                check(parse_transactions(d));
                check(parse_transactions_by_message(d));
                check(parse_run_result("runGetMethod", d));
            }
            check(parse_transactions_by_message(&v3));
        }
    }

    /// Ok, or a typed decode error naming the method.
    fn check<T>(result: Result<T, TransportError>) {
        if let Err(e) = result {
            assert!(matches!(e, TransportError::Decode { .. }), "{e:?}");
        }
    }

    #[test]
    fn exit_codes_are_read_as_numbers_or_strings_and_range_checked() {
        let run = |code: Value| parse_run_result("runGetMethod", &json!({"exit_code": code}));
        assert_eq!(run(json!(-14)).unwrap().exit_code, -14);
        assert_eq!(run(json!("-14")).unwrap().exit_code, -14);
        assert!(run(json!(4_294_967_296i64)).is_err());
        assert!(run(json!("NaN")).is_err());
        let v3 = json!({"transactions": [{"description": {"compute_ph": {"exit_code": "33"}}}]});
        assert_eq!(
            parse_transactions_by_message(&v3).unwrap()[0].exit_code,
            Some(33)
        );
    }

    #[test]
    fn numbers_out_of_range_are_refused_with_the_field_named() {
        let base = json!({"state": "active", "balance": "1", "sync_utime": 5});
        assert!(parse_address_information(&base).is_ok());
        for (key, value) in [
            ("sync_utime", json!(-1)),
            ("sync_utime", json!("18446744073709551616")),
            ("sync_utime", json!(1.5)),
            ("sync_utime", json!("NaN")),
            ("balance", json!("-5")),
            ("balance", json!(format!("{}0", u128::MAX))),
        ] {
            let mut doc = base.clone();
            doc[key] = value;
            let e = parse_address_information(&doc).unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
        let wallet = json!({"account_state": "active", "balance": u64::MAX, "seqno": "4294967295"});
        let w = parse_wallet_information(&wallet).unwrap();
        assert_eq!(
            (w.seqno, w.balance_nanoton),
            (Some(u32::MAX), u128::from(u64::MAX))
        );
        let tx = json!([{"transaction_id": {"lt": "18446744073709551616"}}]);
        assert!(
            parse_transactions(&tx)
                .unwrap_err()
                .to_string()
                .contains("lt")
        );
    }

    #[test]
    fn a_seqno_is_read_as_a_number_or_a_string_and_range_checked() {
        assert_eq!(u32_field(&json!({"seqno": 7}), "seqno"), Ok(Some(7)));
        assert_eq!(u32_field(&json!({"seqno": "7"}), "seqno"), Ok(Some(7)));
        assert_eq!(u32_field(&json!({"seqno": null}), "seqno"), Ok(None));
        assert_eq!(u32_field(&json!({}), "seqno"), Ok(None));
        for hostile in [
            json!({"seqno": 4_294_967_296u64}),
            json!({"seqno": "4294967296"}),
            json!({"seqno": -1}),
            json!({"seqno": 1.5}),
            json!({"seqno": "0x10"}),
            json!({"seqno": [1]}),
        ] {
            let e = u32_field(&hostile, "seqno").unwrap_err();
            assert!(e.contains("seqno"), "{e}");
        }
    }

    #[test]
    fn stack_numbers_in_every_notation() {
        assert_eq!(parse_stack_number("123"), Some(BigInt::from(123)));
        assert_eq!(parse_stack_number("0x7b"), Some(BigInt::from(123)));
        assert_eq!(parse_stack_number("-0x7b"), Some(BigInt::from(-123)));
        assert_eq!(parse_stack_number("-5"), Some(BigInt::from(-5)));
        assert_eq!(parse_stack_number("0x"), None);
        assert_eq!(parse_stack_number("12a"), None);
        assert_eq!(parse_stack_number(""), None);
        let big = parse_stack_number("0xffffffffffffffffffffffffffffffffff").unwrap();
        assert!(u128::try_from(&big).is_err());
    }

    #[test]
    fn run_results_in_both_shapes() {
        let v = json!({"exit_code": 0, "stack": [["num", "0xf4240"], ["num", "-0x1"],
            {"@type": "tvm.stackEntryNumber", "number": {"number": "42"}},
            ["tuple", {"elements": [{"@type": "tvm.stackEntryNumber", "number": {"number": "7"}}]}]]});
        let r = parse_run_result("runGetMethod", &v).unwrap();
        assert!(r.succeeded());
        assert_eq!(r.stack[0].as_u64(), Some(1_000_000));
        assert_eq!(r.stack[1].as_i64(), Some(-1));
        assert_eq!(r.stack[1].as_u64(), None);
        assert_eq!(r.stack[2].as_u64(), Some(42));
        assert_eq!(
            r.stack[3],
            StackValue::Tuple(vec![StackValue::Num(BigInt::from(7))])
        );
        let bad = json!({"exit_code": 0, "stack": [["num", "zz"]]});
        assert!(
            parse_run_result("runGetMethod", &bad)
                .unwrap_err()
                .to_string()
                .contains("#0")
        );
    }

    #[test]
    fn endpoints_are_recognised() {
        let t = Duration::from_secs(1);
        assert!(
            Toncenter::with_endpoint("https://toncenter.com/api/v2/jsonRPC", None, t)
                .unwrap()
                .is_json_rpc()
        );
        assert!(
            !Toncenter::with_endpoint("https://toncenter.com/api/v2/", None, t)
                .unwrap()
                .is_json_rpc()
        );
        assert!(
            !Toncenter::with_endpoint("https://toncenter.com/api/v2", None, t)
                .unwrap()
                .is_json_rpc()
        );
        let e = Toncenter::with_endpoint("ftp://x?api_key=hunter2", None, t).unwrap_err();
        assert!(!e.to_string().contains("hunter2"));
    }

    #[test]
    fn rejected_messages_are_not_retried() {
        let rejected = TransportError::Api {
            method: "sendBocReturnHash",
            status: 500,
            code: Some(500),
            error: "LITE_SERVER_UNKNOWN: cannot apply external message to current state".into(),
            retry_after: None,
        };
        assert!(rejected.is_message_rejected());
        assert!(!rejected.is_retryable());
        let busy = TransportError::Api {
            method: "x",
            status: 503,
            code: None,
            error: "busy".into(),
            retry_after: None,
        };
        assert!(busy.is_retryable());
        let bad_key = TransportError::Api {
            method: "x",
            status: 401,
            code: Some(401),
            error: "API key does not exist".into(),
            retry_after: None,
        };
        assert!(!bad_key.is_retryable());
    }
}

//! toncenter HTTP API v2: JSON-RPC (`…/api/v2/jsonRPC`) or REST (`…/api/v2/`), `X-API-Key`,
//! retries of 429/5xx with backoff, errors carrying the HTTP status and toncenter's `code`/`error`.

use std::sync::Arc;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use num_bigint::BigInt;
use serde_json::{Value, json};
use tonlib_core::TonAddress;
use tonlib_core::cell::{ArcCell, BagOfCells};

use super::settings::TonSettings;
use super::transport::{
    AccountState, AddressInformation, GetMethodResult, SentMessage, StackValue, TonTransport,
    Transaction, TransportError, WalletInformation,
};
use crate::http;
use crate::secret::Secret;

/// Longest `Retry-After` honoured: a cycle must not stall for minutes on one call.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(10);

#[derive(Debug, Clone)]
enum Endpoint {
    /// POST `{"jsonrpc","id","method","params"}` to this URL.
    JsonRpc(url::Url),
    /// `GET|POST {base}{method}`.
    Rest(url::Url),
}

/// A toncenter v2 client. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Toncenter {
    client: reqwest::Client,
    endpoint: Endpoint,
    api_key: Option<Arc<Secret>>,
    timeout: Duration,
    policy: ExponentialBuilder,
}

fn config_error(problem: impl Into<String>) -> TransportError {
    TransportError::Decode {
        method: "configuration",
        problem: problem.into(),
    }
}

impl Toncenter {
    /// From `[ton]`: `rpc_url` (JSON-RPC URL or REST base), `api_key`, `request_timeout`.
    pub fn new(settings: &TonSettings) -> Result<Self, TransportError> {
        Self::with_endpoint(
            &settings.rpc_url,
            settings.api_key.clone().filter(|k| !k.is_empty()),
            Duration::from_secs(settings.request_timeout),
        )
    }

    /// From an endpoint URL: one ending in `jsonRPC` is used for JSON-RPC, anything else as the
    /// REST base (`https://toncenter.com/api/v2/`; a bare host gets `/api/v2/` appended).
    pub fn with_endpoint(
        url: &str,
        api_key: Option<Arc<Secret>>,
        timeout: Duration,
    ) -> Result<Self, TransportError> {
        // The URL may carry `?api_key=`; never echo it.
        let mut parsed = url::Url::parse(url.trim())
            .map_err(|e| config_error(format!("ton.rpc_url is not a URL ({e})")))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(config_error("ton.rpc_url must be http(s)"));
        }
        let path = parsed.path().to_owned();
        let endpoint = if path
            .trim_end_matches('/')
            .to_ascii_lowercase()
            .ends_with("/jsonrpc")
        {
            Endpoint::JsonRpc(parsed)
        } else {
            if path == "/" || path.is_empty() {
                parsed.set_path("/api/v2/");
            } else if !path.ends_with('/') {
                parsed.set_path(&format!("{path}/"));
            }
            Endpoint::Rest(parsed)
        };
        Ok(Self {
            client: http::client(timeout),
            endpoint,
            api_key,
            timeout,
            policy: crate::retry::upstream(),
        })
    }

    /// Replaces the retry policy (tests use short delays).
    pub fn with_retry(mut self, policy: ExponentialBuilder) -> Self {
        self.policy = policy;
        self
    }

    /// True when talking JSON-RPC rather than REST.
    pub fn is_json_rpc(&self) -> bool {
        matches!(self.endpoint, Endpoint::JsonRpc(_))
    }

    /// Calls `method` with `params`, retrying transient failures, and returns `result`.
    pub async fn call(
        &self,
        method: &'static str,
        params: Value,
        post: bool,
    ) -> Result<Value, TransportError> {
        (|| self.call_once(method, &params, post))
            .retry(self.policy)
            .sleep(tokio::time::sleep)
            .when(TransportError::is_retryable)
            .adjust(|e: &TransportError, next| {
                crate::retry::honour_retry_after(next, e.retry_after(), RETRY_AFTER_CAP)
            })
            .notify(|e: &TransportError, next| {
                tracing::warn!(method, error = %e, retry_in_ms = next.as_millis() as u64, "toncenter call failed, retrying");
            })
            .await
    }

    async fn call_once(
        &self,
        method: &'static str,
        params: &Value,
        post: bool,
    ) -> Result<Value, TransportError> {
        let request = match &self.endpoint {
            Endpoint::JsonRpc(url) => self.client.post(url.clone()).json(&json!({
                "id": "1", "jsonrpc": "2.0", "method": method, "params": params,
            })),
            Endpoint::Rest(base) => {
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
        let request = match &self.api_key {
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

/// Parses a `runGetMethod` result object.
pub fn parse_run_result(
    method: &'static str,
    v: &Value,
) -> Result<GetMethodResult, TransportError> {
    let exit_code = v
        .get("exit_code")
        .and_then(Value::as_i64)
        .and_then(|c| i32::try_from(c).ok())
        .ok_or_else(|| decode(method, "no exit_code"))?;
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
    Ok(GetMethodResult { exit_code, stack })
}

impl TonTransport for Toncenter {
    async fn wallet_information(
        &self,
        address: &TonAddress,
    ) -> Result<WalletInformation, TransportError> {
        const M: &str = "getWalletInformation";
        let v = self
            .call(M, json!({ "address": address.to_hex() }), false)
            .await?;
        let state_text = v
            .get("account_state")
            .and_then(Value::as_str)
            .unwrap_or("uninitialized");
        let state = AccountState::parse(state_text)
            .ok_or_else(|| decode(M, format!("unknown account_state {state_text:?}")))?;
        let balance_nanoton =
            int_field(&v, "balance").ok_or_else(|| decode(M, "balance missing or not a number"))?;
        let seqno = match v.get("seqno") {
            None | Some(Value::Null) => None,
            Some(s) => Some(
                s.as_u64()
                    .or_else(|| s.as_str().and_then(|t| t.parse().ok()))
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or_else(|| decode(M, "seqno is not a u32"))?,
            ),
        };
        let last_transaction_lt = v
            .get("last_transaction_id")
            .and_then(|t| int_field(t, "lt"))
            .and_then(|lt| u64::try_from(lt).ok())
            .unwrap_or(0);
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

    async fn address_information(
        &self,
        address: &TonAddress,
    ) -> Result<AddressInformation, TransportError> {
        const M: &str = "getAddressInformation";
        let v = self
            .call(M, json!({ "address": address.to_hex() }), false)
            .await?;
        let state_text = v
            .get("state")
            .and_then(Value::as_str)
            .unwrap_or("uninitialized");
        let state = AccountState::parse(state_text)
            .ok_or_else(|| decode(M, format!("unknown state {state_text:?}")))?;
        let balance_nanoton =
            int_field(&v, "balance").ok_or_else(|| decode(M, "balance missing or not a number"))?;
        let data = match v.get("data").and_then(Value::as_str) {
            Some(s) if !s.is_empty() => {
                Some(parse_boc(s).ok_or_else(|| decode(M, "data is not a base64 BoC"))?)
            }
            _ => None,
        };
        let sync_utime = int_field(&v, "sync_utime")
            .and_then(|t| u64::try_from(t).ok())
            .ok_or_else(|| decode(M, "sync_utime missing"))?;
        Ok(AddressInformation {
            state,
            balance_nanoton,
            data,
            sync_utime,
        })
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
        let v = self
            .call(M, json!({ "boc": B64.encode(boc) }), true)
            .await?;
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
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

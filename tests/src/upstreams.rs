//! Local stand-ins for the price upstreams, each a real HTTP server on `127.0.0.1:0` answering
//! in the documented formats (as the providers' API documentation describes them):
//!
//! - CoinGecko: `GET {base}/simple/price` and `GET {base}/simple/token_price/{platform}`, with
//!   optional key checking (`x-cg-demo-api-key` / `x-cg-pro-api-key`, errors 10002/10010/10011);
//! - DefiLlama coins: `GET /prices/current/{keys}?searchWidth=…` (coins older than the width
//!   are left out, as the real API does);
//! - Ethereum JSON-RPC (several endpoints, for failover): `eth_call`, single and batch, serving
//!   Chainlink `latestRoundData()`/`decimals()` per feed and any scripted call (e.g. a bool
//!   `allowLock()`);
//! - Pyth Hermes: `GET /v2/updates/price/latest?ids[]=…&parsed=true` with its documented
//!   plain-text errors (unknown ids → 404 `Price ids not found: …` unless
//!   `ignore_invalid_price_ids=true`, malformed hex → 400, 401 without the required
//!   `Authorization: Bearer` key).
//!
//! [`UpstreamsHandle::start`] serves the default assets at 1.0 USD from every source with
//! fresh timestamps. Tests then change what they need: prices (as raw JSON text, so hostile
//! values go out verbatim), timestamps, Chainlink rounds, per-call JSON-RPC answers, latency,
//! and how each endpoint answers ([`Mode`]: rate limits in JSON or Cloudflare HTML with
//! `Retry-After`, 5xx, garbage, fixtures, 10 MB bodies, bodies that never end, dropped
//! connections), either steadily or for the next N requests.
//!
//! ```no_run
//! # async fn demo() {
//! use keeper_tests::upstreams::{Mode, Source, UpstreamsHandle};
//! let up = UpstreamsHandle::start().await;
//! up.set_price(Source::Coingecko, "USDT", "0.95");
//! up.set_price(Source::Chainlink, "USDC", "0.9991");
//! up.push_mode(Source::Defillama, Mode::rate_limited_html(Some(1)), 1);
//! let settings = up.sources_settings(); // or up.env() for a keeper process
//! # }
//! ```

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use keeper_runtime::secret::Secret;
pub use keeper_sources::Source;
use keeper_sources::{AssetConfig, SourcesSettings};
use serde_json::{Value, json};

/// `latestRoundData()` selector.
pub const LATEST_ROUND_DATA: &str = "0xfeaf968c";
/// `decimals()` selector.
pub const DECIMALS: &str = "0x313ce567";
/// `allowLock()` selector (TON Bridge).
pub const ALLOW_LOCK: &str = "0x69d38e1c";
/// The reference's example round id: phase 6, aggregator round 2623 (above 2^64).
pub const REFERENCE_ROUND_ID: u128 = (6u128 << 64) | 2623;

/// The body CoinGecko sends with a JSON 429 (reference §1).
pub const COINGECKO_429_BODY: &str = r#"{"status":{"error_code":429,"error_message":"You've exceeded the Rate Limit. Please visit https://www.coingecko.com/en/api/pricing to subscribe to our API plans for higher rate limits."}}"#;
/// Infura's rate-limit error (reference §3, shape 4).
pub const INFURA_429_BODY: &str = r#"{"jsonrpc":"2.0","id":1,"error":{"code":-32005,"message":"daily request count exceeded, request rate limited","data":{"current_rps":13.2,"allowed_rps":10.0,"backoff_seconds":30.0}}}"#;
/// A Cloudflare rate-limit page, as CoinGecko sometimes serves instead of JSON.
pub const CLOUDFLARE_429_HTML: &str = "<!DOCTYPE html>\n<html lang=\"en-US\"><head><title>Just a moment...</title></head><body><h1>Error 1015</h1><p>You are being rate limited</p><p>Cloudflare Ray ID: 8f1c2a3b4d5e6f70</p></body></html>\n";

/// Reads `tests/fixtures/<name>`.
pub fn fixture(name: &str) -> String {
    let path = format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("fixture {path}: {e}"))
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// One upstream server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    /// The CoinGecko stand-in.
    Coingecko,
    /// The DefiLlama coins stand-in.
    Defillama,
    /// The n-th Ethereum JSON-RPC endpoint (0-based), in `ETH_RPC_URL` order.
    Eth(usize),
    /// The Pyth Hermes stand-in.
    Pyth,
}

/// How an endpoint answers a request.
#[derive(Debug, Clone)]
pub enum Mode {
    /// The documented success answer built from the current state.
    Normal,
    /// HTTP 429 with the upstream's JSON error (CoinGecko status 429, Infura -32005,
    /// DefiLlama `{"message"}`) or a Cloudflare HTML page, and `Retry-After` when given.
    RateLimited {
        /// `Retry-After` seconds.
        retry_after: Option<u64>,
        /// Cloudflare HTML instead of JSON.
        html: bool,
    },
    /// Any status, content type and body.
    Respond {
        /// HTTP status.
        status: u16,
        /// `Content-Type`.
        content_type: String,
        /// Body.
        body: String,
        /// `Retry-After` seconds.
        retry_after: Option<u64>,
    },
    /// A body of this many bytes (10 MB is the hostile case); `chunked` omits Content-Length.
    Huge {
        /// Size in bytes.
        bytes: usize,
        /// Stream it without a length.
        chunked: bool,
    },
    /// `200` with a body that starts like JSON and never ends.
    NeverEnding,
    /// JSON-RPC only: every call answers this error object (HTTP 200).
    RpcError {
        /// Error code (3, -32000, -32005…).
        code: i64,
        /// Message.
        message: String,
        /// Optional `data`.
        data: Option<Value>,
    },
    /// JSON-RPC only: every call answers `"result":"0x"`.
    EmptyResult,
}

impl Mode {
    /// JSON 429 with `Retry-After`.
    pub fn rate_limited(retry_after: Option<u64>) -> Self {
        Self::RateLimited {
            retry_after,
            html: false,
        }
    }

    /// Cloudflare HTML 429 with `Retry-After`.
    pub fn rate_limited_html(retry_after: Option<u64>) -> Self {
        Self::RateLimited {
            retry_after,
            html: true,
        }
    }

    /// A 5xx with a short text body.
    pub fn server_error(status: u16) -> Self {
        Self::Respond {
            status,
            content_type: "text/plain".into(),
            body: "upstream failure".into(),
            retry_after: None,
        }
    }

    /// `200` with this body as JSON content type (garbage, hostile documents).
    pub fn body(body: impl Into<String>) -> Self {
        Self::Respond {
            status: 200,
            content_type: "application/json".into(),
            body: body.into(),
            retry_after: None,
        }
    }

    /// A fixture from `tests/fixtures/` served verbatim with `status` (HTML fixtures as HTML).
    pub fn fixture(status: u16, name: &str) -> Self {
        let content_type = if name.ends_with(".html") {
            "text/html; charset=UTF-8"
        } else {
            "application/json"
        };
        Self::Respond {
            status,
            content_type: content_type.into(),
            body: fixture(name),
            retry_after: None,
        }
    }

    /// Adds `Retry-After` to a `Respond` mode.
    pub fn with_retry_after(self, secs: u64) -> Self {
        match self {
            Self::Respond {
                status,
                content_type,
                body,
                ..
            } => Self::Respond {
                status,
                content_type,
                body,
                retry_after: Some(secs),
            },
            Self::RateLimited { html, .. } => Self::RateLimited {
                retry_after: Some(secs),
                html,
            },
            other => other,
        }
    }

    /// A JSON-RPC error for every call.
    pub fn rpc_error(code: i64, message: &str) -> Self {
        Self::RpcError {
            code,
            message: message.into(),
            data: None,
        }
    }
}

/// A source timestamp as served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ts {
    /// A few seconds before each answer.
    Fresh,
    /// This many seconds before each answer.
    Age(u64),
    /// A fixed unix time.
    At(i64),
    /// Raw JSON text, for hostile timestamps (`null`, `"soon"`).
    Raw(String),
}

impl Ts {
    fn json(&self) -> String {
        match self {
            Self::Fresh => (now() - 5).to_string(),
            Self::Age(a) => (now() - *a as i64).to_string(),
            Self::At(t) => t.to_string(),
            Self::Raw(r) => r.clone(),
        }
    }

    fn unix(&self) -> Option<i64> {
        match self {
            Self::Fresh => Some(now() - 5),
            Self::Age(a) => Some(now() - *a as i64),
            Self::At(t) => Some(*t),
            Self::Raw(r) => r.parse().ok(),
        }
    }
}

/// A Pyth feed as Hermes serves it; `price` and `conf` are raw JSON text (normally strings of
/// integers at `expo`), so hostile values go out verbatim.
#[derive(Debug, Clone)]
struct PythEntry {
    price: String,
    conf: String,
    expo: i32,
    ts: Ts,
}

impl PythEntry {
    fn new(price: &str) -> Self {
        Self {
            price: format!("\"{}\"", scaled(price, 8)),
            // 0.05% of 1 USD: well inside the default 1% bound.
            conf: "\"50000\"".into(),
            expo: -8,
            ts: Ts::Fresh,
        }
    }
}

#[derive(Debug, Clone)]
struct Entry {
    price: String,
    ts: Ts,
    confidence: String,
}

impl Entry {
    fn new(price: &str) -> Self {
        Self {
            price: price.to_owned(),
            ts: Ts::Fresh,
            confidence: "0.99".into(),
        }
    }
}

/// A Chainlink round as `latestRoundData()` returns it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Round {
    /// uint80 round id.
    pub round_id: u128,
    /// int256 answer (scaled by the feed's decimals).
    pub answer: i128,
    /// startedAt; `None`: same as updatedAt.
    pub started_at: Option<u64>,
    /// updatedAt; `None`: 30 s before each answer.
    pub updated_at: Option<u64>,
    /// uint80 answeredInRound.
    pub answered_in_round: u128,
}

#[derive(Debug, Clone)]
struct Feed {
    round: Round,
    decimals: u8,
}

/// A scripted JSON-RPC answer to one `eth_call`.
#[derive(Debug, Clone)]
pub enum RpcAnswer {
    /// `"result"`, hex with `0x` (`"0x"` for the empty result).
    Result(String),
    /// An error object.
    Error {
        /// Code.
        code: i64,
        /// Message.
        message: String,
        /// Optional data.
        data: Option<Value>,
    },
}

impl RpcAnswer {
    /// An ABI-encoded bool.
    pub fn bool(v: bool) -> Self {
        Self::Result(format!("0x{:064x}", u8::from(v)))
    }

    /// Geth's revert: code 3 with data (reference §3, shape 1).
    pub fn revert() -> Self {
        Self::Error {
            code: 3,
            message: "execution reverted: No data present".into(),
            data: Some(json!("0x08c379a0")),
        }
    }
}

/// One request as an endpoint received it.
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    /// `GET`, `POST`.
    pub method: String,
    /// Path without query.
    pub path: String,
    /// Raw query string.
    pub query: Option<String>,
    /// Headers, names lower-case.
    pub headers: Vec<(String, String)>,
    /// Body text.
    pub body: String,
}

impl UpstreamRequest {
    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// A decoded query parameter.
    pub fn param(&self, name: &str) -> Option<String> {
        url::form_urlencoded::parse(self.query.as_deref()?.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }
}

#[derive(Debug, Default)]
struct EndpointState {
    mode: Option<Mode>,
    queue: VecDeque<Mode>,
    latency: Duration,
    requests: Vec<UpstreamRequest>,
}

#[derive(Debug)]
struct Shared {
    assets: Vec<AssetConfig>,
    coingecko: HashMap<String, Option<Entry>>,
    token_prices: HashMap<(String, String), Entry>,
    defillama: HashMap<String, (String, Option<Entry>)>,
    pyth: HashMap<String, Option<PythEntry>>,
    pyth_key: Option<String>,
    feeds: HashMap<String, Feed>,
    calls: HashMap<(String, String), RpcAnswer>,
    coingecko_key: Option<(String, String)>,
    endpoints: HashMap<Endpoint, EndpointState>,
}

fn lock(m: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Hermes ids: lower-case hex without `0x`.
fn pyth_norm(id: &str) -> String {
    id.trim_start_matches("0x").to_ascii_lowercase()
}

/// DefiLlama matches EVM addresses ignoring case; TON and coingecko keys exactly.
fn llama_norm(key: &str) -> String {
    match key.split_once(':') {
        Some((chain, addr)) if addr.starts_with("0x") && addr.len() == 42 => {
            format!("{chain}:{}", addr.to_ascii_lowercase())
        }
        _ => key.to_owned(),
    }
}

struct Inner {
    shared: Arc<Mutex<Shared>>,
    down: HashMap<Endpoint, Arc<AtomicBool>>,
    addrs: HashMap<Endpoint, SocketAddr>,
    eth_count: usize,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The running stand-ins; the servers stop when the last clone is dropped.
#[derive(Clone)]
pub struct UpstreamsHandle {
    inner: Arc<Inner>,
}

/// A listener that drops new connections while its endpoint is "down".
struct Switchable {
    inner: tokio::net::TcpListener,
    down: Arc<AtomicBool>,
}

impl axum::serve::Listener for Switchable {
    type Io = tokio::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.inner.accept().await {
                Ok((sock, addr)) => {
                    if self.down.load(Ordering::SeqCst) {
                        drop(sock);
                        continue;
                    }
                    return (sock, addr);
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(5)).await,
            }
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.local_addr()
    }
}

#[derive(Clone)]
struct Ctx {
    shared: Arc<Mutex<Shared>>,
    endpoint: Endpoint,
}

impl UpstreamsHandle {
    /// Starts the stand-ins for the default assets with two Ethereum endpoints.
    pub async fn start() -> Self {
        Self::start_with(&crate::default_assets(), 2).await
    }

    /// Starts the stand-ins for `assets` with `eth_endpoints` JSON-RPC servers (at least 1).
    pub async fn start_with(assets: &[AssetConfig], eth_endpoints: usize) -> Self {
        let mut shared = Shared {
            assets: assets.to_vec(),
            coingecko: HashMap::new(),
            token_prices: HashMap::new(),
            defillama: HashMap::new(),
            pyth: HashMap::new(),
            pyth_key: None,
            feeds: HashMap::new(),
            calls: HashMap::new(),
            coingecko_key: None,
            endpoints: HashMap::new(),
        };
        for a in assets {
            if let Some(id) = &a.coingecko_id {
                shared.coingecko.insert(id.clone(), Some(Entry::new("1.0")));
            }
            if let Some(k) = &a.defillama_key {
                shared
                    .defillama
                    .insert(llama_norm(k), (k.clone(), Some(Entry::new("1.0"))));
            }
            if let Some(id) = &a.pyth_id {
                shared
                    .pyth
                    .insert(pyth_norm(id), Some(PythEntry::new("1.0")));
            }
            if a.chainlink.is_some() {
                shared.feeds.insert(
                    a.symbol.clone(),
                    Feed {
                        round: Round {
                            round_id: REFERENCE_ROUND_ID,
                            answer: 100_000_000,
                            started_at: None,
                            updated_at: None,
                            answered_in_round: REFERENCE_ROUND_ID,
                        },
                        decimals: 8,
                    },
                );
            }
        }
        let eth_count = eth_endpoints.max(1);
        let mut endpoints = vec![Endpoint::Coingecko, Endpoint::Defillama, Endpoint::Pyth];
        endpoints.extend((0..eth_count).map(Endpoint::Eth));
        for e in &endpoints {
            shared.endpoints.insert(*e, EndpointState::default());
        }
        let shared = Arc::new(Mutex::new(shared));
        let mut down = HashMap::new();
        let mut addrs = HashMap::new();
        let mut tasks = Vec::new();
        for e in endpoints {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind 127.0.0.1:0");
            let flag = Arc::new(AtomicBool::new(false));
            addrs.insert(e, listener.local_addr().expect("local addr"));
            down.insert(e, flag.clone());
            let app = axum::Router::new().fallback(handle).with_state(Ctx {
                shared: shared.clone(),
                endpoint: e,
            });
            let listener = Switchable {
                inner: listener,
                down: flag,
            };
            tasks.push(tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            }));
        }
        Self {
            inner: Arc::new(Inner {
                shared,
                down,
                addrs,
                eth_count,
                tasks,
            }),
        }
    }

    fn shared(&self) -> MutexGuard<'_, Shared> {
        lock(&self.inner.shared)
    }

    fn endpoints_of(&self, source: Source) -> Vec<Endpoint> {
        match source {
            Source::Coingecko => vec![Endpoint::Coingecko],
            Source::Defillama => vec![Endpoint::Defillama],
            Source::Chainlink => (0..self.inner.eth_count).map(Endpoint::Eth).collect(),
            Source::Pyth => vec![Endpoint::Pyth],
        }
    }

    fn base(&self, e: Endpoint) -> String {
        format!("http://{}", self.inner.addrs[&e])
    }

    /// CoinGecko base URL (`…/api/v3`), for `COINGECKO_BASE_URL`.
    pub fn coingecko_url(&self) -> String {
        format!("{}/api/v3", self.base(Endpoint::Coingecko))
    }

    /// DefiLlama coins base URL, for `DEFILLAMA_COINS_URL`.
    pub fn defillama_url(&self) -> String {
        self.base(Endpoint::Defillama)
    }

    /// Hermes base URL, for `PYTH_HERMES_URL`.
    pub fn pyth_url(&self) -> String {
        self.base(Endpoint::Pyth)
    }

    /// The JSON-RPC URLs in order, for `ETH_RPC_URL` (comma-joined).
    pub fn eth_rpc_urls(&self) -> Vec<String> {
        (0..self.inner.eth_count)
            .map(|i| format!("{}/", self.base(Endpoint::Eth(i))))
            .collect()
    }

    /// Environment for a keeper process pointed at the stand-ins.
    pub fn env(&self) -> Vec<(String, String)> {
        vec![
            ("ETH_RPC_URL".into(), self.eth_rpc_urls().join(",")),
            ("COINGECKO_BASE_URL".into(), self.coingecko_url()),
            ("DEFILLAMA_COINS_URL".into(), self.defillama_url()),
            ("PYTH_HERMES_URL".into(), self.pyth_url()),
        ]
    }

    /// `[sources]` pointed at the stand-ins: 2 s timeout, 1 retry after 20 ms, 1 s cap.
    pub fn sources_settings(&self) -> SourcesSettings {
        SourcesSettings {
            eth_rpc_urls: self
                .eth_rpc_urls()
                .into_iter()
                .map(|u| Arc::new(Secret::new(u)))
                .collect(),
            coingecko_base_url: Some(self.coingecko_url()),
            defillama_coins_url: Arc::new(Secret::new(self.defillama_url())),
            pyth_hermes_url: self.pyth_url(),
            request_timeout: 2,
            retries: 1,
            retry_delay_ms: 20,
            retry_max_delay: 1,
            deadline: 10,
            ..SourcesSettings::default()
        }
    }

    fn asset(&self, symbol: &str) -> AssetConfig {
        self.shared()
            .assets
            .iter()
            .find(|a| a.symbol == symbol)
            .cloned()
            .unwrap_or_else(|| panic!("stand-ins know no asset {symbol}"))
    }

    /// Sets an asset's price at a source. For CoinGecko and DefiLlama `value` is JSON text sent
    /// verbatim (`0.9998`, `"NaN"`, `null`, `1e308`, `{"a":1}`); for Chainlink it is a decimal
    /// that becomes the answer at the feed's decimals, in a new complete round, updated now.
    pub fn set_price(&self, source: Source, asset: &str, value: &str) {
        let a = self.asset(asset);
        let mut s = self.shared();
        match source {
            Source::Coingecko => {
                let id = a.coingecko_id.expect("asset has a CoinGecko id");
                let e = s.coingecko.entry(id).or_insert(None);
                match e {
                    Some(entry) => entry.price = value.to_owned(),
                    None => *e = Some(Entry::new(value)),
                }
            }
            Source::Defillama => {
                let key = a.defillama_key.expect("asset has a DefiLlama key");
                let e = s
                    .defillama
                    .entry(llama_norm(&key))
                    .or_insert((key.clone(), None));
                match &mut e.1 {
                    Some(entry) => entry.price = value.to_owned(),
                    None => e.1 = Some(Entry::new(value)),
                }
            }
            Source::Pyth => {
                let id = pyth_norm(&a.pyth_id.expect("asset has a Pyth feed id"));
                let e = s.pyth.entry(id).or_insert(None);
                let fresh = PythEntry::new(value);
                match e {
                    Some(entry) => entry.price = fresh.price,
                    None => *e = Some(fresh),
                }
            }
            Source::Chainlink => {
                let feed = s.feeds.get_mut(asset).expect("asset has a Chainlink feed");
                feed.round.answer = scaled(value, feed.decimals);
                feed.round.round_id += 1;
                feed.round.answered_in_round = feed.round.round_id;
                feed.round.updated_at = None;
                feed.round.started_at = None;
            }
        }
    }

    /// Sets a price at every source (Chainlink only where the asset has a feed).
    pub fn set_price_everywhere(&self, asset: &str, value: &str) {
        let a = self.asset(asset);
        for s in a.sources() {
            self.set_price(s, asset, value);
        }
    }

    /// Every source of `asset` reports observations `ts` old (Chainlink: fixed at the time of
    /// this call, as its `updatedAt` is).
    pub fn set_timestamp_everywhere(&self, asset: &str, ts: Ts) {
        let a = self.asset(asset);
        for s in a.sources() {
            self.set_timestamp(s, asset, ts.clone());
        }
    }

    /// Sets the timestamp a source reports for an asset (Chainlink: `updatedAt`, `Ts::Raw`
    /// not supported there).
    pub fn set_timestamp(&self, source: Source, asset: &str, ts: Ts) {
        let a = self.asset(asset);
        let mut s = self.shared();
        match source {
            Source::Coingecko => {
                let id = a.coingecko_id.expect("asset has a CoinGecko id");
                if let Some(Some(e)) = s.coingecko.get_mut(&id) {
                    e.ts = ts;
                }
            }
            Source::Defillama => {
                let key = a.defillama_key.expect("asset has a DefiLlama key");
                if let Some((_, Some(e))) = s.defillama.get_mut(&llama_norm(&key)) {
                    e.ts = ts;
                }
            }
            Source::Pyth => {
                let id = pyth_norm(&a.pyth_id.expect("asset has a Pyth feed id"));
                if let Some(Some(e)) = s.pyth.get_mut(&id) {
                    e.ts = ts;
                }
            }
            Source::Chainlink => {
                let feed = s.feeds.get_mut(asset).expect("asset has a Chainlink feed");
                feed.round.updated_at = ts.unix().map(|t| t.max(0) as u64);
            }
        }
    }

    /// Leaves an asset out of a source's answers (CoinGecko unknown id, DefiLlama coin older
    /// than `searchWidth`); Chainlink: the proxy answers `"0x"` as a non-contract would.
    pub fn remove(&self, source: Source, asset: &str) {
        let a = self.asset(asset);
        match source {
            Source::Coingecko => {
                let id = a.coingecko_id.expect("asset has a CoinGecko id");
                self.shared().coingecko.insert(id, None);
            }
            Source::Defillama => {
                let key = a.defillama_key.expect("asset has a DefiLlama key");
                self.shared()
                    .defillama
                    .insert(llama_norm(&key), (key.clone(), None));
            }
            Source::Pyth => {
                let id = a.pyth_id.expect("asset has a Pyth feed id");
                self.shared().pyth.insert(pyth_norm(&id), None);
            }
            Source::Chainlink => {
                self.set_chainlink_call(asset, LATEST_ROUND_DATA, RpcAnswer::Result("0x".into()));
            }
        }
    }

    /// Sets a Pyth feed's raw `price` and `conf` JSON text and `expo` (hostile values:
    /// `"abc"`, `1.5`, `"-5"`, an exponent of 99).
    pub fn set_pyth_raw(&self, asset: &str, price: &str, conf: &str, expo: i32) {
        let id = pyth_norm(&self.asset(asset).pyth_id.expect("asset has a Pyth feed id"));
        let mut s = self.shared();
        let e = s
            .pyth
            .entry(id)
            .or_insert_with(|| Some(PythEntry::new("1.0")))
            .get_or_insert_with(|| PythEntry::new("1.0"));
        e.price = price.to_owned();
        e.conf = conf.to_owned();
        e.expo = expo;
    }

    /// Sets a Pyth feed's confidence interval, in USD (`0.02` is 2% of a 1 USD price).
    pub fn set_pyth_conf(&self, asset: &str, conf: &str) {
        let id = pyth_norm(&self.asset(asset).pyth_id.expect("asset has a Pyth feed id"));
        if let Some(Some(e)) = self.shared().pyth.get_mut(&id) {
            e.conf = format!("\"{}\"", scaled(conf, 8));
            e.expo = -8;
        }
    }

    /// Requires `Authorization: Bearer <key>` at Hermes (401 otherwise).
    pub fn require_pyth_key(&self, key: &str) {
        self.shared().pyth_key = Some(key.to_owned());
    }

    /// Sets DefiLlama's `confidence` for an asset (raw JSON text).
    pub fn set_confidence(&self, asset: &str, raw: &str) {
        let key = self
            .asset(asset)
            .defillama_key
            .expect("asset has a DefiLlama key");
        if let Some((_, Some(e))) = self.shared().defillama.get_mut(&llama_norm(&key)) {
            e.confidence = raw.to_owned();
        }
    }

    /// Serves any DefiLlama coin key (e.g. `ton:EQ…` for peg checks): raw JSON price and time.
    pub fn set_defillama_coin(&self, key: &str, price: &str, ts: Ts) {
        let entry = Entry {
            ts,
            ..Entry::new(price)
        };
        self.shared()
            .defillama
            .insert(llama_norm(key), (key.to_owned(), Some(entry)));
    }

    /// Serves a CoinGecko `/simple/token_price/{platform}` entry (EVM addresses lower-cased
    /// in answers, others verbatim).
    pub fn set_token_price(&self, platform: &str, address: &str, price: &str, ts: Ts) {
        let entry = Entry {
            ts,
            ..Entry::new(price)
        };
        self.shared()
            .token_prices
            .insert((platform.to_owned(), address.to_owned()), entry);
    }

    /// Replaces a Chainlink feed's whole round (hostile rounds: negative answers, zero or
    /// future `updatedAt`, `answeredInRound < roundId`, ids beyond 2^64).
    pub fn set_round(&self, asset: &str, round: Round) {
        self.shared()
            .feeds
            .get_mut(asset)
            .expect("asset has a Chainlink feed")
            .round = round;
    }

    /// The current round of a feed.
    pub fn round(&self, asset: &str) -> Round {
        self.shared().feeds[asset].round
    }

    /// Sets what a feed's `decimals()` returns.
    pub fn set_decimals(&self, asset: &str, decimals: u8) {
        self.shared()
            .feeds
            .get_mut(asset)
            .expect("asset has a Chainlink feed")
            .decimals = decimals;
    }

    /// The proxy address configured for an asset's feed.
    pub fn chainlink_proxy(&self, asset: &str) -> String {
        self.asset(asset)
            .chainlink
            .expect("asset has a Chainlink feed")
            .proxy
    }

    /// Scripts the answer to one function (`selector`, `0x…`) of an asset's feed on every
    /// endpoint: a revert, `"0x"`, garbage hex…
    pub fn set_chainlink_call(&self, asset: &str, selector: &str, answer: RpcAnswer) {
        let proxy = self.chainlink_proxy(asset);
        self.set_eth_call(&proxy, selector, answer);
    }

    /// Scripts the answer to `eth_call` of `data` (`0x…`, usually a selector) on `to`.
    pub fn set_eth_call(&self, to: &str, data: &str, answer: RpcAnswer) {
        self.shared()
            .calls
            .insert((to.to_ascii_lowercase(), data.to_ascii_lowercase()), answer);
    }

    /// Scripts a bool-returning function (e.g. `allowLock()` on the TON Bridge).
    pub fn set_eth_bool(&self, to: &str, selector: &str, value: bool) {
        self.set_eth_call(to, selector, RpcAnswer::bool(value));
    }

    /// Drops a scripted `eth_call` answer.
    pub fn clear_eth_call(&self, to: &str, data: &str) {
        self.shared()
            .calls
            .remove(&(to.to_ascii_lowercase(), data.to_ascii_lowercase()));
    }

    /// Requires a CoinGecko key in `header` (`x-cg-demo-api-key` or `x-cg-pro-api-key`):
    /// missing → 401 error 10002, the other tier's header → 400 error 10010/10011.
    pub fn require_coingecko_key(&self, header: &str, key: &str) {
        self.shared().coingecko_key = Some((header.to_ascii_lowercase(), key.to_owned()));
    }

    /// How every endpoint of `source` answers from now on.
    pub fn set_mode(&self, source: Source, mode: Mode) {
        for e in self.endpoints_of(source) {
            self.set_endpoint_mode(e, mode.clone());
        }
    }

    /// How one endpoint answers from now on (failover tests: `Endpoint::Eth(0)` only).
    pub fn set_endpoint_mode(&self, endpoint: Endpoint, mode: Mode) {
        if let Some(st) = self.shared().endpoints.get_mut(&endpoint) {
            st.mode = Some(mode);
        }
    }

    /// The next `times` requests to each endpoint of `source` get `mode`, then the steady mode.
    pub fn push_mode(&self, source: Source, mode: Mode, times: usize) {
        for e in self.endpoints_of(source) {
            self.push_endpoint_mode(e, mode.clone(), times);
        }
    }

    /// The next `times` requests to `endpoint` get `mode`.
    pub fn push_endpoint_mode(&self, endpoint: Endpoint, mode: Mode, times: usize) {
        if let Some(st) = self.shared().endpoints.get_mut(&endpoint) {
            st.queue.extend(std::iter::repeat_n(mode, times));
        }
    }

    /// Every answer of `source` waits this long first.
    pub fn set_latency(&self, source: Source, latency: Duration) {
        for e in self.endpoints_of(source) {
            if let Some(st) = self.shared().endpoints.get_mut(&e) {
                st.latency = latency;
            }
        }
    }

    /// Makes `source` unreachable (connections dropped at accept) or reachable again.
    pub fn set_down(&self, source: Source, down: bool) {
        for e in self.endpoints_of(source) {
            self.set_endpoint_down(e, down);
        }
    }

    /// Makes one endpoint unreachable or reachable again.
    pub fn set_endpoint_down(&self, endpoint: Endpoint, down: bool) {
        if let Some(f) = self.inner.down.get(&endpoint) {
            f.store(down, Ordering::SeqCst);
        }
    }

    /// Back to normal answers, no latency, nothing queued, everything reachable (prices kept).
    pub fn heal(&self) {
        let mut s = self.shared();
        for st in s.endpoints.values_mut() {
            st.mode = None;
            st.queue.clear();
            st.latency = Duration::ZERO;
        }
        for f in self.inner.down.values() {
            f.store(false, Ordering::SeqCst);
        }
    }

    /// Requests received by one endpoint, oldest first.
    pub fn requests(&self, endpoint: Endpoint) -> Vec<UpstreamRequest> {
        self.shared()
            .endpoints
            .get(&endpoint)
            .map(|st| st.requests.clone())
            .unwrap_or_default()
    }

    /// Number of requests received by every endpoint of `source`.
    pub fn request_count(&self, source: Source) -> usize {
        let s = self.shared();
        self.endpoints_of(source)
            .iter()
            .filter_map(|e| s.endpoints.get(e))
            .map(|st| st.requests.len())
            .sum()
    }

    /// Forgets recorded requests.
    pub fn clear_requests(&self) {
        for st in self.shared().endpoints.values_mut() {
            st.requests.clear();
        }
    }
}

/// Decimal text → integer scaled by 10^decimals (test helper input, so a panic is fine).
fn scaled(value: &str, decimals: u8) -> i128 {
    let v = value.trim();
    let (neg, v) = match v.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, v),
    };
    let (int, frac) = v.split_once('.').unwrap_or((v, ""));
    let mut frac = frac.to_owned();
    assert!(
        frac.len() <= usize::from(decimals),
        "{value} has more than {decimals} decimals"
    );
    while frac.len() < usize::from(decimals) {
        frac.push('0');
    }
    let n: i128 = format!("{int}{frac}")
        .parse()
        .unwrap_or_else(|_| panic!("{value} is not a decimal"));
    if neg { -n } else { n }
}

fn word_u(v: u128) -> String {
    format!("{v:064x}")
}

fn word_i(v: i128) -> String {
    if v >= 0 {
        format!("{v:064x}")
    } else {
        format!("{}{:032x}", "f".repeat(32), v as u128)
    }
}

/// ABI encoding of a round, as `latestRoundData()` returns it.
pub fn encode_round(r: &Round, default_time: u64) -> String {
    let updated = r.updated_at.unwrap_or(default_time);
    let started = r.started_at.unwrap_or(updated);
    format!(
        "0x{}{}{}{}{}",
        word_u(r.round_id),
        word_i(r.answer),
        word_u(u128::from(started)),
        word_u(u128::from(updated)),
        word_u(r.answered_in_round)
    )
}

fn respond(status: u16, content_type: &str, body: impl Into<Body>) -> Response {
    let mut r = Response::new(body.into());
    *r.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Ok(v) = HeaderValue::from_str(content_type) {
        r.headers_mut().insert("content-type", v);
    }
    r
}

fn json_response(status: u16, body: String) -> Response {
    respond(status, "application/json", body)
}

async fn handle(State(ctx): State<Ctx>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 4 * 1024 * 1024)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let recorded = UpstreamRequest {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect(),
        body,
    };
    let (mode, latency) = {
        let mut s = lock(&ctx.shared);
        let st = s.endpoints.entry(ctx.endpoint).or_default();
        st.requests.push(recorded.clone());
        let mode = st
            .queue
            .pop_front()
            .or_else(|| st.mode.clone())
            .unwrap_or(Mode::Normal);
        (mode, st.latency)
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let mut resp = answer(&ctx, mode, &recorded);
    // No keep-alive: a "down" endpoint must refuse the very next request.
    resp.headers_mut()
        .insert("connection", HeaderValue::from_static("close"));
    resp
}

fn answer(ctx: &Ctx, mode: Mode, req: &UpstreamRequest) -> Response {
    match mode {
        Mode::Normal => match ctx.endpoint {
            Endpoint::Coingecko => coingecko(ctx, req),
            Endpoint::Defillama => defillama(ctx, req),
            Endpoint::Pyth => pyth(ctx, req),
            Endpoint::Eth(_) => eth(ctx, req, None),
        },
        Mode::RateLimited { retry_after, html } => {
            let mut r = if html {
                respond(429, "text/html; charset=UTF-8", CLOUDFLARE_429_HTML)
            } else {
                let body = match ctx.endpoint {
                    Endpoint::Coingecko => COINGECKO_429_BODY.to_owned(),
                    Endpoint::Defillama => r#"{"message":"Too Many Requests"}"#.to_owned(),
                    Endpoint::Eth(_) => INFURA_429_BODY.to_owned(),
                    Endpoint::Pyth => "Too Many Requests".to_owned(),
                };
                if ctx.endpoint == Endpoint::Pyth {
                    respond(429, "text/plain; charset=utf-8", body)
                } else {
                    json_response(429, body)
                }
            };
            if let Some(s) = retry_after {
                r.headers_mut().insert("retry-after", HeaderValue::from(s));
            }
            r
        }
        Mode::Respond {
            status,
            content_type,
            body,
            retry_after,
        } => {
            let mut r = respond(status, &content_type, body);
            if let Some(s) = retry_after {
                r.headers_mut().insert("retry-after", HeaderValue::from(s));
            }
            r
        }
        Mode::Huge { bytes, chunked } => {
            let mut doc = Vec::with_capacity(bytes);
            doc.extend_from_slice(b"{\"pad\":\"");
            doc.resize(bytes.saturating_sub(2).max(doc.len()), b'x');
            doc.extend_from_slice(b"\"}");
            if chunked {
                let chunks: Vec<Result<axum::body::Bytes, std::io::Error>> = doc
                    .chunks(64 * 1024)
                    .map(|c| Ok(axum::body::Bytes::copy_from_slice(c)))
                    .collect();
                respond(
                    200,
                    "application/json",
                    Body::from_stream(futures_util::stream::iter(chunks)),
                )
            } else {
                respond(200, "application/json", doc)
            }
        }
        Mode::NeverEnding => {
            let stream = futures_util::stream::unfold(0u64, |n| async move {
                if n > 0 {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                let chunk: &'static [u8] = if n == 0 {
                    b"{\"tether\":{\"usd\":1"
                } else {
                    b"0"
                };
                Some((
                    Ok::<_, std::io::Error>(axum::body::Bytes::from_static(chunk)),
                    n + 1,
                ))
            });
            respond(200, "application/json", Body::from_stream(stream))
        }
        Mode::RpcError {
            code,
            message,
            data,
        } => eth(
            ctx,
            req,
            Some(RpcAnswer::Error {
                code,
                message,
                data,
            }),
        ),
        Mode::EmptyResult => eth(ctx, req, Some(RpcAnswer::Result("0x".into()))),
    }
}

fn coingecko(ctx: &Ctx, req: &UpstreamRequest) -> Response {
    let s = lock(&ctx.shared);
    if let Some((header, key)) = &s.coingecko_key {
        let demo = req.header("x-cg-demo-api-key");
        let pro = req.header("x-cg-pro-api-key");
        let err = |status: u16, code: u32, msg: &str| {
            json_response(
                status,
                json!({"status": {"error_code": code, "error_message": msg}}).to_string(),
            )
        };
        let sent = req.header(header);
        match sent {
            Some(k) if k == key => {}
            Some(_) => return err(401, 10002, "Invalid API Key"),
            None if header == "x-cg-pro-api-key" && demo.is_some() => {
                return err(400, 10011, "Demo API key used on the Pro API root URL");
            }
            None if header == "x-cg-demo-api-key" && pro.is_some() => {
                return err(400, 10010, "Pro API key used on the public API root URL");
            }
            None => return err(401, 10002, "API Key Missing"),
        }
    }
    let Some(route) = req.path.strip_prefix("/api/v3") else {
        return json_response(404, json!({"error": "Incorrect path"}).to_string());
    };
    let usd = req
        .param("vs_currencies")
        .is_some_and(|v| v.split(',').any(|c| c == "usd"));
    let with_time = req.param("include_last_updated_at").as_deref() == Some("true");
    let entry_json = |e: &Entry| {
        if with_time {
            format!(
                "{{\"usd\":{},\"last_updated_at\":{}}}",
                e.price,
                e.ts.json()
            )
        } else {
            format!("{{\"usd\":{}}}", e.price)
        }
    };
    let mut parts = Vec::new();
    if route == "/simple/price" {
        let Some(ids) = req.param("ids") else {
            return json_response(400, json!({"error": "Missing parameter ids"}).to_string());
        };
        for id in ids.split(',') {
            if let (true, Some(Some(e))) = (usd, s.coingecko.get(id)) {
                parts.push(format!("{}:{}", json!(id), entry_json(e)));
            }
        }
    } else if let Some(platform) = route.strip_prefix("/simple/token_price/") {
        let addrs = req.param("contract_addresses").unwrap_or_default();
        for addr in addrs.split(',').filter(|a| !a.is_empty()) {
            let evm = addr.starts_with("0x");
            let found = s.token_prices.iter().find(|((p, a), _)| {
                p == platform
                    && if evm {
                        a.eq_ignore_ascii_case(addr)
                    } else {
                        a == addr
                    }
            });
            if let (true, Some(((_, a), e))) = (usd, found) {
                let shown = if evm {
                    a.to_ascii_lowercase()
                } else {
                    a.clone()
                };
                parts.push(format!("{}:{}", json!(shown), entry_json(e)));
            }
        }
    } else {
        return json_response(404, json!({"error": "Incorrect path"}).to_string());
    }
    json_response(200, format!("{{{}}}", parts.join(",")))
}

fn defillama(ctx: &Ctx, req: &UpstreamRequest) -> Response {
    let s = lock(&ctx.shared);
    let Some(keys) = req.path.strip_prefix("/prices/current/") else {
        return json_response(404, json!({"message": "Not Found"}).to_string());
    };
    let width = req
        .param("searchWidth")
        .and_then(|w| keeper_sources::parse_search_width(&w).ok())
        .unwrap_or(12 * 3600) as i64;
    let mut parts = Vec::new();
    for key in keys.split(',').filter(|k| !k.is_empty()) {
        let key = pct_decode(key);
        let norm = llama_norm(&key);
        let Some((_, Some(e))) = s.defillama.get(&norm) else {
            continue;
        };
        // Older than searchWidth: left out, as the real API does.
        if e.ts.unix().is_some_and(|t| t < now() - width) {
            continue;
        }
        let symbol = s
            .assets
            .iter()
            .find(|a| a.defillama_key.as_deref().map(llama_norm) == Some(norm.clone()))
            .map(|a| a.symbol.clone())
            .unwrap_or_else(|| "TOKEN".into());
        let decimals = if key.starts_with("coingecko:") {
            String::new()
        } else {
            "\"decimals\":6,".to_owned()
        };
        parts.push(format!(
            "{}:{{{decimals}\"price\":{},\"symbol\":{},\"timestamp\":{},\"confidence\":{}}}",
            json!(norm),
            e.price,
            json!(symbol),
            e.ts.json(),
            e.confidence
        ));
    }
    json_response(200, format!("{{\"coins\":{{{}}}}}", parts.join(",")))
}

fn pyth(ctx: &Ctx, req: &UpstreamRequest) -> Response {
    let text = |status: u16, body: String| respond(status, "text/plain; charset=utf-8", body);
    let s = lock(&ctx.shared);
    if let Some(key) = &s.pyth_key
        && req.header("authorization") != Some(&format!("Bearer {key}"))
    {
        return text(401, "Unauthorized".into());
    }
    if req.path != "/v2/updates/price/latest" {
        return text(404, "Not Found".into());
    }
    let query = req.query.clone().unwrap_or_default();
    let params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    let ids: Vec<&str> = params
        .iter()
        .filter(|(k, _)| k == "ids[]")
        .map(|(_, v)| v.as_str())
        .collect();
    if ids.is_empty() {
        return text(
            400,
            "Failed to deserialize query string: missing field `ids`".into(),
        );
    }
    let ignore_invalid = params
        .iter()
        .any(|(k, v)| k == "ignore_invalid_price_ids" && v == "true");
    let mut unknown = Vec::new();
    let mut items = Vec::new();
    for id in ids {
        let norm = pyth_norm(id);
        if norm.len() != 64 || !norm.bytes().all(|b| b.is_ascii_hexdigit()) {
            return text(
                400,
                format!("Failed to deserialize query string: {id}: Invalid string length"),
            );
        }
        match s.pyth.get(&norm) {
            Some(Some(e)) => {
                let ts = e.ts.json();
                items.push(format!(
                    "{{\"id\":\"{norm}\",\"price\":{{\"price\":{},\"conf\":{},\"expo\":{},\"publish_time\":{ts}}},\"ema_price\":{{\"price\":{},\"conf\":{},\"expo\":{},\"publish_time\":{ts}}},\"metadata\":{{\"slot\":251234567,\"proof_available_time\":{ts},\"prev_publish_time\":{ts}}}}}",
                    e.price, e.conf, e.expo, e.price, e.conf, e.expo
                ));
            }
            _ => unknown.push(norm),
        }
    }
    if !unknown.is_empty() && !ignore_invalid {
        return text(404, format!("Price ids not found: {}", unknown.join(", ")));
    }
    let binary: Vec<String> = items.iter().map(|_| "\"504e4155\"".to_owned()).collect();
    json_response(
        200,
        format!(
            "{{\"binary\":{{\"encoding\":\"hex\",\"data\":[{}]}},\"parsed\":[{}]}}",
            binary.join(","),
            items.join(",")
        ),
    )
}

/// Decodes `%XX` escapes of a path segment.
fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16)
        {
            out.push(v);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn eth(ctx: &Ctx, req: &UpstreamRequest, forced: Option<RpcAnswer>) -> Response {
    let Ok(doc) = serde_json::from_str::<Value>(&req.body) else {
        return json_response(
            200,
            json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32700, "message": "parse error"}})
                .to_string(),
        );
    };
    let s = lock(&ctx.shared);
    let one = |call: &Value| -> Value {
        let id = call.get("id").cloned().unwrap_or(Value::Null);
        let answer = match &forced {
            Some(a) => a.clone(),
            None => eth_answer(&s, call),
        };
        match answer {
            RpcAnswer::Result(r) => json!({"jsonrpc": "2.0", "id": id, "result": r}),
            RpcAnswer::Error {
                code,
                message,
                data,
            } => {
                let mut err = json!({"code": code, "message": message});
                if let Some(d) = data {
                    err["data"] = d;
                }
                json!({"jsonrpc": "2.0", "id": id, "error": err})
            }
        }
    };
    let out = match &doc {
        Value::Array(calls) => Value::Array(calls.iter().map(one).collect()),
        call => one(call),
    };
    json_response(200, out.to_string())
}

fn eth_answer(s: &Shared, call: &Value) -> RpcAnswer {
    if call.get("method").and_then(Value::as_str) != Some("eth_call") {
        return RpcAnswer::Error {
            code: -32601,
            message: "the method does not exist/is not available".into(),
            data: None,
        };
    }
    let p = &call["params"][0];
    let to = p["to"].as_str().unwrap_or("").to_ascii_lowercase();
    let data = p["data"]
        .as_str()
        .or_else(|| p["input"].as_str())
        .unwrap_or("")
        .to_ascii_lowercase();
    if let Some(a) = s.calls.get(&(to.clone(), data.clone())) {
        return a.clone();
    }
    let feed = s.assets.iter().find_map(|a| {
        let proxy = a.chainlink.as_ref()?.proxy.to_ascii_lowercase();
        (proxy == to).then(|| s.feeds.get(&a.symbol)).flatten()
    });
    match (feed, data.as_str()) {
        (Some(f), LATEST_ROUND_DATA) => {
            RpcAnswer::Result(encode_round(&f.round, (now() - 30).max(0) as u64))
        }
        (Some(f), DECIMALS) => RpcAnswer::Result(format!("0x{:064x}", f.decimals)),
        (Some(_), _) => RpcAnswer::Error {
            code: -32000,
            message: "execution reverted".into(),
            data: None,
        },
        // No contract there: geth returns an empty result.
        (None, _) => RpcAnswer::Result("0x".into()),
    }
}

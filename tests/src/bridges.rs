//! Local stand-ins for the bridge-health upstreams, each a real HTTP server on `127.0.0.1:0`
//! answering in the documented formats (as the providers' API documentation describes them):
//!
//! - DefiLlama bridges (`bridges.llama.fi`): `GET /bridge/{id}`;
//! - DefiLlama API (`api.llama.fi`): `GET /tvl/{slug}` (a bare JSON number) and
//!   `GET /protocol/{slug}`;
//! - Wormholescan: `GET /api/v1/health`, `/api/v1/governor/enqueued_vaas/`,
//!   `/api/v1/governor/limit`;
//! - Axelarscan: `GET|POST /api/getTVLAlert`.
//!
//! [`BridgeApis::start`] answers every route with a healthy document for the default bridges
//! (Wormhole 77 / `portal`, Axelar 17 / `axelar`, `orbit-bridge`). Each test then changes what
//! it needs: a persistent reply per route ([`BridgeApis::set`]), one-off replies consumed first
//! ([`BridgeApis::push`]: a 429 then the default), the documented error bodies, HTML pages,
//! garbage, slow answers. Requests are counted per route.
//!
//! ```no_run
//! # async fn demo() {
//! use keeper_tests::bridges::{BridgeApis, Reply, Route};
//! let apis = BridgeApis::start().await;
//! apis.set_tvl_history("orbit-bridge", 200e6, 80e6); // −60% in 24 h
//! apis.push(Route::Limit, Reply::rate_limited(Some(1)));
//! // … point DEFILLAMA_API_URL at apis.defillama_api, WORMHOLESCAN_URL at apis.wormholescan …
//! # }
//! ```

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

/// One answer: status, content type, body, extra headers and an optional delay.
#[derive(Debug, Clone)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`.
    pub content_type: &'static str,
    /// Body bytes.
    pub body: Vec<u8>,
    /// Extra headers (`Retry-After`…).
    pub headers: Vec<(&'static str, String)>,
    /// Wait this long before answering (to trip client timeouts).
    pub delay: Option<Duration>,
}

impl Reply {
    /// `200` with a JSON document.
    pub fn json(v: &Value) -> Self {
        Self::status_json(200, v)
    }

    /// Any status with a JSON document.
    pub fn status_json(status: u16, v: &Value) -> Self {
        Self {
            status,
            content_type: "application/json",
            body: v.to_string().into_bytes(),
            headers: Vec::new(),
            delay: None,
        }
    }

    /// Any status with a raw body (malformed JSON, plain text…).
    pub fn raw(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Self {
        Self {
            status,
            content_type,
            body: body.into(),
            headers: Vec::new(),
            delay: None,
        }
    }

    /// A CDN error page (`502 Bad Gateway` from Cloudflare, as upstreams serve under load).
    pub fn html(status: u16) -> Self {
        Self::raw(
            status,
            "text/html; charset=UTF-8",
            format!(
                "<!DOCTYPE html>\n<html><head><title>{status} | Cloudflare</title></head>\
                 <body><h1>Error {status}</h1><p>Ray ID: 8f1c2e3d4a5b6c7d</p></body></html>"
            ),
        )
    }

    /// HTTP 429 with an optional `Retry-After` (seconds) and a JSON body.
    pub fn rate_limited(retry_after: Option<u64>) -> Self {
        let mut r = Self::status_json(429, &json!({"message": "Too Many Requests"}));
        if let Some(s) = retry_after {
            r.headers.push(("retry-after", s.to_string()));
        }
        r
    }

    /// `200` with a body that is not valid JSON.
    pub fn garbage() -> Self {
        Self::raw(
            200,
            "application/json",
            "{\"data\": [{\"chainId\": 2, \"avail",
        )
    }

    /// Answers after `d`.
    pub fn delayed(mut self, d: Duration) -> Self {
        self.delay = Some(d);
        self
    }
}

/// A route of one of the stand-ins.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Route {
    /// DefiLlama bridges `GET /bridge/{id}`.
    Bridge(u32),
    /// DefiLlama `GET /tvl/{slug}`.
    Tvl(String),
    /// DefiLlama `GET /protocol/{slug}`.
    Protocol(String),
    /// Wormholescan `GET /api/v1/health`.
    Health,
    /// Wormholescan `GET /api/v1/governor/enqueued_vaas/`.
    Enqueued,
    /// Wormholescan `GET /api/v1/governor/limit`.
    Limit,
    /// Axelarscan `/api/getTVLAlert`.
    TvlAlert,
}

#[derive(Clone, Copy)]
enum Host {
    Bridges,
    Api,
    Wormholescan,
    Axelarscan,
}

#[derive(Default)]
struct Inner {
    replies: HashMap<Route, Reply>,
    once: HashMap<Route, VecDeque<Reply>>,
    hits: HashMap<Route, usize>,
}

type Shared = Arc<Mutex<Inner>>;

fn lock(s: &Shared) -> MutexGuard<'_, Inner> {
    // A panicking test thread must not poison the other tests' view of the server.
    s.lock().unwrap_or_else(|e| e.into_inner())
}

/// The four stand-ins, their base URLs, and the knobs tests turn.
pub struct BridgeApis {
    /// Base URL for `DEFILLAMA_BRIDGES_URL`.
    pub defillama_bridges: String,
    /// Base URL for `DEFILLAMA_API_URL`.
    pub defillama_api: String,
    /// Base URL for `WORMHOLESCAN_URL`.
    pub wormholescan: String,
    /// Base URL for `AXELARSCAN_URL`.
    pub axelarscan: String,
    state: Shared,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for BridgeApis {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Unix seconds now.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

impl BridgeApis {
    /// Starts the four servers, every route answering healthy.
    pub async fn start() -> Self {
        let state: Shared = Arc::default();
        let mut tasks = Vec::new();
        let mut urls = Vec::new();
        for host in [
            Host::Bridges,
            Host::Api,
            Host::Wormholescan,
            Host::Axelarscan,
        ] {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind stand-in");
            let addr = listener.local_addr().expect("stand-in address");
            let app = axum::Router::new()
                .fallback(move |s: State<Shared>, req: Request| handle(s, host, req))
                .with_state(state.clone());
            tasks.push(tokio::spawn(async move {
                let _ = axum::serve(listener, app).await;
            }));
            urls.push(format!("http://{addr}"));
        }
        let apis = Self {
            defillama_bridges: urls[0].clone(),
            defillama_api: urls[1].clone(),
            wormholescan: urls[2].clone(),
            axelarscan: urls[3].clone(),
            state,
            tasks,
        };
        apis.all_healthy();
        apis
    }

    /// Resets every route to the healthy defaults (one-off replies are dropped).
    pub fn all_healthy(&self) {
        lock(&self.state).once.clear();
        self.set_bridge_volume(77, 1_502_233.7, 281_004_500.9);
        self.set_bridge_volume(17, 210_500.0, 9_820_000.0);
        self.set_tvl_history("orbit-bridge", 90_000_000.0, 89_500_000.0);
        self.set_tvl_history("portal", 2_100_000_000.0, 2_080_000_000.0);
        self.set_tvl_history("axelar", 310_000_000.0, 305_000_000.0);
        self.set(Route::Health, Reply::json(&json!({"status": "OK"})));
        self.set_governor_queue(&[]);
        self.set_governor_limit(&[
            (2, 47_120_553.0, 50_000_000.0),
            (1, 19_000_000.0, 25_000_000.0),
        ]);
        self.set(Route::TvlAlert, Reply::json(&tvl_alert_doc(None)));
    }

    /// Persistent reply for a route.
    pub fn set(&self, route: Route, reply: Reply) {
        lock(&self.state).replies.insert(route, reply);
    }

    /// One-off reply, served (in order) before the persistent one.
    pub fn push(&self, route: Route, reply: Reply) {
        lock(&self.state)
            .once
            .entry(route)
            .or_default()
            .push_back(reply);
    }

    /// Requests served on a route so far.
    pub fn hits(&self, route: &Route) -> usize {
        lock(&self.state).hits.get(route).copied().unwrap_or(0)
    }

    /// `/bridge/{id}` with this hourly volume and weekly volume (daily figures derived).
    pub fn set_bridge_volume(&self, id: u32, last_hourly: f64, weekly: f64) {
        self.set(
            Route::Bridge(id),
            Reply::json(&bridge_doc(id, last_hourly, weekly)),
        );
    }

    /// `/tvl/{slug}` = `now_usd` and `/protocol/{slug}` with a daily series ending 24 h ago at
    /// `day_ago_usd` (and a point now at `now_usd`), as DefiLlama serves it.
    pub fn set_tvl_history(&self, slug: &str, day_ago_usd: f64, now_usd: f64) {
        let t = now();
        let mut points: Vec<(i64, f64)> = (2..=7)
            .rev()
            .map(|k| (t - k * 86_400, day_ago_usd * (1.0 + 0.001 * k as f64)))
            .collect();
        points.push((t - 86_400, day_ago_usd));
        points.push((t, now_usd));
        self.set(Route::Tvl(slug.into()), Reply::json(&json!(now_usd)));
        self.set(
            Route::Protocol(slug.into()),
            Reply::json(&protocol_doc(slug, &points)),
        );
    }

    /// `/api/v1/governor/enqueued_vaas/` holding these `(chain_id, notional_usd)` VAAs.
    pub fn set_governor_queue(&self, vaas: &[(u16, f64)]) {
        self.set(Route::Enqueued, Reply::json(&enqueued_doc(vaas)));
    }

    /// `/api/v1/governor/limit` with `(chain_id, available, limit)` rows.
    pub fn set_governor_limit(&self, rows: &[(u16, f64, f64)]) {
        self.set(Route::Limit, Reply::json(&limit_doc(rows)));
    }

    /// `getTVLAlert` all `ok`, or with `native_on_evm_total_status` = `status` and a USDC gap.
    pub fn set_tvl_alert(&self, status: Option<&str>) {
        self.set(Route::TvlAlert, Reply::json(&tvl_alert_doc(status)));
    }
}

async fn handle(State(s): State<Shared>, host: Host, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let Some(route) = route_of(host, &method, &path) else {
        return not_found(host);
    };
    let reply = {
        let mut g = lock(&s);
        *g.hits.entry(route.clone()).or_default() += 1;
        let once = g.once.get_mut(&route).and_then(VecDeque::pop_front);
        once.or_else(|| g.replies.get(&route).cloned())
    };
    let Some(reply) = reply else {
        return missing(host, &route);
    };
    if let Some(d) = reply.delay {
        tokio::time::sleep(d).await;
    }
    let mut resp = Response::new(Body::from(reply.body));
    *resp.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static(reply.content_type));
    for (k, v) in reply.headers {
        if let Ok(v) = HeaderValue::from_str(&v) {
            resp.headers_mut().insert(k, v);
        }
    }
    resp
}

fn route_of(host: Host, method: &Method, path: &str) -> Option<Route> {
    let get = method == Method::GET;
    match host {
        Host::Bridges => {
            let id = path.strip_prefix("/bridge/")?;
            get.then_some(())?;
            id.parse().ok().map(Route::Bridge)
        }
        Host::Api => {
            get.then_some(())?;
            if let Some(slug) = path.strip_prefix("/tvl/") {
                return Some(Route::Tvl(slug.into()));
            }
            path.strip_prefix("/protocol/")
                .map(|s| Route::Protocol(s.into()))
        }
        Host::Wormholescan => {
            get.then_some(())?;
            match path {
                "/api/v1/health" => Some(Route::Health),
                "/api/v1/governor/enqueued_vaas/" | "/api/v1/governor/enqueued_vaas" => {
                    Some(Route::Enqueued)
                }
                "/api/v1/governor/limit" => Some(Route::Limit),
                _ => None,
            }
        }
        Host::Axelarscan => (path == "/api/getTVLAlert"
            && (method == Method::GET || method == Method::POST))
            .then_some(Route::TvlAlert),
    }
}

fn reply_response(r: Reply) -> Response {
    let mut resp = Response::new(Body::from(r.body));
    *resp.status_mut() = StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK);
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static(r.content_type));
    resp
}

/// What each upstream answers for a path it does not serve.
fn not_found(host: Host) -> Response {
    reply_response(match host {
        Host::Bridges | Host::Api => Reply::raw(404, "text/plain", "Not Found"),
        Host::Wormholescan => wormholescan_error(404, 5, "not found"),
        Host::Axelarscan => axelarscan_method_not_supported(),
    })
}

/// What each upstream answers for an id or slug the test did not configure.
fn missing(host: Host, route: &Route) -> Response {
    reply_response(match (host, route) {
        (Host::Bridges, _) => bridge_not_found(),
        (Host::Api, _) => protocol_not_found(),
        _ => Reply::raw(404, "text/plain", "Not Found"),
    })
}

/// bridges-server's answer for an unknown id: HTTP 400 `{"message":"Bridge ID not found."}`.
pub fn bridge_not_found() -> Reply {
    Reply::status_json(400, &json!({"message": "Bridge ID not found."}))
}

/// api.llama.fi's answer for an unknown slug.
pub fn protocol_not_found() -> Reply {
    Reply::status_json(400, &json!({"message": "Protocol not found"}))
}

/// Wormholescan's error object: `{"code","message","details":[{"request_id"}]}`.
pub fn wormholescan_error(status: u16, code: i64, message: &str) -> Reply {
    Reply::status_json(
        status,
        &json!({"code": code, "message": message, "details": [{"request_id": "0b9e1f6c-6a1d-4f0e-9d3b-2f7c1c9b8a11"}]}),
    )
}

/// Axelarscan's answer for an unknown method.
pub fn axelarscan_method_not_supported() -> Reply {
    Reply::status_json(
        400,
        &json!({"error": true, "code": 400, "message": "method not supported"}),
    )
}

/// `/bridge/{id}` in the bridges-server shape.
pub fn bridge_doc(id: u32, last_hourly: f64, weekly: f64) -> Value {
    let (name, display) = match id {
        77 => ("wormhole", "Wormhole"),
        17 => ("axelar", "Axelar"),
        _ => ("bridge", "Bridge"),
    };
    let daily = weekly / 7.0;
    json!({
        "id": id, "name": name, "displayName": display,
        "lastHourlyVolume": last_hourly, "currentDayVolume": daily * 0.3,
        "lastDailyVolume": daily, "dayBeforeLastVolume": daily * 0.97,
        "weeklyVolume": weekly, "monthlyVolume": weekly * 4.2,
        "lastHourlyTxs": {"deposits": if last_hourly > 0.0 { 212 } else { 0 }, "withdrawals": if last_hourly > 0.0 { 187 } else { 0 }},
        "currentDayTxs": {"deposits": 2301, "withdrawals": 2044},
        "prevDayTxs": {"deposits": 7120, "withdrawals": 6890},
        "dayBeforeLastTxs": {"deposits": 6950, "withdrawals": 6701},
        "weeklyTxs": {"deposits": 48810, "withdrawals": 47002},
        "monthlyTxs": {"deposits": 201004, "withdrawals": 195550},
        "chainBreakdown": {"Ethereum": {
            "lastHourlyVolume": last_hourly / 2.0, "currentDayVolume": daily * 0.15,
            "lastDailyVolume": daily / 2.0, "dayBeforeLastVolume": daily * 0.48,
            "weeklyVolume": weekly / 2.0, "monthlyVolume": weekly * 2.1, "last24hVolume": daily / 2.0,
            "lastHourlyTxs": {"deposits": 90, "withdrawals": 77},
            "currentDayTxs": {"deposits": 950, "withdrawals": 870},
            "prevDayTxs": {"deposits": 3000, "withdrawals": 2900},
            "dayBeforeLastTxs": {"deposits": 2950, "withdrawals": 2800},
            "weeklyTxs": {"deposits": 20100, "withdrawals": 19400},
            "monthlyTxs": {"deposits": 85000, "withdrawals": 82000}}},
        "destinationChain": "false"
    })
}

/// `/protocol/{slug}` in the api.llama.fi shape, with the bulky per-chain fields it carries.
pub fn protocol_doc(slug: &str, points: &[(i64, f64)]) -> Value {
    let tvl: Vec<Value> = points
        .iter()
        .map(|(d, v)| json!({"date": d, "totalLiquidityUSD": v}))
        .collect();
    let tokens: Vec<Value> = points
        .iter()
        .map(|(d, v)| json!({"date": d, "tokens": {"USDT": v * 0.6, "USDC": v * 0.4}}))
        .collect();
    let last = points.last().map(|p| p.1).unwrap_or(0.0);
    json!({
        "id": "2000", "name": slug, "url": "https://example.org", "symbol": "-",
        "category": "Bridge", "chains": ["Ethereum"],
        "currentChainTvls": {"Ethereum": last},
        "chainTvls": {"Ethereum": {"tvl": tvl.clone(), "tokens": tokens, "tokensInUsd": []}},
        "tvl": tvl,
        "hallmarks": [[1704067200, "Exploit"]]
    })
}

/// `/api/v1/governor/enqueued_vaas/` with one entry per chain that has queued VAAs.
pub fn enqueued_doc(vaas: &[(u16, f64)]) -> Value {
    let mut by_chain: Vec<(u16, Vec<Value>)> = Vec::new();
    for (i, (chain, notional)) in vaas.iter().enumerate() {
        let v = json!({
            "chainId": chain,
            "emitterAddress": "0000000000000000000000003ee18b2214aff97000d974cf647e7c347e8fa585",
            "sequence": (184_221 + i).to_string(),
            "notionalValue": notional,
            "txHash": format!("0x{:064x}", 0xabc0 + i),
        });
        match by_chain.iter_mut().find(|(c, _)| c == chain) {
            Some((_, list)) => list.push(v),
            None => by_chain.push((*chain, vec![v])),
        }
    }
    let data: Vec<Value> = by_chain
        .into_iter()
        .map(|(c, list)| json!({"chainId": c, "enqueuedVaas": list}))
        .collect();
    json!({"data": data, "pagination": {"next": ""}})
}

/// `/api/v1/governor/limit` rows.
pub fn limit_doc(rows: &[(u16, f64, f64)]) -> Value {
    let data: Vec<Value> = rows
        .iter()
        .map(|(c, avail, limit)| {
            json!({"chainId": c, "availableNotional": avail, "notionalLimit": limit, "maxTransactionSize": limit / 10.0})
        })
        .collect();
    json!({"data": data, "pagination": {"next": ""}})
}

/// `getTVLAlert`: all four statuses `ok` (no `details`), or the EVM total status set to
/// `status` with a USDC supply gap.
pub fn tvl_alert_doc(status: Option<&str>) -> Value {
    match status {
        None => json!({
            "summary": "", "timestamp": "2026-01-01T00:00:00Z",
            "native_on_evm_total_status": "ok", "native_on_evm_escrow_status": "ok",
            "native_on_cosmos_evm_escrow_status": "ok", "native_on_cosmos_escrow_status": "ok",
            "links": []
        }),
        Some(s) => json!({
            "summary": "axlUSDC", "timestamp": "2026-01-01T00:00:00Z",
            "native_on_evm_total_status": s, "native_on_evm_escrow_status": "ok",
            "native_on_cosmos_evm_escrow_status": "ok", "native_on_cosmos_escrow_status": "ok",
            "details": [{"asset": "uusdc", "symbol": "USDC", "price": 1, "percent_diff_supply": 7.4,
                "total": 152000000, "links": ["https://axelarscan.io/assets"]}],
            "links": ["https://axelarscan.io/tvl"]
        }),
    }
}

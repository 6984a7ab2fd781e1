//! A recording HTTP sink: a real server on `127.0.0.1:0` that stands in for any webhook-style
//! upstream (Slack, PagerDuty, Alertmanager, a generic webhook…).
//!
//! Every request is recorded (method, path, query, headers, body, parsed JSON) before it is
//! answered. Answers are scripted: a default reply, per-path replies, and a queue of one-off
//! replies consumed in order (`500` twice then the default), including replies that hang.
//!
//! ```no_run
//! # async fn demo() {
//! use std::time::Duration;
//! use keeper_tests::sink::{Reply, Sink};
//! let sink = Sink::start().await;
//! sink.enqueue(Reply::status(500), 2); // two failures, then the default 200
//! // … point the code under test at sink.url_for("/hook") …
//! let got = sink.wait_for(3, Duration::from_secs(5)).await;
//! assert_eq!(got[2].json().unwrap()["status"], "firing");
//! # }
//! ```

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;

/// Largest body the sink records; anything bigger is cut (and flagged by `truncated`).
const MAX_RECORDED_BODY: usize = 8 * 1024 * 1024;

/// One request as the sink received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// `GET`, `POST`…
    pub method: String,
    /// The path, without the query (`/api/v2/alerts`).
    pub path: String,
    /// The raw query string, if any.
    pub query: Option<String>,
    /// Headers with lower-case names, in arrival order.
    pub headers: Vec<(String, String)>,
    /// The raw body.
    pub body: Vec<u8>,
    /// Whether the body was longer than the sink records.
    pub truncated: bool,
    /// When it arrived.
    pub at: Instant,
}

impl Recorded {
    /// The first value of a header (name matched case-insensitively).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON, when it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// How the sink answers one request.
#[derive(Debug, Clone)]
pub struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    delay: Option<Duration>,
    hang: bool,
}

impl Reply {
    /// An empty answer with `status`.
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            delay: None,
            hang: false,
        }
    }

    /// A `text/plain` answer (Slack answers `200 ok`, `400 invalid_payload`…).
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self::status(status)
            .header("content-type", "text/plain; charset=utf-8")
            .body(body.into().into_bytes())
    }

    /// An `application/json` answer.
    pub fn json(status: u16, value: serde_json::Value) -> Self {
        Self::status(status)
            .header("content-type", "application/json")
            .body(value.to_string())
    }

    /// An HTML error page, as proxies and CDNs answer.
    pub fn html(status: u16) -> Self {
        Self::status(status)
            .header("content-type", "text/html")
            .body("<!DOCTYPE html><html><body><h1>Bad Gateway</h1></body></html>")
    }

    /// Never answers (until the sink is dropped or [`Sink::release`] is called): the request
    /// is still recorded, so tests can see it arrived.
    pub fn hang() -> Self {
        Self {
            hang: true,
            ..Self::status(503)
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Answers only after `delay`.
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }
}

#[derive(Default)]
struct Script {
    default: Option<Reply>,
    by_path: HashMap<String, Reply>,
    queue: VecDeque<Reply>,
}

struct State_ {
    requests: Mutex<Vec<Recorded>>,
    script: Mutex<Script>,
    /// Number of recorded requests; waiters watch it.
    count: watch::Sender<usize>,
    /// Bumped to let hanging requests go.
    release: watch::Sender<u64>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The running sink; the server stops when this is dropped.
pub struct Sink {
    addr: SocketAddr,
    state: Arc<State_>,
    server: tokio::task::JoinHandle<()>,
}

impl Sink {
    /// Starts a sink answering `200` with an empty body to everything.
    pub async fn start() -> Sink {
        Self::with_default(Reply::status(200)).await
    }

    /// Starts a sink whose default answer is `reply`.
    pub async fn with_default(reply: Reply) -> Sink {
        let state = Arc::new(State_ {
            requests: Mutex::new(Vec::new()),
            script: Mutex::new(Script {
                default: Some(reply),
                ..Script::default()
            }),
            count: watch::channel(0).0,
            release: watch::channel(0).0,
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(state.clone());
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Sink {
            addr,
            state,
            server,
        }
    }

    /// The socket address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (no trailing slash).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT{path}`; `path` starts with `/`.
    pub fn url_for(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Replaces the default answer.
    pub fn set_default(&self, reply: Reply) {
        lock(&self.state.script).default = Some(reply);
    }

    /// Answers requests to `path` with `reply` (after the one-off queue is used up).
    pub fn route(&self, path: &str, reply: Reply) {
        lock(&self.state.script)
            .by_path
            .insert(path.to_owned(), reply);
    }

    /// Answers the next `times` requests (any path) with `reply`, before anything else.
    pub fn enqueue(&self, reply: Reply, times: usize) {
        let mut script = lock(&self.state.script);
        for _ in 0..times {
            script.queue.push_back(reply.clone());
        }
    }

    /// Lets every currently hanging request answer (with its reply's status, 503 by default).
    pub fn release(&self) {
        self.state.release.send_modify(|g| *g += 1);
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state.requests).clone()
    }

    /// The requests to one path.
    pub fn requests_to(&self, path: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// How many requests arrived.
    pub fn count(&self) -> usize {
        *self.state.count.borrow()
    }

    /// Forgets the recorded requests (the script stays).
    pub fn clear(&self) {
        lock(&self.state.requests).clear();
        self.state.count.send_replace(0);
    }

    /// Waits until at least `n` requests arrived and returns all of them; `Err` carries what
    /// arrived if `timeout` passed first.
    pub async fn try_wait_for(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Result<Vec<Recorded>, Vec<Recorded>> {
        let mut rx = self.state.count.subscribe();
        match tokio::time::timeout(timeout, rx.wait_for(|c| *c >= n)).await {
            Ok(_) => Ok(self.requests()),
            Err(_) => Err(self.requests()),
        }
    }

    /// Waits until at least `n` requests arrived and returns all of them; panics after
    /// `timeout`, listing what did arrive.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<Recorded> {
        match self.try_wait_for(n, timeout).await {
            Ok(all) => all,
            Err(got) => panic!(
                "sink {}: expected {n} request(s) within {timeout:?}, got {}: {:#?}",
                self.addr,
                got.len(),
                got.iter()
                    .map(|r| format!("{} {} {}", r.method, r.path, r.text()))
                    .collect::<Vec<_>>()
            ),
        }
    }

    /// Waits until some recorded request satisfies `pred` and returns it; `None` after `timeout`.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        mut pred: impl FnMut(&Recorded) -> bool,
    ) -> Option<Recorded> {
        let mut rx = self.state.count.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        let mut seen = 0;
        loop {
            {
                let reqs = lock(&self.state.requests);
                if let Some(hit) = reqs.iter().skip(seen).find(|r| pred(r)) {
                    return Some(hit.clone());
                }
                seen = reqs.len();
            }
            let more = rx.wait_for(|c| *c > seen);
            match tokio::time::timeout_at(deadline, more).await {
                Ok(Ok(_)) => {}
                _ => return None,
            }
        }
    }

    /// Asserts that no further request arrives within `quiet` (beyond the `n` already expected).
    pub async fn assert_count_stays(&self, n: usize, quiet: Duration) {
        if let Ok(all) = self.try_wait_for(n + 1, quiet).await {
            panic!(
                "sink {}: expected exactly {n} request(s), got {}: {:#?}",
                self.addr,
                all.len(),
                all.iter()
                    .map(|r| format!("{} {} {}", r.method, r.path, r.text()))
                    .collect::<Vec<_>>()
            );
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.release();
        self.server.abort();
    }
}

async fn handle(State(state): State<Arc<State_>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let (body, truncated) = match axum::body::to_bytes(body, MAX_RECORDED_BODY).await {
        Ok(b) => (b.to_vec(), false),
        Err(_) => (Vec::new(), true),
    };
    let recorded = Recorded {
        method: parts.method.to_string(),
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().map(str::to_owned),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
        truncated,
        at: Instant::now(),
    };
    let path = recorded.path.clone();
    {
        let mut reqs = lock(&state.requests);
        reqs.push(recorded);
        state.count.send_replace(reqs.len());
    }
    let reply = {
        let mut script = lock(&state.script);
        script
            .queue
            .pop_front()
            .or_else(|| script.by_path.get(&path).cloned())
            .or_else(|| script.default.clone())
            .unwrap_or_else(|| Reply::status(200))
    };
    if reply.hang {
        let mut rx = state.release.subscribe();
        // Err means the sink was dropped: answer and let the connection close.
        let _ = rx.changed().await;
    }
    if let Some(d) = reply.delay {
        tokio::time::sleep(d).await;
    }
    let mut resp = Response::new(Body::from(reply.body));
    *resp.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    for (k, v) in reply.headers {
        if let (Ok(k), Ok(v)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
            resp.headers_mut().append(k, v);
        }
    }
    resp.into_response()
}

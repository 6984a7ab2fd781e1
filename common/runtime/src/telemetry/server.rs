//! The ops HTTP server: `/metrics`, `/healthz`, `/readyz`, `/status`.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;
use tokio::task::JoinHandle;

use super::{Health, Metrics};
use crate::shutdown::Shutdown;
use crate::tasks::Supervisor;

/// Content type of the classic Prometheus text format, served unless OpenMetrics is asked for.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of the OpenMetrics text format.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Why the ops server could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    /// The listen address is taken, not local, or not permitted.
    #[error(
        "ops server: cannot listen on {addr} (telemetry.metrics_addr / METRICS_ADDR): {source}"
    )]
    Bind {
        /// The address that was asked for.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
}

/// A running ops server.
#[derive(Debug)]
pub struct OpsServer {
    local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl OpsServer {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Hands the server to `supervisor` as `ops-server`: ending before the stop stops the
    /// process (liveness probes would otherwise fail on a keeper that runs on), and the
    /// supervisor's join waits for it instead of [`OpsServer::stopped`].
    pub fn supervise(self, supervisor: &mut Supervisor) {
        supervisor.adopt("ops-server", self.task);
    }

    /// Waits until the server has stopped (after the shutdown switch fired).
    pub async fn stopped(self) {
        // A panicked server task has nothing more to report than its panic, already printed.
        let _ = self.task.await;
    }
}

#[derive(Clone)]
struct Ops {
    metrics: Arc<Metrics>,
    health: Health,
}

/// Binds `addr` and serves the ops endpoints until `shutdown` fires.
pub async fn serve_ops(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    health: Health,
    shutdown: Shutdown,
) -> Result<OpsServer, OpsError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| OpsError::Bind { addr, source })?;
    let local_addr = listener
        .local_addr()
        .map_err(|source| OpsError::Bind { addr, source })?;
    let app = router(metrics, health);
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { shutdown.wait().await })
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "ops server stopped with an error");
        }
    });
    tracing::info!(addr = %local_addr, "ops server listening");
    Ok(OpsServer { local_addr, task })
}

/// The ops routes, for embedding in another server.
pub fn router(metrics: Arc<Metrics>, health: Health) -> Router {
    Router::new()
        .route("/metrics", get(metrics_handler))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .with_state(Ops { metrics, health })
}

async fn metrics_handler(State(ops): State<Ops>, headers: HeaderMap) -> Response {
    let text = ops.metrics.render();
    let openmetrics = headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    if openmetrics {
        ([(header::CONTENT_TYPE, OPENMETRICS_TEXT)], text).into_response()
    } else {
        (
            [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
            to_prometheus_text(&text),
        )
            .into_response()
    }
}

async fn healthz(State(ops): State<Ops>) -> Response {
    let l = ops.health.liveness();
    let body = json!({
        "live": l.live,
        "seconds_since_last_tick": l.since_last_tick.as_secs_f64(),
        "window_seconds": l.window.as_secs_f64(),
    });
    let code = if l.live {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, axum::Json(body)).into_response()
}

async fn readyz(State(ops): State<Ops>) -> Response {
    let pending = ops.health.pending();
    let code = if pending.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        axum::Json(json!({ "ready": pending.is_empty(), "pending": pending })),
    )
        .into_response()
}

async fn status(State(ops): State<Ops>) -> Response {
    let mut resp = axum::Json(ops.health.status()).into_response();
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// Rewrites OpenMetrics text into the classic Prometheus text format (0.0.4): counter families
/// are named with their `_total` suffix, and `# UNIT` and `# EOF` lines are dropped, so that a
/// scraper using the classic parser keeps the metric types.
pub fn to_prometheus_text(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 16 * counters.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "]
            .into_iter()
            .find_map(|p| line.strip_prefix(p).map(|rest| (p, rest)));
        if let Some((prefix, rest)) = meta {
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            if counters.contains(name) && !name.ends_with("_total") {
                out.push_str(prefix);
                out.push_str(name);
                out.push_str("_total ");
                out.push_str(tail);
                out.push('\n');
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classic_text_names_counters_with_total() {
        let m = Metrics::new("pricing-oracle");
        m.record_cycle("success", 0.1);
        let text = to_prometheus_text(&m.render());
        assert!(
            text.contains("# TYPE keeper_cycles_total counter\n"),
            "{text}"
        );
        assert!(text.contains("# HELP keeper_cycles_total Cycles by outcome"));
        assert!(
            text.contains("keeper_cycles_total{keeper=\"pricing-oracle\",outcome=\"success\"} 1\n")
        );
        assert!(text.contains("# TYPE keeper_cycle_duration_seconds histogram\n"));
        assert!(!text.contains("# EOF"));
    }
}

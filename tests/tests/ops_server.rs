//! The ops HTTP server over real HTTP: `/metrics`, `/readyz`, `/status`, bind errors, and
//! `/healthz` turning 503 when a real process's loop is stuck.

use std::sync::Arc;
use std::time::{Duration, Instant};

use keeper_runtime::alert::Alerter;
use keeper_runtime::runner::{Cycle, CycleContext, CycleError, Runner, Shutdown, Timing};
use keeper_runtime::telemetry::server::{OPENMETRICS_TEXT, PROMETHEUS_TEXT};
use keeper_runtime::telemetry::{Health, Metrics, OpsError, serve_ops};
use keeper_tests::probe::{self, Probe};
use serde::Serialize;

const PROBE: &str = env!("CARGO_BIN_EXE_runner_probe");

fn client() -> reqwest::Client {
    keeper_runtime::install_crypto_provider();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

async fn get(url: &str) -> (u16, String, serde_json::Value) {
    let resp = client().get(url).send().await.unwrap();
    let code = resp.status().as_u16();
    let ct = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let body = resp.text().await.unwrap();
    let json = serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
    (code, ct, json)
}

#[derive(Serialize)]
struct Published {
    published: Vec<&'static str>,
}

impl keeper_runtime::runner::CycleReport for Published {
    fn summary(&self) -> String {
        format!("published {}", self.published.join(","))
    }
}

struct Publish {
    health: Health,
}

impl Cycle for Publish {
    type Report = Published;

    async fn run(&mut self, _ctx: &CycleContext) -> Result<Published, CycleError> {
        self.health
            .set_published("USDT", serde_json::json!({"price_micro": 1_000_100}));
        self.health.set_lock_holder(Some("host-a:4242".into()));
        Ok(Published {
            published: vec!["USDT"],
        })
    }
}

#[tokio::test]
async fn endpoints_answer_over_real_http() {
    let metrics = Arc::new(Metrics::new("pricing-oracle"));
    let health = Health::new(
        "pricing-oracle",
        Duration::from_secs(60),
        &["config", "wallet"],
    );
    let shutdown = Shutdown::new();
    let ops = serve_ops(
        "127.0.0.1:0".parse().unwrap(),
        metrics.clone(),
        health.clone(),
        shutdown.clone(),
    )
    .await
    .unwrap();
    let base = format!("http://{}", ops.local_addr());

    let (code, _, body) = get(&format!("{base}/readyz")).await;
    assert_eq!(code, 503);
    assert_eq!(body["pending"], serde_json::json!(["config", "wallet"]));
    health.mark_ready("config");
    health.mark_ready("wallet");
    let (code, _, body) = get(&format!("{base}/readyz")).await;
    assert_eq!((code, body["ready"].as_bool()), (200, Some(true)));

    let (code, _, body) = get(&format!("{base}/healthz")).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["window_seconds"], 180.0);

    let timing = Timing {
        interval: Duration::from_secs(60),
        cycle_timeout: Duration::from_secs(5),
        shutdown_grace: Duration::from_secs(5),
        stale_intervals: 3,
    };
    let mut runner = Runner::new(
        "pricing-oracle",
        timing,
        metrics.clone(),
        health.clone(),
        Alerter::disabled(),
        shutdown.clone(),
    );
    let run = runner
        .run_once(&mut Publish {
            health: health.clone(),
        })
        .await;
    assert_eq!(run.exit_code(), 0);

    let (code, _, status) = get(&format!("{base}/status")).await;
    assert_eq!(code, 200);
    assert_eq!(status["keeper"], "pricing-oracle");
    assert_eq!(status["last_cycle"]["outcome"], "success");
    assert_eq!(status["last_cycle"]["summary"], "published USDT");
    assert_eq!(
        status["last_cycle"]["report"],
        serde_json::json!({"published": ["USDT"]})
    );
    assert_eq!(status["published"]["USDT"]["price_micro"], 1_000_100);
    assert_eq!(status["lock_holder"], "host-a:4242");
    assert_eq!(status["ticks"], 1);

    let resp = client()
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert_eq!(resp.headers()["content-type"], PROMETHEUS_TEXT);
    let text = resp.text().await.unwrap();
    assert!(
        text.contains("# TYPE keeper_cycles_total counter"),
        "{text}"
    );
    assert!(
        text.contains("keeper_cycles_total{keeper=\"pricing-oracle\",outcome=\"success\"} 1"),
        "{text}"
    );
    assert!(!text.contains("# EOF"));

    let resp = client()
        .get(format!("{base}/metrics"))
        .header("accept", "application/openmetrics-text; version=1.0.0")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], OPENMETRICS_TEXT);
    assert!(resp.text().await.unwrap().ends_with("# EOF\n"));

    // Stopping: the server finishes and the port stops answering.
    shutdown.trigger();
    tokio::time::timeout(Duration::from_secs(5), ops.stopped())
        .await
        .expect("server stops when the switch fires");
    assert!(
        client()
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn bind_failure_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let err = serve_ops(
        addr,
        Arc::new(Metrics::new("bridge-health")),
        Health::new("bridge-health", Duration::from_secs(60), &[]),
        Shutdown::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, OpsError::Bind { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains(&addr.to_string()) && msg.contains("METRICS_ADDR"),
        "{msg}"
    );
}

#[tokio::test]
async fn healthz_turns_503_when_the_loop_of_a_real_process_is_stuck() {
    // 200 ms ticks, so /healthz tolerates 600 ms without a completed tick. Five quick cycles
    // (over a second: liveness follows ticks, not the start time), then one blocks its thread.
    let mut cmd = probe::command(PROBE);
    cmd.env("PROBE_CYCLE", "ok,ok,ok,ok,ok,block:60000")
        .env("PROBE_INTERVAL_MS", "200")
        .env("PROBE_OPS_ADDR", "127.0.0.1:0")
        .env("PROBE_READY", "config,upstreams");
    let mut p = Probe::spawn(cmd);
    let addr = p.line("ops ", Duration::from_secs(10)).await;
    let base = format!("http://{}", addr.trim_start_matches("ops "));

    p.line("end 5", Duration::from_secs(10)).await;
    let (code, _, body) = get(&format!("{base}/healthz")).await;
    assert_eq!(code, 200, "{body}");
    let (code, _, _) = get(&format!("{base}/readyz")).await;
    assert_eq!(code, 200);

    p.line("start 6", Duration::from_secs(10)).await;
    let stuck_at = Instant::now();
    let body = loop {
        let (code, _, body) = get(&format!("{base}/healthz")).await;
        if code == 503 {
            break body;
        }
        assert_eq!(code, 200);
        assert!(
            stuck_at.elapsed() < Duration::from_secs(10),
            "/healthz still 200 long after the loop got stuck: {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(body["live"], false);
    assert!(body["seconds_since_last_tick"].as_f64().unwrap() > 0.6);
    assert!(
        stuck_at.elapsed() >= Duration::from_millis(200),
        "503 came too early"
    );

    // Alive but hung: the server still answers /status with the last good cycle.
    let (code, _, status) = get(&format!("{base}/status")).await;
    assert_eq!(code, 200);
    assert_eq!(status["live"], false);
    assert_eq!(status["last_cycle"]["tick"], 5);
    assert_eq!(status["published"]["probe_tick"], 5);
    p.signal("KILL");
}

#[tokio::test]
async fn otlp_traces_reach_a_local_collector_before_exit() {
    // The sink stands in for an OTLP/HTTP collector (an empty 200 body is a valid, empty
    // ExportTraceServiceResponse).
    let collector = keeper_tests::sink::Sink::start().await;
    let mut cmd = probe::command(PROBE);
    cmd.env("PROBE_CYCLE", "ok")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url())
        .arg("--once");
    let mut p = Probe::spawn(cmd);
    let status = p.wait(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0), "{}", p.stderr());
    // The guard flushed on the way out: the spans are there once the process is gone.
    let got = collector.requests_to("/v1/traces");
    assert!(
        !got.is_empty(),
        "no export before exit; stderr: {}",
        p.stderr()
    );
    assert_eq!(got[0].method, "POST");
    assert_eq!(
        got[0].header("content-type"),
        Some("application/x-protobuf")
    );
    let body = &got[0].body;
    let has = |needle: &[u8]| body.windows(needle.len()).any(|w| w == needle);
    assert!(has(b"runner-probe"), "service.name missing from the export");
    assert!(has(b"cycle"), "cycle span missing from the export");
}

#[tokio::test]
async fn log_format_and_filter_come_from_the_environment() {
    let run = |format: &'static str, filter: &'static str| async move {
        let mut cmd = probe::command(PROBE);
        cmd.env("PROBE_CYCLE", "ok")
            .env("LOG_FORMAT", format)
            .env("RUST_LOG", filter)
            .arg("--once");
        let mut p = Probe::spawn(cmd);
        let status = p.wait(Duration::from_secs(20)).await;
        // Let the stderr reader catch up with the last lines.
        tokio::time::sleep(Duration::from_millis(100)).await;
        (status.code(), p.stderr())
    };

    let (code, json) = run("json", "info").await;
    assert_eq!(code, Some(0));
    let lines: Vec<&str> = json.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for l in &lines {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{l}");
    }
    assert!(json.contains("\"message\":\"cycle finished\""), "{json}");

    let (code, pretty) = run("pretty", "info").await;
    assert_eq!(code, Some(0));
    assert!(pretty.contains("cycle finished"), "{pretty}");
    assert!(
        pretty
            .lines()
            .all(|l| serde_json::from_str::<serde_json::Value>(l).is_err()),
        "{pretty}"
    );

    let (code, quiet) = run("json", "warn").await;
    assert_eq!(code, Some(0));
    assert!(!quiet.contains("cycle finished"), "{quiet}");

    let (code, bad) = run("json", "keeper=loudest").await;
    assert_eq!(code, Some(2));
    assert!(bad.contains("RUST_LOG"), "{bad}");

    let mut cmd = probe::command(PROBE);
    cmd.env("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")
        .arg("--once");
    let mut p = Probe::spawn(cmd);
    assert_eq!(p.wait(Duration::from_secs(20)).await.code(), Some(2));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        p.stderr().contains("OTEL_EXPORTER_OTLP_ENDPOINT"),
        "{}",
        p.stderr()
    );
}

//! Signals over real HTTP against the local stand-ins: streaming of large `/protocol`
//! documents, body caps, timeouts, `Retry-After`, documented error objects, and the request
//! metrics each attempt leaves behind.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test harness: a failed setup is a failed test

use std::time::{Duration, Instant};

use bridge_health::config::{Check, SignalSpec, UpstreamSettings};
use bridge_health::signals::{self, Ctx, PegBatch, SignalReport, Verdict, ready_pegs};
use keeper_runtime::telemetry::Metrics;
use keeper_tests::bridges::{self, BridgeApis, Reply, Route};
use serde_json::json;

fn upstreams(apis: &BridgeApis) -> UpstreamSettings {
    UpstreamSettings {
        defillama_bridges_url: apis.defillama_bridges.clone(),
        defillama_api_url: apis.defillama_api.clone(),
        wormholescan_url: apis.wormholescan.clone(),
        axelarscan_url: apis.axelarscan.clone(),
        timeout: 1,
        attempts: 2,
        retry_min_delay_ms: 10,
        retry_after_cap: 2,
        ..UpstreamSettings::default()
    }
}

fn spec(name: &str, kind_toml: &str) -> SignalSpec {
    let table: toml::Table = toml::from_str(kind_toml).expect("check toml");
    let check = match name.split(':').next().unwrap_or(name) {
        "tvl" => Check::Tvl(toml::Value::Table(table).try_into().unwrap()),
        "wormholescan_health" => {
            Check::WormholeHealth(toml::Value::Table(table).try_into().unwrap())
        }
        "governor_limit" => {
            Check::WormholeGovernorLimit(toml::Value::Table(table).try_into().unwrap())
        }
        "axelar_tvl_alert" => Check::AxelarTvlAlert(toml::Value::Table(table).try_into().unwrap()),
        other => panic!("no check for {other}"),
    };
    SignalSpec {
        name: name.into(),
        weight: 1.0,
        timeout: None,
        attempts: None,
        check,
    }
}

async fn run(s: &SignalSpec, up: &UpstreamSettings, metrics: &Metrics) -> SignalReport {
    keeper_runtime::install_crypto_provider();
    let http = keeper_runtime::http::client(Duration::from_secs(5));
    let pegs = ready_pegs(PegBatch::default());
    let ctx = Ctx {
        http: &http,
        upstreams: up,
        metrics: Some(metrics),
        now: bridges::now(),
        pegs: &pegs,
        eth: None,
    };
    signals::run(s, &ctx).await
}

/// A `/protocol` document of several megabytes: a long daily series and per-day token maps.
fn big_protocol(day_ago: f64, now_tvl: f64) -> serde_json::Value {
    let now = bridges::now();
    let mut points: Vec<(i64, f64)> = (2..3000)
        .rev()
        .map(|k| (now - k * 86_400, day_ago * 1.01))
        .collect();
    points.push((now - 86_400, day_ago));
    points.push((now, now_tvl));
    let mut doc = bridges::protocol_doc("portal", &points);
    let tokens: Vec<_> = points
        .iter()
        .map(|(d, _)| {
            let many: serde_json::Map<String, serde_json::Value> = (0..100)
                .map(|i| (format!("TOKEN{i}"), json!(1234.5678 * f64::from(i))))
                .collect();
            json!({"date": d, "tokens": many})
        })
        .collect();
    doc["chainTvls"]["Ethereum"]["tokensInUsd"] = json!(tokens);
    doc
}

#[tokio::test]
async fn a_protocol_document_bigger_than_any_buffer_is_streamed() {
    let apis = BridgeApis::start().await;
    let doc = big_protocol(2_000_000_000.0, 1_300_000_000.0);
    let body = doc.to_string();
    assert!(
        body.len() > 3 * keeper_runtime::http::MAX_BODY_BYTES,
        "{}",
        body.len()
    );
    apis.set(Route::Protocol("portal".into()), Reply::json(&doc));
    apis.set(
        Route::Tvl("portal".into()),
        Reply::json(&json!(1_300_000_000.0)),
    );
    let up = upstreams(&apis);
    let metrics = Metrics::new("bridge-health");
    let r = run(&spec("tvl:portal", "slug = \"portal\""), &up, &metrics).await;
    assert_eq!(r.verdict, Verdict::Critical, "{}", r.why);
    assert_eq!(r.value["baseline_usd"], 2_000_000_000.0);
    assert!(r.why.contains("fell 35.0%"), "{}", r.why);

    // The same document over a small cap is refused, not buffered: unknown.
    let capped = UpstreamSettings {
        protocol_max_bytes: 1024 * 1024,
        ..up
    };
    let r = run(&spec("tvl:portal", "slug = \"portal\""), &capped, &metrics).await;
    assert_eq!(r.verdict, Verdict::Unknown);
    assert!(r.why.contains("larger than 1048576 bytes"), "{}", r.why);
}

#[tokio::test]
async fn a_slow_upstream_times_out_as_unknown() {
    let apis = BridgeApis::start().await;
    apis.set(
        Route::Health,
        Reply::json(&json!({"status": "OK"})).delayed(Duration::from_secs(5)),
    );
    let mut up = upstreams(&apis);
    up.attempts = 1;
    let metrics = Metrics::new("bridge-health");
    let started = Instant::now();
    let r = run(&spec("wormholescan_health", ""), &up, &metrics).await;
    assert_eq!(r.verdict, Verdict::Unknown);
    assert!(r.why.contains("timed out"), "{}", r.why);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "bounded by the 1 s timeout"
    );
    assert!(
        metrics.render().contains(
            "keeper_source_requests_total{source=\"wormholescan\",outcome=\"timeout\"} 1"
        ),
        "{}",
        metrics.render()
    );
}

#[tokio::test]
async fn retry_after_is_honoured_and_every_attempt_counted() {
    let apis = BridgeApis::start().await;
    apis.push(Route::Limit, Reply::rate_limited(Some(1)));
    let up = upstreams(&apis);
    let metrics = Metrics::new("bridge-health");
    let started = Instant::now();
    let r = run(&spec("governor_limit", "chain_ids = [2]"), &up, &metrics).await;
    assert_eq!(r.verdict, Verdict::Healthy, "{}", r.why);
    assert!(
        started.elapsed() >= Duration::from_millis(950),
        "waited for Retry-After"
    );
    assert_eq!(apis.hits(&Route::Limit), 2);
    let text = metrics.render();
    for outcome in ["rate_limited", "ok"] {
        let line = format!(
            "keeper_source_requests_total{{source=\"wormholescan\",outcome=\"{outcome}\"}} 1"
        );
        assert!(text.contains(&line), "{line} missing from\n{text}");
    }
}

#[tokio::test]
async fn documented_error_objects_are_unknown_with_their_message() {
    let apis = BridgeApis::start().await;
    apis.set(Route::TvlAlert, bridges::axelarscan_method_not_supported());
    apis.set(
        Route::Limit,
        bridges::wormholescan_error(500, 13, "internal error"),
    );
    let up = upstreams(&apis);
    let metrics = Metrics::new("bridge-health");
    let r = run(&spec("axelar_tvl_alert", ""), &up, &metrics).await;
    assert_eq!(r.verdict, Verdict::Unknown);
    assert!(r.why.contains("method not supported"), "{}", r.why);
    assert_eq!(apis.hits(&Route::TvlAlert), 1, "a 4xx is not retried");

    let r = run(&spec("governor_limit", "chain_ids = [2]"), &up, &metrics).await;
    assert_eq!(r.verdict, Verdict::Unknown);
    assert!(
        r.why.contains("HTTP 500") && r.why.contains("internal error"),
        "{}",
        r.why
    );
    assert_eq!(apis.hits(&Route::Limit), 2, "a 5xx is retried");

    // An unknown slug: DefiLlama's error answer, not a zero TVL.
    let r = run(&spec("tvl:nope", "slug = \"nope\""), &up, &metrics).await;
    assert_eq!(r.verdict, Verdict::Unknown);
    assert!(r.why.contains("Protocol not found"), "{}", r.why);
}

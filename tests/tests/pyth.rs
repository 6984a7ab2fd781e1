//! Pyth through the Hermes stand-in (real HTTP): the documented answer, the key as a bearer
//! token, the confidence bound, staleness, and every documented error (HTML, 429 with
//! `Retry-After`, garbage values, unknown ids, malformed bodies).

use std::sync::Arc;
use std::time::{Duration, Instant};

use keeper_runtime::secret::Secret;
use keeper_runtime::telemetry::Metrics;
use keeper_sources::metrics::PriceMetrics;
use keeper_sources::{
    AggregationSettings, Fetched, Observation, PriceFetcher, Pyth, Reason, SourcesSettings,
};
use keeper_tests::upstreams::{CLOUDFLARE_429_HTML, Endpoint, Mode, Source, Ts, UpstreamsHandle};

const USDT_ID: &str = "2b89b9dc8fdf9f34709a5b106b472f0f39bb6ca9ce04b0fd7f2e971688e2e53b";

fn fetcher(s: &SourcesSettings) -> (PriceFetcher, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new("pricing-oracle").with::<PriceMetrics>());
    let assets = keeper_tests::default_assets().0;
    (
        PriceFetcher::new(s, &assets, Some(metrics.clone())),
        metrics,
    )
}

fn pyth(f: &Fetched, asset: &str) -> Observation {
    f.assets
        .iter()
        .find(|a| a.asset.symbol == asset)
        .and_then(|a| a.observations.iter().find(|o| o.source() == Source::Pyth))
        .cloned()
        .unwrap_or_else(|| panic!("no pyth observation for {asset}"))
}

fn reason(f: &Fetched, asset: &str) -> Reason {
    match pyth(f, asset) {
        Observation::Rejected(r) => r.reason,
        Observation::Quote(q) => panic!("{asset} accepted at {}", q.price),
    }
}

#[tokio::test]
async fn one_batched_request_exact_prices_and_publish_time() {
    let up = UpstreamsHandle::start().await;
    up.set_price(Source::Pyth, "USDT", "1.00012345");
    up.set_timestamp(Source::Pyth, "USDT", Ts::Age(7));
    let (f, _) = fetcher(&up.sources_settings());
    let got = f.fetch().await;
    let Observation::Quote(q) = pyth(&got, "USDT") else {
        panic!("USDT rejected")
    };
    assert_eq!(q.price.to_string(), "1.00012345");
    assert_eq!(q.lineage, "pyth");
    assert!(
        (got.now - 8..=got.now - 6).contains(&q.timestamp),
        "publish_time kept"
    );
    // Every asset, USDD included (it has no Chainlink feed), in one request.
    let reqs = up.requests(Endpoint::Pyth);
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].path, "/v2/updates/price/latest");
    let query = reqs[0].query.clone().unwrap_or_default();
    let ids: Vec<String> = url::form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == "ids[]")
        .map(|(_, v)| v.into_owned())
        .collect();
    assert_eq!(ids.len(), 6);
    assert_eq!(ids[0], USDT_ID);
    assert_eq!(reqs[0].param("parsed").as_deref(), Some("true"));
    assert!(
        reqs[0].header("authorization").is_none(),
        "no key, no header"
    );
    // Three lineages for USDT, two for USDD.
    let aggs = got.aggregate(&AggregationSettings::default());
    assert_eq!(aggs[0].lineage_names(), "chainlink, coingecko, pyth");
    assert_eq!(aggs[3].lineage_names(), "coingecko, pyth");
}

#[tokio::test]
async fn the_api_key_goes_out_as_a_bearer_token_and_never_in_errors() {
    let up = UpstreamsHandle::start().await;
    up.require_pyth_key("PYTH-SECRET-KEY");
    let mut s = up.sources_settings();
    let (f, _) = fetcher(&s);
    let got = f.fetch().await;
    let r = reason(&got, "USDT");
    assert_eq!(r.code(), "unavailable", "401 without the key: {r}");
    assert!(r.to_string().contains("401"), "{r}");

    s.pyth_api_key = Some(Secret::shared("PYTH-SECRET-KEY"));
    up.clear_requests();
    let (f, metrics) = fetcher(&s);
    let got = f.fetch().await;
    assert!(matches!(pyth(&got, "USDT"), Observation::Quote(_)));
    let req = up.requests(Endpoint::Pyth).pop().unwrap();
    assert_eq!(req.header("authorization"), Some("Bearer PYTH-SECRET-KEY"));

    // A wrong key: the error names the upstream, never the key.
    s.pyth_api_key = Some(Secret::shared("WRONG-SECRET"));
    let (f, _) = fetcher(&s);
    let got = f.fetch().await;
    let r = reason(&got, "USDT").to_string();
    assert!(r.contains("pyth") && !r.contains("WRONG-SECRET"), "{r}");
    assert!(!metrics.render().contains("SECRET"));
    assert!(!format!("{s:?}").contains("SECRET"));
}

#[tokio::test]
async fn a_wide_confidence_interval_is_rejected() {
    let up = UpstreamsHandle::start().await;
    // 2% of a 1 USD price, beyond the default 1%; DAI at exactly 1% stays.
    up.set_pyth_conf("USDT", "0.02");
    up.set_pyth_conf("DAI", "0.01");
    let (f, _) = fetcher(&up.sources_settings());
    let got = f.fetch().await;
    match reason(&got, "USDT") {
        Reason::WideConfidence { conf_bps, max_bps } => {
            assert_eq!(conf_bps.to_string(), "200");
            assert_eq!(max_bps, 100);
        }
        other => panic!("{other}"),
    }
    assert!(matches!(pyth(&got, "DAI"), Observation::Quote(_)));
    // A tighter bound rejects DAI too.
    let mut s = up.sources_settings();
    s.pyth_max_conf_bps = 50;
    let (f, _) = fetcher(&s);
    assert_eq!(reason(&f.fetch().await, "DAI").code(), "wide_confidence");
}

#[tokio::test]
async fn stale_and_future_updates_are_not_used() {
    let up = UpstreamsHandle::start().await;
    up.set_timestamp(Source::Pyth, "USDT", Ts::Age(121));
    up.set_timestamp(
        Source::Pyth,
        "USDC",
        Ts::At(chrono::Utc::now().timestamp() + 3_600),
    );
    let (f, _) = fetcher(&up.sources_settings());
    let got = f.fetch().await;
    let aggs = got.aggregate(&AggregationSettings::default());
    let usdt = aggs.iter().find(|a| a.asset == "USDT").unwrap();
    let stale = usdt
        .rejected
        .iter()
        .find(|r| r.source == Source::Pyth)
        .expect("pyth rejected");
    assert_eq!(stale.reason.code(), "stale", "{}", stale.reason);
    assert_eq!(usdt.lineage_names(), "chainlink, coingecko");
    let usdc = aggs.iter().find(|a| a.asset == "USDC").unwrap();
    let future = usdc
        .rejected
        .iter()
        .find(|r| r.source == Source::Pyth)
        .expect("pyth rejected");
    assert_eq!(future.reason.code(), "from_future", "{}", future.reason);
}

#[tokio::test]
async fn unknown_ids_are_missing_for_that_asset_only() {
    let up = UpstreamsHandle::start().await;
    up.remove(Source::Pyth, "FDUSD");
    let (f, _) = fetcher(&up.sources_settings());
    let got = f.fetch().await;
    assert_eq!(reason(&got, "FDUSD").code(), "missing");
    assert!(matches!(pyth(&got, "USDT"), Observation::Quote(_)));
    // Without ignore_invalid_price_ids the stand-in answers as Hermes does: 404 for the batch.
    let client = Pyth::new(
        &up.pyth_url(),
        None,
        up.sources_settings().request_policy(),
        None,
    );
    let unknown = "0".repeat(64);
    let direct = reqwest::get(format!(
        "{}/v2/updates/price/latest?ids[]={unknown}&ids[]={USDT_ID}",
        up.pyth_url()
    ))
    .await
    .unwrap();
    assert_eq!(direct.status().as_u16(), 404);
    assert!(
        direct
            .text()
            .await
            .unwrap()
            .starts_with("Price ids not found: ")
    );
    let feeds = client.latest(&[&unknown, USDT_ID]).await.unwrap();
    assert!(!feeds.contains_key(&unknown));
    assert!(feeds[USDT_ID].is_ok());
    // A malformed id never leaves the keeper.
    assert!(client.latest(&["0x12"]).await.is_err());
}

#[tokio::test]
async fn garbage_values_are_invalid_not_prices() {
    let up = UpstreamsHandle::start().await;
    up.set_pyth_raw("USDT", "\"NaN\"", "\"1\"", -8);
    up.set_pyth_raw("USDC", "100000000", "\"1\"", -8);
    up.set_pyth_raw("DAI", "\"-100000000\"", "\"1\"", -8);
    up.set_pyth_raw("TUSD", "\"100000000\"", "\"1\"", 99);
    let (f, _) = fetcher(&up.sources_settings());
    let got = f.fetch().await;
    assert_eq!(reason(&got, "USDT").code(), "invalid_value");
    assert_eq!(reason(&got, "USDC").code(), "invalid_value");
    assert_eq!(reason(&got, "TUSD").code(), "invalid_value");
    // A negative price reads, and aggregation rejects it.
    let aggs = got.aggregate(&AggregationSettings::default());
    let dai = aggs.iter().find(|a| a.asset == "DAI").unwrap();
    let r = dai
        .rejected
        .iter()
        .find(|r| r.source == Source::Pyth)
        .unwrap();
    assert_eq!(r.reason.code(), "not_positive");
    assert!(dai.has_quorum(), "chainlink and coingecko still agree");
}

#[tokio::test]
async fn error_pages_and_rate_limits_make_pyth_unavailable() {
    let up = UpstreamsHandle::start().await;
    let (f, metrics) = fetcher(&up.sources_settings());

    up.set_mode(
        Source::Pyth,
        Mode::Respond {
            status: 502,
            content_type: "text/html".into(),
            body: "<html><body><h1>502 Bad Gateway</h1></body></html>".into(),
            retry_after: None,
        },
    );
    let r = reason(&f.fetch().await, "USDT").to_string();
    assert!(r.contains("pyth") && r.contains("502"), "{r}");

    up.set_mode(Source::Pyth, Mode::body("<html>not json</html>"));
    let r = reason(&f.fetch().await, "USDT").to_string();
    assert!(r.contains("malformed"), "{r}");

    up.set_mode(Source::Pyth, Mode::body(r#"{"parsed":"nope"}"#));
    assert_eq!(reason(&f.fetch().await, "USDT").code(), "unavailable");

    // A 429 with a long Retry-After: one request, then no calls until it passes.
    up.heal();
    up.clear_requests();
    up.set_mode(
        Source::Pyth,
        Mode::Respond {
            status: 429,
            content_type: "text/html; charset=UTF-8".into(),
            body: CLOUDFLARE_429_HTML.into(),
            retry_after: Some(60),
        },
    );
    let started = Instant::now();
    let r = reason(&f.fetch().await, "USDT").to_string();
    assert!(r.contains("429") || r.contains("rate"), "{r}");
    assert!(started.elapsed() < Duration::from_secs(5), "not waited out");
    assert_eq!(up.request_count(Source::Pyth), 1);
    up.heal();
    let r = reason(&f.fetch().await, "USDT").to_string();
    assert!(r.contains("Retry-After"), "{r}");
    assert_eq!(up.request_count(Source::Pyth), 1, "the gate held");
    assert!(
        metrics
            .render()
            .contains("keeper_source_requests_total{source=\"pyth\",outcome=\"backing_off\"}")
    );

    // A short Retry-After is waited out within the tick.
    let up = UpstreamsHandle::start().await;
    let (f, _) = fetcher(&up.sources_settings());
    up.push_mode(Source::Pyth, Mode::rate_limited(Some(1)), 1);
    let got = f.fetch().await;
    assert!(matches!(pyth(&got, "USDT"), Observation::Quote(_)));
    assert_eq!(up.request_count(Source::Pyth), 2);
}

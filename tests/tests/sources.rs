//! Price sources against the local stand-ins (real HTTP): every documented success and error
//! shape, hostile values, failover, retries, `Retry-After`, and aggregation of what came back.

use std::sync::Arc;
use std::time::{Duration, Instant};

use keeper_runtime::secret::Secret;
use keeper_runtime::telemetry::Metrics;
use keeper_sources::aggregate::aggregate;
use keeper_sources::metrics::PriceMetrics;
use keeper_sources::{
    AggregationSettings, AssetConfig, CoinGecko, CoinGeckoTier, DefiLlama, EthCall, EvmRpc,
    Fetched, Observation, PriceFetcher, Reason, RpcErrorKind, SourcesSettings, chainlink,
};
use keeper_tests::upstreams::{
    ALLOW_LOCK, Endpoint, LATEST_ROUND_DATA, Mode, REFERENCE_ROUND_ID, Round, RpcAnswer, Source,
    Ts, UpstreamsHandle,
};

/// "Now" for the reference fixtures (2025-12-31T23:01:40Z).
const FIXTURE_NOW: i64 = 1_767_222_100;

fn fetcher(up: &UpstreamsHandle, s: &SourcesSettings) -> (PriceFetcher, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new("pricing-oracle").with::<PriceMetrics>());
    let assets = keeper_tests::default_assets().0;
    let _ = up;
    (
        PriceFetcher::new(s, &assets, Some(metrics.clone())),
        metrics,
    )
}

fn obs<'a>(f: &'a Fetched, asset: &str, source: Source) -> &'a Observation {
    f.assets
        .iter()
        .find(|a| a.asset.symbol == asset)
        .unwrap_or_else(|| panic!("no asset {asset}"))
        .observations
        .iter()
        .find(|o| o.source() == source)
        .unwrap_or_else(|| panic!("no {source} observation for {asset}"))
}

fn price(f: &Fetched, asset: &str, source: Source) -> String {
    match obs(f, asset, source) {
        Observation::Quote(q) => q.price.to_string(),
        Observation::Rejected(r) => panic!("{asset}/{source} rejected: {}", r.reason),
    }
}

fn reason(f: &Fetched, asset: &str, source: Source) -> Reason {
    match obs(f, asset, source) {
        Observation::Rejected(r) => r.reason.clone(),
        Observation::Quote(q) => panic!("{asset}/{source} accepted at {}", q.price),
    }
}

fn published(f: &Fetched, asset: &str) -> Option<u64> {
    f.aggregate(&AggregationSettings::default())
        .into_iter()
        .find(|a| a.asset == asset)
        .and_then(|a| a.price_micro())
}

#[tokio::test]
async fn every_source_quotes_every_asset_in_one_request_each() {
    let up = UpstreamsHandle::start().await;
    up.set_price(Source::Chainlink, "USDT", "0.99985");
    up.set_price(Source::Coingecko, "USDT", "1.000213");
    up.set_price(Source::Defillama, "USDT", "0.9999");
    let (f, metrics) = fetcher(&up, &up.sources_settings());
    let got = f.fetch().await;
    assert_eq!(got.assets.len(), 6);
    for a in &got.assets {
        let want = a.asset.sources();
        let seen: Vec<Source> = a.observations.iter().map(Observation::source).collect();
        assert_eq!(seen, want, "{}", a.asset.symbol);
        for o in &a.observations {
            assert!(matches!(o, Observation::Quote(_)), "{o:?}");
        }
    }
    assert_eq!(price(&got, "USDT", Source::Chainlink), "0.99985000");
    assert_eq!(price(&got, "USDT", Source::Coingecko), "1.000213");
    assert_eq!(price(&got, "USDT", Source::Defillama), "0.9999");
    // One value per lineage: Chainlink 0.99985, CoinGecko's two paths 1.0000565, Pyth 1.0.
    assert_eq!(published(&got, "USDT"), Some(1_000_000));
    assert_eq!(published(&got, "USDD"), Some(1_000_000));

    let cg = up.requests(Endpoint::Coingecko);
    assert_eq!(cg.len(), 1);
    assert_eq!(cg[0].path, "/api/v3/simple/price");
    assert_eq!(
        cg[0].param("ids").as_deref(),
        Some("tether,usd-coin,dai,usdd,true-usd,first-digital-usd")
    );
    assert_eq!(cg[0].param("vs_currencies").as_deref(), Some("usd"));
    assert_eq!(
        cg[0].param("include_last_updated_at").as_deref(),
        Some("true")
    );
    assert_eq!(cg[0].param("precision").as_deref(), Some("full"));
    assert!(cg[0].header("x-cg-demo-api-key").is_none());
    let dl = up.requests(Endpoint::Defillama);
    assert_eq!(dl.len(), 1);
    assert_eq!(
        dl[0].path,
        "/prices/current/coingecko:tether,coingecko:usd-coin,coingecko:dai,coingecko:usdd,coingecko:true-usd,coingecko:first-digital-usd"
    );
    assert_eq!(dl[0].param("searchWidth").as_deref(), Some("4h"));
    // One JSON-RPC batch: five latestRoundData() and five decimals(), all on the first endpoint.
    let eth = up.requests(Endpoint::Eth(0));
    assert_eq!(eth.len(), 1);
    let batch: serde_json::Value = serde_json::from_str(&eth[0].body).unwrap();
    assert_eq!(batch.as_array().unwrap().len(), 10);
    assert!(up.requests(Endpoint::Eth(1)).is_empty());

    // decimals() is cached: the next batch only reads the rounds.
    up.clear_requests();
    let again = f.fetch().await;
    assert_eq!(published(&again, "USDT"), Some(1_000_000));
    let eth = up.requests(Endpoint::Eth(0));
    let batch: serde_json::Value = serde_json::from_str(&eth[0].body).unwrap();
    let calls = batch.as_array().unwrap();
    assert_eq!(calls.len(), 5);
    assert!(
        calls
            .iter()
            .all(|c| c["params"][0]["data"] == LATEST_ROUND_DATA)
    );

    let text = metrics.render();
    for want in [
        "pricing_oracle_price{asset=\"USDT\",source=\"coingecko\"} 1.000213",
        "pricing_oracle_price{asset=\"USDT\",source=\"chainlink\"} 0.99985",
        "keeper_source_requests_total{source=\"coingecko\",outcome=\"ok\"} 2",
        "keeper_source_requests_total{source=\"chainlink\",outcome=\"ok\"} 2",
        "keeper_source_latency_seconds_count{source=\"defillama\"} 2",
    ] {
        assert!(text.contains(want), "missing {want} in\n{text}");
    }
}

#[tokio::test]
async fn coingecko_fixtures_parse_exactly_and_absent_ids_are_missing() {
    let up = UpstreamsHandle::start().await;
    let (f, _) = fetcher(&up, &up.sources_settings());
    up.set_mode(
        Source::Coingecko,
        Mode::fixture(200, "coingecko/simple_price.json"),
    );
    let got = f.fetch_at(FIXTURE_NOW).await;
    assert_eq!(price(&got, "USDT", Source::Coingecko), "1.000213");
    assert_eq!(price(&got, "TUSD", Source::Coingecko), "0.997650");
    match obs(&got, "USDC", Source::Coingecko) {
        Observation::Quote(q) => assert_eq!(q.timestamp, 1_767_222_015),
        o => panic!("{o:?}"),
    }

    up.set_mode(
        Source::Coingecko,
        Mode::fixture(200, "coingecko/simple_price_partial.json"),
    );
    let got = f.fetch_at(FIXTURE_NOW).await;
    assert_eq!(price(&got, "USDC", Source::Coingecko), "0.999874");
    let r = reason(&got, "DAI", Source::Coingecko);
    assert_eq!(r.code(), "missing");
    assert!(r.to_string().contains("\"dai\""), "{r}");

    up.set_mode(
        Source::Coingecko,
        Mode::fixture(200, "coingecko/simple_price_empty.json"),
    );
    let got = f.fetch_at(FIXTURE_NOW).await;
    for a in ["USDT", "USDC", "DAI", "USDD", "TUSD", "FDUSD"] {
        assert_eq!(reason(&got, a, Source::Coingecko).code(), "missing");
    }
}

#[tokio::test]
async fn coingecko_token_prices_match_addresses() {
    let up = UpstreamsHandle::start().await;
    let s = up.sources_settings();
    let cg = CoinGecko::from_settings(&s, None);
    up.set_mode(
        Source::Coingecko,
        Mode::fixture(200, "coingecko/token_price_ethereum.json"),
    );
    let p = cg
        .token_price("ethereum", &["0xdAC17F958D2ee523a2206206994597C13D831ec7"])
        .await
        .unwrap();
    let q = p["0xdAC17F958D2ee523a2206206994597C13D831ec7"]
        .as_ref()
        .unwrap();
    assert_eq!(q.price.to_string(), "1.000213");
    let req = up.requests(Endpoint::Coingecko).pop().unwrap();
    assert_eq!(req.path, "/api/v3/simple/token_price/ethereum");

    up.heal();
    let jusdt = "EQBynBO23ywHy_CgarY9NK9FTz0yDsG82PtcbSTQgGoXwiuA";
    up.set_token_price("the-open-network", jusdt, "0.9712", Ts::Fresh);
    let p = cg.token_price("the-open-network", &[jusdt]).await.unwrap();
    assert_eq!(p[jusdt].as_ref().unwrap().price.to_string(), "0.9712");
    // TON addresses are case-sensitive.
    let p = cg
        .token_price("the-open-network", &[&jusdt.to_ascii_lowercase()])
        .await
        .unwrap();
    assert!(p.is_empty());
}

#[tokio::test]
async fn coingecko_429_json_honours_a_short_retry_after() {
    let up = UpstreamsHandle::start().await;
    let (f, metrics) = fetcher(&up, &up.sources_settings());
    up.push_mode(Source::Coingecko, Mode::rate_limited(Some(1)), 1);
    let started = Instant::now();
    let got = f.fetch().await;
    assert_eq!(price(&got, "USDT", Source::Coingecko), "1.0");
    let reqs = up.requests(Endpoint::Coingecko);
    assert_eq!(reqs.len(), 2);
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "retried before Retry-After"
    );
    assert!(
        metrics.render().contains(
            "keeper_source_requests_total{source=\"coingecko\",outcome=\"rate_limited\"} 1"
        )
    );
}

#[tokio::test]
async fn coingecko_cloudflare_429_with_a_long_retry_after_is_not_hammered() {
    let up = UpstreamsHandle::start().await;
    let (f, _) = fetcher(&up, &up.sources_settings());
    up.set_mode(
        Source::Coingecko,
        Mode::fixture(429, "coingecko/error_429_cloudflare.html").with_retry_after(120),
    );
    let got = f.fetch().await;
    let r = reason(&got, "USDT", Source::Coingecko);
    let text = r.to_string();
    assert!(
        text.contains("rate limited") && text.contains("120s"),
        "{text}"
    );
    assert!(
        text.contains("<html page>") && !text.contains("DOCTYPE"),
        "{text}"
    );
    // Retry-After (120 s) exceeds the 1 s retry cap: no retry now, and none on the next tick.
    assert_eq!(up.request_count(Source::Coingecko), 1);
    up.heal();
    let got = f.fetch().await;
    let r = reason(&got, "USDT", Source::Coingecko);
    assert!(r.to_string().contains("Retry-After"), "{r}");
    assert_eq!(up.request_count(Source::Coingecko), 1);
    // The other sources still publish.
    assert_eq!(published(&got, "USDT"), Some(1_000_000));
}

#[tokio::test]
async fn coingecko_error_shapes_are_reported() {
    let up = UpstreamsHandle::start().await;
    let (f, _) = fetcher(&up, &up.sources_settings());
    for (status, file, want) in [
        (
            401,
            "coingecko/error_10002.json",
            "HTTP 401: error 10002: API Key Missing",
        ),
        (
            400,
            "coingecko/error_10010.json",
            "error 10010: If you are using Pro API key",
        ),
        (400, "coingecko/error_10011.json", "error 10011"),
        (
            429,
            "coingecko/error_429.json",
            "error 429: You've exceeded the Rate Limit",
        ),
    ] {
        up.set_mode(Source::Coingecko, Mode::fixture(status, file));
        let got = f.fetch().await;
        let r = reason(&got, "USDT", Source::Coingecko).to_string();
        assert!(r.contains(want), "{file}: {r}");
    }
    // A persistent 5xx is retried (retries = 1), then reported.
    up.clear_requests();
    up.set_mode(Source::Coingecko, Mode::server_error(503));
    let got = f.fetch().await;
    assert!(
        reason(&got, "DAI", Source::Coingecko)
            .to_string()
            .contains("HTTP 503")
    );
    assert_eq!(up.request_count(Source::Coingecko), 2);
    // A transient 5xx is recovered by the retry.
    up.heal();
    up.push_mode(Source::Coingecko, Mode::server_error(502), 1);
    let got = f.fetch().await;
    assert_eq!(price(&got, "DAI", Source::Coingecko), "1.0");
}

#[tokio::test]
async fn coingecko_tiers_send_their_header() {
    let up = UpstreamsHandle::start().await;
    up.require_coingecko_key("x-cg-pro-api-key", "CG-pro-secret");
    let mut s = up.sources_settings();
    s.coingecko_api_key = Some(Secret::shared("CG-pro-secret"));
    s.coingecko_tier = Some(CoinGeckoTier::Pro);
    let (f, metrics) = fetcher(&up, &s);
    let got = f.fetch().await;
    assert_eq!(price(&got, "USDT", Source::Coingecko), "1.0");
    let req = up.requests(Endpoint::Coingecko).pop().unwrap();
    assert_eq!(req.header("x-cg-pro-api-key"), Some("CG-pro-secret"));

    // A demo key on the pro host: the API's 10011, and the key is never shown.
    s.coingecko_tier = Some(CoinGeckoTier::Demo);
    let (f, _) = fetcher(&up, &s);
    let got = f.fetch().await;
    let r = reason(&got, "USDT", Source::Coingecko).to_string();
    assert!(r.contains("10011"), "{r}");
    // Keyless: 10002.
    s.coingecko_tier = None;
    s.coingecko_api_key = None;
    let (f, _) = fetcher(&up, &s);
    let got = f.fetch().await;
    let r = reason(&got, "USDT", Source::Coingecko).to_string();
    assert!(r.contains("10002"), "{r}");
    for text in [format!("{got:?}"), metrics.render(), format!("{s:?}")] {
        assert!(!text.contains("CG-pro-secret"));
    }
}

fn llama_assets() -> Vec<AssetConfig> {
    let asset = |symbol: &str, id: u16, key: &str, cg: &str| AssetConfig {
        symbol: symbol.into(),
        id,
        chainlink: None,
        coingecko_id: Some(cg.into()),
        defillama_key: Some(key.into()),
        pyth_id: None,
        defillama_lineage: None,
        sanity_band: None,
        deviation_bps: None,
        heartbeat: None,
        max_step_bps: None,
    };
    vec![
        asset("USDT", 1, "coingecko:tether", "tether"),
        asset(
            "USDC",
            2,
            "ethereum:0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48",
            "usd-coin",
        ),
        asset(
            "jUSDT",
            7,
            "ton:EQBynBO23ywHy_CgarY9NK9FTz0yDsG82PtcbSTQgGoXwiuA",
            "tether",
        ),
    ]
}

#[tokio::test]
async fn defillama_fixtures_keys_and_search_width() {
    let assets = llama_assets();
    let up = UpstreamsHandle::start_with(&assets, 1).await;
    let s = up.sources_settings();
    let f = PriceFetcher::new(&s, &assets, None);
    up.set_mode(
        Source::Defillama,
        Mode::fixture(200, "defillama/prices_current.json"),
    );
    let got = f.fetch_at(FIXTURE_NOW).await;
    assert_eq!(price(&got, "USDT", Source::Defillama), "1.000213");
    // The checksummed EVM key matches the lower-cased answer.
    assert_eq!(price(&got, "USDC", Source::Defillama), "0.999874");
    match obs(&got, "jUSDT", Source::Defillama) {
        Observation::Quote(q) => {
            assert_eq!(q.price.to_string(), "0.9712");
            assert_eq!(q.confidence.unwrap().to_string(), "0.9");
        }
        o => panic!("{o:?}"),
    }
    // Keys go out verbatim: TON addresses are case-sensitive.
    let req = up.requests(Endpoint::Defillama).pop().unwrap();
    assert!(
        req.path
            .ends_with(",ton:EQBynBO23ywHy_CgarY9NK9FTz0yDsG82PtcbSTQgGoXwiuA"),
        "{}",
        req.path
    );

    up.set_mode(
        Source::Defillama,
        Mode::fixture(200, "defillama/prices_current_search_width_dropped.json"),
    );
    let got = f.fetch_at(FIXTURE_NOW).await;
    let r = reason(&got, "jUSDT", Source::Defillama);
    assert_eq!(r.code(), "missing");
    assert!(r.to_string().contains("searchWidth"), "{r}");
    up.set_mode(
        Source::Defillama,
        Mode::fixture(200, "defillama/prices_current_empty.json"),
    );
    let got = f.fetch_at(FIXTURE_NOW).await;
    assert_eq!(reason(&got, "USDT", Source::Defillama).code(), "missing");

    // The stand-in drops coins older than searchWidth (4h) itself.
    up.heal();
    up.set_timestamp(Source::Defillama, "USDT", Ts::Age(5 * 3600));
    up.set_timestamp(Source::Defillama, "USDC", Ts::Age(3 * 3600));
    let got = f.fetch().await;
    assert_eq!(reason(&got, "USDT", Source::Defillama).code(), "missing");
    // Within searchWidth but beyond max_age (600 s): returned, then judged stale.
    let agg = got.aggregate(&AggregationSettings::default());
    let usdc = agg.iter().find(|a| a.asset == "USDC").unwrap();
    assert!(
        usdc.rejected
            .iter()
            .any(|r| r.source == Source::Defillama && r.reason.code() == "stale"),
        "{usdc:?}"
    );
}

#[tokio::test]
async fn defillama_client_is_reusable_for_peg_keys() {
    let up = UpstreamsHandle::start().await;
    let jusdc = "ton:EQB-MPwrd1G6WKNkLz_VnV6WqBDd142KMQv-g1O-8QUA3728";
    up.set_defillama_coin(jusdc, "0.9705", Ts::Fresh);
    let dl = DefiLlama::new(
        &Secret::new(up.defillama_url()),
        "4h",
        up.sources_settings().request_policy(),
        None,
    );
    let coins = dl
        .current(&[
            jusdc,
            "ton:EQCxE6mUtQJKFnGfaROTKOt1lZbDiiX1kCixRv7Nw2Id_sDs",
        ])
        .await
        .unwrap();
    assert_eq!(coins.len(), 1);
    assert_eq!(coins[jusdc].as_ref().unwrap().price.to_string(), "0.9705");
    up.push_mode(Source::Defillama, Mode::rate_limited_html(Some(60)), 1);
    let e = dl.current(&[jusdc]).await.unwrap_err();
    assert!(e.to_string().contains("rate limited"), "{e}");
    assert!(dl.current(&["ton:EQ/../x"]).await.is_err());
}

#[tokio::test]
async fn chainlink_worked_example_and_batch_fixtures_decode() {
    let up = UpstreamsHandle::start().await;
    let s = up.sources_settings();
    let rpc = EvmRpc::new(&s.eth_rpc_urls, s.request_policy(), None, "chainlink");
    let usdt = keeper_sources::parse_address(&up.chainlink_proxy("USDT")).unwrap();
    up.push_endpoint_mode(
        Endpoint::Eth(0),
        Mode::fixture(200, "eth/latest_round_data_usdt.json"),
        1,
    );
    let out = rpc
        .eth_call(&EthCall::selector(usdt, chainlink::LATEST_ROUND_DATA))
        .await
        .unwrap();
    let round = chainlink::decode_round(&out).unwrap();
    assert_eq!(round.round_id.to_string(), REFERENCE_ROUND_ID.to_string());
    assert!(REFERENCE_ROUND_ID > u128::from(u64::MAX));
    assert_eq!(round.answer.to_string(), "99985000");
    match chainlink::evaluate("USDT", &round, 8, 86_400, 600, FIXTURE_NOW) {
        Observation::Quote(q) => {
            assert_eq!(keeper_sources::price_micro(q.price), Ok(999_850))
        }
        o => panic!("{o:?}"),
    }

    // A batch answered out of order is matched by id.
    up.push_endpoint_mode(
        Endpoint::Eth(0),
        Mode::fixture(200, "eth/batch_round_and_decimals.json"),
        1,
    );
    let out = rpc
        .eth_call_batch(&[
            EthCall::selector(usdt, chainlink::LATEST_ROUND_DATA),
            EthCall::selector(usdt, chainlink::DECIMALS),
        ])
        .await;
    assert!(chainlink::decode_round(out[0].as_ref().unwrap()).is_ok());
    assert_eq!(chainlink::decode_decimals(out[1].as_ref().unwrap()), Ok(8));

    // The same round served from state, through the whole fetcher.
    up.set_round(
        "USDT",
        Round {
            round_id: REFERENCE_ROUND_ID,
            answer: 99_985_000,
            started_at: Some(1_767_222_000),
            updated_at: Some(1_767_222_000),
            answered_in_round: REFERENCE_ROUND_ID,
        },
    );
    let (f, _) = fetcher(&up, &s);
    let got = f.fetch_at(FIXTURE_NOW).await;
    assert_eq!(price(&got, "USDT", Source::Chainlink), "0.99985000");
}

#[tokio::test]
async fn chainlink_errors_fail_over_to_the_next_endpoint() {
    let up = UpstreamsHandle::start().await;
    let (f, _) = fetcher(&up, &up.sources_settings());
    for (name, mode) in [
        ("code 3 revert", Mode::fixture(200, "eth/revert_code3.json")),
        ("-32000", Mode::rpc_error(-32000, "execution reverted")),
        ("0x", Mode::EmptyResult),
        (
            "alchemy 429",
            Mode::fixture(429, "eth/rate_limit_alchemy_429.json"),
        ),
        (
            "quicknode",
            Mode::fixture(200, "eth/rate_limit_quicknode_32012.json"),
        ),
        ("-32016", Mode::fixture(200, "eth/rate_limit_32016.json")),
        (
            "html 502",
            Mode::Respond {
                status: 502,
                content_type: "text/html".into(),
                body: "<html><body>502 Bad Gateway</body></html>".into(),
                retry_after: None,
            },
        ),
        ("garbage", Mode::body("{\"jsonrpc\":\"2.0\",")),
    ] {
        up.heal();
        up.clear_requests();
        up.set_endpoint_mode(Endpoint::Eth(0), mode);
        let got = f.fetch().await;
        for a in ["USDT", "USDC", "DAI", "TUSD", "FDUSD"] {
            assert_eq!(price(&got, a, Source::Chainlink), "1.00000000", "{name}");
        }
        assert!(!up.requests(Endpoint::Eth(0)).is_empty(), "{name}");
        assert!(!up.requests(Endpoint::Eth(1)).is_empty(), "{name}");
    }
    // A dead first endpoint.
    up.heal();
    up.set_endpoint_down(Endpoint::Eth(0), true);
    let got = f.fetch().await;
    assert_eq!(published(&got, "DAI"), Some(1_000_000));
    assert_eq!(price(&got, "DAI", Source::Chainlink), "1.00000000");
}

#[tokio::test]
async fn chainlink_rate_limit_backs_the_endpoint_off() {
    let up = UpstreamsHandle::start().await;
    let (f, _) = fetcher(&up, &up.sources_settings());
    // Infura's -32005 with backoff_seconds = 30 over HTTP 429.
    up.set_endpoint_mode(
        Endpoint::Eth(0),
        Mode::fixture(429, "eth/rate_limit_infura_32005.json"),
    );
    let got = f.fetch().await;
    assert_eq!(price(&got, "USDT", Source::Chainlink), "1.00000000");
    assert_eq!(up.requests(Endpoint::Eth(0)).len(), 1);
    // The next tick skips the rate-limited endpoint entirely.
    let got = f.fetch().await;
    assert_eq!(price(&got, "USDT", Source::Chainlink), "1.00000000");
    assert_eq!(up.requests(Endpoint::Eth(0)).len(), 1);
    assert_eq!(up.requests(Endpoint::Eth(1)).len(), 2);

    // With every endpoint rate limited beyond the cap, the source reports it and stops.
    up.set_endpoint_mode(Endpoint::Eth(1), Mode::rate_limited(Some(300)));
    up.clear_requests();
    let started = Instant::now();
    let got = f.fetch().await;
    let r = reason(&got, "USDT", Source::Chainlink).to_string();
    assert!(
        r.contains("rate_limited") || r.contains("backing_off"),
        "{r}"
    );
    assert!(up.requests(Endpoint::Eth(1)).len() <= 1);
    assert!(started.elapsed() < Duration::from_secs(5));
    // The other two sources still carry the asset.
    assert_eq!(published(&got, "USDT"), Some(1_000_000));
}

#[tokio::test]
async fn chainlink_reverts_everywhere_are_errors_not_retried() {
    let up = UpstreamsHandle::start().await;
    let (f, _) = fetcher(&up, &up.sources_settings());
    up.set_mode(
        Source::Chainlink,
        Mode::fixture(200, "eth/revert_code3.json"),
    );
    let got = f.fetch().await;
    let r = reason(&got, "USDT", Source::Chainlink).to_string();
    assert!(
        r.contains("revert (code 3)") && r.contains("eth_rpc#2"),
        "{r}"
    );
    assert_eq!(up.requests(Endpoint::Eth(0)).len(), 1);
    assert_eq!(up.requests(Endpoint::Eth(1)).len(), 1);

    up.set_mode(
        Source::Chainlink,
        Mode::fixture(200, "eth/empty_result.json"),
    );
    let got = f.fetch().await;
    let r = reason(&got, "USDT", Source::Chainlink).to_string();
    assert!(r.contains("empty_result"), "{r}");

    // One feed reverting leaves the others alone.
    up.heal();
    up.set_chainlink_call("TUSD", LATEST_ROUND_DATA, RpcAnswer::revert());
    up.set_chainlink_call(
        "FDUSD",
        LATEST_ROUND_DATA,
        RpcAnswer::Result("0xdeadbeef".into()),
    );
    let got = f.fetch().await;
    assert!(
        reason(&got, "TUSD", Source::Chainlink)
            .to_string()
            .contains("revert")
    );
    assert_eq!(
        reason(&got, "FDUSD", Source::Chainlink).code(),
        "invalid_value"
    );
    assert_eq!(price(&got, "USDC", Source::Chainlink), "1.00000000");
    assert_eq!(published(&got, "TUSD"), Some(1_000_000));
}

#[tokio::test]
async fn chainlink_rounds_are_judged_by_the_design_rules() {
    let up = UpstreamsHandle::start().await;
    let (f, _) = fetcher(&up, &up.sources_settings());
    let now = chrono::Utc::now().timestamp() as u64;
    let round = |answer: i128, updated: u64, answered: u128| Round {
        round_id: REFERENCE_ROUND_ID + 5,
        answer,
        started_at: Some(updated),
        updated_at: Some(updated),
        answered_in_round: answered,
    };
    up.set_round("USDT", round(-100_000_000, now, REFERENCE_ROUND_ID + 5));
    up.set_round("USDC", round(100_000_000, 0, REFERENCE_ROUND_ID + 5));
    up.set_round(
        "DAI",
        round(100_000_000, now - 3_600 - 601, REFERENCE_ROUND_ID + 5),
    );
    up.set_round(
        "TUSD",
        round(100_000_000, now + 3_600, REFERENCE_ROUND_ID + 5),
    );
    up.set_round("FDUSD", round(100_000_000, now, REFERENCE_ROUND_ID + 4));
    let got = f.fetch().await;
    assert_eq!(reason(&got, "USDT", Source::Chainlink), Reason::NotPositive);
    assert_eq!(reason(&got, "USDC", Source::Chainlink), Reason::NoTimestamp);
    assert_eq!(reason(&got, "DAI", Source::Chainlink).code(), "stale");
    assert_eq!(
        reason(&got, "TUSD", Source::Chainlink).code(),
        "from_future"
    );
    let r = reason(&got, "FDUSD", Source::Chainlink);
    assert_eq!(r.code(), "incomplete_round");
    assert!(
        r.to_string()
            .contains(&(REFERENCE_ROUND_ID + 4).to_string()),
        "{r}"
    );
    // DAI's heartbeat is 3600 s: 3600 + 600 grace is still fresh.
    up.set_round(
        "DAI",
        round(99_990_000, now - 3_600 - 500, REFERENCE_ROUND_ID + 5),
    );
    up.set_decimals("DAI", 8);
    let got = f.fetch().await;
    assert_eq!(price(&got, "DAI", Source::Chainlink), "0.99990000");
}

#[tokio::test]
async fn evm_bool_calls_for_the_bridge_keeper() {
    let up = UpstreamsHandle::start_with(&keeper_tests::default_assets(), 1).await;
    let s = up.sources_settings();
    let rpc = EvmRpc::new(&s.eth_rpc_urls, s.request_policy(), None, "eth_rpc");
    let bridge_str = "0xb323692b6d4DB96af1f52E4499a2bd0Ded9af3C5";
    let bridge = keeper_sources::parse_address(bridge_str).unwrap();
    let sel = [0x69, 0xd3, 0x8e, 0x1c];
    up.set_eth_bool(bridge_str, ALLOW_LOCK, false);
    assert_eq!(rpc.call_bool(bridge, sel).await, Ok(false));
    up.set_eth_bool(bridge_str, ALLOW_LOCK, true);
    assert_eq!(rpc.call_bool(bridge, sel).await, Ok(true));
    up.push_endpoint_mode(
        Endpoint::Eth(0),
        Mode::fixture(200, "eth/allow_lock_true.json"),
        1,
    );
    assert_eq!(rpc.call_bool(bridge, sel).await, Ok(true));
    up.set_eth_call(
        bridge_str,
        ALLOW_LOCK,
        RpcAnswer::Result(format!("0x{:064x}", 2)),
    );
    assert_eq!(
        rpc.call_bool(bridge, sel).await.unwrap_err().kind,
        RpcErrorKind::Malformed
    );
    up.clear_eth_call(bridge_str, ALLOW_LOCK);
    // No contract there: "0x".
    assert_eq!(
        rpc.call_bool(bridge, sel).await.unwrap_err().kind,
        RpcErrorKind::EmptyResult
    );
}

/// Hostile values from CoinGecko and DefiLlama for USDT: each is a rejection with a reason,
/// USDT is never published from Chainlink alone, and the other assets are unaffected.
#[tokio::test]
async fn hostile_values_are_rejected_with_reasons() {
    let up = UpstreamsHandle::start().await;
    let (f, _) = fetcher(&up, &up.sources_settings());
    for (value, code) in [
        ("\"NaN\"", "invalid_value"),
        ("\"Infinity\"", "invalid_value"),
        ("\"1.0\"", "invalid_value"),
        ("-1", "not_positive"),
        ("0", "not_positive"),
        ("-0.0", "not_positive"),
        ("1e308", "invalid_value"),
        ("1e-400", "invalid_value"),
        ("null", "invalid_value"),
        ("{\"value\":1.0}", "invalid_value"),
        ("[1.0]", "invalid_value"),
        ("true", "invalid_value"),
        ("1000000", "outside_band"),
        ("0.0001", "outside_band"),
    ] {
        up.set_price(Source::Coingecko, "USDT", value);
        up.set_price(Source::Defillama, "USDT", value);
        let got = f.fetch().await;
        let agg = got.aggregate(&AggregationSettings::default());
        let usdt = agg.iter().find(|a| a.asset == "USDT").unwrap();
        // Both CoinGecko paths are rejected: Chainlink and Pyth alone set the price.
        assert_eq!(usdt.price_micro(), Some(1_000_000), "{value} published");
        assert_eq!(usdt.lineage_names(), "chainlink, pyth", "{value}");
        for source in [Source::Coingecko, Source::Defillama] {
            let r = usdt
                .rejected
                .iter()
                .find(|r| r.source == source)
                .unwrap_or_else(|| panic!("{value}: {source} not rejected"));
            assert_eq!(r.reason.code(), code, "{value} from {source}: {}", r.reason);
        }
        assert_eq!(published(&got, "USDC"), Some(1_000_000), "{value}");
    }
    // Hostile timestamps.
    up.set_price(Source::Coingecko, "USDT", "1.0");
    for ts in ["null", "\"1767222012\"", "-5", "1.5", "{}"] {
        up.set_timestamp(Source::Coingecko, "USDT", Ts::Raw(ts.into()));
        let got = f.fetch().await;
        assert_eq!(
            reason(&got, "USDT", Source::Coingecko).code(),
            "invalid_value",
            "{ts}"
        );
    }
}

/// Whole-body attacks: invalid JSON (bare NaN), garbage, HTML with 200, 10 MB, never-ending.
#[tokio::test]
async fn hostile_bodies_make_the_source_unavailable_not_the_cycle() {
    let up = UpstreamsHandle::start().await;
    let mut s = up.sources_settings();
    s.request_timeout = 1;
    s.retries = 0;
    let (f, _) = fetcher(&up, &s);
    let cases: Vec<(&str, Mode, &str)> = vec![
        (
            "bare NaN",
            Mode::body("{\"tether\":{\"usd\":NaN,\"last_updated_at\":1}}"),
            "malformed",
        ),
        (
            "bare Infinity",
            Mode::body("{\"tether\":{\"usd\":Infinity}}"),
            "malformed",
        ),
        ("garbage", Mode::body("\u{0}\u{1}garbage"), "malformed"),
        ("array", Mode::body("[1,2,3]"), "malformed"),
        ("number", Mode::body("1.0"), "malformed"),
        (
            "html 200",
            Mode::Respond {
                status: 200,
                content_type: "text/html".into(),
                body: "<!DOCTYPE html><html>maintenance</html>".into(),
                retry_after: None,
            },
            "<html page>",
        ),
        (
            "10 MB",
            Mode::Huge {
                bytes: 10 * 1024 * 1024,
                chunked: false,
            },
            "larger than",
        ),
        (
            "10 MB chunked",
            Mode::Huge {
                bytes: 10 * 1024 * 1024,
                chunked: true,
            },
            "larger than",
        ),
        ("never-ending", Mode::NeverEnding, "timed out"),
    ];
    for (name, mode, want) in cases {
        for source in [Source::Coingecko, Source::Defillama] {
            up.heal();
            up.set_mode(source, mode.clone());
            let got = tokio::time::timeout(Duration::from_secs(20), f.fetch())
                .await
                .unwrap_or_else(|_| panic!("{name} from {source} hung the fetch"));
            for a in ["USDT", "USDD"] {
                let r = reason(&got, a, source);
                assert_eq!(r.code(), "unavailable", "{name} {source}");
                assert!(r.to_string().contains(want), "{name} {source}: {r}");
            }
            // Assets with two healthy sources still publish.
            assert_eq!(published(&got, "USDT"), Some(1_000_000), "{name} {source}");
        }
    }
    // Chainlink: garbage JSON-RPC on every endpoint, a huge body, a hung endpoint.
    for (name, mode) in [
        (
            "null result",
            Mode::body("{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":null}"),
        ),
        (
            "10 MB",
            Mode::Huge {
                bytes: 10 * 1024 * 1024,
                chunked: true,
            },
        ),
        ("never-ending", Mode::NeverEnding),
    ] {
        up.heal();
        up.set_mode(Source::Chainlink, mode);
        let got = f.fetch().await;
        assert_eq!(
            reason(&got, "USDC", Source::Chainlink).code(),
            "unavailable",
            "{name}"
        );
        assert_eq!(published(&got, "USDC"), Some(1_000_000), "{name}");
    }
}

#[tokio::test]
async fn a_hung_source_is_cut_at_its_deadline_and_the_others_stand() {
    let up = UpstreamsHandle::start().await;
    up.set_latency(Source::Coingecko, Duration::from_secs(60));
    up.set_down(Source::Defillama, true);
    up.set_down(Source::Pyth, true);
    let mut s = up.sources_settings();
    s.request_timeout = 30;
    s.deadline = 30;
    let (f, metrics) = fetcher(&up, &s);
    let f = f.with_deadline(Duration::from_millis(800));
    let got = tokio::time::timeout(Duration::from_secs(10), f.fetch())
        .await
        .expect("the fetch is bounded by the per-source deadline");
    let r = reason(&got, "USDT", Source::Coingecko).to_string();
    assert!(r.contains("deadline"), "{r}");
    let r = reason(&got, "USDT", Source::Defillama).to_string();
    assert!(r.contains("defillama"), "{r}");
    assert_eq!(price(&got, "USDT", Source::Chainlink), "1.00000000");
    // One lineage left: no quorum anywhere, USDD has nothing at all.
    let agg = got.aggregate(&AggregationSettings::default());
    assert!(agg.iter().all(|a| a.price.is_none()));
    assert!(metrics.render().contains("outcome=\"deadline\""));
}

#[tokio::test]
async fn aggregation_of_a_depeg_and_of_a_lone_outlier() {
    let up = UpstreamsHandle::start().await;
    let (f, _) = fetcher(&up, &up.sources_settings());
    up.set_price_everywhere("USDC", "0.95");
    up.set_price(Source::Coingecko, "DAI", "0.90");
    let got = f.fetch().await;
    assert_eq!(published(&got, "USDC"), Some(950_000));
    let agg = got.aggregate(&AggregationSettings::default());
    let dai = agg.iter().find(|a| a.asset == "DAI").unwrap();
    assert_eq!(dai.price_micro(), Some(1_000_000));
    let outliers: Vec<_> = dai.outliers().collect();
    assert_eq!(outliers.len(), 1);
    assert_eq!(outliers[0].source, Source::Coingecko);
    // CoinGecko's DefiLlama path still carries its lineage at 1.0.
    assert_eq!(dai.lineage_names(), "chainlink, coingecko, pyth");
    let summary = dai.quotes();
    assert_eq!(summary.len(), 4);
    assert!(!summary[1].accepted && summary[1].why.as_deref().unwrap().contains("1000 bps"));

    // Direct use of aggregate() on fetched observations, stricter quorum: four sources are
    // three lineages.
    let a = &got.assets.iter().find(|a| a.asset.symbol == "DAI").unwrap();
    let policy = keeper_sources::AggregatePolicy {
        min_sources: 4,
        ..Default::default()
    };
    assert_eq!(
        aggregate("DAI", &a.observations, &policy, got.now).price,
        None
    );
}

#[tokio::test]
async fn secrets_in_urls_never_reach_reasons_or_metrics() {
    let up = UpstreamsHandle::start().await;
    let mut s = up.sources_settings();
    s.eth_rpc_urls = up
        .eth_rpc_urls()
        .iter()
        .map(|u| Secret::shared(format!("{u}v3/SECRETKEY123")))
        .collect();
    up.set_down(Source::Chainlink, true);
    up.set_mode(Source::Coingecko, Mode::server_error(500));
    let (f, metrics) = fetcher(&up, &s);
    let got = f.fetch().await;
    let r = reason(&got, "USDT", Source::Chainlink).to_string();
    assert!(r.contains("eth_rpc#2 (127.0.0.1:"), "{r}");
    for text in [
        format!("{got:?}"),
        metrics.render(),
        serde_json::to_string(&got).unwrap(),
    ] {
        assert!(!text.contains("SECRETKEY123"), "{text}");
    }
    // The key was really used as the URL path.
    up.set_down(Source::Chainlink, false);
    let _ = f.fetch().await;
    assert_eq!(
        up.requests(Endpoint::Eth(0)).pop().unwrap().path,
        "/v3/SECRETKEY123"
    );
}

/// Every JSON-RPC fixture of the reference, answered to a single `eth_call` by the only
/// endpoint: classified as documented.
#[tokio::test]
async fn every_json_rpc_fixture_is_classified() {
    let up = UpstreamsHandle::start_with(&keeper_tests::default_assets(), 1).await;
    let mut s = up.sources_settings();
    s.retries = 0;
    let rpc = EvmRpc::new(&s.eth_rpc_urls, s.request_policy(), None, "chainlink");
    let usdt = keeper_sources::parse_address(&up.chainlink_proxy("USDT")).unwrap();
    let call = EthCall::selector(usdt, chainlink::LATEST_ROUND_DATA);
    // Infura last: its backoff_seconds blocks the endpoint for 30 s.
    let cases: [(&str, u16, Result<usize, RpcErrorKind>); 10] = [
        ("eth/latest_round_data_usdt.json", 200, Ok(160)),
        ("eth/decimals_8.json", 200, Ok(32)),
        ("eth/allow_lock_true.json", 200, Ok(32)),
        ("eth/revert_code3.json", 200, Err(RpcErrorKind::Revert)),
        ("eth/revert_32000.json", 200, Err(RpcErrorKind::Revert)),
        ("eth/empty_result.json", 200, Err(RpcErrorKind::EmptyResult)),
        (
            "eth/rate_limit_alchemy_429.json",
            200,
            Err(RpcErrorKind::RateLimited),
        ),
        (
            "eth/rate_limit_quicknode_32012.json",
            200,
            Err(RpcErrorKind::RateLimited),
        ),
        (
            "eth/rate_limit_32016.json",
            200,
            Err(RpcErrorKind::RateLimited),
        ),
        (
            "eth/rate_limit_infura_32005.json",
            429,
            Err(RpcErrorKind::RateLimited),
        ),
    ];
    for (file, status, want) in cases {
        up.push_endpoint_mode(Endpoint::Eth(0), Mode::fixture(status, file), 1);
        let got = rpc.eth_call(&call).await;
        match (&got, &want) {
            (Ok(b), Ok(len)) => assert_eq!(b.len(), *len, "{file}"),
            (Err(e), Err(kind)) => assert_eq!(e.kind, *kind, "{file}: {e}"),
            _ => panic!("{file}: got {got:?}, want {want:?}"),
        }
        if file.contains("infura") {
            // backoff_seconds = 30 is honoured: the endpoint is skipped, not called again.
            let e = got.unwrap_err();
            assert_eq!(e.retry_after, Some(Duration::from_secs(30)));
            let before = up.requests(Endpoint::Eth(0)).len();
            let again = rpc.eth_call(&call).await.unwrap_err();
            assert_eq!(again.kind, RpcErrorKind::BackingOff);
            assert_eq!(up.requests(Endpoint::Eth(0)).len(), before);
        }
    }
    // A fresh client (the one above waits out Infura): an unknown function reverts.
    let rpc = EvmRpc::new(&s.eth_rpc_urls, s.request_policy(), None, "chainlink");
    let e = rpc
        .eth_call(&EthCall::selector(usdt, [0xde, 0xad, 0xbe, 0xef]))
        .await
        .unwrap_err();
    assert_eq!(e.kind, RpcErrorKind::Revert, "{e}");
}

#[tokio::test]
async fn coingecko_ton_token_price_fixture() {
    let up = UpstreamsHandle::start().await;
    let cg = CoinGecko::from_settings(&up.sources_settings(), None);
    up.push_mode(
        Source::Coingecko,
        Mode::fixture(200, "coingecko/token_price_ton.json"),
        1,
    );
    let jusdt = "EQBynBO23ywHy_CgarY9NK9FTz0yDsG82PtcbSTQgGoXwiuA";
    let p = cg.token_price("the-open-network", &[jusdt]).await.unwrap();
    let q = p[jusdt].as_ref().unwrap();
    assert_eq!(
        (q.price.to_string().as_str(), q.timestamp),
        ("0.9712", 1_767_221_400)
    );
    let req = up.requests(Endpoint::Coingecko).pop().unwrap();
    assert_eq!(req.param("contract_addresses").as_deref(), Some(jusdt));
}

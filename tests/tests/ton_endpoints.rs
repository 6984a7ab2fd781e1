//! A list of TON endpoints against the toncenter stand-in serving one chain on two ports:
//! reads fail over past a dead or failing endpoint, one that lags behind another is not
//! believed, a signed message goes to every endpoint that is up (and still lands once), the
//! request budget paces a keyless endpoint, and a keeper whose first endpoint is dead or
//! answers 503 publishes in the same tick.

use std::sync::Arc;
use std::time::{Duration, Instant};

use keeper_runtime::alert::Alerter;
use keeper_runtime::retry;
use keeper_runtime::telemetry::metrics::Metrics;
use keeper_tests::pricing::PricingHarness;
use keeper_tests::toncenter::{ExternalOutcome, ToncenterServer};
use keeper_ton::metrics::ChainMetrics;
use keeper_ton::*;

const TON: u128 = 1_000_000_000;

fn metric(m: &Metrics, series: &str) -> Option<f64> {
    m.render().lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

fn on_port(chain: &ToncenterServer, port: u16) -> usize {
    chain.requests().iter().filter(|r| r.port == port).count()
}

struct Two {
    first: ToncenterServer,
    second: ToncenterServer,
    wallet: Wallet,
    oracle: TonAddress,
    metrics: Arc<Metrics>,
}

async fn two_ports(seed: u8) -> Two {
    let first = ToncenterServer::start().await;
    let second = first.add_port().await;
    let keys = Arc::new(WalletKeys::from_seed(&[seed; 32]).unwrap());
    let wallet = Wallet::new(keys.clone(), WalletVersion::V5r1, Network::Mainnet).unwrap();
    first.deploy(&wallet, 7, 10 * TON);
    let oracle = first.new_oracle();
    first.register_keeper(&oracle, keys.public_key());
    Two {
        first,
        second,
        wallet,
        oracle,
        metrics: Arc::new(Metrics::new("pricing-oracle").with::<ChainMetrics>()),
    }
}

impl Two {
    fn transport(&self, urls: &[String]) -> Toncenter {
        let list: Vec<(&str, Option<Arc<keeper_runtime::secret::Secret>>)> =
            urls.iter().map(|u| (u.as_str(), None)).collect();
        Toncenter::with_endpoints(&list, 0, Duration::from_secs(2))
            .unwrap()
            .with_retry(retry::backoff(
                3,
                Duration::from_millis(10),
                Duration::from_millis(40),
            ))
            .observed(self.metrics.clone(), Alerter::disabled())
    }

    fn delivery(&self, transport: Toncenter) -> Delivery<Toncenter> {
        Delivery::new(
            transport,
            self.wallet.clone(),
            DeliveryConfig {
                value_nanoton: 50_000_000,
                auto_value: None,
                ttl: Duration::from_secs(60),
                poll_interval: Duration::from_millis(20),
                confirm_timeout: Duration::from_secs(10),
                readback_timeout: Duration::from_millis(500),
                max_rebuilds: 2,
            },
        )
    }

    fn price(&self, id: u16, price_micro: u64) -> Vec<OracleMessage> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as u32;
        vec![OracleMessage::new(
            self.oracle.clone(),
            OracleUpdate::Price(PriceUpdate {
                asset: "USDT".into(),
                asset_id: id,
                price_micro,
                timestamp: now - 1,
            }),
        )]
    }
}

#[tokio::test]
async fn a_failing_first_endpoint_is_passed_over_and_the_message_lands_once() {
    let t = two_ports(51).await;
    t.first.set_port_status(503);
    let d = t.delivery(t.transport(&[t.first.jsonrpc_url(), t.second.jsonrpc_url()]));
    let report = d.deliver(&t.price(1, 999_100)).await.unwrap();
    assert_eq!(report.batches[0].seqno, 7);
    assert_eq!(t.first.price(&t.oracle, 1).map(|p| p.0), Some(999_100));
    // One failed request marked it down: every later read and the send went to the second.
    assert_eq!(on_port(&t.first, t.first.port()), 1);
    assert!(on_port(&t.first, t.second.port()) >= 4);
    let first = format!("127.0.0.1:{}", t.first.port());
    let second = format!("127.0.0.1:{}", t.second.port());
    assert_eq!(
        metric(
            &t.metrics,
            &format!(
                "keeper_ton_endpoint_requests_total{{endpoint=\"{first}\",outcome=\"error\"}}"
            )
        ),
        Some(1.0)
    );
    assert_eq!(
        metric(
            &t.metrics,
            &format!("keeper_ton_endpoint_up{{endpoint=\"{first}\"}}")
        ),
        Some(0.0)
    );
    assert_eq!(
        metric(
            &t.metrics,
            &format!("keeper_ton_endpoint_up{{endpoint=\"{second}\"}}")
        ),
        Some(1.0)
    );
    let externals = t.first.externals();
    assert_eq!(externals.len(), 1, "sent only to the endpoint that is up");

    // A dead endpoint (connection refused) first in the list: the same.
    let d = t.delivery(t.transport(&[
        "http://127.0.0.1:9/api/v2/jsonRPC".to_owned(),
        t.second.jsonrpc_url(),
    ]));
    let report = d.deliver(&t.price(1, 999_200)).await.unwrap();
    assert_eq!(report.batches[0].seqno, 8);
    assert_eq!(t.first.price(&t.oracle, 1).map(|p| p.0), Some(999_200));
}

#[tokio::test]
async fn a_signed_message_goes_to_every_endpoint_and_lands_once() {
    let t = two_ports(52).await;
    let d = t.delivery(t.transport(&[t.first.jsonrpc_url(), t.second.jsonrpc_url()]));
    let report = d.deliver(&t.price(2, 998_000)).await.unwrap();
    assert_eq!(report.batches[0].seqno, 7);
    let sends = |port| {
        t.first
            .requests()
            .iter()
            .filter(|r| r.port == port && r.method == "sendBocReturnHash")
            .count()
    };
    assert_eq!((sends(t.first.port()), sends(t.second.port())), (1, 1));
    // The same BoC twice: the seqno lets exactly one copy in.
    let externals = t.first.externals();
    assert_eq!(externals.len(), 2);
    assert_eq!(externals[0].boc, externals[1].boc);
    let accepted = externals
        .iter()
        .filter(|e| e.outcome == ExternalOutcome::Accepted)
        .count();
    assert_eq!(accepted, 1);
    assert_eq!(t.first.seqno(t.wallet.address()), Some(8));
}

#[tokio::test]
async fn an_endpoint_behind_another_is_not_believed() {
    let t = two_ports(53).await;
    let transport = t.transport(&[t.first.jsonrpc_url(), t.second.jsonrpc_url()]);
    let info = transport
        .wallet_information(t.wallet.address())
        .await
        .unwrap();
    assert_eq!(info.seqno, Some(7));
    let chain_time = transport
        .address_information(t.wallet.address())
        .await
        .unwrap()
        .sync_utime;
    // The first endpoint fails; the second lags a seqno and 30 s behind what the first showed.
    t.first.set_port_status(503);
    t.second.set_lagging(true);
    let e = transport
        .wallet_information(t.wallet.address())
        .await
        .unwrap_err();
    assert!(matches!(e, TransportError::Lagging { .. }), "{e}");
    assert!(e.to_string().contains("seqno 6 is below 7"), "{e}");
    let e = transport
        .address_information(t.wallet.address())
        .await
        .unwrap_err();
    assert!(matches!(e, TransportError::Lagging { .. }), "{e}");
    let second = format!("127.0.0.1:{}", t.second.port());
    assert!(
        metric(
            &t.metrics,
            &format!(
                "keeper_ton_endpoint_requests_total{{endpoint=\"{second}\",outcome=\"lagging\"}}"
            )
        )
        .is_some_and(|n| n >= 2.0)
    );
    // Caught up again: believed again.
    t.second.set_lagging(false);
    let now = transport
        .address_information(t.wallet.address())
        .await
        .unwrap()
        .sync_utime;
    assert!(now >= chain_time);
}

#[tokio::test]
async fn the_request_budget_paces_a_keyless_endpoint() {
    let chain = ToncenterServer::start().await;
    let wallet = Wallet::new(
        Arc::new(WalletKeys::from_seed(&[54; 32]).unwrap()),
        WalletVersion::V5r1,
        Network::Mainnet,
    )
    .unwrap();
    let settings = TonSettings {
        rpc_urls: vec![chain.jsonrpc_url()],
        ..TonSettings::default()
    };
    // No key, no max_rps: toncenter's keyless limit of 1 request/s.
    let transport = Toncenter::new(&settings).unwrap();
    let start = Instant::now();
    for _ in 0..3 {
        transport
            .wallet_information(wallet.address())
            .await
            .unwrap();
    }
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(1_950), "{took:?}");
    assert_eq!(transport.take_request_count(), 3);
    assert_eq!(transport.take_request_count(), 0);
    // With a key: 10 requests/s.
    chain.require_api_key(Some("k"));
    let keyed = Toncenter::new(&TonSettings {
        api_key: Some(keeper_runtime::secret::Secret::shared("k")),
        ..settings
    })
    .unwrap();
    let start = Instant::now();
    for _ in 0..6 {
        keyed.wallet_information(wallet.address()).await.unwrap();
    }
    let took = start.elapsed();
    assert!(
        (Duration::from_millis(450)..Duration::from_millis(1_500)).contains(&took),
        "{took:?}"
    );
}

async fn once_force(h: &mut PricingHarness) -> (Duration, serde_json::Value) {
    // A one-shot run leaves its wallet lease to lapse: each run contends under its own prefix.
    h.extra_env.push((
        "REDIS_PREFIX".into(),
        format!("{}:", keeper_tests::env::unique("endpoints")),
    ));
    let start = Instant::now();
    let out = h
        .command(&["--once", "--force", "--output", "json"])
        .output()
        .await
        .expect("run keeper");
    let took = start.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        took,
        serde_json::from_str(&stdout).expect("one JSON document"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_endpoint_dead_or_503_costs_a_tick_nothing() {
    let mut h = PricingHarness::start().await;
    let (baseline, doc) = once_force(&mut h).await;
    assert_eq!(doc["outcome"], "published");

    let real = h.ton.jsonrpc_url();
    h.extra_env.push((
        "TON_RPC_URL".into(),
        format!("http://127.0.0.1:9/api/v2/jsonRPC,{real}"),
    ));
    let (dead_first, doc) = once_force(&mut h).await;
    assert_eq!(doc["outcome"], "published", "{doc}");

    let failing = h.ton.add_port().await;
    failing.set_port_status(503);
    h.extra_env.push((
        "TON_RPC_URL".into(),
        format!("{},{real}", failing.jsonrpc_url()),
    ));
    let (failing_first, doc) = once_force(&mut h).await;
    assert_eq!(doc["outcome"], "published", "{doc}");
    // The tick's first reads run concurrently, so each of them may meet the failing endpoint
    // once; after that it is passed over: no later read, and not the send.
    let to_failing: Vec<_> = h
        .ton
        .requests()
        .into_iter()
        .filter(|r| r.port == failing.port())
        .collect();
    assert!(
        (1..=8).contains(&to_failing.len()),
        "{} requests to the failing endpoint",
        to_failing.len()
    );
    assert!(to_failing.iter().all(|r| r.method != "sendBocReturnHash"));
    assert_eq!(h.accepted_externals(), 3, "every tick published");
    eprintln!(
        "tick: one endpoint {baseline:?}, dead first {dead_first:?}, 503 first {failing_first:?}"
    );
    for took in [dead_first, failing_first] {
        assert!(
            took < baseline + Duration::from_secs(1),
            "{took:?} vs {baseline:?}"
        );
    }
}

#[tokio::test]
async fn an_endpoint_ahead_alone_neither_expires_nor_clears_a_message_that_can_still_land() {
    let t = two_ports(56).await;
    // Accepted and held: the message can land until its valid_until and the margin pass. Its
    // TTL is short so the chain is asked from the first poll on.
    t.first.set_inclusion_delay(Duration::from_secs(3_600));
    // The preferred endpoint claims the chain is an hour on: past valid_until and the margin.
    t.first.set_ahead(3_600);
    let transport = t.transport(&[t.first.jsonrpc_url(), t.second.jsonrpc_url()]);
    let d = Delivery::new(
        transport,
        t.wallet.clone(),
        DeliveryConfig {
            value_nanoton: 50_000_000,
            auto_value: None,
            ttl: Duration::from_secs(1),
            poll_interval: Duration::from_millis(20),
            confirm_timeout: Duration::from_millis(300),
            readback_timeout: Duration::ZERO,
            max_rebuilds: 2,
        },
    );
    let err = d.deliver(&t.price(1, 999_400)).await.unwrap_err();
    assert_eq!(err.kind(), "unconfirmed", "{err:?}");
    let (seqno, valid_until) = d.in_flight().await.expect("still in flight");
    assert_eq!(seqno, 7);
    // Built on the chain time both endpoints reached, not on the hour ahead.
    assert!(
        u64::from(valid_until) <= t.first.chain_time() + 1,
        "{valid_until}"
    );
    let err = d.deliver(&t.price(1, 999_400)).await.unwrap_err();
    assert!(
        matches!(err, DeliveryError::InFlight { seqno: 7, .. }),
        "{err:?}"
    );
    let journaled = d.journal().entries(&t.wallet.address_raw()).await.unwrap();
    assert_eq!(journaled.len(), 1, "nothing cleared");
    assert_eq!(journaled[0].seqno, 7);
    assert!(
        t.first.held_externals() >= 1,
        "the first body is still held"
    );
    assert!(
        t.first.externals().is_empty(),
        "no second body went out for seqno 7"
    );

    // The honest endpoint too is past valid_until and the margin: now it is proven dead, and
    // a new body for seqno 7 lands.
    t.first.set_inclusion_delay(Duration::ZERO);
    t.first.advance_chain_time(1 + LANDING_MARGIN_SECS + 1);
    let report = d.deliver(&t.price(1, 999_500)).await.unwrap();
    assert_eq!(report.batches[0].seqno, 7);
    assert_eq!(t.first.seqno(t.wallet.address()), Some(8));
    assert_eq!(t.first.price(&t.oracle, 1).map(|p| p.0), Some(999_500));
}

//! What the keepers ask of a TON endpoint: two clients sharing one rate-limited endpoint learn
//! their share from its 429s, an endpoint without the v3 index is asked for it once, and the
//! requests of a publishing and an idle tick are counted per method.

use std::sync::Arc;
use std::time::Duration;

use keeper_runtime::alert::Alerter;
use keeper_runtime::telemetry::metrics::Metrics;
use keeper_tests::bridge_keeper::TON_BRIDGE;
use keeper_tests::pricing::PricingHarness;
use keeper_tests::requests::{
    Running, Tally, pricing_ticks, running, status_ticks, wait_status_ticks,
};
use keeper_tests::toncenter::{Fault, ToncenterServer};
use keeper_tests::upstreams::ALLOW_LOCK;
use keeper_ton::metrics::ChainMetrics;
use keeper_ton::*;
use tokio::time::Instant;

const TON: u128 = 1_000_000_000;

fn wallet(seed: u8) -> Wallet {
    Wallet::new(
        Arc::new(WalletKeys::from_seed(&[seed; 32]).unwrap()),
        WalletVersion::V5r1,
        Network::Mainnet,
    )
    .unwrap()
}

/// A keeper's client with the default budget of a keyless endpoint (1 request/s).
fn keyless(chain: &ToncenterServer) -> Toncenter {
    Toncenter::new(&TonSettings {
        rpc_urls: vec![chain.jsonrpc_url()],
        ..TonSettings::default()
    })
    .unwrap()
}

/// Reads the wallet until `until`; (answers, failed calls).
async fn read_until(t: Toncenter, w: Wallet, until: Instant) -> (u32, u32) {
    let (mut ok, mut failed) = (0, 0);
    while Instant::now() < until {
        match t.wallet_information(w.address()).await {
            Ok(_) => ok += 1,
            Err(_) => failed += 1,
        }
    }
    (ok, failed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_keepers_sharing_a_keyless_endpoint_settle_below_its_limit() {
    let chain = ToncenterServer::start().await;
    let w = wallet(90);
    chain.deploy(&w, 1, TON);
    // toncenter without a key: 1 request/s, no burst.
    chain.set_rate_limit(1.0, 1, None);
    let (a, b) = (keyless(&chain), keyless(&chain));

    let settle = Instant::now() + Duration::from_secs(30);
    let (sa, sb) = tokio::join!(
        read_until(a.clone(), w.clone(), settle),
        read_until(b.clone(), w.clone(), settle)
    );
    let early = chain.rate_limited_count();
    let total_early = chain.requests().len();

    let window = Instant::now() + Duration::from_secs(40);
    let (wa, wb) = tokio::join!(
        read_until(a, w.clone(), window),
        read_until(b, w.clone(), window)
    );
    let late = chain.rate_limited_count() - early;
    let total_late = chain.requests().len() - total_early;
    println!(
        "settling 30 s: {total_early} requests, {early} answered 429, answers {sa:?} / {sb:?}; \
         next 40 s: {total_late} requests, {late} answered 429, answers {wa:?} / {wb:?}"
    );
    assert!(early > 0, "the limit was met at first");
    assert!(
        late <= 5,
        "{late} 429s of {total_late} requests after settling"
    );
    // The endpoint allows 40 answers in 40 s; the budgets space requests 10 % wider than their
    // rate and halve it on a 429, so two settled keepers get about 30. Fewer than 20 means the
    // budgets collapsed instead of sharing.
    let answered = wa.0 + wb.0;
    assert!(answered >= 20, "{answered} answers in 40 s");
    // A fair split: each keeper gets at least a third of the answers.
    assert!(
        wa.0 * 3 >= answered && wb.0 * 3 >= answered,
        "the endpoint is shared unevenly: {wa:?} {wb:?}"
    );
}

#[tokio::test]
async fn a_429_halves_the_budget_and_retry_after_holds_the_endpoint() {
    let chain = ToncenterServer::start().await;
    let w = wallet(91);
    chain.deploy(&w, 1, TON);
    let metrics = Arc::new(Metrics::new("pricing-oracle").with::<ChainMetrics>());
    let t = Toncenter::new(&TonSettings {
        rpc_urls: vec![chain.jsonrpc_url()],
        max_rps: Some(4),
        ..TonSettings::default()
    })
    .unwrap()
    .observed(metrics.clone(), Alerter::disabled());
    let series = format!(
        "keeper_ton_endpoint_budget_rps{{endpoint=\"127.0.0.1:{}\"}}",
        chain.port()
    );
    assert_eq!(keeper_tests::sample(&metrics.render(), &series), Some(4.0));
    chain.inject(
        "getWalletInformation",
        Fault::RateLimited {
            retry_after: Some(2),
        },
        1,
    );
    let start = Instant::now();
    t.wallet_information(w.address()).await.unwrap();
    // The retry waited out Retry-After, and the budget now allows half as much.
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(keeper_tests::sample(&metrics.render(), &series), Some(2.0));
    assert_eq!(chain.count("getWalletInformation"), 2);
}

fn prices(oracle: &TonAddress, ts: u32) -> Vec<OracleMessage> {
    (1u16..=2)
        .map(|id| {
            OracleMessage::new(
                oracle.clone(),
                OracleUpdate::Price(PriceUpdate {
                    asset: format!("A{id}"),
                    asset_id: id,
                    price_micro: 1_000_000 + u64::from(ts % 1000),
                    timestamp: ts,
                }),
            )
        })
        .collect()
}

/// Two deliveries of two prices through one client, against an endpoint with or without the
/// v3 index and with or without transaction BoCs in its v2 listing; the stand-in's counts of
/// `transactionsByMessage`, `getTransactions` and `runGetMethod`.
async fn two_deliveries(v3: bool, boc: bool, seed: u8) -> (usize, usize, usize) {
    let chain = ToncenterServer::start().await;
    chain.set_v3_index(v3);
    chain.set_transaction_data(boc);
    let w = wallet(seed);
    chain.deploy(&w, 2, 10 * TON);
    let oracle = chain.new_oracle();
    chain.register_keeper(&oracle, w.keys().public_key());
    let delivery = Delivery::new(
        Toncenter::with_endpoint(&chain.jsonrpc_url(), None, Duration::from_secs(2)).unwrap(),
        w,
        DeliveryConfig {
            value_nanoton: 50_000_000,
            auto_value: None,
            ttl: Duration::from_secs(60),
            poll_interval: Duration::from_millis(20),
            confirm_timeout: Duration::from_secs(5),
            readback_timeout: Duration::from_millis(500),
            max_rebuilds: 1,
        },
    );
    for ts in [1_760_000_000, 1_760_000_060] {
        let report = delivery.deliver(&prices(&oracle, ts)).await.unwrap();
        assert!(report.read_back.iter().all(|r| r.landed), "{report:?}");
        if v3 || boc {
            assert_eq!(
                report.batches[0].exit_code,
                Some(0),
                "the oracle's result is known"
            );
        }
    }
    (
        chain.count("transactionsByMessage"),
        chain.count("getTransactions"),
        chain.count("runGetMethod"),
    )
}

#[tokio::test]
async fn what_an_endpoint_answers_is_learned_once() {
    // A v2 listing with BoCs tells a whole batch's result: the wallet's listing (made to
    // confirm) and one of the oracle per delivery, no index lookup, nothing read back.
    for v3 in [false, true] {
        let (index, listed, read) = two_deliveries(v3, true, 92 + u8::from(v3)).await;
        println!("v3 index {v3}, v2 with BoCs: {index} / {listed} / {read}");
        assert_eq!((index, listed, read), (0, 4, 0));
    }
    // A listing without BoCs is tried once, then the v3 index answers (a lookup for the
    // wallet's transaction and one per message): the second delivery lists the wallet only.
    let (index, listed, read) = two_deliveries(true, false, 94).await;
    println!("v3 index, v2 without BoCs: {index} / {listed} / {read}");
    assert_eq!((index, listed, read), (6, 3, 0));
    // Neither: the v3 404 is remembered too; the prices are read back from the oracle.
    let (index, listed, read) = two_deliveries(false, false, 95).await;
    println!("no v3 index, v2 without BoCs: {index} / {listed} / {read}");
    assert_eq!((index, listed), (1, 3));
    assert!(read >= 4, "{read}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publishing_and_an_idle_pricing_tick_are_counted_per_method() {
    let h = PricingHarness::start().await;
    // An endpoint that speaks v2 only: its v3 index answers 404, as toncenter's public one can.
    h.ton.set_v3_index(false);
    let ticks = pricing_ticks(&h).await;
    println!(
        "pricing --once publishing: {}\npricing --once idle: {}",
        ticks.publishing, ticks.idle
    );
    assert_eq!(ticks.publishing_outcome, "published");
    assert_ne!(ticks.idle_outcome, "published");
    let p: &Tally = &ticks.publishing;
    // A start reads every price once (6), the wallet once for the tick (its view then serves
    // the signature), sends once, polls once, and lists the wallet and the oracle once each
    // for the result. The wallet is new (seqno 0): there is no history to learn `auto` from,
    // so no listing of its own. It used to count 28 (six get-methods again to read back, the
    // wallet read three times, a chain time of its own, the v3 index asked per message).
    assert!(p.total() <= 11, "{p}");
    assert_eq!(p.get("runGetMethod"), 6, "no read-back: {p}");
    assert!(p.get("getAddressInformation") <= 2, "{p}");
    assert_eq!(p.get("getTransactions"), 2, "{p}");
    assert_eq!(p.get("getWalletInformation"), 0, "{p}");
    assert_eq!(p.get("sendBocReturnHash"), 1, "{p}");
    assert_eq!(
        p.get("transactionsByMessage"),
        0,
        "v2 listings answered: {p}"
    );
    // The idle run's wallet has sent once: its history is learned (2 listings).
    assert!(ticks.idle.total() <= 9, "{}", ticks.idle);
    assert_eq!(ticks.idle.get("getTransactions"), 2, "{}", ticks.idle);
    assert_eq!(ticks.idle.get("sendBocReturnHash"), 0);
}

async fn ticks(h: &PricingHarness) -> u64 {
    status_ticks(&h.metrics_addr).await
}

async fn wait_ticks(h: &PricingHarness, n: u64) {
    assert!(
        wait_status_ticks(&h.metrics_addr, n, Duration::from_secs(30)).await,
        "{n} ticks never ran"
    );
}

/// The targets of a running keeper, per tick.
fn assert_within_targets(keeper: &str, r: Running) {
    println!(
        "{keeper} running: {:.1} requests per idle tick, {:.1} per publishing tick",
        r.idle, r.publishing
    );
    assert!(r.idle <= 3.0, "{keeper}: {r:?}");
    assert!(r.publishing <= 8.0, "{keeper}: {r:?}");
    assert!(
        r.publishing >= 3.0,
        "a read, a send and a confirmation at least: {r:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_pricing_keeper_reads_prices_only_after_the_oracle_changed() {
    let h = PricingHarness::start().await;
    let mut child = h.spawn();
    h.wait_externals(1, Duration::from_secs(30)).await;
    // Past the start, which reads every get-method once.
    let t = ticks(&h).await;
    wait_ticks(&h, t + 2).await;
    let before = Tally::of(&h.ton);
    // Idle ticks, then one publication (a moved DAI price) and the tick after it.
    let r = running(&h.metrics_addr, &h.ton, 3, || {
        h.up.set_price_everywhere("DAI", "0.98")
    })
    .await;
    let since = Tally::since(&h.ton, &before);
    assert_within_targets("pricing-oracle-keeper", r);
    assert_eq!(
        since.get("runGetMethod"),
        0,
        "nothing but this keeper's own transactions changed the oracle: {since}"
    );
    assert_eq!(h.accepted_externals(), 2);

    // Another keeper's transaction moves USDT on the oracle: read again, and the move is
    // answered with this keeper's price.
    let (_, ts) = h.ton.price(&h.oracle, 1).unwrap();
    h.ton.set_price(&h.oracle, 1, 1_100_000, ts + 1);
    let before = Tally::of(&h.ton);
    h.wait_externals(3, Duration::from_secs(30)).await;
    let after = Tally::since(&h.ton, &before);
    assert!(after.get("runGetMethod") >= 6, "{after}");
    assert_ne!(h.ton.price(&h.oracle, 1).map(|p| p.0), Some(1_100_000));
    let t = ticks(&h).await;
    wait_ticks(&h, t + 1).await;
    let _ = child.kill().await;
}

/// An endpoint whose `runGetMethod` does not say which transaction it ran at: the running
/// keeper reads the oracle's account before its get-methods and still keeps what they said,
/// so idle ticks read no get-method.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_methods_without_their_lt_are_kept_under_the_account_read_first() {
    let h = PricingHarness::start().await;
    h.ton.set_get_method_lt(false);
    let mut child = h.spawn();
    h.wait_externals(1, Duration::from_secs(30)).await;
    // The start's answers came without their lt: one tick more reads them again, under the
    // account's lt.
    let t = ticks(&h).await;
    wait_ticks(&h, t + 2).await;
    let before = Tally::of(&h.ton);
    wait_ticks(&h, t + 4).await;
    let since = Tally::since(&h.ton, &before);
    assert_eq!(since.get("runGetMethod"), 0, "{since}");
    assert!(since.get("getWalletInformation") >= 2, "{since}");
    assert_eq!(h.accepted_externals(), 1);
    let _ = child.kill().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_bridge_keeper_reads_statuses_only_after_the_oracle_changed() {
    let h = keeper_tests::bridge_keeper::BridgeHarness::start().await;
    let mut child = h.spawn();
    h.wait_externals(1).await;
    let addr = h.metrics_addr.as_str();
    let wait = Duration::from_secs(30);
    // Past the start, which reads every get-method once.
    let t = status_ticks(addr).await;
    assert!(wait_status_ticks(addr, t + 2, wait).await);
    let before = Tally::of(&h.ton);
    // Idle ticks, then one publication: the TON bridge's own contract pauses.
    let r = running(addr, &h.ton, 3, || {
        h.up.set_eth_bool(TON_BRIDGE, ALLOW_LOCK, false)
    })
    .await;
    let since = Tally::since(&h.ton, &before);
    assert_within_targets("bridge-health-keeper", r);
    assert_eq!(
        since.get("runGetMethod"),
        0,
        "nothing but this keeper's own transactions changed the oracle: {since}"
    );

    // Another keeper's transaction on the oracle: the next tick reads every status again.
    let (id, online, last_seen) = h.bridge_events()[0];
    let id = u8::try_from(id).unwrap();
    let before = Tally::of(&h.ton);
    h.ton.set_bridge_status(&h.oracle, id, online, last_seen);
    let t = status_ticks(addr).await;
    assert!(wait_status_ticks(addr, t + 2, wait).await);
    let after = Tally::since(&h.ton, &before);
    println!("after a foreign transaction: {after}");
    assert!(after.get("runGetMethod") >= 1, "{after}");
    let _ = child.kill().await;
}

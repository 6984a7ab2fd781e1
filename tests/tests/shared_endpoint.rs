//! Both chain keepers as real processes, each with its own wallet, sharing one toncenter
//! endpoint limited as toncenter is without an API key (1 request/s, burst 1), each on its
//! default request budget, at a 15 s interval with a 30 s price heartbeat: over 75 s the
//! pricing keeper publishes at start and again on its heartbeat, the bridge keeper publishes
//! its first status, every batch lands, and the endpoint refuses at most 5 requests.
//!
//! Before the budget's shared slots, this held in five runs of six: two keepers spacing their
//! requests independently kept meeting within the bucket's second, each refusal halved a
//! budget, and once the pricing keeper's start took three cut ticks and its heartbeat fell
//! past 75 s. The issue measured 54 to 67 refusals and at most one batch.

use std::time::Duration;

use keeper_tests::bridge_keeper::BridgeHarness;
use keeper_tests::pricing::{OTHER_MNEMONIC, PricingHarness};
use keeper_tests::process::spawn_logged;
use keeper_tests::requests::status_ticks;
use keeper_tests::toncenter::{ExternalOutcome, RequestRecord, ToncenterServer};
use keeper_ton::TonAddress;

const RUN: Duration = Duration::from_secs(75);
const INTERVAL: u64 = 15;
const HEARTBEAT: u64 = 30;

/// The keeper's production-like settings over the harness's test-speed ones: the endpoint's
/// default budget (no `TON_MAX_RPS`: 1 request/s without a key) and the cycle timeout that
/// comes with the interval.
fn as_deployed(cmd: &mut tokio::process::Command) {
    cmd.env_remove("TON_MAX_RPS")
        .env_remove("CYCLE_TIMEOUT")
        .env("UPDATE_INTERVAL", INTERVAL.to_string());
}

/// Every request that arrived on `port`, v3 index requests included.
fn requests_of(chain: &ToncenterServer, port: u16) -> Vec<RequestRecord> {
    chain
        .requests()
        .into_iter()
        .chain(chain.index_requests())
        .filter(|r| r.port == port)
        .collect()
}

/// (requests, answered 429) that arrived on `port`.
fn requests_on(chain: &ToncenterServer, port: u16) -> (usize, usize) {
    let all = requests_of(chain, port);
    let limited = all.iter().filter(|r| r.status == 429).count();
    (all.len(), limited)
}

/// Each request on `port` as `seconds:method[:status]`, from `start`: printed with the
/// totals, so that a failing run shows how its time went.
fn timeline(chain: &ToncenterServer, port: u16, start: std::time::Instant) -> String {
    let mut all = requests_of(chain, port);
    all.sort_by_key(|r| r.at);
    all.iter()
        .map(|r| {
            let secs = r.at.saturating_duration_since(start).as_secs_f64();
            match r.status {
                200 => format!("{secs:.1}:{}", r.method),
                status => format!("{secs:.1}:{}:{status}", r.method),
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Externals from `wallet`: (accepted, not accepted), and its oracle messages the oracle did
/// not store.
fn landed(chain: &ToncenterServer, wallet: &TonAddress) -> (usize, Vec<String>) {
    let mine: Vec<_> = chain
        .externals()
        .into_iter()
        .filter(|e| e.wallet.as_ref() == Some(wallet))
        .collect();
    let accepted = mine
        .iter()
        .filter(|e| e.outcome == ExternalOutcome::Accepted)
        .count();
    let mut lost: Vec<String> = mine
        .iter()
        .filter(|e| e.outcome != ExternalOutcome::Accepted)
        .map(|e| format!("external seqno {:?}: {:?}", e.seqno, e.outcome))
        .collect();
    lost.extend(
        chain
            .oracle_events()
            .iter()
            .filter(|e| &e.from == wallet && !e.accepted)
            .map(|e| format!("op {} id {}: {:?}", e.op, e.id, e.reason)),
    );
    (accepted, lost)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_keepers_share_a_keyless_endpoint() {
    let chain = ToncenterServer::start().await;
    // Each keeper on its own port of the one chain, so that its requests are counted apart;
    // the rate limit is the chain's, shared by every port.
    let pricing = PricingHarness::on_chain(chain.clone()).await;
    let bridge = BridgeHarness::on_chain(chain.add_port().await, OTHER_MNEMONIC).await;
    chain.set_rate_limit(1.0, 1, None);
    let start = std::time::Instant::now();

    let mut cmd = pricing.command(&[]);
    as_deployed(&mut cmd);
    cmd.env("PRICE_HEARTBEAT", HEARTBEAT.to_string());
    let mut pricing_keeper = spawn_logged(cmd, &pricing.schema);
    let mut cmd = bridge.command(&[]);
    as_deployed(&mut cmd);
    let mut bridge_keeper = spawn_logged(cmd, &bridge.schema);

    tokio::time::sleep(RUN).await;
    let ticks = (
        status_ticks(&pricing.metrics_addr).await,
        status_ticks(&bridge.metrics_addr).await,
    );
    let _ = pricing_keeper.kill().await;
    let _ = bridge_keeper.kill().await;

    let (p_requests, p_limited) = requests_on(&chain, pricing.ton.port());
    let (b_requests, b_limited) = requests_on(&chain, bridge.ton.port());
    let batches = pricing.price_batches();
    let statuses = bridge.bridge_events();
    let (p_landed, p_lost) = landed(&chain, pricing.wallet.address());
    let (b_landed, b_lost) = landed(&chain, bridge.wallet.address());
    let limited = chain.rate_limited_count();
    println!(
        "pricing: {}\nbridge: {}",
        timeline(&chain, pricing.ton.port(), start),
        timeline(&chain, bridge.ton.port(), start)
    );
    println!(
        "{} s: pricing {} ticks, {p_requests} requests, {p_limited} answered 429, \
         {} price batches ({p_landed} externals landed); bridge {} ticks, {b_requests} \
         requests, {b_limited} answered 429, {} statuses ({b_landed} externals landed); \
         {limited} answered 429 in all",
        RUN.as_secs(),
        ticks.0,
        batches.len(),
        ticks.1,
        statuses.len(),
    );

    // Each keeper ticks at start and every interval after it: 5 ticks begin within 75 s; the
    // last may still be running.
    let due = RUN.as_secs() / INTERVAL - 1;
    assert!(
        ticks.0 >= due && ticks.1 >= due,
        "ticks: pricing {}, bridge {} (at least {due} each)",
        ticks.0,
        ticks.1
    );
    assert!(
        p_lost.is_empty() && b_lost.is_empty(),
        "batches sent that did not land: pricing {p_lost:?}, bridge {b_lost:?}"
    );
    assert!(
        batches.len() >= 2,
        "the pricing keeper published {} batches: one at start and one on its heartbeat \
         ({HEARTBEAT} s) were due",
        batches.len()
    );
    assert!(
        !statuses.is_empty(),
        "the bridge keeper published no status"
    );
    assert!(
        limited <= 5,
        "{limited} requests answered 429 (pricing {p_limited}, bridge {b_limited})"
    );
}

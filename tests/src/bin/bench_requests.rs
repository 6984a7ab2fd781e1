//! TON API requests per tick of both chain keepers against the local stand-ins, per method: one
//! publishing and one idle `--once` run of the pricing keeper (six assets) and of the bridge
//! keeper (its shipped bridges), each on a fresh chain, once with toncenter's v3 index and once
//! against a v2-only endpoint; then each keeper running: its idle ticks and one publishing tick.
//! The README reports the figures.
//!
//! Run: `cargo build --workspace --bins && target/debug/bench_requests` (or
//! `scripts/bench-requests.sh`). It needs the test PostgreSQL and Redis (`KEEPERS_TEST_PG_URL`,
//! `KEEPERS_TEST_REDIS_URL`).

use keeper_tests::bridge_keeper::BridgeHarness;
use keeper_tests::pricing::PricingHarness;
use keeper_tests::requests::{
    Running, Ticks, bridge_ticks, pricing_ticks, running_bridge, running_pricing,
};

fn report(keeper: &str, endpoint: &str, t: &Ticks) {
    println!(
        "{keeper}, {endpoint}: publishing tick ({}): {}",
        t.publishing_outcome, t.publishing
    );
    println!(
        "{keeper}, {endpoint}: idle tick ({}): {}",
        t.idle_outcome, t.idle
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    keeper_runtime::install_crypto_provider();
    for (endpoint, v3) in [("v3 index", true), ("v2 only", false)] {
        let h = PricingHarness::start().await;
        h.ton.set_v3_index(v3);
        report("pricing-oracle-keeper", endpoint, &pricing_ticks(&h).await);
        let h = BridgeHarness::start().await;
        h.ton.set_v3_index(v3);
        report("bridge-health-keeper", endpoint, &bridge_ticks(&h).await);
        let h = PricingHarness::start().await;
        h.ton.set_v3_index(v3);
        daemon(
            "pricing-oracle-keeper",
            endpoint,
            running_pricing(&h, 10).await,
        );
        let h = BridgeHarness::start().await;
        h.ton.set_v3_index(v3);
        daemon(
            "bridge-health-keeper",
            endpoint,
            running_bridge(&h, 10).await,
        );
    }
}

fn daemon(keeper: &str, endpoint: &str, r: Running) {
    println!(
        "{keeper} running, {endpoint}: {:.1} requests per idle tick, {:.1} per publishing tick",
        r.idle, r.publishing
    );
}

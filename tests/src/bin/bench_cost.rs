//! What the pricing keeper costs in TON with the default configuration and flat prices: six
//! assets, interval 60 s, heartbeat 240 s, `UPDATE_VALUE_TON=auto`, V5R1 wallet, against the
//! local stand-ins (their oracle charges `ORACLE_GAS_FEE` per update; their quotes are observed
//! 5 s before each answer).
//!
//! Time runs `SCALE` times faster: interval 1 s and heartbeat 4 s (the same 1 : 4 ratio), and
//! the TON per simulated day is scaled back up. The spend is the wallet's balance change, so it
//! holds values, forwarding fees and gas less what the oracle returned. The first batch (nothing
//! learned yet, the maximum value) is reported apart from the steady state; then two `--once`
//! runs show what a one-shot run attaches once the chain has a history.
//!
//! Run: `cargo build --release --workspace --bins && target/release/bench_cost [wall seconds]`
//! (or `scripts/bench-cost.sh`). It uses no database or Redis.

use std::process::Stdio;
use std::time::Duration;

use keeper_tests::pricing::PricingHarness;
use tokio::process::{Child, Command};

/// Simulated seconds per wall second: interval 60 s → 1 s, heartbeat 240 s → 4 s.
const SCALE: u64 = 60;
const FUNDED: u128 = 50_000_000_000;
const NANOTON_PER_TON: f64 = 1e9;

fn command(h: &PricingHarness) -> Command {
    let mut cmd = h.command_without_stores();
    cmd.env("UPDATE_INTERVAL", "1")
        .env("PRICE_HEARTBEAT", (240 / SCALE).to_string())
        .env("UPDATE_VALUE_TON", "auto")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    cmd
}

fn spawn(h: &PricingHarness) -> Child {
    command(h)
        .spawn()
        .expect("spawn the release keeper (build it with --release first)")
}

fn spent(h: &PricingHarness) -> u128 {
    FUNDED - h.ton.balance(h.wallet.address())
}

/// Waits until the wallet's balance stops moving (the last batch's change came back).
async fn settle(h: &PricingHarness) -> u128 {
    let mut last = spent(h);
    loop {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let now = spent(h);
        if now == last && h.ton.held_externals() == 0 {
            return now;
        }
        last = now;
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    keeper_runtime::install_crypto_provider();
    let wall_secs: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(240);

    // The daemon: the first batch, then the steady state over `wall_secs`.
    let h = PricingHarness::start().await;
    let mut child = spawn(&h);
    h.wait_externals(1, Duration::from_secs(60)).await;
    let first = settle(&h).await;
    let batches0 = h.accepted_externals();
    let t0 = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(wall_secs)).await;
    let _ = child.kill().await;
    let elapsed = t0.elapsed().as_secs_f64();
    let total = settle(&h).await;
    let batches = h.accepted_externals() - batches0;
    let steady = total - first;
    let simulated = elapsed * SCALE as f64;
    let per_batch = steady as f64 / batches.max(1) as f64;
    let per_day = steady as f64 * 86_400.0 / simulated;
    println!(
        "simulated {:.1} h ({elapsed:.0} s wall, x{SCALE}): {batches} batches after the first, \
         {:.2} per heartbeat",
        simulated / 3600.0,
        batches as f64 * 240.0 / simulated
    );
    println!(
        "first batch (no history, maximum value): {:.6} TON",
        first as f64 / NANOTON_PER_TON
    );
    println!(
        "steady state: {:.6} TON per 6-update batch, {:.4} TON per day",
        per_batch / NANOTON_PER_TON,
        per_day / NANOTON_PER_TON
    );

    // One-shot runs: the second learns the value from the chain.
    let h = PricingHarness::start().await;
    let mut costs = Vec::new();
    for _ in 0..2 {
        let before = spent(&h);
        let out = command(&h)
            .args(["--once", "--force"])
            .output()
            .await
            .expect("run --once");
        assert!(out.status.success(), "--once failed: {:?}", out.status);
        costs.push(settle(&h).await - before);
    }
    println!(
        "--once --force: first {:.6} TON, second {:.6} TON per 6-update batch",
        costs[0] as f64 / NANOTON_PER_TON,
        costs[1] as f64 / NANOTON_PER_TON
    );
}

//! `UPDATE_VALUE_TON=auto` and what the keeper spends, against the running pricing keeper and
//! the toncenter stand-in's transaction index: the first send carries the maximum, the next the
//! oracle's observed cost × 1.5 (the default `value_safety_factor`), which still lands when the
//! oracle's gas grows by a quarter; when it grows past the margin, the failed transaction is
//! reported with exit code -14 and the next send carries the maximum again and lands. The spent
//! counter equals the wallet's balance change, and the runway is balance ÷ spend per day.

use std::time::{Duration, Instant};

use keeper_tests::pricing::PricingHarness;
use keeper_tests::toncenter::{EXIT_OUT_OF_GAS, ORACLE_GAS_FEE};

const FUNDED: u128 = 50_000_000_000;
const MAX_VALUE: u128 = 50_000_000;
/// What `auto` attaches once the oracle's cost is known: the default safety factor 1.5 × cost.
const LEARNED_VALUE: u128 = ORACLE_GAS_FEE * 3 / 2;

/// The value of `name` (no labels, or the first series) in a Prometheus text scrape.
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| l.starts_with(&format!("{name} ")) || l.starts_with(&format!("{name}{{")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Waits until the oracle received `n` messages and the keeper booked them: the spent counter
/// stops moving and equals what the wallet lost.
async fn settled(h: &PricingHarness, n: usize) -> (u128, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let inbound = h.ton.oracle_inbound().len();
        let text = h.metrics().await;
        let spent = metric(&text, "keeper_ton_spent_nanoton_total").unwrap_or(0.0) as u128;
        let lost = FUNDED - h.ton.balance(h.wallet.address());
        if inbound >= n && spent == lost && h.ton.held_externals() == 0 {
            return (spent, text);
        }
        assert!(
            Instant::now() < deadline,
            "{inbound} of {n} oracle messages; spent {spent} vs balance change {lost}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_value_follows_the_oracles_gas_recovers_from_out_of_gas_and_spend_matches_the_balance()
{
    let mut h = PricingHarness::start().await;
    h.extra_env.extend([
        ("UPDATE_VALUE_TON".into(), "auto".into()),
        ("PRICE_HEARTBEAT".into(), "3600".into()),
        ("STALE_AFTER".into(), "7200".into()),
    ]);
    let mut child = h.spawn();

    // Six assets, nothing on chain: one batch at the maximum value.
    let (spent, text) = settled(&h, 6).await;
    let inbound = h.ton.oracle_inbound();
    assert!(
        inbound.iter().all(|(v, c)| *v == MAX_VALUE && *c == 0),
        "{inbound:?}"
    );
    assert!(spent > 6 * MAX_VALUE, "values and fees: {spent}");
    // Runway = balance ÷ spend per day; a fresh keeper extrapolates from an hour.
    let balance = h.ton.balance(h.wallet.address()) as f64;
    let per_day_ton = metric(&text, "keeper_ton_spend_per_day_ton");
    let runway = metric(&text, "keeper_wallet_runway_days");
    if let (Some(per_day), Some(runway)) = (per_day_ton, runway) {
        assert!(
            (per_day * 1e9 - 24.0 * spent as f64).abs() / (24.0 * spent as f64) < 0.01,
            "{per_day} TON/day for {spent} nanoton spent"
        );
        assert!(
            (runway - balance / (per_day * 1e9)).abs() / runway < 0.01,
            "runway {runway}"
        );
    } else {
        // The gauges follow the wallet read at the start of the next tick.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let text = h.metrics().await;
        let per_day = metric(&text, "keeper_ton_spend_per_day_ton").expect("spend per day");
        let runway = metric(&text, "keeper_wallet_runway_days").expect("runway");
        assert!(
            (per_day * 1e9 - 24.0 * spent as f64).abs() / (24.0 * spent as f64) < 0.01,
            "{per_day}"
        );
        assert!(
            (runway - balance / (per_day * 1e9)).abs() / runway < 0.01,
            "{runway}"
        );
    }

    // A move: the next message carries the observed cost × 1.5, and lands.
    h.up.set_price_everywhere("USDC", "1.005");
    settled(&h, 7).await;
    let last = *h.ton.oracle_inbound().last().unwrap();
    assert_eq!(last, (LEARNED_VALUE, 0));

    // The margin is real: the oracle's gas grows by a quarter and the learned value still pays
    // for it, the update lands rather than running out of gas.
    let grown = ORACLE_GAS_FEE * 5 / 4;
    h.ton.set_oracle_gas_fee(grown);
    h.up.set_price_everywhere("USDC", "1.0");
    settled(&h, 8).await;
    let last = *h.ton.oracle_inbound().last().unwrap();
    assert_eq!(last, (LEARNED_VALUE, 0), "landed within the margin");
    let (price, _) = h.ton.price(&h.oracle, 2).expect("USDC on chain");
    assert_eq!(price, 1_000_000);

    // The oracle's gas grows past the margin: out of gas, reported; the next send carries the
    // maximum and lands.
    h.ton.set_oracle_gas_fee(3 * ORACLE_GAS_FEE);
    h.up.set_price_everywhere("USDC", "1.005");
    let fired = h
        .sink
        .wait_until(Duration::from_secs(30), |r| {
            r.json()
                .is_some_and(|j| j["key"] == "update_failed_onchain" && j["status"] == "firing")
        })
        .await
        .and_then(|r| r.json())
        .expect("update_failed_onchain fired");
    let summary = fired["summary"].as_str().unwrap_or_default();
    assert!(summary.contains("exit code -14"), "{summary}");
    settled(&h, 10).await;
    let inbound = h.ton.oracle_inbound();
    assert_eq!(
        inbound[8..10],
        [(grown * 3 / 2, EXIT_OUT_OF_GAS), (MAX_VALUE, 0)],
        "{inbound:?}"
    );
    let (price, _) = h.ton.price(&h.oracle, 2).expect("USDC on chain");
    assert_eq!(price, 1_005_000, "the retry landed");
    // The failed message's bounce came back and is not counted as spent (settled checks it).
    child.kill().await.expect("stop");
}

/// A new process that shares nothing with the previous one but the chain: another schema and
/// Redis prefix (a `--once` run keeps its wallet lease until it expires).
fn forget(h: &mut PricingHarness) {
    let fresh = keeper_tests::env::unique("pricing");
    h.extra_env.extend([
        ("DB_SCHEMA".into(), fresh.clone()),
        ("REDIS_PREFIX".into(), format!("{fresh}:")),
    ]);
}

/// Runs `--once` with `args` to completion and returns what the oracle received during it.
async fn once(h: &PricingHarness, args: &[&str]) -> Vec<(u128, i32)> {
    let before = h.ton.oracle_inbound().len();
    let mut all = vec!["--once"];
    all.extend_from_slice(args);
    let out = h.command(&all).output().await.expect("run --once");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    h.ton.oracle_inbound()[before..].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_once_run_attaches_the_value_learned_from_the_chain() {
    let mut h = PricingHarness::start().await;
    h.extra_env
        .extend([("UPDATE_VALUE_TON".into(), "auto".into())]);
    // A wallet with no history: the maximum.
    let first = once(&h, &[]).await;
    assert_eq!(first, vec![(MAX_VALUE, 0); 6], "{first:?}");
    // A new process knows nothing in memory, but the chain has the oracle's results.
    forget(&mut h);
    let second = once(&h, &["--force"]).await;
    assert_eq!(second, vec![(LEARNED_VALUE, 0); 6], "{second:?}");
    // The spend rate starts from the chain's history too: one hour's extrapolation of what the
    // wallet spent, quiet (no wallet_runway_low) on so little history.
    assert!(
        !h.sink
            .requests()
            .iter()
            .any(|r| r.json().is_some_and(|j| j["key"] == "wallet_runway_low")),
        "wallet_runway_low fired on two batches"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_history_falls_back_to_the_maximum() {
    let mut h = PricingHarness::start().await;
    h.extra_env
        .extend([("UPDATE_VALUE_TON".into(), "auto".into())]);
    let first = once(&h, &[]).await;
    assert_eq!(first.len(), 6, "{first:?}");
    h.ton.inject(
        "getTransactions",
        keeper_tests::toncenter::Fault::Status(400, "cannot parse the account".into()),
        1,
    );
    forget(&mut h);
    let second = once(&h, &["--force"]).await;
    assert_eq!(second, vec![(MAX_VALUE, 0); 6], "{second:?}");
}

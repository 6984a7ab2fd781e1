//! Redundancy without paying twice, with real processes on two wallets against the toncenter
//! stand-in: while the primary (FALLBACK_OFFSET=0) lives, only it sends; once it is killed, the
//! fallback (FALLBACK_OFFSET=4) publishes within heartbeat + offset. The stand-ins' quotes are
//! observed 5 s before each answer, so a published value's heartbeat falls due 5 s after it lands.

use std::time::{Duration, Instant};

use keeper_runtime::secret::Secret;
use keeper_tests::pricing::{OTHER_MNEMONIC, PricingHarness};
use keeper_tests::process::free_port;
use keeper_tests::upstreams::Ts;
use keeper_ton::{Network, Wallet, WalletKeys, WalletVersion};

/// A second keeper identity (the harness's own is the primary).
const FALLBACK_MNEMONIC: &str = OTHER_MNEMONIC;
const HEARTBEAT: u64 = 10;
const OFFSET: u64 = 4;

/// The fallback identity's wallet, funded and registered with the harness's oracle.
fn funded_fallback(h: &PricingHarness) -> Wallet {
    let keys = WalletKeys::from_mnemonic(&Secret::new(FALLBACK_MNEMONIC)).unwrap();
    let wallet = Wallet::new(keys, WalletVersion::V5r1, Network::Mainnet).unwrap();
    h.ton.fund(wallet.address(), 50_000_000_000);
    h.ton.register_keeper(&h.oracle, wallet.keys().public_key());
    wallet
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_primary_sends_while_it_lives_and_the_fallback_takes_over_within_heartbeat_plus_offset()
 {
    let mut h = PricingHarness::start().await;
    h.extra_env.extend([
        ("PRICE_HEARTBEAT".into(), HEARTBEAT.to_string()),
        ("STALE_AFTER".into(), "120".into()),
    ]);
    let fallback_wallet = funded_fallback(&h);

    let mut primary = h.spawn();
    h.wait_externals(1, Duration::from_secs(30)).await;
    let log = std::env::temp_dir().join(format!("{}-fallback.log", h.schema));
    eprintln!("fallback log: {}", log.display());
    let mut fallback = h
        .command(&[])
        .env("KEEPER_MNEMONIC", FALLBACK_MNEMONIC)
        .env("FALLBACK_OFFSET", OFFSET.to_string())
        .env("METRICS_ADDR", format!("127.0.0.1:{}", free_port()))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn the fallback");

    // Two heartbeats and more: the primary keeps the oracle fresh, the fallback never sends.
    tokio::time::sleep(Duration::from_secs(2 * HEARTBEAT + 3)).await;
    let primary_wallet = h.wallet.clone();
    assert!(
        h.ton.accepted_from(primary_wallet.address()) >= 3,
        "initial and heartbeats from the primary"
    );
    assert_eq!(
        h.ton.accepted_from(fallback_wallet.address()),
        0,
        "the fallback paid nothing while the primary lived"
    );
    // ...while it ticked all along (its log has a finished cycle per second).
    let ticks = std::fs::read_to_string(&log)
        .unwrap()
        .matches("\"cycle finished\"")
        .count();
    assert!(
        ticks as u64 >= HEARTBEAT,
        "the fallback ticked only {ticks} times"
    );

    primary.kill().await.expect("kill the primary");
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(HEARTBEAT + OFFSET + 5);
    while h.ton.accepted_from(fallback_wallet.address()) == 0 {
        assert!(
            Instant::now() < deadline,
            "the fallback did not take over within {} s",
            HEARTBEAT + OFFSET + 5
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took = killed.elapsed();
    // The last heartbeat was at most HEARTBEAT before the kill, so the next one falls due at
    // most HEARTBEAT after it; the fallback adds OFFSET, and a tick (1 s) plus a send.
    assert!(
        took <= Duration::from_secs(HEARTBEAT + OFFSET + 2),
        "took {took:?}"
    );
    fallback.kill().await.expect("stop the fallback");
}

/// Sources whose observations lag 40 s (as CoinGecko's and DefiLlama's do), a heartbeat shorter
/// than that lag and a fallback offset equal to the interval: the primary sends one batch per
/// heartbeat, the fallback nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lagging_sources_cost_one_batch_per_heartbeat_and_nothing_from_the_fallback() {
    const LAG: u64 = 40;
    const SHORT_HEARTBEAT: u64 = 8;
    const WATCH: u64 = 26;
    let mut h = PricingHarness::start().await;
    h.extra_env.extend([
        ("PRICE_HEARTBEAT".into(), SHORT_HEARTBEAT.to_string()),
        ("STALE_AFTER".into(), "300".into()),
    ]);
    for asset in ["USDT", "USDC", "DAI", "USDD", "TUSD", "FDUSD"] {
        h.up.set_timestamp_everywhere(asset, Ts::Age(LAG));
    }
    let fallback_wallet = funded_fallback(&h);

    let mut primary = h.spawn();
    h.wait_externals(1, Duration::from_secs(30)).await;
    let started = h.ton.accepted_from(h.wallet.address());
    let mut fallback = h
        .command(&[])
        .env("KEEPER_MNEMONIC", FALLBACK_MNEMONIC)
        .env("FALLBACK_OFFSET", "1")
        .env("METRICS_ADDR", format!("127.0.0.1:{}", free_port()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn the fallback");
    tokio::time::sleep(Duration::from_secs(WATCH)).await;
    let heartbeats = h.ton.accepted_from(h.wallet.address()) - started;
    assert!(
        (2..=(WATCH / SHORT_HEARTBEAT + 1) as usize).contains(&heartbeats),
        "{heartbeats} batches in {WATCH} s with a {SHORT_HEARTBEAT} s heartbeat"
    );
    assert_eq!(
        h.ton.accepted_from(fallback_wallet.address()),
        0,
        "the fallback paid nothing while the primary lived"
    );
    primary.kill().await.unwrap();
    fallback.kill().await.unwrap();
}

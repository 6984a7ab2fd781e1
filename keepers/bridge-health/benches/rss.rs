//! Whole-process peak RSS of `bridge-health-keeper` after N ticks (default 200) against the
//! local stand-ins: every bridge upstream, DefiLlama coins, Ethereum JSON-RPC, the toncenter
//! chain, an alert webhook, and PostgreSQL/Redis when `KEEPERS_TEST_PG_URL` /
//! `KEEPERS_TEST_REDIS_URL` are set. Orbit's TVL flips between crashed and healthy every 20
//! ticks, so the run publishes, alerts and resolves repeatedly.
//!
//! Run: `cargo bench -p bridge-health-keeper --bench rss` (BENCH_TICKS and BENCH_INTERVAL_MS
//! override the defaults). Target: peak RSS ≤ 16 MiB. Reads `VmHWM` from `/proc` (Linux).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test harness: a failed setup is a failed test

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use keeper_runtime::secret::Secret;
use keeper_tests::bridges::BridgeApis;
use keeper_tests::sink::Sink;
use keeper_tests::toncenter::ToncenterServer;
use keeper_tests::upstreams::{ALLOW_LOCK, Ts, UpstreamsHandle};
use keeper_ton::{Network, WalletVersion};
use keeper_ton::{Wallet, WalletKeys};

const BIN: &str = env!("CARGO_BIN_EXE_bridge-health-keeper");
const MNEMONIC: &str = "fancy carpet hello mandate penalty trial consider property top vicious exit rebuild tragic profit urban major total month holiday sudden rib gather media vicious";
const TARGET_KIB: u64 = 16 * 1024;

fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

fn cycles(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| l.starts_with("keeper_cycles_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

fn main() {
    // `cargo bench` passes `--bench`; any other argument is a filter this bench ignores.
    let ticks: u64 = std::env::var("BENCH_TICKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let interval_ms: u64 = std::env::var("BENCH_INTERVAL_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(250);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run(ticks, interval_ms));
}

async fn run(ticks: u64, interval_ms: u64) {
    keeper_runtime::install_crypto_provider();
    let apis = BridgeApis::start().await;
    let up = UpstreamsHandle::start().await;
    for key in [
        "ton:EQBynBO23ywHy_CgarY9NK9FTz0yDsG82PtcbSTQgGoXwiuA",
        "ton:EQB-MPwrd1G6WKNkLz_VnV6WqBDd142KMQv-g1O-8QUA3728",
        "ton:EQC_1YoM8RBixN95lz7odcF3Vrkc_N8Ne7gQi7Abtlet_Efi",
    ] {
        up.set_defillama_coin(key, "0.9996", Ts::Fresh);
    }
    up.set_eth_bool(
        "0xb323692b6d4DB96af1f52E4499a2bd0Ded9af3C5",
        ALLOW_LOCK,
        true,
    );
    let ton = ToncenterServer::start().await;
    let oracle = ton.new_oracle();
    let keys = WalletKeys::from_mnemonic(&Secret::new(MNEMONIC)).expect("mnemonic");
    let wallet = Wallet::new(keys, WalletVersion::V5r1, Network::Mainnet).expect("wallet");
    ton.fund(wallet.address(), 1_000_000_000_000);
    ton.register_keeper(&oracle, wallet.keys().public_key());
    let sink = Sink::start().await;
    let metrics_addr = format!("127.0.0.1:{}", free_port());
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/bridge-health.toml");

    let mut cmd = tokio::process::Command::new(BIN);
    cmd.env_clear()
        .envs(up.env())
        .env("DEFILLAMA_BRIDGES_URL", &apis.defillama_bridges)
        .env("DEFILLAMA_API_URL", &apis.defillama_api)
        .env("WORMHOLESCAN_URL", &apis.wormholescan)
        .env("AXELARSCAN_URL", &apis.axelarscan)
        .env("TON_RPC_URL", ton.jsonrpc_url())
        .env("TON_MAX_RPS", "1000")
        .env("KEEPER_MNEMONIC", MNEMONIC)
        .env("BRIDGE_ORACLE_ADDRESS", oracle.to_base64_url())
        .env("UPDATE_INTERVAL_MS", interval_ms.to_string())
        .env("CYCLE_TIMEOUT", "20")
        .env("ALERT_WEBHOOK_URL", sink.url())
        .env("METRICS_ADDR", &metrics_addr)
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "warn")
        .arg("--config")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let mut stores = Vec::new();
    if let Ok(pg) = std::env::var("KEEPERS_TEST_PG_URL") {
        cmd.env("DATABASE_URL", pg)
            .env("DB_SCHEMA", keeper_tests::env::unique("bridge_bench"));
        stores.push("postgres");
    }
    if let Ok(redis) = std::env::var("KEEPERS_TEST_REDIS_URL") {
        cmd.env("REDIS_URL", redis).env(
            "REDIS_PREFIX",
            format!("{}:", keeper_tests::env::unique("bridge_bench")),
        );
        stores.push("redis");
    }
    if let Ok(path) = std::env::var("PATH") {
        cmd.env("PATH", path);
    }
    let mut child = cmd.spawn().expect("spawn bridge-health-keeper");
    let pid = child.id().expect("pid");

    let started = Instant::now();
    let url = format!("http://{metrics_addr}/metrics");
    let client = reqwest::Client::new();
    let mut done = 0;
    let mut crashed = false;
    while done < ticks {
        tokio::time::sleep(Duration::from_millis(interval_ms)).await;
        if let Some(status) = child.try_wait().expect("child status") {
            panic!("keeper exited early: {status}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(ticks * interval_ms / 1000 * 4 + 120),
            "only {done} of {ticks} ticks completed"
        );
        if let Ok(r) = client.get(&url).send().await {
            done = cycles(&r.text().await.unwrap_or_default());
        }
        let want_crash = (done / 20) % 2 == 1;
        if want_crash != crashed {
            crashed = want_crash;
            if crashed {
                apis.set_tvl_history("orbit-bridge", 200_000_000.0, 80_000_000.0);
            } else {
                apis.all_healthy();
            }
        }
    }
    let hwm = status_kib(pid, "VmHWM:").expect("VmHWM (Linux /proc)");
    let rss = status_kib(pid, "VmRSS:").unwrap_or(0);
    let externals = ton.externals().len();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = tokio::time::timeout(Duration::from_secs(30), child.wait()).await;

    println!(
        "bridge-health-keeper: {done} ticks every {interval_ms} ms in {:.1} s, {externals} external messages, stores: {}",
        started.elapsed().as_secs_f64(),
        if stores.is_empty() {
            "none".to_owned()
        } else {
            stores.join("+")
        }
    );
    println!(
        "peak RSS (VmHWM): {hwm} KiB = {:.2} MiB; RSS at end: {rss} KiB; target <= 16 MiB: {}",
        hwm as f64 / 1024.0,
        if hwm <= TARGET_KIB { "met" } else { "MISSED" }
    );
}

//! Whole-process benchmark of `pricing-oracle-keeper` against the local stand-ins:
//! start-to-ready, cycle wall time with every upstream answering after 400 ms, and peak RSS
//! after 200 ticks at a 100 ms interval.
//!
//! Run: `cargo build --release --workspace --bins && target/release/bench_pricing`
//! (or `scripts/bench-pricing.sh`). It uses no database or Redis: the keeper's own footprint.

use std::process::Stdio;
use std::time::{Duration, Instant};

use keeper_tests::pricing::PricingHarness;
use keeper_tests::upstreams::Source;
use tokio::process::Child;

fn spawn(h: &PricingHarness, extra: &[(&str, &str)]) -> Child {
    let mut cmd = h.command_without_stores();
    for (k, v) in extra {
        cmd.env(k, v);
    }
    cmd.env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn the release keeper (build it with --release first)")
}

fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

async fn metric(h: &PricingHarness, name_prefix: &str) -> f64 {
    h.metrics()
        .await
        .lines()
        .filter(|l| l.starts_with(name_prefix))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn ready(h: &PricingHarness) -> bool {
    let url = format!("http://{}/readyz", h.metrics_addr);
    matches!(reqwest::get(&url).await, Ok(r) if r.status().is_success())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    keeper_runtime::install_crypto_provider();

    // 1. Start to ready (mnemonic derivation, first fetch, wallet read).
    let h = PricingHarness::start().await;
    let started = Instant::now();
    let mut child = spawn(&h, &[]);
    while !ready(&h).await {
        assert!(started.elapsed() < Duration::from_secs(30), "never ready");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let to_ready = started.elapsed();
    let _ = child.kill().await;
    println!(
        "start to ready:               {:>8.1} ms",
        to_ready.as_secs_f64() * 1e3
    );

    // 2. Cycle wall time with every upstream answering after 400 ms (one --once dry run
    //    measures the whole cycle including the TON calls against the local toncenter).
    let h = PricingHarness::start().await;
    for s in [Source::Chainlink, Source::Coingecko, Source::Defillama] {
        h.up.set_latency(s, Duration::from_millis(400));
    }
    let out = h
        .command_without_stores()
        .env("RUST_LOG", "info")
        .env("LOG_FORMAT", "json")
        .args(["--once", "--dry-run", "--force", "--output", "json"])
        .output()
        .await
        .expect("run --once");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let cycle_ms = stderr
        .lines()
        .filter(|l| l.contains("\"cycle finished\""))
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| {
            v["duration_ms"]
                .as_f64()
                .or_else(|| v["fields"]["duration_ms"].as_f64())
        })
        .next_back();
    match cycle_ms {
        Some(ms) => println!(
            "cycle wall time, 400 ms upstreams: {ms:>6.1} ms (sources concurrent; TON calls local)"
        ),
        None => println!(
            "cycle wall time: not found in the log (exit {:?})",
            out.status.code()
        ),
    }

    // 3. Peak RSS after 200 ticks at 100 ms.
    let h = PricingHarness::start().await;
    let mut child = spawn(&h, &[("UPDATE_INTERVAL_MS", "100"), ("CYCLE_TIMEOUT", "5")]);
    let pid = child.id().expect("pid");
    let t0 = Instant::now();
    loop {
        let ticks = metric(&h, "keeper_cycles_total").await;
        if ticks >= 200.0 {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "200 ticks took too long ({ticks})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rss = peak_rss_kib(pid).unwrap_or(0);
    let _ = child.kill().await;
    println!(
        "peak RSS after 200 ticks @100 ms: {:>6.1} MiB ({} external messages sent)",
        rss as f64 / 1024.0,
        h.accepted_externals()
    );
}

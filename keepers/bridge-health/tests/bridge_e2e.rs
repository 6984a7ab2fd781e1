//! The real `bridge-health-keeper` process against local stand-ins for every upstream
//! (DefiLlama bridges/API/coins, Wormholescan, Axelarscan, Ethereum JSON-RPC), the
//! toncenter-compatible chain with an oracle, an alert webhook sink, and real PostgreSQL and
//! Redis (`scripts/test.sh` provides them).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test harness: a failed setup is a failed test

use std::process::Stdio;
use std::time::{Duration, Instant};

use keeper_runtime::secret::Secret;
use keeper_tests::bridge_keeper::{BridgeHarness as Harness, PEG_KEYS, TON_BRIDGE};
use keeper_tests::bridges::{Reply, Route};
use keeper_tests::pricing::TEST_MNEMONIC as MNEMONIC;
use keeper_tests::process::{free_port, sigterm, spawn_logged};
use keeper_tests::upstreams::{ALLOW_LOCK, Ts};
use keeper_ton::{Network, Wallet, WalletKeys, WalletVersion};
use serde_json::Value;

fn bridge<'a>(doc: &'a Value, name: &str) -> &'a Value {
    doc["bridges"]
        .as_array()
        .and_then(|a| a.iter().find(|b| b["bridge"] == name))
        .unwrap_or_else(|| panic!("{name} missing from {doc}"))
}

fn signal<'a>(b: &'a Value, name: &str) -> &'a Value {
    b["signals"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["signal"] == name))
        .unwrap_or_else(|| panic!("signal {name} missing from {b}"))
}

fn gauge(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_then_sick_then_recovered() {
    let h = Harness::start().await;
    let started = keeper_tests::unix_now();
    let mut child = h.spawn();

    // Healthy: all four online, in one external message, in config order.
    h.wait_externals(1).await;
    let first = h.bridge_events();
    assert_eq!(
        first.iter().map(|e| (e.0, e.1)).collect::<Vec<_>>(),
        [(1, true), (2, true), (3, true), (4, true)]
    );
    for (id, _, last_seen) in &first {
        assert!(
            *last_seen >= started,
            "bridge {id} last_seen {last_seen} before start"
        );
        assert_eq!(
            h.ton.bridge_status(&h.oracle, *id as u8).map(|s| s.0),
            Some(true)
        );
    }
    // Unchanged and within the heartbeat: nothing more.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(h.accepted(), 1, "no publish while nothing changed");
    let hash = h.redis_hash(3).await;
    assert_eq!(
        hash.get("status").map(String::as_str),
        Some("healthy"),
        "{hash:?}"
    );
    let metrics = h.metrics().await;
    assert_eq!(
        gauge(&metrics, "bridge_health_score{bridge=\"orbit\"}"),
        Some(1.0),
        "{metrics}"
    );
    assert!(
        metrics.contains("bridge_online{bridge=\"axelar\"} 1"),
        "{metrics}"
    );

    // Orbit's TVL crashes 60% in 24 h, Wormhole's governor queues a transfer, Axelar's
    // volume stalls: one external with exactly those three, all degraded (Orbit's one
    // critical heuristic signal is not yet confirmed)...
    h.apis
        .set_tvl_history("orbit-bridge", 200_000_000.0, 80_000_000.0);
    h.apis.set_governor_queue(&[(2, 6_200_000.0)]);
    h.apis.set_bridge_volume(17, 0.0, 9_820_000.0);
    h.wait_externals(2).await;
    let second: Vec<_> = h.bridge_events().into_iter().skip(4).collect();
    assert_eq!(
        second.iter().map(|e| (e.0, e.1)).collect::<Vec<_>>(),
        [(2, true), (3, true), (4, true)],
        "only the bridges whose status changed, Orbit degraded, not offline"
    );
    let degraded = h.alert("bridge_degraded:orbit", "firing").await;
    let summary = degraded["summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains("one heuristic critical signal (tvl:orbit-bridge, tick 1 of 2)"),
        "{summary}"
    );
    // ...and Orbit goes offline when the same signal persists into the next tick.
    h.wait_externals(3).await;
    let third: Vec<_> = h.bridge_events().into_iter().skip(7).collect();
    assert_eq!(
        third.iter().map(|e| (e.0, e.1)).collect::<Vec<_>>(),
        [(2, false)]
    );
    let orbit_last_seen = third[0].2;
    assert!(
        orbit_last_seen >= first[1].2,
        "offline keeps the last healthy sighting"
    );
    assert!(
        orbit_last_seen < keeper_tests::unix_now(),
        "not bumped by the offline status"
    );

    let offline = h.alert("bridge_offline:orbit", "firing").await;
    let summary = offline["summary"].as_str().unwrap_or_default();
    assert!(summary.contains("tvl:orbit-bridge"), "{summary}");
    assert!(summary.contains("fell 60.0%"), "{summary}");
    assert!(
        summary.contains("critical for 2 consecutive ticks"),
        "{summary}"
    );
    assert_eq!(offline["severity"], "critical");
    let wormhole = h.alert("bridge_degraded:wormhole", "firing").await;
    assert!(
        wormhole["summary"]
            .as_str()
            .unwrap_or_default()
            .contains("governor_queue"),
        "{wormhole}"
    );
    let axelar = h.alert("bridge_degraded:axelar", "firing").await;
    assert!(
        axelar["summary"]
            .as_str()
            .unwrap_or_default()
            .contains("volume_stall:17"),
        "{axelar}"
    );

    let snaps = h
        .snapshots_when(|s| s.contains(&(2, "offline".into(), false, true)))
        .await;
    assert!(
        snaps.contains(&(2, "offline".into(), false, true)),
        "{snaps:?}"
    );
    assert!(
        snaps.iter().any(|s| s.0 == 3 && s.1 == "degraded" && s.2),
        "{snaps:?}"
    );
    assert_eq!(
        h.redis_status_when(2, "offline").await.as_deref(),
        Some("offline")
    );
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("bridge_online{bridge=\"orbit\"} 0"),
        "{metrics}"
    );
    let degraded_score =
        gauge(&metrics, "bridge_health_score{bridge=\"wormhole\"}").expect("wormhole score");
    assert!(
        (0.25..0.75).contains(&degraded_score),
        "degraded band: {degraded_score}"
    );

    // Everything recovers: once confirmed, the three are published back online and their
    // alerts resolve.
    h.apis.all_healthy();
    h.wait_externals(4).await;
    let fourth: Vec<_> = h.bridge_events().into_iter().skip(8).collect();
    assert_eq!(
        fourth.iter().map(|e| (e.0, e.1)).collect::<Vec<_>>(),
        [(2, true), (3, true), (4, true)]
    );
    for key in [
        "bridge_offline:orbit",
        "bridge_degraded:wormhole",
        "bridge_degraded:axelar",
    ] {
        h.alert(key, "resolved").await;
    }
    assert_eq!(sigterm(&mut child).await, Some(0), "SIGTERM exits 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_is_unknown_never_healthy() {
    let h = Harness::start().await;

    // One garbage endpoint: that signal is unknown, the bridge decides from the others.
    h.apis.set(Route::Limit, Reply::garbage());
    let (code, doc) = h.once(&["--dry-run"]).await;
    assert_eq!(code, 0, "{doc}");
    let wormhole = bridge(&doc, "wormhole");
    assert_eq!(wormhole["status"], "healthy");
    let limit = signal(wormhole, "governor_limit");
    assert_eq!(limit["verdict"], "unknown", "{limit}");
    assert_eq!(limit["value"], Value::Null);
    assert!(
        limit["why"]
            .as_str()
            .unwrap_or_default()
            .contains("malformed"),
        "{limit}"
    );
    assert!(
        !wormhole["deciding"]
            .as_array()
            .is_some_and(|d| d.iter().any(|s| s == "governor_limit")),
        "an unknown signal never counts as healthy: {wormhole}"
    );

    // Every Wormhole upstream answers garbage or an HTML error page: status unknown, nothing
    // published for Wormhole, the others still go out, the cycle fails and an alert fires.
    h.apis.set(Route::Health, Reply::html(502));
    h.apis.set(
        Route::Enqueued,
        Reply::raw(200, "application/json", "{\"data\": nul"),
    );
    h.apis.set(
        Route::Bridge(77),
        Reply::raw(200, "application/json", "[1, 2"),
    );
    h.apis.set(
        Route::Tvl("portal".into()),
        Reply::raw(200, "application/json", "\"lots\""),
    );
    let (code, doc) = h.once(&[]).await;
    assert_eq!(
        code, 1,
        "a bridge with unknown status fails the cycle: {doc}"
    );
    let wormhole = bridge(&doc, "wormhole");
    assert_eq!(wormhole["status"], "unknown", "{wormhole}");
    assert_eq!(wormhole["is_online"], Value::Null);
    assert_eq!(wormhole["action"], "withhold");
    assert!(
        wormhole["signals"]
            .as_array()
            .is_some_and(|s| s.iter().all(|x| x["verdict"] == "unknown")),
        "{wormhole}"
    );
    assert_eq!(doc["outcome"], "published", "{doc}");
    let sent: Vec<u16> = h.bridge_events().iter().map(|e| e.0).collect();
    assert_eq!(sent, [1, 2, 4], "Wormhole withheld");
    assert_eq!(h.ton.bridge_status(&h.oracle, 3), None);
    let alert = h.alert("bridge_unknown:wormhole", "firing").await;
    assert!(
        alert["summary"]
            .as_str()
            .unwrap_or_default()
            .contains("no signal could be read"),
        "{alert}"
    );
    let snaps = h.snapshots().await;
    assert!(
        snaps.contains(&(3, "unknown".into(), false, false)),
        "{snaps:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_signal_does_not_bring_an_offline_bridge_back() {
    let h = Harness::start().await;
    h.apis
        .set_tvl_history("orbit-bridge", 200_000_000.0, 80_000_000.0);
    let mut child = h.spawn();
    // Degraded first, offline once the crash persisted for confirm_ticks.
    h.wait_externals(2).await;
    assert_eq!(h.ton.bridge_status(&h.oracle, 2).map(|s| s.0), Some(false));

    // The TVL endpoints start answering garbage; the peg is fine. Orbit must stay offline.
    h.apis
        .set(Route::Tvl("orbit-bridge".into()), Reply::garbage());
    h.apis
        .set(Route::Protocol("orbit-bridge".into()), Reply::html(503));
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(h.accepted(), 2, "no republish: {:?}", h.bridge_events());
    assert_eq!(h.ton.bridge_status(&h.oracle, 2).map(|s| s.0), Some(false));
    let hash = h.redis_hash(2).await;
    assert_eq!(
        hash.get("status").map(String::as_str),
        Some("offline"),
        "{hash:?}"
    );
    assert!(
        hash.get("reason")
            .is_some_and(|r| r.contains("held while unreadable")),
        "{hash:?}"
    );

    // Healthy readings bring it back once confirmed.
    h.apis.all_healthy();
    h.wait_externals(3).await;
    assert_eq!(h.ton.bridge_status(&h.oracle, 2).map(|s| s.0), Some(true));
    h.alert("bridge_offline:orbit", "resolved").await;
    assert_eq!(sigterm(&mut child).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_are_retried_and_persistent_ones_are_unknown() {
    let h = Harness::start().await;
    h.apis.push(Route::Limit, Reply::rate_limited(Some(1)));
    h.apis.push(Route::Bridge(77), Reply::html(503));
    h.apis
        .set(Route::Tvl("axelar".into()), Reply::rate_limited(None));
    let (code, doc) = h.once(&["--dry-run"]).await;
    assert_eq!(code, 0, "{doc}");
    let wormhole = bridge(&doc, "wormhole");
    assert_eq!(signal(wormhole, "governor_limit")["verdict"], "healthy");
    assert_eq!(signal(wormhole, "volume_stall:77")["verdict"], "healthy");
    assert_eq!(h.apis.hits(&Route::Limit), 2, "one 429, one retry");
    assert_eq!(h.apis.hits(&Route::Bridge(77)), 2, "one 503, one retry");
    let axelar = bridge(&doc, "axelar");
    let tvl = signal(axelar, "tvl:axelar");
    assert_eq!(tvl["verdict"], "unknown", "{tvl}");
    assert!(
        tvl["why"]
            .as_str()
            .unwrap_or_default()
            .contains("rate limited"),
        "{tvl}"
    );
    assert_eq!(h.apis.hits(&Route::Tvl("axelar".into())), 3, "attempts = 3");
    assert_eq!(axelar["status"], "healthy", "the other two signals decide");
    // The dry run signed every bridge and sent nothing.
    assert_eq!(doc["outcome"], "dry_run");
    assert_eq!(doc["messages"].as_array().map(Vec::len), Some(4), "{doc}");
    assert!(doc["boc"].as_str().is_some_and(|b| !b.is_empty()));
    assert_eq!(h.accepted(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peg_and_allow_lock_take_the_ton_bridge_offline() {
    let h = Harness::start().await;
    h.up.set_defillama_coin(PEG_KEYS[0], "0.85", Ts::Fresh);
    // A broken peg alone is heuristic: degraded, and a dry run never advances the count.
    for _ in 0..2 {
        let (code, doc) = h.once(&["--dry-run"]).await;
        assert_eq!(code, 0, "{doc}");
        let tb = bridge(&doc, "ton_bridge");
        assert_eq!(tb["status"], "degraded", "{tb}");
        assert_eq!(tb["deciding"], serde_json::json!(["peg:jUSDT"]));
        let msg = doc["messages"]
            .as_array()
            .and_then(|m| m.iter().find(|m| m["bridge_id"] == 1))
            .expect("ton bridge message");
        assert_eq!(msg["is_online"], true);
        assert_eq!(msg["op"], "update_bridge_status");
    }
    // Real runs keep the history in PostgreSQL: the second --once confirms it.
    let (_, doc) = h.once_pg().await;
    assert_eq!(bridge(&doc, "ton_bridge")["status"], "degraded", "{doc}");
    let (_, doc) = h.once_pg().await;
    let tb = bridge(&doc, "ton_bridge");
    assert_eq!(tb["status"], "offline", "{tb}");
    assert_eq!(
        h.ton.bridge_status(&h.oracle, 1).map(|s| s.0),
        Some(false),
        "{doc}"
    );

    // The bridge's own contract saying it is paused is authoritative: offline at once.
    let h = Harness::start().await;
    h.up.set_eth_bool(TON_BRIDGE, ALLOW_LOCK, false);
    let (_, doc) = h.once(&["--dry-run"]).await;
    let tb = bridge(&doc, "ton_bridge");
    assert_eq!(tb["status"], "offline", "{tb}");
    assert!(
        tb["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("authoritative: offline at once"),
        "{tb}"
    );
    assert!(
        tb["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("allowLock() on"),
        "{tb}"
    );

    // With CoinGecko on for jUSDT, a stale DefiLlama quote leaves CoinGecko to decide.
    h.up.set_eth_bool(TON_BRIDGE, ALLOW_LOCK, true);
    h.up.set_defillama_coin(PEG_KEYS[0], "1.0", Ts::Age(7200));
    h.up.set_token_price("the-open-network", &PEG_KEYS[0][4..], "0.86", Ts::Fresh);
    let with_cg = h.dir.path().join("coingecko.toml");
    let text = std::fs::read_to_string(&h.config).unwrap();
    std::fs::write(
        &with_cg,
        text.replacen("coingecko = false", "coingecko = true", 1),
    )
    .unwrap();
    let mut cmd = h.command_with(&with_cg, &["--once", "--dry-run", "--output", "json"]);
    let out = cmd.output().await.unwrap();
    let doc: Value = serde_json::from_slice(&out.stdout).expect("summary JSON");
    let peg = signal(bridge(&doc, "ton_bridge"), "peg:jUSDT");
    assert_eq!(peg["verdict"], "critical", "{peg}");
    assert_eq!(peg["value"]["quotes"][0]["source"], "coingecko", "{peg}");
    assert!(
        peg["why"]
            .as_str()
            .unwrap_or_default()
            .contains("defillama unusable"),
        "{peg}"
    );

    // A stale peg quote is unknown, not healthy.
    h.up.set_eth_bool(TON_BRIDGE, ALLOW_LOCK, true);
    h.up.set_defillama_coin(PEG_KEYS[2], "1.0", Ts::Age(7200));
    let (_, doc) = h.once(&["--dry-run"]).await;
    let orbit = bridge(&doc, "orbit");
    assert_eq!(signal(orbit, "peg:oUSDT")["verdict"], "unknown", "{orbit}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_without_a_config_file_watches_the_four_default_bridges() {
    let h = Harness::start().await;
    let out = h
        .command_without_config(&["--once", "--dry-run", "--output", "json"])
        .output()
        .await
        .unwrap();
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let bridges: Vec<(u64, &str, &str)> = summary["bridges"]
        .as_array()
        .expect("bridges")
        .iter()
        .map(|b| {
            (
                b["bridge_id"].as_u64().unwrap_or_default(),
                b["bridge"].as_str().unwrap_or_default(),
                b["status"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(
        bridges,
        [
            (1, "ton_bridge", "healthy"),
            (2, "orbit", "healthy"),
            (3, "wormhole", "healthy"),
            (4, "axelar", "healthy")
        ],
        "{summary}"
    );
    assert_eq!(out.status.code(), Some(0), "{summary}");
    assert_eq!(h.accepted(), 0, "a dry run sends nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wallet_and_status_commands() {
    let h = Harness::start().await;
    let out = h
        .command(&["wallet", "--offline", "--output", "json"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let w: Value = serde_json::from_slice(&out.stdout).expect("wallet JSON");
    assert_eq!(w["version"], "v5r1", "{w}");
    assert!(
        w["address_bounceable"]
            .as_str()
            .is_some_and(|a| a.len() == 48)
    );

    let (code, _) = h.once(&[]).await;
    assert_eq!(code, 0);
    let out = h
        .command(&["status", "--output", "json"])
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    let rows = s["bridges"].as_array().expect("bridges");
    assert_eq!(rows.len(), 4);
    assert!(
        rows.iter()
            .all(|r| r["is_online"] == true && r["stale"] == false),
        "{s}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_exits_2_naming_the_setting() {
    let h = Harness::start().await;
    type Case<'a> = (&'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: [Case; 3] = [
        (&[("BRIDGE_HEARTBEAT", "1800")], "", "BRIDGE_HEARTBEAT"),
        (&[("WORMHOLESCAN_URL", "not a url")], "", "WORMHOLESCAN_URL"),
        (
            &[],
            "[[bridges]]\nid = 9\nname = \"x\"\n[[bridges.signals]]\nkind = \"tvll\"\n",
            "bridges[4].signals[0].kind",
        ),
    ];
    for (env, append, setting) in cases {
        let cfg = h.dir.path().join("case.toml");
        let base = std::fs::read_to_string(&h.config).unwrap();
        std::fs::write(&cfg, format!("{base}\n{append}")).unwrap();
        let mut cmd = h.command_with(&cfg, &["--once"]);
        cmd.envs(env.iter().copied());
        let out = cmd.output().await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{setting}: {stderr}");
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        assert_eq!(lines.len(), 1, "{stderr}");
        assert!(lines[0].contains(setting), "{setting} not in {stderr}");
        assert!(!stderr.contains("carpet"), "mnemonic leaked: {stderr}");
    }
    // Publishing needs the oracle.
    let mut cmd = h.command(&["--once"]);
    cmd.env_remove("BRIDGE_ORACLE_ADDRESS");
    let out = cmd.output().await.unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("BRIDGE_ORACLE_ADDRESS"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peg_quote_from_the_future_is_no_evidence() {
    let h = Harness::start().await;
    // A broken peg stamped an hour ahead: unknown, never critical; the bridge stays healthy.
    let ahead = keeper_tests::bridges::now() + 3_600;
    h.up.set_defillama_coin(PEG_KEYS[0], "0.5", Ts::At(ahead));
    let (code, doc) = h.once(&["--dry-run"]).await;
    assert_eq!(code, 0, "{doc}");
    let tb = bridge(&doc, "ton_bridge");
    let peg = signal(tb, "peg:jUSDT");
    assert_eq!(peg["verdict"], "unknown", "{peg}");
    assert!(
        peg["why"]
            .as_str()
            .unwrap_or_default()
            .contains("in the future"),
        "{peg}"
    );
    assert_eq!(tb["status"], "healthy", "{tb}");
}

/// The primary's wallet, and a second identity funded and registered with the oracle for the
/// fallback tests.
fn primary_and_funded_fallback(h: &Harness) -> (Wallet, Wallet) {
    let keys = WalletKeys::from_mnemonic(&Secret::new(FALLBACK_MNEMONIC)).unwrap();
    let fallback = Wallet::new(keys, WalletVersion::V5r1, Network::Mainnet).unwrap();
    h.ton.fund(fallback.address(), 50_000_000_000);
    h.ton
        .register_keeper(&h.oracle, fallback.keys().public_key());
    let primary = Wallet::new(
        WalletKeys::from_mnemonic(&Secret::new(MNEMONIC)).unwrap(),
        WalletVersion::V5r1,
        Network::Mainnet,
    )
    .unwrap();
    (primary, fallback)
}

/// The fallback identity's keeper, `offset` seconds behind a primary, with its own ops port.
fn spawn_fallback(h: &Harness, heartbeat: u64, offset: u64) -> tokio::process::Child {
    h.command(&[])
        .env("BRIDGE_HEARTBEAT", heartbeat.to_string())
        .env("KEEPER_MNEMONIC", FALLBACK_MNEMONIC)
        .env("FALLBACK_OFFSET", offset.to_string())
        .env("METRICS_ADDR", format!("127.0.0.1:{}", free_port()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// From now on every get-method of the oracle fails, as for a contract that cannot be run.
fn darken_oracle(h: &Harness) {
    h.ton.inject(
        "runGetMethod",
        keeper_tests::toncenter::Fault::Status(400, "cannot run get-method: exit code 11".into()),
        usize::MAX,
    );
}

/// A second identity for the fallback tests.
const FALLBACK_MNEMONIC: &str = "section garden tomato dinner season dice renew length useful spin trade intact use universe what post spike keen mandate behind concert egg doll rug";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fallback_bridge_keeper_sends_nothing_while_the_primary_lives_and_takes_over_after() {
    const HEARTBEAT: u64 = 6;
    const OFFSET: u64 = 3;
    let h = Harness::start().await;
    let (primary_wallet, fallback_wallet) = primary_and_funded_fallback(&h);

    let mut primary = h.command(&[]);
    primary.env("BRIDGE_HEARTBEAT", HEARTBEAT.to_string());
    let mut primary = spawn_logged(primary, &h.schema);
    h.wait_externals(1).await;
    let mut fallback = spawn_fallback(&h, HEARTBEAT, OFFSET);

    tokio::time::sleep(Duration::from_secs(2 * HEARTBEAT + 3)).await;
    assert!(
        h.ton.accepted_from(primary_wallet.address()) >= 3,
        "initial and heartbeats"
    );
    assert_eq!(
        h.ton.accepted_from(fallback_wallet.address()),
        0,
        "the fallback paid nothing"
    );

    primary.kill().await.unwrap();
    let killed = Instant::now();
    while h.ton.accepted_from(fallback_wallet.address()) == 0 {
        assert!(
            killed.elapsed() < Duration::from_secs(HEARTBEAT + OFFSET + 5),
            "the fallback did not take over"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        killed.elapsed() <= Duration::from_secs(HEARTBEAT + OFFSET + 2),
        "took {:?}",
        killed.elapsed()
    );
    fallback.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_oracle_unreadable_a_fallback_stays_quiet_and_the_primary_keeps_publishing() {
    const HEARTBEAT: u64 = 6;
    const OFFSET: u64 = 2;
    const WATCH: u64 = 20;
    let h = Harness::start().await;
    let (primary_wallet, fallback_wallet) = primary_and_funded_fallback(&h);

    let mut primary = h.command(&[]);
    // A send's read-back waits for an oracle it cannot read until the cycle times out.
    primary
        .env("BRIDGE_HEARTBEAT", HEARTBEAT.to_string())
        .env("CYCLE_TIMEOUT", "4");
    let mut primary = spawn_logged(primary, &h.schema);
    h.wait_externals(1).await;
    // Let the first send be read back before the oracle goes dark.
    tokio::time::sleep(Duration::from_secs(2)).await;
    // From now on the oracle cannot be read by either keeper.
    darken_oracle(&h);
    let before = h.ton.accepted_from(primary_wallet.address());
    let mut fallback = spawn_fallback(&h, HEARTBEAT, OFFSET);
    tokio::time::sleep(Duration::from_secs(WATCH)).await;
    assert_eq!(
        h.ton.accepted_from(fallback_wallet.address()),
        0,
        "an unreadable oracle is not an empty one"
    );
    // The primary judges against its own publication and keeps sending (its read-backs cannot
    // confirm anything while the oracle is dark, so it may send more than one per heartbeat).
    let sent = h.ton.accepted_from(primary_wallet.address()) - before;
    assert!(
        sent >= 1,
        "the primary kept publishing: {sent} externals in {WATCH} s"
    );
    primary.kill().await.unwrap();
    fallback.kill().await.unwrap();
}

/// Cycles the keeper finished, whatever their outcome (`keeper_cycles_total`).
async fn cycles(h: &Harness) -> u64 {
    h.metrics()
        .await
        .lines()
        .filter(|l| l.starts_with("keeper_cycles_total{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Waits until the keeper finished `n` more cycles than `from`.
async fn cycles_after(h: &Harness, from: u64, n: u64) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = cycles(h).await;
        if now >= from + n {
            return now;
        }
        assert!(
            Instant::now() < deadline,
            "{now} cycles, waited for {}",
            from + n
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_that_lag_publish_once_per_heartbeat_of_observation_time_not_every_tick() {
    const HEARTBEAT: u32 = 5;
    let h = Harness::start().await;
    // The TON Bridge on its two pegs only: every signal behind its verdict carries the
    // upstream's own time.
    let text = std::fs::read_to_string(&h.config).unwrap();
    let cut = text.find("# allowLock() on the Ethereum side").unwrap();
    let cfg = h.dir.path().join("pegs_only.toml");
    std::fs::write(&cfg, &text[..cut]).unwrap();
    // The quotes are twenty minutes old and stop moving: a flat status on lagging data, far
    // older than the heartbeat by the clock.
    let stuck = keeper_tests::unix_now() as i64 - 1200;
    for key in &PEG_KEYS[..2] {
        h.up.set_defillama_coin(key, "0.9996", Ts::At(stuck));
    }
    let mut cmd = h.command_with(&cfg, &[]);
    cmd.env("BRIDGE_HEARTBEAT", HEARTBEAT.to_string());
    let mut child = spawn_logged(cmd, &h.schema);
    h.wait_externals(1).await;
    assert_eq!(
        h.bridge_events(),
        [(1, true, stuck as u32)],
        "last_seen is the quotes' time"
    );

    // Ten ticks, each far past the heartbeat by the clock: nothing newer was observed.
    let from = cycles(&h).await;
    cycles_after(&h, from, 10).await;
    assert_eq!(h.accepted(), 1, "{:?}", h.bridge_events());

    // The quotes move on by less than the heartbeat: still nothing; by the heartbeat: one
    // heartbeat carrying the new observation time.
    for key in &PEG_KEYS[..2] {
        h.up.set_defillama_coin(key, "0.9996", Ts::At(stuck + i64::from(HEARTBEAT) - 1));
    }
    let from = cycles(&h).await;
    cycles_after(&h, from, 3).await;
    assert_eq!(h.accepted(), 1, "{:?}", h.bridge_events());
    let newer = stuck + i64::from(HEARTBEAT);
    for key in &PEG_KEYS[..2] {
        h.up.set_defillama_coin(key, "0.9996", Ts::At(newer));
    }
    h.wait_externals(2).await;
    let from = cycles(&h).await;
    cycles_after(&h, from, 5).await;
    assert_eq!(
        h.bridge_events(),
        [(1, true, stuck as u32), (1, true, newer as u32)]
    );
    child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_oracle_unreadable_a_primary_sends_a_changed_status_once() {
    let h = Harness::start().await;
    // A read-back that gives up within the cycle, so the cycle sees the send it cannot verify.
    let text = std::fs::read_to_string(&h.config).unwrap();
    assert!(text.contains("\n[ton]\n"), "config layout changed");
    let cfg = h.dir.path().join("short_readback.toml");
    std::fs::write(
        &cfg,
        text.replacen("\n[ton]\n", "\n[ton]\nreadback_timeout = 2\n", 1),
    )
    .unwrap();
    let mut child = spawn_logged(h.command_with(&cfg, &[]), &h.schema);
    h.wait_externals(1).await;
    // Let the first send be read back before the oracle goes dark.
    tokio::time::sleep(Duration::from_secs(2)).await;
    darken_oracle(&h);
    // The TON Bridge's contract pauses deposits: offline at once, sent once.
    h.up.set_eth_bool(TON_BRIDGE, ALLOW_LOCK, false);
    h.wait_externals(2).await;
    let from = cycles(&h).await;
    cycles_after(&h, from, 8).await;
    assert_eq!(
        h.accepted(),
        2,
        "one external per status, not one per tick: {:?}",
        h.bridge_events()
    );
    assert_eq!(
        h.bridge_events().last().map(|e| (e.0, e.1)),
        Some((1, false))
    );
    child.kill().await.unwrap();
}

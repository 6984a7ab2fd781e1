//! The real `pricing-oracle-keeper` process, ticking every second against local stand-ins for
//! CoinGecko, DefiLlama, Pyth Hermes, Ethereum JSON-RPC and toncenter, with real PostgreSQL and
//! Redis.

use std::time::Duration;

use keeper_tests::env;
use keeper_tests::pricing::PricingHarness;
use keeper_tests::process::sigterm;
use keeper_tests::upstreams::{Mode, Source};
use redis::AsyncCommands as _;
use sqlx::Row as _;

const ALL_ASSETS: [u16; 6] = [1, 2, 3, 4, 5, 6];
const SETTLE: Duration = Duration::from_secs(20);

fn ids(batch: &[(u16, u128)]) -> Vec<u16> {
    batch.iter().map(|(id, _)| *id).collect()
}

async fn pg() -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&env::pg_url())
        .await
        .expect("connect to PostgreSQL")
}

/// Rows of `pricing_oracle_updates`: (asset, price_micro, reason, status).
async fn rows(h: &PricingHarness) -> Vec<(String, i64, String, String)> {
    let pool = pg().await;
    let sql = format!(
        "SELECT asset, price_micro, reason, status FROM {}.pricing_oracle_updates ORDER BY id",
        h.schema
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_all(&pool)
        .await
        .expect("query updates")
        .into_iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect()
}

async fn wait_rows(h: &PricingHarness, pred: impl Fn(&[(String, i64, String, String)]) -> bool) {
    let deadline = std::time::Instant::now() + SETTLE;
    loop {
        let r = rows(h).await;
        if pred(&r) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "rows never matched: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_all_then_only_what_moved_and_records_it() {
    let h = PricingHarness::start().await;
    let mut child = h.spawn();

    // First tick: all six assets in one external message, with StateInit (wallet not deployed).
    h.wait_externals(1, SETTLE).await;
    let first = h
        .ton
        .externals()
        .into_iter()
        .next()
        .expect("first external");
    assert!(first.state_init, "the first message deploys the wallet");
    let batches = h.price_batches();
    assert_eq!(ids(&batches[0]), ALL_ASSETS, "config order, one batch");
    for id in ALL_ASSETS {
        let (price, _) = h.ton.price(&h.oracle, id).expect("price on chain");
        assert_eq!(price, 1_000_000, "asset {id} at 1.0 USD");
    }

    // Inside the band and fresh: nothing more for a few ticks.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(
        h.accepted_externals(),
        1,
        "no publish inside the deviation band"
    );

    // USDT moves 1% everywhere: only USDT goes out.
    for s in [
        Source::Chainlink,
        Source::Coingecko,
        Source::Defillama,
        Source::Pyth,
    ] {
        h.up.set_price(s, "USDT", "1.01");
    }
    h.wait_externals(2, SETTLE).await;
    let batches = h.price_batches();
    assert_eq!(batches[1], vec![(1, 1_010_000)], "only the moved asset");

    // Records: 7 confirmed rows, matching what the chain holds; Redis hash and pub/sub.
    wait_rows(&h, |r| r.len() == 7 && r.iter().all(|x| x.3 == "confirmed")).await;
    let r = rows(&h).await;
    assert_eq!(
        r[6],
        (
            "USDT".into(),
            1_010_000,
            "deviation".into(),
            "confirmed".into()
        )
    );
    assert!(
        r[..6].iter().all(|x| x.2 == "initial" && x.1 == 1_000_000),
        "{r:?}"
    );

    let client = redis::Client::open(env::redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let cached: std::collections::HashMap<String, String> = conn
        .hgetall(format!("{}price:USDT", h.prefix))
        .await
        .unwrap();
    assert_eq!(
        cached.get("price_micro").map(String::as_str),
        Some("1010000"),
        "{cached:?}"
    );

    let metrics = h.metrics().await;
    assert!(metrics.contains("keeper_update_success_total"), "{metrics}");
    assert!(
        metrics.contains("pricing_oracle_last_update_timestamp{asset=\"USDT\"}"),
        "{metrics}"
    );

    assert_eq!(sigterm(&mut child).await, Some(0), "SIGTERM exits 0");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeat_expiry_republishes() {
    let mut h = PricingHarness::start().await;
    h.extra_env.push(("PRICE_HEARTBEAT".into(), "3".into()));
    let mut child = h.spawn();
    h.wait_externals(2, SETTLE).await;
    let batches = h.price_batches();
    assert_eq!(
        ids(&batches[1]),
        ALL_ASSETS,
        "heartbeat republishes every asset"
    );
    wait_rows(&h, |r| {
        r.iter().any(|x| x.2 == "heartbeat" && x.3 == "confirmed")
    })
    .await;
    assert_eq!(sigterm(&mut child).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_garbage_source_still_publishes_from_the_other_two() {
    let h = PricingHarness::start().await;
    // Chainlink answers an HTML error page; USDD has no feed, so all six keep two sources.
    h.up.set_mode(
        Source::Chainlink,
        Mode::body("<html><body>Bad gateway</body></html>"),
    );
    let mut child = h.spawn();
    h.wait_externals(1, SETTLE).await;
    assert_eq!(ids(&h.price_batches()[0]), ALL_ASSETS);
    // The garbage quote is recorded as rejected, never used.
    let pool = pg().await;
    let sql = format!(
        "SELECT quotes FROM {}.pricing_oracle_updates WHERE asset = 'USDT'",
        h.schema
    );
    wait_rows(&h, |r| !r.is_empty()).await;
    let quotes: serde_json::Value = sqlx::query(sqlx::AssertSqlSafe(sql))
        .fetch_one(&pool)
        .await
        .unwrap()
        .get(0);
    let rejected = quotes
        .as_array()
        .and_then(|a| a.iter().find(|q| q["source"] == "chainlink"))
        .cloned()
        .expect("chainlink quote recorded");
    assert_eq!(rejected["accepted"], false, "{quotes}");
    assert_eq!(sigterm(&mut child).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_lineage_left_means_no_publish_and_a_quorum_alert_that_resolves() {
    let h = PricingHarness::start().await;
    // Only Chainlink's lineage is left: CoinGecko, its DefiLlama mirror and Pyth are down.
    h.up.set_down(Source::Coingecko, true);
    h.up.set_down(Source::Defillama, true);
    h.up.set_down(Source::Pyth, true);
    let mut child = h.spawn();

    let firing = h
        .sink
        .wait_until(SETTLE, |r| {
            r.json()
                .is_some_and(|j| j["key"] == "quorum_lost:USDT" && j["status"] == "firing")
        })
        .await
        .is_some();
    assert!(firing, "quorum_lost:USDT reached the webhook");
    assert_eq!(
        h.accepted_externals(),
        0,
        "nothing published without quorum"
    );

    h.up.set_down(Source::Coingecko, false);
    h.up.set_down(Source::Defillama, false);
    h.up.set_down(Source::Pyth, false);
    h.wait_externals(1, SETTLE).await;
    let resolved = h
        .sink
        .wait_until(SETTLE, |r| {
            r.json()
                .is_some_and(|j| j["key"] == "quorum_lost:USDT" && j["status"] == "resolved")
        })
        .await
        .is_some();
    assert!(resolved, "quorum_lost:USDT resolved after recovery");
    assert_eq!(sigterm(&mut child).await, Some(0));
}

/// PostgreSQL holds the in-flight journal, and nothing is sent that is not journaled: while
/// PostgreSQL (and Redis) are gone, ticks go on and fail with the journal named, nothing is sent,
/// and the process keeps running; once they are back, the pending update goes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_postgres_and_redis_mid_run_pauses_sending_until_the_journal_is_back() {
    let h = PricingHarness::start().await;
    let mut child = h.spawn();
    h.wait_externals(1, SETTLE).await;

    h.pg.cut().await;
    h.redis.cut().await;
    for s in [
        Source::Chainlink,
        Source::Coingecko,
        Source::Defillama,
        Source::Pyth,
    ] {
        h.up.set_price(s, "DAI", "0.98");
    }
    let failures = |m: &str| {
        keeper_tests::sample(
            m,
            "keeper_cycles_total{keeper=\"pricing-oracle\",outcome=\"failure\"}",
        )
        .unwrap_or(0.0)
    };
    let deadline = std::time::Instant::now() + SETTLE;
    loop {
        let m = h.metrics().await;
        if m.contains("keeper_store_up{store=\"postgres\"} 0")
            && m.contains("keeper_store_up{store=\"redis\"} 0")
            && failures(&m) >= 3.0
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "stores never went down, or no failing ticks:\n{m}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(
        h.accepted_externals(),
        1,
        "nothing sent without its journal"
    );
    assert!(child.try_wait().unwrap().is_none(), "still running");
    let log =
        std::fs::read_to_string(std::env::temp_dir().join(format!("{}.log", h.schema))).unwrap();
    assert!(log.contains("in-flight journal (PostgreSQL)"), "{log}");

    h.pg.restore().unwrap();
    h.redis.restore().unwrap();
    h.wait_externals(2, SETTLE).await;
    assert_eq!(h.price_batches()[1], vec![(3, 980_000)]);
    assert_eq!(sigterm(&mut child).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_dry_run_json_prints_the_messages_and_sends_nothing() {
    let h = PricingHarness::start().await;
    let out = h
        .command(&["--once", "--dry-run", "--output", "json"])
        .output()
        .await
        .expect("run keeper");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("one JSON document");
    assert_eq!(doc["outcome"], "dry_run");
    let messages = doc["messages"].as_array().expect("messages");
    assert_eq!(messages.len(), 6);
    assert_eq!(messages[0]["op"], "update_price");
    assert_eq!(messages[0]["asset"], "USDT");
    assert_eq!(messages[0]["asset_id"], 1);
    assert_eq!(messages[0]["price_micro"], 1_000_000);
    assert_eq!(messages[0]["value_nanoton"], 50_000_000);
    assert!(doc["boc"].as_str().is_some_and(|b| b.len() > 100), "{doc}");
    assert_eq!(doc["assets"].as_array().map(Vec::len), Some(6));
    assert!(h.ton.externals().is_empty(), "a dry run sends nothing");
    let notes = doc["notes"].to_string();
    assert!(notes.contains("rejects this message as expired"), "{notes}");
    // Copied by hand to the chain, the printed message is refused: its valid_until has passed.
    let answer = reqwest::Client::new()
        .post(format!("{}sendBoc", h.ton.rest_url()))
        .json(&serde_json::json!({ "boc": doc["boc"] }))
        .send()
        .await
        .expect("sendBoc");
    assert_eq!(answer.status().as_u16(), 500);
    let refused = h.ton.externals();
    assert_eq!(refused.len(), 1);
    assert!(
        matches!(&refused[0].outcome, keeper_tests::toncenter::ExternalOutcome::Rejected(why) if why.contains("exitcode=136")),
        "{:?}",
        refused[0].outcome
    );
    assert!(
        !stdout.contains("carpet"),
        "the mnemonic never reaches the output"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wallet_and_status_subcommands() {
    let mut h = PricingHarness::start().await;
    h.extra_env.push(("WALLET_VERSION".into(), "v4r2".into()));
    let out = h
        .command(&["wallet", "--offline", "--output", "json"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let w: serde_json::Value = serde_json::from_slice(&out.stdout).expect("wallet JSON");
    // Published vector for this mnemonic.
    assert_eq!(
        w["address_bounceable"],
        "EQCDM_QGggZ3qMa_f3lRPk4_qLDnLTqdi6OkMAV2NB9r5TG3"
    );
    assert_eq!(w["version"], "v4r2");
    assert!(w.get("balance_ton").is_none(), "--offline reads nothing");

    // status reads get_price for every asset from the chain.
    let now = chrono::Utc::now().timestamp() as u32;
    h.ton.set_price(&h.oracle, 1, 999_850, now - 30);
    h.ton.set_price(&h.oracle, 2, 1_000_100, now - 1_000);
    let out = h
        .command(&["status", "--output", "json"])
        .output()
        .await
        .unwrap();
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("status JSON");
    let assets = s["assets"].as_array().expect("assets");
    assert_eq!(assets.len(), 6);
    assert_eq!(assets[0]["price"], "0.999850");
    assert_eq!(assets[0]["stale"], false);
    assert_eq!(assets[1]["stale"], true, "older than STALE_AFTER");
    assert_eq!(assets[2]["error"], "no price on-chain");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_the_oracle_does_not_apply_is_a_failure_with_an_alert() {
    let mut h = PricingHarness::start().await;
    // An oracle that never registered this keeper: the wallet confirms, the oracle ignores it.
    let stranger = h.ton.new_oracle();
    h.extra_env
        .push(("PRICING_ORACLE_ADDRESS".into(), stranger.to_base64_url()));
    // Give the read-back a short wait so the cycle decides well inside its timeout.
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pricing.toml");
    std::fs::write(
        &config,
        "[ton]\nreadback_timeout = 3\npoll_interval_ms = 200\n",
    )
    .unwrap();
    let config = config.to_string_lossy().into_owned();
    let out = h
        .command(&["--once", "--output", "json", "--config", &config])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let doc: serde_json::Value = serde_json::from_str(&stdout).expect("summary JSON");
    assert_eq!(doc["outcome"], "failed");
    assert!(
        doc["error"]
            .as_str()
            .is_some_and(|e| e.contains("did not land")),
        "{doc}"
    );
    assert_eq!(h.accepted_externals(), 1, "the wallet did send it");
    let alert = h
        .sink
        .wait_until(SETTLE, |r| {
            r.json()
                .is_some_and(|j| j["key"] == "update_not_applied" && j["status"] == "firing")
        })
        .await;
    assert!(alert.is_some(), "update_not_applied reached the webhook");
    wait_rows(&h, |r| r.len() == 6 && r.iter().all(|x| x.3 == "failed")).await;
}

/// `UPDATE_INTERVAL=1` with `CYCLE_TIMEOUT=1`, against a chain that includes a message 2.5 s
/// after the send (slower than a cycle): the cycle timeout is raised so that one confirmation
/// poll fits, said once in the log, and the cycles succeed instead of each one being cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_a_one_second_interval_cycles_succeed_on_a_chain_slower_than_a_cycle() {
    let mut h = PricingHarness::start().await;
    h.ton.set_inclusion_delay(Duration::from_millis(2500));
    h.extra_env.push(("CYCLE_TIMEOUT".into(), "1".into()));
    h.extra_env.push(("PRICE_HEARTBEAT".into(), "4".into()));
    let mut child = h.spawn();
    h.wait_externals(2, Duration::from_secs(40)).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let successes = loop {
        let text = h.metrics().await;
        let n = keeper_tests::sample(
            &text,
            "keeper_cycles_total{keeper=\"pricing-oracle\",outcome=\"success\"}",
        )
        .unwrap_or(0.0);
        if n >= 3.0 || std::time::Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let text = h.metrics().await;
    assert!(successes >= 3.0, "cycles succeed: {text}");
    let timeouts = keeper_tests::sample(
        &text,
        "keeper_cycles_total{keeper=\"pricing-oracle\",outcome=\"timeout\"}",
    )
    .unwrap_or(0.0);
    assert_eq!(timeouts, 0.0, "no cycle was cut: {text}");
    assert!(
        !h.sink
            .requests()
            .iter()
            .any(|r| r.text().contains("keeper_stale")),
        "keeper_stale never fired"
    );
    assert_eq!(sigterm(&mut child).await, Some(0));
    let log =
        std::fs::read_to_string(std::env::temp_dir().join(format!("{}.log", h.schema))).unwrap();
    assert_eq!(
        log.matches("cycle timeout raised from 1.0 s to 11 s")
            .count(),
        1,
        "said once: {log}"
    );
}

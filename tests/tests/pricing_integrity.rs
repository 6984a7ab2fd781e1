//! Oracle integrity against the real `pricing-oracle-keeper` process and local stand-ins: a
//! mirrored bad value cannot outvote independent lineages, the circuit breaker holds a move too
//! few lineages show, timestamps are observation times, and an unreadable oracle is not an
//! empty one.

use std::time::{Duration, Instant};

use keeper_tests::pricing::PricingHarness;
use keeper_tests::toncenter::Fault;
use keeper_tests::upstreams::{Round, Source, Ts};
use serde_json::Value;

const SETTLE: Duration = Duration::from_secs(20);

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// Puts every default asset on chain at 1.0 USD, observed `age` seconds ago.
fn seed_chain(h: &PricingHarness, age: i64) {
    let t = u32::try_from(now() - age).unwrap();
    for id in 1..=6 {
        h.ton.set_price(&h.oracle, id, 1_000_000, t);
    }
}

/// Runs `--once --output json` (plus `extra` flags); the exit code and the summary.
async fn once(h: &PricingHarness, extra: &[&str]) -> (Option<i32>, Value) {
    let mut args = vec!["--once", "--output", "json"];
    args.extend_from_slice(extra);
    let out = h.command(&args).output().await.expect("run keeper");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let doc = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: stdout {stdout}\nstderr {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code(), doc)
}

fn asset<'a>(doc: &'a Value, symbol: &str) -> &'a Value {
    doc["assets"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["asset"] == symbol))
        .unwrap_or_else(|| panic!("no {symbol} in {doc}"))
}

async fn status(h: &PricingHarness) -> Value {
    let url = format!("http://{}/status", h.metrics_addr);
    match reqwest::get(&url).await {
        Ok(r) => r.json().await.unwrap_or(Value::Null),
        Err(_) => Value::Null,
    }
}

/// Waits until `/status` reports at least `n` ticks; returns the document.
async fn wait_ticks(h: &PricingHarness, n: u64) -> Value {
    let deadline = Instant::now() + SETTLE;
    loop {
        let s = status(h).await;
        if s["ticks"].as_u64().is_some_and(|t| t >= n) {
            return s;
        }
        assert!(Instant::now() < deadline, "{n} ticks never ran: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sigterm(child: &mut tokio::process::Child) {
    let pid = child.id().expect("running child");
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = tokio::time::timeout(Duration::from_secs(40), child.wait()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mirrored_bad_coingecko_value_is_not_published() {
    let h = PricingHarness::start().await;
    seed_chain(&h, 10);
    // CoinGecko 10% off and DefiLlama serving the same value; Chainlink and Pyth agree at 1.0.
    h.up.set_price(Source::Coingecko, "USDT", "0.90");
    h.up.set_price(Source::Defillama, "USDT", "0.90");
    let (code, doc) = once(&h, &[]).await;
    assert_eq!(code, Some(0), "{doc}");
    let usdt = asset(&doc, "USDT");
    assert_eq!(usdt["action"], "skip", "{usdt}");
    assert_eq!(usdt["price_micro"], 1_000_000);
    assert_eq!(usdt["lineages"], serde_json::json!(["chainlink", "pyth"]));
    let quotes = usdt["quotes"].as_array().unwrap();
    for q in quotes {
        let mirrored = q["source"] == "coingecko" || q["source"] == "defillama";
        assert_eq!(q["accepted"], !mirrored, "{q}");
        if mirrored {
            assert_eq!(q["lineage"], "coingecko");
            assert!(q["why"].as_str().unwrap().contains("bps from the median"));
        }
    }
    assert!(h.ton.externals().is_empty(), "nothing to publish");
    assert_eq!(h.ton.price(&h.oracle, 1).unwrap().0, 1_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_depeg_every_lineage_shows_is_published_in_the_first_tick() {
    let h = PricingHarness::start().await;
    seed_chain(&h, 10);
    h.up.set_price_everywhere("USDC", "0.95");
    let (code, doc) = once(&h, &[]).await;
    assert_eq!(code, Some(0), "{doc}");
    let usdc = asset(&doc, "USDC");
    assert_eq!(usdc["action"], "publish", "{usdc}");
    assert_eq!(usdc["reason"], "deviation");
    assert_eq!(usdc["breaker"], "step 500 bps confirmed by 3 lineages");
    assert_eq!(h.ton.price(&h.oracle, 2).unwrap().0, 950_000);
    // Only USDC moved.
    assert_eq!(h.price_batches().concat(), vec![(2, 950_000)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_move_two_lineages_show_is_held_then_published_after_confirm_ticks() {
    let h = PricingHarness::start().await;
    seed_chain(&h, 10);
    let mut child = h.spawn();
    let before = wait_ticks(&h, 2).await;
    assert_eq!(
        before["last_cycle"]["report"]["assets"][0]["action"], "skip",
        "{before}"
    );
    // Chainlink and Pyth move USDT 3%; CoinGecko (and its DefiLlama path) stays at 1.0.
    h.up.set_price(Source::Chainlink, "USDT", "1.03");
    h.up.set_price(Source::Pyth, "USDT", "1.03");
    let held = h
        .sink
        .wait_until(SETTLE, |r| {
            r.json()
                .is_some_and(|j| j["key"] == "price_move_held:USDT" && j["status"] == "firing")
        })
        .await
        .expect("price_move_held:USDT fired");
    let text = held.text();
    assert!(
        text.contains("held: step 300 bps, 2 of 3 lineages (tick 1 of 2)"),
        "{text}"
    );
    // Nothing went out in the held tick; the next tick publishes the confirmed move.
    h.wait_externals(1, SETTLE).await;
    assert_eq!(h.price_batches().concat(), vec![(1, 1_030_000)]);
    let resolved = h
        .sink
        .wait_until(SETTLE, |r| {
            r.json()
                .is_some_and(|j| j["key"] == "price_move_held:USDT" && j["status"] == "resolved")
        })
        .await;
    assert!(resolved.is_some(), "the hold resolves once published");
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("pricing_oracle_moves_held_total{asset=\"USDT\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("pricing_oracle_lineages_used{asset=\"USDT\"} 2"));
    sigterm(&mut child).await;

    // `history` prints what was recorded: skips, the hold with its step and lineages, then the
    // publication, with every quote's lineage.
    let out = h
        .command(&[
            "history", "--asset", "USDT", "--since", "1h", "--output", "json",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).expect("history JSON");
    let decisions = doc["decisions"].as_array().expect("decisions");
    let actions: Vec<&str> = decisions
        .iter()
        .map(|d| d["action"].as_str().unwrap_or("?"))
        .collect();
    let held = actions.iter().position(|a| *a == "hold").expect("a hold");
    assert_eq!(
        actions[..held].iter().filter(|a| **a != "skip").count(),
        0,
        "{actions:?}"
    );
    assert_eq!(actions[held + 1], "publish", "{actions:?}");
    let hold = &decisions[held];
    assert_eq!(
        hold["reason"],
        "held: step 300 bps, 2 of 3 lineages (tick 1 of 2)"
    );
    assert_eq!(hold["price_micro"], 1_030_000);
    assert_eq!(hold["onchain_micro"], 1_000_000);
    assert_eq!(
        hold["detail"]["lineages"],
        serde_json::json!(["chainlink", "pyth"])
    );
    let published = &decisions[held + 1];
    assert_eq!(published["reason"], "deviation");
    assert_eq!(
        published["detail"]["breaker"],
        "step 300 bps persisted for 2 ticks"
    );
    let quotes = published["quotes"].as_array().unwrap();
    assert_eq!(quotes.len(), 4);
    assert!(quotes.iter().any(|q| q["source"] == "defillama"
        && q["lineage"] == "coingecko"
        && q["accepted"] == false));
    let text = h
        .command(&["history", "--asset", "usdt", "--since", "1h"])
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("hold      price 1.030000 on-chain 1.000000 lineages [chainlink, pyth]: held: step 300 bps"), "{text}");
    // Bad input is a usage error.
    let bad = h
        .command(&["history", "--asset", "USDT", "--since", "forever"])
        .output()
        .await
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_old_chainlink_round_is_not_used_and_the_timestamp_is_the_observation_time() {
    let h = PricingHarness::start().await;
    let t0 = now();
    // USDT's round is a day and a bit old (heartbeat 86400 s + 600 s grace).
    h.up.set_round(
        "USDT",
        Round {
            round_id: keeper_tests::upstreams::REFERENCE_ROUND_ID,
            answer: 100_000_000,
            started_at: None,
            updated_at: Some((t0 - 90_000) as u64),
            answered_in_round: keeper_tests::upstreams::REFERENCE_ROUND_ID,
        },
    );
    for s in [Source::Coingecko, Source::Defillama] {
        h.up.set_timestamp(s, "USDT", Ts::Age(100));
    }
    h.up.set_timestamp(Source::Pyth, "USDT", Ts::Age(40));
    let (code, doc) = once(&h, &[]).await;
    assert_eq!(code, Some(0), "{doc}");
    let usdt = asset(&doc, "USDT");
    let chainlink = usdt["quotes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["source"] == "chainlink")
        .unwrap();
    assert_eq!(chainlink["accepted"], false);
    assert!(
        chainlink["why"].as_str().unwrap().contains("beyond"),
        "{chainlink}"
    );
    assert_eq!(usdt["lineages"], serde_json::json!(["coingecko", "pyth"]));
    // Median of the used quotes' times: 100, 100 and 40 s old → 100 s old.
    let (_, ts) = h.ton.price(&h.oracle, 1).expect("USDT on chain");
    let ts = i64::from(ts);
    assert!(
        (t0 - 102..=t0 - 98).contains(&ts),
        "timestamp {ts} is not the observation time (fetched around {t0})"
    );
    assert_eq!(usdt["timestamp"].as_i64(), Some(ts));
    assert!(doc["chain_time"].as_i64().is_some(), "{doc}");
    assert!(
        doc["clock_skew_seconds"]
            .as_i64()
            .is_some_and(|s| s.abs() <= 2)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clock_skew_is_measured_and_alerted_and_chain_time_caps_the_timestamp() {
    let h = PricingHarness::start().await;
    // Chain time 120 s behind the local clock; sources observed 5 s ago by the local clock.
    h.ton.set_chain_time(u64::try_from(now() - 120).unwrap());
    let (code, doc) = once(&h, &[]).await;
    assert_eq!(code, Some(0), "{doc}");
    let skew = doc["clock_skew_seconds"].as_i64().unwrap();
    assert!((118..=122).contains(&skew), "{doc}");
    let chain = doc["chain_time"].as_i64().unwrap();
    let usdt = asset(&doc, "USDT");
    assert_eq!(
        usdt["timestamp"].as_i64(),
        Some(chain),
        "never past chain time"
    );
    let alert = h
        .sink
        .wait_until(SETTLE, |r| {
            r.json()
                .is_some_and(|j| j["key"] == "clock_skew" && j["status"] == "firing")
        })
        .await;
    assert!(alert.is_some(), "clock_skew reached the webhook");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_oracle_does_not_republish_unchanged_assets() {
    let h = PricingHarness::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pricing.toml");
    std::fs::write(
        &config,
        "[ton]\nreadback_timeout = 2\npoll_interval_ms = 200\n",
    )
    .unwrap();
    let mut child = h
        .command(&["--config", &config.to_string_lossy()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    h.wait_externals(1, SETTLE).await;
    let first = h.price_batches();
    assert_eq!(first[0].len(), 6, "initial publication of every asset");
    // The publishing tick ends (confirmed, read back, recorded) before the oracle turns
    // unreadable: a failure in the middle of a confirmation is the journal's case, not this one.
    let t = status(&h).await["ticks"].as_u64().unwrap_or(0);
    wait_ticks(&h, t + 1).await;

    // From now on every get-method fails.
    h.ton.inject(
        "runGetMethod",
        Fault::Status(500, "LITE_SERVER_UNKNOWN: cannot run get method".into()),
        100_000,
    );
    // Another transaction on the oracle (same values): the keeper must read its prices again.
    // While the account is unchanged it keeps what it read and asks no get-method.
    let (price, ts) = h.ton.price(&h.oracle, 1).unwrap();
    h.ton.set_price(&h.oracle, 1, price, ts);
    let ticks = status(&h).await["ticks"].as_u64().unwrap_or(0);
    let s = wait_ticks(&h, ticks + 4).await;
    assert_eq!(
        h.accepted_externals(),
        1,
        "unchanged assets are not republished"
    );
    let usdt = &s["last_cycle"]["report"]["assets"][0];
    assert_eq!(usdt["action"], "skip", "{s}");
    // The keeper's own record: PostgreSQL, or Redis / memory when a loaded PostgreSQL timed
    // out on recording or reading it (the store bounds every call).
    assert!(
        ["postgres", "redis", "memory"].contains(&usdt["compared_with"].as_str().unwrap_or("")),
        "{usdt}"
    );
    assert!(
        usdt["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("within 0 bps")),
        "{usdt}"
    );
    assert_eq!(
        s["last_cycle"]["report"]["oracle_unreadable"]
            .as_array()
            .map(Vec::len),
        Some(6)
    );
    let unreadable = h
        .sink
        .wait_until(SETTLE, |r| {
            r.json()
                .is_some_and(|j| j["key"] == "oracle_unreadable" && j["status"] == "firing")
        })
        .await;
    assert!(
        unreadable.is_some(),
        "oracle_unreadable reached the webhook"
    );

    // A real move is still published, judged against the keeper's own record.
    h.up.set_price_everywhere("DAI", "0.98");
    h.wait_externals(2, SETTLE).await;
    assert_eq!(h.price_batches()[1], vec![(3, 980_000)]);
    // The read-back cannot verify it, which is not blamed on registration, and it is not
    // sent again on the following ticks.
    let ticks = status(&h).await["ticks"].as_u64().unwrap_or(0);
    wait_ticks(&h, ticks + 3).await;
    assert_eq!(h.accepted_externals(), 2);
    assert!(
        !h.sink
            .requests()
            .iter()
            .any(|r| r.json().is_some_and(|j| j["key"] == "update_not_applied")),
        "no update_not_applied while the oracle is unreadable"
    );
    sigterm(&mut child).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_source_mode_must_be_asked_for_and_says_so_every_tick() {
    let mut h = PricingHarness::start().await;
    h.extra_env.push(("MIN_SOURCES".into(), "1".into()));
    let out = h.command(&["--once", "--dry-run"]).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("ALLOW_SINGLE_SOURCE"), "{stderr}");

    h.extra_env
        .push(("ALLOW_SINGLE_SOURCE".into(), "true".into()));
    // Only Chainlink answers: one lineage now publishes, and says so.
    h.up.set_down(Source::Coingecko, true);
    h.up.set_down(Source::Defillama, true);
    h.up.set_down(Source::Pyth, true);
    let mut child = h.spawn();
    let s = wait_ticks(&h, 2).await;
    let report = &s["last_cycle"]["report"];
    assert_eq!(report["single_source"], true, "{s}");
    assert!(
        report["notes"].as_array().is_some_and(|n| n
            .iter()
            .any(|x| x.as_str().unwrap_or("").contains("single-source mode"))),
        "{report}"
    );
    assert_eq!(
        report["assets"][0]["lineages"],
        serde_json::json!(["chainlink"])
    );
    let metrics = h.metrics().await;
    assert!(
        metrics.contains("pricing_oracle_single_source_mode 1"),
        "{metrics}"
    );
    h.wait_externals(1, SETTLE).await;
    // USDD has no Chainlink feed: still nothing for it.
    assert_eq!(
        h.price_batches()[0]
            .iter()
            .map(|(id, _)| *id)
            .collect::<Vec<_>>(),
        [1, 2, 3, 5, 6]
    );
    sigterm(&mut child).await;
}

/// `--once --output json` without Redis: the wallet lease is PostgreSQL's session lock, which
/// ends with the process, so consecutive one-shot runs may each send.
async fn once_pg(h: &PricingHarness) -> (Value, String) {
    let out = h
        .command(&["--once", "--output", "json"])
        .env_remove("REDIS_URL")
        .output()
        .await
        .expect("run keeper");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let doc = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {stderr}"));
    (doc, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_shot_runs_confirm_a_held_move_through_the_decision_log() {
    let mut h = PricingHarness::start().await;
    // One-shot runs from cron every 30 s: a hold counts for three such periods.
    h.extra_env.push(("UPDATE_INTERVAL".into(), "30".into()));
    // Older than the quotes (Chainlink's round is 30 s old): the oracle would refuse anything
    // stamped before what it holds.
    seed_chain(&h, 60);
    h.up.set_price(Source::Chainlink, "USDT", "1.03");
    h.up.set_price(Source::Pyth, "USDT", "1.03");
    let (first, _) = once_pg(&h).await;
    let usdt = asset(&first, "USDT");
    assert_eq!(usdt["action"], "hold", "{usdt}");
    assert_eq!(usdt["held"]["ticks"], 1);
    assert!(h.ton.externals().is_empty());
    let (second, log) = once_pg(&h).await;
    let usdt = asset(&second, "USDT");
    assert_eq!(usdt["action"], "publish", "{usdt}\n{log}");
    assert_eq!(usdt["breaker"], "step 300 bps persisted for 2 ticks");
    assert_eq!(h.ton.price(&h.oracle, 1).unwrap().0, 1_030_000);
    // Confirmed and forgotten: a third run compares with the new on-chain value.
    let (third, _) = once_pg(&h).await;
    assert_eq!(asset(&third, "USDT")["action"], "skip", "{third}");
}

//! A keeper wallet with little money, on the toncenter stand-in over real HTTP: a batch it cannot
//! pay is never signed, messages its action phase skipped are reported at once, an external it
//! cannot pay the gas for ends the delivery, a body refused for a seqno the wallet left behind is
//! signed anew; and the real `pricing-oracle-keeper` with 0.03 and 0.25 TON: exit 3 within 15 s,
//! a daemon that sends nothing and fires one critical `wallet_unfunded`, log fields without
//! `None` or `Some(`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use keeper_runtime::retry;
use keeper_runtime::telemetry::metrics::Metrics;
use keeper_tests::pricing::PricingHarness;
use keeper_tests::process::sigterm;
use keeper_tests::toncenter::{ExternalOutcome, Fault, ToncenterServer};
use keeper_ton::metrics::ChainMetrics;
use keeper_ton::*;

const TON: u128 = 1_000_000_000;
const VALUE: u64 = 50_000_000;

struct Rig {
    chain: ToncenterServer,
    wallet: Wallet,
    oracle: TonAddress,
    metrics: Arc<Metrics>,
}

/// A deployed V5R1 wallet at seqno 3 holding `balance`, registered with an oracle.
async fn rig(seed: u8, balance: u128) -> Rig {
    let chain = ToncenterServer::start().await;
    let keys = Arc::new(WalletKeys::from_seed(&[seed; 32]).unwrap());
    let wallet = Wallet::new(keys.clone(), WalletVersion::V5r1, Network::Mainnet).unwrap();
    chain.deploy(&wallet, 3, balance);
    let oracle = chain.new_oracle();
    chain.register_keeper(&oracle, keys.public_key());
    Rig {
        chain,
        wallet,
        oracle,
        metrics: Arc::new(Metrics::new("pricing-oracle").with::<ChainMetrics>()),
    }
}

impl Rig {
    /// A read-back that would wait 20 s: a delivery that ends sooner did not wait it out.
    fn delivery(&self) -> Delivery<Toncenter> {
        let transport =
            Toncenter::with_endpoint(&self.chain.jsonrpc_url(), None, Duration::from_secs(2))
                .unwrap()
                .with_retry(retry::backoff(
                    3,
                    Duration::from_millis(10),
                    Duration::from_millis(50),
                ));
        let config = DeliveryConfig {
            value_nanoton: VALUE,
            auto_value: None,
            ttl: Duration::from_secs(60),
            poll_interval: Duration::from_millis(20),
            confirm_timeout: Duration::from_secs(10),
            readback_timeout: Duration::from_secs(20),
            max_rebuilds: 2,
        };
        Delivery::new(transport, self.wallet.clone(), config).with_metrics(self.metrics.clone())
    }

    fn prices(&self, ids: &[u16]) -> Vec<OracleMessage> {
        let ts = keeper_tests::unix_now() - 5;
        ids.iter()
            .map(|&id| {
                OracleMessage::new(
                    self.oracle.clone(),
                    OracleUpdate::Price(PriceUpdate {
                        asset: format!("A{id}"),
                        asset_id: id,
                        price_micro: 999_000 + u64::from(id),
                        timestamp: ts,
                    }),
                )
            })
            .collect()
    }

    fn metric(&self, line_start: &str) -> Option<f64> {
        keeper_tests::sample(&self.metrics.render(), line_start)
    }
}

fn shortfall(err: &DeliveryError) -> &Shortfall {
    match err {
        DeliveryError::Unfunded(s) => s,
        other => panic!("expected unfunded, got {other:?}"),
    }
}

#[tokio::test]
async fn a_batch_the_wallet_cannot_pay_is_never_signed() {
    let r = rig(41, 30_000_000).await;
    let d = r.delivery();
    let started = Instant::now();
    let err = d.deliver(&r.prices(&[1])).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    let s = shortfall(&err);
    assert_eq!(s.balance_nanoton, 30_000_000);
    assert_eq!(s.needed_nanoton, batch_cost_nanoton(VALUE, 1));
    assert_eq!(s.left_out, vec!["update_price A1".to_owned()]);
    assert!(!s.refused);
    let text = err.to_string();
    for part in [
        &r.wallet.label(),
        "holds 0.030000000 TON",
        "needs 0.056500000 TON",
        "top it up",
    ] {
        assert!(text.contains(part), "{part:?} missing from {text}");
    }
    assert!(err.is_unfunded());
    assert_eq!(err.kind(), "unfunded");
    assert!(r.chain.externals().is_empty(), "nothing was sent");
    assert_eq!(d.in_flight().await, None, "nothing was signed");
    assert_eq!(
        r.metric("keeper_ton_messages_total{op=\"update_price\",outcome=\"unfunded\"}"),
        Some(1.0)
    );
    assert_eq!(
        r.chain.balance(r.wallet.address()),
        30_000_000,
        "no gas paid"
    );
}

#[tokio::test]
async fn six_updates_on_a_quarter_ton_name_every_update_left_out() {
    let r = rig(42, TON / 4).await;
    let d = r.delivery();
    let started = Instant::now();
    let err = d.deliver(&r.prices(&[1, 2, 3, 4, 5, 6])).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5));
    let s = shortfall(&err);
    assert_eq!(s.needed_nanoton, batch_cost_nanoton(VALUE, 6));
    assert_eq!(
        s.left_out,
        (1..=6)
            .map(|i| format!("update_price A{i}"))
            .collect::<Vec<_>>()
    );
    assert!(
        err.to_string()
            .contains("not sent: update_price A1, update_price A2"),
        "{err}"
    );
    assert!(r.chain.externals().is_empty());

    // Topped up: the same batch goes out and lands.
    r.chain.fund(r.wallet.address(), TON);
    let report = d.deliver(&r.prices(&[1, 2, 3, 4, 5, 6])).await.unwrap();
    assert_eq!(report.batches[0].actions, 6);
    assert_eq!(report.batches[0].unpaid, 0);
    assert!(report.read_back.iter().all(|x| x.landed && !x.unpaid));
}

#[tokio::test]
async fn messages_the_action_phase_skipped_are_reported_at_once() {
    // Gas dearer than the keeper's estimate: the estimate fits, the action phase cannot pay the
    // last message (send mode 3 skips it) and says so.
    let r = rig(43, 215_000_000).await;
    r.chain.set_external_fee(30_000_000);
    let d = r.delivery();
    let started = Instant::now();
    let err = d.deliver(&r.prices(&[1, 2, 3, 4])).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the 20 s read-back was not waited out: {:?}",
        started.elapsed()
    );
    let DeliveryError::NotLanded { missing, report } = &err else {
        panic!("{err:?}")
    };
    assert!(err.is_unfunded());
    assert_eq!(report.batches[0].unpaid, 1);
    assert_eq!(report.batches[0].actions, 4);
    assert_eq!(missing.len(), 1);
    assert_eq!(missing[0].subject, "A4");
    assert!(missing[0].unpaid);
    assert!(
        missing[0]
            .error
            .as_deref()
            .is_some_and(|e| e.contains("could not pay")),
        "{missing:?}"
    );
    assert_eq!(report.unpaid().count(), 1);
    assert!(report.read_back[..3].iter().all(|x| x.landed));
    assert_eq!(
        r.chain
            .oracle_events()
            .iter()
            .map(|e| e.id)
            .collect::<Vec<_>>(),
        vec![1, 2, 3],
        "the chain sent only what the wallet could pay"
    );
    assert!(err.to_string().contains("update_price A4"), "{err}");
    assert_eq!(
        r.metric("keeper_ton_messages_total{op=\"update_price\",outcome=\"unfunded\"}"),
        Some(1.0)
    );
}

#[tokio::test]
async fn an_external_the_wallet_cannot_pay_the_gas_for_ends_the_delivery() {
    // The estimate fits 0.06 TON, but accepting an external costs 0.07 TON: every endpoint
    // refuses it before the wallet code runs.
    let r = rig(44, 60_000_000).await;
    r.chain.set_external_fee(70_000_000);
    let d = r.delivery();
    let msgs = r.prices(&[1]);
    let started = Instant::now();
    let err = d.deliver(&msgs).await.unwrap_err();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no waiting for a body that cannot land: {:?}",
        started.elapsed()
    );
    let s = shortfall(&err);
    assert!(s.refused, "{err}");
    assert_eq!(s.balance_nanoton, 60_000_000);
    assert!(
        err.to_string().contains("refused it for lack of gas money"),
        "{err}"
    );
    let ext = r.chain.externals();
    assert_eq!(ext.len(), 1);
    assert!(
        matches!(&ext[0].outcome, ExternalOutcome::Rejected(e) if e.contains("inbound external message rejected by account") && e.contains("before smart-contract execution")),
        "{:?}",
        ext[0].outcome
    );
    assert_eq!(
        d.in_flight().await,
        None,
        "refused everywhere: it cannot land"
    );

    // Same seqno, same balance: hopeless, so nothing new is signed.
    let err = d.deliver(&msgs).await.unwrap_err();
    assert!(shortfall(&err).refused);
    assert_eq!(
        r.chain.externals().len(),
        1,
        "no new body for the same seqno"
    );

    // Topped up: a new body for that seqno goes out and lands.
    r.chain.fund(r.wallet.address(), TON);
    let report = d.deliver(&msgs).await.unwrap();
    assert_eq!(report.batches[0].seqno, 3);
    let ext = r.chain.externals();
    assert_eq!(ext.len(), 2);
    assert_eq!(ext[1].outcome, ExternalOutcome::Accepted);
    assert_eq!(ext[1].seqno, Some(3));
}

#[tokio::test]
async fn a_body_refused_for_a_seqno_the_wallet_left_behind_is_signed_anew() {
    let r = rig(45, 10 * TON).await;
    // Every endpoint answers with the wallet's seqno check (V5R1 exit code 133).
    r.chain.inject(
        "sendBocReturnHash",
        Fault::Refuse(133, "seqno mismatch".into()),
        1,
    );
    let d = r.delivery();
    let started = Instant::now();
    let report = d.deliver(&r.prices(&[1])).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no waiting out the TTL: {:?}",
        started.elapsed()
    );
    assert_eq!(report.batches[0].seqno, 3);
    let ext = r.chain.externals();
    assert_eq!(ext.len(), 2, "{ext:?}");
    assert!(matches!(&ext[0].outcome, ExternalOutcome::Rejected(e) if e.contains("exitcode=133")));
    assert_eq!(ext[1].outcome, ExternalOutcome::Accepted);
    assert_eq!((ext[0].seqno, ext[1].seqno), (Some(3), Some(3)));
    assert_eq!(r.chain.seqno(r.wallet.address()), Some(4));
}

// ---- the real keeper process ----

/// No `None` or `Some(` anywhere: fields carry values.
fn assert_plain_fields(output: &str) {
    for bad in ["None", "Some("] {
        assert!(
            !output.contains(bad),
            "{bad} in the output: {}",
            output
                .lines()
                .filter(|l| l.contains(bad))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

async fn once(h: &PricingHarness) -> (Option<i32>, serde_json::Value, String, Duration) {
    let started = Instant::now();
    let out = h
        .command(&["--once", "--output", "json"])
        .output()
        .await
        .unwrap();
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let doc = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    assert_plain_fields(&stdout);
    assert_plain_fields(&stderr);
    (out.status.code(), doc, stderr, elapsed)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_with_003_ton_exits_3_at_once_naming_balance_and_need() {
    let h = PricingHarness::with_wallet_balance(30_000_000).await;
    let (code, doc, stderr, elapsed) = once(&h).await;
    assert_eq!(code, Some(3), "{doc}\n{stderr}");
    assert!(elapsed < Duration::from_secs(15), "{elapsed:?}");
    assert_eq!(doc["outcome"], "unfunded", "{doc}");
    let error = doc["error"].as_str().unwrap_or_default();
    for part in [
        h.wallet.label().as_str(),
        "holds 0.030000000 TON",
        "needs 0.314000000 TON",
        "top it up",
    ] {
        assert!(error.contains(part), "{part:?} missing from {error}");
    }
    assert!(h.ton.externals().is_empty(), "nothing sent");
    let alert = h
        .sink
        .wait_until(Duration::from_secs(5), |r| {
            r.json().is_some_and(|j| {
                j["key"] == "wallet_unfunded"
                    && j["status"] == "firing"
                    && j["severity"] == "critical"
            })
        })
        .await;
    assert!(alert.is_some(), "wallet_unfunded reached the webhook");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_with_025_ton_for_six_updates_names_every_update_left_out() {
    let h = PricingHarness::with_wallet_balance(TON / 4).await;
    let (code, doc, stderr, elapsed) = once(&h).await;
    assert_eq!(code, Some(3), "{doc}\n{stderr}");
    assert!(elapsed < Duration::from_secs(15), "{elapsed:?}");
    assert_eq!(doc["outcome"], "unfunded");
    let error = doc["error"].as_str().unwrap_or_default();
    assert!(error.contains("holds 0.250000000 TON"), "{error}");
    for asset in ["USDT", "USDC", "DAI"] {
        assert!(
            error.contains(&format!("update_price {asset}")),
            "{asset} not named: {error}"
        );
    }
    let (_, named) = error
        .split_once("not sent: ")
        .expect("the updates left out");
    assert_eq!(named.split(", ").count(), 6, "{named}");
    assert!(h.ton.externals().is_empty(), "nothing sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_on_003_ton_sends_nothing_alerts_once_and_recovers_after_a_top_up() {
    let h = PricingHarness::with_wallet_balance(30_000_000).await;
    let mut child = h.spawn();
    let firing = |r: &keeper_tests::sink::Recorded| {
        r.json()
            .is_some_and(|j| j["key"] == "wallet_unfunded" && j["status"] == "firing")
    };
    let alert = h.sink.wait_until(Duration::from_secs(20), firing).await;
    let alert = alert.expect("wallet_unfunded fired").json().unwrap();
    assert_eq!(alert["severity"], "critical");
    // Several more ticks at one per second: still nothing sent, no timeouts, one alert.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert!(h.ton.externals().is_empty(), "{:?}", h.ton.externals());
    let metrics = h.metrics().await;
    assert!(
        !metrics.contains("outcome=\"timeout\""),
        "no cycle timed out: {metrics}"
    );
    assert!(
        metrics.contains("keeper_ton_messages_total{op=\"update_price\",outcome=\"unfunded\"}"),
        "{metrics}"
    );
    let fired = h.sink.requests().iter().filter(|r| firing(r)).count();
    assert_eq!(fired, 1, "one wallet_unfunded notification");
    let critical: Vec<String> = h
        .sink
        .requests()
        .iter()
        .filter_map(|r| r.json())
        .filter(|j| j["status"] == "firing" && j["severity"] == "critical")
        .map(|j| j["key"].as_str().unwrap_or_default().to_owned())
        .filter(|k| k.starts_with("wallet"))
        .collect();
    assert_eq!(critical, vec!["wallet_unfunded".to_owned()]);

    // Topped up: it publishes, and the alert resolves.
    h.ton.fund(h.wallet.address(), 50 * TON);
    h.wait_externals(1, Duration::from_secs(20)).await;
    let resolved = h
        .sink
        .wait_until(Duration::from_secs(20), |r| {
            r.json()
                .is_some_and(|j| j["key"] == "wallet_unfunded" && j["status"] == "resolved")
        })
        .await;
    assert!(
        resolved.is_some(),
        "wallet_unfunded resolved after the top-up"
    );
    assert_eq!(sigterm(&mut child).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_fields_of_an_update_that_did_not_land_carry_values() {
    // An oracle that never registered the keeper: the read-back's fields are an absent error
    // and an on-chain timestamp of 0, which once printed as "None" and "Some(0)".
    let mut h = PricingHarness::start().await;
    let stranger = h.ton.new_oracle();
    h.extra_env
        .push(("PRICING_ORACLE_ADDRESS".into(), stranger.to_base64_url()));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pricing.toml");
    std::fs::write(
        &config,
        "[ton]\nreadback_timeout = 2\npoll_interval_ms = 200\n",
    )
    .unwrap();
    let config = config.to_string_lossy().into_owned();
    let out = h
        .command(&["--once", "--output", "json", "--config", &config])
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    let line = stderr
        .lines()
        .find(|l| l.contains("update did not land on the oracle"))
        .unwrap_or_else(|| panic!("no read-back line in {stderr}"));
    let log: serde_json::Value = serde_json::from_str(line).unwrap();
    let fields = if log["fields"].is_object() {
        &log["fields"]
    } else {
        &log
    };
    assert_eq!(fields["onchain_timestamp"], 0, "{line}");
    assert_plain_fields(&stdout);
    assert_plain_fields(&stderr);
}

//! The oracle's own result per batch, against the toncenter stand-in's v3 transaction index:
//! a message carrying less than the oracle's gas is reported with exit code -14 and its fees,
//! a good one with exit code 0, and the keeper's tick output shows both.

use std::sync::Arc;
use std::time::Duration;

use keeper_tests::pricing::PricingHarness;
use keeper_tests::toncenter::{EXIT_OUT_OF_GAS, EXTERNAL_FEE, ORACLE_GAS_FEE, ToncenterServer};
use keeper_ton::*;

const TON: u128 = 1_000_000_000;

async fn deliver(
    value_nanoton: u64,
    seed: u8,
) -> (ToncenterServer, Result<DeliveryReport, DeliveryError>) {
    deliver_on(value_nanoton, seed, true).await
}

/// `v3`: whether the endpoint offers toncenter's v3 index (else only v2 `getTransactions`).
async fn deliver_on(
    value_nanoton: u64,
    seed: u8,
    v3: bool,
) -> (ToncenterServer, Result<DeliveryReport, DeliveryError>) {
    let chain = ToncenterServer::start().await;
    chain.set_v3_index(v3);
    let keys = Arc::new(WalletKeys::from_seed(&[seed; 32]).unwrap());
    let wallet = Wallet::new(keys.clone(), WalletVersion::V5r1, Network::Mainnet).unwrap();
    chain.deploy(&wallet, 2, 10 * TON);
    let oracle = chain.new_oracle();
    chain.register_keeper(&oracle, keys.public_key());
    let delivery = Delivery::new(
        Toncenter::with_endpoint(&chain.jsonrpc_url(), None, Duration::from_secs(2)).unwrap(),
        wallet,
        DeliveryConfig {
            value_nanoton,
            auto_value: None,
            ttl: Duration::from_secs(60),
            poll_interval: Duration::from_millis(20),
            confirm_timeout: Duration::from_secs(5),
            readback_timeout: Duration::from_millis(500),
            max_rebuilds: 1,
        },
    );
    let messages: Vec<_> = [1u16, 2]
        .iter()
        .map(|&id| {
            OracleMessage::new(
                oracle.clone(),
                OracleUpdate::Price(PriceUpdate {
                    asset: format!("A{id}"),
                    asset_id: id,
                    price_micro: 1_000_000,
                    timestamp: 1_760_000_000,
                }),
            )
        })
        .collect();
    let result = delivery.deliver(&messages).await;
    (chain, result)
}

#[tokio::test]
async fn a_message_below_the_oracles_gas_reports_out_of_gas_and_its_fees() {
    let value = 1_000_000u64;
    let (_chain, result) = deliver(value, 81).await;
    let DeliveryError::NotLanded { report, .. } = result.unwrap_err() else {
        panic!("expected not landed");
    };
    let b = &report.batches[0];
    assert_eq!(b.exit_code, Some(EXIT_OUT_OF_GAS));
    // The wallet's fee and, per update, all the value it carried (gas ran out on it).
    assert_eq!(b.fees_nanoton, Some(EXTERNAL_FEE + 2 * u128::from(value)));
    assert_eq!(b.value_nanoton, 2 * u128::from(value));
}

#[tokio::test]
async fn a_good_message_reports_exit_code_zero_and_the_oracles_fees() {
    let value = 50_000_000u64;
    let (_chain, result) = deliver(value, 82).await;
    let report = result.unwrap();
    let b = &report.batches[0];
    assert_eq!(b.exit_code, Some(0));
    assert_eq!(b.fees_nanoton, Some(EXTERNAL_FEE + 2 * ORACLE_GAS_FEE));
    assert_eq!(b.value_nanoton, 2 * u128::from(value));
}

#[tokio::test]
async fn without_the_v3_index_the_result_comes_from_v2_get_transactions_and_the_transaction_boc() {
    let value = 1_000_000u64;
    let (chain, result) = deliver_on(value, 83, false).await;
    let DeliveryError::NotLanded { report, .. } = result.unwrap_err() else {
        panic!("expected not landed");
    };
    let b = &report.batches[0];
    assert_eq!(b.exit_code, Some(EXIT_OUT_OF_GAS));
    assert_eq!(b.fees_nanoton, Some(EXTERNAL_FEE + 2 * u128::from(value)));
    assert!(chain.count("getTransactions") > 0, "asked through v2");

    let value = 50_000_000u64;
    let (_chain, result) = deliver_on(value, 84, false).await;
    let b = &result.unwrap().batches[0];
    assert_eq!(b.exit_code, Some(0));
    assert_eq!(b.fees_nanoton, Some(EXTERNAL_FEE + 2 * ORACLE_GAS_FEE));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tick_output_shows_exit_code_fees_and_value_per_batch() {
    let mut h = PricingHarness::start().await;
    // 0.001 TON per update, below the oracle's 0.004 TON of gas.
    h.extra_env
        .push(("UPDATE_VALUE_TON".into(), "0.001".into()));
    // Waiting for updates that cannot land: a few seconds, not the default 30.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("k.toml");
    std::fs::write(&file, "[ton]\nreadback_timeout = 2\n").unwrap();
    let config = file.to_str().unwrap();
    let out = h
        .command(&["--once", "--output", "json", "--config", config])
        .output()
        .await
        .expect("run keeper");
    assert_eq!(out.status.code(), Some(1));
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    let batch = &doc["delivery"]["batches"][0];
    assert_eq!(batch["exit_code"], EXIT_OUT_OF_GAS, "{doc}");
    assert_eq!(batch["value_nanoton"], 6 * 1_000_000);
    assert!(
        batch["fees_nanoton"].as_u64().is_some_and(|f| f > 0),
        "{batch}"
    );
    assert!(
        doc["error"]
            .as_str()
            .is_some_and(|e| e.contains("did not land") && e.contains("exit code -14")),
        "{doc}"
    );
    // The text rendering has a line per batch (a fresh lease: the run above left its own).
    h.extra_env.push((
        "REDIS_PREFIX".into(),
        format!("{}:", keeper_tests::env::unique("onchain-text")),
    ));
    let text = h
        .command(&["--once", "--config", config])
        .output()
        .await
        .expect("run keeper");
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.lines()
            .any(|l| l.starts_with("batch: seqno") && l.contains("exit code -14 (out of gas")),
        "{text}"
    );
    // Enough value: exit code 0 on the next run.
    h.extra_env.push(("UPDATE_VALUE_TON".into(), "0.05".into()));
    h.extra_env.push((
        "REDIS_PREFIX".into(),
        format!("{}:", keeper_tests::env::unique("onchain")),
    ));
    let out = h
        .command(&["--once", "--output", "json", "--config", config])
        .output()
        .await
        .expect("run keeper");
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(out.status.code(), Some(0), "{doc}");
    let batch = &doc["delivery"]["batches"][0];
    assert_eq!(batch["exit_code"], 0, "{doc}");
    assert_eq!(
        batch["fees_nanoton"],
        (EXTERNAL_FEE + 6 * ORACLE_GAS_FEE) as u64
    );
    assert_eq!(batch["value_nanoton"], 6 * 50_000_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_oracle_transaction_raises_update_failed_onchain() {
    let mut h = PricingHarness::start().await;
    h.extra_env
        .push(("UPDATE_VALUE_TON".into(), "0.001".into()));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("k.toml");
    std::fs::write(&file, "[ton]\nreadback_timeout = 2\n").unwrap();
    let mut child = h
        .command(&["--config", file.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn keeper");
    let hit = h
        .sink
        .wait_until(Duration::from_secs(30), |r| {
            r.json()
                .is_some_and(|j| j["key"] == "update_failed_onchain" && j["status"] == "firing")
        })
        .await
        .and_then(|r| r.json())
        .expect("update_failed_onchain fired");
    let summary = hit["summary"].as_str().unwrap_or_default();
    assert!(
        summary.contains("exit code -14") && summary.contains("out of gas"),
        "{summary}"
    );
    child.kill().await.expect("stop");
}

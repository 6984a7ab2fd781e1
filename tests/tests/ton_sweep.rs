//! `wallet sweep --to ADDRESS [--dry-run]` against the toncenter stand-in, through the keeper
//! binary: a dry run signs a message the chain refuses; a sweep moves the whole balance to the
//! successor, less the fees; a journaled message that may still land stops it.

use std::sync::Arc;
use std::time::Duration;

use keeper_tests::pricing::PricingHarness;
use keeper_tests::toncenter::{EXTERNAL_FEE, ExternalOutcome, FORWARD_FEE, ToncenterServer};
use keeper_ton::*;

const TON: u128 = 1_000_000_000;

async fn sweep(h: &PricingHarness, args: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    let mut all = vec!["wallet", "sweep", "--output", "json"];
    all.extend_from_slice(args);
    let out = h.command(&all).output().await.expect("run keeper");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let doc = serde_json::from_str(&stdout).unwrap_or(serde_json::Value::Null);
    (out.status.code(), doc, stderr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sweep_moves_the_whole_balance_and_a_dry_run_cannot_land() {
    let h = PricingHarness::start().await;
    h.ton.deploy(&h.wallet, 9, 7 * TON);
    let successor = keeper_tests::toncenter::random_address();
    let to = successor.to_base64_url();

    let (code, doc, stderr) = sweep(&h, &["--to", &to, "--dry-run"]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(doc["dry_run"], true);
    assert_eq!(doc["seqno"], 9);
    assert_eq!(doc["balance_nanoton"], 7 * TON as u64);
    assert!(
        doc["notes"]
            .to_string()
            .contains("rejects this message as expired")
    );
    assert!(h.ton.externals().is_empty(), "a dry run sends nothing");
    use base64::Engine as _;
    let boc = base64::engine::general_purpose::STANDARD
        .decode(doc["boc"].as_str().expect("boc"))
        .unwrap();
    let refused = h.ton.submit(&boc).unwrap_err();
    assert!(refused.contains("exitcode=136"), "{refused}");
    assert_eq!(h.ton.balance(h.wallet.address()), 7 * TON);

    let (code, doc, stderr) = sweep(&h, &["--to", &to]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(doc["dry_run"], false);
    assert_eq!(doc["balance_after_nanoton"], 0);
    assert_eq!(h.ton.balance(h.wallet.address()), 0);
    // Two copies (the refused dry run, the sweep); the sweep got in.
    let externals = h.ton.externals();
    assert_eq!(
        externals.last().map(|e| &e.outcome),
        Some(&ExternalOutcome::Accepted)
    );
    assert_eq!(
        h.ton.balance(&successor),
        7 * TON - EXTERNAL_FEE - FORWARD_FEE,
        "everything but the fees"
    );
    assert_eq!(h.ton.seqno(h.wallet.address()), Some(10));
}

#[tokio::test]
async fn a_message_that_may_still_land_stops_the_sweep() {
    let chain = ToncenterServer::start().await;
    let keys = Arc::new(WalletKeys::from_seed(&[71; 32]).unwrap());
    let wallet = Wallet::new(keys.clone(), WalletVersion::V5r1, Network::Mainnet).unwrap();
    chain.deploy(&wallet, 4, 3 * TON);
    let oracle = chain.new_oracle();
    chain.register_keeper(&oracle, keys.public_key());
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::dir(dir.path());
    let delivery = || {
        Delivery::new(
            Toncenter::with_endpoint(&chain.jsonrpc_url(), None, Duration::from_secs(2)).unwrap(),
            wallet.clone(),
            DeliveryConfig {
                value_nanoton: 50_000_000,
                auto_value: None,
                ttl: Duration::from_secs(60),
                poll_interval: Duration::from_millis(50),
                confirm_timeout: Duration::from_millis(300),
                readback_timeout: Duration::from_millis(300),
                max_rebuilds: 1,
            },
        )
        .with_journal(journal.clone())
    };
    // The keeper's last update is accepted but not yet included.
    chain.set_inclusion_delay(Duration::from_secs(3_600));
    let msg = OracleMessage::new(
        oracle.clone(),
        OracleUpdate::Price(PriceUpdate {
            asset: "USDT".into(),
            asset_id: 1,
            price_micro: 1_000_000,
            timestamp: 1_760_000_000,
        }),
    );
    assert_eq!(
        delivery().deliver(&[msg]).await.unwrap_err().kind(),
        "unconfirmed"
    );
    let err = delivery()
        .sweep(&keeper_tests::toncenter::random_address(), false)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "in_flight", "{err}");
    assert_eq!(chain.seqno(wallet.address()), Some(4));
    assert_eq!(chain.balance(wallet.address()), 3 * TON);
    // Held by the network: the keeper's message and the copy re-sent at resume, no sweep.
    assert_eq!(chain.held_externals(), 2);
    assert!(chain.externals().is_empty());
}

#[tokio::test]
async fn a_dry_run_sweep_sends_nothing_even_with_a_journaled_message() {
    let chain = ToncenterServer::start().await;
    let keys = Arc::new(WalletKeys::from_seed(&[72; 32]).unwrap());
    let wallet = Wallet::new(keys.clone(), WalletVersion::V5r1, Network::Mainnet).unwrap();
    chain.deploy(&wallet, 4, 3 * TON);
    let oracle = chain.new_oracle();
    chain.register_keeper(&oracle, keys.public_key());
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::dir(dir.path());
    let delivery = || {
        Delivery::new(
            Toncenter::with_endpoint(&chain.jsonrpc_url(), None, Duration::from_secs(2)).unwrap(),
            wallet.clone(),
            DeliveryConfig {
                value_nanoton: 50_000_000,
                auto_value: None,
                ttl: Duration::from_secs(60),
                poll_interval: Duration::from_millis(50),
                confirm_timeout: Duration::from_millis(300),
                readback_timeout: Duration::from_millis(300),
                max_rebuilds: 1,
            },
        )
        .with_journal(journal.clone())
    };
    chain.set_inclusion_delay(Duration::from_secs(3_600));
    let msg = OracleMessage::new(
        oracle.clone(),
        OracleUpdate::Price(PriceUpdate {
            asset: "USDT".into(),
            asset_id: 1,
            price_micro: 1_000_000,
            timestamp: 1_760_000_000,
        }),
    );
    assert_eq!(
        delivery().deliver(&[msg]).await.unwrap_err().kind(),
        "unconfirmed"
    );
    assert_eq!(chain.held_externals(), 1);
    let report = delivery()
        .sweep(&keeper_tests::toncenter::random_address(), true)
        .await
        .unwrap();
    assert!(report.dry_run);
    assert!(
        report.notes.iter().any(|n| n.contains("seqno 4")),
        "{:?}",
        report.notes
    );
    assert_eq!(
        chain.held_externals(),
        1,
        "the journaled BoC was not re-sent"
    );
    assert!(chain.externals().is_empty());
}

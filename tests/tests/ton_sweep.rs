//! `wallet sweep --to ADDRESS [--dry-run]` against the toncenter stand-in, through the keeper
//! binary: a dry run signs a message the chain refuses and sends and journals nothing; a sweep
//! moves the whole balance to the successor, less the fees; a journaled message that may still
//! land stops it, and so does a keeper holding the wallet lease; a wrong destination is refused
//! before anything is signed; a seqno consumed by another body is not a confirmed sweep.

use std::sync::Arc;
use std::time::Duration;

use keeper_runtime::alert::Alerter;
use keeper_runtime::config::StorageSettings;
use keeper_runtime::secret::SecretUrl;
use keeper_runtime::telemetry::metrics::Metrics;
use keeper_tests::env;
use keeper_tests::pricing::{PricingHarness, TEST_MNEMONIC};
use keeper_tests::toncenter::{
    EXTERNAL_FEE, ExternalOutcome, FORWARD_FEE, ToncenterServer, random_address,
};
use keeper_ton::cache::ChainStore;
use keeper_ton::metrics::ChainMetrics;
use keeper_ton::*;
use tokio::process::Command;

const TON: u128 = 1_000_000_000;

/// A fresh successor, sent non-bounceable.
fn successor() -> SweepDestination {
    SweepDestination {
        address: keeper_tests::toncenter::random_address(),
        bounce: false,
    }
}

async fn sweep(h: &PricingHarness, args: &[&str]) -> (Option<i32>, serde_json::Value, String) {
    run(sweep_command(h, args)).await
}

fn sweep_command(h: &PricingHarness, args: &[&str]) -> Command {
    let mut all = vec!["wallet", "sweep", "--output", "json"];
    all.extend_from_slice(args);
    h.command(&all)
}

async fn run(mut cmd: Command) -> (Option<i32>, serde_json::Value, String) {
    let out = cmd.output().await.expect("run keeper");
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
    // Non-bounceable (UQ…), as for a successor not deployed yet.
    let to = successor.to_base64_url_flags(true, false);

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
    assert_eq!(doc["bounce"], false);
    assert!(doc["transaction_hash"].is_string(), "{doc}");
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

/// A deployed wallet at seqno 4 holding 3 TON, whose last update the network accepted but will
/// not include for an hour; the message is journaled in a state directory.
struct Stuck {
    chain: ToncenterServer,
    wallet: Wallet,
    journal: Journal,
    _dir: tempfile::TempDir,
}

impl Stuck {
    async fn new(seed: u8) -> Self {
        let chain = ToncenterServer::start().await;
        let keys = Arc::new(WalletKeys::from_seed(&[seed; 32]).unwrap());
        let wallet = Wallet::new(keys.clone(), WalletVersion::V5r1, Network::Mainnet).unwrap();
        chain.deploy(&wallet, 4, 3 * TON);
        let oracle = chain.new_oracle();
        chain.register_keeper(&oracle, keys.public_key());
        let dir = tempfile::tempdir().unwrap();
        let stuck = Stuck {
            journal: Journal::dir(dir.path()),
            chain,
            wallet,
            _dir: dir,
        };
        stuck.chain.set_inclusion_delay(Duration::from_secs(3_600));
        let msg = OracleMessage::new(
            oracle,
            OracleUpdate::Price(PriceUpdate {
                asset: "USDT".into(),
                asset_id: 1,
                price_micro: 1_000_000,
                timestamp: 1_760_000_000,
            }),
        );
        assert_eq!(
            stuck.delivery().deliver(&[msg]).await.unwrap_err().kind(),
            "unconfirmed"
        );
        stuck
    }

    /// A fresh process's delivery over the same journal.
    fn delivery(&self) -> Delivery<Toncenter> {
        Delivery::new(
            Toncenter::with_endpoint(&self.chain.jsonrpc_url(), None, Duration::from_secs(2))
                .unwrap(),
            self.wallet.clone(),
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
        .with_journal(self.journal.clone())
    }
}

#[tokio::test]
async fn a_message_that_may_still_land_stops_the_sweep() {
    let stuck = Stuck::new(71).await;
    let (chain, wallet) = (&stuck.chain, &stuck.wallet);
    let delivery = || stuck.delivery();
    let err = delivery()
        .sweep(&successor(), false, &Unfenced)
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
    let stuck = Stuck::new(72).await;
    let chain = &stuck.chain;
    let delivery = || stuck.delivery();
    assert_eq!(chain.held_externals(), 1);
    let report = delivery()
        .sweep(&successor(), true, &Unfenced)
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

/// `wallet sweep ARGS` is a usage error: exit 2, one line saying `says`, not a word pair of the
/// mnemonic.
async fn refused(h: &PricingHarness, args: &[&str], says: &str) {
    let (code, _, stderr) = sweep(h, args).await;
    assert_eq!(code, Some(2), "{args:?}: {stderr}");
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args:?}: {stderr}");
    assert!(
        lines[0].contains(says),
        "{args:?} should say {says:?}: {stderr}"
    );
    let words: Vec<&str> = TEST_MNEMONIC.split_whitespace().collect();
    for pair in words.windows(2) {
        assert!(!stderr.contains(&pair.join(" ")), "{stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_destination_is_a_usage_error_and_nothing_is_signed() {
    let h = PricingHarness::start().await;
    h.ton.deploy(&h.wallet, 9, 7 * TON);
    let successor = random_address();
    let friendly = successor.to_base64_url_flags(true, false);
    // One character changed: the checksum catches it.
    let mut typo = friendly.clone().into_bytes();
    typo[20] = if typo[20] == b'A' { b'B' } else { b'A' };
    let typo = String::from_utf8(typo).unwrap();
    let raw = successor.to_hex();
    let workchain_7 = raw.replacen("0:", "7:", 1);
    let friendly_7 =
        TonAddress::new(7, successor.hash_part.clone()).to_base64_url_flags(true, false);
    let testnet = successor.to_base64_url_flags(true, true);
    let own_std = h.wallet.address().to_base64_std_flags(false, false);
    let own_non_bounceable = h.wallet.address_non_bounceable();
    let own_bounceable = h.wallet.address_bounceable();
    let own_raw = h.wallet.address_raw();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--to", &typo], "checksum does not match"),
        (vec!["--to", &friendly[..47]], "47 characters, not 48"),
        (vec!["--to", &raw], "pass --raw-address"),
        (vec!["--to", &raw, "--dry-run"], "pass --raw-address"),
        (
            vec!["--to", &workchain_7, "--raw-address"],
            "workchain 7: a sweep goes to workchain 0 or -1 only",
        ),
        (
            vec!["--to", "0:abc", "--raw-address"],
            "not a raw TON address",
        ),
        (vec!["--to", &friendly_7], "workchain 7"),
        (
            vec!["--to", &testnet],
            "is a testnet address but TON_NETWORK is mainnet",
        ),
        (
            vec!["--to", &own_non_bounceable],
            "the keeper wallet itself",
        ),
        (vec!["--to", &own_bounceable], "the keeper wallet itself"),
        (vec!["--to", &own_std], "the keeper wallet itself"),
        (
            vec!["--to", &own_raw, "--raw-address"],
            "the keeper wallet itself",
        ),
    ];
    for (args, says) in &cases {
        refused(&h, args, says).await;
    }
    assert!(h.ton.externals().is_empty());
    assert_eq!(h.ton.seqno(h.wallet.address()), Some(9));
    assert_eq!(h.ton.balance(h.wallet.address()), 7 * TON);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounce_follows_the_form_of_the_destination() {
    let h = PricingHarness::start().await;
    h.ton.deploy(&h.wallet, 9, 7 * TON);
    let successor = random_address();
    let bounceable = successor.to_base64_url_flags(false, false);
    let non_bounceable = successor.to_base64_std_flags(true, false);
    let raw = successor.to_hex();
    for (args, bounce) in [
        (vec!["--to", bounceable.as_str()], true),
        (vec!["--to", non_bounceable.as_str()], false),
        (vec!["--to", raw.as_str(), "--raw-address"], false),
    ] {
        let mut all = args.clone();
        all.push("--dry-run");
        let (code, doc, stderr) = sweep(&h, &all).await;
        assert_eq!(code, Some(0), "{args:?}: {stderr}");
        assert_eq!(doc["bounce"], bounce, "{args:?}: {doc}");
        use base64::Engine as _;
        let boc = base64::engine::general_purpose::STANDARD
            .decode(doc["boc"].as_str().expect("boc"))
            .unwrap();
        let signed = decode_external(&boc, WalletVersion::V5r1).unwrap();
        assert_eq!(signed.actions.len(), 1);
        assert_eq!(signed.actions[0].to, successor);
        assert_eq!(signed.actions[0].bounce, bounce, "{args:?}");
        assert_eq!(signed.actions[0].mode, SWEEP_MODE);
    }
    assert!(h.ton.externals().is_empty(), "dry runs send nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sweep_needs_a_durable_journal_and_a_dry_run_writes_none() {
    let h = PricingHarness::start().await;
    h.ton.deploy(&h.wallet, 9, 7 * TON);
    let to = random_address().to_base64_url_flags(true, false);

    let mut cmd = sweep_command(&h, &["--to", &to]);
    cmd.env_remove("DATABASE_URL");
    let (code, _, stderr) = run(cmd).await;
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("needs a durable journal"), "{stderr}");

    // With a state directory the journal is durable; a dry run still writes nothing into it.
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = sweep_command(&h, &["--to", &to, "--dry-run"]);
    cmd.env_remove("DATABASE_URL")
        .env("KEEPER_STATE_DIR", dir.path());
    let (code, doc, stderr) = run(cmd).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(doc["dry_run"], true);
    let written: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert!(written.is_empty(), "{written:?}");
    assert!(
        Journal::dir(dir.path())
            .entries(&h.wallet.address_raw())
            .await
            .unwrap()
            .is_empty()
    );
    assert!(h.ton.externals().is_empty(), "nothing sent");
    assert_eq!(h.ton.seqno(h.wallet.address()), Some(9));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keeper_holding_the_wallet_lease_stops_the_sweep() {
    let h = PricingHarness::start().await;
    h.ton.deploy(&h.wallet, 9, 7 * TON);
    let settings = StorageSettings {
        redis_url: Some(SecretUrl::shared(env::redis_url())),
        redis_prefix: h.prefix.clone(),
        ..StorageSettings::default()
    };
    let store = ChainStore::connect(
        &settings,
        Arc::new(Metrics::new("pricing-oracle").with::<ChainMetrics>()),
        Alerter::disabled(),
    )
    .await;
    // The keeper's lease: same key (the raw wallet address), another holder.
    let mut keeper = store.lease(&h.wallet.address_raw(), "running-keeper");
    assert!(keeper.try_acquire_or_renew().await.held);
    let successor = random_address();
    let to = successor.to_base64_url_flags(true, false);

    let (code, _, stderr) = sweep(&h, &["--to", &to]).await;
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("held by running-keeper"), "{stderr}");
    assert!(h.ton.externals().is_empty(), "nothing signed or sent");
    assert_eq!(h.ton.balance(h.wallet.address()), 7 * TON);

    // Stopped: the sweep takes the lease, sweeps, and gives the lease back.
    keeper.release().await.unwrap();
    let (code, doc, stderr) = sweep(&h, &["--to", &to]).await;
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(doc["balance_after_nanoton"], 0);
    assert!(h.ton.balance(&successor) > 0);
    assert!(
        keeper.try_acquire_or_renew().await.held,
        "the sweep released the lease"
    );
}

#[tokio::test]
async fn a_seqno_consumed_by_another_message_is_not_a_confirmed_sweep() {
    let chain = ToncenterServer::start().await;
    let keys = Arc::new(WalletKeys::from_seed(&[73; 32]).unwrap());
    let wallet = Wallet::new(keys, WalletVersion::V5r1, Network::Mainnet).unwrap();
    chain.deploy(&wallet, 4, 3 * TON);
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::dir(dir.path());
    let transport =
        || Toncenter::with_endpoint(&chain.jsonrpc_url(), None, Duration::from_secs(2)).unwrap();
    let delivery = Delivery::new(
        transport(),
        wallet.clone(),
        DeliveryConfig {
            value_nanoton: 50_000_000,
            auto_value: None,
            ttl: Duration::from_secs(60),
            poll_interval: Duration::from_millis(50),
            confirm_timeout: Duration::from_secs(5),
            readback_timeout: Duration::from_millis(300),
            max_rebuilds: 1,
        },
    )
    .with_journal(journal.clone());
    // A keeper that was not stopped (and journals in memory) signs another body for seqno 4
    // and sends it first; the network holds both and includes the keeper's.
    chain.set_inclusion_delay(Duration::from_millis(300));
    let other = build_external_with_mode(
        &wallet,
        4,
        u32::try_from(chain.chain_time() + 60).unwrap(),
        false,
        &[OutgoingMessage {
            to: random_address(),
            value_nanoton: 1_000_000,
            bounce: false,
            body: tonlib_core::cell::Cell::default().to_arc(),
        }],
        SEND_MODE,
    )
    .unwrap();
    transport().send_boc(&other.boc).await.unwrap();
    let to = successor();
    let err = delivery.sweep(&to, false, &Unfenced).await.unwrap_err();
    assert_eq!(err.kind(), "sweep_not_confirmed", "{err}");
    assert!(err.to_string().contains("seqno 4"), "{err}");
    // The seqno moved, but by the other body: the sweep never landed.
    assert_eq!(chain.seqno(wallet.address()), Some(5));
    assert_eq!(chain.balance(&to.address), 0);
    let outcomes: Vec<(Option<[u8; 32]>, bool)> = chain
        .externals()
        .iter()
        .map(|e| (e.body_hash, e.outcome == ExternalOutcome::Accepted))
        .collect();
    assert_eq!(outcomes.first(), Some(&(Some(other.body_hash), true)));
    assert!(
        outcomes.iter().skip(1).all(|(_, accepted)| !accepted),
        "{outcomes:?}"
    );
    // It can never land now: the journal lets it go.
    assert!(
        journal
            .entries(&wallet.address_raw())
            .await
            .unwrap()
            .is_empty()
    );
}

//! The in-flight journal against the toncenter stand-in holding accepted messages before it
//! includes them: a message left unconfirmed is found by the next process (file or
//! PostgreSQL), re-sent as the same BoC and settled before anything new is signed; and a
//! keeper killed with SIGKILL between send and confirmation and restarted at once never puts
//! two different bodies on one seqno, and its update lands once.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use keeper_runtime::alert::Alerter;
use keeper_runtime::config::StorageSettings;
use keeper_runtime::secret::SecretUrl;
use keeper_runtime::telemetry::metrics::Metrics;
use keeper_tests::env;
use keeper_tests::pricing::PricingHarness;
use keeper_tests::toncenter::{ExternalOutcome, ToncenterServer};
use keeper_ton::cache::ChainStore;
use keeper_ton::metrics::ChainMetrics;
use keeper_ton::*;

const TON: u128 = 1_000_000_000;

struct Rig {
    chain: ToncenterServer,
    wallet: Wallet,
    oracle: TonAddress,
}

async fn rig(seed: u8) -> Rig {
    let chain = ToncenterServer::start().await;
    let keys = Arc::new(WalletKeys::from_seed(&[seed; 32]).unwrap());
    let wallet = Wallet::new(keys.clone(), WalletVersion::V5r1, Network::Mainnet).unwrap();
    chain.deploy(&wallet, 11, 10 * TON);
    let oracle = chain.new_oracle();
    chain.register_keeper(&oracle, keys.public_key());
    Rig {
        chain,
        wallet,
        oracle,
    }
}

impl Rig {
    /// A fresh process's delivery: nothing in memory, only what `journal` holds.
    fn process(&self, journal: Journal, confirm_timeout: Duration) -> Process {
        let transport =
            Toncenter::with_endpoint(&self.chain.jsonrpc_url(), None, Duration::from_secs(2))
                .unwrap();
        Process {
            transport,
            wallet: self.wallet.clone(),
            journal,
            config: DeliveryConfig {
                value_nanoton: 50_000_000,
                auto_value: None,
                ttl: Duration::from_secs(60),
                poll_interval: Duration::from_millis(50),
                confirm_timeout,
                readback_timeout: Duration::from_millis(800),
                max_rebuilds: 2,
            },
        }
    }

    fn price(&self, price_micro: u64, timestamp: u32) -> Vec<OracleMessage> {
        vec![OracleMessage::new(
            self.oracle.clone(),
            OracleUpdate::Price(PriceUpdate {
                asset: "USDT".into(),
                asset_id: 1,
                price_micro,
                timestamp,
            }),
        )]
    }

    /// Distinct bodies that reached the chain per seqno.
    fn bodies_per_seqno(&self) -> HashMap<u32, HashSet<[u8; 32]>> {
        let mut out: HashMap<u32, HashSet<[u8; 32]>> = HashMap::new();
        for e in self.chain.externals() {
            if let (Some(seqno), Some(body)) = (e.seqno, e.body_hash) {
                out.entry(seqno).or_default().insert(body);
            }
        }
        out
    }
}

/// What a new keeper process would build its delivery from.
struct Process {
    transport: Toncenter,
    wallet: Wallet,
    journal: Journal,
    config: DeliveryConfig,
}

impl Process {
    fn with_ttl(mut self, ttl: Duration) -> Self {
        self.config.ttl = ttl;
        self
    }

    async fn deliver(&self, messages: &[OracleMessage]) -> Result<DeliveryReport, DeliveryError> {
        Delivery::new(
            self.transport.clone(),
            self.wallet.clone(),
            self.config.clone(),
        )
        .with_journal(self.journal.clone())
        .deliver(messages)
        .await
    }
}

/// First process: sends, gives up waiting (the chain holds the message), "dies". Second
/// process: must resume that message, not sign a new body for seqno 11.
async fn resumed_after_restart(r: &Rig, journal: Journal) {
    r.chain.set_inclusion_delay(Duration::from_millis(1_500));
    let t0 = keeper_tests::unix_now() - 5;
    let first = r.process(journal.clone(), Duration::from_millis(300));
    let err = first.deliver(&r.price(999_001, t0)).await.unwrap_err();
    assert_eq!(err.kind(), "unconfirmed", "{err}");
    assert_eq!(r.chain.held_externals(), 1);
    let entry = journal
        .get(&r.wallet.address_raw())
        .await
        .unwrap()
        .expect("journaled before the send");
    assert_eq!(entry.seqno, 11);
    drop(first);

    let second = r.process(journal.clone(), Duration::from_secs(10));
    // The journaled message is settled first: it lands, and this call's update, chosen without
    // it, is not signed.
    let err = second.deliver(&r.price(999_002, t0 + 1)).await.unwrap_err();
    assert_eq!(err.kind(), "resumed_landed", "{err}");
    assert_eq!(r.chain.seqno(r.wallet.address()), Some(12));
    let report = second.deliver(&r.price(999_002, t0 + 1)).await.unwrap();
    assert_eq!(report.batches[0].seqno, 12);
    let bodies = r.bodies_per_seqno();
    assert_eq!(bodies[&11].len(), 1, "one body for seqno 11: {bodies:?}");
    let copies: Vec<_> = r
        .chain
        .externals()
        .into_iter()
        .filter(|e| e.seqno == Some(11))
        .collect();
    assert_eq!(copies.len(), 2, "the same BoC re-sent by the new process");
    assert_eq!(
        copies
            .iter()
            .filter(|e| e.outcome == ExternalOutcome::Accepted)
            .count(),
        1
    );
    let landed: Vec<_> = r
        .chain
        .oracle_events()
        .into_iter()
        .filter(|e| e.accepted)
        .map(|e| e.value)
        .collect();
    assert_eq!(landed, [999_001, 999_002], "each update landed once");
    assert_eq!(
        journal.get(&r.wallet.address_raw()).await.unwrap(),
        None,
        "settled messages are erased"
    );
}

#[tokio::test]
async fn a_file_journal_resumes_the_same_message_after_a_restart() {
    let r = rig(61).await;
    let dir = tempfile::tempdir().unwrap();
    resumed_after_restart(&r, Journal::dir(dir.path())).await;
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn a_postgres_journal_resumes_the_same_message_after_a_restart() {
    let r = rig(62).await;
    let store = pg_store("journal").await;
    let journal = Journal::choose(&store, None).expect("PostgreSQL is durable");
    assert_eq!(journal.describe(), "postgres");
    resumed_after_restart(&r, journal).await;
}

#[tokio::test]
async fn an_expired_journaled_message_is_proven_dead_before_a_new_body() {
    let r = rig(63).await;
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::dir(dir.path());
    // The chain never includes it (held far longer than its 2 s TTL).
    r.chain.set_inclusion_delay(Duration::from_secs(3_600));
    let first = r
        .process(journal.clone(), Duration::from_millis(200))
        .with_ttl(Duration::from_secs(2));
    assert_eq!(
        first
            .deliver(&r.price(999_001, keeper_tests::unix_now() - 5))
            .await
            .unwrap_err()
            .kind(),
        "unconfirmed"
    );
    drop(first);
    r.chain.set_inclusion_delay(Duration::ZERO);
    // Chain time has passed its valid_until and the landing margin with seqno 11 unused: only
    // now may seqno 11 carry another body.
    r.chain.advance_chain_time(2 + LANDING_MARGIN_SECS + 1);
    let second = r.process(journal.clone(), Duration::from_secs(10));
    let report = second
        .deliver(&r.price(999_003, keeper_tests::unix_now() - 1))
        .await
        .unwrap();
    assert_eq!(report.batches[0].seqno, 11);
    assert_eq!(r.chain.price(&r.oracle, 1).map(|p| p.0), Some(999_003));
    let accepted: Vec<_> = r
        .chain
        .externals()
        .into_iter()
        .filter(|e| e.outcome == ExternalOutcome::Accepted)
        .collect();
    assert_eq!(accepted.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_between_send_and_confirmation_never_signs_a_second_body() {
    let mut h = PricingHarness::start().await;
    // Included 6 s after it is accepted: the keeper is waiting for confirmation when killed.
    h.ton.set_inclusion_delay(Duration::from_secs(6));
    // The PostgreSQL lease (no Redis): the killed holder's session dies with it, so the new
    // process takes the wallet at once instead of waiting out a Redis TTL.
    h.extra_env.push(("REDIS_URL".into(), String::new()));
    h.extra_env.push(("RUST_LOG".into(), "info".into()));
    let logs = tempfile::tempdir().unwrap();
    let spawn = |name: &str| {
        let file = std::fs::File::create(logs.path().join(name)).unwrap();
        h.command(&[])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::from(file))
            .spawn()
            .expect("spawn keeper")
    };
    let mut first = spawn("first.log");
    let deadline = Instant::now() + Duration::from_secs(30);
    while h.ton.held_externals() == 0 {
        assert!(Instant::now() < deadline, "the keeper never sent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    first.kill().await.expect("SIGKILL");
    // Restarted at once, with the first message still held by the network.
    let mut second = spawn("second.log");
    let deadline = Instant::now() + Duration::from_secs(40);
    while h.accepted_externals() < 1 || h.ton.held_externals() > 0 {
        assert!(Instant::now() < deadline, "nothing landed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Let the second process settle it and run a few more ticks.
    tokio::time::sleep(Duration::from_secs(3)).await;
    second.kill().await.expect("stop");
    let log = std::fs::read_to_string(logs.path().join("second.log")).unwrap();
    assert!(
        log.contains("resuming a journaled message"),
        "the restarted keeper did not resume: {log}"
    );

    let mut bodies: HashMap<u32, HashSet<[u8; 32]>> = HashMap::new();
    for e in h.ton.externals() {
        if let (Some(seqno), Some(body)) = (e.seqno, e.body_hash) {
            bodies.entry(seqno).or_default().insert(body);
        }
    }
    assert!(bodies.contains_key(&0), "{bodies:?}");
    for (seqno, set) in &bodies {
        assert_eq!(set.len(), 1, "seqno {seqno} carried {} bodies", set.len());
    }
    assert_eq!(
        h.accepted_externals(),
        1,
        "the restarted keeper settled the journaled message and published nothing twice"
    );
    let copies: Vec<_> = h
        .ton
        .externals()
        .into_iter()
        .filter(|e| e.seqno == Some(0))
        .collect();
    assert!(copies.len() >= 2, "the same BoC re-sent after the restart");
    assert!(copies.iter().all(|e| e.boc == copies[0].boc));
    let usdt: usize = h
        .ton
        .oracle_events()
        .iter()
        .filter(|e| e.accepted && e.op == 3 && e.id == 1)
        .count();
    assert_eq!(usdt, 1, "the update landed once");
}

/// An entry as delivery writes it, for `seqno` with a body told apart by `body`.
fn entry(wallet: &str, seqno: u32, body: u8, valid_until: u32, token: Option<u64>) -> JournalEntry {
    JournalEntry {
        wallet: wallet.to_owned(),
        seqno,
        valid_until,
        state_init: false,
        actions: 1,
        ops: vec!["update_price".into()],
        boc: String::new(),
        message_hash: hex::encode([body; 32]),
        normalized_hash: hex::encode([body; 32]),
        body_hash: hex::encode([body; 32]),
        fencing_token: token,
        chain_at_build: u64::from(valid_until) - 60,
        built_at_unix: 0,
    }
}

/// One entry per body: another body for a live seqno is refused, a later seqno sits beside it,
/// clearing takes the body's own hash, an older fencing token cannot write, and a dead entry
/// (past `valid_until` plus the margin) may be replaced.
async fn one_entry_per_body(journal: Journal) {
    let w = "0:00000000000000000000000000000000000000000000000000000000000000aa";
    let now = 1_700_000_000u64;
    let vu = (now + 60) as u32;
    journal
        .put(&entry(w, 11, 1, vu, Some(3)), now)
        .await
        .unwrap();
    // The same body again (a retry) is fine.
    journal
        .put(&entry(w, 11, 1, vu, Some(3)), now)
        .await
        .unwrap();
    let e = journal
        .put(&entry(w, 11, 2, vu, Some(3)), now)
        .await
        .unwrap_err();
    assert!(matches!(e, JournalError::Occupied { seqno: 11, .. }), "{e}");
    journal
        .put(&entry(w, 12, 3, vu, Some(4)), now)
        .await
        .unwrap();
    let e = journal
        .put(&entry(w, 13, 4, vu, Some(3)), now)
        .await
        .unwrap_err();
    assert!(e.is_fenced(), "{e}");
    assert!(e.to_string().contains("fencing token 4"), "{e}");
    let seqnos: Vec<u32> = journal
        .entries(w)
        .await
        .unwrap()
        .iter()
        .map(|e| e.seqno)
        .collect();
    assert_eq!(seqnos, [11, 12]);
    // Another body's hash does not clear it.
    journal.clear(w, 11, &hex::encode([2u8; 32])).await.unwrap();
    assert_eq!(journal.entries(w).await.unwrap().len(), 2);
    journal.clear(w, 11, &hex::encode([1u8; 32])).await.unwrap();
    assert_eq!(journal.get(w).await.unwrap().map(|e| e.seqno), Some(12));
    // Past valid_until + margin it can no longer land: another body may take the seqno.
    let late = u64::from(vu) + LANDING_MARGIN_SECS + 1;
    let e = journal
        .put(&entry(w, 12, 5, vu + 100, Some(4)), u64::from(vu))
        .await
        .unwrap_err();
    assert!(matches!(e, JournalError::Occupied { .. }), "{e}");
    journal
        .put(&entry(w, 12, 5, vu + 100, Some(4)), late)
        .await
        .unwrap();
    let held = journal.get(w).await.unwrap().unwrap();
    assert_eq!(held.body_hash, hex::encode([5u8; 32]));
}

#[tokio::test]
async fn the_memory_journal_keeps_one_entry_per_body() {
    one_entry_per_body(Journal::memory()).await;
}

#[tokio::test]
async fn the_file_journal_keeps_one_entry_per_body() {
    let dir = tempfile::tempdir().unwrap();
    one_entry_per_body(Journal::dir(dir.path())).await;
}

async fn pg_store(prefix: &str) -> ChainStore {
    ChainStore::connect_with(
        &StorageSettings {
            database_url: Some(SecretUrl::shared(env::pg_url())),
            db_schema: env::unique(prefix).to_lowercase(),
            redis_url: None,
            redis_prefix: "x:".into(),
            lease_ttl: 180,
            migrate_on_start: true,
            migrations: pricing_oracle::records::MIGRATIONS,
        },
        Arc::new(Metrics::new("pricing-oracle").with::<ChainMetrics>()),
        Alerter::disabled(),
        keeper_runtime::store::StoreTimeouts::default(),
    )
    .await
}

#[tokio::test]
async fn the_postgres_journal_keeps_one_entry_per_body_in_one_fenced_statement() {
    let store = pg_store("journal_body").await;
    one_entry_per_body(Journal::choose(&store, None).unwrap()).await;
}

#[tokio::test]
async fn a_postgres_journal_also_reads_the_state_directory() {
    // Written by a run without DATABASE_URL; the next run has it and must still see the entry.
    let w = "0:00000000000000000000000000000000000000000000000000000000000000bb";
    let dir = tempfile::tempdir().unwrap();
    Journal::dir(dir.path())
        .put(&entry(w, 7, 9, 1_700_000_060, None), 1_700_000_000)
        .await
        .unwrap();
    let store = pg_store("journal_dir").await;
    let journal = Journal::choose(&store, Some(dir.path().to_owned())).unwrap();
    assert!(
        journal.describe().contains("also reading file"),
        "{journal:?}"
    );
    let found = journal.entries(w).await.unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].seqno, 7);
    journal.clear(w, 7, &hex::encode([9u8; 32])).await.unwrap();
    assert!(journal.entries(w).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_failed_journal_write_sends_nothing() {
    let r = rig(64).await;
    let memory = Arc::new(MemoryJournal::default());
    memory.fail_writes(true);
    let p = r.process(Journal::shared(memory.clone()), Duration::from_secs(5));
    let err = p
        .deliver(&r.price(999_001, keeper_tests::unix_now() - 5))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "journal", "{err}");
    assert!(r.chain.externals().is_empty(), "nothing reached the chain");
    memory.fail_writes(false);
    let report = p
        .deliver(&r.price(999_001, keeper_tests::unix_now() - 5))
        .await
        .unwrap();
    assert_eq!(report.batches[0].seqno, 11);
    assert!(memory.snapshot().is_empty(), "cleared once confirmed");
}

/// Redis restarts empty (no persistence): the lease key and the fencing counter are gone. The
/// next holder still gets a larger token, so the PostgreSQL fence, which remembers the newest
/// token that wrote, takes its entries instead of refusing every write from then on; and the
/// old holder's token stays refused.
#[tokio::test]
async fn a_redis_restart_that_lost_the_fencing_counter_does_not_fence_out_the_next_holder() {
    let w = format!("0:{}", hex::encode(env::unique("restart").as_bytes()));
    let prefix = format!("{}:", env::unique("restart"));
    let leases = |id: &'static str| {
        let prefix = prefix.clone();
        let w = w.clone();
        async move {
            let store = ChainStore::connect_with(
                &StorageSettings {
                    redis_url: Some(SecretUrl::shared(env::redis_url())),
                    redis_prefix: prefix,
                    lease_ttl: 5,
                    ..StorageSettings::default()
                },
                Arc::new(Metrics::new("pricing-oracle").with::<ChainMetrics>()),
                Alerter::disabled(),
                keeper_runtime::store::StoreTimeouts::default(),
            )
            .await;
            store.lease(&w, id)
        }
    };
    let pg = pg_store("journal_restart").await;
    let journal = Journal::choose(&pg, None).unwrap();
    let now = u64::from(keeper_tests::unix_now());
    let vu = (now + 60) as u32;

    let mut a = leases("a").await;
    let token_a = a.try_acquire_or_renew().await.token.expect("a Redis token");
    journal
        .put(&entry(&w, 11, 1, vu, Some(token_a)), now)
        .await
        .unwrap();

    // The restart: every key of this prefix is gone, the counter with it.
    let client = redis::Client::open(env::redis_url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg(format!("{prefix}*"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(keys.len(), 2, "{keys:?}");
    let _: () = redis::cmd("DEL")
        .arg(&keys)
        .query_async(&mut conn)
        .await
        .unwrap();

    let mut b = leases("b").await;
    let token_b = b.try_acquire_or_renew().await.token.expect("a Redis token");
    assert!(token_b > token_a, "{token_b} after {token_a}");
    journal
        .put(&entry(&w, 12, 2, vu, Some(token_b)), now)
        .await
        .expect("the new holder writes");
    let e = journal
        .put(&entry(&w, 13, 3, vu, Some(token_a)), now)
        .await
        .unwrap_err();
    assert!(e.is_fenced(), "{e}");
}

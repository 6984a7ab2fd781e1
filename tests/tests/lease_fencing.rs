//! The wallet lease as a fence, against the real Redis and PostgreSQL and the toncenter
//! stand-in: the token is checked again right before a signature, a holder whose lease was
//! taken over signs nothing, and a delivery records the token it signed under.

use std::sync::Arc;
use std::time::Duration;

use keeper_runtime::alert::Alerter;
use keeper_runtime::config::StorageSettings;
use keeper_runtime::secret::SecretUrl;
use keeper_runtime::store::StoreTimeouts;
use keeper_runtime::telemetry::metrics::Metrics;
use keeper_tests::env;
use keeper_tests::toncenter::ToncenterServer;
use keeper_ton::cache::ChainStore;
use keeper_ton::lease::{FenceError, WalletLease};
use keeper_ton::metrics::ChainMetrics;
use keeper_ton::*;
use sqlx::Connection as _;

const TON: u128 = 1_000_000_000;

fn fast() -> StoreTimeouts {
    StoreTimeouts {
        connect: Duration::from_millis(800),
        op: Duration::from_millis(800),
        probe_every: Duration::from_millis(150),
    }
}

async fn store(pg: Option<&str>, redis: Option<&str>, prefix: &str) -> ChainStore {
    let settings = StorageSettings {
        database_url: pg.map(SecretUrl::shared),
        db_schema: "public".to_owned(),
        redis_url: redis.map(SecretUrl::shared),
        redis_prefix: prefix.to_owned(),
        lease_ttl: 2,
        migrate_on_start: false,
        ..StorageSettings::default()
    };
    ChainStore::connect_with(
        &settings,
        Arc::new(Metrics::new("pricing-oracle").with::<ChainMetrics>()),
        Alerter::disabled(),
        fast(),
    )
    .await
}

/// Redis: `a` holds the lease, lets it lapse, `b` takes it. Returns both, `a` not yet told.
async fn taken_over(wallet: &str) -> (WalletLease, WalletLease, u64, u64) {
    let prefix = format!("{}:", env::unique("fence"));
    let ttl = Duration::from_millis(300);
    let sa = store(None, Some(&env::redis_url()), &prefix).await;
    let sb = store(None, Some(&env::redis_url()), &prefix).await;
    let mut a = sa.lease(wallet, "a").with_ttl(ttl);
    let mut b = sb.lease(wallet, "b").with_ttl(ttl);
    let first = a.try_acquire_or_renew().await;
    assert!(first.held);
    let token_a = first.token.expect("Redis leases carry a token");
    assert_eq!(a.check_fence().await, Ok(Some(token_a)));
    // A stalls past its TTL (a long GC pause, a frozen VM…); B takes over.
    tokio::time::sleep(ttl + Duration::from_millis(100)).await;
    let second = b.try_acquire_or_renew().await;
    assert!(second.held);
    let token_b = second.token.expect("token");
    assert!(token_b > token_a, "the fencing token only grows");
    (a, b, token_a, token_b)
}

#[tokio::test]
async fn redis_fence_refuses_a_holder_whose_lease_was_taken_over() {
    let (mut a, mut b, token_a, token_b) = taken_over(&env::unique("EQfence")).await;
    // A still believes it holds the lease (its last renewal said so) but the fence asks Redis.
    assert!(a.status().held);
    assert_eq!(
        a.check_fence().await,
        Err(FenceError::Superseded {
            token: Some(token_a)
        })
    );
    assert!(!a.status().held, "a refused fence stands the instance by");
    assert_eq!(a.check_fence().await, Err(FenceError::NotHeld));
    assert_eq!(b.check_fence().await, Ok(Some(token_b)));
}

#[tokio::test]
async fn postgres_fence_fails_once_the_lease_session_is_gone() {
    let wallet = env::unique("EQpgfence");
    let holder = env::unique("pg_holder");
    let s = store(Some(&env::pg_url()), None, "x:").await;
    let mut lease = s.lease(&wallet, &holder);
    assert_eq!(lease.check_fence().await, Err(FenceError::NotHeld));
    assert!(lease.try_acquire_or_renew().await.held);
    assert_eq!(lease.check_fence().await, Ok(None));
    let mut admin = sqlx::PgConnection::connect(&env::pg_url()).await.unwrap();
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(format!("keeper-lease:{holder}"))
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(killed, [true]);
    assert!(matches!(
        lease.check_fence().await,
        Err(FenceError::Unverifiable(_))
    ));
    assert!(!lease.status().held);
}

struct LeaseFence(tokio::sync::Mutex<WalletLease>);

impl Fence for LeaseFence {
    async fn check(&self) -> Result<Option<u64>, keeper_ton::lease::FenceError> {
        self.0.lock().await.check_fence().await
    }
}

fn delivery(chain: &ToncenterServer, wallet: &Wallet) -> Delivery<Toncenter> {
    let transport =
        Toncenter::with_endpoint(&chain.jsonrpc_url(), None, Duration::from_secs(2)).unwrap();
    Delivery::new(
        transport,
        wallet.clone(),
        DeliveryConfig {
            value_nanoton: 50_000_000,
            auto_value: None,
            ttl: Duration::from_secs(60),
            poll_interval: Duration::from_millis(20),
            confirm_timeout: Duration::from_secs(10),
            readback_timeout: Duration::from_millis(500),
            max_rebuilds: 2,
        },
    )
}

fn price(oracle: &TonAddress, id: u16) -> Vec<OracleMessage> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32;
    vec![OracleMessage::new(
        oracle.clone(),
        OracleUpdate::Price(PriceUpdate {
            asset: "USDT".into(),
            asset_id: id,
            price_micro: 999_900,
            timestamp: now - 2,
        }),
    )]
}

#[tokio::test]
async fn a_superseded_holder_signs_nothing_and_the_new_one_records_its_token() {
    let chain = ToncenterServer::start().await;
    let keys = Arc::new(WalletKeys::from_seed(&[41; 32]).unwrap());
    let wallet = Wallet::new(keys.clone(), WalletVersion::V5r1, Network::Mainnet).unwrap();
    chain.deploy(&wallet, 3, 10 * TON);
    let oracle = chain.new_oracle();
    chain.register_keeper(&oracle, keys.public_key());

    let (a, b, _, token_b) = taken_over(&wallet.address_raw()).await;
    let old = delivery(&chain, &wallet);
    let err = old
        .deliver_fenced(&price(&oracle, 1), &LeaseFence(tokio::sync::Mutex::new(a)))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), "fenced", "{err}");
    assert!(chain.externals().is_empty(), "nothing signed, nothing sent");
    assert_eq!(old.in_flight().await, None);
    assert!(
        chain.count("getWalletInformation") >= 1,
        "it did read the chain"
    );

    let new = delivery(&chain, &wallet);
    let report = new
        .deliver_fenced(&price(&oracle, 1), &LeaseFence(tokio::sync::Mutex::new(b)))
        .await
        .unwrap();
    assert_eq!(report.batches[0].fencing_token, Some(token_b));
    assert_eq!(report.batches[0].seqno, 3);
    assert_eq!(chain.externals().len(), 1);
    assert_eq!(chain.price(&oracle, 1).map(|p| p.0), Some(999_900));
}

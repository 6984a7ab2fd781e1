//! Storage against the real PostgreSQL and Redis started by scripts/test.sh: migrations in their
//! own schema, records and "latest" queries, Redis hashes and pub/sub, the wallet lease contended
//! by two processes, and stores lost (and regained) mid-run.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bridge_health::records::{self as bridge_records, BridgeStatus, NewBridgeSnapshot};
use chrono::{TimeZone, Utc};
use futures_util::StreamExt;
use keeper_runtime::alert::Alerter;
use keeper_runtime::config::StorageSettings;
use keeper_runtime::secret::SecretUrl;
use keeper_runtime::store::{self, StoreError, StoreKind, StoreTimeouts};
use keeper_runtime::telemetry::metrics::Metrics;
use keeper_tests::env;
use keeper_tests::proxy::TcpProxy;
use keeper_ton::cache::ChainStore;
use keeper_ton::metrics::ChainMetrics;
use pricing_oracle::records::{
    self as price_records, NewPriceUpdate, StatusChange, UpdateReason, UpdateStatus,
};
use sqlx::Connection;
use tokio::io::AsyncBufReadExt;

// ---------------------------------------------------------------------------------------------
// helpers

/// Migration files across the owners' folders under `migrations/`.
const MIGRATIONS: i64 = 5;

/// Every binary's migration sets in one schema, as a deployment sharing `keepers` has them.
static ALL: store::Migrations = &[
    &pricing_oracle::records::PRICING_ORACLE_MIGRATIONS,
    &bridge_health::records::BRIDGE_HEALTH_MIGRATIONS,
    &keeper_ton::journal::TON_MIGRATIONS,
    &db_backup::records::BACKUP_RUNS_MIGRATIONS,
];

/// The single history every binary shared before the split, byte for byte as released.
static RELEASED: store::MigrationSet = store::MigrationSet {
    owner: "released",
    migrator: sqlx::migrate!("../migrations/released"),
    table: "_sqlx_migrations",
};

/// What the binaries of the earlier releases applied.
static RELEASED_ONLY: store::Migrations = &[&RELEASED];

/// The bookkeeping tables of [`ALL`].
const BOOKKEEPING: [&str; 4] = [
    "_bridge_health_migrations",
    "_db_backup_migrations",
    "_pricing_oracle_migrations",
    "_ton_migrations",
];

/// Successful migrations recorded in `schema` across [`ALL`]'s bookkeeping tables.
async fn applied(c: &mut sqlx::PgConnection, schema: &str) -> i64 {
    let mut n = 0;
    for table in BOOKKEEPING {
        let count: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM \"{schema}\".{table} WHERE success"
        )))
        .fetch_one(&mut *c)
        .await
        .unwrap();
        n += count;
    }
    n
}

fn fast() -> StoreTimeouts {
    StoreTimeouts {
        connect: Duration::from_millis(800),
        op: Duration::from_millis(800),
        probe_every: Duration::from_millis(150),
    }
}

fn settings(pg: Option<&str>, redis: Option<&str>, schema: &str, prefix: &str) -> StorageSettings {
    StorageSettings {
        database_url: pg.map(SecretUrl::shared),
        db_schema: schema.to_owned(),
        redis_url: redis.map(SecretUrl::shared),
        redis_prefix: prefix.to_owned(),
        lease_ttl: 2,
        migrate_on_start: true,
        migrations: ALL,
    }
}

fn schema_name(tag: &str) -> String {
    env::unique(&format!("ks_{tag}")).to_lowercase()
}

fn prefix_name(tag: &str) -> String {
    format!("{}:", env::unique(&format!("kt_{tag}")))
}

/// Value of one series in the Prometheus text, e.g. `keeper_store_up{store="redis"}`.
fn metric(m: &Metrics, series: &str) -> Option<f64> {
    m.render().lines().find_map(|l| {
        l.strip_prefix(series)
            .and_then(|rest| rest.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    })
}

async fn pg_admin() -> sqlx::PgConnection {
    sqlx::PgConnection::connect(&env::pg_url()).await.unwrap()
}

async fn drop_schema(schema: &str) {
    let mut c = pg_admin().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
    )))
    .execute(&mut c)
    .await
    .unwrap();
}

/// A database of its own, for tests that need `public` to themselves.
struct TempDb {
    name: String,
    url: String,
}

impl TempDb {
    async fn create() -> TempDb {
        let name = env::unique("kdb").to_lowercase();
        let mut admin = pg_admin().await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut admin)
            .await
            .unwrap();
        let mut url = url::Url::parse(&env::pg_url()).unwrap();
        url.set_path(&format!("/{name}"));
        TempDb {
            name,
            url: url.to_string(),
        }
    }

    async fn drop(self) {
        let mut admin = pg_admin().await;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        )))
        .execute(&mut admin)
        .await
        .unwrap();
    }
}

async fn redis_conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

fn price(asset: &str, asset_id: i32, price_micro: i64, reason: UpdateReason) -> NewPriceUpdate {
    NewPriceUpdate {
        asset: asset.to_owned(),
        asset_id,
        price_micro,
        quotes: serde_json::json!([
            {"source": "coingecko", "price": "0.9998", "timestamp": 1_700_000_000, "accepted": true},
            {"source": "defillama", "price": "1.0001", "timestamp": 1_700_000_005, "accepted": true}
        ]),
        reason,
        wallet: "UQDv2YSmlrlLH3hLNOVxC8FcQf4F9eGNs4vb2zKma4txo6i3".to_owned(),
        seqno: Some(41),
        message_hash: None,
        status: UpdateStatus::Sent,
        observed_at: Utc.timestamp_opt(1_700_000_000, 0).unwrap(),
    }
}

fn snapshot(bridge_id: i32, bridge: &str, score: f64, status: BridgeStatus) -> NewBridgeSnapshot {
    NewBridgeSnapshot {
        bridge_id,
        bridge: bridge.to_owned(),
        score,
        status,
        is_online: status != BridgeStatus::Offline,
        last_seen: Some(Utc.timestamp_opt(1_700_000_100, 0).unwrap()),
        signals: serde_json::json!([{"signal": "peg", "value": "0.999", "verdict": "ok"}]),
        published: false,
        message_hash: None,
    }
}

/// Polls `check` every 50 ms until it holds or `limit` passes; returns whether it held.
async fn eventually<F, Fut>(limit: Duration, mut check: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let end = Instant::now() + limit;
    loop {
        if check().await {
            return true;
        }
        if Instant::now() > end {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Collects log output of the current thread (tests using it run on a current-thread runtime).
#[derive(Clone, Default)]
struct LogBuf(Arc<Mutex<Vec<u8>>>);

impl LogBuf {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for LogBuf {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuf {
    type Writer = LogBuf;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

fn capture_logs() -> (LogBuf, tracing::subscriber::DefaultGuard) {
    let buf = LogBuf::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(buf.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    let guard = tracing::subscriber::set_default(subscriber);
    (buf, guard)
}

// ---------------------------------------------------------------------------------------------
// migrations

#[tokio::test]
async fn migrations_apply_twice_in_their_own_schema_beside_a_foreign_public_table() {
    let db = TempDb::create().await;
    let url = SecretUrl::new(db.url.clone());
    let mut c = sqlx::PgConnection::connect(&db.url).await.unwrap();
    // The protocol's own table of that name: another shape (hedge prices), with data.
    sqlx::raw_sql(
        "CREATE TABLE public.pricing_oracle_updates (
             id SERIAL PRIMARY KEY, hedge_venue TEXT NOT NULL, hedge_price NUMERIC(20,8) NOT NULL,
             updated_at TIMESTAMPTZ NOT NULL DEFAULT now());
         INSERT INTO public.pricing_oracle_updates (hedge_venue, hedge_price) VALUES ('binance', 1.0002);",
    )
    .execute(&mut c)
    .await
    .unwrap();

    store::migrate(&url, "keepers", ALL).await.unwrap();
    store::migrate(&url, "keepers", ALL).await.unwrap();

    // The bookkeeping table and ours are in `keepers`; public has only the foreign table.
    let tables: Vec<(String, String)> = sqlx::query_as(
        "SELECT table_schema::text, table_name::text FROM information_schema.tables \
         WHERE table_schema IN ('public', 'keepers') ORDER BY 1, 2",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    let want: Vec<(String, String)> = [
        ("keepers", "_bridge_health_migrations"),
        ("keepers", "_db_backup_migrations"),
        ("keepers", "_pricing_oracle_migrations"),
        ("keepers", "_ton_migrations"),
        ("keepers", "backup_runs"),
        ("keepers", "bridge_health_snapshots"),
        ("keepers", "bridge_health_verdicts"),
        ("keepers", "pricing_oracle_decisions"),
        ("keepers", "pricing_oracle_updates"),
        ("keepers", "ton_inflight"),
        ("keepers", "ton_journal_fence"),
        ("public", "pricing_oracle_updates"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    assert_eq!(tables, want);

    assert_eq!(
        applied(&mut c, "keepers").await,
        MIGRATIONS,
        "a second migrate must not apply anything again"
    );

    // The agreed columns (SCHEMA.md), in order.
    let cols = |table: &'static str| {
        sqlx::query_scalar::<_, String>(
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = 'keepers' AND table_name = $1 ORDER BY ordinal_position",
        )
        .bind(table)
    };
    assert_eq!(
        cols("pricing_oracle_updates")
            .fetch_all(&mut c)
            .await
            .unwrap(),
        [
            "id",
            "asset",
            "asset_id",
            "price_micro",
            "quotes",
            "reason",
            "wallet",
            "seqno",
            "message_hash",
            "status",
            "error",
            "observed_at",
            "created_at",
            "confirmed_at"
        ]
    );
    assert_eq!(
        cols("bridge_health_snapshots")
            .fetch_all(&mut c)
            .await
            .unwrap(),
        [
            "id",
            "bridge_id",
            "bridge",
            "score",
            "status",
            "is_online",
            "last_seen",
            "signals",
            "published",
            "message_hash",
            "created_at"
        ]
    );
    assert_eq!(
        cols("backup_runs").fetch_all(&mut c).await.unwrap(),
        [
            "id",
            "started_at",
            "finished_at",
            "status",
            "database",
            "location",
            "remote_key",
            "size_bytes",
            "sha256",
            "manifest",
            "verify_mode",
            "verified",
            "error"
        ]
    );

    // The foreign table is untouched: same shape, same row.
    let foreign: Vec<String> = sqlx::query_scalar(
        "SELECT column_name::text FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name = 'pricing_oracle_updates' ORDER BY ordinal_position",
    )
    .fetch_all(&mut c)
    .await
    .unwrap();
    assert_eq!(foreign, ["id", "hedge_venue", "hedge_price", "updated_at"]);

    // A ChainStore migrating at start (a third application) records into keepers, not public.
    let metrics = Arc::new(Metrics::new("pricing-oracle").with::<ChainMetrics>());
    let s = ChainStore::connect_with(
        &settings(Some(&db.url), None, "keepers", "x:"),
        metrics.clone(),
        Alerter::disabled(),
        fast(),
    )
    .await;
    assert!(s.is_up(StoreKind::Postgres));
    let id =
        price_records::insert_price_update(&s, &price("USDT", 1, 999_850, UpdateReason::Initial))
            .await
            .unwrap();
    let ours: i64 =
        sqlx::query_scalar("SELECT count(*) FROM keepers.pricing_oracle_updates WHERE id = $1")
            .bind(id)
            .fetch_one(&mut c)
            .await
            .unwrap();
    let theirs: i64 = sqlx::query_scalar("SELECT count(*) FROM public.pricing_oracle_updates")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!((ours, theirs), (1, 1));
    assert_eq!(
        metric(&metrics, "keeper_store_up{store=\"postgres\"}"),
        Some(1.0)
    );

    drop(s);
    c.close().await.unwrap();
    db.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_migrating_at_once_all_succeed_and_apply_once() {
    let schema = schema_name("race");
    let url = SecretUrl::shared(env::pg_url());
    let runs: Vec<_> = (0..4)
        .map(|_| {
            let (url, schema) = (url.clone(), schema.clone());
            tokio::spawn(async move { store::migrate(&url, &schema, ALL).await })
        })
        .collect();
    for r in runs {
        r.await.unwrap().unwrap();
    }
    let mut c = pg_admin().await;
    assert_eq!(applied(&mut c, &schema).await, MIGRATIONS);
    drop_schema(&schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_migrated_by_the_released_single_history_upgrades_in_place() {
    let schema = schema_name("upgrade");
    let url = SecretUrl::shared(env::pg_url());
    // An existing deployment: every table, one `_sqlx_migrations` history, some records.
    store::migrate(&url, &schema, RELEASED_ONLY).await.unwrap();
    let mut c = pg_admin().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "INSERT INTO \"{schema}\".ton_inflight (wallet, seqno, entry) VALUES ('EQw', 7, '{{}}'); \
         INSERT INTO \"{schema}\".backup_runs (status, database) VALUES ('success', 'app')"
    )))
    .execute(&mut c)
    .await
    .unwrap();
    // The upgraded binaries adopt the tables as they are, each recording its own history.
    store::migrate(&url, &schema, ALL).await.unwrap();
    assert_eq!(applied(&mut c, &schema).await, MIGRATIONS);
    // A binary of the old release still running beside them finds its history intact.
    store::migrate(&url, &schema, RELEASED_ONLY).await.unwrap();
    let counts: (i64, i64, i64) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT (SELECT count(*) FROM \"{schema}\"._sqlx_migrations WHERE success), \
                (SELECT count(*) FROM \"{schema}\".ton_inflight), \
                (SELECT count(*) FROM \"{schema}\".backup_runs)"
    )))
    .fetch_one(&mut c)
    .await
    .unwrap();
    assert_eq!(counts, (3, 1, 1));
    drop_schema(&schema).await;
}

#[tokio::test]
async fn migrate_rejects_a_schema_name_that_is_not_an_identifier() {
    let url = SecretUrl::new(env::pg_url());
    let err = store::migrate(&url, "keepers; DROP TABLE x", ALL)
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::InvalidSchema(_)), "{err}");
}

// ---------------------------------------------------------------------------------------------
// records

#[tokio::test]
async fn price_updates_and_bridge_snapshots_with_latest_queries() {
    let schema = schema_name("rec");
    let metrics = Arc::new(Metrics::new("pricing-oracle").with::<ChainMetrics>());
    let s = ChainStore::connect_with(
        &settings(Some(&env::pg_url()), None, &schema, "x:"),
        metrics,
        Alerter::disabled(),
        fast(),
    )
    .await;
    assert!(s.is_up(StoreKind::Postgres));

    // Prices: three USDT, two USDC; the newest per asset wins.
    let mut usdt = Vec::new();
    for (p, reason) in [
        (999_850, UpdateReason::Initial),
        (999_700, UpdateReason::Deviation),
        (1_000_100, UpdateReason::Heartbeat),
    ] {
        usdt.push(
            price_records::insert_price_update(&s, &price("USDT", 1, p, reason))
                .await
                .unwrap(),
        );
    }
    let usdc_old =
        price_records::insert_price_update(&s, &price("USDC", 2, 999_990, UpdateReason::Initial))
            .await
            .unwrap();
    let mut dry = price("USDC", 2, 1_000_000, UpdateReason::Forced);
    dry.status = UpdateStatus::DryRun;
    let usdc_new = price_records::insert_price_update(&s, &dry).await.unwrap();
    assert!(usdt.windows(2).all(|w| w[0] < w[1]) && usdc_old < usdc_new);

    let last = price_records::latest_price_update(&s, "USDT")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((last.id, last.price_micro), (usdt[2], 1_000_100));
    assert_eq!(last.reason, UpdateReason::Heartbeat);
    assert_eq!(last.status, UpdateStatus::Sent);
    assert_eq!(last.quotes[1]["source"], "defillama");
    assert_eq!(last.observed_at.timestamp(), 1_700_000_000);
    assert!(
        price_records::latest_price_update(&s, "DAI")
            .await
            .unwrap()
            .is_none()
    );

    let all = price_records::latest_price_updates(&s).await.unwrap();
    let got: Vec<(&str, i64, UpdateStatus)> = all
        .iter()
        .map(|r| (r.asset.as_str(), r.price_micro, r.status))
        .collect();
    assert_eq!(
        got,
        [
            ("USDC", 1_000_000, UpdateStatus::DryRun),
            ("USDT", 1_000_100, UpdateStatus::Sent)
        ]
    );

    // Status changes: confirmed with hash and time; failed with an error; unknown id.
    let confirmed_at = Utc.timestamp_opt(1_700_000_030, 0).unwrap();
    price_records::set_price_update_status(
        &s,
        usdt[2],
        &StatusChange {
            status: UpdateStatus::Confirmed,
            error: None,
            message_hash: Some("ab".repeat(32)),
            confirmed_at: Some(confirmed_at),
        },
    )
    .await
    .unwrap();
    let last = price_records::latest_price_update(&s, "USDT")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(last.status, UpdateStatus::Confirmed);
    assert_eq!(last.message_hash.as_deref(), Some("ab".repeat(32).as_str()));
    assert_eq!(last.confirmed_at, Some(confirmed_at));
    assert_eq!(last.error, None);

    price_records::set_price_update_status(
        &s,
        usdt[1],
        &StatusChange {
            status: UpdateStatus::Failed,
            error: Some("message expired: seqno did not move before valid_until".into()),
            message_hash: None,
            confirmed_at: None,
        },
    )
    .await
    .unwrap();
    let pool = s.pg_pool().unwrap();
    let (status, error): (String, Option<String>) =
        sqlx::query_as("SELECT status, error FROM pricing_oracle_updates WHERE id = $1")
            .bind(usdt[1])
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(status, "failed");
    assert!(error.unwrap().contains("expired"));

    let missing = price_records::set_price_update_status(
        &s,
        i64::MAX,
        &StatusChange {
            status: UpdateStatus::Confirmed,
            error: None,
            message_hash: None,
            confirmed_at: None,
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(missing, StoreError::NoSuchRow { .. }), "{missing}");
    // The database answered: a missing row does not degrade the store.
    assert!(s.is_up(StoreKind::Postgres));

    // Bridges.
    bridge_records::insert_bridge_snapshot(
        &s,
        &snapshot(3, "wormhole", 1.0, BridgeStatus::Healthy),
    )
    .await
    .unwrap();
    bridge_records::insert_bridge_snapshot(
        &s,
        &snapshot(1, "ton-bridge", 0.9, BridgeStatus::Healthy),
    )
    .await
    .unwrap();
    let mut off = snapshot(3, "wormhole", 0.2, BridgeStatus::Offline);
    off.published = true;
    off.message_hash = Some("cd".repeat(32));
    let off_id = bridge_records::insert_bridge_snapshot(&s, &off)
        .await
        .unwrap();
    let w = bridge_records::latest_bridge_snapshot(&s, 3)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (w.id, w.status, w.is_online, w.published),
        (off_id, BridgeStatus::Offline, false, true)
    );
    assert_eq!(w.signals[0]["signal"], "peg");
    assert!(
        bridge_records::latest_bridge_snapshot(&s, 4)
            .await
            .unwrap()
            .is_none()
    );
    let bridges: Vec<(i32, f64)> = bridge_records::latest_bridge_snapshots(&s)
        .await
        .unwrap()
        .iter()
        .map(|b| (b.bridge_id, b.score))
        .collect();
    assert_eq!(bridges, [(1, 0.9), (3, 0.2)]);

    drop(s);
    drop_schema(&schema).await;
}

#[tokio::test]
async fn latest_queries_are_served_by_the_indexes() {
    let schema = schema_name("idx");
    store::migrate(&SecretUrl::new(env::pg_url()), &schema, ALL)
        .await
        .unwrap();
    let mut c = pg_admin().await;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
        "SET search_path = \"{schema}\"; SET enable_seqscan = off"
    )))
    .execute(&mut c)
    .await
    .unwrap();
    for (query, index) in [
        (
            "SELECT * FROM pricing_oracle_updates WHERE asset = 'USDT' ORDER BY created_at DESC, id DESC LIMIT 1",
            "pricing_oracle_updates_asset_latest",
        ),
        (
            "SELECT * FROM bridge_health_snapshots WHERE bridge_id = 3 ORDER BY created_at DESC, id DESC LIMIT 1",
            "bridge_health_snapshots_bridge_latest",
        ),
        (
            "SELECT * FROM backup_runs WHERE status = 'success' ORDER BY finished_at DESC LIMIT 1",
            "backup_runs_status_latest",
        ),
    ] {
        let plan: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!("EXPLAIN {query}")))
            .fetch_all(&mut c)
            .await
            .unwrap();
        let plan = plan.join("\n");
        assert!(plan.contains(index), "{query}\n{plan}");
        assert!(
            !plan.contains("Sort"),
            "the index order should serve ORDER BY:\n{plan}"
        );
    }
    drop_schema(&schema).await;
}

// ---------------------------------------------------------------------------------------------
// redis

#[tokio::test]
async fn redis_hashes_and_pubsub_channels() {
    let prefix = prefix_name("cache");
    let url = env::redis_url();
    let s = ChainStore::connect_with(
        &settings(None, Some(&url), "unused", &prefix),
        Arc::new(Metrics::new("pricing-oracle").with::<ChainMetrics>()),
        Alerter::disabled(),
        fast(),
    )
    .await;
    assert!(s.is_up(StoreKind::Redis));

    let client = redis::Client::open(url.as_str()).unwrap();
    let mut sub = client.get_async_pubsub().await.unwrap();
    sub.subscribe("pricing_oracle").await.unwrap();
    sub.subscribe("bridge_health").await.unwrap();
    let mut messages = sub.into_on_message();

    s.put_hash(
        "price:USDT",
        &[
            ("price_micro", "999850".into()),
            ("timestamp", "1700000000".into()),
        ],
    )
    .await
    .unwrap();
    s.put_hash(
        "bridge_health:3",
        &[("status", "offline".into()), ("score", "0.2".into())],
    )
    .await
    .unwrap();

    let mut raw = redis_conn(&url).await;
    let h: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(format!("{prefix}price:USDT"))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(h.get("price_micro").map(String::as_str), Some("999850"));
    assert_eq!(h.get("timestamp").map(String::as_str), Some("1700000000"));
    let b: HashMap<String, String> = redis::cmd("HGETALL")
        .arg(format!("{prefix}bridge_health:3"))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(b.get("status").map(String::as_str), Some("offline"));
    assert_eq!(s.get_hash("price:USDT").await.unwrap(), h);
    assert!(s.get_hash("price:DAI").await.unwrap().is_empty());
    assert_eq!(s.get_hash("bridge_health:3").await.unwrap(), b);

    // Channels are shared with other tests: match on a payload only this test sends.
    let p1 = serde_json::json!({"asset": "USDT", "price_micro": 999850, "tag": prefix}).to_string();
    let p2 = serde_json::json!({"bridge_id": 3, "status": "offline", "tag": prefix}).to_string();
    assert!(s.publish(price_records::CHANNEL, &p1).await.unwrap() >= 1);
    assert!(s.publish(bridge_records::CHANNEL, &p2).await.unwrap() >= 1);
    let mut seen = Vec::new();
    let got_both = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(m) = messages.next().await {
            let payload: String = m.get_payload().unwrap();
            if payload.contains(&prefix) {
                seen.push((m.get_channel_name().to_owned(), payload));
                if seen.len() == 2 {
                    return;
                }
            }
        }
    })
    .await;
    assert!(got_both.is_ok(), "messages seen: {seen:?}");
    assert_eq!(seen[0], ("pricing_oracle".to_owned(), p1));
    assert_eq!(seen[1], ("bridge_health".to_owned(), p2));
}

// ---------------------------------------------------------------------------------------------
// nothing configured, secrets

#[test]
fn nothing_configured_says_so_once_and_the_lease_is_local() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (logs, _guard) = capture_logs();
    rt.block_on(async {
        let metrics = Arc::new(Metrics::new("bridge-health").with::<ChainMetrics>());
        let s = ChainStore::connect(
            &StorageSettings::default(),
            metrics.clone(),
            Alerter::disabled(),
        )
        .await;
        assert!(!s.postgres_configured() && !s.redis_configured());
        let e = bridge_records::insert_bridge_snapshot(
            &s,
            &snapshot(1, "ton-bridge", 1.0, BridgeStatus::Healthy),
        )
        .await
        .unwrap_err();
        assert!(e.is_not_configured(), "{e}");
        assert!(
            s.put_hash("price:USDT", &[("p", "1".into())])
                .await
                .unwrap_err()
                .is_not_configured()
        );

        let mut lease = s.lease("EQwallet", "solo-1");
        assert_eq!(lease.backend(), "none");
        for _ in 0..3 {
            let st = lease.try_acquire_or_renew().await;
            assert!(st.held);
            assert_eq!(st.holder.as_deref(), Some("solo-1"));
        }
        assert_eq!(
            metric(&metrics, "keeper_lock_held{wallet=\"EQwallet\"}"),
            Some(1.0)
        );
        lease.release().await.unwrap();
        assert_eq!(
            metric(&metrics, "keeper_lock_held{wallet=\"EQwallet\"}"),
            Some(0.0)
        );
        // Not configured is not degraded: no store_up series, no errors counted.
        assert_eq!(
            metric(&metrics, "keeper_store_up{store=\"postgres\"}"),
            None
        );
        assert_eq!(
            metric(&metrics, "keeper_store_errors_total{store=\"postgres\"}"),
            None
        );
    });
    let text = logs.text();
    assert_eq!(text.matches("are not recorded").count(), 1, "{text}");
    assert!(text.contains("no DATABASE_URL and no REDIS_URL"), "{text}");
    assert_eq!(text.matches("always held").count(), 1, "{text}");
}

#[test]
fn passwords_stay_out_of_errors_and_logs() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (logs, _guard) = capture_logs();
    let errors = rt.block_on(async {
        // Nothing listens on port 1; one URL is malformed beyond the password.
        let s = ChainStore::connect_with(
            &settings(
                Some("postgres://keeper:hunter2-pg@127.0.0.1:1/app"),
                Some("redis://:hunter2-redis@127.0.0.1:1/0"),
                "keepers",
                "x:",
            ),
            Arc::new(Metrics::new("pricing-oracle").with::<ChainMetrics>()),
            Alerter::disabled(),
            fast(),
        )
        .await;
        let bad = ChainStore::connect_with(
            &settings(
                Some("postgres://keeper:hunter2-pg@127.0.0.1:notaport/app"),
                Some("redis://:hunter2-redis@[::1/0"),
                "keepers",
                "x:",
            ),
            Arc::new(Metrics::new("pricing-oracle").with::<ChainMetrics>()),
            Alerter::disabled(),
            fast(),
        )
        .await;
        let mut lease = bad.lease("EQw", "h");
        assert_eq!(lease.backend(), "unusable");
        assert!(!lease.try_acquire_or_renew().await.held);
        let migrate = store::migrate(
            &SecretUrl::new("postgres://keeper:hunter2-pg@127.0.0.1:1/app"),
            "keepers",
            ALL,
        )
        .await
        .unwrap_err();
        vec![
            format!("{s:?}"),
            format!("{bad:?}"),
            price_records::insert_price_update(&s, &price("USDT", 1, 1, UpdateReason::Initial))
                .await
                .unwrap_err()
                .to_string(),
            s.put_hash("price:USDT", &[("p", "1".into())])
                .await
                .unwrap_err()
                .to_string(),
            migrate.to_string(),
            format!("{migrate:?}"),
        ]
    });
    let text = logs.text();
    assert!(text.contains("unavailable"), "{text}");
    for shown in errors.iter().chain(std::iter::once(&text)) {
        assert!(!shown.contains("hunter2"), "password leaked: {shown}");
    }
}

// ---------------------------------------------------------------------------------------------
// wallet lease

/// Child process of `redis_lease_two_processes`: holds and renews the lease, printing one
/// `LEASE …` line per attempt, until killed. Ignored in normal runs: it only runs when the parent
/// starts this binary with `--ignored` and the `LEASE_CHILD_*` environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of redis_lease_two_processes"]
async fn lease_child() {
    let Ok(prefix) = std::env::var("LEASE_CHILD_PREFIX") else {
        return;
    };
    let wallet = std::env::var("LEASE_CHILD_WALLET").unwrap();
    let holder = std::env::var("LEASE_CHILD_HOLDER").unwrap();
    let ttl = Duration::from_millis(
        std::env::var("LEASE_CHILD_TTL_MS")
            .unwrap()
            .parse()
            .unwrap(),
    );
    let s = ChainStore::connect_with(
        &settings(None, Some(&env::redis_url()), "unused", &prefix),
        Arc::new(Metrics::new("pricing-oracle").with::<ChainMetrics>()),
        Alerter::disabled(),
        fast(),
    )
    .await;
    let mut lease = s.lease(&wallet, &holder).with_ttl(ttl);
    let until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < until {
        let st = lease.try_acquire_or_renew().await;
        println!(
            "LEASE held={} holder={} token={}",
            st.held,
            st.holder.unwrap_or_default(),
            st.token.unwrap_or(0)
        );
        tokio::time::sleep(ttl / 5).await;
    }
}

fn parse_lease_line(line: &str) -> Option<(bool, String, u64)> {
    let rest = line.strip_prefix("LEASE ")?;
    let mut held = None;
    let mut holder = None;
    let mut token = None;
    for part in rest.split(' ') {
        match part.split_once('=')? {
            ("held", v) => held = v.parse().ok(),
            ("holder", v) => holder = Some(v.to_owned()),
            ("token", v) => token = v.parse().ok(),
            _ => {}
        }
    }
    Some((held?, holder?, token?))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_lease_two_processes() {
    let prefix = prefix_name("lease");
    let wallet = "UQDv2YSmlrlLH3hLNOVxC8FcQf4F9eGNs4vb2zKma4txo6i3";
    let ttl = Duration::from_millis(2000);
    let url = env::redis_url();

    let mut child = tokio::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "lease_child",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("LEASE_CHILD_PREFIX", &prefix)
        .env("LEASE_CHILD_WALLET", wallet)
        .env("LEASE_CHILD_HOLDER", "proc-a")
        .env("LEASE_CHILD_TTL_MS", ttl.as_millis().to_string())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(st) = parse_lease_line(&line) {
                return st;
            }
        }
        panic!("child exited before reporting");
    })
    .await
    .expect("child process reported nothing");
    let (held, holder, token_a) = first;
    assert!(held, "the first contender on a free lease must get it");
    assert_eq!(holder, "proc-a");
    assert!(token_a >= 1);
    // Keep reading the child's lines so its stdout never blocks.
    let child_lines = Arc::new(Mutex::new(Vec::new()));
    let sink = child_lines.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(st) = parse_lease_line(&line) {
                sink.lock().unwrap().push(st);
            }
        }
    });

    // This process contends with its own store (its own Redis connection) while the child
    // renews: for well over one TTL it never gets the lease, and it sees who has it.
    let metrics = Arc::new(Metrics::new("pricing-oracle").with::<ChainMetrics>());
    let s = ChainStore::connect_with(
        &settings(None, Some(&url), "unused", &prefix),
        metrics.clone(),
        Alerter::disabled(),
        fast(),
    )
    .await;
    let mut b = s.lease(wallet, "proc-b").with_ttl(ttl);
    assert_eq!(b.backend(), "redis");
    let standby_until = Instant::now() + ttl * 5 / 2;
    let mut attempts = 0;
    while Instant::now() < standby_until {
        let st = b.try_acquire_or_renew().await;
        assert!(!st.held, "two holders at once: {st:?}");
        assert_eq!(st.holder.as_deref(), Some("proc-a"));
        assert_eq!(st.token, None);
        attempts += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(attempts >= 10);
    assert_eq!(
        metric(
            &metrics,
            &format!("keeper_lock_held{{wallet=\"{wallet}\"}}")
        ),
        Some(0.0)
    );
    {
        let seen = child_lines.lock().unwrap();
        assert!(
            seen.len() >= 5,
            "the child should have renewed several times: {seen:?}"
        );
        assert!(
            seen.iter()
                .all(|(h, who, t)| *h && who == "proc-a" && *t == token_a),
            "renewals keep the same holding and token: {seen:?}"
        );
    }

    // The holder dies without releasing: the lease lapses after its TTL and B takes over with a
    // larger fencing token.
    child.kill().await.unwrap();
    let killed_at = Instant::now();
    let mut took_over = None;
    while killed_at.elapsed() < ttl * 4 {
        let st = b.try_acquire_or_renew().await;
        if st.held {
            took_over = Some(st);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let st = took_over.expect("the standby did not take over after the holder died");
    assert_eq!(st.holder.as_deref(), Some("proc-b"));
    let token_b = st.token.unwrap();
    assert!(
        token_b > token_a,
        "fencing token must grow: {token_a} -> {token_b}"
    );
    assert_eq!(
        metric(
            &metrics,
            &format!("keeper_lock_held{{wallet=\"{wallet}\"}}")
        ),
        Some(1.0)
    );
    // Renewal keeps the holding (and its token) beyond the TTL.
    for _ in 0..4 {
        tokio::time::sleep(ttl / 2).await;
        let st = b.try_acquire_or_renew().await;
        assert!(st.held);
        assert_eq!(st.token, Some(token_b));
    }

    // A third contender (another connection) cannot take it; after B releases, it can at once.
    let s3 = ChainStore::connect_with(
        &settings(None, Some(&url), "unused", &prefix),
        Arc::new(Metrics::new("pricing-oracle").with::<ChainMetrics>()),
        Alerter::disabled(),
        fast(),
    )
    .await;
    let mut c = s3.lease(wallet, "proc-c").with_ttl(ttl);
    assert!(!c.try_acquire_or_renew().await.held);
    b.release().await.unwrap();
    assert_eq!(
        metric(
            &metrics,
            &format!("keeper_lock_held{{wallet=\"{wallet}\"}}")
        ),
        Some(0.0)
    );
    let mut raw = redis_conn(&url).await;
    let key: Option<String> = redis::cmd("GET")
        .arg(format!("{prefix}lock:{wallet}"))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(key, None, "release must delete the lease key");
    let st = c.try_acquire_or_renew().await;
    assert!(st.held);
    let token_c = st.token.unwrap();
    assert!(token_c > token_b);
    let counter: u64 = redis::cmd("GET")
        .arg(format!("{prefix}lock:{wallet}:token"))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(counter, token_c);

    // A release by a non-holder deletes nothing.
    b.release().await.unwrap();
    let key: Option<String> = redis::cmd("GET")
        .arg(format!("{prefix}lock:{wallet}"))
        .query_async(&mut raw)
        .await
        .unwrap();
    assert_eq!(key.as_deref(), Some("proc-c"));
    let st = c.try_acquire_or_renew().await;
    assert!(st.held && st.token == Some(token_c));
    c.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_advisory_lease_when_redis_is_not_configured() {
    let schema = schema_name("lease");
    let wallet = env::unique("EQwallet");
    // Holder names are unique too: the test kills a session by its name.
    let (pod_a, pod_b) = (env::unique("pod_a"), env::unique("pod_b"));
    let pg = env::pg_url();
    let connect = |m: Arc<Metrics>| {
        let st = settings(Some(&pg), None, &schema, "x:");
        async move { ChainStore::connect_with(&st, m, Alerter::disabled(), fast()).await }
    };
    let ma = Arc::new(Metrics::new("pricing-oracle").with::<ChainMetrics>());
    let a_store = connect(ma.clone()).await;
    let b_store = connect(Arc::new(
        Metrics::new("pricing-oracle").with::<ChainMetrics>(),
    ))
    .await;
    let mut a = a_store.lease(&wallet, &pod_a);
    let mut b = b_store.lease(&wallet, &pod_b);
    assert_eq!(a.backend(), "postgres");

    let st = a.try_acquire_or_renew().await;
    assert!(st.held && st.token.is_none());
    for _ in 0..3 {
        let st = b.try_acquire_or_renew().await;
        assert!(!st.held);
        assert_eq!(st.holder.as_deref(), Some(pod_a.as_str()));
        assert!(a.try_acquire_or_renew().await.held);
    }
    assert_eq!(
        metric(&ma, &format!("keeper_lock_held{{wallet=\"{wallet}\"}}")),
        Some(1.0)
    );

    // Released: the other instance gets it on its next try.
    a.release().await.unwrap();
    assert!(!a.status().held);
    assert!(b.try_acquire_or_renew().await.held);
    assert!(!a.try_acquire_or_renew().await.held);

    // The holder's session dies (crash, network): the server frees the lock at once.
    let mut admin = pg_admin().await;
    let killed: Vec<bool> = sqlx::query_scalar(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
    )
    .bind(format!("keeper-lease:{pod_b}"))
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert_eq!(killed, [true]);
    let mut a_took_over = false;
    for _ in 0..100 {
        if a.try_acquire_or_renew().await.held {
            a_took_over = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(a_took_over, "the lock of a dead session must be free");
    // B notices it lost the lease and stands by.
    let mut b_stood_by = false;
    for _ in 0..100 {
        let st = b.try_acquire_or_renew().await;
        assert!(!st.held, "two holders at once");
        if st.holder.as_deref() == Some(pod_a.as_str()) {
            b_stood_by = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(b_stood_by, "B should see A holding the lease");
    a.release().await.unwrap();
    drop_schema(&schema).await;
}

// ---------------------------------------------------------------------------------------------
// stores lost mid-run

/// One keeper-like cycle against the store: records, cache, lease. Returns how long the
/// storage part took and whether the lease is held.
async fn cycle(
    s: &ChainStore,
    lease: &mut keeper_ton::lease::WalletLease,
    n: u32,
) -> (Duration, bool, bool) {
    let t = Instant::now();
    let recorded = s
        .put_hash("price:USDT", &[("price_micro", n.to_string())])
        .await
        .is_ok();
    let held = lease.try_acquire_or_renew().await.held;
    (t.elapsed(), recorded, held)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_lost_mid_run_degrades_and_recovers() {
    // This instance reaches Redis through a proxy; a rival reaches it directly. Cutting the
    // proxy is a partition: we lose Redis, the rival does not.
    let proxy = TcpProxy::for_url(&env::redis_url()).await.unwrap();
    let url = proxy.url_for(&env::redis_url());
    let prefix = prefix_name("lost");
    let metrics = Arc::new(Metrics::new("pricing-oracle").with::<ChainMetrics>());
    let alerter = Alerter::disabled();
    let t = fast();
    let ttl = Duration::from_millis(1500);
    let s = ChainStore::connect_with(
        &settings(None, Some(&url), "unused", &prefix),
        metrics.clone(),
        alerter.clone(),
        t,
    )
    .await;
    let rival_store = ChainStore::connect_with(
        &settings(None, Some(&env::redis_url()), "unused", &prefix),
        Arc::new(Metrics::new("pricing-oracle").with::<ChainMetrics>()),
        Alerter::disabled(),
        t,
    )
    .await;
    let mut lease = s.lease("EQlost", "me").with_ttl(ttl);
    let mut rival = rival_store.lease("EQlost", "rival").with_ttl(ttl);
    let up = "keeper_store_up{store=\"redis\"}";

    let mut last_renewal = Instant::now();
    for n in 0..3 {
        last_renewal = Instant::now();
        let (_, recorded, held) = cycle(&s, &mut lease, n).await;
        assert!(recorded && held);
        assert!(!rival.try_acquire_or_renew().await.held);
    }
    assert_eq!(metric(&metrics, up), Some(1.0));

    proxy.cut().await;
    // The loop goes on: every cycle returns within the bounds and records fail. The lease is
    // kept only while the last renewal is still valid on the server, so the rival, which can
    // reach Redis, takes over only after that, and never while we still claim it.
    // Generous slack for a loaded CI machine; what matters is that nothing waits for TCP.
    let bound = t.op * 2 + Duration::from_millis(1500);
    let (mut held_through_outage, mut rival_took_over, mut cycles) = (0, false, 0);
    while last_renewal.elapsed() < ttl * 4 {
        let (took, recorded, held) = cycle(&s, &mut lease, cycles).await;
        cycles += 1;
        assert!(took < bound, "cycle {cycles} took {took:?}");
        assert!(!recorded, "cycle {cycles} recorded through a cut proxy");
        if held {
            assert!(
                last_renewal.elapsed() < ttl,
                "held past the TTL of the last renewal"
            );
            held_through_outage += 1;
        }
        let rival_held = rival.try_acquire_or_renew().await.held;
        assert!(!(held && rival_held), "two holders at once");
        if rival_held {
            rival_took_over = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert!(
        held_through_outage >= 1,
        "a short outage must not drop the lease at once"
    );
    assert!(
        rival_took_over,
        "the rival never took over the lapsed lease"
    );
    assert!(!lease.try_acquire_or_renew().await.held);
    assert!(cycles >= 5, "the loop should have gone on: {cycles} cycles");
    assert!(!s.is_up(StoreKind::Redis));
    assert_eq!(metric(&metrics, up), Some(0.0));
    assert!(metric(&metrics, "keeper_store_errors_total{store=\"redis\"}").unwrap() >= 5.0);
    assert!(alerter.is_firing("store_degraded:redis"));
    let e = s
        .put_hash("price:USDT", &[("p", "1".into())])
        .await
        .unwrap_err();
    assert!(e.is_outage(), "{e}");

    proxy.restore().unwrap();
    let s2 = s.clone();
    assert!(
        eventually(Duration::from_secs(10), || {
            let s = s2.clone();
            async move {
                s.put_hash("price:USDT", &[("price_micro", "1".into())])
                    .await
                    .is_ok()
            }
        })
        .await,
        "redis did not come back"
    );
    assert_eq!(metric(&metrics, up), Some(1.0));
    assert!(!alerter.is_firing("store_degraded:redis"));
    // Back, we see the rival holding the lease and stand by; once it releases, we lead again.
    let (_, recorded, held) = cycle(&s, &mut lease, 98).await;
    assert!(recorded && !held);
    assert_eq!(lease.status().holder.as_deref(), Some("rival"));
    rival.release().await.unwrap();
    let (_, recorded, held) = cycle(&s, &mut lease, 99).await;
    assert!(recorded && held);
    assert_eq!(s.get_hash("price:USDT").await.unwrap()["price_micro"], "99");
    lease.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lost_mid_run_degrades_and_recovers() {
    let proxy = TcpProxy::for_url(&env::pg_url()).await.unwrap();
    let url = proxy.url_for(&env::pg_url());
    let schema = schema_name("lost");
    let metrics = Arc::new(Metrics::new("bridge-health").with::<ChainMetrics>());
    let alerter = Alerter::disabled();
    let t = fast();
    let s = ChainStore::connect_with(
        &settings(Some(&url), None, &schema, "x:"),
        metrics.clone(),
        alerter.clone(),
        t,
    )
    .await;
    let up = "keeper_store_up{store=\"postgres\"}";
    bridge_records::insert_bridge_snapshot(
        &s,
        &snapshot(1, "ton-bridge", 1.0, BridgeStatus::Healthy),
    )
    .await
    .unwrap();
    assert_eq!(metric(&metrics, up), Some(1.0));

    proxy.cut().await;
    let bound = t.op + Duration::from_millis(1500);
    for n in 0..10 {
        let started = Instant::now();
        let r = bridge_records::insert_bridge_snapshot(
            &s,
            &snapshot(2, "orbit", 0.5, BridgeStatus::Degraded),
        )
        .await;
        assert!(
            started.elapsed() < bound,
            "call {n} took {:?}",
            started.elapsed()
        );
        let e = r.unwrap_err();
        assert!(e.is_outage(), "{e}");
    }
    assert!(!s.is_up(StoreKind::Postgres));
    assert_eq!(metric(&metrics, up), Some(0.0));
    assert!(alerter.is_firing("store_degraded:postgres"));

    proxy.restore().unwrap();
    let s2 = s.clone();
    assert!(
        eventually(Duration::from_secs(10), || {
            let s = s2.clone();
            async move {
                bridge_records::insert_bridge_snapshot(
                    &s,
                    &snapshot(2, "orbit", 0.6, BridgeStatus::Degraded),
                )
                .await
                .is_ok()
            }
        })
        .await,
        "postgres did not come back"
    );
    assert_eq!(metric(&metrics, up), Some(1.0));
    assert!(!alerter.is_firing("store_degraded:postgres"));
    let latest = bridge_records::latest_bridge_snapshots(&s).await.unwrap();
    assert_eq!(
        latest.iter().map(|b| b.bridge_id).collect::<Vec<_>>(),
        [1, 2]
    );
    drop(s);
    drop_schema(&schema).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_unreachable_at_start_degrade_then_migrate_when_they_come_up() {
    let pg_proxy = TcpProxy::for_url(&env::pg_url()).await.unwrap();
    let redis_proxy = TcpProxy::for_url(&env::redis_url()).await.unwrap();
    pg_proxy.cut().await;
    redis_proxy.cut().await;
    let schema = schema_name("late");
    let metrics = Arc::new(Metrics::new("pricing-oracle").with::<ChainMetrics>());
    let alerter = Alerter::disabled();
    let started = Instant::now();
    let s = ChainStore::connect_with(
        &settings(
            Some(&pg_proxy.url_for(&env::pg_url())),
            Some(&redis_proxy.url_for(&env::redis_url())),
            &schema,
            &prefix_name("late"),
        ),
        metrics.clone(),
        alerter.clone(),
        fast(),
    )
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "connect must not hang"
    );
    assert_eq!(
        metric(&metrics, "keeper_store_up{store=\"postgres\"}"),
        Some(0.0)
    );
    assert_eq!(
        metric(&metrics, "keeper_store_up{store=\"redis\"}"),
        Some(0.0)
    );
    assert_eq!(
        alerter.firing(),
        ["store_degraded:postgres", "store_degraded:redis"]
    );
    // Redis is configured but down: the lease is not held (it does not fall back to Postgres).
    let mut lease = s.lease("EQlate", "me");
    assert_eq!(lease.backend(), "redis");
    assert!(!lease.try_acquire_or_renew().await.held);
    let e =
        price_records::insert_price_update(&s, &price("USDT", 1, 1_000_000, UpdateReason::Initial))
            .await
            .unwrap_err();
    assert!(matches!(e, StoreError::Unavailable { .. }), "{e}");

    pg_proxy.restore().unwrap();
    redis_proxy.restore().unwrap();
    let s2 = s.clone();
    assert!(
        eventually(Duration::from_secs(15), || {
            let s = s2.clone();
            async move { s.is_up(StoreKind::Postgres) && s.is_up(StoreKind::Redis) }
        })
        .await
    );
    // The migrations that could not run at start ran when the database came up.
    let id =
        price_records::insert_price_update(&s, &price("USDT", 1, 1_000_000, UpdateReason::Initial))
            .await
            .unwrap();
    assert!(id > 0);
    assert!(lease.try_acquire_or_renew().await.held);
    assert!(alerter.firing().is_empty());
    lease.release().await.unwrap();
    drop(s);
    drop_schema(&schema).await;
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_redis(port: u16, dir: &std::path::Path) -> std::process::Child {
    std::process::Command::new(env::redis_server_bin())
        .args([
            "--bind",
            "127.0.0.1",
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .arg("--dir")
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("redis-server (KEEPERS_TEST_REDIS_SERVER) could not be started")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_server_killed_mid_run() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}/0");
    let mut server = start_redis(port, dir.path());
    let ready = eventually(Duration::from_secs(10), || {
        let url = url.clone();
        async move {
            match redis::Client::open(url.as_str()) {
                Ok(c) => c.get_multiplexed_async_connection().await.is_ok(),
                Err(_) => false,
            }
        }
    })
    .await;
    assert!(ready, "own redis-server did not start");

    let metrics = Arc::new(Metrics::new("pricing-oracle").with::<ChainMetrics>());
    let alerter = Alerter::disabled();
    let t = fast();
    let s = ChainStore::connect_with(
        &settings(None, Some(&url), "unused", "k:"),
        metrics.clone(),
        alerter.clone(),
        t,
    )
    .await;
    let ttl = Duration::from_millis(1000);
    let mut lease = s.lease("EQkilled", "me").with_ttl(ttl);
    let renewed = Instant::now();
    let (_, recorded, held) = cycle(&s, &mut lease, 1).await;
    assert!(recorded && held);

    server.kill().unwrap();
    server.wait().unwrap();
    // Generous slack for a loaded CI machine; what matters is that nothing waits for TCP.
    let bound = t.op * 2 + Duration::from_millis(1500);
    let mut n = 0;
    while renewed.elapsed() < ttl * 2 {
        let (took, recorded, held) = cycle(&s, &mut lease, n).await;
        n += 1;
        assert!(took < bound, "cycle {n} took {took:?}");
        assert!(!recorded);
        assert!(!held || renewed.elapsed() < ttl, "held past the lease TTL");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!lease.try_acquire_or_renew().await.held);
    assert_eq!(
        metric(&metrics, "keeper_store_up{store=\"redis\"}"),
        Some(0.0)
    );
    assert!(alerter.is_firing("store_degraded:redis"));

    let mut server = start_redis(port, dir.path());
    let s2 = s.clone();
    let back = eventually(Duration::from_secs(15), || {
        let s = s2.clone();
        async move {
            s.put_hash("price:USDT", &[("price_micro", "7".into())])
                .await
                .is_ok()
        }
    })
    .await;
    let (_, recorded, held) = cycle(&s, &mut lease, 2).await;
    server.kill().unwrap();
    server.wait().unwrap();
    assert!(back, "store did not recover after redis-server restarted");
    assert!(recorded && held);
    assert_eq!(
        metric(&metrics, "keeper_store_up{store=\"redis\"}"),
        Some(1.0)
    );
    assert!(!alerter.is_firing("store_degraded:redis"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rediss_urls_are_usable_and_degrade_when_tls_fails() {
    // The test Redis speaks plain TCP: a TLS handshake against it fails like an outage would.
    let port = url::Url::parse(&env::redis_url())
        .unwrap()
        .port_or_known_default()
        .unwrap();
    let metrics = Arc::new(Metrics::new("pricing-oracle").with::<ChainMetrics>());
    let alerter = Alerter::disabled();
    let s = ChainStore::connect_with(
        &settings(
            None,
            Some(&format!("rediss://127.0.0.1:{port}/0")),
            "unused",
            "x:",
        ),
        metrics.clone(),
        alerter.clone(),
        fast(),
    )
    .await;
    let mut lease = s.lease("EQtls", "me");
    assert_eq!(
        lease.backend(),
        "redis",
        "rediss must not be rejected as unusable"
    );
    assert!(!lease.try_acquire_or_renew().await.held);
    assert_eq!(
        metric(&metrics, "keeper_store_up{store=\"redis\"}"),
        Some(0.0)
    );
    assert!(alerter.is_firing("store_degraded:redis"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_runs_on_spawned_tasks() {
    // Keepers run storage calls inside spawned tasks: each future must be Send + 'static-able.
    let schema = schema_name("spawn");
    let prefix = prefix_name("spawn");
    let s = ChainStore::connect_with(
        &settings(
            Some(&env::pg_url()),
            Some(&env::redis_url()),
            &schema,
            &prefix,
        ),
        Arc::new(Metrics::new("pricing-oracle").with::<ChainMetrics>()),
        Alerter::disabled(),
        fast(),
    )
    .await;
    let t = s.clone();
    let id = tokio::spawn(async move {
        let id = price_records::insert_price_update(
            &t,
            &price("DAI", 3, 1_000_200, UpdateReason::Deviation),
        )
        .await?;
        price_records::set_price_update_status(
            &t,
            id,
            &StatusChange {
                status: UpdateStatus::Confirmed,
                error: None,
                message_hash: None,
                confirmed_at: Some(Utc::now()),
            },
        )
        .await?;
        price_records::latest_price_updates(&t).await?;
        price_records::latest_price_update(&t, "DAI").await?;
        bridge_records::insert_bridge_snapshot(
            &t,
            &snapshot(4, "axelar", 1.0, BridgeStatus::Healthy),
        )
        .await?;
        bridge_records::latest_bridge_snapshot(&t, 4).await?;
        bridge_records::latest_bridge_snapshots(&t).await?;
        t.put_hash("price:DAI", &[("price_micro", "1000200".into())])
            .await?;
        t.get_hash("price:DAI").await?;
        t.publish(price_records::CHANNEL, "{}").await?;
        Ok::<_, StoreError>(id)
    })
    .await
    .unwrap()
    .unwrap();
    let t = s.clone();
    let held = tokio::spawn(async move {
        let mut lease = t.lease("EQspawn", "me");
        let st = lease.try_acquire_or_renew().await;
        lease.release().await.map(|()| st.held)
    })
    .await
    .unwrap()
    .unwrap();
    assert!(held);
    let rec = price_records::latest_price_update(&s, "DAI")
        .await
        .unwrap()
        .unwrap();
    assert_eq!((rec.id, rec.status), (id, UpdateStatus::Confirmed));
    drop(s);
    drop_schema(&schema).await;
}

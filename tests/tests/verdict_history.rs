//! Where the integrity state lives between processes, against the real PostgreSQL and Redis:
//! the bridge keeper's verdict history (PostgreSQL, else Redis, else nowhere) and the pricing
//! keeper's own last publication (PostgreSQL, else Redis, else memory).

use std::sync::Arc;

use bridge_health::confirm::{self, Evidence, History};
use bridge_health::decision::Status;
use bridge_health::signals::Verdict;
use keeper_runtime::alert::Alerter;
use keeper_runtime::config::StorageSettings;
use keeper_runtime::secret::SecretUrl;
use keeper_runtime::telemetry::metrics::Metrics;
use keeper_tests::env;
use keeper_ton::cache::ChainStore;
use pricing_oracle::policy::OnChain;
use pricing_oracle::reference::{Origin, OwnRecord};

async fn store(pg: bool, redis: bool, schema: &str, prefix: &str) -> ChainStore {
    keeper_runtime::install_crypto_provider();
    let settings = StorageSettings {
        database_url: pg.then(|| SecretUrl::shared(env::pg_url())),
        db_schema: schema.to_owned(),
        redis_url: redis.then(|| SecretUrl::shared(env::redis_url())),
        redis_prefix: prefix.to_owned(),
        lease_ttl: 2,
        migrate_on_start: true,
        migrations: bridge_health::records::MIGRATIONS,
    };
    ChainStore::connect(
        &settings,
        Arc::new(Metrics::new("verdict-history")),
        Alerter::disabled(),
    )
    .await
}

/// One critical TVL tick: the bridge is degraded, with one tick counted.
fn one_critical_tick() -> History {
    let mut h = History::default();
    let (status, _) = confirm::confirm(
        &[Evidence {
            signal: "tvl:orbit-bridge",
            kind: "tvl",
            verdict: Some(Verdict::Critical),
        }],
        &mut h,
        2,
    );
    assert_eq!(status, Status::Degraded);
    h
}

#[tokio::test]
async fn verdict_history_survives_in_postgres_else_redis() {
    let schema = env::unique("verdicts");
    let prefix = format!("{}:", env::unique("verdicts"));
    let h = one_critical_tick();
    for (pg, redis) in [(true, true), (false, true)] {
        let s = store(pg, redis, &schema, &prefix).await;
        assert_eq!(bridge_health::history::load(&s, 2).await, None, "pg={pg}");
        bridge_health::history::save(&s, 2, &h).await;
        // A new process (a new store) finds it.
        let again = store(pg, redis, &schema, &prefix).await;
        assert_eq!(
            bridge_health::history::load(&again, 2).await.as_ref(),
            Some(&h),
            "pg={pg}"
        );
        // The next tick confirms from the stored count.
        let mut loaded = bridge_health::history::load(&again, 2).await.unwrap();
        let (status, note) = confirm::confirm(
            &[Evidence {
                signal: "tvl:orbit-bridge",
                kind: "tvl",
                verdict: Some(Verdict::Critical),
            }],
            &mut loaded,
            2,
        );
        assert_eq!(status, Status::Offline, "pg={pg}: {note:?}");
        // Another bridge has its own history; clean up for the Redis-only round.
        assert_eq!(bridge_health::history::load(&again, 3).await, None);
        if pg {
            let pool = sqlx::PgPool::connect(&env::pg_url()).await.unwrap();
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"
            )))
            .execute(&pool)
            .await
            .unwrap();
        }
    }
    // Nothing configured: nothing stored, nothing found.
    let none = store(false, false, &schema, &prefix).await;
    bridge_health::history::save(&none, 2, &h).await;
    assert_eq!(bridge_health::history::load(&none, 2).await, None);
}

#[tokio::test]
async fn own_last_publication_comes_from_redis_else_memory() {
    let prefix = format!("{}:", env::unique("own"));
    let s = store(false, true, "unused", &prefix).await;
    let mut own = OwnRecord::default();
    assert_eq!(own.last(&s, "USDT").await, (None, Origin::Unknown));
    s.put_hash(
        "price:USDT",
        &[
            ("price_micro", "999850".into()),
            ("timestamp", "1767222000".into()),
        ],
    )
    .await
    .unwrap();
    let cached = OnChain {
        price_micro: 999_850,
        timestamp: 1_767_222_000,
    };
    assert_eq!(own.last(&s, "USDT").await, (Some(cached), Origin::Redis));
    // A newer send this process made (confirmed on the wallet, unverified on the oracle) wins.
    let newer = OnChain {
        price_micro: 980_000,
        timestamp: 1_767_222_060,
    };
    own.remember("USDT", newer);
    assert_eq!(own.last(&s, "USDT").await, (Some(newer), Origin::Memory));
    // An older memory does not override the store.
    let mut stale = OwnRecord::default();
    stale.remember(
        "USDT",
        OnChain {
            price_micro: 1,
            timestamp: 1,
        },
    );
    assert_eq!(stale.last(&s, "USDT").await, (Some(cached), Origin::Redis));
    // Garbage in the cache is not a value.
    s.put_hash("price:DAI", &[("price_micro", "lots".into())])
        .await
        .unwrap();
    assert_eq!(own.last(&s, "DAI").await, (None, Origin::Unknown));
}

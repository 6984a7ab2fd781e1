//! `backup_runs` against the real PostgreSQL started by scripts/test.sh: runs from running to
//! success or failure, and the "latest" queries the operators read.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test harness: a failed setup is a failed test

use std::sync::Arc;
use std::time::Duration;

use db_backup::records::{self, BackupOutcome, BackupStatus};
use keeper_runtime::alert::Alerter;
use keeper_runtime::config::StorageSettings;
use keeper_runtime::secret::SecretUrl;
use keeper_runtime::store::{Store, StoreTimeouts};
use keeper_runtime::telemetry::metrics::Metrics;
use keeper_tests::env;
use sqlx::Connection;

#[tokio::test]
async fn backup_runs_with_latest_queries() {
    let schema = env::unique("ks_backup").to_lowercase();
    let settings = StorageSettings {
        database_url: Some(SecretUrl::shared(env::pg_url())),
        migrate_on_start: true,
        db_schema: schema.clone(),
        migrations: db_backup::records::MIGRATIONS,
        ..StorageSettings::default()
    };
    let timeouts = StoreTimeouts {
        connect: Duration::from_secs(5),
        op: Duration::from_secs(5),
        ..StoreTimeouts::default()
    };
    let s = Store::connect_with(
        &settings,
        Arc::new(Metrics::new("db-backup")),
        Alerter::disabled(),
        timeouts,
    )
    .await;
    assert!(s.postgres_up());

    // Backup runs.
    let ok = records::start_backup_run(&s, "protocol").await.unwrap();
    records::finish_backup_run(
        &s,
        ok,
        &BackupOutcome {
            location: Some("/var/backups/protocol-1.dump.zst".into()),
            remote_key: Some("keepers/protocol-1.dump.zst".into()),
            size_bytes: Some(123_456),
            sha256: Some("ef".repeat(32)),
            manifest: Some(serde_json::json!({"database": "protocol", "tables": {"users": 3}})),
            verify_mode: Some("restore".into()),
            verified: Some(true),
            ..BackupOutcome::success()
        },
    )
    .await
    .unwrap();
    let bad = records::start_backup_run(&s, "protocol").await.unwrap();
    records::finish_backup_run(
        &s,
        bad,
        &BackupOutcome::failed("pg_dump 14 is older than server 15"),
    )
    .await
    .unwrap();
    let running = records::start_backup_run(&s, "protocol").await.unwrap();

    let runs = records::latest_backup_runs(&s, None, 10).await.unwrap();
    let ids: Vec<(i64, BackupStatus)> = runs.iter().map(|r| (r.id, r.status)).collect();
    assert_eq!(
        ids,
        [
            (running, BackupStatus::Running),
            (bad, BackupStatus::Failed),
            (ok, BackupStatus::Success)
        ]
    );
    assert!(runs[0].finished_at.is_none() && runs[1].finished_at.is_some());
    let good = records::latest_backup_runs(&s, Some(BackupStatus::Success), 1)
        .await
        .unwrap();
    assert_eq!(good.len(), 1);
    assert_eq!(good[0].id, ok);
    assert_eq!(good[0].size_bytes, Some(123_456));
    assert_eq!(good[0].verified, Some(true));
    assert_eq!(good[0].manifest.as_ref().unwrap()["tables"]["users"], 3);
    let failed = records::latest_backup_runs(&s, Some(BackupStatus::Failed), 5)
        .await
        .unwrap();
    assert_eq!(failed.len(), 1);
    assert!(failed[0].error.as_deref().unwrap().contains("older"));
    assert_eq!(
        records::latest_backup_runs(&s, None, 1)
            .await
            .unwrap()
            .len(),
        1
    );

    drop(s);
    let mut c = sqlx::PgConnection::connect(&env::pg_url()).await.unwrap();
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&mut c)
        .await
        .unwrap();
}

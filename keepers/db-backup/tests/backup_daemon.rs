//! The daemon: backups on the cron schedule, retention after each, metrics and health on the
//! ops server, `backup_failed` and `backup_stale` raised and resolved, a clean stop on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test harness: a failed setup is a failed test

mod support;

use std::time::Duration;

use keeper_tests::probe::{Probe, command};
use support::*;

fn spawn(s: &Setup, extra: &[(&'static str, String)]) -> Probe {
    let mut cmd = command(BIN);
    for (k, v) in s.env_with(extra) {
        cmd.env(k, v);
    }
    Probe::spawn(cmd)
}

async fn ops_addr(p: &Probe) -> String {
    wait_for(Duration::from_secs(30), "the ops server", || {
        p.log_events("ops server listening")
            .first()
            .and_then(|e| e["addr"].as_str().map(str::to_owned))
    })
    .await
}

async fn get(url: &str) -> (u16, String) {
    let r = keeper_runtime::http::client(Duration::from_secs(10))
        .get(url)
        .send()
        .await
        .expect("ops request");
    (r.status().as_u16(), r.text().await.unwrap_or_default())
}

/// The value of a sample line `name value` in a scrape.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_backs_up_on_schedule_serves_metrics_and_stops_on_sigterm() {
    let s = Setup::new("dbb_daemon").await;
    seed(&s.src, 500);
    let mut p = spawn(
        &s,
        &[
            ("BACKUP_SCHEDULE", "*/2 * * * * *".into()),
            ("METRICS_ADDR", "127.0.0.1:0".into()),
        ],
    );
    let base = format!("http://{}", ops_addr(&p).await);

    // Two scheduled backups succeed.
    let mut scrape = String::new();
    for _ in 0..300 {
        scrape = get(&format!("{base}/metrics")).await.1;
        if sample(&scrape, "backup_runs_total{outcome=\"success\"}").unwrap_or(0.0) >= 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        sample(&scrape, "backup_runs_total{outcome=\"success\"}").unwrap_or(0.0) >= 2.0,
        "{scrape}\n{}",
        p.stderr()
    );
    let last = sample(&scrape, "backup_last_success_timestamp_seconds").unwrap();
    assert!(
        (last - chrono::Utc::now().timestamp() as f64).abs() < 120.0,
        "{last}"
    );
    assert!(sample(&scrape, "backup_size_bytes").unwrap() > 0.0);
    assert!(sample(&scrape, "backup_duration_seconds").unwrap() > 0.0);
    assert_eq!(
        sample(&scrape, "backup_runs_total{outcome=\"failure\"}"),
        Some(0.0)
    );
    assert_eq!(get(&format!("{base}/healthz")).await.0, 200);
    assert_eq!(get(&format!("{base}/readyz")).await.0, 200);
    let status: serde_json::Value =
        serde_json::from_str(&get(&format!("{base}/status")).await.1).unwrap();
    assert_eq!(status["last_cycle"]["outcome"], "success", "{status}");

    // Same-day backups: GFS keeps one per day, so retention left exactly one.
    let manifests: Vec<String> = s
        .files()
        .into_iter()
        .filter(|f| f.ends_with(".manifest.json"))
        .collect();
    assert_eq!(manifests.len(), 1, "{:?}", s.files());

    p.signal("TERM");
    let status = p.wait(Duration::from_secs(60)).await;
    assert_eq!(status.code(), Some(0), "{}", p.stderr());
    assert!(
        !s.files().iter().any(|f| f.ends_with(".tmp")),
        "{:?}",
        s.files()
    );
    let rows = runs(&s.records, &s.src.name);
    assert!(
        rows.len() >= 2 && rows.iter().all(|r| r.0 == "success"),
        "{rows:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_raises_and_resolves_backup_failed_and_backup_stale() {
    let s = Setup::new("dbb_stale").await;
    // The source does not exist yet: every run fails.
    let name = format!("{}_late", s.src.name);
    let mut p = spawn(
        &s,
        &[
            ("DATABASE_URL", url_for(&name)),
            ("BACKUP_SCHEDULE", "* * * * * *".into()),
            ("BACKUP_STALE_AFTER", "2".into()),
            ("METRICS_ADDR", "127.0.0.1:0".into()),
        ],
    );
    let base = format!("http://{}", ops_addr(&p).await);
    for alert in ["backup_failed", "backup_stale"] {
        let hit = s
            .sink
            .wait_until(Duration::from_secs(60), |r| {
                r.json()
                    .is_some_and(|j| j["alertname"] == alert && j["status"] == "firing")
            })
            .await;
        assert!(
            hit.is_some(),
            "{alert} not raised: {:?}\n{}",
            s.sink.requests(),
            p.stderr()
        );
    }
    assert_eq!(get(&format!("{base}/readyz")).await.0, 503);
    let scrape = get(&format!("{base}/metrics")).await.1;
    assert!(
        sample(&scrape, "backup_runs_total{outcome=\"failure\"}").unwrap() >= 1.0,
        "{scrape}"
    );
    assert!(s.files().is_empty(), "{:?}", s.files());

    // The database appears: the next backup succeeds and both alerts resolve.
    psql(
        &keeper_tests::env::pg_url(),
        &format!("CREATE DATABASE \"{name}\""),
    );
    let late = TestDb {
        name: name.clone(),
        url: url_for(&name),
    };
    late.sql("CREATE TABLE t (x int); INSERT INTO t VALUES (1)");
    for alert in ["backup_failed", "backup_stale"] {
        let hit = s
            .sink
            .wait_until(Duration::from_secs(60), |r| {
                r.json()
                    .is_some_and(|j| j["alertname"] == alert && j["status"] == "resolved")
            })
            .await;
        assert!(
            hit.is_some(),
            "{alert} not resolved: {:?}\n{}",
            s.sink.requests(),
            p.stderr()
        );
    }
    assert_eq!(get(&format!("{base}/readyz")).await.0, 200);
    p.signal("TERM");
    assert_eq!(
        p.wait(Duration::from_secs(60)).await.code(),
        Some(0),
        "{}",
        p.stderr()
    );
    let rows = runs(&s.records, &name);
    assert_eq!(
        rows.first().map(|r| r.0.as_str()),
        Some("failed"),
        "{rows:?}"
    );
    assert!(rows.iter().any(|r| r.0 == "success"), "{rows:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_gives_a_running_backup_the_grace_period_then_stops_it_cleanly() {
    let s = Setup::new("dbb_dterm").await;
    s.src
        .sql("CREATE TABLE busy (x int); INSERT INTO busy VALUES (1)");
    let holder = hold_table_lock(&s.src, "busy").await;
    let mut p = spawn(
        &s,
        &[
            ("BACKUP_SCHEDULE", "* * * * * *".into()),
            ("METRICS_ADDR", "127.0.0.1:0".into()),
            ("SHUTDOWN_GRACE", "2".into()),
        ],
    );
    someone_waits_on(&s.src, "busy").await;
    let asked = std::time::Instant::now();
    p.signal("TERM");
    let status = p.wait(Duration::from_secs(60)).await;
    assert_eq!(status.code(), Some(0), "{}", p.stderr());
    // It waited for the grace period, then stopped the backup and cleaned up.
    assert!(
        asked.elapsed() >= Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    assert!(s.files().is_empty(), "{:?}", s.files());
    let rows = runs(&s.records, &s.src.name);
    assert_eq!(
        rows.last().map(|r| r.0.as_str()),
        Some("failed"),
        "{rows:?}"
    );
    assert!(rows.last().unwrap().1.contains("grace period"), "{rows:?}");
    wait_for(
        Duration::from_secs(10),
        "the backup lock to be released",
        || (!backup_lock_held(&s.src)).then_some(()),
    )
    .await;
    drop(holder);
}

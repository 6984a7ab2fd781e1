//! Restore drills: `verify --mode restore` records its duration and a per-table row-count diff
//! in the manifest and as metrics; the daemon runs drills on `BACKUP_DRILL_CRON`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test harness: a failed setup is a failed test

mod support;

use std::time::Duration;

use keeper_tests::env;
use keeper_tests::probe::{Probe, command};
use support::*;

/// The value of a sample line `name value` in a scrape or textfile.
fn sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn manifest_of(s: &Setup) -> (std::path::PathBuf, serde_json::Value) {
    let name = s
        .files()
        .into_iter()
        .find(|f| f.ends_with(".manifest.json"))
        .unwrap();
    let path = s.dir.path().join(name);
    let m = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    (path, m)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_restore_records_duration_diff_and_metrics() {
    let s = Setup::new("dbb_drill").await;
    seed(&s.src, 700);
    let tables = s.src.checksums().len();
    run_ok(s.cmd(&["--once"], &[])).await;
    let textfile = s.dir.path().join("metrics").join("drill.prom");
    std::fs::create_dir_all(textfile.parent().unwrap()).unwrap();
    let extra = [
        ("BACKUP_VERIFY_DATABASE_URL", env::pg_url()),
        ("METRICS_TEXTFILE", textfile.display().to_string()),
    ];
    let verify = || {
        s.cmd(
            &[
                "verify", "--from", "latest", "--mode", "restore", "--output", "json",
            ],
            &extra,
        )
    };

    let v = json(&run_ok(verify()).await);
    assert_eq!(v["ok"], true, "{v}");
    assert!(v["duration_seconds"].as_f64().unwrap() > 0.0, "{v}");
    assert_eq!(v["tables_checked"], tables, "{v}");
    assert_eq!(v["row_diff"], serde_json::json!([]), "{v}");
    let (path, m) = manifest_of(&s);
    assert_eq!(m["verification"], v, "the manifest records the same");
    let prom = std::fs::read_to_string(&textfile).unwrap();
    assert_eq!(
        sample(&prom, "backup_restore_verified"),
        Some(1.0),
        "{prom}"
    );
    let d = sample(&prom, "backup_restore_duration_seconds").unwrap();
    assert!(
        (d - v["duration_seconds"].as_f64().unwrap()).abs() < 1e-6,
        "{prom}"
    );

    // A manifest whose count for one table is one too many: the drill fails and says where.
    let mut m = m;
    let n = m["row_counts"]["public.accounts"].as_i64().unwrap();
    m["row_counts"]["public.accounts"] = (n + 1).into();
    std::fs::write(&path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    let (code, out, err) = run(verify()).await;
    assert_eq!(code, 1, "{err}");
    let v = json(&out);
    assert_eq!(v["ok"], false, "{v}");
    assert_eq!(
        v["row_diff"],
        serde_json::json!([{"table": "public.accounts", "manifest_rows": n + 1, "restored_rows": n}]),
        "{v}"
    );
    let (_, m) = manifest_of(&s);
    assert_eq!(m["verification"]["ok"], false);
    assert_eq!(m["verification"]["row_diff"], v["row_diff"]);
    let prom = std::fs::read_to_string(&textfile).unwrap();
    assert_eq!(
        sample(&prom, "backup_restore_verified"),
        Some(0.0),
        "{prom}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_runs_drills_on_their_own_schedule() {
    let s = Setup::new("dbb_drilld").await;
    seed(&s.src, 300);
    run_ok(s.cmd(&["--once"], &[])).await;
    let mut cmd = command(BIN);
    for (k, v) in s.env_with(&[
        // Backups once a year: everything below comes from drills.
        ("BACKUP_SCHEDULE", "0 0 0 1 1 *".into()),
        ("BACKUP_DRILL_CRON", "*/2 * * * * *".into()),
        ("BACKUP_VERIFY_DATABASE_URL", env::pg_url()),
        ("METRICS_ADDR", "127.0.0.1:0".into()),
    ]) {
        cmd.env(k, v);
    }
    let mut p = Probe::spawn(cmd);
    let addr = wait_for(Duration::from_secs(30), "the ops server", || {
        p.log_events("ops server listening")
            .first()
            .and_then(|e| e["addr"].as_str().map(str::to_owned))
    })
    .await;
    let client = keeper_runtime::http::client(Duration::from_secs(10));
    let mut scrape = String::new();
    for _ in 0..300 {
        scrape = client
            .get(format!("http://{addr}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if sample(&scrape, "backup_restore_verified") == Some(1.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        sample(&scrape, "backup_restore_verified"),
        Some(1.0),
        "{scrape}\n{}",
        p.stderr()
    );
    assert!(sample(&scrape, "backup_restore_duration_seconds").unwrap() > 0.0);
    // The metric is set just before the log line is written.
    wait_for(Duration::from_secs(10), "the drill's log line", || {
        (!p.log_events("restore drill passed").is_empty()).then_some(())
    })
    .await;
    // No backup ran: the drills restored the one made before.
    assert_eq!(
        sample(&scrape, "backup_runs_total{outcome=\"success\"}"),
        Some(0.0)
    );
    let (_, m) = manifest_of(&s);
    assert_eq!(m["verification"]["mode"], "restore", "{m}");
    assert_eq!(m["verification"]["ok"], true, "{m}");
    p.signal("TERM");
    let status = p.wait(Duration::from_secs(60)).await;
    assert_eq!(status.code(), Some(0), "{}", p.stderr());
}

//! Backups that work: dump → restore gives identical content; `latest`; a corrupt archive is
//! caught before a byte is restored; the S3 round trip (multipart, keep_local off, scratch
//! verification); one-shot metrics; GFS retention over a simulated calendar, local and remote.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test harness: a failed setup is a failed test

mod support;

use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_then_restore_gives_identical_content() {
    let s = Setup::new("dbb_rt").await;
    seed(&s.src, 3000);
    let before = s.src.checksums();
    let textfile = s.dir.path().join("metrics").join("backup.prom");
    std::fs::create_dir_all(textfile.parent().unwrap()).unwrap();
    let out = run_ok(s.cmd(
        &["--once", "--output", "json"],
        &[
            ("METRICS_TEXTFILE", textfile.display().to_string()),
            ("PUSHGATEWAY_URL", s.sink.url()),
        ],
    ))
    .await;
    let report = json(&out);
    assert_eq!(report["outcome"], "success", "{report}");
    let m = &report["backup"];
    let name = m["file"]
        .as_str()
        .unwrap()
        .trim_end_matches(".dump.zst")
        .to_owned();
    assert!(name.starts_with(&format!("{}-", s.src.name)), "{name}");

    // Archive, globals, their sidecars (sha256sum format, matching the files) and the
    // manifest; nothing else.
    let dump = s.dir.path().join(format!("{name}.dump.zst"));
    assert_eq!(
        s.files()
            .into_iter()
            .filter(|f| f != "metrics")
            .collect::<Vec<_>>(),
        vec![
            format!("{name}.dump.zst"),
            format!("{name}.dump.zst.sha256"),
            format!("{name}.globals.sql.zst"),
            format!("{name}.globals.sql.zst.sha256"),
            format!("{name}.manifest.json")
        ]
    );
    let globals = s.dir.path().join(format!("{name}.globals.sql.zst"));
    let gsha = sha256sum(&globals);
    assert_eq!(m["globals"]["sha256"], gsha, "{m}");
    assert_eq!(m["globals"]["file"], format!("{name}.globals.sql.zst"));
    assert_eq!(m["globals"]["role_passwords"], false);
    assert_eq!(
        std::fs::read_to_string(s.dir.path().join(format!("{name}.globals.sql.zst.sha256")))
            .unwrap(),
        format!("{gsha}  {name}.globals.sql.zst\n")
    );
    let sql = String::from_utf8(zstd::decode_all(std::fs::File::open(&globals).unwrap()).unwrap())
        .unwrap();
    assert!(sql.contains("CREATE ROLE postgres;"), "{sql}");
    assert!(!sql.contains("PASSWORD '"), "role passwords in the globals");
    let sha = sha256sum(&dump);
    assert_eq!(m["sha256"], sha);
    let sidecar =
        std::fs::read_to_string(s.dir.path().join(format!("{name}.dump.zst.sha256"))).unwrap();
    assert_eq!(sidecar, format!("{sha}  {name}.dump.zst\n"));
    assert_eq!(m["size_bytes"], std::fs::metadata(&dump).unwrap().len());
    assert_eq!(m["verification"]["mode"], "list");
    assert_eq!(m["verification"]["ok"], true);
    assert!(
        m["server_version"]
            .as_str()
            .unwrap()
            .starts_with(char::is_numeric)
    );
    assert!(m["pg_dump_version"].as_str().unwrap().contains("pg_dump"));
    // Row counts of the manifest are the source's exact counts.
    for (table, (count, _)) in &before {
        assert_eq!(m["row_counts"][table], *count, "{table} in {m}");
    }
    assert_eq!(m["row_counts"].as_object().unwrap().len(), before.len());

    // Restore into a new database: identical content, table by table.
    let target = TestDb::create("dbb_rt_target");
    let out = run_ok(s.cmd(
        &[
            "restore",
            "--from",
            dump.to_str().unwrap(),
            "--target-database-url",
            &target.url,
        ],
        &[],
    ))
    .await;
    assert!(out.contains("counts equal to the manifest"), "{out}");
    assert_eq!(target.checksums(), before);
    // Sequences, views and the materialized view came back too.
    assert_eq!(target.sql("SELECT last_value FROM counter"), "42");
    assert_eq!(
        target.sql("SELECT count(*) FROM rich"),
        s.src.sql("SELECT count(*) FROM rich")
    );
    assert_eq!(target.sql("SELECT sum(count) FROM tiers"), "3000");

    // Recorded as a verified success with the manifest's digest.
    let rows = runs(&s.records, &s.src.name);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (rows[0].0.as_str(), rows[0].2.as_str(), rows[0].3.as_str()),
        ("success", sha.as_str(), "true")
    );

    // One-shot metrics: textfile and Pushgateway carry the real last-success time.
    let text = std::fs::read_to_string(&textfile).unwrap();
    let finished = chrono::DateTime::parse_from_rfc3339(m["finished_at"].as_str().unwrap())
        .unwrap()
        .timestamp();
    assert!(
        text.contains(&format!(
            "backup_last_success_timestamp_seconds {finished}\n"
        )),
        "{text}"
    );
    assert!(
        text.contains("backup_runs_total{outcome=\"success\"} 1\n"),
        "{text}"
    );
    let pushed = s
        .sink
        .requests_to(&format!("/metrics/job/db-backup/database/{}", s.src.name));
    assert_eq!(pushed.len(), 1, "{:?}", s.sink.requests());
    assert_eq!(pushed[0].method, "POST");
    assert!(
        pushed[0]
            .text()
            .contains(&format!("backup_size_bytes {}", m["size_bytes"]))
    );

    // `list` shows it as a complete, verified local backup.
    let listed = json(&run_ok(s.cmd(&["list", "--output", "json"], &[])).await);
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(listed[0]["name"], name);
    assert_eq!(listed[0]["status"], "complete");
    assert_eq!(listed[0]["verification"]["ok"], true);
    assert!(s.alerts("backup_failed", "firing").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restore_latest_takes_the_newest_backup() {
    let s = Setup::new("dbb_latest").await;
    s.src
        .sql("CREATE TABLE marker (v text); INSERT INTO marker VALUES ('first')");
    // Same-day backups: GFS alone would keep only the newest of the day.
    let keep = [("BACKUP_KEEP_LAST", "5".to_owned())];
    run_ok(s.cmd(&["--once"], &keep)).await;
    s.src
        .sql("UPDATE marker SET v = 'second'; INSERT INTO marker VALUES ('more')");
    run_ok(s.cmd(&["--once", "--output", "json"], &keep)).await;
    let listed = json(&run_ok(s.cmd(&["list", "--output", "json"], &[])).await);
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");

    let target = TestDb::create("dbb_latest_t");
    run_ok(s.cmd(
        &["restore", "--from", "latest"],
        &[("TARGET_DATABASE_URL", target.url.clone())],
    ))
    .await;
    assert_eq!(
        target.sql("SELECT string_agg(v, ',' ORDER BY v) FROM marker"),
        "more,second"
    );

    // By name, the older one.
    let older = listed[1]["name"].as_str().unwrap().to_owned();
    let target2 = TestDb::create("dbb_latest_t2");
    run_ok(s.cmd(
        &[
            "restore",
            "--from",
            &older,
            "--target-database-url",
            &target2.url,
        ],
        &[],
    ))
    .await;
    assert_eq!(
        target2.sql("SELECT string_agg(v, ',') FROM marker"),
        "first"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_archive_is_caught_before_anything_is_restored() {
    let s = Setup::new("dbb_corrupt").await;
    seed(&s.src, 2000);
    run_ok(s.cmd(&["--once"], &[])).await;
    let dump = only(s.dir.path(), ".dump.zst");
    // Flip one byte in the middle: same size, different content.
    let mut bytes = std::fs::read(&dump).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x5a;
    std::fs::write(&dump, &bytes).unwrap();

    let target = TestDb::create("dbb_corrupt_t");
    let (code, out, err) = run(s.cmd(
        &[
            "restore",
            "--from",
            "latest",
            "--target-database-url",
            &target.url,
        ],
        &[],
    ))
    .await;
    assert_eq!(code, 1, "stdout: {out}\nstderr: {err}");
    assert!(err.contains("checksum mismatch"), "{err}");
    assert!(
        target.tables().is_empty(),
        "restored despite the bad checksum: {:?}",
        target.tables()
    );

    // `verify` reports it, exits 1, and the manifest records the failed verification.
    let (code, out, _) = run(s.cmd(&["verify", "--from", "latest", "--output", "json"], &[])).await;
    assert_eq!(code, 1, "{out}");
    let v = json(&out);
    assert_eq!(v["ok"], false);
    assert!(
        v["detail"].as_str().unwrap().contains("checksum mismatch"),
        "{v}"
    );
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(only(s.dir.path(), ".manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["verification"]["ok"], false);

    // A file with neither manifest nor sidecar beside it is refused outright.
    let loose = s.dir.path().join("loose.dump.zst");
    std::fs::copy(&dump, &loose).unwrap();
    let (code, _, err) = run(s.cmd(
        &[
            "restore",
            "--from",
            loose.to_str().unwrap(),
            "--target-database-url",
            &target.url,
        ],
        &[],
    ))
    .await;
    assert_eq!(code, 1);
    assert!(err.contains("no manifest or .sha256 sidecar"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_round_trip_multipart_remote_only_with_scratch_verification() {
    let s = Setup::new("dbb_s3").await;
    seed(&s.src, 1000);
    add_bulk(&s.src, 12);
    let before = s.src.checksums();
    let bucket = s3::bucket();
    s3::create_bucket(&bucket).await;
    let mut extra = s3::env(&keeper_tests::env::s3_url(), &bucket, "prod/db");
    extra.extend([
        ("BACKUP_KEEP_LOCAL", "false".to_owned()),
        ("BACKUP_S3_PART_SIZE_MIB", "5".to_owned()),
        ("BACKUP_VERIFY", "restore".to_owned()),
        ("BACKUP_VERIFY_DATABASE_URL", keeper_tests::env::pg_url()),
    ]);
    let report = json(&run_ok(s.cmd(&["--once", "--output", "json"], &extra)).await);
    assert_eq!(report["outcome"], "success", "{report}");
    let m = &report["backup"];
    assert_eq!(m["verification"]["mode"], "restore");
    assert!(
        m["verification"]["detail"]
            .as_str()
            .unwrap()
            .contains("counts equal"),
        "{m}"
    );
    let name = m["file"]
        .as_str()
        .unwrap()
        .trim_end_matches(".dump.zst")
        .to_owned();

    // Remote: the five objects under the prefix; the archive went up in several parts.
    let keys = s3::keys(&bucket, "prod/db/").await;
    assert_eq!(
        keys,
        vec![
            format!("prod/db/{name}.dump.zst"),
            format!("prod/db/{name}.dump.zst.sha256"),
            format!("prod/db/{name}.globals.sql.zst"),
            format!("prod/db/{name}.globals.sql.zst.sha256"),
            format!("prod/db/{name}.manifest.json"),
        ]
    );
    let etag = s3::etag(&bucket, &format!("prod/db/{name}.dump.zst")).await;
    assert!(
        etag.ends_with("-3"),
        "expected a 3-part upload, ETag {etag}"
    );
    assert!(s3::open_uploads(&bucket).await.is_empty());
    let remote_manifest: serde_json::Value =
        serde_json::from_slice(&s3::get(&bucket, &format!("prod/db/{name}.manifest.json")).await)
            .unwrap();
    assert_eq!(remote_manifest["sha256"], m["sha256"]);
    // Local copy not kept (temp files gone too); no scratch database left behind.
    assert!(s.files().is_empty(), "{:?}", s.files());
    assert_eq!(
        psql(
            &keeper_tests::env::pg_url(),
            "SELECT count(*) FROM pg_database WHERE datname LIKE 'db\\_backup\\_verify\\_%'"
        ),
        "0"
    );

    let listed = json(&run_ok(s.cmd(&["list", "--output", "json"], &extra)).await);
    assert_eq!(listed[0]["status"], "complete", "{listed}");
    assert!(listed[0]["local"].is_null());
    assert_eq!(
        listed[0]["remote"],
        format!("s3://{bucket}/prod/db/{name}.dump.zst")
    );

    // Restore by S3 URL: downloaded, checked, restored, identical.
    let target = TestDb::create("dbb_s3_t");
    run_ok(s.cmd(
        &[
            "restore",
            "--from",
            &format!("s3://{bucket}/prod/db/{name}.dump.zst"),
            "--target-database-url",
            &target.url,
        ],
        &extra,
    ))
    .await;
    assert_eq!(target.checksums(), before);
    assert!(
        s.files().is_empty(),
        "download not cleaned: {:?}",
        s.files()
    );

    // Re-verify remotely with `list`; the remote manifest records it.
    let v = json(
        &run_ok(s.cmd(
            &[
                "verify", "--from", &name, "--mode", "list", "--output", "json",
            ],
            &extra,
        ))
        .await,
    );
    assert_eq!(
        (v["mode"].as_str(), v["ok"].as_bool()),
        (Some("list"), Some(true))
    );
    let remote_manifest: serde_json::Value =
        serde_json::from_slice(&s3::get(&bucket, &format!("prod/db/{name}.manifest.json")).await)
            .unwrap();
    assert_eq!(remote_manifest["verification"]["mode"], "list");
    assert_eq!(runs(&s.records, &s.src.name)[0].3, "true");
}

/// A manifest for a fabricated backup at `at` (retention reads only names and manifests).
fn fake_manifest(db: &str, at: chrono::DateTime<chrono::Utc>, verified: bool) -> (String, Vec<u8>) {
    let base = format!("{db}-{}", at.format("%Y%m%dT%H%M%SZ"));
    let verification = if verified {
        serde_json::json!({"mode": "list", "ok": true, "at": at, "detail": "test"})
    } else {
        serde_json::Value::Null
    };
    let m = serde_json::json!({
        "format": 1, "name": db, "database": db, "file": format!("{base}.dump.zst"),
        "server_version": "15", "server_version_num": 150000, "pg_dump_version": "pg_dump 15",
        "snapshot": "x", "started_at": at, "finished_at": at, "size_bytes": 4, "dump_bytes": 4,
        "sha256": "0".repeat(64),
        "compression": {"algorithm": "zstd", "level": 1, "threads": 1},
        "row_counts": {}, "verification": verification, "tool": "test"
    });
    (base, serde_json::to_vec(&m).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_keeps_the_gfs_set_over_a_simulated_calendar() {
    use chrono::{Duration as D, TimeZone, Utc};
    let s = Setup::new("dbb_gfs").await;
    let bucket = s3::bucket();
    s3::create_bucket(&bucket).await;
    let extra = s3::env(&keeper_tests::env::s3_url(), &bucket, "gfs");
    let db = s.src.name.clone();
    // 2026-05-01 .. 2026-12-31, a backup every 6 h; one verified backup in April stands in for
    // "the newest verified" (the later ones are unverified).
    let start = Utc.with_ymd_and_hms(2026, 5, 1, 0, 0, 0).unwrap();
    let mut all = vec![(Utc.with_ymd_and_hms(2026, 4, 10, 12, 0, 0).unwrap(), true)];
    let mut t = start;
    while t < Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap() {
        all.push((t, false));
        t += D::hours(6);
    }
    // Another database's backups in the same place are not touched.
    all.push((start, false));
    for (i, (at, verified)) in all.iter().enumerate() {
        let owner = if i == all.len() - 1 {
            "otherdb"
        } else {
            db.as_str()
        };
        let (base, manifest) = fake_manifest(owner, *at, *verified);
        std::fs::write(s.dir.path().join(format!("{base}.dump.zst")), b"fake").unwrap();
        std::fs::write(
            s.dir.path().join(format!("{base}.manifest.json")),
            &manifest,
        )
        .unwrap();
        if i % 4 == 0 || i == all.len() - 1 || *verified {
            // Remote holds every fourth (one a day) plus the specials.
            s3::put(&bucket, &format!("gfs/{base}.dump.zst"), b"fake".to_vec()).await;
            s3::put(&bucket, &format!("gfs/{base}.manifest.json"), manifest).await;
        }
    }
    let local_before = s.files().len();

    // Dry run: the plan, nothing deleted.
    let plan = json(&run_ok(s.cmd(&["prune", "--dry-run", "--output", "json"], &extra)).await);
    assert_eq!(plan["dry_run"], true);
    assert_eq!(s.files().len(), local_before);
    let kept: Vec<&str> = plan["local"]["keep"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    let stamp = |y, mo, d, h| format!("{db}-{y}{mo:02}{d:02}T{h:02}0000Z");
    let expect_local = vec![
        stamp(2026, 12, 31, 18), // newest; daily, weekly (ISO week 53), monthly (Dec)
        stamp(2026, 12, 30, 18),
        stamp(2026, 12, 29, 18),
        stamp(2026, 12, 28, 18),
        stamp(2026, 12, 27, 18), // daily + weekly 52
        stamp(2026, 12, 26, 18),
        stamp(2026, 12, 25, 18),
        stamp(2026, 12, 20, 18), // weekly 51
        stamp(2026, 12, 13, 18), // weekly 50
        stamp(2026, 11, 30, 18), // monthly
        stamp(2026, 10, 31, 18),
        stamp(2026, 9, 30, 18),
        stamp(2026, 8, 31, 18),
        stamp(2026, 7, 31, 18),
        stamp(2026, 4, 10, 12), // newest verified
    ];
    assert_eq!(kept, expect_local);
    let deletions = plan["local"]["delete"].as_array().unwrap().len();
    assert_eq!(deletions, all.len() - 1 - expect_local.len());
    // Remote holds the 18:00 backup of each day (and the specials): the same keepers.
    let remote_kept: Vec<&str> = plan["remote"]["keep"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(remote_kept, expect_local);

    // The real prune deletes exactly the planned set, in both places.
    let done = json(&run_ok(s.cmd(&["prune", "--output", "json"], &extra)).await);
    assert!(done["errors"].as_array().unwrap().is_empty(), "{done}");
    let mut left: Vec<String> = s
        .files()
        .into_iter()
        .filter_map(|f| f.strip_suffix(".manifest.json").map(str::to_owned))
        .filter(|f| f.starts_with(&db))
        .collect();
    left.sort_by(|a, b| b.cmp(a));
    assert_eq!(left, expect_local);
    assert!(s.files().iter().any(|f| f.starts_with("otherdb-")));
    // No archive without its manifest was left behind.
    assert_eq!(s.files().len(), 2 * (expect_local.len() + 1));
    let remote_left: Vec<String> = s3::keys(&bucket, "gfs/")
        .await
        .into_iter()
        .filter_map(|k| {
            k.strip_suffix(".manifest.json")
                .map(|b| b.trim_start_matches("gfs/").to_owned())
        })
        .filter(|k| k.starts_with(&db))
        .collect();
    assert_eq!(remote_left.len(), expect_local.len(), "{remote_left:?}");
    assert_eq!(s3::keys(&bucket, "gfs/").await.len(), 2 * 16);

    // Pruning again changes nothing.
    let again = json(&run_ok(s.cmd(&["prune", "--output", "json"], &extra)).await);
    assert!(again["local"]["delete"].as_array().unwrap().is_empty());
    assert!(again["remote"]["delete"].as_array().unwrap().is_empty());
}

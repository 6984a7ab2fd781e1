//! Backups that fail, and fail safely: no partial backup is ever listed, temp files are cleaned,
//! the run is recorded as failed, `backup_failed` fires, exit 1. Also: one run at a time, an
//! old `pg_dump` refused, an upload failure aborted with the local copy kept.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test harness: a failed setup is a failed test

mod support;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use support::*;

/// Waits until a run's temp archive exists and has data: the dump is under way.
async fn dump_in_progress(s: &Setup) -> String {
    wait_for(Duration::from_secs(60), "the temp archive to grow", || {
        s.files().into_iter().find(|f| {
            f.starts_with('.')
                && f.ends_with(".dump.zst.tmp")
                && std::fs::metadata(s.dir.path().join(f)).is_ok_and(|m| m.len() > 0)
        })
    })
    .await
}

async fn assert_failed_cleanly(s: &Setup, label: &str, code: i32, err: &str, needle: &str) {
    assert_eq!(code, 1, "stderr: {err}");
    assert!(err.contains(needle), "{needle:?} not in: {err}");
    assert!(s.files().is_empty(), "left behind: {:?}", s.files());
    let listed = json(&run_ok(s.cmd(&["list", "--output", "json"], &[])).await);
    assert_eq!(listed, serde_json::json!([]));
    let rows = runs(&s.records, label);
    let last = rows.last().expect("run recorded");
    assert_eq!(last.0, "failed", "{rows:?}");
    assert!(
        last.1.contains(needle),
        "record error {:?} lacks {needle:?}",
        last.1
    );
    let hit = s
        .sink
        .wait_until(Duration::from_secs(10), |r| {
            r.json().is_some_and(|j| {
                j["alertname"] == "backup_failed"
                    && j["status"] == "firing"
                    && j["keeper"] == "db-backup"
                    && j["labels"]["database"] == label
            })
        })
        .await;
    assert!(
        hit.is_some(),
        "no backup_failed alert: {:?}",
        s.sink.requests()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_database_and_unknown_role_fail_loudly_without_leaking_the_password() {
    let s = Setup::new("dbb_bad").await;
    let missing = format!("{}_missing", s.src.name);
    let (code, _, err) = run(s.cmd(&["--once"], &[("DATABASE_URL", url_for(&missing))])).await;
    assert_failed_cleanly(&s, &missing, code, &err, "does not exist").await;

    let mut u = url::Url::parse(&s.src.url).unwrap();
    u.set_username("no_such_role_dbb").unwrap();
    u.set_password(Some("s3cretpw")).unwrap();
    let (code, out, err) = run(s.cmd(&["--once"], &[("DATABASE_URL", u.to_string())])).await;
    assert_failed_cleanly(&s, &s.src.name, code, &err, "no_such_role_dbb").await;
    assert!(!format!("{out}{err}").contains("s3cretpw"), "{err}");
    assert!(
        !s.sink
            .requests()
            .iter()
            .any(|r| r.text().contains("s3cretpw")),
        "password in an alert"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_failing_mid_dump_like_a_full_disk_leaves_nothing() {
    let s = Setup::new("dbb_full").await;
    add_bulk(&s.src, 4);
    // A file-size limit of 200 KiB makes a write fail mid-stream (EFBIG), the way a full disk
    // fails with ENOSPC; SIGXFSZ is ignored so the error reaches the job instead of killing it.
    let cmd = db_backup_in_shell("trap '' XFSZ; ulimit -f 400", &["--once"], &s.env());
    let (code, _, err) = run(cmd).await;
    assert_failed_cleanly(&s, &s.src.name, code, &err, "File too large").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_dump_dying_mid_dump_leaves_nothing() {
    let s = Setup::new("dbb_term").await;
    add_bulk(&s.src, 40);
    let child = s.cmd(&["--once"], &[]).output();
    let task = tokio::spawn(child);
    // Terminate pg_dump's server session while it is copying the big table.
    let db = s.src.name.clone();
    let terminated = wait_for(Duration::from_secs(60), "pg_dump's COPY", || {
        let pid = psql(
            &keeper_tests::env::pg_url(),
            &format!(
                "SELECT pid FROM pg_stat_activity WHERE datname = '{db}' \
                 AND query LIKE 'COPY public.bulk%' LIMIT 1"
            ),
        );
        (!pid.is_empty()).then_some(pid)
    })
    .await;
    psql(
        &keeper_tests::env::pg_url(),
        &format!("SELECT pg_terminate_backend({terminated})"),
    );
    let out = task.await.unwrap().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_failed_cleanly(
        &s,
        &s.src.name,
        out.status.code().unwrap_or(-1),
        &err,
        "pg_dump",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_dump_lists_nothing_and_the_next_run_cleans_up() {
    let s = Setup::new("dbb_kill").await;
    add_bulk(&s.src, 40);
    let mut child = s
        .cmd(&["--once"], &[])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let temp = dump_in_progress(&s).await;
    let dumps = processes_with(&["pg_dump", "--snapshot=", &s.src.name]);
    assert_eq!(dumps.len(), 1, "one pg_dump for this database");
    child.start_kill().unwrap();
    let status = child.wait().await.unwrap();
    assert!(!status.success());
    // pg_dump dies with its parent (parent-death signal), not when its pipe next fills.
    wait_for(
        Duration::from_secs(10),
        "pg_dump to die with db-backup",
        || (!alive(dumps[0])).then_some(()),
    )
    .await;

    // Only the temp file is there; nothing is listed; the run is still "running" in records.
    assert_eq!(s.files(), vec![temp.clone()]);
    let listed = json(&run_ok(s.cmd(&["list", "--output", "json"], &[])).await);
    assert_eq!(listed, serde_json::json!([]));
    assert_eq!(runs(&s.records, &s.src.name)[0].0, "running");

    // The next run (it may have to wait for the server to notice the dead session's lock)
    // removes the leftover and publishes a complete backup.
    let out = run_ok(s.cmd(
        &["--once", "--output", "json"],
        &[("BACKUP_LOCK_TIMEOUT", "60".into())],
    ))
    .await;
    let name = json(&out)["backup"]["file"].as_str().unwrap().to_owned();
    let base = name.trim_end_matches(".dump.zst");
    assert_eq!(
        s.files(),
        vec![
            name.clone(),
            format!("{name}.sha256"),
            format!("{base}.globals.sql.zst"),
            format!("{base}.globals.sql.zst.sha256"),
            format!("{base}.manifest.json")
        ]
    );
    let rows = runs(&s.records, &s.src.name);
    assert_eq!(rows.len(), 2, "{rows:?}");
    assert_eq!(rows[0].0, "failed");
    assert!(rows[0].1.contains("interrupted"), "{rows:?}");
    assert_eq!(rows[1].0, "success");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_db_backup_takes_a_pg_dump_queued_on_a_lock_along() {
    // pg_dump queued on a lock writes nothing, so no broken pipe would ever stop it: only the
    // parent-death signal does.
    let s = Setup::new("dbb_orphan").await;
    s.src.sql("CREATE TABLE held (x int)");
    let holder = hold_table_lock(&s.src, "held").await;
    let mut child = s
        .cmd(&["--once"], &[("BACKUP_LOCK_WAIT_TIMEOUT", "600".into())])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let pg_dump_waits = || {
        s.src.sql(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock' AND query LIKE 'LOCK TABLE%held%'",
        )
    };
    wait_for(
        Duration::from_secs(30),
        "pg_dump to queue on the lock",
        || (pg_dump_waits() == "1").then_some(()),
    )
    .await;
    let dumps = processes_with(&["pg_dump", "--snapshot=", &s.src.name]);
    assert_eq!(dumps.len(), 1, "one pg_dump for this database");
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    wait_for(
        Duration::from_secs(10),
        "pg_dump to die with db-backup",
        || (!alive(dumps[0])).then_some(()),
    )
    .await;
    wait_for(Duration::from_secs(10), "its session to end", || {
        (pg_dump_waits() == "0").then_some(())
    })
    .await;
    drop(holder);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_competing_access_exclusive_lock_fails_the_run_naming_the_table() {
    let s = Setup::new("dbb_lockwait").await;
    s.src.sql(
        "CREATE TABLE quiet (x int); CREATE TABLE busy_tbl (x int); \
         INSERT INTO busy_tbl SELECT generate_series(1, 100)",
    );
    let holder = hold_table_lock(&s.src, "busy_tbl").await;
    let started = std::time::Instant::now();
    let (code, _, err) = run(s.cmd(&["--once"], &[("BACKUP_LOCK_WAIT_TIMEOUT", "2".into())])).await;
    let took = started.elapsed();
    // Gave up after the 2 s limit, not the run timeout.
    assert!(took < Duration::from_secs(30), "took {took:?}");
    assert!(took >= Duration::from_secs(2), "took {took:?}");
    assert!(err.contains("BACKUP_LOCK_WAIT_TIMEOUT"), "{err}");
    assert_failed_cleanly(&s, &s.src.name, code, &err, "busy_tbl").await;
    // Nobody of ours is left queued behind the lock, and the run lock is free.
    let waiting = || {
        s.src.sql(
            "SELECT count(*) FROM pg_locks WHERE relation = 'busy_tbl'::regclass AND NOT granted",
        )
    };
    wait_for(
        Duration::from_secs(10),
        "no session waiting on busy_tbl",
        || (waiting() == "0").then_some(()),
    )
    .await;
    assert!(!backup_lock_held(&s.src));
    drop(holder);
    run_ok(s.cmd(&["--once"], &[("BACKUP_LOCK_TIMEOUT", "30".into())])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_a_run_waiting_on_a_table_lock_and_releases_everything() {
    let s = Setup::new("dbb_sigterm").await;
    s.src
        .sql("CREATE TABLE busy (x int); INSERT INTO busy SELECT generate_series(1, 100)");
    let holder = hold_table_lock(&s.src, "busy").await;
    let mut child = s
        .cmd(&["--once"], &[])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    someone_waits_on(&s.src, "busy").await;
    assert!(backup_lock_held(&s.src));
    let pid = child.id().unwrap().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("exits soon after SIGTERM")
        .unwrap();
    assert_eq!(status.code(), Some(1));
    // Nothing left: no temp file, no listed backup, and the run lock is free even though the
    // abandoned counting query is still blocked behind the table lock.
    assert!(s.files().is_empty(), "{:?}", s.files());
    wait_for(
        Duration::from_secs(10),
        "the backup lock to be released",
        || (!backup_lock_held(&s.src)).then_some(()),
    )
    .await;
    let rows = runs(&s.records, &s.src.name);
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0].0, "failed");
    assert!(rows[0].1.contains("stop signal"), "{rows:?}");
    assert_eq!(s.alerts("backup_failed", "firing").len(), 1);
    drop(holder);
    // Once the table is free, the next run works.
    run_ok(s.cmd(&["--once"], &[("BACKUP_LOCK_TIMEOUT", "30".into())])).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_runs_one_exits_clearly_another_waits() {
    let s = Setup::new("dbb_lock").await;
    add_bulk(&s.src, 40);
    let first = tokio::spawn(s.cmd(&["--once", "--output", "json"], &[]).output());
    dump_in_progress(&s).await;

    // Without waiting: exits 1 at once, says why, records and alerts nothing.
    let (code, _, err) = run(s.cmd(&["--once"], &[])).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("another db-backup run holds the backup lock"),
        "{err}"
    );

    // With a lock timeout: waits for the first, then backs up after it.
    let second = run_ok(s.cmd(
        &["--once", "--output", "json"],
        &[("BACKUP_LOCK_TIMEOUT", "120".into())],
    ))
    .await;
    let first = first.await.unwrap().unwrap();
    assert!(
        first.status.success(),
        "{}",
        String::from_utf8_lossy(&first.stderr)
    );
    let a = json(&String::from_utf8_lossy(&first.stdout));
    let b = json(&second);
    let a_end =
        chrono::DateTime::parse_from_rfc3339(a["backup"]["finished_at"].as_str().unwrap()).unwrap();
    let b_start =
        chrono::DateTime::parse_from_rfc3339(b["backup"]["started_at"].as_str().unwrap()).unwrap();
    assert!(
        b_start >= a_end.with_nanosecond(0).unwrap(),
        "second started {b_start} before first ended {a_end}"
    );
    assert_ne!(a["backup"]["file"], b["backup"]["file"]);
    let rows = runs(&s.records, &s.src.name);
    assert_eq!(
        rows.iter().map(|r| r.0.as_str()).collect::<Vec<_>>(),
        ["success", "success"]
    );
    assert!(s.alerts("backup_failed", "firing").is_empty());
}

use chrono::Timelike;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pg_dump_older_than_the_server_is_refused() {
    let s = Setup::new("dbb_old").await;
    s.src.sql("CREATE TABLE t (x int)");
    let tools = tempfile::tempdir().unwrap();
    let fake = tools.path().join("pg_dump");
    // An old client as the version check sees it; it would otherwise run the real pg_dump.
    std::fs::write(
        &fake,
        "#!/bin/sh\nif [ \"$1\" = --version ]; then echo 'pg_dump (PostgreSQL) 9.6.24'; exit 0; fi\nexec pg_dump \"$@\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (code, _, err) = run(s.cmd(
        &["--once"],
        &[
            ("PG_DUMP_PATH", fake.display().to_string()),
            ("PG_RESTORE_PATH", "pg_restore".into()),
        ],
    ))
    .await;
    assert_failed_cleanly(
        &s,
        &s.src.name,
        code,
        &err,
        "is version 9 but the server is",
    )
    .await;
    assert!(err.contains("PG_DUMP_PATH"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_checks_everything_and_writes_nothing() {
    let s = Setup::new("dbb_dry").await;
    s.src.sql("CREATE TABLE t (x int)");
    let plan = json(&run_ok(s.cmd(&["--dry-run", "--output", "json"], &[])).await);
    assert_eq!(plan["ready"], true, "{plan}");
    assert_eq!(plan["lock_free"], true);
    assert!(
        plan["would_write"]
            .as_str()
            .unwrap()
            .starts_with(&s.src.name)
    );
    assert!(s.files().is_empty());
    // Not even the records table was created.
    assert_eq!(
        s.records
            .sql("SELECT to_regclass('keepers.backup_runs') IS NULL"),
        "t"
    );
}

/// An S3 front that forwards to moto but refuses the second part of every multipart upload
/// with S3's own error format; records each request line.
async fn failing_s3_proxy(log: Arc<Mutex<Vec<String>>>) -> String {
    use axum::body::Body;
    use axum::extract::{Request, State};
    use axum::response::Response;

    async fn handle(State(log): State<Arc<Mutex<Vec<String>>>>, req: Request) -> Response {
        let method = req.method().clone();
        let pq = req
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default();
        log.lock().unwrap().push(format!("{method} {pq}"));
        if method == "PUT" && pq.contains("partNumber=2") {
            // Take the whole part before refusing it: answering while the client still writes
            // closes the connection under it, and it sees a broken pipe instead of the 403.
            let _ = axum::body::to_bytes(req.into_body(), usize::MAX).await;
            return Response::builder()
                .status(403)
                .header("content-type", "application/xml")
                .body(Body::from(
                    "<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AccessDenied</Code>\
                     <Message>Access Denied</Message><RequestId>test</RequestId></Error>",
                ))
                .unwrap();
        }
        let headers = req.headers().clone();
        let body = axum::body::to_bytes(req.into_body(), usize::MAX)
            .await
            .unwrap();
        let mut fwd = keeper_runtime::http::client(Duration::from_secs(60)).request(
            reqwest::Method::from_bytes(method.as_str().as_bytes()).unwrap(),
            format!("{}{pq}", keeper_tests::env::s3_url()),
        );
        for (k, v) in headers.iter() {
            if k != "host" {
                fwd = fwd.header(k.as_str(), v.as_bytes());
            }
        }
        let resp = fwd.body(body).send().await.unwrap();
        let mut out = Response::builder().status(resp.status().as_u16());
        for (k, v) in resp.headers() {
            out = out.header(k.as_str(), v.as_bytes());
        }
        out.body(Body::from(resp.bytes().await.unwrap())).unwrap()
    }

    let app = axum::Router::new().fallback(handle).with_state(log);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_failure_aborts_the_upload_and_keeps_the_local_backup() {
    let s = Setup::new("dbb_up").await;
    add_bulk(&s.src, 12);
    let bucket = s3::bucket();
    s3::create_bucket(&bucket).await;
    let log = Arc::new(Mutex::new(Vec::new()));
    let proxy = failing_s3_proxy(log.clone()).await;
    let mut extra = s3::env(&proxy, &bucket, "up");
    extra.push(("BACKUP_S3_PART_SIZE_MIB", "5".into()));
    let (code, out, err) = run(s.cmd(&["--once", "--output", "json"], &extra)).await;
    assert_eq!(code, 1, "{out}\n{err}");
    let report = json(&out);
    let error = report["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("upload to s3://{bucket}/up failed")),
        "{error}"
    );
    assert!(
        error.contains("AccessDenied") || error.contains("403"),
        "{error}"
    );

    // Nothing remote: no object, no open multipart upload; the abort was sent.
    assert!(s3::keys(&bucket, "").await.is_empty());
    assert!(s3::open_uploads(&bucket).await.is_empty());
    let requests = log.lock().unwrap().clone();
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("DELETE ") && r.contains("uploadId=")),
        "no AbortMultipartUpload in {requests:?}"
    );
    // The local backup stays, complete and listed as local only.
    let name = report["backup"]["file"].as_str().unwrap();
    assert!(s.files().contains(&name.to_owned()), "{:?}", s.files());
    assert_eq!(s.files().len(), 5, "{:?}", s.files());
    let listed = json(&run_ok(s.cmd(&["list", "--output", "json"], &extra)).await);
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["status"], "complete");
    assert!(listed[0]["remote"].is_null());
    let rows = runs(&s.records, &s.src.name);
    assert_eq!(rows[0].0, "failed");
    assert_eq!(
        s.alerts("backup_failed", "firing").len(),
        1,
        "{:?}",
        s.sink.requests()
    );
}

//! Shared pieces of the db-backup tests: throwaway databases on the real PostgreSQL
//! (`KEEPERS_TEST_PG_URL`), buckets on the real S3-compatible server (`KEEPERS_TEST_S3_URL`,
//! moto), and the real `db-backup` binary as a child process.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use keeper_tests::env;

mod cluster;
#[allow(unused_imports)]
pub use cluster::*;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_db-backup");

/// `psql` against `url`: one statement (or several), output unaligned without headers.
pub fn psql(url: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .args([
            "-X",
            "-q",
            "-A",
            "-t",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            url,
            "-c",
            sql,
        ])
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "psql failed: {sql}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The same server as the admin URL, database `name`.
pub fn url_for(name: &str) -> String {
    let admin = env::pg_url();
    let mut u = url::Url::parse(&admin).expect("KEEPERS_TEST_PG_URL is a URL");
    u.set_path(&format!("/{name}"));
    u.to_string()
}

/// A database created for one test and dropped when the test ends.
pub struct TestDb {
    /// Its name.
    pub name: String,
    /// Its URL.
    pub url: String,
}

impl TestDb {
    /// Creates an empty database with a unique name.
    pub fn create(prefix: &str) -> TestDb {
        let name = env::unique(prefix).to_lowercase();
        psql(&env::pg_url(), &format!("CREATE DATABASE \"{name}\""));
        TestDb {
            url: url_for(&name),
            name,
        }
    }

    /// Runs SQL in it.
    pub fn sql(&self, sql: &str) -> String {
        psql(&self.url, sql)
    }

    /// Ordinary tables outside the system schemas, as `format('%I.%I')` names.
    pub fn tables(&self) -> Vec<String> {
        tables_of(&self.url)
    }

    /// Per table: exact row count and an MD5 of all rows in a fixed order, so two databases
    /// with equal maps hold identical content.
    pub fn checksums(&self) -> BTreeMap<String, (i64, String)> {
        checksums_of(&self.url)
    }
}

/// Ordinary tables of the database at `url` outside the system schemas, as `format('%I.%I')`
/// names.
pub fn tables_of(url: &str) -> Vec<String> {
    psql(
        url,
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE c.relkind = 'r' AND n.nspname <> 'information_schema' \
         AND n.nspname NOT LIKE 'pg\\_%' ORDER BY 1",
    )
    .lines()
    .map(str::to_owned)
    .collect()
}

/// Per table of the database at `url`: exact row count and an MD5 of all rows in a fixed
/// order.
pub fn checksums_of(url: &str) -> BTreeMap<String, (i64, String)> {
    tables_of(url)
        .into_iter()
        .map(|t| {
            let line = psql(
                url,
                &format!(
                    "SELECT count(*) || ' ' || coalesce(md5(string_agg(x::text, E'\\n' ORDER BY x::text)), '-') FROM ONLY {t} x"
                ),
            );
            let (n, sum) = line.split_once(' ').expect("count and md5");
            (t, (n.parse().expect("count"), sum.to_owned()))
        })
        .collect()
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args(["-X", "-q", "-d", &env::pg_url(), "-c"])
            .arg(format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ))
            .output();
    }
}

/// Varied content: several types (numeric, jsonb, bytea, timestamps, NULLs), a quoted schema
/// and table name, a partitioned table, an unlogged table, a sequence, a view and a
/// materialized view. `rows` sizes the main table.
pub fn seed(db: &TestDb, rows: u32) {
    seed_sql(&db.url, "", rows);
}

/// [`seed`] into the database at `url`, each statement run after `prelude` (e.g.
/// `SET ROLE app_owner;`, so the objects belong to that role).
pub fn seed_sql(url: &str, prelude: &str, rows: u32) {
    psql(
        url,
        &format!(
            r#"{prelude}
CREATE TABLE accounts (
  id bigserial PRIMARY KEY, name text NOT NULL, balance numeric(20,8) NOT NULL,
  created timestamptz NOT NULL, tags jsonb NOT NULL, avatar bytea, note text);
INSERT INTO accounts (name, balance, created, tags, avatar, note)
SELECT 'user-' || g, round((random() * 1e6)::numeric, 8),
       timestamptz '2025-01-01' + g * interval '37 seconds',
       jsonb_build_object('tier', g % 5, 'flags', jsonb_build_array(g % 2 = 0, md5(g::text))),
       decode(md5(g::text), 'hex'), CASE WHEN g % 7 = 0 THEN NULL ELSE 'n' || g END
FROM generate_series(1, {rows}) g;
CREATE SCHEMA "Mixed Case";
CREATE TABLE "Mixed Case"."Quoted ""Table""" (k int PRIMARY KEY, v text);
INSERT INTO "Mixed Case"."Quoted ""Table""" SELECT g, repeat('x', g % 50) FROM generate_series(1, 300) g;
CREATE TABLE events (id int NOT NULL, at date NOT NULL, payload text) PARTITION BY RANGE (at);
CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01');
INSERT INTO events SELECT g, date '2025-06-01' + (g % 400), md5(g::text) FROM generate_series(1, 2000) g;
CREATE UNLOGGED TABLE scratchpad (n int);
INSERT INTO scratchpad SELECT generate_series(1, 50);
CREATE TABLE empty_table (id int);
CREATE SEQUENCE counter START 42;
SELECT nextval('counter');
CREATE VIEW rich AS SELECT * FROM accounts WHERE balance > 500000;
CREATE MATERIALIZED VIEW tiers AS SELECT tags->>'tier' AS tier, count(*) FROM accounts GROUP BY 1;
"#
        ),
    );
}

/// Adds about `mib` MiB of incompressible data (random bytea), for multipart uploads and
/// dumps that take long enough to interrupt.
pub fn add_bulk(db: &TestDb, mib: u32) {
    let rows = mib * 1024 * 1024 / 128;
    let random_128_bytes = ["md5(random()::text)"; 8].join(" || ");
    db.sql(&format!(
        "CREATE TABLE bulk (id int, blob bytea); \
         INSERT INTO bulk SELECT g, decode({random_128_bytes}, 'hex') FROM generate_series(1, {rows}) g"
    ));
}

/// The binary with a clean environment (PATH and HOME only), JSON logs on stderr.
pub fn db_backup(env: &[(&str, String)]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(BIN);
    cmd.kill_on_drop(true);
    cmd.env_clear();
    for var in ["PATH", "HOME"] {
        if let Ok(v) = std::env::var(var) {
            cmd.env(var, v);
        }
    }
    cmd.env("LOG_FORMAT", "json").env("RUST_LOG", "info");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// The binary started through `sh -c "{prelude}; exec db-backup ARGS"` (resource limits,
/// ignored signals), with the same clean environment as [`db_backup`].
pub fn db_backup_in_shell(
    prelude: &str,
    args: &[&str],
    env: &[(&str, String)],
) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.kill_on_drop(true).env_clear();
    for var in ["PATH", "HOME"] {
        if let Ok(v) = std::env::var(var) {
            cmd.env(var, v);
        }
    }
    cmd.env("LOG_FORMAT", "json").env("RUST_LOG", "info");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.arg("-c")
        .arg(format!("{prelude}; exec \"$0\" \"$@\""))
        .arg(BIN)
        .args(args);
    cmd
}

/// Runs to completion; returns (exit code, stdout, stderr).
pub async fn run(mut cmd: tokio::process::Command) -> (i32, String, String) {
    let out = cmd.output().await.expect("spawn db-backup");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Runs and requires success; returns stdout.
pub async fn run_ok(cmd: tokio::process::Command) -> String {
    let (code, out, err) = run(cmd).await;
    assert_eq!(code, 0, "db-backup failed\nstdout: {out}\nstderr: {err}");
    out
}

/// Parses stdout of a `--output json` run.
pub fn json(stdout: &str) -> serde_json::Value {
    serde_json::from_str(stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// Names in a directory, sorted.
pub fn files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// `sha256sum` of a file.
pub fn sha256sum(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("run sha256sum");
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Polls `f` until it returns `Some` or `timeout` passes.
pub async fn wait_for<T>(timeout: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The path of the only file in `dir` whose name ends with `suffix`.
pub fn only(dir: &Path, suffix: &str) -> PathBuf {
    let found: Vec<String> = files(dir)
        .into_iter()
        .filter(|f| f.ends_with(suffix))
        .collect();
    assert_eq!(found.len(), 1, "expected one *{suffix} in {:?}", files(dir));
    dir.join(&found[0])
}

/// Rows of `backup_runs` for `database` in the records database: (status, error, sha256,
/// verified), oldest first.
pub fn runs(records: &TestDb, database: &str) -> Vec<(String, String, String, String)> {
    records
        .sql(&format!(
            "SELECT status, translate(coalesce(error, ''), E'\\n|', '  '), coalesce(sha256, ''), \
             coalesce(verified::text, '') \
             FROM keepers.backup_runs WHERE database = '{database}' ORDER BY id"
        ))
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let p: Vec<&str> = l.split('|').collect();
            (p[0].into(), p[1].into(), p[2].into(), p[3].into())
        })
        .collect()
}

/// S3 (moto) helpers: signed requests through object_store (moto refuses anonymous object
/// reads), plus the multipart-uploads listing over plain HTTP.
pub mod s3 {
    use futures_util::StreamExt;
    use keeper_tests::env;
    use object_store::aws::{AmazonS3, AmazonS3Builder};
    use object_store::path::Path;
    use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

    /// A fresh bucket name (lower case, dashes).
    pub fn bucket() -> String {
        env::unique("dbb").replace('_', "-").to_lowercase()
    }

    fn store(bucket: &str) -> AmazonS3 {
        keeper_runtime::install_crypto_provider();
        AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_endpoint(env::s3_url())
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("testing")
            .with_secret_access_key("testing")
            .build()
            .expect("S3 client")
    }

    /// Creates a bucket.
    pub async fn create_bucket(name: &str) {
        let r = keeper_runtime::http::client(std::time::Duration::from_secs(30))
            .put(format!("{}/{name}", env::s3_url()))
            .send()
            .await
            .expect("create bucket");
        assert!(r.status().is_success(), "create bucket: {}", r.status());
    }

    /// Keys under `prefix`, sorted.
    pub async fn keys(bucket: &str, prefix: &str) -> Vec<String> {
        let s = store(bucket);
        let p = (!prefix.is_empty()).then(|| Path::from(prefix.trim_end_matches('/')));
        let mut keys: Vec<String> = s
            .list(p.as_ref())
            .map(|m| m.expect("list").location.to_string())
            .collect()
            .await;
        keys.sort();
        keys
    }

    /// Multipart uploads still open in the bucket.
    pub async fn open_uploads(bucket: &str) -> Vec<String> {
        let body = keeper_runtime::http::client(std::time::Duration::from_secs(30))
            .get(format!("{}/{bucket}?uploads", env::s3_url()))
            .send()
            .await
            .expect("list uploads")
            .text()
            .await
            .expect("body");
        assert!(
            body.contains("<ListMultipartUploadsResult"),
            "unexpected answer: {body}"
        );
        body.split("<UploadId>")
            .skip(1)
            .filter_map(|s| s.split("</UploadId>").next())
            .map(str::to_owned)
            .collect()
    }

    /// An object's body.
    pub async fn get(bucket: &str, key: &str) -> Vec<u8> {
        store(bucket)
            .get(&Path::from(key))
            .await
            .unwrap_or_else(|e| panic!("get {key}: {e}"))
            .bytes()
            .await
            .expect("body")
            .to_vec()
    }

    /// An object's ETag (multipart uploads end in `-N`).
    pub async fn etag(bucket: &str, key: &str) -> String {
        store(bucket)
            .head(&Path::from(key))
            .await
            .unwrap_or_else(|e| panic!("head {key}: {e}"))
            .e_tag
            .unwrap_or_default()
            .trim_matches('"')
            .to_owned()
    }

    /// Writes an object.
    pub async fn put(bucket: &str, key: &str, body: Vec<u8>) {
        store(bucket)
            .put(&Path::from(key), PutPayload::from(body))
            .await
            .unwrap_or_else(|e| panic!("put {key}: {e}"));
    }

    /// Environment for the binary: the endpoint, any credentials, us-east-1.
    pub fn env(endpoint: &str, bucket: &str, prefix: &str) -> Vec<(&'static str, String)> {
        vec![
            ("BACKUP_S3_URL", format!("s3://{bucket}/{prefix}")),
            ("AWS_ACCESS_KEY_ID", "testing".into()),
            ("AWS_SECRET_ACCESS_KEY", "testing".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT_URL", endpoint.to_owned()),
        ]
    }
}

/// A source database, a records database, a backup directory and an alert webhook.
pub struct Setup {
    /// The database backed up.
    pub src: TestDb,
    /// Where `backup_runs` goes (separate, so the source's content is only what the test made).
    pub records: TestDb,
    /// `BACKUP_DIR`.
    pub dir: tempfile::TempDir,
    /// Receives alerts (`ALERT_WEBHOOK_URL`) and pushed metrics.
    pub sink: keeper_tests::sink::Sink,
}

impl Setup {
    /// Empty databases and directory.
    pub async fn new(prefix: &str) -> Setup {
        Setup {
            src: TestDb::create(prefix),
            records: TestDb::create(&format!("{prefix}_rec")),
            dir: tempfile::tempdir().expect("temp dir"),
            sink: keeper_tests::sink::Sink::start().await,
        }
    }

    /// The environment every run of this setup gets.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("DATABASE_URL", self.src.url.clone()),
            ("BACKUP_DIR", self.dir.path().display().to_string()),
            ("BACKUP_RECORDS_DATABASE_URL", self.records.url.clone()),
            ("ALERT_WEBHOOK_URL", self.sink.url_for("/hook")),
        ]
    }

    /// The env plus extra pairs (later pairs win).
    pub fn env_with(&self, extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
        let mut e = self.env();
        e.extend(extra.iter().cloned());
        e
    }

    /// `db-backup ARGS` with this setup's env plus `extra`.
    pub fn cmd(&self, args: &[&str], extra: &[(&'static str, String)]) -> tokio::process::Command {
        let mut c = db_backup(&self.env_with(extra));
        c.args(args);
        c
    }

    /// Alert webhook bodies received so far with this alertname and status.
    pub fn alerts(&self, alertname: &str, status: &str) -> Vec<serde_json::Value> {
        self.sink
            .requests_to("/hook")
            .iter()
            .filter_map(|r| r.json())
            .filter(|j| j["alertname"] == alertname && j["status"] == status)
            .collect()
    }

    /// Backup files in the directory (archives, sidecars, manifests, temp files).
    pub fn files(&self) -> Vec<String> {
        files(self.dir.path())
    }
}

/// A session holding an ACCESS EXCLUSIVE lock; dropping it ends the session server-side
/// (killing psql alone would leave its backend sleeping with the lock).
pub struct LockHolder {
    _child: tokio::process::Child,
    app: String,
}

impl Drop for LockHolder {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .args(["-X", "-q", "-d", &env::pg_url(), "-c"])
            .arg(format!(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = '{}'",
                self.app
            ))
            .output();
    }
}

/// Holds an ACCESS EXCLUSIVE lock on `table` from another session until dropped, so a dump
/// (and the row counts) of it wait.
pub async fn hold_table_lock(db: &TestDb, table: &str) -> LockHolder {
    let app = env::unique("dbb_holder");
    let child = tokio::process::Command::new("psql")
        .args(["-X", "-q", "-d", &db.url, "-c"])
        .arg(format!(
            "BEGIN; LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(600)"
        ))
        .env("PGAPPNAME", &app)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn psql");
    let url = db.url.clone();
    let table = table.to_owned();
    wait_for(Duration::from_secs(30), "the table lock", || {
        (psql(
            &url,
            &format!(
                "SELECT count(*) FROM pg_locks WHERE relation = '{table}'::regclass \
                 AND mode = 'AccessExclusiveLock' AND granted"
            ),
        ) == "1")
            .then_some(())
    })
    .await;
    LockHolder { _child: child, app }
}

/// Waits until some session waits for a lock on `table` (the dump has reached it).
pub async fn someone_waits_on(db: &TestDb, table: &str) {
    let url = db.url.clone();
    let table = table.to_owned();
    wait_for(Duration::from_secs(60), "a session waiting on the table", || {
        (psql(
            &url,
            &format!(
                "SELECT count(*) > 0 FROM pg_locks WHERE relation = '{table}'::regclass AND NOT granted"
            ),
        ) == "t")
            .then_some(())
    })
    .await;
}

/// Whether any session holds db-backup's advisory lock in `db`.
pub fn backup_lock_held(db: &TestDb) -> bool {
    // The key 0x6462_2d62_6163_6b75 shows up as its two 32-bit halves.
    db.sql(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) \
         AND classid = 1684155746 AND objid = 1633905525",
    ) != "0"
}

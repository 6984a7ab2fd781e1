//! Credentials reach the tools the way the job itself reads them, and nothing else reaches
//! them: passwords with `+ & % @ : / ? #` and a space, in the userinfo and as a `password=`
//! parameter, against a real PostgreSQL cluster that checks passwords (scram-sha-256); the
//! password never on a command line; the tools' environment cleared to libpq's variables.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test harness: a failed setup is a failed test

mod support;

use std::collections::BTreeMap;

use support::*;

const ROLE: &str = "dbb weird+role";
const PASSWORD: &str = "p+a&s%s@w:o/r?d# x%41";

fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A cluster with a role whose name and password need escaping, owning a seeded database.
fn cluster_with_weird_role() -> (Cluster, String) {
    let c = Cluster::start();
    let admin = c.admin_url("postgres");
    psql(
        &admin,
        &format!(
            "CREATE ROLE \"{ROLE}\" LOGIN CREATEDB PASSWORD {}",
            quote_literal(PASSWORD)
        ),
    );
    psql(&admin, &format!("CREATE DATABASE app OWNER \"{ROLE}\""));
    let url = c.url(ROLE, PASSWORD, "app");
    psql(
        &url,
        "CREATE TABLE t (id int PRIMARY KEY, v text); \
         INSERT INTO t SELECT g, md5(g::text) FROM generate_series(1, 500) g",
    );
    (c, url)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_character_passwords_back_up_and_restore_and_stay_off_the_command_line() {
    let (c, url) = cluster_with_weird_role();
    let records = TestDb::create("dbb_cred_rec");
    let dir = tempfile::tempdir().unwrap();
    let tools = tempfile::tempdir().unwrap();
    let pg_dump = recording_wrapper(tools.path(), "pg_dump", &which("pg_dump"));
    recording_wrapper(tools.path(), "pg_restore", &which("pg_restore"));
    recording_wrapper(tools.path(), "pg_dumpall", &which("pg_dumpall"));
    // restore runs the psql beside pg_restore.
    recording_wrapper(tools.path(), "psql", &which("psql"));
    let env = vec![
        ("DATABASE_URL", url.clone()),
        ("BACKUP_DIR", dir.path().display().to_string()),
        ("BACKUP_RECORDS_DATABASE_URL", records.url.clone()),
        ("PG_DUMP_PATH", pg_dump.display().to_string()),
        // Things a child must not see, and one libpq setting it must.
        ("AWS_ACCESS_KEY_ID", "AKIDNEVERINCHILDREN".into()),
        (
            "AWS_SECRET_ACCESS_KEY",
            "aws-secret-never-in-children".into(),
        ),
        ("BACKUP_KEEP_DAILY", "9".into()),
        ("PGCONNECT_TIMEOUT", "17".into()),
        ("TZ", "UTC".into()),
    ];
    let out = run_ok({
        let mut cmd = db_backup(&env);
        cmd.args(["--once", "--output", "json"]);
        cmd
    })
    .await;
    let file = json(&out)["backup"]["file"].as_str().unwrap().to_owned();

    let child_env = std::fs::read_to_string(tools.path().join("pg_dump.env")).unwrap();
    let vars: BTreeMap<&str, &str> = child_env
        .lines()
        .filter_map(|l| l.split_once('='))
        .collect();
    assert_eq!(vars.get("PGPASSWORD"), Some(&PASSWORD), "{child_env}");
    assert_eq!(vars.get("PGCONNECT_TIMEOUT"), Some(&"17"));
    assert_eq!(vars.get("TZ"), Some(&"UTC"));
    for name in vars.keys() {
        let allowed = matches!(*name, "PATH" | "LC_ALL" | "TZ" | "PWD" | "SHLVL" | "_")
            || (name.starts_with("PG") && !name.starts_with("PG_"));
        assert!(allowed, "{name} reached pg_dump:\n{child_env}");
    }
    assert!(!child_env.contains("aws-secret"), "{child_env}");
    assert!(!child_env.contains("DATABASE_URL"), "{child_env}");
    let argv = std::fs::read_to_string(tools.path().join("pg_dump.argv")).unwrap();
    assert!(argv.contains("--dbname=postgres://"), "{argv}");
    assert!(
        argv.lines().any(|l| l == "--lock-wait-timeout=60s"),
        "{argv}"
    );
    for secretish in ["p%2Ba", "w:o", "password=", "%41"] {
        assert!(
            !argv.contains(secretish),
            "{secretish:?} on the command line: {argv}"
        );
    }

    // pg_dumpall (the globals) gets the same treatment.
    let argv = std::fs::read_to_string(tools.path().join("pg_dumpall.argv")).unwrap();
    assert!(argv.lines().any(|l| l == "--no-role-passwords"), "{argv}");
    assert!(
        !argv.contains("password=") && !argv.contains("w:o"),
        "{argv}"
    );
    let genv = std::fs::read_to_string(tools.path().join("pg_dumpall.env")).unwrap();
    assert!(
        genv.lines().any(|l| l == format!("PGPASSWORD={PASSWORD}")),
        "{genv}"
    );
    assert!(!genv.contains("aws-secret"), "{genv}");

    // Restore with the password as a `password=` parameter, `+` left raw (a form decoder would
    // make it a space) and the other reserved characters escaped.
    psql(
        &c.admin_url("postgres"),
        &format!("CREATE DATABASE copy OWNER \"{ROLE}\""),
    );
    let encoded_role =
        percent_encoding::utf8_percent_encode(ROLE, percent_encoding::NON_ALPHANUMERIC);
    let param: String = PASSWORD
        .chars()
        .map(|ch| match ch {
            '+' => "+".to_owned(),
            c if c.is_ascii_alphanumeric() => c.to_string(),
            c => format!("%{:02X}", c as u32),
        })
        .collect();
    let target = format!(
        "postgres://{encoded_role}@127.0.0.1:{}/copy?sslmode=disable&password={param}",
        c.port
    );
    let mut env = env.clone();
    env.push((
        "PG_RESTORE_PATH",
        tools.path().join("pg_restore").display().to_string(),
    ));
    env.push(("TARGET_DATABASE_URL", target.clone()));
    let from = dir.path().join(&file).display().to_string();
    let out = run_ok({
        let mut cmd = db_backup(&env);
        cmd.args(["restore", "--from", &from, "--output", "json"]);
        cmd
    })
    .await;
    assert_eq!(json(&out)["rows"], 500, "{out}");
    assert_eq!(
        psql(&c.url(ROLE, PASSWORD, "copy"), "SELECT count(*) FROM t"),
        "500"
    );
    // pg_restore only turns the archive into SQL and never connects; psql does, with the
    // password from the environment.
    let renv = std::fs::read_to_string(tools.path().join("pg_restore.env")).unwrap();
    assert!(!renv.contains("PGPASSWORD"), "{renv}");
    let argv = std::fs::read_to_string(tools.path().join("psql.argv")).unwrap();
    assert!(!argv.contains("password="), "{argv}");
    assert!(argv.contains("sslmode=disable"), "{argv}");
    let penv = std::fs::read_to_string(tools.path().join("psql.env")).unwrap();
    assert!(
        penv.lines().any(|l| l == format!("PGPASSWORD={PASSWORD}")),
        "{penv}"
    );
    assert!(!penv.contains("aws-secret"), "{penv}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_plus_and_ampersand_in_the_userinfo_are_literal() {
    let (c, _) = cluster_with_weird_role();
    let records = TestDb::create("dbb_cred_raw_rec");
    let dir = tempfile::tempdir().unwrap();
    // `+` and `&` raw, as operators paste them; what must be escaped is.
    let raw = format!(
        "postgres://dbb%20weird+role:p+a&s%25s%40w%3Ao%2Fr%3Fd%23%20x%2541@127.0.0.1:{}/app",
        c.port
    );
    let env = vec![
        ("DATABASE_URL", raw),
        ("BACKUP_DIR", dir.path().display().to_string()),
        ("BACKUP_RECORDS_DATABASE_URL", records.url.clone()),
    ];
    let out = run_ok({
        let mut cmd = db_backup(&env);
        cmd.args(["--once", "--output", "json"]);
        cmd
    })
    .await;
    assert_eq!(json(&out)["backup"]["row_counts"]["public.t"], 500, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_password_fails_clearly_without_echoing_it() {
    let (c, _) = cluster_with_weird_role();
    let records = TestDb::create("dbb_cred_bad_rec");
    let dir = tempfile::tempdir().unwrap();
    let wrong = "wrong+pass&word@x";
    let env = vec![
        ("DATABASE_URL", c.url(ROLE, wrong, "app")),
        ("BACKUP_DIR", dir.path().display().to_string()),
        ("BACKUP_RECORDS_DATABASE_URL", records.url.clone()),
    ];
    let (code, out, err) = run({
        let mut cmd = db_backup(&env);
        cmd.arg("--once");
        cmd
    })
    .await;
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.contains("password authentication failed"), "{err}");
    assert!(
        !err.contains(wrong) && !err.contains("wrong%2Bpass"),
        "{err}"
    );
    assert!(files(dir.path()).is_empty());
}

/// The storage settings every keeper shares bind REDIS_URL; db-backup has no Redis client, and
/// says so instead of letting an operator believe the URL does something (never echoing it).
#[tokio::test]
async fn a_redis_url_is_ignored_and_said_so() {
    let s = Setup::new("redis_ignored").await;
    let redis = ("REDIS_URL", "redis://:hunter2@127.0.0.1:1/0".to_string());
    let (code, out, err) = run(s.cmd(&["list", "--output", "json"], &[redis])).await;
    assert_eq!(code, 0, "stderr: {err}");
    assert_eq!(json(&out), serde_json::json!([]));
    assert!(
        err.contains("REDIS_URL is set but db-backup uses no Redis: ignored"),
        "stderr: {err}"
    );
    assert!(!err.contains("hunter2") && !out.contains("hunter2"));
}

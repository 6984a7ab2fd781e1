//! The cluster globals travel with every backup: a restore into a fresh cluster fails on the
//! missing roles without them and works with `--with-globals`, which keeps existing roles as
//! they are; role passwords only with `BACKUP_GLOBALS_PASSWORDS=true`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test harness: a failed setup is a failed test

mod support;

use support::*;

const READER_PASSWORD: &str = "reader+pw&x";

/// A cluster whose `app` database belongs to a NOLOGIN owner role, with a reader role granted
/// SELECT and membership in a group.
fn source_cluster() -> Cluster {
    let c = Cluster::start();
    let admin = c.admin_url("postgres");
    psql(
        &admin,
        &format!(
            "CREATE ROLE app_owner NOLOGIN; CREATE ROLE readers NOLOGIN; \
             CREATE ROLE \"app reader\" LOGIN PASSWORD '{READER_PASSWORD}' IN ROLE readers; \
             ALTER ROLE \"app reader\" SET statement_timeout = '5s'"
        ),
    );
    psql(&admin, "CREATE DATABASE app OWNER app_owner");
    psql(
        &c.admin_url("app"),
        "SET ROLE app_owner; CREATE TABLE items (id int PRIMARY KEY, v text); \
         INSERT INTO items SELECT g, md5(g::text) FROM generate_series(1, 300) g; \
         GRANT SELECT ON items TO readers",
    );
    c
}

fn env(
    src: &Cluster,
    dir: &std::path::Path,
    extra: &[(&'static str, String)],
) -> Vec<(&'static str, String)> {
    let mut e = vec![
        ("DATABASE_URL", src.admin_url("app")),
        ("BACKUP_DIR", dir.display().to_string()),
        ("BACKUP_RECORDS", "false".into()),
    ];
    e.extend(extra.iter().cloned());
    e
}

async fn backup(env: &[(&'static str, String)]) -> String {
    let mut cmd = db_backup(env);
    cmd.args(["--once", "--output", "json"]);
    let out = run_ok(cmd).await;
    json(&out)["backup"]["file"].as_str().unwrap().to_owned()
}

fn restore(
    env: &[(&'static str, String)],
    from: &str,
    target: String,
    extra: &[&str],
) -> tokio::process::Command {
    let mut e = env.to_vec();
    e.push(("TARGET_DATABASE_URL", target));
    let mut cmd = db_backup(&e);
    cmd.args(["restore", "--from", from, "--output", "json"])
        .args(extra);
    cmd
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn globals_make_a_restore_into_a_fresh_cluster_work_and_keep_existing_roles() {
    let src = source_cluster();
    let dir = tempfile::tempdir().unwrap();
    let env = env(&src, dir.path(), &[]);
    let file = backup(&env).await;
    let from = dir.path().join(&file).display().to_string();

    let fresh = Cluster::start();
    let admin = fresh.admin_url("postgres");
    psql(&admin, "CREATE DATABASE app");
    // Without the roles the restore fails on OWNER TO, and leaves nothing behind.
    let (code, _, err) = run(restore(&env, &from, fresh.admin_url("app"), &[])).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("role \"app_owner\" does not exist"), "{err}");
    assert_eq!(
        psql(
            &fresh.admin_url("app"),
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
        ),
        "0"
    );

    // With them it works: owners, grants, memberships and role settings as in the source.
    let out = run_ok(restore(
        &env,
        &from,
        fresh.admin_url("app"),
        &["--with-globals"],
    ))
    .await;
    let r = json(&out);
    let created: Vec<&str> = r["globals"]["roles_created"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(created, vec!["app reader", "app_owner", "readers"], "{r}");
    assert_eq!(
        r["globals"]["roles_skipped"],
        serde_json::json!(["postgres"]),
        "{r}"
    );
    let app = fresh.admin_url("app");
    assert_eq!(
        psql(
            &app,
            "SELECT tableowner FROM pg_tables WHERE tablename = 'items'"
        ),
        "app_owner"
    );
    assert_eq!(
        psql(
            &app,
            "SELECT has_table_privilege('app reader', 'items', 'SELECT')"
        ),
        "t"
    );
    assert_eq!(psql(&app, "SELECT count(*) FROM items"), "300");
    assert_eq!(
        psql(
            &admin,
            "SELECT rolconfig::text FROM pg_roles WHERE rolname = 'app reader'"
        ),
        "{statement_timeout=5s}"
    );
    // Role passwords were not in the backup: the reader exists but cannot log in yet.
    assert_eq!(
        psql(
            &admin,
            "SELECT rolpassword IS NULL FROM pg_authid WHERE rolname = 'app reader'"
        ),
        "t"
    );

    // Applying them again over existing roles changes none of them.
    psql(&admin, "ALTER ROLE readers LOGIN");
    psql(&admin, "CREATE DATABASE app2");
    let out = run_ok(restore(
        &env,
        &from,
        fresh.admin_url("app2"),
        &["--with-globals"],
    ))
    .await;
    let r = json(&out);
    assert_eq!(r["globals"]["roles_created"], serde_json::json!([]), "{r}");
    assert_eq!(
        psql(
            &admin,
            "SELECT rolcanlogin FROM pg_roles WHERE rolname = 'readers'"
        ),
        "t"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn role_passwords_travel_only_when_asked() {
    let src = source_cluster();
    let dir = tempfile::tempdir().unwrap();
    let env = env(
        &src,
        dir.path(),
        &[("BACKUP_GLOBALS_PASSWORDS", "true".into())],
    );
    let file = backup(&env).await;
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.path().join(file.replace(".dump.zst", ".manifest.json"))).unwrap(),
    )
    .unwrap();
    assert_eq!(manifest["globals"]["role_passwords"], true);
    let from = dir.path().join(&file).display().to_string();

    let fresh = Cluster::start();
    psql(&fresh.admin_url("postgres"), "CREATE DATABASE app");
    run_ok(restore(
        &env,
        &from,
        fresh.admin_url("app"),
        &["--with-globals"],
    ))
    .await;
    // The reader logs in to the new cluster with its old password (scram verifier copied).
    assert_eq!(
        psql(
            &fresh.url("app reader", READER_PASSWORD, "app"),
            "SELECT count(*) FROM items"
        ),
        "300"
    );
}

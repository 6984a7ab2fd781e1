//! The disaster-recovery runbook of docs/operations.md, end to end: the source cluster is gone,
//! a fresh `initdb` cluster gets the globals and the database from an age-encrypted backup in
//! the bucket, with no `DATABASE_URL` anywhere, and holds exactly what the source held.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test harness: a failed setup is a failed test

mod support;

use age::secrecy::ExposeSecret;
use keeper_tests::env as test_env;
use support::*;

/// A cluster whose `app` database and every object in it belong to a NOLOGIN owner, with a
/// login role that reads through a group: a restore without the roles fails.
fn source_cluster() -> Cluster {
    let c = Cluster::start();
    psql(
        &c.admin_url("postgres"),
        "CREATE ROLE app_owner NOLOGIN; CREATE ROLE readers NOLOGIN; \
         CREATE ROLE app_reader LOGIN IN ROLE readers",
    );
    psql(
        &c.admin_url("postgres"),
        "CREATE DATABASE app OWNER app_owner",
    );
    let app = c.admin_url("app");
    seed_sql(&app, "SET ROLE app_owner;", 1500);
    psql(
        &app,
        "SET ROLE app_owner; GRANT SELECT ON ALL TABLES IN SCHEMA public TO readers",
    );
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runbook_restores_an_encrypted_s3_backup_into_a_fresh_cluster() {
    let keys = tempfile::tempdir().unwrap();
    let identity = age::x25519::Identity::generate();
    let identity_path = keys.path().join("age-identity.txt");
    std::fs::write(
        &identity_path,
        format!("{}\n", identity.to_string().expose_secret()),
    )
    .unwrap();
    let bucket = s3::bucket();
    s3::create_bucket(&bucket).await;
    let s3_env = s3::env(&test_env::s3_url(), &bucket, "prod");

    // Before the disaster: the scheduled job backs up, encrypted, to the bucket only.
    let src = source_cluster();
    let expected = checksums_of(&src.admin_url("app"));
    assert!(expected["public.accounts"].0 == 1500, "{expected:?}");
    let backup_dir = tempfile::tempdir().unwrap();
    let mut backup_env = vec![
        ("DATABASE_URL", src.admin_url("app")),
        ("BACKUP_DIR", backup_dir.path().display().to_string()),
        ("BACKUP_KEEP_LOCAL", "false".into()),
        ("BACKUP_AGE_RECIPIENTS", identity.to_public().to_string()),
    ];
    backup_env.extend(s3_env.iter().cloned());
    let mut cmd = db_backup(&backup_env);
    cmd.args(["--once", "--output", "json"]);
    let m = json(&run_ok(cmd).await)["backup"].clone();
    assert!(
        m["file"].as_str().unwrap().ends_with(".dump.zst.age"),
        "{m}"
    );
    assert_eq!(m["source"]["database"], "app", "{m}");
    assert_eq!(m["source"]["port"], src.port, "{m}");
    assert!(m["source"]["system_identifier"].is_string(), "{m}");
    // Nothing was written into the database being backed up.
    assert_eq!(
        psql(
            &src.admin_url("app"),
            "SELECT count(*) FROM pg_namespace WHERE nspname = 'keepers'"
        ),
        "0"
    );

    // The disaster: the source cluster and the backup host are gone.
    drop(src);
    drop(backup_dir);

    // A bare machine: the identity, the bucket's credentials, an empty directory. No
    // DATABASE_URL (db_backup starts from an empty environment).
    let work = tempfile::tempdir().unwrap();
    let mut dr_env = vec![
        ("BACKUP_DIR", work.path().display().to_string()),
        ("BACKUP_NAME", "app".to_owned()),
        (
            "BACKUP_AGE_IDENTITY_FILE",
            identity_path.display().to_string(),
        ),
    ];
    dr_env.extend(s3_env.iter().cloned());

    // Step 1: what is there.
    let mut cmd = db_backup(&dr_env);
    cmd.args(["list", "--output", "json"]);
    let listed = json(&run_ok(cmd).await);
    assert_eq!(listed[0]["location"], "s3", "{listed}");
    assert_eq!(listed[0]["encrypted"], true, "{listed}");
    assert_eq!(listed[0]["status"], "complete", "{listed}");

    // Step 2: check it through before relying on it.
    let mut cmd = db_backup(&dr_env);
    cmd.args(["verify", "--all", "--mode", "list", "--output", "json"]);
    let v = json(&run_ok(cmd).await);
    assert_eq!(v["bad"], serde_json::json!([]), "{v}");
    assert_eq!(v["backups"][0]["ok"], true, "{v}");

    // Step 3: a fresh cluster and an empty database.
    let fresh = Cluster::start();
    psql(&fresh.admin_url("postgres"), "CREATE DATABASE app");

    // Step 4: globals, then the database, in one transaction checked against the manifest.
    let mut restore_env = dr_env.clone();
    restore_env.push(("TARGET_DATABASE_URL", fresh.admin_url("app")));
    let mut cmd = db_backup(&restore_env);
    cmd.args([
        "restore",
        "--from",
        "latest",
        "--with-globals",
        "--output",
        "json",
    ]);
    let r = json(&run_ok(cmd).await);
    assert_eq!(r["checked_before_commit"], true, "{r}");
    let created = r["globals"]["roles_created"].as_array().unwrap().clone();
    for role in ["app_owner", "app_reader", "readers"] {
        assert!(created.iter().any(|c| c == role), "{role} in {r}");
    }
    // The downloaded archive does not outlive the restore.
    assert_eq!(files(work.path()), Vec::<String>::new());

    // Step 5: the same rows, owners and grants as the source had.
    let app = fresh.admin_url("app");
    psql(
        &fresh.admin_url("postgres"),
        "ALTER DATABASE app OWNER TO app_owner",
    );
    assert_eq!(checksums_of(&app), expected);
    assert_eq!(
        psql(
            &app,
            "SELECT tableowner FROM pg_tables WHERE tablename = 'accounts'"
        ),
        "app_owner"
    );
    assert_eq!(
        psql(
            &app,
            "SELECT has_table_privilege('app_reader', 'public.accounts', 'SELECT')"
        ),
        "t"
    );

    // A second restore into the same database is refused (it has tables now) rather than
    // doubling anything.
    let mut cmd = db_backup(&restore_env);
    cmd.args(["restore", "--from", "latest"]);
    let (code, _, err) = run(cmd).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("already has"), "{err}");
    assert_eq!(checksums_of(&app), expected);
}

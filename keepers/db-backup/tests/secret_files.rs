//! Every secret of the backup job can come from a file (`NAME_FILE` or a systemd credential in
//! `$CREDENTIALS_DIRECTORY`): the daemon backs up to S3 with the database URL and the AWS keys
//! given only as files, its `/proc/PID/environ` holds none of them, and `restore` finds its
//! target in `TARGET_DATABASE_URL_FILE`.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test harness: a failed setup is a failed test

mod support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use keeper_tests::env as test_env;
use keeper_tests::probe::{Probe, command};
use support::*;

const DB_PASSWORD: &str = "pw-only-in-a-file-7f3a";
const AWS_KEY_ID: &str = "AKIDONLYINAFILE";
const AWS_SECRET: &str = "aws-secret-only-in-a-credential-9c1e";

fn write(dir: &Path, name: &str, value: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, format!("{value}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o400)).unwrap();
    path.display().to_string()
}

/// The URL with a password in its userinfo (the test cluster trusts local connections, so any
/// password is accepted; what matters is where it travels).
fn with_password(url: &str) -> String {
    url.replacen("://postgres@", &format!("://postgres:{DB_PASSWORD}@"), 1)
}

fn environ(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    String::from_utf8_lossy(&raw).replace('\0', "\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_and_restore_with_every_secret_in_a_file() {
    let s = Setup::new("dbb_secretfiles").await;
    seed(&s.src, 300);
    let bucket = s3::bucket();
    s3::create_bucket(&bucket).await;
    let secrets = tempfile::tempdir().unwrap();
    let creds = tempfile::tempdir().unwrap();
    let db_file = write(secrets.path(), "database-url", &with_password(&s.src.url));
    let key_id_file = write(secrets.path(), "aws-key-id", AWS_KEY_ID);
    write(creds.path(), "aws-secret-access-key", AWS_SECRET);

    let mut cmd = command(BIN);
    for (k, v) in s.env() {
        if k != "DATABASE_URL" {
            cmd.env(k, v);
        }
    }
    cmd.env("DATABASE_URL_FILE", &db_file)
        .env("AWS_ACCESS_KEY_ID_FILE", &key_id_file)
        .env("CREDENTIALS_DIRECTORY", creds.path())
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ENDPOINT_URL", test_env::s3_url())
        .env("BACKUP_S3_URL", format!("s3://{bucket}/files"))
        .env("BACKUP_SCHEDULE", "*/2 * * * * *")
        .env("METRICS_ADDR", "127.0.0.1:0");
    let mut p = Probe::spawn(cmd);

    let uploaded = wait_for(Duration::from_secs(60), "an S3 upload", || {
        let done = p.log_events("backup complete");
        (!done.is_empty()).then_some(done.len())
    })
    .await;
    assert!(uploaded >= 1, "{}", p.stderr());
    let keys = s3::keys(&bucket, "files/").await;
    assert!(
        keys.iter().any(|k| k.ends_with(".manifest.json")),
        "{keys:?}\n{}",
        p.stderr()
    );

    let env = environ(p.pid());
    for (what, value) in [
        ("database password", DB_PASSWORD),
        ("AWS key id", AWS_KEY_ID),
        ("AWS secret key", AWS_SECRET),
    ] {
        assert!(!env.contains(value), "{what} in /proc environ:\n{env}");
    }
    for name in [
        "DATABASE_URL=",
        "AWS_SECRET_ACCESS_KEY=",
        "AWS_ACCESS_KEY_ID=",
    ] {
        assert!(
            !env.lines().any(|l| l.starts_with(name)),
            "{name} in environ"
        );
    }
    let logs = p.stderr();
    for value in [DB_PASSWORD, AWS_KEY_ID, AWS_SECRET] {
        assert!(!logs.contains(value), "secret in the log:\n{logs}");
    }
    p.signal("TERM");
    assert_eq!(
        p.wait(Duration::from_secs(60)).await.code(),
        Some(0),
        "{}",
        p.stderr()
    );

    // restore: the target URL from a file, the S3 keys as plain variables this time.
    let target = TestDb::create("dbb_secretfiles_to");
    let target_file = write(secrets.path(), "target-url", &with_password(&target.url));
    let mut restore = db_backup(&[
        ("DATABASE_URL", s.src.url.clone()),
        (
            "BACKUP_DIR",
            tempfile::tempdir().unwrap().path().display().to_string(),
        ),
        ("BACKUP_RECORDS", "false".into()),
        ("TARGET_DATABASE_URL_FILE", target_file),
        ("AWS_ACCESS_KEY_ID", AWS_KEY_ID.into()),
        ("AWS_SECRET_ACCESS_KEY", AWS_SECRET.into()),
        ("AWS_REGION", "us-east-1".into()),
        ("AWS_ENDPOINT_URL", test_env::s3_url()),
        ("BACKUP_S3_URL", format!("s3://{bucket}/files")),
    ]);
    restore.args(["restore", "--from", "latest"]);
    let (code, out, err) = run(restore).await;
    assert_eq!(code, 0, "restore failed\n{out}\n{err}");
    assert!(!out.contains(DB_PASSWORD) && !err.contains(DB_PASSWORD));
    assert_eq!(target.checksums(), s.src.checksums());
}

#[tokio::test]
async fn half_a_key_pair_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    let cmd = db_backup(&[
        ("DATABASE_URL", url_for("postgres")),
        ("BACKUP_DIR", dir.path().display().to_string()),
        ("AWS_ACCESS_KEY_ID", AWS_KEY_ID.into()),
    ]);
    let (code, _, err) = run(cmd).await;
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("AWS_SECRET_ACCESS_KEY"), "{err}");
    assert!(!err.contains(AWS_KEY_ID), "{err}");
}

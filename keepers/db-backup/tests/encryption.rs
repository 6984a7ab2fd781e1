//! age encryption of every artifact: the stored bytes (and their checksum) are ciphertext, the
//! sidecar and manifest name the recipients' fingerprints, and restore/verify need the right
//! identity: none or a wrong one restores nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test harness: a failed setup is a failed test

mod support;

use std::io::Read;

use age::secrecy::ExposeSecret;
use support::*;

fn identity_file(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, String) {
    let id = age::x25519::Identity::generate();
    let path = dir.join(name);
    std::fs::write(&path, format!("{}\n", id.to_string().expose_secret())).unwrap();
    (path, id.to_public().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_round_trip_with_the_wrong_and_the_right_identity() {
    let s = Setup::new("dbb_age").await;
    seed(&s.src, 1000);
    let expected = s.src.checksums();
    let keys = tempfile::tempdir().unwrap();
    let (right, right_pub) = identity_file(keys.path(), "right.txt");
    let (wrong, _) = identity_file(keys.path(), "wrong.txt");
    let (_, other_pub) = identity_file(keys.path(), "other.txt");

    let (code, out, err) = run(s.cmd(
        &["--once", "--output", "json"],
        &[("BACKUP_AGE_RECIPIENTS", format!("{right_pub}, {other_pub}"))],
    ))
    .await;
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("AGE-SECRET-KEY"));
    let m = &json(&out)["backup"];
    let file = m["file"].as_str().unwrap().to_owned();
    assert!(file.ends_with(".dump.zst.age"), "{file}");
    let base = file.trim_end_matches(".dump.zst.age").to_owned();
    assert_eq!(
        s.files(),
        vec![
            format!("{base}.dump.zst.age"),
            format!("{base}.dump.zst.age.sha256"),
            format!("{base}.globals.sql.zst.age"),
            format!("{base}.globals.sql.zst.age.sha256"),
            format!("{base}.manifest.json"),
        ]
    );
    let fps: Vec<String> = m["encryption"]["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(m["encryption"]["algorithm"], "age");
    assert_eq!(fps.len(), 2);
    assert!(fps.iter().all(|f| f.starts_with("SHA256:")), "{fps:?}");
    assert!(
        m["verification"]["detail"]
            .as_str()
            .unwrap()
            .contains("encrypted, contents not checked"),
        "{m}"
    );

    // Stored bytes are ciphertext; the checksum is over them, and sha256sum -c agrees.
    let archive = s.dir.path().join(&file);
    let bytes = std::fs::read(&archive).unwrap();
    assert!(bytes.starts_with(b"age-encryption.org/v1"));
    assert_eq!(m["sha256"], sha256sum(&archive));
    let sidecar = std::fs::read_to_string(s.dir.path().join(format!("{file}.sha256"))).unwrap();
    assert!(
        sidecar.starts_with(&format!("# age-encrypted for {}", fps.join(", "))),
        "{sidecar}"
    );
    let check = std::process::Command::new("sha256sum")
        .args(["-c", "--strict", &format!("{file}.sha256")])
        .current_dir(s.dir.path())
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    // The globals decrypt with the right identity.
    let gpath = s.dir.path().join(format!("{base}.globals.sql.zst.age"));
    let ids = age::IdentityFile::from_file(right.display().to_string())
        .unwrap()
        .into_identities()
        .unwrap();
    let dec = age::Decryptor::new(std::fs::File::open(&gpath).unwrap()).unwrap();
    let mut plain = Vec::new();
    dec.decrypt(ids.iter().map(|i| i.as_ref() as &dyn age::Identity))
        .unwrap()
        .read_to_end(&mut plain)
        .unwrap();
    let sql = String::from_utf8(zstd::decode_all(&plain[..]).unwrap()).unwrap();
    assert!(sql.contains("CREATE ROLE postgres;"));

    // Restores: no identity, a wrong one, then the right one (from the environment).
    let target = TestDb::create("dbb_age_target");
    let from = archive.display().to_string();
    let restore = |extra: Vec<(&'static str, String)>, args: Vec<String>| {
        let mut e = vec![("TARGET_DATABASE_URL", target.url.clone())];
        e.extend(extra);
        let mut a = vec!["restore".to_owned(), "--from".into(), from.clone()];
        a.extend(args);
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        s.cmd(&a, &e)
    };
    let (code, _, err) = run(restore(vec![], vec![])).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("encrypted with age for SHA256:"), "{err}");
    assert!(err.contains("--identity FILE"), "{err}");
    let (code, _, err) = run(restore(
        vec![],
        vec!["--identity".into(), wrong.display().to_string()],
    ))
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("no identity in"), "{err}");
    assert!(!err.contains("AGE-SECRET-KEY"), "{err}");
    assert!(target.tables().is_empty(), "{:?}", target.tables());
    run_ok(restore(
        vec![("BACKUP_AGE_IDENTITY_FILE", right.display().to_string())],
        vec![],
    ))
    .await;
    assert_eq!(target.checksums(), expected);

    // verify with the identity reads the archive through; with a wrong one it fails.
    let out = run_ok(s.cmd(
        &[
            "verify",
            "--from",
            &from,
            "--mode",
            "list",
            "--identity",
            right.to_str().unwrap(),
            "--output",
            "json",
        ],
        &[],
    ))
    .await;
    assert!(
        json(&out)["detail"]
            .as_str()
            .unwrap()
            .contains("TOC entries"),
        "{out}"
    );
    let (code, out, _) = run(s.cmd(
        &[
            "verify",
            "--from",
            &from,
            "--identity",
            wrong.to_str().unwrap(),
            "--output",
            "json",
        ],
        &[],
    ))
    .await;
    assert_eq!(code, 1, "{out}");
    assert_eq!(json(&out)["ok"], false);

    // A loose copy with only its sidecar (no manifest) is still known to be encrypted.
    let loose_dir = tempfile::tempdir().unwrap();
    let loose = loose_dir.path().join("loose.dump.zst.age");
    std::fs::copy(&archive, &loose).unwrap();
    std::fs::write(
        loose_dir.path().join("loose.dump.zst.age.sha256"),
        sidecar.replace(&file, "loose.dump.zst.age"),
    )
    .unwrap();
    let loose_target = TestDb::create("dbb_age_loose");
    let (code, _, err) = run(s.cmd(
        &["restore", "--from", loose.to_str().unwrap()],
        &[("TARGET_DATABASE_URL", loose_target.url.clone())],
    ))
    .await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("--identity FILE"), "{err}");
    run_ok(s.cmd(
        &[
            "restore",
            "--from",
            loose.to_str().unwrap(),
            "--identity",
            right.to_str().unwrap(),
        ],
        &[("TARGET_DATABASE_URL", loose_target.url.clone())],
    ))
    .await;
    assert_eq!(loose_target.checksums(), expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_recipient_is_a_config_error() {
    let s = Setup::new("dbb_age_bad").await;
    let (code, _, err) = run(s.cmd(
        &["--once"],
        &[("BACKUP_AGE_RECIPIENTS", "age1notakey".into())],
    ))
    .await;
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("BACKUP_AGE_RECIPIENTS") && err.contains("entry 1"),
        "{err}"
    );
    assert!(s.files().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_backups_go_to_s3_and_come_back() {
    let s = Setup::new("dbb_age_s3").await;
    seed(&s.src, 500);
    let expected = s.src.checksums();
    let keys = tempfile::tempdir().unwrap();
    let (right, right_pub) = identity_file(keys.path(), "right.txt");
    let bucket = s3::bucket();
    s3::create_bucket(&bucket).await;
    let mut extra = s3::env(&keeper_tests::env::s3_url(), &bucket, "enc");
    extra.extend([
        ("BACKUP_KEEP_LOCAL", "false".to_owned()),
        ("BACKUP_AGE_RECIPIENTS", right_pub),
        // The daemon holds the identity too: its verification reads the archive through.
        ("BACKUP_AGE_IDENTITY_FILE", right.display().to_string()),
    ]);
    let out = run_ok(s.cmd(&["--once", "--output", "json"], &extra)).await;
    let m = &json(&out)["backup"];
    assert!(
        m["verification"]["detail"]
            .as_str()
            .unwrap()
            .contains("TOC entries"),
        "{m}"
    );
    let base = m["file"]
        .as_str()
        .unwrap()
        .trim_end_matches(".dump.zst.age")
        .to_owned();
    assert_eq!(
        s3::keys(&bucket, "enc/").await,
        vec![
            format!("enc/{base}.dump.zst.age"),
            format!("enc/{base}.dump.zst.age.sha256"),
            format!("enc/{base}.globals.sql.zst.age"),
            format!("enc/{base}.globals.sql.zst.age.sha256"),
            format!("enc/{base}.manifest.json"),
        ]
    );
    let body = s3::get(&bucket, &format!("enc/{base}.dump.zst.age")).await;
    assert!(body.starts_with(b"age-encryption.org/v1"));
    assert!(s.files().is_empty(), "{:?}", s.files());
    // Listed as complete from the bucket, restored from it with the identity.
    let listed = json(&run_ok(s.cmd(&["list", "--output", "json"], &extra)).await);
    assert_eq!(listed[0]["status"], "complete", "{listed}");
    let target = TestDb::create("dbb_age_s3_t");
    let mut env = extra.clone();
    env.push(("TARGET_DATABASE_URL", target.url.clone()));
    run_ok(s.cmd(&["restore", "--from", "latest"], &env)).await;
    assert_eq!(target.checksums(), expected);
    assert!(
        s.files().is_empty(),
        "download left behind: {:?}",
        s.files()
    );
}

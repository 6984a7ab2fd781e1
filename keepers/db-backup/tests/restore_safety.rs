//! Restores that must not happen, and one that must not half-happen: the source database is
//! refused however it is addressed, a target with tables is refused unless `--clean`, and row
//! counts that differ from the manifest roll the whole restore back.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test harness: a failed setup is a failed test

mod support;

use support::*;

/// A seeded source and one backup of it; returns the archive path.
async fn backed_up(s: &Setup) -> String {
    seed(&s.src, 800);
    let out = run_ok(s.cmd(&["--once", "--output", "json"], &[])).await;
    let file = json(&out)["backup"]["file"].as_str().unwrap().to_owned();
    s.dir.path().join(file).display().to_string()
}

fn restore_into(s: &Setup, from: &str, target: &str, extra: &[&str]) -> tokio::process::Command {
    let mut args = vec!["restore", "--from", from];
    args.extend_from_slice(extra);
    s.cmd(&args, &[("TARGET_DATABASE_URL", target.to_owned())])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_database_is_refused_however_it_is_addressed() {
    let s = Setup::new("dbb_rsrc").await;
    let dump = backed_up(&s).await;
    let before = s.src.checksums();
    // The same URL, and the same database through another host name (only the cluster's
    // identity in the manifest gives it away); --clean changes nothing.
    let other_host = s.src.url.replace("127.0.0.1", "localhost");
    assert_ne!(other_host, s.src.url, "test URL should use 127.0.0.1");
    for target in [s.src.url.clone(), other_host] {
        let (code, _, err) = run(restore_into(&s, &dump, &target, &["--clean"])).await;
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("it is the database this backup was taken from"),
            "{err}"
        );
    }
    // Without DATABASE_URL (a restore host that never knew the source), by the manifest alone.
    for target in [
        s.src.url.clone(),
        s.src.url.replace("127.0.0.1", "localhost"),
    ] {
        let env: Vec<(&'static str, String)> = s
            .env_with(&[("TARGET_DATABASE_URL", target)])
            .into_iter()
            .filter(|(k, _)| *k != "DATABASE_URL")
            .collect();
        let mut cmd = db_backup(&env);
        cmd.args(["restore", "--from", &dump, "--clean"]);
        let (code, _, err) = run(cmd).await;
        assert_eq!(code, 1, "{err}");
        assert!(
            err.contains("it is the database this backup was taken from"),
            "{err}"
        );
    }
    assert_eq!(s.src.checksums(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_writes_nothing_into_the_source_without_a_records_url() {
    let s = Setup::new("dbb_norec").await;
    s.src
        .sql("CREATE TABLE t (x int); INSERT INTO t VALUES (1)");
    let env: Vec<(&'static str, String)> = s
        .env()
        .into_iter()
        .filter(|(k, _)| *k != "BACKUP_RECORDS_DATABASE_URL")
        .collect();
    let mut cmd = db_backup(&env);
    cmd.args(["--once"]);
    run_ok(cmd).await;
    assert_eq!(s.src.tables(), vec!["public.t".to_owned()]);
    assert_eq!(
        s.src
            .sql("SELECT count(*) FROM pg_namespace WHERE nspname = 'keepers'"),
        "0"
    );
    // `migrate` has nothing to create without one.
    let mut cmd = db_backup(&env);
    cmd.arg("migrate");
    assert!(run_ok(cmd).await.contains("nothing to migrate"));
    assert_eq!(s.src.tables(), vec!["public.t".to_owned()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_with_tables_is_refused_unless_clean() {
    let s = Setup::new("dbb_rfull").await;
    let dump = backed_up(&s).await;
    let expected = s.src.checksums();
    let target = TestDb::create("dbb_rfull_target");
    target.sql("CREATE TABLE unrelated (x int); INSERT INTO unrelated VALUES (42)");

    let (code, _, err) = run(restore_into(&s, &dump, &target.url, &[])).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("already has 1 table(s) (public.unrelated)"),
        "{err}"
    );
    assert!(err.contains("--clean"), "{err}");
    assert_eq!(target.tables(), vec!["public.unrelated".to_owned()]);

    // With --clean it goes in; run again over a stale copy of the backup's tables, it replaces
    // them; unrelated objects stay.
    run_ok(restore_into(&s, &dump, &target.url, &["--clean"])).await;
    target.sql("DELETE FROM accounts WHERE id % 2 = 0; INSERT INTO empty_table VALUES (1)");
    assert_ne!(
        target.checksums().get("public.accounts"),
        expected.get("public.accounts")
    );
    let out = run_ok(restore_into(
        &s,
        &dump,
        &target.url,
        &["--clean", "--output", "json"],
    ))
    .await;
    let r = json(&out);
    assert_eq!(r["clean"], true, "{r}");
    assert_eq!(r["checked_before_commit"], true, "{r}");
    let mut got = target.checksums();
    assert_eq!(got.remove("public.unrelated").map(|c| c.0), Some(1));
    assert_eq!(got, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_differing_from_the_manifest_roll_the_whole_restore_back() {
    let s = Setup::new("dbb_rroll").await;
    let dump = backed_up(&s).await;
    // A manifest whose count for one table is off by one (the archive itself is intact, so the
    // checksum passes and pg_restore succeeds).
    let manifest_path = dump.replace(".dump.zst", ".manifest.json");
    let mut m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap()).unwrap();
    let counts = m["row_counts"].as_object_mut().unwrap();
    let (table, n) = counts
        .iter()
        .find(|(_, n)| n.as_i64() > Some(0))
        .map(|(t, n)| (t.clone(), n.as_i64().unwrap()))
        .unwrap();
    counts.insert(table.clone(), (n + 1).into());
    std::fs::write(&manifest_path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();

    let target = TestDb::create("dbb_rroll_target");
    let (code, _, err) = run(restore_into(&s, &dump, &target.url, &[])).await;
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(&format!("{table}: {n} rows, expected {}", n + 1)),
        "{err}"
    );
    assert!(err.contains("nothing committed"), "{err}");
    assert!(
        target.tables().is_empty(),
        "committed: {:?}",
        target.tables()
    );

    // A table name that is not an identifier never reaches SQL.
    let counts = m["row_counts"].as_object_mut().unwrap();
    counts.insert("public.x; DROP DATABASE postgres; --".into(), 1.into());
    std::fs::write(&manifest_path, serde_json::to_vec_pretty(&m).unwrap()).unwrap();
    let (code, _, err) = run(restore_into(&s, &dump, &target.url, &[])).await;
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("is not a schema.table identifier"), "{err}");
    assert!(target.tables().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_manifest_naming_another_backup_is_not_trusted() {
    let s = Setup::new("dbb_rname").await;
    let dump = backed_up(&s).await;
    let base = dump.trim_end_matches(".dump.zst");
    // A copy stored under another backup's name, its manifest still describing the original
    // (and one pointing outside the directory): `verify` would write next to the path its id
    // gives.
    let stamp_at = base.len() - 16;
    let fake = format!("{}20200101T000000Z", &base[..stamp_at]);
    std::fs::copy(&dump, format!("{fake}.dump.zst")).unwrap();
    std::fs::copy(
        format!("{base}.manifest.json"),
        format!("{fake}.manifest.json"),
    )
    .unwrap();
    let before = s.files();
    for cmd in [
        vec!["verify", "--from", "FAKE"],
        vec!["restore", "--from", "FAKE"],
    ] {
        let target = TestDb::create("dbb_rname_t");
        let from = format!("{fake}.dump.zst");
        let args: Vec<&str> = cmd
            .iter()
            .map(|a| if *a == "FAKE" { from.as_str() } else { a })
            .collect();
        let (code, _, err) =
            run(s.cmd(&args, &[("TARGET_DATABASE_URL", target.url.clone())])).await;
        assert_ne!(code, 0, "{err}");
        assert!(
            err.contains("describes") && err.contains("not trusting it"),
            "{err}"
        );
        assert!(target.tables().is_empty());
    }
    assert_eq!(s.files(), before, "something was written");
    // `list` shows the impostor as broken, not as a backup.
    let listed = json(&run_ok(s.cmd(&["list", "--output", "json"], &[])).await);
    let fake_name = std::path::Path::new(&fake)
        .file_name()
        .unwrap()
        .to_str()
        .unwrap();
    let row = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == fake_name)
        .expect("listed");
    assert_ne!(row["status"], "complete", "{row}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_all_names_the_bad_backups_and_list_shows_what_to_decide_by() {
    let s = Setup::new("dbb_vall").await;
    s.src
        .sql("CREATE TABLE t (x int); INSERT INTO t SELECT generate_series(1, 100)");
    let keep = [("BACKUP_KEEP_LAST", "2".to_owned())];
    let mut names = Vec::new();
    for _ in 0..2 {
        let out = run_ok(s.cmd(&["--once", "--output", "json"], &keep)).await;
        names.push(json(&out)["backup"]["file"].as_str().unwrap().to_owned());
    }
    // The older archive rots on disk.
    let rotten = s.dir.path().join(&names[0]);
    let mut bytes = std::fs::read(&rotten).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&rotten, bytes).unwrap();
    let bad_name = names[0].trim_end_matches(".dump.zst").to_owned();
    let good_name = names[1].trim_end_matches(".dump.zst").to_owned();

    let (code, out, err) = run(s.cmd(&["verify", "--all", "--output", "json"], &keep)).await;
    assert_eq!(code, 1, "{out}\n{err}");
    let r = json(&out);
    assert_eq!(r["bad"], serde_json::json!([bad_name]), "{r}");
    assert_eq!(r["backups"].as_array().unwrap().len(), 2, "{r}");
    let (code, out, _) = run(s.cmd(&["verify", "--all"], &keep)).await;
    assert_eq!(code, 1);
    assert!(out.contains(&format!("FAILED {bad_name}")), "{out}");
    assert!(out.contains(&format!("ok     {good_name}")), "{out}");

    let listed = json(&run_ok(s.cmd(&["list", "--output", "json"], &keep)).await);
    assert_eq!(listed[0]["name"], good_name.as_str(), "{listed}");
    assert_eq!(listed[0]["location"], "local", "{listed}");
    assert_eq!(listed[0]["encrypted"], false, "{listed}");
    assert!(listed[0]["age_seconds"].as_i64().unwrap() < 600, "{listed}");
    assert_eq!(listed[1]["verification"]["ok"], false, "{listed}");
    let text = run_ok(s.cmd(&["list"], &keep)).await;
    let header: Vec<&str> = text.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "BACKUP",
            "AGE",
            "SIZE",
            "ENCRYPTED",
            "VERIFIED",
            "WHERE",
            "STATUS"
        ]
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with(&bad_name) && l.contains("FAILED")),
        "{text}"
    );
}

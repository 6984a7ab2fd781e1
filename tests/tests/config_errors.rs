//! Invalid configuration: every case exits 2 with one line naming the setting, and no output
//! ever contains the secret that was given.

use std::process::Command;

use keeper_tests::process::{keeper, texts};

const MNEMONIC: &str = "fancy carpet hello mandate penalty trial consider property top vicious exit rebuild tragic profit urban major total month holiday sudden rib gather media vicious";
const SECRET_WORDS: [&str; 3] = ["carpet", "mandate", "vicious"];

/// Runs the command, expects exit 2 and returns the error text (stderr).
fn expect_config_error(mut cmd: Command, setting: &str) -> String {
    let out = cmd.output().expect("spawn keeper");
    let (stdout, stderr) = texts(&out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "expected one line, got: {stderr}");
    assert!(
        lines[0].contains(setting),
        "{setting} not named in: {stderr}"
    );
    stderr
}

fn pricing() -> Command {
    let mut cmd = keeper("pricing-oracle-keeper");
    cmd.arg("--once").arg("--dry-run");
    cmd
}

/// `binary --once` as a sending keeper (mnemonic and the oracle address in `oracle_var` set,
/// no state directory inherited), with `vars` on top.
fn sending(binary: &str, oracle_var: &str, vars: &[(&str, &str)]) -> Command {
    let mut cmd = keeper(binary);
    cmd.arg("--once")
        .env("KEEPER_MNEMONIC", MNEMONIC)
        .env(
            oracle_var,
            "EQCDM_QGggZ3qMa_f3lRPk4_qLDnLTqdi6OkMAV2NB9r5TG3",
        )
        .env_remove("STATE_DIRECTORY")
        .envs(vars.iter().copied());
    cmd
}

fn assert_no_secret(text: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(!text.contains(s), "secret {s:?} leaked into: {text}");
    }
}

#[test]
fn unknown_key_in_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("k.toml");
    std::fs::write(&file, "[runner]\nintervall = 5\n").unwrap();
    let mut cmd = pricing();
    cmd.arg("--config").arg(&file);
    let err = expect_config_error(cmd, "intervall");
    assert!(err.contains("unknown field"), "{err}");
}

#[test]
fn malformed_url() {
    let mut cmd = pricing();
    cmd.env("TON_RPC_URL", "toncenter.com/api/v2");
    expect_config_error(cmd, "TON_RPC_URL");
}

#[test]
fn invalid_ton_address() {
    let mut cmd = pricing();
    cmd.env("PRICING_ORACLE_ADDRESS", "EQnot_an_address");
    expect_config_error(cmd, "PRICING_ORACLE_ADDRESS");
}

#[test]
fn mnemonic_with_wrong_word_count() {
    let short: Vec<&str> = MNEMONIC.split(' ').take(12).collect();
    let mut cmd = pricing();
    cmd.env("KEEPER_MNEMONIC", short.join(" "));
    let err = expect_config_error(cmd, "KEEPER_MNEMONIC");
    assert!(err.contains("24 words"), "{err}");
    assert_no_secret(&err, &SECRET_WORDS);
}

#[test]
fn mnemonic_word_not_in_list() {
    let mut cmd = pricing();
    cmd.env("KEEPER_MNEMONIC", MNEMONIC.replace("penalty", "penaltyx"));
    let err = expect_config_error(cmd, "KEEPER_MNEMONIC");
    assert!(err.contains("word #5"), "{err}");
    assert_no_secret(&err, &["penaltyx", "carpet"]);
}

#[test]
fn mnemonic_with_bad_seed_version() {
    let mut cmd = pricing();
    cmd.env(
        "KEEPER_MNEMONIC",
        MNEMONIC.replacen("fancy carpet", "carpet fancy", 1),
    );
    let err = expect_config_error(cmd, "KEEPER_MNEMONIC");
    assert!(err.contains("seed version"), "{err}");
    assert_no_secret(&err, &SECRET_WORDS);
}

#[test]
fn mnemonic_file_that_does_not_exist() {
    let mut cmd = pricing();
    cmd.env("KEEPER_MNEMONIC_FILE", "/nonexistent/keeper-mnemonic");
    expect_config_error(cmd, "KEEPER_MNEMONIC_FILE");
}

#[test]
fn zero_interval() {
    let mut cmd = pricing();
    cmd.env("UPDATE_INTERVAL", "0");
    let err = expect_config_error(cmd, "UPDATE_INTERVAL");
    assert!(err.contains("greater than zero"), "{err}");
}

#[test]
fn non_numeric_interval() {
    let mut cmd = pricing();
    cmd.env("UPDATE_INTERVAL", "sixty");
    expect_config_error(cmd, "UPDATE_INTERVAL");
}

#[test]
fn cron_expression_that_does_not_parse() {
    let mut cmd = keeper("db-backup");
    cmd.arg("--once").env("BACKUP_SCHEDULE", "every six hours");
    expect_config_error(cmd, "BACKUP_SCHEDULE");
}

#[test]
fn secrets_in_bad_urls_stay_hidden() {
    let mut cmd = pricing();
    cmd.env(
        "SLACK_WEBHOOK_URL",
        "hooks.slack.com/services/T000/B000/XOXBSECRET",
    );
    let err = expect_config_error(cmd, "SLACK_WEBHOOK_URL");
    assert_no_secret(&err, &["XOXBSECRET"]);

    let mut cmd = pricing();
    cmd.env("DATABASE_URL", "mysql://keeper:hunter2@db/app");
    let err = expect_config_error(cmd, "DATABASE_URL");
    assert_no_secret(&err, &["hunter2"]);
}

#[test]
fn help_shows_no_secret_from_the_environment() {
    let mut cmd = keeper("pricing-oracle-keeper");
    cmd.arg("--help")
        .env("KEEPER_MNEMONIC", MNEMONIC)
        .env("TON_API_KEY", "tonkeysecret");
    let out = cmd.output().unwrap();
    let (stdout, stderr) = texts(&out);
    assert_eq!(out.status.code(), Some(0));
    assert!(stdout.contains("--dry-run"), "{stdout}");
    assert_no_secret(&format!("{stdout}{stderr}"), &["carpet", "tonkeysecret"]);
}

#[test]
fn unknown_flag_is_a_usage_error() {
    let mut cmd = keeper("pricing-oracle-keeper");
    cmd.arg("--frobnicate");
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn out_of_range_numbers_exit_2_naming_the_setting() {
    for (var, value) in [
        // Around 10^28: once a panic in the decimal multiplication.
        ("UPDATE_VALUE_TON", "10000000000000000000000000000"),
        // More than a few TON per message is a typo, not a policy.
        ("UPDATE_VALUE_TON", "50"),
        ("PRICE_DEVIATION_BPS", "10001"),
        ("MAX_DEVIATION_BPS", "20000"),
        ("UPDATE_INTERVAL", "9999999"),
        ("MESSAGE_TTL", "100000"),
        ("SHUTDOWN_GRACE", "100000"),
        ("PRICE_HEARTBEAT", "99999999"),
    ] {
        let mut cmd = pricing();
        cmd.env(var, value);
        expect_config_error(cmd, var);
    }
}

#[test]
fn a_url_that_does_not_parse_is_never_echoed() {
    let mut cmd = pricing();
    cmd.env("ETH_RPC_URL", "eth.example/v3/KEYINPATH123");
    let err = expect_config_error(cmd, "ETH_RPC_URL");
    assert_no_secret(&err, &["KEYINPATH123"]);

    let mut cmd = pricing();
    cmd.env(
        "TON_RPC_URL",
        "https://[toncenter/jsonRPC?api_key=KEYINQUERY456",
    );
    let err = expect_config_error(cmd, "TON_RPC_URL");
    assert_no_secret(&err, &["KEYINQUERY456"]);
}

#[test]
fn core_dumps_are_off_in_a_running_keeper() {
    // Start from a soft limit above zero (the hard limit is higher here), so only the keeper
    // itself can bring both to 0.
    let bin = keeper_tests::process::bin_path("pricing-oracle-keeper");
    let mut child = Command::new("sh")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("LOG_FORMAT", "json")
        .env("RUST_LOG", "warn")
        .env("UPDATE_INTERVAL", "3600")
        .env("METRICS_ADDR", "127.0.0.1:0")
        .env("TON_RPC_URL", "http://127.0.0.1:9/")
        .env("ETH_RPC_URL", "http://127.0.0.1:9/")
        .env("COINGECKO_BASE_URL", "http://127.0.0.1:9/")
        .env("DEFILLAMA_COINS_URL", "http://127.0.0.1:9/")
        .arg("-c")
        .arg("ulimit -S -c unlimited 2>/dev/null || ulimit -S -c 1024; exec \"$0\" --dry-run")
        .arg(&bin)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn keeper");
    let limits_path = format!("/proc/{}/limits", child.id());
    let mut core = None;
    for _ in 0..100 {
        // The limit is set first thing in main; wait until the process runs our code.
        let limits = std::fs::read_to_string(&limits_path).unwrap_or_default();
        core = limits
            .lines()
            .find(|l| l.starts_with("Max core file size"))
            .map(|l| {
                l.split_whitespace()
                    .skip(4)
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ")
            });
        if core.as_deref() == Some("0 0") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(core.as_deref(), Some("0 0"), "{limits_path}");
}

#[test]
fn a_lease_shorter_than_the_cycle_is_refused_when_sending() {
    let sending =
        |vars: &[(&str, &str)]| sending("pricing-oracle-keeper", "PRICING_ORACLE_ADDRESS", vars);
    // The cycle timeout defaults to the interval.
    let err = expect_config_error(
        sending(&[("LEASE_TTL", "60"), ("UPDATE_INTERVAL", "60")]),
        "LEASE_TTL",
    );
    assert!(err.contains("CYCLE_TIMEOUT"), "{err}");
    assert_no_secret(&err, &SECRET_WORDS);
    expect_config_error(
        sending(&[("LEASE_TTL", "100"), ("CYCLE_TIMEOUT", "120")]),
        "LEASE_TTL",
    );
    // A dry run takes no lease, so the same settings are fine there.
    let mut dry = pricing();
    dry.env("LEASE_TTL", "60")
        .env("UPDATE_INTERVAL", "60")
        .env("TON_RPC_URL", "http://127.0.0.1:9/")
        .env("ETH_RPC_URL", "http://127.0.0.1:9/")
        .env("COINGECKO_BASE_URL", "http://127.0.0.1:9/")
        .env("DEFILLAMA_COINS_URL", "http://127.0.0.1:9/");
    let out = dry.output().expect("spawn keeper");
    assert_ne!(out.status.code(), Some(2), "{:?}", texts(&out));
}

#[test]
fn without_a_shared_journal_the_lease_must_outlast_cycle_and_message() {
    let sending =
        |vars: &[(&str, &str)]| sending("pricing-oracle-keeper", "PRICING_ORACLE_ADDRESS", vars);
    // A Redis lease and a journal only this host can read: 100 s do not cover 60 s + 60 s.
    let err = expect_config_error(
        sending(&[
            ("REDIS_URL", "redis://127.0.0.1:9/0"),
            ("LEASE_TTL", "100"),
            ("UPDATE_INTERVAL", "60"),
            ("MESSAGE_TTL", "60"),
        ]),
        "LEASE_TTL",
    );
    assert!(err.contains("MESSAGE_TTL"), "{err}");
    assert_no_secret(&err, &SECRET_WORDS);
}

#[test]
fn sending_without_a_durable_journal_is_refused_unless_memory_is_chosen() {
    let sending =
        |vars: &[(&str, &str)]| sending("bridge-health-keeper", "BRIDGE_ORACLE_ADDRESS", vars);
    // Neither DATABASE_URL nor a state directory: a restart could re-sign, so it does not start.
    let err = expect_config_error(sending(&[]), "KEEPER_JOURNAL");
    assert!(err.contains("KEEPER_STATE_DIR"), "{err}");
    assert_no_secret(&err, &SECRET_WORDS);
    // Only the two documented choices.
    expect_config_error(sending(&[("KEEPER_JOURNAL", "disk")]), "ton.journal");
}

//! Secrets as a security reviewer checks them on the real pricing keeper process: every secret
//! works when given only as a file (`NAME_FILE`, or systemd's `$CREDENTIALS_DIRECTORY`), none is
//! left in `/proc/<pid>/environ` (also when given as a variable), and core dumps are off.

use std::path::Path;
use std::time::Duration;

use keeper_tests::env;
use keeper_tests::pricing::{PricingHarness, TEST_MNEMONIC};
use keeper_tests::process::sigterm;
use keeper_tests::upstreams::{Endpoint, Source};
use redis::AsyncCommands as _;

const SETTLE: Duration = Duration::from_secs(30);
const TON_KEY: &str = "ton-key-FROMFILE-7f3a";
const COINGECKO_KEY: &str = "CG-FROMFILE-91bd";
const ROUTING_KEY: &str = "pdFROMFILEroutingkey000000000000";
const SLACK_PATH: &str = "/services/T0FILE/B0FILE/slackFROMFILE";
const PG_PASSWORD: &str = "pg-pass-FROMFILE";

/// The harness's environment without the variables in `drop`.
fn env_without(h: &PricingHarness, drop: &[&str]) -> Vec<(String, String)> {
    h.env()
        .into_iter()
        .filter(|(k, _)| !drop.contains(&k.as_str()))
        .collect()
}

/// The PostgreSQL URL through the harness's proxy, with a password (the test server trusts
/// loopback, so any password connects: what matters is that the file's URL is the one used).
fn pg_url_with_password(h: &PricingHarness) -> String {
    let mut u = url::Url::parse(&h.pg.url_for(&env::pg_url())).unwrap();
    u.set_password(Some(PG_PASSWORD)).unwrap();
    u.to_string()
}

/// The keeper with exactly `vars` (and PATH) as its environment, output discarded.
fn spawn_with_only(h: &PricingHarness, vars: Vec<(String, String)>) -> tokio::process::Child {
    h.command(&[])
        .env_clear()
        .envs(vars)
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

fn environ(pid: u32) -> String {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    String::from_utf8_lossy(&raw).replace('\0', "\n")
}

fn write(dir: &Path, name: &str, value: &str) -> String {
    let path = dir.join(name);
    // A trailing newline, as editors and `echo` leave it.
    std::fs::write(&path, format!("{value}\n")).unwrap();
    path.display().to_string()
}

async fn redis_keys(prefix: &str) -> Vec<String> {
    let client = redis::Client::open(env::redis_url()).unwrap();
    let mut c = client.get_multiplexed_async_connection().await.unwrap();
    c.keys(format!("{prefix}*")).await.unwrap()
}

async fn pg_rows(schema: &str) -> i64 {
    let pool = sqlx::PgPool::connect(&env::pg_url()).await.unwrap();
    let sql = format!("SELECT count(*) FROM {schema}.pricing_oracle_updates");
    sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .fetch_one(&pool)
        .await
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_secret_works_from_a_file_and_none_is_in_the_environment() {
    let h = PricingHarness::start().await;
    h.ton.require_api_key(Some(TON_KEY));
    h.up.require_coingecko_key("x-cg-demo-api-key", COINGECKO_KEY);
    // Quorum lost first (only CoinGecko answers), so every alert channel gets a firing alert.
    h.up.set_down(Source::Chainlink, true);
    h.up.set_down(Source::Defillama, true);
    h.up.set_down(Source::Pyth, true);

    let dir = tempfile::tempdir().unwrap();
    let creds = tempfile::tempdir().unwrap();
    write(creds.path(), "keeper-mnemonic", TEST_MNEMONIC);
    let files = [
        ("TON_API_KEY_FILE", write(dir.path(), "ton", TON_KEY)),
        (
            "COINGECKO_API_KEY_FILE",
            write(dir.path(), "cg", COINGECKO_KEY),
        ),
        (
            "DATABASE_URL_FILE",
            write(dir.path(), "db", &pg_url_with_password(&h)),
        ),
        (
            "REDIS_URL_FILE",
            write(dir.path(), "redis", &h.redis.url_for(&env::redis_url())),
        ),
        (
            "ALERT_WEBHOOK_URL_FILE",
            write(dir.path(), "hook", &h.sink.url_for("/hook")),
        ),
        (
            "SLACK_WEBHOOK_URL_FILE",
            write(dir.path(), "slack", &h.sink.url_for(SLACK_PATH)),
        ),
        (
            "PAGERDUTY_ROUTING_KEY_FILE",
            write(dir.path(), "pd", ROUTING_KEY),
        ),
        (
            "ETH_RPC_URL_FILE",
            write(dir.path(), "eth", &h.up.eth_rpc_urls().join(",")),
        ),
    ];
    let mut vars = env_without(
        &h,
        &[
            "KEEPER_MNEMONIC",
            "DATABASE_URL",
            "REDIS_URL",
            "ALERT_WEBHOOK_URL",
            "ETH_RPC_URL",
        ],
    );
    vars.extend(files.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    vars.extend([
        (
            "CREDENTIALS_DIRECTORY".to_owned(),
            creds.path().display().to_string(),
        ),
        ("COINGECKO_TIER".to_owned(), "demo".to_owned()),
        ("PAGERDUTY_URL".to_owned(), h.sink.url_for("/v2/enqueue")),
    ]);
    let mut child = spawn_with_only(&h, vars);
    let pid = child.id().unwrap();

    // The three alert channels, each with the secret read from its file.
    for path in ["/hook", SLACK_PATH, "/v2/enqueue"] {
        let got = h
            .sink
            .wait_until(SETTLE, |r| r.path == path)
            .await
            .unwrap_or_else(|| panic!("no alert reached {path}"));
        if path == "/v2/enqueue" {
            assert_eq!(got.json().unwrap()["routing_key"], ROUTING_KEY);
        }
    }
    // Sources back: the keeper publishes, signed with the credential's mnemonic, through the
    // toncenter that demands the file's key.
    h.up.set_down(Source::Chainlink, false);
    h.up.set_down(Source::Defillama, false);
    h.up.set_down(Source::Pyth, false);
    h.wait_externals(1, SETTLE).await;
    let cg = h.up.requests(Endpoint::Coingecko);
    assert!(
        cg.iter()
            .any(|r| r.header("x-cg-demo-api-key") == Some(COINGECKO_KEY)),
        "CoinGecko got the key from the file"
    );
    assert!(
        !h.up.requests(Endpoint::Eth(0)).is_empty(),
        "Chainlink read through the Ethereum endpoints from the file"
    );
    let deadline = std::time::Instant::now() + SETTLE;
    while pg_rows(&h.schema).await == 0 || redis_keys(&h.prefix).await.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the keeper wrote to PostgreSQL and Redis through the URLs from files"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let environ = environ(pid);
    assert!(
        environ.contains("TON_API_KEY_FILE="),
        "read the keeper's own environment: {environ}"
    );
    for secret in [
        TON_KEY,
        COINGECKO_KEY,
        ROUTING_KEY,
        "slackFROMFILE",
        PG_PASSWORD,
        "fancy carpet",
    ] {
        assert!(!environ.contains(secret), "{secret} in environ: {environ}");
    }
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let core = limits
        .lines()
        .find(|l| l.starts_with("Max core file size"))
        .unwrap();
    assert_eq!(
        core.split_whitespace().collect::<Vec<_>>()[4..6],
        ["0", "0"],
        "{core}"
    );
    assert_eq!(sigterm(&mut child).await, Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_given_as_variables_are_wiped_from_the_environment_once_read() {
    let h = PricingHarness::start().await;
    h.ton.require_api_key(Some(TON_KEY));
    let mut vars = env_without(&h, &["DATABASE_URL"]);
    vars.extend([
        ("TON_API_KEY".to_owned(), TON_KEY.to_owned()),
        ("DATABASE_URL".to_owned(), pg_url_with_password(&h)),
        ("PAGERDUTY_ROUTING_KEY".to_owned(), ROUTING_KEY.to_owned()),
        ("PAGERDUTY_URL".to_owned(), h.sink.url_for("/v2/enqueue")),
    ]);
    let mut child = spawn_with_only(&h, vars);
    let pid = child.id().unwrap();
    // Read before the wipe: the keeper signs with the mnemonic and passes toncenter's key check.
    h.wait_externals(1, SETTLE).await;

    let environ = environ(pid);
    assert!(
        environ.contains("PRICING_ORACLE_ADDRESS="),
        "settings that are not secret stay: {environ}"
    );
    for secret in [TON_KEY, ROUTING_KEY, PG_PASSWORD, "fancy carpet"] {
        assert!(!environ.contains(secret), "{secret} in environ: {environ}");
    }
    for name in [
        "TON_API_KEY=",
        "KEEPER_MNEMONIC=",
        "DATABASE_URL=",
        "PAGERDUTY_ROUTING_KEY=",
    ] {
        assert!(!environ.contains(name), "{name} still set: {environ}");
    }
    assert_eq!(sigterm(&mut child).await, Some(0));
}

#[test]
fn an_unreadable_secret_file_names_the_variable_and_exits_2() {
    let out = std::process::Command::new(keeper_tests::process::bin_path("pricing-oracle-keeper"))
        .env_clear()
        .env("TON_API_KEY_FILE", "/nonexistent/ton-api-key")
        .args(["--once", "--dry-run"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("ton.api_key (TON_API_KEY_FILE)")
            && stderr.contains("cannot read /nonexistent/ton-api-key"),
        "{stderr}"
    );
}

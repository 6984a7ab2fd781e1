//! End-to-end harness for the real `bridge-health-keeper` process: local stand-ins for every
//! upstream (DefiLlama bridges/API/coins, Wormholescan, Axelarscan, Ethereum JSON-RPC), the
//! toncenter-compatible chain with a bridge oracle, an alert webhook sink, and real PostgreSQL
//! and Redis.

use std::path::{Path, PathBuf};
use std::time::Duration;

use keeper_runtime::secret::Secret;
use keeper_ton::{Network, TonAddress, Wallet, WalletKeys, WalletVersion};
use redis::AsyncCommands as _;
use serde_json::Value;
use sqlx::Row as _;
use tokio::process::{Child, Command};

use crate::bridges::BridgeApis;
use crate::env;
use crate::pricing::TEST_MNEMONIC;
use crate::process::{free_port, keeper_command, scrape_metrics, spawn_logged};
use crate::sink::Sink;
use crate::toncenter::ToncenterServer;
use crate::upstreams::{ALLOW_LOCK, Ts, UpstreamsHandle};

const BIN: &str = "bridge-health-keeper";
/// The TON Bridge's Ethereum contract, whose `allowLock()` the stand-in answers.
pub const TON_BRIDGE: &str = "0xb323692b6d4DB96af1f52E4499a2bd0Ded9af3C5";
/// DefiLlama coin keys of the peg checks' jettons (jUSDT, jUSDC, oUSDT), quoted at par at start.
pub const PEG_KEYS: [&str; 3] = [
    "ton:EQBynBO23ywHy_CgarY9NK9FTz0yDsG82PtcbSTQgGoXwiuA",
    "ton:EQB-MPwrd1G6WKNkLz_VnV6WqBDd142KMQv-g1O-8QUA3728",
    "ton:EQC_1YoM8RBixN95lz7odcF3Vrkc_N8Ne7gQi7Abtlet_Efi",
];
/// How long a change may take to show (publishes, alerts).
pub const SETTLE: Duration = Duration::from_secs(30);

/// Everything around one bridge keeper process.
pub struct BridgeHarness {
    /// The bridge APIs' stand-ins.
    pub apis: BridgeApis,
    /// Price and Ethereum stand-ins (peg quotes, `allowLock()`).
    pub up: UpstreamsHandle,
    /// The chain.
    pub ton: ToncenterServer,
    /// The bridge oracle on it.
    pub oracle: TonAddress,
    /// The keeper's mnemonic.
    pub mnemonic: &'static str,
    /// The keeper's wallet, funded and registered with the oracle.
    pub wallet: Wallet,
    /// Receives alert webhooks.
    pub sink: Sink,
    /// The keeper's tables' schema.
    pub schema: String,
    /// The keeper's Redis key prefix.
    pub prefix: String,
    /// Ops server address.
    pub metrics_addr: String,
    /// The test-speed copy of the shipped configuration.
    pub config: PathBuf,
    /// Holds the configuration files; tests may add their own.
    pub dir: tempfile::TempDir,
}

/// The shipped config with test-speed timeouts (every bridge and signal as shipped).
fn test_config(dir: &Path) -> PathBuf {
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/bridge-health.toml");
    let text = std::fs::read_to_string(shipped).expect("shipped config");
    let anchor = "(a signal may set its own `timeout`).\ntimeout = 10";
    assert!(text.contains(anchor), "config layout changed");
    let text = text
        .replace(anchor, "(a signal may set its own `timeout`).\ntimeout = 3")
        .replace("retry_min_delay_ms = 200", "retry_min_delay_ms = 50")
        .replace("retry_after_cap = 10", "retry_after_cap = 2")
        .replace("poll_interval_ms = 2000", "poll_interval_ms = 200");
    let path = dir.join("bridge-health.toml");
    std::fs::write(&path, text).expect("write config");
    path
}

impl BridgeHarness {
    /// Starts every stand-in, all healthy; the keeper wallet is funded and registered with the
    /// oracle.
    pub async fn start() -> Self {
        Self::on_chain(ToncenterServer::start().await, TEST_MNEMONIC).await
    }

    /// [`BridgeHarness::start`] on a chain that other keepers share, with the wallet of
    /// `mnemonic` (another port of the chain counts this keeper's requests apart: see
    /// [`ToncenterServer::add_port`]).
    pub async fn on_chain(ton: ToncenterServer, mnemonic: &'static str) -> Self {
        keeper_runtime::install_crypto_provider();
        let apis = BridgeApis::start().await;
        let up = UpstreamsHandle::start().await;
        for key in PEG_KEYS {
            up.set_defillama_coin(key, "0.9996", Ts::Fresh);
        }
        up.set_eth_bool(TON_BRIDGE, ALLOW_LOCK, true);
        let oracle = ton.new_oracle();
        let keys = WalletKeys::from_mnemonic(&Secret::new(mnemonic)).expect("test mnemonic");
        let wallet = Wallet::new(keys, WalletVersion::V5r1, Network::Mainnet).expect("wallet");
        ton.fund(wallet.address(), 50_000_000_000);
        ton.register_keeper(&oracle, wallet.keys().public_key());
        let dir = tempfile::tempdir().expect("tempdir");
        Self {
            config: test_config(dir.path()),
            dir,
            apis,
            up,
            ton,
            oracle,
            mnemonic,
            wallet,
            sink: Sink::start().await,
            schema: env::unique("bridges"),
            prefix: format!("{}:", env::unique("bridges")),
            metrics_addr: format!("127.0.0.1:{}", free_port()),
        }
    }

    /// The keeper's environment: every upstream, chain, store and alert channel is local.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = self.up.env();
        let mut add = |k: &str, v: String| env.push((k.to_owned(), v));
        add("DEFILLAMA_BRIDGES_URL", self.apis.defillama_bridges.clone());
        add("DEFILLAMA_API_URL", self.apis.defillama_api.clone());
        add("WORMHOLESCAN_URL", self.apis.wormholescan.clone());
        add("AXELARSCAN_URL", self.apis.axelarscan.clone());
        add("SOURCE_TIMEOUT", "3".into());
        add("TON_RPC_URL", self.ton.jsonrpc_url());
        add("TON_MAX_RPS", "1000".into());
        add("KEEPER_MNEMONIC", self.mnemonic.into());
        add("BRIDGE_ORACLE_ADDRESS", self.oracle.to_base64_url());
        add("UPDATE_INTERVAL", "1".into());
        add("CYCLE_TIMEOUT", "20".into());
        add("DATABASE_URL", env::pg_url());
        add("DB_SCHEMA", self.schema.clone());
        add("REDIS_URL", env::redis_url());
        add("REDIS_PREFIX", self.prefix.clone());
        add("ALERT_WEBHOOK_URL", self.sink.url());
        add("METRICS_ADDR", self.metrics_addr.clone());
        add("LOG_FORMAT", "json".into());
        add("RUST_LOG", "info".into());
        env
    }

    /// A command for the keeper with the test configuration and this harness's environment.
    pub fn command(&self, args: &[&str]) -> Command {
        self.command_with(&self.config, args)
    }

    /// Like [`BridgeHarness::command`] with another configuration file.
    pub fn command_with(&self, config: &Path, args: &[&str]) -> Command {
        let mut cmd = self.command_without_config(args);
        cmd.arg("--config").arg(config);
        cmd
    }

    /// The binary on its built-in defaults (the shipped example file compiled in).
    pub fn command_without_config(&self, args: &[&str]) -> Command {
        let mut cmd = keeper_command(BIN);
        cmd.envs(self.env()).args(args);
        cmd
    }

    /// Starts the daemon; its logs go to a file named after the schema, for post-mortems.
    pub fn spawn(&self) -> Child {
        spawn_logged(self.command(&[]), &self.schema)
    }

    /// Runs one cycle with `--output json`; returns the exit code and the summary.
    pub async fn once(&self, extra: &[&str]) -> (i32, Value) {
        let mut args = vec!["--once", "--output", "json"];
        args.extend_from_slice(extra);
        let out = self.command(&args).output().await.expect("run --once");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let doc: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not one JSON document ({e}): {stdout}\nstderr: {}",
                String::from_utf8_lossy(&out.stderr)
            )
        });
        (out.status.code().unwrap_or(-1), doc)
    }

    /// `--once --output json` with PostgreSQL only (its wallet lease ends with the process, so
    /// consecutive runs may each send).
    pub async fn once_pg(&self) -> (i32, Value) {
        let out = self
            .command(&["--once", "--output", "json"])
            .env_remove("REDIS_URL")
            .output()
            .await
            .expect("run --once");
        let doc: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code().unwrap_or(-1), doc)
    }

    /// External messages the chain accepted.
    pub fn accepted(&self) -> usize {
        self.ton.accepted_externals()
    }

    /// Waits until the chain accepted `n` external messages.
    pub async fn wait_externals(&self, n: usize) {
        self.ton.wait_accepted(n, SETTLE).await;
    }

    /// Accepted `update_bridge_status` events: (bridge id, online, last_seen), in order.
    pub fn bridge_events(&self) -> Vec<(u16, bool, u32)> {
        self.ton
            .oracle_events()
            .iter()
            .filter(|e| e.op == 4 && e.accepted)
            .map(|e| (e.id, e.value == 1, e.timestamp))
            .collect()
    }

    /// Waits for the `status` notification (`firing`, `resolved`) of alert `key`.
    pub async fn alert(&self, key: &str, status: &str) -> Value {
        let hit = self
            .sink
            .wait_until(SETTLE, |r| {
                r.json()
                    .is_some_and(|j| j["key"] == key && j["status"] == status)
            })
            .await;
        hit.and_then(|r| r.json())
            .unwrap_or_else(|| panic!("no {status} notification for {key}"))
    }

    /// Scrapes `/metrics` (empty when the server does not answer).
    pub async fn metrics(&self) -> String {
        scrape_metrics(&self.metrics_addr).await
    }

    /// Latest snapshot per bridge id: (status, is_online, published).
    pub async fn snapshots(&self) -> Vec<(i32, String, bool, bool)> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(&env::pg_url())
            .await
            .expect("connect to PostgreSQL");
        let sql = format!(
            "SELECT DISTINCT ON (bridge_id) bridge_id, status, is_online, published \
             FROM {}.bridge_health_snapshots ORDER BY bridge_id, id DESC",
            self.schema
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(&pool)
            .await
            .unwrap_or_default();
        rows.into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
            .collect()
    }

    /// Polls [`BridgeHarness::snapshots`] until `done` holds (the keeper records after it
    /// publishes and alerts, so a test that saw an alert may still be ahead of the row).
    pub async fn snapshots_when(
        &self,
        done: impl Fn(&[(i32, String, bool, bool)]) -> bool,
    ) -> Vec<(i32, String, bool, bool)> {
        let deadline = std::time::Instant::now() + SETTLE;
        loop {
            let snaps = self.snapshots().await;
            if done(&snaps) || std::time::Instant::now() > deadline {
                return snaps;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// Polls [`BridgeHarness::redis_hash`] of bridge `id` until its `status` is `status`.
    pub async fn redis_status_when(&self, id: u8, status: &str) -> Option<String> {
        let deadline = std::time::Instant::now() + SETTLE;
        loop {
            let now = self.redis_hash(id).await.get("status").cloned();
            if now.as_deref() == Some(status) || std::time::Instant::now() > deadline {
                return now;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    /// The bridge's Redis hash.
    pub async fn redis_hash(&self, id: u8) -> std::collections::HashMap<String, String> {
        let client = redis::Client::open(env::redis_url()).expect("redis url");
        let mut conn = client
            .get_multiplexed_async_connection()
            .await
            .expect("redis");
        conn.hgetall(format!("{}bridge_health:{id}", self.prefix))
            .await
            .expect("hgetall")
    }
}

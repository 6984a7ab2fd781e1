//! End-to-end harness for the real `pricing-oracle-keeper` process: local CoinGecko, DefiLlama,
//! Pyth Hermes and Ethereum stand-ins, a toncenter-compatible chain with a PriceOracle, a webhook sink for
//! alerts, and real PostgreSQL and Redis reached through cuttable TCP proxies.

use std::time::Duration;

use keeper_runtime::secret::Secret;
use keeper_ton::{Network, WalletVersion};
use keeper_ton::{TonAddress, Wallet, WalletKeys};
use tokio::process::{Child, Command};

use crate::env;
use crate::process::{free_port, keeper_command, scrape_metrics, spawn_logged};
use crate::proxy::TcpProxy;
use crate::sink::Sink;
use crate::toncenter::ToncenterServer;
use crate::upstreams::UpstreamsHandle;

/// A valid 24-word TON mnemonic (the published V4R2 vector), used as the test keeper's key.
pub const TEST_MNEMONIC: &str = "fancy carpet hello mandate penalty trial consider property top vicious exit rebuild tragic profit urban major total month holiday sudden rib gather media vicious";
/// Another valid mnemonic: a second identity (a fallback keeper, or a second keeper with a
/// wallet of its own).
pub const OTHER_MNEMONIC: &str = "section garden tomato dinner season dice renew length useful spin trade intact use universe what post spike keen mandate behind concert egg doll rug";

/// Everything around one keeper process.
pub struct PricingHarness {
    /// Price stand-ins.
    pub up: UpstreamsHandle,
    /// The chain.
    pub ton: ToncenterServer,
    /// The PriceOracle on it.
    pub oracle: TonAddress,
    /// The keeper's wallet.
    pub wallet: Wallet,
    /// Receives alert webhooks.
    pub sink: Sink,
    /// Proxy in front of PostgreSQL.
    pub pg: TcpProxy,
    /// Proxy in front of Redis.
    pub redis: TcpProxy,
    /// The keeper's tables' schema.
    pub schema: String,
    /// The keeper's Redis key prefix.
    pub prefix: String,
    /// Ops server address.
    pub metrics_addr: String,
    /// Extra environment for the next start.
    pub extra_env: Vec<(String, String)>,
}

impl PricingHarness {
    /// Starts every stand-in; the keeper wallet is funded but not deployed, and registered with
    /// the oracle.
    pub async fn start() -> Self {
        Self::with_wallet_balance(50_000_000_000).await
    }

    /// [`PricingHarness::start`] with a keeper wallet holding `nanoton` (a wallet with little
    /// money: see [`crate::toncenter`]).
    pub async fn with_wallet_balance(nanoton: u128) -> Self {
        Self::build(ToncenterServer::start().await, nanoton).await
    }

    /// [`PricingHarness::start`] on a chain that other keepers share (another port of it
    /// counts this keeper's requests apart: see [`ToncenterServer::add_port`]).
    pub async fn on_chain(ton: ToncenterServer) -> Self {
        Self::build(ton, 50_000_000_000).await
    }

    async fn build(ton: ToncenterServer, nanoton: u128) -> Self {
        keeper_runtime::install_crypto_provider();
        let up = UpstreamsHandle::start().await;
        let oracle = ton.new_oracle();
        let keys = WalletKeys::from_mnemonic(&Secret::new(TEST_MNEMONIC)).expect("test mnemonic");
        let wallet = Wallet::new(keys, WalletVersion::V5r1, Network::Mainnet).expect("wallet");
        ton.fund(wallet.address(), nanoton);
        ton.register_keeper(&oracle, wallet.keys().public_key());
        let sink = Sink::start().await;
        let pg = TcpProxy::for_url(&env::pg_url()).await.expect("pg proxy");
        let redis = TcpProxy::for_url(&env::redis_url())
            .await
            .expect("redis proxy");
        Self {
            up,
            ton,
            oracle,
            wallet,
            sink,
            pg,
            redis,
            schema: env::unique("pricing"),
            prefix: format!("{}:", env::unique("pricing")),
            metrics_addr: format!("127.0.0.1:{}", free_port()),
            extra_env: Vec::new(),
        }
    }

    /// The keeper's environment: every upstream, chain, store and alert channel is local.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = self.up.env();
        env.extend([
            ("TON_RPC_URL".to_owned(), self.ton.jsonrpc_url()),
            // The stand-in has no rate limit; the default budget (1 request/s without a key)
            // would only slow the tests down.
            ("TON_MAX_RPS".to_owned(), "1000".to_owned()),
            ("KEEPER_MNEMONIC".to_owned(), TEST_MNEMONIC.to_owned()),
            (
                "PRICING_ORACLE_ADDRESS".to_owned(),
                self.oracle.to_base64_url(),
            ),
            ("UPDATE_INTERVAL".to_owned(), "1".to_owned()),
            // Source retries against a dead stand-in take longer than one tick.
            ("CYCLE_TIMEOUT".to_owned(), "15".to_owned()),
            ("DATABASE_URL".to_owned(), self.pg.url_for(&env::pg_url())),
            ("DB_SCHEMA".to_owned(), self.schema.clone()),
            (
                "REDIS_URL".to_owned(),
                self.redis.url_for(&env::redis_url()),
            ),
            ("REDIS_PREFIX".to_owned(), self.prefix.clone()),
            ("ALERT_WEBHOOK_URL".to_owned(), self.sink.url()),
            ("METRICS_ADDR".to_owned(), self.metrics_addr.clone()),
            ("LOG_FORMAT".to_owned(), "json".to_owned()),
            ("RUST_LOG".to_owned(), "info".to_owned()),
        ]);
        env.extend(self.extra_env.iter().cloned());
        env
    }

    /// A command for the keeper binary with this harness's environment (and nothing inherited
    /// but PATH and HOME).
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = keeper_command("pricing-oracle-keeper");
        cmd.envs(self.env()).args(args);
        cmd
    }

    /// The keeper beside the running executable (a benchmark's release build, or a test's)
    /// with this harness's environment less PostgreSQL and Redis: the benchmarks measure the
    /// keeper alone. A sending keeper needs a durable in-flight journal, so it gets a state
    /// directory of its own, kept across the runs of one harness as a host keeps it.
    pub fn command_without_stores(&self) -> Command {
        let state = std::env::temp_dir().join(format!("{}-state", self.schema));
        std::fs::create_dir_all(&state).expect("create the keeper's state directory");
        let mut cmd = Command::new(crate::process::bin_path("pricing-oracle-keeper"));
        cmd.env_clear()
            .envs(
                self.env()
                    .into_iter()
                    .filter(|(k, _)| k != "DATABASE_URL" && k != "REDIS_URL"),
            )
            .env("KEEPER_STATE_DIR", state)
            .kill_on_drop(true);
        cmd
    }

    /// Starts the daemon; its logs go to a file named after the schema, for post-mortems.
    pub fn spawn(&self) -> Child {
        spawn_logged(self.command(&[]), &self.schema)
    }

    /// External messages the chain accepted.
    pub fn accepted_externals(&self) -> usize {
        self.ton.accepted_externals()
    }

    /// Waits until the chain accepted `n` external messages.
    pub async fn wait_externals(&self, n: usize, timeout: Duration) {
        self.ton.wait_accepted(n, timeout).await;
    }

    /// Accepted `update_price` events grouped per tick (one tick shares one observation
    /// timestamp): `(asset id, price_micro)` in execution order.
    pub fn price_batches(&self) -> Vec<Vec<(u16, u128)>> {
        let mut batches: Vec<Vec<(u16, u128)>> = Vec::new();
        let mut last_ts = None;
        for e in self
            .ton
            .oracle_events()
            .iter()
            .filter(|e| e.op == 3 && e.accepted)
        {
            if last_ts != Some(e.timestamp) {
                batches.push(Vec::new());
                last_ts = Some(e.timestamp);
            }
            if let Some(b) = batches.last_mut() {
                b.push((e.id, e.value));
            }
        }
        batches
    }

    /// Scrapes `/metrics`.
    pub async fn metrics(&self) -> String {
        scrape_metrics(&self.metrics_addr).await
    }
}

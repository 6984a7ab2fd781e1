//! The process around a chain keeper. A keeper supplies its settings, its metric families, its
//! tick and its `status` table ([`ChainKeeper`]); [`run`] does the rest: the command line and
//! the common subcommands, configuration loading, telemetry and the ops server, alerts, storage
//! and the wallet lease, the runner (`--once` or the interval loop), exit codes and `--output`.

use std::future::Future;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::{CommandFactory as _, FromArgMatches as _};

mod freshness;
mod wallet;

pub use freshness::Freshness;
pub use wallet::{
    EPHEMERAL_NOTE, KeeperCommand, WalletAction, WalletOutput, WalletSetupError, holder_id,
    load_wallet, wallet_command,
};

use crate::cache::ChainStore;
use crate::metrics::ChainMetrics;
use crate::{Delivery, DeliveryConfig, Journal, Publisher, TonAddress, TonSettings, Toncenter};
use keeper_runtime::alert::Alerter;
use keeper_runtime::cli::{
    CommonArgs, EXIT_FAILED, EXIT_OK, EXIT_USAGE, Needs, Output, Threads, migrate_command,
    print_cycle, run_async_on,
};
use keeper_runtime::config::{
    AlertSettings, ConfigError, Env, EnvBinding, ProcessEnv, RunnerSettings, StorageSettings,
    TelemetrySettings,
};
use keeper_runtime::runner::{Cycle, CycleReport, Runner, Shutdown};
use keeper_runtime::secret::Secret;
use keeper_runtime::telemetry::logging::init_tracing;
use keeper_runtime::telemetry::server::serve_ops;
use keeper_runtime::telemetry::{Health, Metrics};

/// The command line every chain keeper takes.
#[derive(Debug, clap::Parser)]
pub struct ChainCli {
    /// Flags shared by every keeper.
    #[command(flatten)]
    pub common: CommonArgs,
    /// Publish every subject with a value this tick, whatever the thresholds.
    #[arg(long, global = true)]
    pub force: bool,
    /// What to do (default: run).
    #[command(subcommand)]
    pub command: Option<KeeperCommand>,
}

/// The settings sections the runtime reads from a chain keeper's configuration.
pub trait ChainConfig: Send + Sync + 'static {
    /// `[ton]`
    fn ton(&self) -> &TonSettings;
    /// `[ton]`, to take the mnemonic out of it.
    fn ton_mut(&mut self) -> &mut TonSettings;
    /// `[runner]`
    fn runner(&self) -> &RunnerSettings;
    /// `[telemetry]`
    fn telemetry(&self) -> &TelemetrySettings;
    /// `[alerts]`
    fn alerts(&self) -> &AlertSettings;
    /// `[storage]`
    fn storage(&self) -> &StorageSettings;
    /// The oracle this keeper publishes to, as configured (validated at load).
    fn oracle(&self) -> Option<&str>;
}

/// Validated settings and the resolved mnemonic.
pub struct Loaded<C> {
    /// The settings.
    pub config: C,
    /// The keeper's mnemonic, if one was given.
    pub mnemonic: Option<Arc<Secret>>,
}

/// Everything a chain keeper's tick is built from.
pub struct ChainParts<C> {
    /// The settings.
    pub config: Arc<C>,
    /// The oracle (`publisher.oracle()`), delivery, the wallet lease and dry runs.
    pub publisher: Publisher,
    /// Records and cache.
    pub store: ChainStore,
    /// Alerts.
    pub alerter: Alerter,
    /// The registry, shared families included.
    pub metrics: Arc<Metrics>,
    /// What `/healthz`, `/readyz` and `/status` show.
    pub health: Health,
    /// `--force`.
    pub force: bool,
    /// Said in every summary (ephemeral key…).
    pub notes: Vec<String>,
}

/// A keeper that publishes to an oracle contract from its own TON wallet.
pub trait ChainKeeper: 'static {
    /// Label of metrics, alerts and logs (`pricing-oracle`).
    const NAME: &'static str;
    /// Binary name (`pricing-oracle-keeper`).
    const SERVICE: &'static str;
    /// One line for `--help`.
    const ABOUT: &'static str;
    /// The setting and env name of the oracle address, for messages.
    const ORACLE_SETTING: &'static str;
    /// Validated settings.
    type Config: ChainConfig;
    /// The keeper's own metric families.
    type Families: Send + Sync + 'static;
    /// One tick.
    type Cycle: Cycle + 'static;

    /// Loads defaults < file < environment and validates every setting.
    fn load(file: Option<&Path>, env: &dyn Env) -> Result<Self::Config, ConfigError>;

    /// The environment variables `load` reads; the secret ones are wiped once it has.
    fn env_bindings() -> Vec<EnvBinding>;

    /// Registers the keeper's own metric families.
    fn register(metrics: &mut Metrics) -> Self::Families;

    /// Builds the tick.
    fn cycle(
        parts: ChainParts<Self::Config>,
        families: Self::Families,
    ) -> anyhow::Result<Self::Cycle>;

    /// The `status` subcommand: what the oracle holds, printed as text or JSON; the exit code.
    fn status(
        config: &Self::Config,
        oracle: TonAddress,
        transport: &Toncenter,
        output: Output,
    ) -> impl Future<Output = anyhow::Result<i32>>;
}

/// Parses the command line and runs the keeper; the process exit status.
pub fn main<K: ChainKeeper>() -> ExitCode {
    keeper_runtime::disable_core_dumps();
    let command = ChainCli::command()
        .name(K::SERVICE)
        .bin_name(K::SERVICE)
        .about(K::ABOUT)
        .version(env!("CARGO_PKG_VERSION"));
    let cli = match ChainCli::from_arg_matches(&command.get_matches()) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    let needs = cli
        .command
        .as_ref()
        .unwrap_or(&KeeperCommand::Run)
        .needs(cli.common.dry_run);
    let loaded = match load::<K>(cli.common.config.as_deref(), &ProcessEnv, needs) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_USAGE as u8);
        }
    };
    // Still one thread here: nothing else can be reading the environment.
    keeper_runtime::scrub_secret_env(&K::env_bindings(), &[]);
    // A keeper only waits on I/O: one thread is enough and smaller. OTLP export wants a
    // second one so its last spans can be flushed while the process stops.
    let threads = if loaded.config.telemetry().otlp_endpoint.is_some() {
        Threads::Two
    } else {
        Threads::One
    };
    run_async_on(threads, run::<K>(cli, loaded))
}

/// Runs `cli` for keeper `K` with its loaded configuration: starts telemetry and dispatches the
/// subcommand; returns the exit code (2 for configuration errors, 1 for failures).
pub async fn run<K: ChainKeeper>(cli: ChainCli, loaded: Loaded<K::Config>) -> i32 {
    keeper_runtime::install_crypto_provider();
    let command = cli.command.clone().unwrap_or(KeeperCommand::Run);
    let _telemetry = match init_tracing(loaded.config.telemetry(), K::SERVICE) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let output = cli.common.output;
    let result = match command {
        KeeperCommand::Run => run_keeper::<K>(&cli, loaded).await,
        KeeperCommand::Wallet {
            action: Some(WalletAction::Sweep { to }),
            ..
        } => sweep::<K>(loaded, &to, cli.common.dry_run, output).await,
        KeeperCommand::Wallet { offline, .. } => wallet(loaded, offline, output).await,
        KeeperCommand::Status => status::<K>(loaded, output).await,
        KeeperCommand::Migrate => migrate_command(loaded.config.storage())
            .await
            .map(|()| EXIT_OK)
            .context("applying migrations"),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "stopped");
            eprintln!("error: {e:#}");
            EXIT_FAILED
        }
    }
}

/// Loads `K`'s settings and requires what the command `needs`: the oracle address, a valid
/// mnemonic (never echoed), a database.
pub fn load<K: ChainKeeper>(
    file: Option<&Path>,
    env: &dyn Env,
    needs: Needs,
) -> Result<Loaded<K::Config>, ConfigError> {
    let mut config = K::load(file, env)?;
    // Sending takes the wallet lease (dry runs and read-only commands do not).
    if needs.mnemonic && needs.oracle {
        keeper_runtime::config::validate_lease_ttl(config.runner(), config.storage())?;
    }
    if needs.oracle && config.oracle().is_none() {
        return Err(ConfigError::new(
            K::ORACLE_SETTING,
            "the oracle address is required to publish (only --dry-run works without one)",
        ));
    }
    let mnemonic = crate::take_mnemonic(config.ton_mut())?;
    match &mnemonic {
        Some(m) => crate::validate_mnemonic("ton.mnemonic (KEEPER_MNEMONIC)", m)?,
        None if needs.mnemonic => {
            return Err(ConfigError::new(
                "ton.mnemonic (KEEPER_MNEMONIC)",
                "no mnemonic: set KEEPER_MNEMONIC_FILE, a systemd credential keeper-mnemonic or \
                 KEEPER_MNEMONIC (only --dry-run works without one)",
            ));
        }
        None => {}
    }
    if needs.database && config.storage().database_url.is_none() {
        return Err(ConfigError::new(
            "storage.database_url (DATABASE_URL)",
            "required by this command",
        ));
    }
    Ok(Loaded { config, mnemonic })
}

fn oracle_address<K: ChainKeeper>(config: &K::Config) -> anyhow::Result<Option<TonAddress>> {
    config
        .oracle()
        .map(|a| crate::parse_address(a).context(K::ORACLE_SETTING))
        .transpose()
}

async fn run_keeper<K: ChainKeeper>(
    cli: &ChainCli,
    loaded: Loaded<K::Config>,
) -> anyhow::Result<i32> {
    let dry_run = cli.common.dry_run;
    let (wallet, ephemeral_note) = load_wallet(loaded.config.ton(), loaded.mnemonic)
        .await
        .context("setting up the keeper wallet")?;
    // The mnemonic went into the derivation and was wiped there: only the key remains.
    let config = Arc::new(loaded.config);
    let mut registry = Metrics::new(K::NAME).with::<ChainMetrics>();
    let families = K::register(&mut registry);
    let metrics = Arc::new(registry);
    let shutdown = Shutdown::new();
    shutdown
        .install_signal_handlers()
        .context("installing signal handlers")?;
    let health = Health::new(
        K::NAME,
        config.runner().period(),
        &["config", "wallet", "upstreams"],
    );
    health.mark_ready("config");
    let alerter = Alerter::start(config.alerts(), K::NAME, metrics.clone());
    let store = ChainStore::connect(config.storage(), metrics.clone(), alerter.clone()).await;
    let transport = Toncenter::new(config.ton())
        .context("toncenter transport")?
        .observed(metrics.clone(), alerter.clone());
    let delivery = Delivery::new(
        transport,
        wallet,
        DeliveryConfig::from_settings(config.ton()),
    )
    .with_metrics(metrics.clone())
    .with_journal(journal(config.ton(), &store, dry_run));
    let lease = (!dry_run).then(|| store.lease(&delivery.wallet().address_raw(), &holder_id()));
    let publisher = Publisher::new(
        delivery,
        lease,
        config.ton(),
        alerter.clone(),
        metrics.clone(),
        health.clone(),
    )
    .to_oracle(oracle_address::<K>(&config)?, K::ORACLE_SETTING);
    let parts = ChainParts {
        config: config.clone(),
        publisher,
        store,
        alerter: alerter.clone(),
        metrics: metrics.clone(),
        health: health.clone(),
        force: cli.force,
        notes: ephemeral_note.into_iter().collect(),
    };
    let mut cycle = K::cycle(parts, families)?;
    let mut runner = Runner::new(
        K::NAME,
        config.runner(),
        metrics.clone(),
        health.clone(),
        alerter,
        shutdown.clone(),
    );

    if cli.common.once {
        let run = runner.run_once(&mut cycle).await;
        print_cycle(
            cycle.last_report(),
            CycleReport::to_text,
            run.result.as_ref().err().map(|e| e.message()),
            cli.common.output,
        );
        return Ok(run.exit_code());
    }

    let addr = config.telemetry().metrics_addr.context("metrics address")?;
    let ops = serve_ops(addr, metrics, health, shutdown.clone())
        .await
        .context("ops server")?;
    let code = runner.run_forever(&mut cycle).await;
    shutdown.trigger();
    ops.stopped().await;
    Ok(code)
}

/// Where in-flight messages are journaled: PostgreSQL, else the state directory (`ton.state_dir`
/// / `KEEPER_STATE_DIR`, else systemd's `$STATE_DIRECTORY`), else nowhere, which is said once.
fn journal(ton: &TonSettings, store: &ChainStore, dry_run: bool) -> Journal {
    let state_dir = ton.state_dir.clone().or_else(|| {
        // systemd passes several directories colon-separated; the first is ours.
        std::env::var("STATE_DIRECTORY")
            .ok()
            .and_then(|d| d.split(':').next().map(std::path::PathBuf::from))
            .filter(|d| !d.as_os_str().is_empty())
    });
    let journal = Journal::choose(store, state_dir);
    if !dry_run {
        if journal.is_durable() {
            tracing::info!(journal = %journal.describe(), "in-flight messages are journaled");
        } else {
            tracing::warn!(
                "no DATABASE_URL and no state directory (KEEPER_STATE_DIR, systemd StateDirectory=): \
                 the message in flight is kept in memory only, so a restart may sign a second body \
                 for its seqno while the first can still land"
            );
        }
    }
    journal
}

async fn wallet<C: ChainConfig>(
    loaded: Loaded<C>,
    offline: bool,
    output: Output,
) -> anyhow::Result<i32> {
    let ton = loaded.config.ton();
    let (wallet, _) = load_wallet(ton, loaded.mnemonic).await?;
    wallet_command(ton, &wallet, offline, output)
        .await
        .context("reading the wallet from toncenter (use --offline to skip)")?;
    Ok(EXIT_OK)
}

/// `wallet sweep --to ADDRESS [--dry-run]`: the whole balance to the successor wallet, through
/// the same journal as the keeper, so a message of the keeper still in flight stops it.
async fn sweep<K: ChainKeeper>(
    loaded: Loaded<K::Config>,
    to: &str,
    dry_run: bool,
    output: Output,
) -> anyhow::Result<i32> {
    let ton = loaded.config.ton();
    let to = crate::parse_address(to).context("wallet sweep --to")?;
    // The mnemonic goes into the derivation and is wiped there.
    let (wallet, _) = load_wallet(ton, loaded.mnemonic).await?;
    let metrics = Arc::new(Metrics::new(K::NAME).with::<ChainMetrics>());
    let store = ChainStore::connect(
        loaded.config.storage(),
        metrics.clone(),
        Alerter::disabled(),
    )
    .await;
    let transport = Toncenter::new(ton).context("toncenter transport")?;
    let delivery = Delivery::new(transport, wallet, DeliveryConfig::from_settings(ton))
        .with_journal(journal(ton, &store, true));
    let report = delivery
        .sweep(&to, dry_run)
        .await
        .context("sweeping the wallet")?;
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        ),
        Output::Text => {
            println!("from:     {}", report.from);
            println!("to:       {}", report.to);
            println!(
                "balance:  {} TON",
                keeper_runtime::cli::nano_to_ton(report.balance_nanoton)
            );
            println!("seqno:    {}", report.seqno);
            if let Some(boc) = &report.boc {
                println!("boc:      {boc}");
            }
            if let Some(after) = report.balance_after_nanoton {
                println!("left:     {} TON", keeper_runtime::cli::nano_to_ton(after));
            }
            for note in &report.notes {
                println!("note:     {note}");
            }
        }
    }
    Ok(EXIT_OK)
}

async fn status<K: ChainKeeper>(loaded: Loaded<K::Config>, output: Output) -> anyhow::Result<i32> {
    let config = &loaded.config;
    let oracle = oracle_address::<K>(config)?
        .with_context(|| format!("{} is required", K::ORACLE_SETTING))?;
    let transport = Toncenter::new(config.ton()).context("toncenter transport")?;
    K::status(config, oracle, &transport, output).await
}

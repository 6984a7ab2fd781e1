//! The process around a chain keeper. A keeper supplies its settings, its metric families, its
//! tick and its `status` table ([`ChainKeeper`]); this module does the rest for each subcommand
//! its binary declares: configuration loading ([`start`]), telemetry and the ops server, alerts,
//! storage and the wallet lease, the runner (`--once` or the interval loop), exit codes and
//! `--output`. The binaries own their command lines; the flags both chain keepers take are here
//! ([`RunArgs`], [`WalletArgs`], [`StatusArgs`]).

use std::future::Future;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;

mod freshness;
mod memo;
mod run;
mod status;
mod wallet;

pub use freshness::Freshness;
pub use memo::{ChainMemo, View, ViewAt, view_at};
pub use run::{RunArgs, run};
pub use status::{StatusArgs, status};
pub use wallet::{
    EPHEMERAL_NOTE, SweepArgs, WalletAction, WalletArgs, WalletOutput, WalletSetupError, holder_id,
    load_wallet, wallet, wallet_command,
};

use crate::cache::ChainStore;
use crate::{Publisher, TonAddress, TonSettings, Toncenter};
use keeper_runtime::alert::Alerter;
use keeper_runtime::cli::{
    EXIT_FAILED, EXIT_OK, EXIT_USAGE, Needs, Output, Threads, migrate_command, run_async_on,
};
use keeper_runtime::config::{
    AlertSettings, ConfigError, Env, EnvBinding, ProcessEnv, RunnerSettings, StorageSettings,
    TelemetrySettings,
};
use keeper_runtime::runner::Cycle;
use keeper_runtime::secret::Secret;
use keeper_runtime::telemetry::logging::init_tracing;
use keeper_runtime::telemetry::{Health, Metrics};

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
    /// `--once`: one tick, nothing kept for a next one.
    pub one_shot: bool,
    /// Said in every summary (ephemeral key…).
    pub notes: Vec<String>,
}

/// A keeper that publishes to an oracle contract from its own TON wallet.
pub trait ChainKeeper: 'static {
    /// Label of metrics, alerts and logs (`pricing-oracle`).
    const NAME: &'static str;
    /// Binary name (`pricing-oracle-keeper`).
    const SERVICE: &'static str;
    /// The setting and env name of the oracle address, for messages.
    const ORACLE_SETTING: &'static str;
    /// The op of every message it sends (`update_price`), to learn its cost from the chain.
    const OP: &'static str;
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

/// What `migrate` needs: a database.
pub const MIGRATE_NEEDS: Needs = Needs {
    mnemonic: false,
    oracle: false,
    database: true,
};

/// Runs one subcommand of keeper `K`: loads its settings for what the command `needs` (exit 2
/// on a bad one), wipes the secret environment, starts telemetry and runs `command` on the async
/// runtime; the process exit status (1 when `command` fails).
pub fn start<K, F, Fut>(config: Option<&Path>, needs: Needs, command: F) -> ExitCode
where
    K: ChainKeeper,
    F: FnOnce(Loaded<K::Config>) -> Fut,
    Fut: Future<Output = anyhow::Result<i32>>,
{
    let loaded = match load::<K>(config, &ProcessEnv, needs) {
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
    run_async_on(threads, async move {
        keeper_runtime::install_crypto_provider();
        let _telemetry = match init_tracing(loaded.config.telemetry(), K::SERVICE) {
            Ok(g) => g,
            Err(e) => {
                eprintln!("error: {e}");
                return EXIT_USAGE;
            }
        };
        match command(loaded).await {
            Ok(code) => code,
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "stopped");
                eprintln!("error: {e:#}");
                EXIT_FAILED
            }
        }
    })
}

/// `migrate`: applies the embedded migrations to the configured database.
pub async fn migrate<C: ChainConfig>(loaded: Loaded<C>) -> anyhow::Result<i32> {
    migrate_command(loaded.config.storage())
        .await
        .context("applying migrations")?;
    Ok(EXIT_OK)
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
        validate_lease_covers_message(config.runner(), config.storage(), config.ton())?;
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
    if needs.mnemonic && needs.oracle {
        validate_journal(config.storage(), config.ton())?;
    }
    if needs.database && config.storage().database_url.is_none() {
        return Err(ConfigError::new(
            "storage.database_url (DATABASE_URL)",
            "required by this command",
        ));
    }
    Ok(Loaded { config, mnemonic })
}

/// Without PostgreSQL the journal is local to this host: a successor on another host cannot
/// read a predecessor's message, so it may take the wallet only once that message can no longer
/// land. The lease must then outlast a whole cycle plus the message TTL.
pub fn validate_lease_covers_message(
    runner: &keeper_runtime::config::RunnerSettings,
    storage: &keeper_runtime::config::StorageSettings,
    ton: &TonSettings,
) -> Result<(), ConfigError> {
    let message_ttl_secs = ton.message_ttl;
    let shared_lease = storage.redis_url.is_some();
    let shared_journal = storage.database_url.is_some();
    if !shared_lease || shared_journal {
        return Ok(());
    }
    let cycle_secs = cycle_timeout_for_delivery(runner, ton).as_secs().max(1);
    let needed_secs = cycle_secs.saturating_add(message_ttl_secs);
    if storage.lease_ttl <= needed_secs {
        return Err(ConfigError::new(
            "storage.lease_ttl (LEASE_TTL)",
            format!(
                "{} s must exceed the cycle timeout plus MESSAGE_TTL ({cycle_secs} s + \
                 {message_ttl_secs} s) when the journal is not shared (REDIS_URL without \
                 DATABASE_URL)",
                storage.lease_ttl
            ),
        ));
    }
    Ok(())
}

/// A sending keeper journals every message before its first send. Without `DATABASE_URL` or a
/// state directory that journal would be memory, and a restart within `MESSAGE_TTL` could sign
/// a second body for a seqno whose first may still land: only an explicit `KEEPER_JOURNAL=memory`
/// accepts that.
pub fn validate_journal(
    storage: &keeper_runtime::config::StorageSettings,
    ton: &TonSettings,
) -> Result<(), ConfigError> {
    let durable = storage.database_url.is_some() || run::state_dir(ton).is_some();
    if durable || ton.journal == crate::JournalChoice::Memory {
        return Ok(());
    }
    Err(ConfigError::new(
        "ton.journal (KEEPER_JOURNAL)",
        "no durable in-flight journal: set DATABASE_URL, KEEPER_STATE_DIR (or systemd \
         StateDirectory=), or KEEPER_JOURNAL=memory for a single instance that accepts that a \
         restart within MESSAGE_TTL may sign a second body for a seqno",
    ))
}

/// The least cycle timeout that holds one confirmation attempt after a send: the first poll's
/// wait ([`crate::FIRST_CONFIRMATION_POLL`]) plus one request of up to `ton.request_timeout`,
/// rounded up to whole seconds.
pub fn min_cycle_timeout(ton: &TonSettings) -> Duration {
    Duration::from_secs(ton.request_timeout.saturating_add(1))
}

/// The cycle timeout a chain keeper runs with: `runner.cycle_timeout` (default: the interval),
/// raised to [`min_cycle_timeout`] when it is shorter. A shorter cycle would be cut before its
/// first confirmation poll, and every next cycle would start by settling that message and be
/// cut again.
pub fn cycle_timeout_for_delivery(
    runner: &keeper_runtime::config::RunnerSettings,
    ton: &TonSettings,
) -> Duration {
    configured_cycle_timeout(runner).max(min_cycle_timeout(ton))
}

/// `runner.cycle_timeout` as configured, the interval when unset.
fn configured_cycle_timeout(runner: &keeper_runtime::config::RunnerSettings) -> Duration {
    runner
        .cycle_timeout
        .map_or_else(|| runner.period(), Duration::from_secs)
}

/// The runner settings a sending keeper runs with ([`cycle_timeout_for_delivery`]), and the
/// warning to log when the cycle timeout had to be raised.
pub fn runner_for_delivery(
    runner: &keeper_runtime::config::RunnerSettings,
    ton: &TonSettings,
) -> (keeper_runtime::config::RunnerSettings, Option<String>) {
    let configured = configured_cycle_timeout(runner);
    let needed = cycle_timeout_for_delivery(runner, ton);
    if needed <= configured {
        return (runner.clone(), None);
    }
    let mut adjusted = runner.clone();
    adjusted.cycle_timeout = Some(needed.as_secs());
    let warning = format!(
        "cycle timeout raised from {:.1} s to {} s (runner.cycle_timeout / CYCLE_TIMEOUT, default \
         the interval): a cycle must hold one confirmation poll after a send, its first wait plus \
         one request of up to ton.request_timeout ({} s)",
        configured.as_secs_f64(),
        needed.as_secs(),
        ton.request_timeout
    );
    (adjusted, Some(warning))
}

fn oracle_address<K: ChainKeeper>(config: &K::Config) -> anyhow::Result<Option<TonAddress>> {
    config
        .oracle()
        .map(|a| crate::parse_address(a).context(K::ORACLE_SETTING))
        .transpose()
}

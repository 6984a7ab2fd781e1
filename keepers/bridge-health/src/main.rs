//! `bridge-health-keeper`: watches TON Bridge, Orbit, Wormhole and Axelar through typed signals
//! and pushes signed `update_bridge_status` messages to the TON oracle on change or heartbeat.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use bridge_health::clients::{EthBool, PegClients};
use bridge_health::config::{Config, Loaded};
use bridge_health::cycle::{BridgeCycle, Parts};
use bridge_health::report::CycleSummary;
use clap::Parser;
use keeper_common::alert::Alerter;
use keeper_common::cli::{
    CommonArgs, EXIT_FAILED, EXIT_OK, EXIT_USAGE, KeeperCommand, Output, holder_id, load_wallet,
    migrate_command, print_cycle, run_async, wallet_command,
};
use keeper_common::config::ProcessEnv;
use keeper_common::runner::{Runner, Shutdown};
use keeper_common::sources::{CoinGecko, DefiLlama, EvmRpc};
use keeper_common::store::Store;
use keeper_common::telemetry::logging::init_tracing;
use keeper_common::telemetry::server::serve_ops;
use keeper_common::telemetry::{Health, Metrics};
use keeper_common::ton::{Delivery, DeliveryConfig, TonAddress, Toncenter, read_bridge_status};
use serde::Serialize;

const KEEPER: &str = "bridge-health";
const SERVICE: &str = "bridge-health-keeper";

/// Watches cross-chain bridges and publishes their status to the TON oracle.
///
/// Settings come from built-in defaults, then the TOML file (`config/bridge-health.toml` ships
/// the four default bridges), then the environment, then flags.
#[derive(Debug, Parser)]
#[command(name = SERVICE, version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    /// Publish every bridge with a known status this tick, whatever changed.
    #[arg(long, global = true)]
    force: bool,
    #[command(subcommand)]
    command: Option<KeeperCommand>,
}

fn main() -> ExitCode {
    run_async(run(Cli::parse()))
}

async fn run(cli: Cli) -> i32 {
    keeper_common::install_crypto_provider();
    let command = cli.command.unwrap_or(KeeperCommand::Run);
    let dry_run = cli.common.dry_run;
    let needs = command.needs(dry_run);
    let loaded = match Config::load_for(cli.common.config.as_deref(), &ProcessEnv, needs) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let _telemetry = match init_tracing(&loaded.config.settings.telemetry, SERVICE) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let result = match command {
        KeeperCommand::Run => run_keeper(&cli, loaded).await,
        KeeperCommand::Wallet { offline } => wallet(loaded, offline, cli.common.output).await,
        KeeperCommand::Status => status(loaded, cli.common.output).await,
        KeeperCommand::Migrate => migrate_command(&loaded.config.settings.storage)
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

fn oracle_address(config: &Config) -> anyhow::Result<Option<TonAddress>> {
    match config.oracle_address() {
        Ok(a) => keeper_common::ton::parse_address(a)
            .map(Some)
            .context("BRIDGE_ORACLE_ADDRESS"),
        Err(_) => Ok(None),
    }
}

async fn run_keeper(cli: &Cli, loaded: Loaded) -> anyhow::Result<i32> {
    let once = cli.common.once;
    let dry_run = cli.common.dry_run;
    let (wallet, ephemeral_note) =
        load_wallet(&loaded.config.settings.ton, loaded.mnemonic.as_ref()).await?;
    let config = Arc::new(loaded.config);
    let s = &config.settings;
    let mut registry = Metrics::new(KEEPER);
    let bridge_metrics = bridge_health::metrics::BridgeMetrics::register(&mut registry);
    let metrics = Arc::new(registry);
    let shutdown = Shutdown::new();
    shutdown
        .install_signal_handlers()
        .context("installing signal handlers")?;
    let health = Health::new(
        KEEPER,
        s.runner.period(),
        &["config", "wallet", "upstreams"],
    );
    health.mark_ready("config");
    let alerter = Alerter::start(&s.alerts, KEEPER, metrics.clone());
    let store = Store::connect(&s.storage, metrics.clone(), alerter.clone()).await;
    let transport = Toncenter::new(&s.ton).context("toncenter transport")?;
    let delivery = Delivery::new(transport, wallet, DeliveryConfig::from_settings(&s.ton))
        .with_metrics(metrics.clone());
    let lease = (!dry_run).then(|| {
        store
            .lease(&delivery.wallet().address_raw(), &holder_id())
            .with_ttl(Duration::from_secs(s.storage.lease_ttl))
    });
    let uses = |kind: &str| {
        config
            .bridges
            .iter()
            .flat_map(|b| &b.signals)
            .any(|sig| sig.check.kind() == kind)
    };
    let coingecko = config
        .bridges
        .iter()
        .flat_map(|b| &b.signals)
        .any(|sig| matches!(&sig.check, bridge_health::config::Check::Peg(p) if p.coingecko));
    let pegs = PegClients {
        defillama: uses("peg").then(|| DefiLlama::from_settings(&s.sources, Some(metrics.clone()))),
        coingecko: coingecko.then(|| CoinGecko::from_settings(&s.sources, Some(metrics.clone()))),
    };
    let eth = uses("evm_call").then(|| {
        EthBool(EvmRpc::new(
            &s.sources.eth_rpc_urls,
            s.sources.request_policy(),
            Some(metrics.clone()),
            bridge_health::signals::evm_call::UPSTREAM,
        ))
    });
    let mut cycle = BridgeCycle::new(Parts {
        oracle: oracle_address(&config)?,
        http: keeper_common::http::client(Duration::from_secs(s.upstreams.timeout)),
        config: config.clone(),
        pegs,
        eth,
        delivery,
        store,
        lease,
        alerter: alerter.clone(),
        metrics: metrics.clone(),
        bridge_metrics,
        health: health.clone(),
        dry_run,
        force: cli.force,
        notes: ephemeral_note.into_iter().collect(),
    });
    let mut runner = Runner::new(
        KEEPER,
        &s.runner,
        metrics.clone(),
        health.clone(),
        alerter,
        shutdown.clone(),
    );

    if once {
        let run = runner.run_once(&mut cycle).await;
        print_cycle(
            cycle.last_summary(),
            CycleSummary::to_text,
            run.result.as_ref().err().map(|e| e.message()),
            cli.common.output,
        );
        return Ok(run.exit_code());
    }

    let addr = s.telemetry.metrics_addr.context("metrics address")?;
    let ops = serve_ops(addr, metrics, health, shutdown.clone())
        .await
        .context("ops server")?;
    let code = runner.run_forever(&mut cycle).await;
    shutdown.trigger();
    ops.stopped().await;
    Ok(code)
}

async fn wallet(loaded: Loaded, offline: bool, output: Output) -> anyhow::Result<i32> {
    let ton = &loaded.config.settings.ton;
    let (wallet, _) = load_wallet(ton, loaded.mnemonic.as_ref()).await?;
    wallet_command(ton, &wallet, offline, output)
        .await
        .context("reading the wallet from toncenter (use --offline to skip)")?;
    Ok(EXIT_OK)
}

#[derive(Serialize)]
struct BridgeStatusRow {
    bridge: String,
    bridge_id: u8,
    is_online: Option<bool>,
    last_seen: Option<u32>,
    age_seconds: Option<u64>,
    stale: bool,
    error: Option<String>,
}

async fn status(loaded: Loaded, output: Output) -> anyhow::Result<i32> {
    let config = &loaded.config;
    let oracle = oracle_address(config)?.context("BRIDGE_ORACLE_ADDRESS is required")?;
    let transport = Toncenter::new(&config.settings.ton).context("toncenter transport")?;
    let max_age = config.settings.policy.max_status_age;
    let now = chrono::Utc::now().timestamp().max(0) as u64;
    let mut rows = Vec::new();
    for b in &config.bridges {
        let row = match read_bridge_status(&transport, &oracle, b.id).await {
            Ok((_, 0)) => BridgeStatusRow {
                bridge: b.name.clone(),
                bridge_id: b.id,
                is_online: None,
                last_seen: None,
                age_seconds: None,
                stale: true,
                error: Some("no status on-chain".into()),
            },
            Ok((online, last_seen)) => {
                let age = now.saturating_sub(u64::from(last_seen));
                BridgeStatusRow {
                    bridge: b.name.clone(),
                    bridge_id: b.id,
                    is_online: Some(online),
                    last_seen: Some(last_seen),
                    age_seconds: Some(age),
                    // An offline bridge keeps an old last_seen by design.
                    stale: online && age > max_age,
                    error: None,
                }
            }
            Err(e) => BridgeStatusRow {
                bridge: b.name.clone(),
                bridge_id: b.id,
                is_online: None,
                last_seen: None,
                age_seconds: None,
                stale: true,
                error: Some(e.to_string()),
            },
        };
        rows.push(row);
    }
    let unreadable = rows.iter().any(|r| {
        r.error
            .as_deref()
            .is_some_and(|e| e != "no status on-chain")
    });
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "oracle": oracle.to_base64_url(),
                "max_status_age": max_age,
                "bridges": rows,
            }))?
        ),
        Output::Text => {
            println!(
                "oracle {}  (status stale after {max_age} s)",
                oracle.to_base64_url()
            );
            println!(
                "{:<12} {:>3} {:<7} {:>12} {:>8}  state",
                "bridge", "id", "online", "last_seen", "age"
            );
            for r in &rows {
                let age = r
                    .age_seconds
                    .map(|a| format!("{a}s"))
                    .unwrap_or_else(|| "-".into());
                let online = match r.is_online {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "-",
                };
                let state = match (&r.error, r.stale) {
                    (Some(e), _) => e.clone(),
                    (None, true) => "STALE".into(),
                    (None, false) => "fresh".into(),
                };
                println!(
                    "{:<12} {:>3} {:<7} {:>12} {:>8}  {state}",
                    r.bridge,
                    r.bridge_id,
                    online,
                    r.last_seen
                        .map(|t| t.to_string())
                        .unwrap_or_else(|| "-".into()),
                    age
                );
            }
        }
    }
    Ok(if unreadable { EXIT_FAILED } else { EXIT_OK })
}

//! `pricing-oracle-keeper`: fetches stablecoin prices from Chainlink, CoinGecko and DefiLlama,
//! aggregates them, and pushes signed `update_price` messages to the TON PriceOracle.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser;
use keeper_common::alert::Alerter;
use keeper_common::cli::{
    CommonArgs, EXIT_FAILED, EXIT_OK, EXIT_USAGE, KeeperCommand, Output, holder_id, load_wallet,
    migrate_command, print_cycle, run_async, wallet_command,
};
use keeper_common::config::ProcessEnv;
use keeper_common::runner::{Runner, Shutdown};
use keeper_common::sources::PriceFetcher;
use keeper_common::store::Store;
use keeper_common::telemetry::logging::init_tracing;
use keeper_common::telemetry::server::serve_ops;
use keeper_common::telemetry::{Health, Metrics};
use keeper_common::ton::{Delivery, DeliveryConfig, TonAddress, Toncenter, read_price};
use serde::Serialize;

use pricing_oracle::config::{Loaded, PricingConfig};
use pricing_oracle::cycle::{Parts, PricingCycle};
use pricing_oracle::report::{self, format_micro};

const KEEPER: &str = "pricing-oracle";
const SERVICE: &str = "pricing-oracle-keeper";

/// Pushes aggregated stablecoin prices to the TON PriceOracle.
///
/// Settings come from built-in defaults, then the TOML file, then the environment, then flags.
/// See the README for every setting and its environment variable.
#[derive(Debug, Parser)]
#[command(name = SERVICE, version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    /// Publish every asset this tick, whatever the deviation and heartbeat.
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
    let loaded = match PricingConfig::load(cli.common.config.as_deref(), &ProcessEnv, needs) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    let _telemetry = match init_tracing(&loaded.config.telemetry, SERVICE) {
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
        KeeperCommand::Migrate => migrate_command(&loaded.config.storage)
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

fn oracle_address(config: &PricingConfig) -> anyhow::Result<Option<TonAddress>> {
    config
        .oracle
        .address
        .as_deref()
        .map(|a| keeper_common::ton::parse_address(a).context("PRICING_ORACLE_ADDRESS"))
        .transpose()
}

async fn run_keeper(cli: &Cli, loaded: Loaded) -> anyhow::Result<i32> {
    let once = cli.common.once;
    let dry_run = cli.common.dry_run;
    let (wallet, ephemeral_note) =
        load_wallet(&loaded.config.ton, loaded.mnemonic.as_ref()).await?;
    let config = Arc::new(loaded.config);
    let metrics = Arc::new(Metrics::new(KEEPER));
    let shutdown = Shutdown::new();
    shutdown
        .install_signal_handlers()
        .context("installing signal handlers")?;
    let interval = config.runner.period();
    let health = Health::new(KEEPER, interval, &["config", "wallet", "upstreams"]);
    health.mark_ready("config");
    let alerter = Alerter::start(&config.alerts, KEEPER, metrics.clone());
    let store = Store::connect(&config.storage, metrics.clone(), alerter.clone()).await;
    let transport = Toncenter::new(&config.ton).context("toncenter transport")?;
    let delivery = Delivery::new(
        transport,
        wallet,
        DeliveryConfig::from_settings(&config.ton),
    )
    .with_metrics(metrics.clone());
    let lease = (!dry_run).then(|| store.lease(&delivery.wallet().address_raw(), &holder_id()));
    let fetcher = PriceFetcher::new(&config.sources, &config.assets, Some(metrics.clone()));
    let mut cycle = PricingCycle::new(Parts {
        oracle: oracle_address(&config)?,
        config: config.clone(),
        fetcher,
        delivery,
        store,
        lease,
        alerter: alerter.clone(),
        metrics: metrics.clone(),
        health: health.clone(),
        dry_run,
        force: cli.force,
        notes: ephemeral_note.into_iter().collect(),
    });
    let mut runner = Runner::new(
        KEEPER,
        &config.runner,
        metrics.clone(),
        health.clone(),
        alerter,
        shutdown.clone(),
    );

    if once {
        let run = runner.run_once(&mut cycle).await;
        print_cycle(
            cycle.last_summary(),
            report::CycleSummary::to_text,
            run.result.as_ref().err().map(|e| e.message()),
            cli.common.output,
        );
        return Ok(run.exit_code());
    }

    let addr = config.telemetry.metrics_addr.context("metrics address")?;
    let ops = serve_ops(addr, metrics, health, shutdown.clone())
        .await
        .context("ops server")?;
    let code = runner.run_forever(&mut cycle).await;
    shutdown.trigger();
    ops.stopped().await;
    Ok(code)
}

async fn wallet(loaded: Loaded, offline: bool, output: Output) -> anyhow::Result<i32> {
    let ton = &loaded.config.ton;
    let (wallet, _) = load_wallet(ton, loaded.mnemonic.as_ref()).await?;
    wallet_command(ton, &wallet, offline, output)
        .await
        .context("reading the wallet from toncenter (use --offline to skip)")?;
    Ok(EXIT_OK)
}

#[derive(Serialize)]
struct AssetStatus {
    asset: String,
    asset_id: u16,
    price_micro: Option<u64>,
    price: Option<String>,
    timestamp: Option<u32>,
    age_seconds: Option<u64>,
    stale: bool,
    error: Option<String>,
}

async fn status(loaded: Loaded, output: Output) -> anyhow::Result<i32> {
    let config = &loaded.config;
    let oracle = oracle_address(config)?.context("PRICING_ORACLE_ADDRESS is required")?;
    let transport = Toncenter::new(&config.ton).context("toncenter transport")?;
    let now = chrono::Utc::now().timestamp().max(0) as u64;
    let mut rows = Vec::new();
    for asset in config.assets.iter() {
        let row = match read_price(&transport, &oracle, asset.id).await {
            Ok((price, ts)) if price > 0 => {
                let age = now.saturating_sub(u64::from(ts));
                let micro = u64::try_from(price).unwrap_or(u64::MAX);
                AssetStatus {
                    asset: asset.symbol.clone(),
                    asset_id: asset.id,
                    price_micro: Some(micro),
                    price: Some(format_micro(micro)),
                    timestamp: Some(ts),
                    age_seconds: Some(age),
                    stale: age > config.policy.stale_after,
                    error: None,
                }
            }
            Ok(_) => AssetStatus {
                asset: asset.symbol.clone(),
                asset_id: asset.id,
                price_micro: None,
                price: None,
                timestamp: None,
                age_seconds: None,
                stale: true,
                error: Some("no price on-chain".into()),
            },
            Err(e) => AssetStatus {
                asset: asset.symbol.clone(),
                asset_id: asset.id,
                price_micro: None,
                price: None,
                timestamp: None,
                age_seconds: None,
                stale: true,
                error: Some(e.to_string()),
            },
        };
        rows.push(row);
    }
    let unreadable = rows.iter().any(|r| {
        r.error.is_some() && r.price.is_none() && r.error.as_deref() != Some("no price on-chain")
    });
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "oracle": oracle.to_base64_url(),
                "stale_after": config.policy.stale_after,
                "assets": rows,
            }))?
        ),
        Output::Text => {
            println!(
                "oracle {}  (stale after {} s)",
                oracle.to_base64_url(),
                config.policy.stale_after
            );
            println!(
                "{:<6} {:>3} {:>10} {:>8}  state",
                "asset", "id", "price", "age"
            );
            for r in &rows {
                let age = r
                    .age_seconds
                    .map(|a| format!("{a}s"))
                    .unwrap_or_else(|| "-".into());
                let state = match (&r.error, r.stale) {
                    (Some(e), _) => e.clone(),
                    (None, true) => "STALE".into(),
                    (None, false) => "fresh".into(),
                };
                println!(
                    "{:<6} {:>3} {:>10} {:>8}  {state}",
                    r.asset,
                    r.asset_id,
                    r.price.clone().unwrap_or_else(|| "-".into()),
                    age
                );
            }
        }
    }
    Ok(if unreadable { EXIT_FAILED } else { EXIT_OK })
}

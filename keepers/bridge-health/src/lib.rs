//! The bridge-health keeper: watches TON Bridge, Orbit, Wormhole and Axelar through typed
//! signals, decides a status per bridge and publishes `update_bridge_status` on change or
//! heartbeat.

pub mod clients;
pub mod config;
pub mod confirm;
pub mod cycle;
pub mod decision;
pub mod env;
pub mod history;
pub mod metrics;
pub mod records;
pub mod report;
pub mod signals;
pub mod status;

use std::path::Path;
use std::time::Duration;

use keeper_runtime::cli::Output;
use keeper_runtime::config::{ConfigError, Env, EnvBinding};
use keeper_runtime::telemetry::Metrics;
use keeper_sources::{CoinGecko, DefiLlama, EvmRpc};
use keeper_ton::keeper::{ChainKeeper, ChainParts};
use keeper_ton::{TonAddress, Toncenter};

use crate::clients::{EthBool, PegClients};
use crate::config::{Check, Config};
use crate::cycle::BridgeCycle;
use crate::metrics::BridgeMetrics;

/// The bridge-health keeper, as the shared runtime sees it.
pub struct BridgeKeeper;

impl ChainKeeper for BridgeKeeper {
    const NAME: &'static str = "bridge-health";
    const SERVICE: &'static str = "bridge-health-keeper";
    const ORACLE_SETTING: &'static str = config::ORACLE_SETTING;
    const OP: &'static str = "update_bridge_status";
    type Config = Config;
    type Families = BridgeMetrics;
    type Cycle = BridgeCycle;

    fn load(file: Option<&Path>, env: &dyn Env) -> Result<Config, ConfigError> {
        Config::load(file, env)
    }

    fn env_bindings() -> Vec<EnvBinding> {
        crate::env::bindings()
    }

    fn register(metrics: &mut Metrics) -> BridgeMetrics {
        BridgeMetrics::register(metrics)
    }

    fn cycle(parts: ChainParts<Config>, families: BridgeMetrics) -> anyhow::Result<BridgeCycle> {
        let config = parts.config.clone();
        let s = &config.settings;
        let metrics = Some(parts.metrics.clone());
        let signals = || config.bridges.iter().flat_map(|b| &b.signals);
        let uses_peg = signals().any(|sig| matches!(sig.check, Check::Peg(_)));
        let uses_coingecko =
            signals().any(|sig| matches!(&sig.check, Check::Peg(p) if p.coingecko));
        let uses_eth = signals().any(|sig| matches!(sig.check, Check::EvmCall(_)));
        let pegs = PegClients {
            defillama: uses_peg.then(|| DefiLlama::from_settings(&s.sources, metrics.clone())),
            coingecko: uses_coingecko
                .then(|| CoinGecko::from_settings(&s.sources, metrics.clone())),
        };
        let eth = uses_eth.then(|| {
            EthBool(EvmRpc::new(
                &s.sources.eth_rpc_urls,
                s.sources.request_policy(),
                metrics.clone(),
                signals::evm_call::UPSTREAM,
            ))
        });
        let http = keeper_runtime::http::client(Duration::from_secs(s.upstreams.timeout));
        Ok(BridgeCycle::new(parts, families, http, pegs, eth))
    }

    async fn status(
        config: &Config,
        oracle: TonAddress,
        transport: &Toncenter,
        output: Output,
    ) -> anyhow::Result<i32> {
        status::print(config, oracle, transport, output).await
    }
}

//! The pricing keeper's policy: its settings, one tick (fetch, aggregate, decide, publish), the
//! decision rules, its records, its report and its `status` table. The shared runtime
//! (`keeper_ton::keeper`) runs it; the binary's `command/` owns the command line.

pub mod breaker;
pub mod config;
pub mod cycle;
pub mod decisions;
pub mod env;
pub mod history;
pub mod metrics;
pub mod policy;
pub mod records;
pub mod reference;
pub mod report;
pub mod status;

use std::path::Path;

use keeper_runtime::cli::Output;
use keeper_runtime::config::{ConfigError, Env, EnvBinding};
use keeper_runtime::telemetry::Metrics;
use keeper_sources::PriceFetcher;
use keeper_ton::keeper::{ChainKeeper, ChainParts};
use keeper_ton::{TonAddress, Toncenter};

use crate::config::PricingConfig;
use crate::cycle::PricingCycle;

/// The pricing keeper, as the shared runtime sees it.
pub struct PricingKeeper;

impl ChainKeeper for PricingKeeper {
    const NAME: &'static str = "pricing-oracle";
    const SERVICE: &'static str = "pricing-oracle-keeper";
    const ORACLE_SETTING: &'static str = config::ORACLE_SETTING;
    const OP: &'static str = "update_price";
    type Config = PricingConfig;
    type Families = metrics::PricingMetrics;
    type Cycle = PricingCycle;

    fn load(file: Option<&Path>, env: &dyn Env) -> Result<PricingConfig, ConfigError> {
        PricingConfig::load(file, env)
    }

    fn env_bindings() -> Vec<EnvBinding> {
        crate::env::bindings()
    }

    fn register(metrics: &mut Metrics) -> metrics::PricingMetrics {
        metrics::PricingMetrics::register(metrics)
    }

    fn cycle(
        parts: ChainParts<PricingConfig>,
        own: metrics::PricingMetrics,
    ) -> anyhow::Result<PricingCycle> {
        let fetcher = PriceFetcher::new(
            &parts.config.sources,
            &parts.config.assets,
            Some(parts.metrics.clone()),
        );
        Ok(PricingCycle::new(parts, fetcher, own))
    }

    async fn status(
        config: &PricingConfig,
        oracle: TonAddress,
        transport: &Toncenter,
        output: Output,
    ) -> anyhow::Result<i32> {
        status::print(config, oracle, transport, output).await
    }
}

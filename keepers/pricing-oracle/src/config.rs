//! The pricing keeper's settings: the shared sections plus its oracle and publishing policy.

use std::path::Path;

use keeper_runtime::config::{
    AlertSettings, ConfigError, Env, Layers, RunnerSettings, StorageSettings, TelemetrySettings,
    validate, validate_shared,
};
use keeper_sources::{AggregationSettings, AssetList, SourcesSettings};
use keeper_ton::TonSettings;
use keeper_ton::keeper::ChainConfig;
use serde::Deserialize;

/// The setting naming the PriceOracle.
pub const ORACLE_SETTING: &str = "oracle.address (PRICING_ORACLE_ADDRESS)";

/// The built-in defaults: the shipped, commented example file, compiled in.
pub const DEFAULTS: &str = include_str!("../../../config/pricing-oracle.toml");

/// `[oracle]`: where updates go.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct OracleSettings {
    /// The PriceOracle contract (`PRICING_ORACLE_ADDRESS`); required unless `--dry-run`.
    pub address: Option<String>,
}

/// `[policy]`: when to publish and when to alert.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicySettings {
    /// Publish when the aggregate moved this many basis points from on-chain (`PRICE_DEVIATION_BPS`).
    pub deviation_bps: u32,
    /// Publish when the on-chain value is this many seconds old (`PRICE_HEARTBEAT`).
    pub heartbeat: u64,
    /// Alert `oracle_stale:{asset}` when the on-chain value is older than this (`STALE_AFTER`).
    pub stale_after: u64,
    /// Alert `wallet_balance_low` below this many nanotons (`wallet_balance_low_ton` /
    /// `WALLET_BALANCE_LOW_TON`, given in TON).
    #[serde(
        rename = "wallet_balance_low_ton",
        deserialize_with = "validate::de_ton_amount"
    )]
    pub wallet_balance_low_nanoton: u64,
    /// Alert `wallet_runway_low` when the balance lasts fewer days than this at the current
    /// spend per day (`WALLET_RUNWAY_LOW_DAYS`; 0 turns it off).
    pub wallet_runway_low_days: u64,
    /// Alert `source_down:{source}` after a source failed for this many seconds (`SOURCE_DOWN_AFTER`).
    pub source_down_after: u64,
    /// Circuit breaker: a move larger than this many basis points of the on-chain value needs
    /// confirmation (`MAX_STEP_BPS`).
    pub max_step_bps: u32,
    /// Independent lineages that confirm a large move at once (`CONFIRM_LINEAGES`).
    pub confirm_lineages: u32,
    /// Consecutive ticks a large move must persist when fewer lineages show it (`CONFIRM_TICKS`).
    pub confirm_ticks: u32,
    /// Alert `clock_skew` when the local clock and chain time differ by more than this many
    /// seconds (`MAX_CLOCK_SKEW`).
    pub max_clock_skew: u64,
    /// Seconds this keeper waits, as a fallback, after a primary would have published before it
    /// publishes what the chain still lacks (`FALLBACK_OFFSET`; 0 = primary).
    pub fallback_offset: u64,
}

impl Default for PolicySettings {
    fn default() -> Self {
        Self {
            deviation_bps: 10,
            heartbeat: 240,
            stale_after: 300,
            wallet_balance_low_nanoton: 5 * validate::NANOTON,
            wallet_runway_low_days: 14,
            source_down_after: 600,
            max_step_bps: 100,
            confirm_lineages: 3,
            confirm_ticks: 2,
            max_clock_skew: 30,
            fallback_offset: 0,
        }
    }
}

/// Everything the pricing keeper reads from defaults, its TOML file, the environment and flags.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PricingConfig {
    /// `[ton]`
    pub ton: TonSettings,
    /// `[oracle]`
    pub oracle: OracleSettings,
    /// `[policy]`
    pub policy: PolicySettings,
    /// `[runner]`
    pub runner: RunnerSettings,
    /// `[telemetry]`
    pub telemetry: TelemetrySettings,
    /// `[alerts]`
    pub alerts: AlertSettings,
    /// `[storage]`
    pub storage: StorageSettings,
    /// `[sources]`
    pub sources: SourcesSettings,
    /// `[aggregation]`
    pub aggregation: AggregationSettings,
    /// `[[assets]]`
    pub assets: AssetList,
}

impl PricingConfig {
    /// Loads defaults < file < environment and validates every setting.
    pub fn load(file: Option<&Path>, env: &dyn Env) -> Result<Self, ConfigError> {
        let mut config: Self = Layers::new(DEFAULTS, file, env, &crate::env::bindings()).load()?;
        config.validate()?;
        config.storage.migrations = crate::records::MIGRATIONS;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.ton.validate()?;
        validate_shared(&self.runner, &self.telemetry, &self.alerts, &self.storage)?;
        self.sources.validate()?;
        self.aggregation.validate()?;
        self.assets.validate(&self.aggregation, &self.sources)?;
        if let Some(a) = &self.oracle.address {
            keeper_ton::validate_address(ORACLE_SETTING, a)?;
        }
        let p = &self.policy;
        validate::at_most(
            "policy.deviation_bps (PRICE_DEVIATION_BPS)",
            u64::from(p.deviation_bps),
            validate::MAX_BPS,
            "bps",
        )?;
        for (setting, seconds) in [
            ("policy.heartbeat (PRICE_HEARTBEAT)", p.heartbeat),
            ("policy.stale_after (STALE_AFTER)", p.stale_after),
            (
                "policy.source_down_after (SOURCE_DOWN_AFTER)",
                p.source_down_after,
            ),
        ] {
            validate::at_most(setting, seconds, 7 * validate::DAY_SECONDS, "s")?;
        }
        validate::at_most(
            "policy.wallet_balance_low_ton (WALLET_BALANCE_LOW_TON)",
            p.wallet_balance_low_nanoton,
            1_000_000 * validate::NANOTON,
            "nanoton",
        )?;
        validate::nonzero("policy.heartbeat (PRICE_HEARTBEAT)", self.policy.heartbeat)?;
        validate::nonzero("policy.stale_after (STALE_AFTER)", self.policy.stale_after)?;
        validate::nonzero(
            "policy.source_down_after (SOURCE_DOWN_AFTER)",
            self.policy.source_down_after,
        )?;
        validate::at_most(
            "policy.max_step_bps (MAX_STEP_BPS)",
            u64::from(p.max_step_bps),
            validate::MAX_BPS,
            "bps",
        )?;
        validate::nonzero(
            "policy.confirm_lineages (CONFIRM_LINEAGES)",
            u64::from(p.confirm_lineages),
        )?;
        validate::at_most(
            "policy.confirm_lineages (CONFIRM_LINEAGES)",
            u64::from(p.confirm_lineages),
            keeper_sources::Source::ALL.len() as u64,
            "lineages",
        )?;
        validate::nonzero(
            "policy.confirm_ticks (CONFIRM_TICKS)",
            u64::from(p.confirm_ticks),
        )?;
        validate::at_most(
            "policy.confirm_ticks (CONFIRM_TICKS)",
            u64::from(p.confirm_ticks),
            100,
            "ticks",
        )?;
        validate::nonzero("policy.max_clock_skew (MAX_CLOCK_SKEW)", p.max_clock_skew)?;
        validate::at_most(
            "policy.max_clock_skew (MAX_CLOCK_SKEW)",
            p.max_clock_skew,
            validate::DAY_SECONDS,
            "s",
        )?;
        validate::at_most(
            "policy.fallback_offset (FALLBACK_OFFSET)",
            p.fallback_offset,
            validate::DAY_SECONDS,
            "s",
        )?;
        Ok(())
    }
}

/// The publishing rules of one asset: the `[policy]` values with the asset's own overrides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssetRules {
    /// Publish on a move of at least this many basis points.
    pub deviation_bps: u32,
    /// Publish when the on-chain value is this old, seconds.
    pub heartbeat: u64,
    /// Larger moves need confirmation.
    pub max_step_bps: u32,
}

impl PricingConfig {
    /// `[policy]` with the asset table's per-asset overrides.
    pub fn rules_for(&self, asset: &keeper_sources::AssetConfig) -> AssetRules {
        AssetRules {
            deviation_bps: asset.deviation_bps.unwrap_or(self.policy.deviation_bps),
            heartbeat: asset.heartbeat.unwrap_or(self.policy.heartbeat),
            max_step_bps: asset.max_step_bps.unwrap_or(self.policy.max_step_bps),
        }
    }
}

impl ChainConfig for PricingConfig {
    fn ton(&self) -> &TonSettings {
        &self.ton
    }
    fn ton_mut(&mut self) -> &mut TonSettings {
        &mut self.ton
    }
    fn runner(&self) -> &RunnerSettings {
        &self.runner
    }
    fn telemetry(&self) -> &TelemetrySettings {
        &self.telemetry
    }
    fn alerts(&self) -> &AlertSettings {
        &self.alerts
    }
    fn storage(&self) -> &StorageSettings {
        &self.storage
    }
    fn oracle(&self) -> Option<&str> {
        self.oracle.address.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use keeper_runtime::cli::Needs;

    use super::*;

    #[test]
    fn built_in_defaults_are_the_shipped_file() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/pricing-oracle.toml");
        let env: HashMap<String, String> = HashMap::new();
        let from_file = PricingConfig::load(Some(&file), &env).unwrap();
        let built_in = PricingConfig::load(None, &env).unwrap();
        assert_eq!(format!("{from_file:?}"), format!("{built_in:?}"));
        assert_eq!(built_in.assets.len(), 6);
        assert_eq!(
            built_in.telemetry.metrics_addr.map(|a| a.port()),
            Some(9101)
        );
    }

    #[test]
    fn per_asset_overrides_and_breaker_settings() {
        let dir = std::env::temp_dir().join(format!("pricing-rules-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "[policy]\nmax_step_bps = 150\n\n[[assets]]\nsymbol = \"USDT\"\nid = 1\n\
             coingecko_id = \"tether\"\npyth_id = \"2b89b9dc8fdf9f34709a5b106b472f0f39bb6ca9ce04b0fd7f2e971688e2e53b\"\n\
             deviation_bps = 25\nheartbeat = 120\nmax_step_bps = 50\n\n[[assets]]\nsymbol = \"USDC\"\nid = 2\n\
             coingecko_id = \"usd-coin\"\npyth_id = \"eaa020c61cc479712813461ce153894a96a6c00b21ed0cfc2798d1f9a9e9c94a\"\n",
        )
        .unwrap();
        let env: HashMap<String, String> = [("CONFIRM_TICKS", "3")]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let c = PricingConfig::load(Some(&file), &env).unwrap();
        assert_eq!(
            c.rules_for(&c.assets[0]),
            AssetRules {
                deviation_bps: 25,
                heartbeat: 120,
                max_step_bps: 50
            }
        );
        assert_eq!(
            c.rules_for(&c.assets[1]),
            AssetRules {
                deviation_bps: 10,
                heartbeat: 240,
                max_step_bps: 150
            }
        );
        assert_eq!(c.policy.confirm_ticks, 3);
        assert_eq!(c.policy.confirm_lineages, 3);
        assert_eq!(c.policy.max_clock_skew, 30);
        for (k, v, setting) in [
            ("CONFIRM_TICKS", "0", "policy.confirm_ticks"),
            ("CONFIRM_LINEAGES", "5", "policy.confirm_lineages"),
            ("MAX_STEP_BPS", "10001", "policy.max_step_bps"),
            ("MAX_CLOCK_SKEW", "0", "policy.max_clock_skew"),
        ] {
            let env: HashMap<String, String> = [(k.to_owned(), v.to_owned())].into();
            let e = PricingConfig::load(None, &env).unwrap_err();
            assert!(e.setting.contains(setting), "{k}={v}: {e}");
        }
        std::fs::write(
            &file,
            "[[assets]]\nsymbol = \"USDT\"\nid = 1\ncoingecko_id = \"tether\"\n\
             pyth_id = \"2b89b9dc8fdf9f34709a5b106b472f0f39bb6ca9ce04b0fd7f2e971688e2e53b\"\nheartbeat = 0\n",
        )
        .unwrap();
        let e = PricingConfig::load(Some(&file), &HashMap::<String, String>::new()).unwrap_err();
        assert!(e.setting.contains("assets[0].heartbeat"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn ton_amounts_from_the_environment_become_nanotons() {
        let env: HashMap<String, String> = [
            ("UPDATE_VALUE_TON", "0.1"),
            ("WALLET_BALANCE_LOW_TON", "2.5"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let c = PricingConfig::load(None, &env).unwrap();
        assert_eq!(
            c.ton.update_value,
            keeper_ton::UpdateValue::Fixed(100_000_000)
        );
        assert_eq!(c.policy.wallet_balance_low_nanoton, 2_500_000_000);
    }

    #[test]
    fn sending_needs_a_mnemonic_and_an_oracle() {
        let load = |env: &HashMap<String, String>| {
            keeper_ton::keeper::load::<crate::PricingKeeper>(
                None,
                env,
                Needs {
                    mnemonic: true,
                    oracle: true,
                    database: false,
                },
            )
        };
        let env: HashMap<String, String> = HashMap::new();
        let e = load(&env).err().unwrap();
        assert!(e.setting.contains("PRICING_ORACLE_ADDRESS"), "{e}");
        let env: HashMap<String, String> = [(
            "PRICING_ORACLE_ADDRESS".to_owned(),
            "EQCDM_QGggZ3qMa_f3lRPk4_qLDnLTqdi6OkMAV2NB9r5TG3".to_owned(),
        )]
        .into();
        let e = load(&env).err().unwrap();
        assert!(e.setting.contains("KEEPER_MNEMONIC"), "{e}");
    }
}

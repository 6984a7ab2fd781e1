//! The pricing keeper's settings: the shared sections plus its oracle and publishing policy.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;

use keeper_common::config::{
    AlertSettings, COMMON_ENV, ConfigError, Env, EnvBinding, Kind, Layers, RunnerSettings,
    StorageSettings, TelemetrySettings, bind, validate,
};
use keeper_common::secret::Secret;
use keeper_common::sources::{AggregationSettings, AssetList, SOURCES_ENV, SourcesSettings};
use keeper_common::ton::TonSettings;
use serde::Deserialize;

/// Default ops server port of this keeper.
pub const DEFAULT_METRICS_PORT: u16 = 9101;

/// The built-in defaults: the shipped, commented example file, compiled in.
pub const DEFAULTS: &str = include_str!("../../../config/pricing-oracle.toml");

/// Environment bindings of the pricing keeper's own sections.
pub const PRICING_ENV: &[EnvBinding] = &[
    bind("PRICING_ORACLE_ADDRESS", "oracle.address", Kind::Str),
    bind("PRICE_DEVIATION_BPS", "policy.deviation_bps", Kind::Int),
    bind("PRICE_HEARTBEAT", "policy.heartbeat", Kind::Int),
    bind("STALE_AFTER", "policy.stale_after", Kind::Int),
    bind(
        "WALLET_BALANCE_LOW_TON",
        "policy.wallet_balance_low_ton",
        Kind::Decimal,
    ),
    bind("SOURCE_DOWN_AFTER", "policy.source_down_after", Kind::Int),
];

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
    /// Alert `wallet_balance_low` below this balance, in TON (`WALLET_BALANCE_LOW_TON`).
    #[serde(deserialize_with = "validate::de_ton_amount")]
    pub wallet_balance_low_ton: u64,
    /// Alert `source_down:{source}` after a source failed for this many seconds (`SOURCE_DOWN_AFTER`).
    pub source_down_after: u64,
}

impl Default for PolicySettings {
    fn default() -> Self {
        Self {
            deviation_bps: 10,
            heartbeat: 240,
            stale_after: 300,
            wallet_balance_low_ton: 5 * validate::NANOTON,
            source_down_after: 600,
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

pub use keeper_common::cli::Needs;

/// The loaded, validated configuration and the resolved mnemonic.
pub struct Loaded {
    /// The settings.
    pub config: PricingConfig,
    /// The keeper's mnemonic, if one was given.
    pub mnemonic: Option<Secret>,
}

impl PricingConfig {
    /// Loads every layer and validates it, requiring what `needs` names.
    pub fn load(file: Option<&Path>, env: &dyn Env, needs: Needs) -> Result<Loaded, ConfigError> {
        let bindings: Vec<EnvBinding> = COMMON_ENV
            .iter()
            .chain(keeper_common::ton::TON_ENV)
            .chain(SOURCES_ENV)
            .chain(PRICING_ENV)
            .copied()
            .collect();
        let mut config: PricingConfig = Layers {
            defaults: DEFAULTS,
            file,
            env,
            bindings: &bindings,
            flags: Vec::new(),
        }
        .load()?;
        config
            .telemetry
            .metrics_addr
            .get_or_insert(SocketAddr::from((
                Ipv4Addr::LOCALHOST,
                DEFAULT_METRICS_PORT,
            )));
        config.validate(needs)?;
        let mnemonic = keeper_common::ton::resolve_mnemonic(&config.ton, env)?;
        if let Some(m) = &mnemonic {
            let setting = if config.ton.mnemonic.is_some() {
                "ton.mnemonic (KEEPER_MNEMONIC)"
            } else {
                "ton.mnemonic_file (KEEPER_MNEMONIC_FILE)"
            };
            keeper_common::ton::validate_mnemonic(setting, m)?;
        } else if needs.mnemonic {
            return Err(ConfigError::new(
                "ton.mnemonic (KEEPER_MNEMONIC)",
                "no mnemonic: set KEEPER_MNEMONIC, KEEPER_MNEMONIC_FILE or a systemd credential \
                 keeper-mnemonic (only --dry-run works without one)",
            ));
        }
        if needs.database && config.storage.database_url.is_none() {
            return Err(ConfigError::new(
                "storage.database_url (DATABASE_URL)",
                "required by this command",
            ));
        }
        Ok(Loaded { config, mnemonic })
    }

    fn validate(&self, needs: Needs) -> Result<(), ConfigError> {
        self.ton.validate()?;
        self.runner.validate()?;
        self.telemetry.validate()?;
        self.alerts.validate()?;
        self.storage.validate()?;
        self.sources.validate()?;
        self.aggregation.validate()?;
        self.assets.validate(&self.aggregation, &self.sources)?;
        match &self.oracle.address {
            Some(a) => {
                keeper_common::ton::validate_address("oracle.address (PRICING_ORACLE_ADDRESS)", a)?;
            }
            None if needs.oracle => {
                return Err(ConfigError::new(
                    "oracle.address (PRICING_ORACLE_ADDRESS)",
                    "the PriceOracle address is required (only --dry-run works without one)",
                ));
            }
            None => {}
        }
        validate::nonzero("policy.heartbeat (PRICE_HEARTBEAT)", self.policy.heartbeat)?;
        validate::nonzero("policy.stale_after (STALE_AFTER)", self.policy.stale_after)?;
        validate::nonzero(
            "policy.source_down_after (SOURCE_DOWN_AFTER)",
            self.policy.source_down_after,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const NO_NEEDS: Needs = Needs {
        mnemonic: false,
        oracle: false,
        database: false,
    };

    #[test]
    fn shipped_config_file_is_the_built_in_defaults() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/pricing-oracle.toml");
        let env: HashMap<String, String> = HashMap::new();
        let from_file = PricingConfig::load(Some(&file), &env, NO_NEEDS)
            .unwrap()
            .config;
        let built_in = PricingConfig::load(None, &env, NO_NEEDS).unwrap().config;
        assert_eq!(format!("{from_file:?}"), format!("{built_in:?}"));
    }

    #[test]
    fn sending_needs_a_mnemonic_and_an_oracle() {
        let env: HashMap<String, String> = HashMap::new();
        let needs = Needs {
            mnemonic: true,
            oracle: true,
            database: false,
        };
        let e = PricingConfig::load(None, &env, needs).err().unwrap();
        assert!(e.setting.contains("PRICING_ORACLE_ADDRESS"), "{e}");
        let env: HashMap<String, String> = [(
            "PRICING_ORACLE_ADDRESS".to_owned(),
            "EQCDM_QGggZ3qMa_f3lRPk4_qLDnLTqdi6OkMAV2NB9r5TG3".to_owned(),
        )]
        .into();
        let e = PricingConfig::load(None, &env, needs).err().unwrap();
        assert!(e.setting.contains("KEEPER_MNEMONIC"), "{e}");
    }
}

//! Settings of the bridge-health keeper: the shared sections, the bridge oracle, the publishing
//! policy, the HTTP upstreams and the `[[bridges]]` with their signals (all data, no bridge is
//! built into the code; `config/bridge-health.toml` ships the defaults).

use std::collections::HashSet;
use std::path::Path;

use keeper_runtime::config::{
    AlertSettings, ConfigError, Env, Layers, RunnerSettings, StorageSettings, TelemetrySettings,
    validate, validate_shared,
};
use keeper_sources::SourcesSettings;
use keeper_ton::TonSettings;
use keeper_ton::keeper::ChainConfig;
use serde::Deserialize;

pub use crate::signals::spec::{Check, SignalSpec, UpstreamSettings};

/// The setting naming the oracle bridge statuses go to.
pub const ORACLE_SETTING: &str = "oracle.address (BRIDGE_ORACLE_ADDRESS)";

/// The built-in defaults, with the four default bridges: the shipped, commented example file,
/// compiled in.
pub const DEFAULTS: &str = include_str!("../../../config/bridge-health.toml");

/// The settings as read from the layers, before the bridges are checked and typed.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// `[ton]`
    pub ton: TonSettings,
    /// `[runner]`
    pub runner: RunnerSettings,
    /// `[telemetry]`
    pub telemetry: TelemetrySettings,
    /// `[alerts]`
    pub alerts: AlertSettings,
    /// `[storage]`
    pub storage: StorageSettings,
    /// `[sources]`: the shared Ethereum JSON-RPC and DefiLlama coins clients.
    pub sources: SourcesSettings,
    /// `[oracle]`
    pub oracle: OracleSettings,
    /// `[policy]`
    pub policy: PolicySettings,
    /// `[upstreams]`
    pub upstreams: UpstreamSettings,
    /// `[[bridges]]`
    pub bridges: Vec<BridgeRaw>,
}

/// `[oracle]`: where `update_bridge_status` goes.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct OracleSettings {
    /// The oracle contract that stores bridge status (`BRIDGE_ORACLE_ADDRESS`).
    pub address: Option<String>,
    /// Fallback when `address` is unset: the pricing oracle (`PRICING_ORACLE_ADDRESS`).
    pub pricing_address: Option<String>,
}

/// `[policy]`: when to publish.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicySettings {
    /// Seconds after which an unchanged status is published again (`BRIDGE_HEARTBEAT`).
    pub heartbeat: u64,
    /// The oracle's maximum status age; the heartbeat must stay below it.
    pub max_status_age: u64,
    /// Seconds a signal that turns unreadable keeps its last degraded/critical verdict, so an
    /// upstream outage never makes a sick bridge look healthy.
    pub hold_unknown: u64,
    /// Consecutive ticks one critical heuristic signal must persist before the bridge is
    /// offline, and better evidence before it recovers (`BRIDGE_CONFIRM_TICKS`).
    pub confirm_ticks: u32,
    /// Alert `wallet_runway_low` when the balance lasts fewer days than this at the current
    /// spend per day (`WALLET_RUNWAY_LOW_DAYS`; 0 turns it off).
    pub wallet_runway_low_days: u64,
    /// Seconds this keeper waits, as a fallback, after a primary would have published before it
    /// publishes what the chain still lacks (`FALLBACK_OFFSET`; 0 = primary).
    pub fallback_offset: u64,
}

impl Default for PolicySettings {
    fn default() -> Self {
        Self {
            heartbeat: 900,
            max_status_age: 1800,
            hold_unknown: 900,
            confirm_ticks: 2,
            wallet_runway_low_days: 14,
            fallback_offset: 0,
        }
    }
}

/// One `[[bridges]]` entry as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BridgeRaw {
    /// On-chain id (`bridge_id:uint8`).
    pub id: u8,
    /// Short name used in alerts, metrics and Redis (`orbit`).
    pub name: String,
    /// Name for humans (`Orbit Bridge`); defaults to `name`.
    pub display_name: Option<String>,
    /// `false` keeps the entry in the file but ignores it.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// `[[bridges.signals]]`
    #[serde(default)]
    pub signals: Vec<SignalRaw>,
}

fn yes() -> bool {
    true
}

/// One `[[bridges.signals]]` entry as written: the common keys, the rest by `kind`.
#[derive(Debug, Clone, Deserialize)]
pub struct SignalRaw {
    /// Which check (`peg`, `tvl`, `volume_stall`, …).
    pub kind: String,
    /// Name unique within the bridge; defaults to one built from the kind and its subject.
    pub name: Option<String>,
    /// Weight in the bridge score (default 1).
    pub weight: Option<f64>,
    /// Per-request timeout, seconds (default `upstreams.timeout`).
    pub timeout: Option<u64>,
    /// Tries (default `upstreams.attempts`).
    pub attempts: Option<u32>,
    /// `false` ignores the signal.
    pub enabled: Option<bool>,
    /// The kind's own settings.
    #[serde(flatten)]
    pub rest: toml::Table,
}

/// A checked bridge.
#[derive(Debug, Clone)]
pub struct BridgeSpec {
    /// On-chain id.
    pub id: u8,
    /// Short name.
    pub name: String,
    /// Human name.
    pub display_name: String,
    /// Enabled signals, in file order.
    pub signals: Vec<SignalSpec>,
}

/// Fully checked configuration of this keeper.
#[derive(Debug, Clone)]
pub struct Config {
    /// The settings as loaded (sections used by the runtime).
    pub settings: Settings,
    /// The enabled bridges, checked.
    pub bridges: Vec<BridgeSpec>,
}

impl Config {
    /// Loads the layers (defaults < file < environment < flags) and checks everything.
    pub fn load(file: Option<&Path>, env: &dyn Env) -> Result<Self, ConfigError> {
        let settings = Layers::new(DEFAULTS, file, env, &crate::env::bindings()).load()?;
        Self::check(settings)
    }

    /// Validates loaded settings and types the bridges.
    pub fn check(mut settings: Settings) -> Result<Self, ConfigError> {
        settings.storage.migrations = crate::records::MIGRATIONS;
        settings.ton.validate()?;
        validate_shared(
            &settings.runner,
            &settings.telemetry,
            &settings.alerts,
            &settings.storage,
        )?;
        settings.sources.validate()?;
        check_policy(&settings.policy)?;
        settings.upstreams.validate()?;
        if let Some(a) = &settings.oracle.address {
            keeper_ton::validate_address("oracle.address (BRIDGE_ORACLE_ADDRESS)", a)?;
        }
        if let Some(a) = &settings.oracle.pricing_address {
            keeper_ton::validate_address("oracle.pricing_address (PRICING_ORACLE_ADDRESS)", a)?;
        }
        let bridges = check_bridges(&settings.bridges)?;
        let needs_rpc = bridges
            .iter()
            .flat_map(|b| &b.signals)
            .find(|s| matches!(s.check, Check::EvmCall(_)));
        if let Some(s) = needs_rpc
            && settings.sources.eth_rpc_urls.is_empty()
        {
            return Err(ConfigError::new(
                "sources.eth_rpc_urls (ETH_RPC_URL)",
                format!("signal {} needs an Ethereum RPC endpoint", s.name),
            ));
        }
        Ok(Self { settings, bridges })
    }
    /// The oracle bridge statuses go to: `BRIDGE_ORACLE_ADDRESS`, else the pricing oracle's.
    pub fn oracle_address(&self) -> Option<&str> {
        let o = &self.settings.oracle;
        o.address
            .as_deref()
            .or(o.pricing_address.as_deref())
            .map(str::trim)
    }
}

fn check_policy(p: &PolicySettings) -> Result<(), ConfigError> {
    validate::nonzero("policy.heartbeat (BRIDGE_HEARTBEAT)", p.heartbeat)?;
    validate::nonzero("policy.max_status_age", p.max_status_age)?;
    validate::nonzero(
        "policy.confirm_ticks (BRIDGE_CONFIRM_TICKS)",
        u64::from(p.confirm_ticks),
    )?;
    validate::at_most(
        "policy.confirm_ticks (BRIDGE_CONFIRM_TICKS)",
        u64::from(p.confirm_ticks),
        100,
        "ticks",
    )?;
    if p.heartbeat >= p.max_status_age {
        return Err(ConfigError::new(
            "policy.heartbeat (BRIDGE_HEARTBEAT)",
            format!(
                "{} s must stay below the oracle's maximum status age ({} s, policy.max_status_age)",
                p.heartbeat, p.max_status_age
            ),
        ));
    }
    if p.heartbeat + p.fallback_offset >= p.max_status_age {
        return Err(ConfigError::new(
            "policy.fallback_offset (FALLBACK_OFFSET)",
            format!(
                "heartbeat + offset ({} s) must stay below the oracle's maximum status age ({} s): \
                 a fallback would let the status expire",
                p.heartbeat + p.fallback_offset,
                p.max_status_age
            ),
        ));
    }
    Ok(())
}

fn check_name(setting: &str, name: &str) -> Result<(), ConfigError> {
    let ok = !name.is_empty()
        && name.len() <= 48
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':' | '.' | '(' | ')'));
    if ok {
        Ok(())
    } else {
        Err(ConfigError::new(
            setting,
            format!("{name:?} must be 1-48 characters of letters, digits, _ - : . ( )"),
        ))
    }
}

fn check_bridges(raw: &[BridgeRaw]) -> Result<Vec<BridgeSpec>, ConfigError> {
    let mut ids = HashSet::new();
    let mut names = HashSet::new();
    let mut out = Vec::new();
    for (i, b) in raw.iter().enumerate() {
        let path = format!("bridges[{i}]");
        if !b.enabled {
            continue;
        }
        let bridge_name_ok = !b.name.is_empty()
            && b.name.len() <= 32
            && b.name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
        if !bridge_name_ok {
            return Err(ConfigError::new(
                format!("{path}.name"),
                format!("{:?} must be 1-32 characters of a-z, 0-9, _ and -", b.name),
            ));
        }
        if !ids.insert(b.id) {
            return Err(ConfigError::new(
                format!("{path}.id"),
                format!("bridge id {} is used twice", b.id),
            ));
        }
        if !names.insert(b.name.clone()) {
            return Err(ConfigError::new(
                format!("{path}.name"),
                format!("bridge name {:?} is used twice", b.name),
            ));
        }
        let mut signals = Vec::new();
        let mut signal_names = HashSet::new();
        for (j, s) in b.signals.iter().enumerate() {
            let spath = format!("{path}.signals[{j}]");
            if s.enabled == Some(false) {
                continue;
            }
            let mut table = s.rest.clone();
            table.insert("kind".into(), toml::Value::String(s.kind.clone()));
            let check = Check::parse(table, &spath)?;
            check.validate(&spath)?;
            let name = s.name.clone().unwrap_or_else(|| check.default_name());
            check_name(&format!("{spath}.name"), &name)?;
            if !signal_names.insert(name.clone()) {
                return Err(ConfigError::new(
                    format!("{spath}.name"),
                    format!(
                        "signal name {name:?} is used twice in bridge {:?}; set `name`",
                        b.name
                    ),
                ));
            }
            let weight = s.weight.unwrap_or(1.0);
            if !(weight.is_finite() && weight > 0.0) {
                return Err(ConfigError::new(
                    format!("{spath}.weight"),
                    "must be a positive number",
                ));
            }
            if let Some(t) = s.timeout {
                validate::nonzero(&format!("{spath}.timeout"), t)?;
            }
            if let Some(a) = s.attempts {
                validate::nonzero(&format!("{spath}.attempts"), u64::from(a))?;
            }
            signals.push(SignalSpec {
                name,
                weight,
                timeout: s.timeout,
                attempts: s.attempts,
                check,
            });
        }
        if signals.is_empty() {
            return Err(ConfigError::new(
                format!("{path}.signals"),
                format!("bridge {:?} has no enabled signal", b.name),
            ));
        }
        out.push(BridgeSpec {
            id: b.id,
            name: b.name.clone(),
            display_name: b.display_name.clone().unwrap_or_else(|| b.name.clone()),
            signals,
        });
    }
    if out.is_empty() {
        return Err(ConfigError::new(
            "bridges",
            "no enabled bridge configured: every [[bridges]] entry is disabled or the list is empty",
        ));
    }
    Ok(out)
}

impl ChainConfig for Config {
    fn ton(&self) -> &TonSettings {
        &self.settings.ton
    }
    fn ton_mut(&mut self) -> &mut TonSettings {
        &mut self.settings.ton
    }
    fn runner(&self) -> &RunnerSettings {
        &self.settings.runner
    }
    fn telemetry(&self) -> &TelemetrySettings {
        &self.settings.telemetry
    }
    fn alerts(&self) -> &AlertSettings {
        &self.settings.alerts
    }
    fn storage(&self) -> &StorageSettings {
        &self.settings.storage
    }
    fn oracle(&self) -> Option<&str> {
        self.oracle_address()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn load_str(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("b.toml");
        std::fs::write(&f, text).unwrap();
        let env: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Config::load(Some(&f), &env)
    }

    const MIN: &str = r#"
[[bridges]]
id = 3
name = "wormhole"
[[bridges.signals]]
kind = "wormhole_health"
"#;

    #[test]
    fn shipped_config_loads_with_four_bridges() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/bridge-health.toml");
        let env: HashMap<String, String> = HashMap::new();
        let c = Config::load(Some(&path), &env).unwrap();
        let ids: Vec<(u8, &str)> = c.bridges.iter().map(|b| (b.id, b.name.as_str())).collect();
        assert_eq!(
            ids,
            [
                (1, "ton_bridge"),
                (2, "orbit"),
                (3, "wormhole"),
                (4, "axelar")
            ]
        );
        let kinds = |i: usize| -> Vec<&str> {
            c.bridges[i]
                .signals
                .iter()
                .map(|s| s.check.kind())
                .collect()
        };
        assert_eq!(kinds(0), ["peg", "peg", "evm_call"]);
        assert_eq!(kinds(1), ["tvl", "peg"]);
        assert_eq!(
            kinds(2),
            [
                "wormhole_health",
                "wormhole_governor_queue",
                "wormhole_governor_limit",
                "volume_stall",
                "tvl"
            ]
        );
        assert_eq!(kinds(3), ["axelar_tvl_alert", "volume_stall", "tvl"]);
        assert_eq!(c.settings.policy.heartbeat, 900);
    }

    #[test]
    fn bridge_oracle_falls_back_to_pricing_oracle() {
        let a = "EQCDM_QGggZ3qMa_f3lRPk4_qLDnLTqdi6OkMAV2NB9r5TG3";
        let b = "UQDv2YSmlrlLH3hLNOVxC8FcQf4F9eGNs4vb2zKma4txo6i3";
        let c = load_str(MIN, &[("PRICING_ORACLE_ADDRESS", a)]).unwrap();
        assert_eq!(c.oracle_address().unwrap(), a);
        let c = load_str(
            MIN,
            &[("PRICING_ORACLE_ADDRESS", a), ("BRIDGE_ORACLE_ADDRESS", b)],
        )
        .unwrap();
        assert_eq!(c.oracle_address().unwrap(), b);
        let with_file = format!("[oracle]\naddress = \"{b}\"\n{MIN}");
        let c = load_str(&with_file, &[("PRICING_ORACLE_ADDRESS", a)]).unwrap();
        assert_eq!(c.oracle_address().unwrap(), b, "file's bridge oracle wins");
        let c = load_str(MIN, &[]).unwrap();
        assert_eq!(c.oracle_address(), None);
    }

    #[test]
    fn without_a_config_file_the_four_default_bridges_are_watched() {
        let env: HashMap<String, String> = HashMap::new();
        let c = Config::load(None, &env).unwrap();
        let names: Vec<&str> = c.bridges.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["ton_bridge", "orbit", "wormhole", "axelar"]);
        assert_eq!(
            c.settings.telemetry.metrics_addr.map(|a| a.port()),
            Some(9102)
        );
        let needs = keeper_runtime::cli::Needs {
            oracle: true,
            ..Default::default()
        };
        let e = keeper_ton::keeper::load::<crate::BridgeKeeper>(None, &env, needs)
            .err()
            .unwrap();
        assert!(e.setting.contains("BRIDGE_ORACLE_ADDRESS"), "{e}");
    }

    #[test]
    fn env_overrides_urls_and_heartbeat() {
        let c = load_str(
            MIN,
            &[
                ("WORMHOLESCAN_URL", "http://127.0.0.1:1"),
                ("BRIDGE_HEARTBEAT", "600"),
            ],
        )
        .unwrap();
        assert_eq!(c.settings.upstreams.wormholescan_url, "http://127.0.0.1:1");
        assert_eq!(c.settings.policy.heartbeat, 600);
        let e = load_str(MIN, &[("BRIDGE_HEARTBEAT", "1800")]).unwrap_err();
        assert_eq!(e.setting, "policy.heartbeat (BRIDGE_HEARTBEAT)");
        let e = load_str(MIN, &[("AXELARSCAN_URL", "ftp://x")]).unwrap_err();
        assert_eq!(e.setting, "upstreams.axelarscan_url (AXELARSCAN_URL)");
    }

    #[test]
    fn bad_bridges_name_the_setting() {
        let cases: &[(&str, &str)] = &[
            (
                "[[bridges]]\nid = 1\nname = \"a\"\n[[bridges.signals]]\nkind = \"nope\"\n",
                "bridges[0].signals[0].kind",
            ),
            (
                "[[bridges]]\nid = 1\nname = \"a\"\n[[bridges.signals]]\nkind = \"tvl\"\nslug = \"x\"\nsulg = 1\n",
                "bridges[0].signals[0]",
            ),
            (
                "[[bridges]]\nid = 1\nname = \"a\"\n[[bridges.signals]]\nkind = \"tvl\"\n",
                "bridges[0].signals[0]",
            ),
            ("[[bridges]]\nid = 1\nname = \"a\"\n", "bridges[0].signals"),
            (
                "[[bridges]]\nid = 1\nname = \"a\"\n[[bridges.signals]]\nkind = \"wormhole_health\"\n[[bridges]]\nid = 1\nname = \"b\"\n[[bridges.signals]]\nkind = \"wormhole_health\"\n",
                "bridges[1].id",
            ),
            (
                "[[bridges]]\nid = 1\nname = \"Bad Name\"\n[[bridges.signals]]\nkind = \"wormhole_health\"\n",
                "bridges[0].name",
            ),
            (
                "[[bridges]]\nid = 300\nname = \"a\"\n[[bridges.signals]]\nkind = \"wormhole_health\"\n",
                "bridges[0].id",
            ),
            (
                "[[bridges]]\nid = 1\nname = \"a\"\n[[bridges.signals]]\nkind = \"wormhole_health\"\nweight = -1\n",
                "bridges[0].signals[0].weight",
            ),
            (
                "[[bridges]]\nid = 1\nname = \"a\"\n[[bridges.signals]]\nkind = \"wormhole_health\"\n[[bridges.signals]]\nkind = \"wormhole_health\"\n",
                "bridges[0].signals[1].name",
            ),
            ("bridges = []\n", "bridges"),
        ];
        for (text, setting) in cases {
            let e = load_str(text, &[]).unwrap_err();
            assert!(
                e.setting.starts_with(setting),
                "{text:?}: expected {setting}, got {e}"
            );
        }
    }

    #[test]
    fn disabled_entries_are_dropped() {
        let text = format!(
            "{MIN}[[bridges.signals]]\nkind = \"tvl\"\nslug = \"portal\"\nenabled = false\n[[bridges]]\nid = 4\nname = \"axelar\"\nenabled = false\n"
        );
        let c = load_str(&text, &[]).unwrap();
        assert_eq!(c.bridges.len(), 1);
        assert_eq!(c.bridges[0].signals.len(), 1);
    }
}

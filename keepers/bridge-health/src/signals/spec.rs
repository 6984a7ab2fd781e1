//! What a signal is, as configured: the `[upstreams]` it reads and the checked
//! `[[bridges.signals]]` entries. Signal kinds are declared once, in [`checks!`].

use keeper_runtime::config::{ConfigError, validate};
use serde::Deserialize;
use std::time::Duration;

use super::fetch::Policy;

use super::{
    axelar::AxelarConfig, evm_call::EvmCallConfig, peg::PegConfig, tvl::TvlConfig,
    volume::VolumeConfig, wormhole_health::WormholeHealthConfig,
    wormhole_limit::GovernorLimitConfig, wormhole_queue::GovernorQueueConfig,
};

/// `[upstreams]`: base URLs and request defaults of the HTTP upstreams.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamSettings {
    /// DefiLlama bridges API (`DEFILLAMA_BRIDGES_URL`).
    pub defillama_bridges_url: String,
    /// DefiLlama TVL API (`DEFILLAMA_API_URL`).
    pub defillama_api_url: String,
    /// Wormholescan API (`WORMHOLESCAN_URL`).
    pub wormholescan_url: String,
    /// Axelarscan API (`AXELARSCAN_URL`).
    pub axelarscan_url: String,
    /// Default per-request timeout, seconds.
    pub timeout: u64,
    /// Default tries per check (1 = no retry).
    pub attempts: u32,
    /// First backoff delay, milliseconds (doubles, with jitter).
    pub retry_min_delay_ms: u64,
    /// Longest `Retry-After` honoured within a cycle, seconds.
    pub retry_after_cap: u64,
    /// Largest `/protocol/{slug}` body read (it is streamed, never held in memory).
    pub protocol_max_bytes: u64,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            defillama_bridges_url: "https://bridges.llama.fi".into(),
            defillama_api_url: "https://api.llama.fi".into(),
            wormholescan_url: "https://api.wormholescan.io".into(),
            axelarscan_url: "https://api.axelarscan.io".into(),
            timeout: 10,
            attempts: 3,
            retry_min_delay_ms: 200,
            retry_after_cap: 10,
            protocol_max_bytes: 64 * 1024 * 1024,
        }
    }
}

impl UpstreamSettings {
    /// Checks URLs and bounds.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate::http_url(
            "upstreams.defillama_bridges_url (DEFILLAMA_BRIDGES_URL)",
            &self.defillama_bridges_url,
        )?;
        validate::http_url(
            "upstreams.defillama_api_url (DEFILLAMA_API_URL)",
            &self.defillama_api_url,
        )?;
        validate::http_url(
            "upstreams.wormholescan_url (WORMHOLESCAN_URL)",
            &self.wormholescan_url,
        )?;
        validate::http_url(
            "upstreams.axelarscan_url (AXELARSCAN_URL)",
            &self.axelarscan_url,
        )?;
        validate::nonzero("upstreams.timeout", self.timeout)?;
        validate::nonzero("upstreams.attempts", u64::from(self.attempts))?;
        validate::nonzero("upstreams.protocol_max_bytes", self.protocol_max_bytes)?;
        Ok(())
    }
}

/// A checked signal.
#[derive(Debug, Clone)]
pub struct SignalSpec {
    /// Unique within the bridge.
    pub name: String,
    /// Weight in the score (> 0).
    pub weight: f64,
    /// Per-request timeout override, seconds.
    pub timeout: Option<u64>,
    /// Tries override.
    pub attempts: Option<u32>,
    /// What to check.
    pub check: Check,
}

/// Declares the signal kinds once: the `Check` enum (deserialized by its `kind` key) and
/// `Check::kind`.
macro_rules! checks {
    ($($(#[$doc:meta])* $variant:ident($config:ty) = $kind:literal,)+) => {
        /// The checks, one per upstream signal; `kind` in the configuration picks one.
        #[derive(Debug, Clone, Deserialize)]
        #[serde(tag = "kind")]
        pub enum Check {
            $($(#[$doc])* #[serde(rename = $kind)] $variant($config),)+
        }

        impl Check {
            /// The `kind` name.
            pub fn kind(&self) -> &'static str {
                match self {
                    $(Self::$variant(_) => $kind,)+
                }
            }
        }
    };
}

checks! {
    /// Wrapped-token peg from DefiLlama coins.
    Peg(PegConfig) = "peg",
    /// TVL level and 24 h change from DefiLlama.
    Tvl(TvlConfig) = "tvl",
    /// DefiLlama bridges volume stall.
    VolumeStall(VolumeConfig) = "volume_stall",
    /// Wormholescan `/api/v1/health`.
    WormholeHealth(WormholeHealthConfig) = "wormhole_health",
    /// Wormhole governor enqueued VAAs.
    WormholeGovernorQueue(GovernorQueueConfig) = "wormhole_governor_queue",
    /// Wormhole governor available notional vs limit.
    WormholeGovernorLimit(GovernorLimitConfig) = "wormhole_governor_limit",
    /// Axelarscan `getTVLAlert`.
    AxelarTvlAlert(AxelarConfig) = "axelar_tvl_alert",
    /// An `eth_call` returning a boolean.
    EvmCall(EvmCallConfig) = "evm_call",
}

impl Check {
    /// Reads the kind-specific table (`kind` included) of the signal at `path`.
    pub fn parse(table: toml::Table, path: &str) -> Result<Self, ConfigError> {
        toml::Value::Table(table).try_into::<Self>().map_err(|e| {
            let msg = e.to_string();
            let first = msg.lines().next().unwrap_or("invalid value").to_owned();
            // serde names the offending key itself; an unknown kind is about `kind`.
            let at = if first.contains("unknown variant") || first.contains("missing field `kind`")
            {
                format!("{path}.kind")
            } else {
                path.to_owned()
            };
            ConfigError::new(at, first)
        })
    }

    /// The upstream it reads (the `source` label of its request metrics).
    pub fn upstream(&self) -> &'static str {
        match self {
            Self::Peg(_) => super::peg::UPSTREAM,
            Self::Tvl(_) => super::tvl::UPSTREAM,
            Self::VolumeStall(_) => super::volume::UPSTREAM,
            Self::WormholeHealth(_)
            | Self::WormholeGovernorQueue(_)
            | Self::WormholeGovernorLimit(_) => super::wormhole_health::UPSTREAM,
            Self::AxelarTvlAlert(_) => super::axelar::UPSTREAM,
            Self::EvmCall(_) => super::evm_call::UPSTREAM,
        }
    }

    /// The name of a signal that does not set one.
    pub fn default_name(&self) -> String {
        match self {
            Self::Peg(c) => format!("peg:{}", c.symbol),
            Self::Tvl(c) => format!("tvl:{}", c.slug),
            Self::VolumeStall(c) => format!("volume_stall:{}", c.bridge_id),
            Self::WormholeHealth(_) => "wormholescan_health".into(),
            Self::WormholeGovernorQueue(_) => "governor_queue".into(),
            Self::WormholeGovernorLimit(_) => "governor_limit".into(),
            Self::AxelarTvlAlert(_) => "axelar_tvl_alert".into(),
            Self::EvmCall(c) => format!("evm_call:{}", c.function),
        }
    }

    /// Checks the kind's own settings.
    pub fn validate(&self, path: &str) -> Result<(), ConfigError> {
        match self {
            Self::Peg(c) => c.validate(path),
            Self::Tvl(c) => c.validate(path),
            Self::VolumeStall(c) => c.validate(path),
            Self::WormholeHealth(_) | Self::AxelarTvlAlert(_) => Ok(()),
            Self::WormholeGovernorQueue(c) => c.validate(path),
            Self::WormholeGovernorLimit(c) => c.validate(path),
            Self::EvmCall(c) => c.validate(path),
        }
    }
}

// Here rather than in `fetch`, so that fetching needs nothing from the configuration.
impl Policy {
    /// The signal's own settings, falling back to the `[upstreams]` defaults.
    pub fn for_spec(spec: &SignalSpec, up: &UpstreamSettings) -> Self {
        Self {
            timeout: Duration::from_secs(spec.timeout.unwrap_or(up.timeout)),
            attempts: spec.attempts.unwrap_or(up.attempts).max(1),
            min_delay: Duration::from_millis(up.retry_min_delay_ms),
            retry_after_cap: Duration::from_secs(up.retry_after_cap),
        }
    }
}

//! `[[assets]]`: the assets the oracle prices and where each source finds them (Chainlink feed,
//! CoinGecko id, DefiLlama key, Pyth feed id), whose data each source carries (lineage), the
//! per-asset publishing overrides, with their checks.

use std::collections::HashSet;
use std::str::FromStr;

use alloy_primitives::Address;
use serde::{Deserialize, Serialize};

use super::Source;
use super::config::{AggregatePolicy, AggregationSettings, SanityBand, SourcesSettings};
use keeper_runtime::config::{BadInput, ConfigError, validate};

// Here rather than in `config`: the asset table builds on the settings, not the other way round.
impl AggregationSettings {
    /// The rules for one asset: these settings with the asset's own band, if it has one.
    pub fn policy_for(&self, asset: &AssetConfig) -> AggregatePolicy {
        AggregatePolicy {
            min_sources: self.min_sources as usize,
            max_deviation_bps: self.max_deviation_bps,
            band: asset.sanity_band.unwrap_or(self.sanity_band),
        }
    }
}

/// A Chainlink feed on Ethereum mainnet.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ChainlinkFeed {
    /// The feed's proxy (EACAggregatorProxy) address, `0x…` (EIP-55 checksum checked when mixed-case).
    pub proxy: String,
    /// The feed's heartbeat, seconds: a round older than heartbeat + grace is stale.
    pub heartbeat: u64,
}

impl ChainlinkFeed {
    /// The proxy as an address; validated at start, so this fails only on unvalidated input.
    pub fn address(&self) -> Result<Address, BadInput> {
        parse_address(&self.proxy)
    }
}

/// Parses an Ethereum address, checking the EIP-55 checksum when the text is mixed-case.
pub fn parse_address(text: &str) -> Result<Address, BadInput> {
    let t = text.trim();
    let bad = |problem: String| BadInput::new(t, problem);
    let hex = t
        .strip_prefix("0x")
        .ok_or_else(|| bad(format!("{t:?} must start with 0x")))?;
    if hex.len() != 40 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(bad(format!("{t:?} is not a 20-byte hex address")));
    }
    let mixed =
        hex.bytes().any(|b| b.is_ascii_lowercase()) && hex.bytes().any(|b| b.is_ascii_uppercase());
    if mixed {
        Address::parse_checksummed(t, None)
            .map_err(|_| bad(format!("{t:?} has a wrong EIP-55 checksum (typo?)")))
    } else {
        Address::from_str(t).map_err(|e| bad(format!("{t:?}: {e}")))
    }
}

/// One `[[assets]]` entry: an asset the oracle prices and where each source finds it.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AssetConfig {
    /// Display name and metric label, e.g. `USDT`.
    pub symbol: String,
    /// The asset id in the on-chain oracle.
    pub id: u16,
    /// Chainlink feed on Ethereum mainnet, if there is one.
    #[serde(default)]
    pub chainlink: Option<ChainlinkFeed>,
    /// CoinGecko coin id, e.g. `tether`.
    #[serde(default)]
    pub coingecko_id: Option<String>,
    /// DefiLlama coins key: `coingecko:tether`, `ethereum:0x…` or `ton:EQ…` (case kept).
    #[serde(default)]
    pub defillama_key: Option<String>,
    /// Pyth feed id (32-byte hex, `0x` optional).
    #[serde(default)]
    pub pyth_id: Option<String>,
    /// The lineage DefiLlama's quote carries; default `coingecko`, since DefiLlama serves
    /// CoinGecko's price for these keys. Set a name of its own only where DefiLlama is known to
    /// price the key from other data.
    #[serde(default)]
    pub defillama_lineage: Option<String>,
    /// This asset's plausible range, overriding `aggregation.sanity_band`.
    #[serde(default)]
    pub sanity_band: Option<SanityBand>,
    /// Publishing threshold for this asset, overriding `policy.deviation_bps`.
    #[serde(default)]
    pub deviation_bps: Option<u32>,
    /// Heartbeat for this asset, seconds, overriding `policy.heartbeat`.
    #[serde(default)]
    pub heartbeat: Option<u64>,
    /// Circuit-breaker step for this asset, overriding `policy.max_step_bps`.
    #[serde(default)]
    pub max_step_bps: Option<u32>,
}

impl AssetConfig {
    /// Which sources are configured for this asset.
    pub fn sources(&self) -> Vec<Source> {
        let mut v = Vec::with_capacity(4);
        if self.chainlink.is_some() {
            v.push(Source::Chainlink);
        }
        if self.coingecko_id.is_some() {
            v.push(Source::Coingecko);
        }
        if self.defillama_key.is_some() {
            v.push(Source::Defillama);
        }
        if self.pyth_id.is_some() {
            v.push(Source::Pyth);
        }
        v
    }

    /// Whose data `source` carries for this asset.
    pub fn lineage_of(&self, source: Source) -> &str {
        match (source, &self.defillama_lineage) {
            (Source::Defillama, Some(l)) => l,
            _ => source.default_lineage(),
        }
    }

    /// The distinct lineages of the sources that are configured here and enabled.
    pub fn lineages(&self, sources: &SourcesSettings) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for s in self.sources() {
            let l = self.lineage_of(s);
            if sources.is_enabled(s) && !out.contains(&l) {
                out.push(l);
            }
        }
        out
    }
}

/// The `[[assets]]` table. The keeper's shipped example file holds the default table; this
/// type's own default is empty.
#[derive(Debug, Clone, PartialEq, Default, Deserialize, Serialize)]
#[serde(transparent)]
pub struct AssetList(pub Vec<AssetConfig>);

impl std::ops::Deref for AssetList {
    type Target = [AssetConfig];
    fn deref(&self) -> &[AssetConfig] {
        &self.0
    }
}

impl AssetList {
    /// The `[[assets]]` of a TOML document (the pricing keeper's example file, in tests).
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| ConfigError::new("assets", e.message().to_owned()))?;
        let assets = table
            .remove("assets")
            .ok_or_else(|| ConfigError::new("assets", "no [[assets]] in the document"))?;
        assets
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::new("assets", e.message().to_owned()))
    }
}

/// Checks a DefiLlama coins key: `chain:address` from a safe character set, since it is placed
/// in a URL path as-is.
pub fn validate_defillama_key(key: &str) -> Result<(), BadInput> {
    let Some((chain, id)) = key.split_once(':') else {
        return Err(BadInput::new(
            key,
            format!("{key:?} must look like coingecko:tether, ethereum:0x… or ton:EQ…"),
        ));
    };
    let safe = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    if !safe(chain) || !safe(id) {
        return Err(BadInput::new(
            key,
            format!("{key:?} may contain only letters, digits, '-', '_' and '.' around one ':'"),
        ));
    }
    Ok(())
}

impl AssetList {
    /// Checks each asset, that symbols and ids are unique, and that every asset has at least
    /// `min_sources` enabled sources (otherwise it could never be published).
    pub fn validate(
        &self,
        aggregation: &AggregationSettings,
        sources: &SourcesSettings,
    ) -> Result<(), ConfigError> {
        if self.0.is_empty() {
            return Err(ConfigError::new("assets", "no asset configured"));
        }
        let mut symbols = HashSet::new();
        let mut ids = HashSet::new();
        for (i, a) in self.0.iter().enumerate() {
            let at = |field: &str| format!("assets[{i}].{field}");
            let sym_ok = !a.symbol.is_empty()
                && a.symbol.len() <= 32
                && a.symbol
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
            if !sym_ok {
                return Err(ConfigError::new(
                    at("symbol"),
                    format!(
                        "{:?} must be 1-32 letters, digits, '-', '_' or '.'",
                        a.symbol
                    ),
                ));
            }
            if !symbols.insert(a.symbol.as_str()) {
                return Err(ConfigError::new(
                    at("symbol"),
                    format!("{} is configured twice", a.symbol),
                ));
            }
            if !ids.insert(a.id) {
                return Err(ConfigError::new(
                    at("id"),
                    format!("id {} is used by another asset", a.id),
                ));
            }
            if let Some(feed) = &a.chainlink {
                feed.address()
                    .map_err(|p| ConfigError::new(at("chainlink.proxy"), p))?;
                validate::nonzero(&at("chainlink.heartbeat"), feed.heartbeat)?;
            }
            if let Some(id) = &a.coingecko_id {
                let ok = !id.is_empty()
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
                if !ok {
                    return Err(ConfigError::new(
                        at("coingecko_id"),
                        format!("{id:?} must be a CoinGecko id (a-z, 0-9, '-')"),
                    ));
                }
            }
            if let Some(k) = &a.defillama_key {
                validate_defillama_key(k).map_err(|p| ConfigError::new(at("defillama_key"), p))?;
            }
            if let Some(id) = &a.pyth_id {
                super::pyth::validate_feed_id(id)
                    .map_err(|p| ConfigError::new(at("pyth_id"), p))?;
            }
            if let Some(l) = &a.defillama_lineage {
                let ok = !l.is_empty()
                    && l.len() <= 32
                    && l.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_')
                    });
                if !ok {
                    return Err(ConfigError::new(
                        at("defillama_lineage"),
                        format!("{l:?} must be 1-32 of a-z, 0-9, '-' or '_'"),
                    ));
                }
            }
            if let Some(b) = &a.sanity_band {
                b.validate(&at("sanity_band"))?;
            }
            for (field, bps) in [
                ("deviation_bps", a.deviation_bps),
                ("max_step_bps", a.max_step_bps),
            ] {
                if let Some(bps) = bps {
                    validate::at_most(&at(field), u64::from(bps), validate::MAX_BPS, "bps")?;
                }
            }
            if let Some(h) = a.heartbeat {
                validate::nonzero(&at("heartbeat"), h)?;
                validate::at_most(&at("heartbeat"), h, 7 * validate::DAY_SECONDS, "s")?;
            }
            let lineages = a.lineages(sources);
            if lineages.len() < aggregation.min_sources as usize {
                return Err(ConfigError::new(
                    format!("assets[{i}] ({})", a.symbol),
                    format!(
                        "{} independent lineage(s) among its enabled sources ({}), fewer than aggregation.min_sources (MIN_SOURCES) = {}: it could never be published",
                        lineages.len(),
                        lineages.join(", "),
                        aggregation.min_sources
                    ),
                ));
            }
        }
        Ok(())
    }
}

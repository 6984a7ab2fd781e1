//! Settings of the price sources (`[sources]`), of aggregation (`[aggregation]`) and the asset
//! table (`[[assets]]`), with their environment bindings and validation.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer, Serialize};

use super::Source;
use keeper_runtime::config::{
    BadInput, ConfigError, EnvBinding, Kind, bind, bind_secret, validate,
};
use keeper_runtime::secret::Secret;

/// Environment bindings of `[sources]` and `[aggregation]`; the pricing and bridge keepers
/// append them to `COMMON_ENV`.
pub const SOURCES_ENV: &[EnvBinding] = &[
    bind_secret("ETH_RPC_URL", "sources.eth_rpc_urls", Kind::List),
    bind(
        "COINGECKO_BASE_URL",
        "sources.coingecko_base_url",
        Kind::Str,
    ),
    bind_secret("COINGECKO_API_KEY", "sources.coingecko_api_key", Kind::Str),
    bind("COINGECKO_TIER", "sources.coingecko_tier", Kind::Str),
    bind_secret(
        "DEFILLAMA_COINS_URL",
        "sources.defillama_coins_url",
        Kind::Str,
    ),
    bind(
        "DEFILLAMA_SEARCH_WIDTH",
        "sources.defillama_search_width",
        Kind::Str,
    ),
    bind("PYTH_HERMES_URL", "sources.pyth_hermes_url", Kind::Str),
    bind_secret("PYTH_API_KEY", "sources.pyth_api_key", Kind::Str),
    bind("SOURCE_TIMEOUT", "sources.request_timeout", Kind::Int),
    bind("MIN_SOURCES", "aggregation.min_sources", Kind::Int),
    bind(
        "MAX_DEVIATION_BPS",
        "aggregation.max_deviation_bps",
        Kind::Int,
    ),
    bind(
        "ALLOW_SINGLE_SOURCE",
        "aggregation.allow_single_source",
        Kind::Bool,
    ),
];

/// Default public Ethereum JSON-RPC endpoints (keyless), tried in order.
pub const DEFAULT_ETH_RPC_URLS: &[&str] = &[
    "https://ethereum-rpc.publicnode.com",
    "https://eth.drpc.org",
];
/// CoinGecko's public and demo host.
pub const COINGECKO_PUBLIC_URL: &str = "https://api.coingecko.com/api/v3";
/// CoinGecko's paid host.
pub const COINGECKO_PRO_URL: &str = "https://pro-api.coingecko.com/api/v3";
/// DefiLlama's coins API.
pub const DEFILLAMA_COINS_URL: &str = "https://coins.llama.fi";
/// Pyth's public Hermes instance.
pub const PYTH_HERMES_URL: &str = "https://hermes.pyth.network";

/// CoinGecko plan: decides the host and the key header (reference §1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CoinGeckoTier {
    /// No key, api.coingecko.com, per-IP rate limit.
    Keyless,
    /// Demo key in `x-cg-demo-api-key`, api.coingecko.com.
    Demo,
    /// Pro key in `x-cg-pro-api-key`, pro-api.coingecko.com.
    Pro,
}

impl CoinGeckoTier {
    /// The header carrying the key, if the tier has one.
    pub fn key_header(self) -> Option<&'static str> {
        match self {
            Self::Keyless => None,
            Self::Demo => Some("x-cg-demo-api-key"),
            Self::Pro => Some("x-cg-pro-api-key"),
        }
    }

    /// The tier's default base URL.
    pub fn default_base_url(self) -> &'static str {
        match self {
            Self::Pro => COINGECKO_PRO_URL,
            Self::Keyless | Self::Demo => COINGECKO_PUBLIC_URL,
        }
    }
}

/// Timeout and retry behaviour of every request to one upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestPolicy {
    /// Bound on one request, connection to last body byte.
    pub timeout: Duration,
    /// Tries per request, the first included (so `attempts - 1` retries).
    pub attempts: u32,
    /// First backoff delay; doubles per retry, with jitter.
    pub min_delay: Duration,
    /// Longest wait between tries, also the cap on a server's `Retry-After` within one tick.
    pub max_delay: Duration,
}

impl Default for RequestPolicy {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            attempts: 3,
            min_delay: Duration::from_millis(250),
            max_delay: Duration::from_secs(5),
        }
    }
}

/// `[sources]`: where prices come from and how hard to try.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SourcesSettings {
    /// Which sources run: any of `chainlink`, `coingecko`, `defillama`, `pyth`.
    pub enabled: Vec<Source>,
    /// Ethereum JSON-RPC endpoints, tried in order (`ETH_RPC_URL`, comma-separated); URLs often
    /// carry a key in their path, so they are secrets.
    pub eth_rpc_urls: Vec<Arc<Secret>>,
    /// CoinGecko API base (`COINGECKO_BASE_URL`); default: the tier's host.
    pub coingecko_base_url: Option<String>,
    /// CoinGecko demo or pro key (`COINGECKO_API_KEY`).
    pub coingecko_api_key: Option<Arc<Secret>>,
    /// `keyless`, `demo` or `pro` (`COINGECKO_TIER`); default: `demo` with a key, else `keyless`.
    pub coingecko_tier: Option<CoinGeckoTier>,
    /// DefiLlama coins API base (`DEFILLAMA_COINS_URL`); may carry a pro key in its path.
    pub defillama_coins_url: Arc<Secret>,
    /// DefiLlama `searchWidth` (`4h`, `12h`, `1d`…): older coins are left out of the answer.
    pub defillama_search_width: String,
    /// Pyth Hermes base URL (`PYTH_HERMES_URL`); `/v2/updates/price/latest` is appended.
    pub pyth_hermes_url: String,
    /// Hermes API key, sent as `Authorization: Bearer` (`PYTH_API_KEY`).
    pub pyth_api_key: Option<Arc<Secret>>,
    /// A Pyth quote whose `conf / price` exceeds this many basis points is rejected.
    pub pyth_max_conf_bps: u32,
    /// Oldest acceptable Pyth `publish_time`, seconds.
    pub pyth_max_age: u64,
    /// Per-request timeout, seconds (`SOURCE_TIMEOUT`).
    pub request_timeout: u64,
    /// Retries after the first try of a request.
    pub retries: u32,
    /// First backoff delay, milliseconds (doubles per retry, with jitter).
    pub retry_delay_ms: u64,
    /// Longest wait between tries, seconds; a longer `Retry-After` skips the source until then.
    pub retry_max_delay: u64,
    /// Bound on one source's whole fetch in a tick (retries and failover included), seconds.
    pub deadline: u64,
    /// Oldest acceptable CoinGecko quote, seconds.
    pub coingecko_max_age: u64,
    /// Oldest acceptable DefiLlama quote, seconds.
    pub defillama_max_age: u64,
    /// Seconds a Chainlink round may exceed its feed's heartbeat before it is stale.
    pub chainlink_grace: u64,
}

impl Default for SourcesSettings {
    fn default() -> Self {
        Self {
            enabled: Source::ALL.to_vec(),
            eth_rpc_urls: DEFAULT_ETH_RPC_URLS
                .iter()
                .map(|u| Arc::new(Secret::new(*u)))
                .collect(),
            coingecko_base_url: None,
            coingecko_api_key: None,
            coingecko_tier: None,
            defillama_coins_url: Arc::new(Secret::new(DEFILLAMA_COINS_URL)),
            defillama_search_width: "4h".into(),
            pyth_hermes_url: PYTH_HERMES_URL.into(),
            pyth_api_key: None,
            pyth_max_conf_bps: 100,
            pyth_max_age: 120,
            request_timeout: 10,
            retries: 2,
            retry_delay_ms: 250,
            retry_max_delay: 5,
            deadline: 30,
            coingecko_max_age: 600,
            defillama_max_age: 600,
            chainlink_grace: 600,
        }
    }
}

impl fmt::Debug for SourcesSettings {
    // URLs may carry keys in their path; show only hosts.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourcesSettings")
            .field("enabled", &self.enabled)
            .field(
                "eth_rpc_urls",
                &self
                    .eth_rpc_urls
                    .iter()
                    .map(|u| host_of(u.expose()))
                    .collect::<Vec<_>>(),
            )
            .field("coingecko_base_url", &self.coingecko_base_url())
            .field("coingecko_api_key", &self.coingecko_api_key)
            .field("coingecko_tier", &self.coingecko_tier())
            .field(
                "defillama_coins_url",
                &host_of(self.defillama_coins_url.expose()),
            )
            .field("defillama_search_width", &self.defillama_search_width)
            .field("pyth_hermes_url", &host_of(&self.pyth_hermes_url))
            .field("pyth_api_key", &self.pyth_api_key)
            .field("pyth_max_conf_bps", &self.pyth_max_conf_bps)
            .field("pyth_max_age", &self.pyth_max_age)
            .field("request_timeout", &self.request_timeout)
            .field("retries", &self.retries)
            .field("retry_delay_ms", &self.retry_delay_ms)
            .field("retry_max_delay", &self.retry_max_delay)
            .field("deadline", &self.deadline)
            .field("coingecko_max_age", &self.coingecko_max_age)
            .field("defillama_max_age", &self.defillama_max_age)
            .field("chainlink_grace", &self.chainlink_grace)
            .finish()
    }
}

/// The host of a URL, for messages that must not show a path or query (keys live there).
pub fn host_of(url: &str) -> String {
    url::Url::parse(url)
        .ok()
        .and_then(|u| {
            u.host_str().map(|h| match u.port() {
                Some(p) => format!("{h}:{p}"),
                None => h.to_owned(),
            })
        })
        .unwrap_or_else(|| "[unparsable url]".to_owned())
}

impl SourcesSettings {
    /// The effective CoinGecko tier: explicit, else `demo` when a key is set, else `keyless`.
    pub fn coingecko_tier(&self) -> CoinGeckoTier {
        match (self.coingecko_tier, &self.coingecko_api_key) {
            (Some(t), _) => t,
            (None, Some(k)) if !k.is_empty() => CoinGeckoTier::Demo,
            (None, _) => CoinGeckoTier::Keyless,
        }
    }

    /// The effective CoinGecko base URL (override, else the tier's host), without trailing `/`.
    pub fn coingecko_base_url(&self) -> String {
        self.coingecko_base_url
            .as_deref()
            .unwrap_or(self.coingecko_tier().default_base_url())
            .trim_end_matches('/')
            .to_owned()
    }

    /// True when `source` is enabled.
    pub fn is_enabled(&self, source: Source) -> bool {
        self.enabled.contains(&source)
    }

    /// Timeout and retry behaviour derived from these settings.
    pub fn request_policy(&self) -> RequestPolicy {
        RequestPolicy {
            timeout: Duration::from_secs(self.request_timeout),
            attempts: self.retries.saturating_add(1),
            min_delay: Duration::from_millis(self.retry_delay_ms),
            max_delay: Duration::from_secs(self.retry_max_delay),
        }
    }

    /// The oldest acceptable quote for a non-Chainlink source, seconds.
    pub fn max_age(&self, source: Source) -> u64 {
        match source {
            Source::Coingecko => self.coingecko_max_age,
            Source::Defillama => self.defillama_max_age,
            Source::Pyth => self.pyth_max_age,
            // Chainlink's limit is per feed: heartbeat + grace.
            Source::Chainlink => self.chainlink_grace,
        }
    }

    /// Checks URLs, the CoinGecko tier and key, durations and the search width.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut seen = HashSet::new();
        for s in &self.enabled {
            if !seen.insert(*s) {
                return Err(ConfigError::new(
                    "sources.enabled",
                    format!("{s} is listed twice"),
                ));
            }
        }
        if self.is_enabled(Source::Chainlink) && self.eth_rpc_urls.is_empty() {
            return Err(ConfigError::new(
                "sources.eth_rpc_urls (ETH_RPC_URL)",
                "chainlink is enabled but no Ethereum RPC URL is set",
            ));
        }
        for (i, u) in self.eth_rpc_urls.iter().enumerate() {
            validate::secret_http_url(&format!("sources.eth_rpc_urls[{i}] (ETH_RPC_URL)"), u)?;
        }
        if let Some(u) = &self.coingecko_base_url {
            validate::http_url("sources.coingecko_base_url (COINGECKO_BASE_URL)", u)?;
        }
        validate::secret_http_url(
            "sources.defillama_coins_url (DEFILLAMA_COINS_URL)",
            &self.defillama_coins_url,
        )?;
        validate::http_url(
            "sources.pyth_hermes_url (PYTH_HERMES_URL)",
            &self.pyth_hermes_url,
        )?;
        if let Some(k) = self.pyth_api_key.as_ref().filter(|k| !k.is_empty())
            && !k.expose().bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(ConfigError::new(
                "sources.pyth_api_key (PYTH_API_KEY)",
                "must be printable ASCII without spaces",
            ));
        }
        validate::nonzero(
            "sources.pyth_max_conf_bps",
            u64::from(self.pyth_max_conf_bps),
        )?;
        validate::at_most(
            "sources.pyth_max_conf_bps",
            u64::from(self.pyth_max_conf_bps),
            validate::MAX_BPS,
            "bps",
        )?;
        validate::nonzero("sources.pyth_max_age", self.pyth_max_age)?;
        let key = self.coingecko_api_key.as_ref().filter(|k| !k.is_empty());
        match (self.coingecko_tier(), key) {
            (CoinGeckoTier::Keyless, Some(_)) => {
                return Err(ConfigError::new(
                    "sources.coingecko_tier (COINGECKO_TIER)",
                    "keyless, but COINGECKO_API_KEY is set: use demo or pro",
                ));
            }
            (t @ (CoinGeckoTier::Demo | CoinGeckoTier::Pro), None) => {
                return Err(ConfigError::new(
                    "sources.coingecko_api_key (COINGECKO_API_KEY)",
                    format!("required by coingecko_tier {t:?}"),
                ));
            }
            (_, Some(k)) => {
                if !k.expose().bytes().all(|b| b.is_ascii_graphic()) {
                    return Err(ConfigError::new(
                        "sources.coingecko_api_key (COINGECKO_API_KEY)",
                        "must be printable ASCII without spaces",
                    ));
                }
            }
            (CoinGeckoTier::Keyless, None) => {}
        }
        parse_search_width(&self.defillama_search_width).map_err(|p| {
            ConfigError::new("sources.defillama_search_width (DEFILLAMA_SEARCH_WIDTH)", p)
        })?;
        validate::nonzero(
            "sources.request_timeout (SOURCE_TIMEOUT)",
            self.request_timeout,
        )?;
        validate::nonzero("sources.deadline", self.deadline)?;
        if self.deadline < self.request_timeout {
            return Err(ConfigError::new(
                "sources.deadline",
                format!(
                    "{}s is shorter than sources.request_timeout ({}s)",
                    self.deadline, self.request_timeout
                ),
            ));
        }
        if self.retries > 10 {
            return Err(ConfigError::new("sources.retries", "at most 10"));
        }
        validate::nonzero("sources.coingecko_max_age", self.coingecko_max_age)?;
        validate::nonzero("sources.defillama_max_age", self.defillama_max_age)?;
        Ok(())
    }
}

/// Parses a DefiLlama `searchWidth` (`30m`, `4h`, `1d`, `1w`, or bare seconds) into seconds.
pub fn parse_search_width(text: &str) -> Result<u64, BadInput> {
    let t = text.trim();
    let (digits, unit) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&t[..i], c),
        _ => (t, 's'),
    };
    let n: u64 = digits.parse().map_err(|_| {
        BadInput::new(
            text,
            format!("{text:?} is not a search width like 4h, 12h, 1d or 1w"),
        )
    })?;
    let mult = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        'w' => 604_800,
        _ => {
            return Err(BadInput::new(
                text,
                format!("{text:?}: unit must be s, m, h, d or w"),
            ));
        }
    };
    match n.checked_mul(mult) {
        Some(0) | None => Err(BadInput::new(
            text,
            format!("{text:?} must be a positive width"),
        )),
        Some(s) => Ok(s),
    }
}

/// An inclusive USD price range outside which a quote is rejected as implausible.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SanityBand {
    /// Lowest plausible price.
    pub low: Decimal,
    /// Highest plausible price.
    pub high: Decimal,
}

impl SanityBand {
    /// The stablecoin default, [0.5, 2.0] USD.
    pub const STABLECOIN: Self = Self {
        low: Decimal::from_parts(5, 0, 0, false, 1),
        high: Decimal::from_parts(2, 0, 0, false, 0),
    };

    /// True when `price` lies within the band.
    pub fn contains(&self, price: Decimal) -> bool {
        price >= self.low && price <= self.high
    }

    /// Checks `low < high` and a ceiling that keeps `price_micro` in a u64.
    pub fn validate(&self, setting: &str) -> Result<(), ConfigError> {
        // Keeps every accepted price representable as a u64 `price_micro`.
        let ceiling = Decimal::from(1_000_000_000u64);
        if self.high > ceiling {
            return Err(ConfigError::new(
                setting,
                format!("high {} exceeds {ceiling} USD", self.high),
            ));
        }
        if self.low <= Decimal::ZERO || self.high <= self.low {
            return Err(ConfigError::new(
                setting,
                format!("[{}, {}] must satisfy 0 < low < high", self.low, self.high),
            ));
        }
        Ok(())
    }
}

impl<'de> Deserialize<'de> for SanityBand {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v: Vec<ConfigDecimal> = Vec::deserialize(d)?;
        match v.as_slice() {
            [low, high] => Ok(Self {
                low: low.0,
                high: high.0,
            }),
            _ => Err(serde::de::Error::custom(
                "expected [low, high], two USD prices",
            )),
        }
    }
}

/// A decimal written in TOML as a string, an integer or a float (a float is read from its
/// shortest text form, so `0.98` is exactly 0.98).
struct ConfigDecimal(Decimal);

impl<'de> Deserialize<'de> for ConfigDecimal {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Int(i64),
            Float(f64),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Text(s) => s,
            Raw::Int(i) => i.to_string(),
            Raw::Float(f) if f.is_finite() => f.to_string(),
            Raw::Float(_) => return Err(serde::de::Error::custom("expected a finite number")),
        };
        Decimal::from_str(text.trim())
            .map(ConfigDecimal)
            .map_err(|_| serde::de::Error::custom(format!("{text:?} is not a decimal number")))
    }
}

/// The rules for one asset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AggregatePolicy {
    /// Distinct lineages that must remain to publish.
    pub min_sources: usize,
    /// Quotes further than this from the median of the valid ones are dropped, basis points.
    pub max_deviation_bps: u32,
    /// Plausible price range.
    pub band: SanityBand,
}

impl Default for AggregatePolicy {
    fn default() -> Self {
        Self {
            min_sources: 2,
            max_deviation_bps: 200,
            band: SanityBand::STABLECOIN,
        }
    }
}

/// `[aggregation]`: how quotes become one price.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AggregationSettings {
    /// Valid, agreeing lineages (independent data, not paths to it) needed to publish
    /// (`MIN_SOURCES`); below 2 only with `allow_single_source`.
    pub min_sources: u32,
    /// Quotes further than this from the median are dropped, basis points (`MAX_DEVIATION_BPS`).
    pub max_deviation_bps: u32,
    /// Default plausible price range, `[low, high]` USD; assets may override it.
    pub sanity_band: SanityBand,
    /// Accepts `min_sources = 1` (`ALLOW_SINGLE_SOURCE`): one upstream's word goes on chain.
    pub allow_single_source: bool,
}

impl Default for AggregationSettings {
    fn default() -> Self {
        Self {
            min_sources: 2,
            max_deviation_bps: 200,
            sanity_band: SanityBand::STABLECOIN,
            allow_single_source: false,
        }
    }
}

impl AggregationSettings {
    /// True when a single lineage may set a price (reported on every tick).
    pub fn single_source(&self) -> bool {
        self.min_sources < 2
    }

    /// Checks the quorum, the deviation and the band.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate::nonzero(
            "aggregation.min_sources (MIN_SOURCES)",
            u64::from(self.min_sources),
        )?;
        if self.min_sources < 2 && !self.allow_single_source {
            return Err(ConfigError::new(
                "aggregation.min_sources (MIN_SOURCES)",
                format!(
                    "{} lets one upstream alone set the price: use at least 2, or set aggregation.allow_single_source (ALLOW_SINGLE_SOURCE) = true to accept that",
                    self.min_sources
                ),
            ));
        }
        let sources = Source::ALL.len();
        if self.min_sources as usize > sources {
            return Err(ConfigError::new(
                "aggregation.min_sources (MIN_SOURCES)",
                format!(
                    "{} exceeds the {sources} available sources",
                    self.min_sources
                ),
            ));
        }
        validate::nonzero(
            "aggregation.max_deviation_bps (MAX_DEVIATION_BPS)",
            u64::from(self.max_deviation_bps),
        )?;
        if self.max_deviation_bps > 10_000 {
            return Err(ConfigError::new(
                "aggregation.max_deviation_bps (MAX_DEVIATION_BPS)",
                "at most 10000 (100%)",
            ));
        }
        self.sanity_band.validate("aggregation.sanity_band")
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;

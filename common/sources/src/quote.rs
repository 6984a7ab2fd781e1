//! The quote model: exact decimal prices read from JSON text, why a quote was rejected, and the
//! conversion to the oracle's 6-decimal `price_micro`.

use std::fmt;

use rust_decimal::{Decimal, RoundingStrategy};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use keeper_runtime::config::BadInput;

/// A quote's timestamp may lead the keeper's clock by this much (clock skew).
pub const FUTURE_TOLERANCE_SECS: i64 = 60;

/// A price source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// Chainlink data feeds on Ethereum mainnet, read with `eth_call`.
    Chainlink,
    /// CoinGecko `/simple/price`.
    Coingecko,
    /// DefiLlama coins `/prices/current`.
    Defillama,
    /// Pyth through Hermes `/v2/updates/price/latest`.
    Pyth,
}

impl Source {
    /// Every source, in the order observations are listed.
    pub const ALL: [Source; 4] = [
        Self::Chainlink,
        Self::Coingecko,
        Self::Defillama,
        Self::Pyth,
    ];

    /// The name used in metrics labels, logs and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Chainlink => "chainlink",
            Self::Coingecko => "coingecko",
            Self::Defillama => "defillama",
            Self::Pyth => "pyth",
        }
    }

    /// Whose data the source serves unless the asset table says otherwise: DefiLlama prices
    /// these majors by redirecting to CoinGecko's entry, so it is a second path to CoinGecko's
    /// data, not a second opinion.
    pub fn default_lineage(self) -> &'static str {
        match self {
            Self::Chainlink => "chainlink",
            Self::Coingecko | Self::Defillama => "coingecko",
            Self::Pyth => "pyth",
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A price as one source reported it, before the source's asset is known (clients return
/// these keyed by the upstream's id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PricePoint {
    /// USD price, exactly as the upstream wrote it.
    pub price: Decimal,
    /// The upstream's own timestamp of the price, unix seconds.
    pub timestamp: i64,
    /// DefiLlama's `confidence` (0–1), kept for diagnostics.
    pub confidence: Option<Decimal>,
}

/// A value in an upstream answer that cannot be a price or timestamp.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("invalid value {raw}: {problem}")]
pub struct InvalidValue {
    /// The JSON text as received, shortened to 64 characters.
    pub raw: String,
    /// What is wrong with it.
    pub problem: String,
}

impl InvalidValue {
    /// Builds one from the offending text.
    pub fn new(raw: &str, problem: impl Into<String>) -> Self {
        let mut shown: String = raw.chars().take(64).collect();
        if shown.len() < raw.len() {
            shown.push('…');
        }
        Self {
            raw: shown,
            problem: problem.into(),
        }
    }
}

/// A usable quote: one source's price for one asset.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Quote {
    /// The asset's symbol.
    pub asset: String,
    /// Who said it.
    pub source: Source,
    /// Whose data it is (`chainlink`, `pyth`, `coingecko`, or a configured name): quorum counts
    /// lineages, not sources.
    pub lineage: String,
    /// USD price, exact.
    pub price: Decimal,
    /// The source's own timestamp of the price, unix seconds.
    pub timestamp: i64,
    /// Oldest acceptable age, seconds (source policy; Chainlink: the feed's heartbeat + grace).
    pub max_age: u64,
    /// DefiLlama's `confidence`, for diagnostics.
    pub confidence: Option<Decimal>,
}

/// Why a source's answer for an asset is not used.
#[derive(Debug, Clone, PartialEq, Serialize, thiserror::Error)]
#[serde(tag = "code", rename_all = "snake_case")]
pub enum Reason {
    /// The request failed: transport, timeout, HTTP or JSON-RPC error, unreadable body.
    #[error("source unavailable: {detail}")]
    Unavailable {
        /// The error, without URLs or keys.
        detail: String,
    },
    /// The source answered without this asset (unknown id, older than `searchWidth`).
    #[error("not in the answer: {detail}")]
    Missing {
        /// Why it is likely absent.
        detail: String,
    },
    /// The price or timestamp is not a usable number (string, null, NaN text, out of range…).
    #[error("{0}")]
    InvalidValue(InvalidValue),
    /// Zero or negative.
    #[error("price is not positive")]
    NotPositive,
    /// Outside the asset's sanity band.
    #[error("price outside the sanity band [{low}, {high}]")]
    OutsideBand {
        /// Band low.
        low: Decimal,
        /// Band high.
        high: Decimal,
    },
    /// No timestamp (Chainlink `updatedAt == 0`).
    #[error("no timestamp (updatedAt is 0)")]
    NoTimestamp,
    /// The timestamp lies more than 60 s ahead of the keeper's clock.
    #[error("timestamp {ahead}s in the future")]
    FromFuture {
        /// Seconds ahead of now.
        ahead: i64,
    },
    /// Older than the source's limit.
    #[error("{age}s old, beyond the {max_age}s limit")]
    Stale {
        /// Age in seconds.
        age: i64,
        /// The limit.
        max_age: u64,
    },
    /// Chainlink round not answered in itself (`answeredInRound < roundId`).
    #[error("incomplete round: answeredInRound {answered_in_round} < roundId {round_id}")]
    IncompleteRound {
        /// The uint80 round id, in decimal.
        round_id: String,
        /// The uint80 answered-in round, in decimal.
        answered_in_round: String,
    },
    /// Pyth's confidence interval is too wide relative to the price.
    #[error("confidence {conf_bps} bps of the price, beyond {max_bps} bps")]
    WideConfidence {
        /// `conf / price`, basis points (2 decimals).
        conf_bps: Decimal,
        /// The configured limit (`sources.pyth_max_conf_bps`).
        max_bps: u32,
    },
    /// Too far from the median of the valid quotes (source divergence).
    #[error("{deviation_bps} bps from the median {median}, beyond {max_bps} bps")]
    Outlier {
        /// The median it was compared with.
        median: Decimal,
        /// Its distance from the median, basis points (2 decimals).
        deviation_bps: Decimal,
        /// The configured limit.
        max_bps: u32,
    },
}

impl Reason {
    /// A short stable label: `unavailable`, `missing`, `invalid_value`, `not_positive`,
    /// `outside_band`, `no_timestamp`, `from_future`, `stale`, `incomplete_round`,
    /// `wide_confidence`, `outlier`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unavailable { .. } => "unavailable",
            Self::Missing { .. } => "missing",
            Self::InvalidValue(_) => "invalid_value",
            Self::NotPositive => "not_positive",
            Self::OutsideBand { .. } => "outside_band",
            Self::NoTimestamp => "no_timestamp",
            Self::FromFuture { .. } => "from_future",
            Self::Stale { .. } => "stale",
            Self::IncompleteRound { .. } => "incomplete_round",
            Self::WideConfidence { .. } => "wide_confidence",
            Self::Outlier { .. } => "outlier",
        }
    }
}

/// A source's answer for an asset that is not used, with what it said when it said anything.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Rejected {
    /// The asset's symbol.
    pub asset: String,
    /// Who said it.
    pub source: Source,
    /// Whose data it is.
    pub lineage: String,
    /// The price, when one could be read.
    pub price: Option<Decimal>,
    /// The source's timestamp, when one could be read.
    pub timestamp: Option<i64>,
    /// Why it is not used.
    pub reason: Reason,
}

impl Rejected {
    /// A rejection with no readable value.
    pub fn without_value(asset: &str, source: Source, reason: Reason) -> Self {
        Self {
            asset: asset.to_owned(),
            source,
            lineage: source.default_lineage().to_owned(),
            price: None,
            timestamp: None,
            reason,
        }
    }

    /// Rejects a quote, keeping its price and timestamp.
    pub fn quote(q: &Quote, reason: Reason) -> Self {
        Self {
            asset: q.asset.clone(),
            source: q.source,
            lineage: q.lineage.clone(),
            price: Some(q.price),
            timestamp: Some(q.timestamp),
            reason,
        }
    }
}

/// What one source said about one asset in one tick.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Observation {
    /// A readable quote, still to be checked by aggregation.
    Quote(Quote),
    /// Nothing usable, and why.
    Rejected(Rejected),
}

impl Observation {
    /// The source of the observation.
    pub fn source(&self) -> Source {
        match self {
            Self::Quote(q) => q.source,
            Self::Rejected(r) => r.source,
        }
    }

    /// Whose data the observation carries.
    pub fn lineage(&self) -> &str {
        match self {
            Self::Quote(q) => &q.lineage,
            Self::Rejected(r) => &r.lineage,
        }
    }

    /// Sets whose data the observation carries (the asset table may override a default).
    pub fn set_lineage(&mut self, lineage: &str) {
        match self {
            Self::Quote(q) => lineage.clone_into(&mut q.lineage),
            Self::Rejected(r) => lineage.clone_into(&mut r.lineage),
        }
    }

    /// The asset of the observation.
    pub fn asset(&self) -> &str {
        match self {
            Self::Quote(q) => &q.asset,
            Self::Rejected(r) => &r.asset,
        }
    }

    /// Builds the observation for a price point: a quote, or a rejection of its invalid value.
    pub fn from_point(
        asset: &str,
        source: Source,
        max_age: u64,
        point: Result<PricePoint, InvalidValue>,
    ) -> Self {
        match point {
            Ok(p) => Self::Quote(Quote {
                asset: asset.to_owned(),
                source,
                lineage: source.default_lineage().to_owned(),
                price: p.price,
                timestamp: p.timestamp,
                max_age,
                confidence: p.confidence,
            }),
            Err(e) => Self::Rejected(Rejected::without_value(
                asset,
                source,
                Reason::InvalidValue(e),
            )),
        }
    }
}

/// Reads a JSON number from its raw text into an exact decimal, never through `f64`.
/// Strings, `null`, booleans, objects and arrays are rejected with what they are; numbers
/// beyond the decimal range (`1e308`) or precision (more than 28 decimals) are rejected too.
pub fn parse_decimal(raw: &RawValue) -> Result<Decimal, InvalidValue> {
    let text = raw.get().trim();
    let kind = match text.as_bytes().first() {
        Some(b'"') => Some("a string, not a JSON number"),
        Some(b'{') => Some("an object, not a number"),
        Some(b'[') => Some("an array, not a number"),
        Some(b'n') => Some("null"),
        Some(b't' | b'f') => Some("a boolean, not a number"),
        None => Some("empty"),
        _ => None,
    };
    if let Some(k) = kind {
        return Err(InvalidValue::new(text, k));
    }
    json_number(text).map_err(|p| InvalidValue::new(text, p))
}

/// Parses JSON number text (`-?int(.frac)?([eE][+-]?exp)?`) exactly.
pub fn decimal_from_json_number(text: &str) -> Result<Decimal, BadInput> {
    json_number(text).map_err(|problem| BadInput::new(text, problem))
}

fn json_number(text: &str) -> Result<Decimal, String> {
    let (mantissa, exp) = match text.find(['e', 'E']) {
        Some(i) => {
            let e = &text[i + 1..];
            let e: i64 = e
                .parse()
                .map_err(|_| format!("exponent {e:?} is not a number"))?;
            (&text[..i], e)
        }
        None => (text, 0),
    };
    let well_formed = !mantissa.is_empty()
        && mantissa
            .trim_start_matches('-')
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.')
        && mantissa.bytes().filter(|b| *b == b'.').count() <= 1
        && mantissa
            .trim_start_matches('-')
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_digit());
    if !well_formed {
        return Err("not a decimal number".to_owned());
    }
    let mut d = Decimal::from_str_exact(mantissa)
        .map_err(|_| "beyond the exact decimal range (28 digits)".to_owned())?;
    let out_of_range = || "beyond the exact decimal range (28 digits)".to_owned();
    if exp < 0 {
        let add = exp.unsigned_abs();
        let mut needed = u64::from(d.scale()) + add;
        if needed > u64::from(Decimal::MAX_SCALE) {
            // Trailing zeros may make room: 1.000e-26 fits, 1e-400 does not.
            d = d.normalize();
            needed = u64::from(d.scale()) + add;
            if needed > u64::from(Decimal::MAX_SCALE) {
                return Err(out_of_range());
            }
        }
        let scale = u32::try_from(needed).map_err(|_| out_of_range())?;
        d.set_scale(scale).map_err(|_| out_of_range())?;
    } else if exp > 0 {
        if exp > 28 {
            return Err(out_of_range());
        }
        let mut e = exp;
        // Lower the scale first: exact and cannot overflow.
        while e > 0 && d.scale() > 0 {
            let s = d.scale() - 1;
            d.set_scale(s).map_err(|_| out_of_range())?;
            e -= 1;
        }
        for _ in 0..e {
            d = d.checked_mul(Decimal::TEN).ok_or_else(out_of_range)?;
        }
    }
    Ok(d)
}

/// Reads a JSON integer of unix seconds from its raw text.
pub fn parse_timestamp(raw: &RawValue) -> Result<i64, InvalidValue> {
    let text = raw.get().trim();
    if text.bytes().all(|b| b.is_ascii_digit()) && !text.is_empty() {
        return text
            .parse::<i64>()
            .map_err(|_| InvalidValue::new(text, "timestamp out of range"));
    }
    // Accept `1767222012.0`-style integers written as decimals, nothing fractional.
    match parse_decimal(raw) {
        Ok(d) if d.fract().is_zero() && d.is_sign_positive() => {
            i64::try_from(d).map_err(|_| InvalidValue::new(text, "timestamp out of range"))
        }
        Ok(_) => Err(InvalidValue::new(
            text,
            "timestamp must be whole non-negative seconds",
        )),
        Err(e) => Err(InvalidValue::new(
            text,
            format!("timestamp is {}", e.problem),
        )),
    }
}

/// Why a price cannot be written on-chain as `price_micro`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("price {price} cannot be expressed as price_micro: {problem}")]
pub struct MicroError {
    /// The price.
    pub price: Decimal,
    /// Why.
    pub problem: &'static str,
}

/// USD price → on-chain 6-decimal integer, rounded half-to-even (0.999850 → 999850,
/// 0.0000005 → 0, 0.0000015 → 2).
pub fn price_micro(price: Decimal) -> Result<u64, MicroError> {
    if price.is_sign_negative() && !price.is_zero() {
        return Err(MicroError {
            price,
            problem: "negative",
        });
    }
    let rounded = price.round_dp_with_strategy(6, RoundingStrategy::MidpointNearestEven);
    let micro = rounded
        .checked_mul(Decimal::from(1_000_000u32))
        .ok_or(MicroError {
            price,
            problem: "too large",
        })?;
    u64::try_from(micro.trunc()).map_err(|_| MicroError {
        price,
        problem: "too large",
    })
}

#[cfg(test)]
mod tests {
    use std::str::FromStr;

    use super::*;

    fn raw(s: &str) -> Box<RawValue> {
        RawValue::from_string(s.to_owned()).unwrap()
    }

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn numbers_are_exact() {
        assert_eq!(parse_decimal(&raw("1.000213")).unwrap(), dec("1.000213"));
        assert_eq!(parse_decimal(&raw("0.1")).unwrap().to_string(), "0.1");
        assert_eq!(parse_decimal(&raw("1e0")).unwrap(), dec("1"));
        assert_eq!(parse_decimal(&raw("9.7e-7")).unwrap(), dec("0.00000097"));
        assert_eq!(parse_decimal(&raw("1.5E+2")).unwrap(), dec("150"));
        assert_eq!(parse_decimal(&raw("-0.5")).unwrap(), dec("-0.5"));
        assert_eq!(parse_decimal(&raw("0")).unwrap(), Decimal::ZERO);
        // A value that f64 would turn into 0.99987412345678901 is kept digit for digit.
        assert_eq!(
            parse_decimal(&raw("0.9998741234567890123"))
                .unwrap()
                .to_string(),
            "0.9998741234567890123"
        );
    }

    #[test]
    fn hostile_values_are_named() {
        for (text, want) in [
            ("\"NaN\"", "string"),
            ("\"Infinity\"", "string"),
            ("\"1.0\"", "string"),
            ("null", "null"),
            ("true", "boolean"),
            ("{\"usd\":1}", "object"),
            ("[1]", "array"),
            ("1e308", "range"),
            ("-1e308", "range"),
            ("1e-400", "range"),
            ("123456789012345678901234567890", "range"),
        ] {
            let e = parse_decimal(&raw(text)).unwrap_err();
            assert!(e.problem.contains(want), "{text}: {e}");
        }
        assert!(parse_timestamp(&raw("\"1767222012\"")).is_err());
        assert!(parse_timestamp(&raw("-5")).is_err());
        assert!(parse_timestamp(&raw("1.5")).is_err());
        assert_eq!(parse_timestamp(&raw("1767222012")).unwrap(), 1_767_222_012);
        assert_eq!(
            parse_timestamp(&raw("1767222012.0")).unwrap(),
            1_767_222_012
        );
        assert!(parse_timestamp(&raw("99999999999999999999")).is_err());
    }

    #[test]
    fn micro_is_half_even() {
        assert_eq!(price_micro(dec("0.999850")), Ok(999_850));
        assert_eq!(price_micro(dec("0.99985")), Ok(999_850));
        assert_eq!(price_micro(dec("1.0000005")), Ok(1_000_000));
        assert_eq!(price_micro(dec("1.0000015")), Ok(1_000_002));
        assert_eq!(price_micro(dec("1.00000051")), Ok(1_000_001));
        assert_eq!(price_micro(dec("0.0000005")), Ok(0));
        assert_eq!(price_micro(Decimal::ZERO), Ok(0));
        assert!(price_micro(dec("-1")).is_err());
        assert!(price_micro(Decimal::MAX).is_err());
    }
}

//! Wrapped-token peg: the USD price of a bridged stablecoin (DefiLlama `ton:` keys such as
//! jUSDT, jUSDC, oUSDT, and optionally CoinGecko `simple/token_price/the-open-network`) against
//! its target. The quotes come from one batched request per source per cycle (the shared
//! clients in `keeper_sources`), so this check only judges. With two usable quotes the
//! price judged is their mean (the median of two).

use keeper_runtime::config::{ConfigError, validate};
use serde::Deserialize;
use serde_json::json;

use super::threshold::check_thresholds;
use super::{Ctx, Observation, PegBatch, PegQuote, SignalError, SourceBatch, Verdict};

/// Metrics `source` label of the main quotes.
pub const UPSTREAM: &str = "defillama";

/// `kind = "peg"`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PegConfig {
    /// DefiLlama coin key, `chain:address` (`ton:EQBynBO2…` for jUSDT).
    pub key: String,
    /// Token symbol for messages (`jUSDT`).
    pub symbol: String,
    /// The price the token should hold, USD.
    #[serde(default = "one")]
    pub target: f64,
    /// Off by more than this percentage: degraded.
    #[serde(default = "two")]
    pub degraded_pct: f64,
    /// Off by more than this percentage: critical.
    #[serde(default = "ten")]
    pub critical_pct: f64,
    /// Oldest accepted quote, seconds (DefiLlama drops coins older than its `searchWidth`).
    #[serde(default = "hour")]
    pub max_age: u64,
    /// Also price the token's address on CoinGecko `simple/token_price/{coingecko_platform}`.
    #[serde(default)]
    pub coingecko: bool,
    /// CoinGecko asset platform of the token.
    #[serde(default = "ton_platform")]
    pub coingecko_platform: String,
}

fn one() -> f64 {
    1.0
}
fn two() -> f64 {
    2.0
}
fn ten() -> f64 {
    10.0
}
fn hour() -> u64 {
    3600
}
fn ton_platform() -> String {
    "the-open-network".into()
}

impl PegConfig {
    /// Checks the key and thresholds.
    pub fn validate(&self, path: &str) -> Result<(), ConfigError> {
        let Some((chain, address)) = self.key.split_once(':') else {
            return Err(ConfigError::new(
                format!("{path}.key"),
                format!("{:?} must be a DefiLlama key `chain:address`", self.key),
            ));
        };
        keeper_sources::validate_defillama_key(&self.key)
            .map_err(|p| ConfigError::new(format!("{path}.key"), p))?;
        if chain == "ton" {
            keeper_ton::validate_address(&format!("{path}.key"), address)?;
        }
        if self.symbol.trim().is_empty() {
            return Err(ConfigError::new(
                format!("{path}.symbol"),
                "must not be empty",
            ));
        }
        if !(self.target.is_finite() && self.target > 0.0) {
            return Err(ConfigError::new(
                format!("{path}.target"),
                "must be a positive price",
            ));
        }
        let platform_ok = !self.coingecko_platform.is_empty()
            && self
                .coingecko_platform
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !platform_ok {
            return Err(ConfigError::new(
                format!("{path}.coingecko_platform"),
                format!(
                    "{:?} is not a CoinGecko platform id",
                    self.coingecko_platform
                ),
            ));
        }
        check_thresholds(
            path,
            "degraded_pct",
            self.degraded_pct,
            "critical_pct",
            Some(self.critical_pct),
        )?;
        validate::nonzero(&format!("{path}.max_age"), self.max_age)
    }

    /// The token address (the key without its chain).
    pub fn address(&self) -> &str {
        self.key
            .split_once(':')
            .map(|(_, a)| a)
            .unwrap_or(&self.key)
    }

    /// The key of this token in the CoinGecko part of the batch.
    pub fn coingecko_key(&self) -> String {
        format!("{}:{}", self.coingecko_platform, self.address())
    }
}

/// One source's quote for this token, checked for sense and age.
fn usable(
    cfg: &PegConfig,
    source: &'static str,
    batch: &SourceBatch,
    key: &str,
    now: i64,
) -> Result<PegQuote, SignalError> {
    let map = batch.as_ref().map_err(|e| SignalError::Shared(e.clone()))?;
    let q = match map.get(key) {
        None => {
            return Err(SignalError::Missing {
                upstream: source,
                what: format!("{} price ({key})", cfg.symbol),
            });
        }
        Some(Err(problem)) => {
            return Err(SignalError::malformed(
                source,
                format!("{} entry: {problem}", cfg.symbol),
            ));
        }
        Some(Ok(q)) => *q,
    };
    if !(q.price.is_finite() && q.price > 0.0) {
        return Err(SignalError::malformed(
            source,
            format!("{} price is {}", cfg.symbol, q.price),
        ));
    }
    // Upstream timestamps are untrusted: checked arithmetic, and a quote from the future
    // (beyond the clock-skew tolerance) is not evidence of anything.
    let age = now.checked_sub(q.timestamp).ok_or_else(|| {
        SignalError::malformed(
            source,
            format!("{} timestamp {} is out of range", cfg.symbol, q.timestamp),
        )
    })?;
    if age < -keeper_sources::FUTURE_TOLERANCE_SECS {
        return Err(SignalError::FromFuture {
            upstream: source,
            what: format!("{} price", cfg.symbol),
            ahead_secs: age.saturating_neg(),
        });
    }
    if age > i64::try_from(cfg.max_age).unwrap_or(i64::MAX) {
        return Err(SignalError::Stale {
            upstream: source,
            what: format!("{} price", cfg.symbol),
            age_secs: age,
            max_secs: cfg.max_age,
        });
    }
    Ok(q)
}

/// Judges the token's price against the peg: off by more than `critical_pct` critical, more than
/// `degraded_pct` degraded. Unknown when no configured source gave a usable quote.
pub fn evaluate(cfg: &PegConfig, batch: &PegBatch, now: i64) -> Result<Observation, SignalError> {
    let mut readings = vec![(
        "defillama",
        usable(cfg, "defillama", &batch.defillama, &cfg.key, now),
    )];
    if cfg.coingecko {
        let key = cfg.coingecko_key();
        readings.push((
            "coingecko",
            usable(cfg, "coingecko", &batch.coingecko, &key, now),
        ));
    }
    let quotes: Vec<(&str, PegQuote)> = readings
        .iter()
        .filter_map(|(s, r)| r.as_ref().ok().map(|q| (*s, *q)))
        .collect();
    if quotes.is_empty() {
        let mut errors = readings.into_iter().filter_map(|(_, r)| r.err());
        return match (errors.next(), errors.next()) {
            (Some(only), None) => Err(only),
            (Some(a), Some(b)) => Err(SignalError::Shared(format!("{a}; {b}").into())),
            _ => Err(SignalError::Shared("no peg source configured".into())),
        };
    }
    let price = quotes.iter().map(|(_, q)| q.price).sum::<f64>() / quotes.len() as f64;
    let off_pct = (price - cfg.target).abs() / cfg.target * 100.0;
    // "More than 2%" must not trip on 1.02 because 0.02 has no exact binary form.
    let beyond = |limit: f64| off_pct > limit + 1e-9;
    let verdict = if beyond(cfg.critical_pct) {
        Verdict::Critical
    } else if beyond(cfg.degraded_pct) {
        Verdict::Degraded
    } else {
        Verdict::Healthy
    };
    let limit = match verdict {
        Verdict::Critical => format!("> {}% critical", cfg.critical_pct),
        Verdict::Degraded => format!("> {}% degraded", cfg.degraded_pct),
        _ => format!("within {}%", cfg.degraded_pct),
    };
    let sources: Vec<_> = quotes
        .iter()
        .map(|(s, q)| json!({"source": s, "price": q.price, "timestamp": q.timestamp}))
        .collect();
    let mut why = format!(
        "{} at {:.4} USD, {:.2}% off its {} peg ({limit})",
        cfg.symbol, price, off_pct, cfg.target
    );
    if let Some((s, Err(e))) = readings.iter().find(|(_, r)| r.is_err()) {
        why.push_str(&format!("; {s} unusable: {e}"));
    }
    // The average is as old as its oldest quote.
    let observed_at = quotes.iter().map(|(_, q)| q.timestamp).min().unwrap_or(now);
    Ok(Observation::new(
        verdict,
        json!({"price": price, "target": cfg.target, "off_pct": round2(off_pct), "quotes": sources}),
        why,
    )
    .at(observed_at))
}

/// Reads the quotes from the cycle's batch.
pub async fn check(cfg: &PegConfig, ctx: &Ctx<'_>) -> Result<Observation, SignalError> {
    let batch = ctx.pegs.clone().await;
    evaluate(cfg, &batch, ctx.now)
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use keeper_sources::InvalidValue;
    use std::collections::HashMap;
    use std::sync::Arc;

    const KEY: &str = "ton:EQBynBO23ywHy_CgarY9NK9FTz0yDsG82PtcbSTQgGoXwiuA";
    const NOW: i64 = 1_767_222_012;

    fn cfg() -> PegConfig {
        toml::from_str(&format!("key = \"{KEY}\"\nsymbol = \"jUSDT\"")).unwrap()
    }

    fn one(key: &str, q: Result<PegQuote, InvalidValue>) -> SourceBatch {
        Ok(HashMap::from([(key.to_owned(), q)]))
    }

    fn llama(price: f64, timestamp: i64) -> PegBatch {
        PegBatch {
            defillama: one(KEY, Ok(PegQuote { price, timestamp })),
            coingecko: Ok(HashMap::new()),
        }
    }

    #[test]
    fn verdict_follows_the_thresholds() {
        let v = |p| evaluate(&cfg(), &llama(p, NOW - 60), NOW).unwrap().verdict;
        assert_eq!(v(0.9995), Verdict::Healthy);
        assert_eq!(v(1.02), Verdict::Healthy, "exactly 2% is not more than 2%");
        assert_eq!(v(0.9712), Verdict::Degraded);
        assert_eq!(v(1.05), Verdict::Degraded);
        assert_eq!(v(0.85), Verdict::Critical);
        let o = evaluate(&cfg(), &llama(0.9712, NOW), NOW).unwrap();
        assert!(
            o.why.contains("jUSDT at 0.9712 USD, 2.88% off"),
            "{}",
            o.why
        );
        assert_eq!(o.value["off_pct"], 2.88);
    }

    #[test]
    fn missing_stale_and_nonsense_quotes_are_unknown() {
        let empty = PegBatch {
            defillama: Ok(HashMap::new()),
            coingecko: Ok(HashMap::new()),
        };
        let e = evaluate(&cfg(), &empty, NOW).unwrap_err();
        assert!(e.to_string().contains("jUSDT price"), "{e}");
        let e = evaluate(&cfg(), &llama(1.0, NOW - 7200), NOW).unwrap_err();
        assert!(
            matches!(e, SignalError::Stale { age_secs: 7200, .. }),
            "{e}"
        );
        // From the future beyond the skew tolerance, or at the edge of i64: never evidence.
        let e = evaluate(&cfg(), &llama(0.5, NOW + 3_600), NOW).unwrap_err();
        assert!(
            matches!(
                e,
                SignalError::FromFuture {
                    ahead_secs: 3_600,
                    ..
                }
            ),
            "{e}"
        );
        assert!(evaluate(&cfg(), &llama(1.0, NOW + 30), NOW).is_ok());
        let e = evaluate(&cfg(), &llama(0.5, i64::MIN), NOW).unwrap_err();
        assert!(e.to_string().contains("out of range"), "{e}");
        assert!(evaluate(&cfg(), &llama(0.5, i64::MAX), NOW).is_err());
        assert!(evaluate(&cfg(), &llama(0.0, NOW), NOW).is_err());
        assert!(evaluate(&cfg(), &llama(f64::NAN, NOW), NOW).is_err());
        let bad = PegBatch {
            defillama: one(KEY, Err(InvalidValue::new("", "no price"))),
            coingecko: Ok(HashMap::new()),
        };
        let e = evaluate(&cfg(), &bad, NOW).unwrap_err();
        assert!(e.to_string().contains("jUSDT entry: invalid value"), "{e}");
        assert!(e.to_string().contains("no price"), "{e}");
        let down = PegBatch {
            defillama: Err(Arc::from("defillama: rate limited (HTTP 429)")),
            coingecko: Ok(HashMap::new()),
        };
        let e = evaluate(&cfg(), &down, NOW).unwrap_err();
        assert!(e.to_string().contains("rate limited"), "{e}");
    }

    #[test]
    fn coingecko_adds_a_second_opinion() {
        let mut c = cfg();
        c.coingecko = true;
        let cg_key = c.coingecko_key();
        assert_eq!(
            cg_key,
            "the-open-network:EQBynBO23ywHy_CgarY9NK9FTz0yDsG82PtcbSTQgGoXwiuA"
        );
        // Both usable: their mean is judged.
        let both = PegBatch {
            defillama: one(
                KEY,
                Ok(PegQuote {
                    price: 0.96,
                    timestamp: NOW,
                }),
            ),
            coingecko: one(
                &cg_key,
                Ok(PegQuote {
                    price: 1.0,
                    timestamp: NOW,
                }),
            ),
        };
        let o = evaluate(&c, &both, NOW).unwrap();
        assert_eq!(
            (o.verdict, o.value["price"].as_f64()),
            (Verdict::Healthy, Some(0.98))
        );
        assert_eq!(o.value["quotes"].as_array().map(Vec::len), Some(2));
        // DefiLlama missing: CoinGecko alone decides, and the gap is said.
        let cg_only = PegBatch {
            defillama: Ok(HashMap::new()),
            coingecko: one(
                &cg_key,
                Ok(PegQuote {
                    price: 0.85,
                    timestamp: NOW,
                }),
            ),
        };
        let o = evaluate(&c, &cg_only, NOW).unwrap();
        assert_eq!(o.verdict, Verdict::Critical);
        assert!(o.why.contains("defillama unusable"), "{}", o.why);
        // Neither: unknown, naming both problems.
        let none = PegBatch {
            defillama: Ok(HashMap::new()),
            coingecko: Err(Arc::from("coingecko: HTTP 500")),
        };
        let e = evaluate(&c, &none, NOW).unwrap_err();
        assert!(
            e.to_string().contains("missing") && e.to_string().contains("HTTP 500"),
            "{e}"
        );
    }

    #[test]
    fn validation_rejects_bad_keys_and_thresholds() {
        let mut c = cfg();
        c.key = "EQBynBO23ywHy_CgarY9NK9FTz0yDsG82PtcbSTQgGoXwiuA".into();
        assert_eq!(c.validate("p").unwrap_err().setting, "p.key");
        let mut c = cfg();
        c.key = "ton:notanaddress".into();
        assert_eq!(c.validate("p").unwrap_err().setting, "p.key");
        let mut c = cfg();
        c.critical_pct = 1.0;
        assert_eq!(c.validate("p").unwrap_err().setting, "p.critical_pct");
        let mut c = cfg();
        c.coingecko_platform = "The Open Network".into();
        assert_eq!(c.validate("p").unwrap_err().setting, "p.coingecko_platform");
        assert!(cfg().validate("p").is_ok());
    }
}

//! Wrapped-token peg: the USD price of a bridged stablecoin (DefiLlama `ton:` keys such as
//! jUSDT, jUSDC, oUSDT) against its target. The quotes come from one batched DefiLlama coins
//! request per cycle (the shared client in `keeper_common::sources`), so this check only judges.

use keeper_common::config::{ConfigError, validate};
use serde::Deserialize;
use serde_json::json;

use super::{Ctx, Observation, PegQuote, SignalError, Verdict};
use crate::config::check_thresholds;

/// Metrics `source` label of the quotes.
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

impl PegConfig {
    /// Checks the key and thresholds.
    pub fn validate(&self, path: &str) -> Result<(), ConfigError> {
        let Some((chain, address)) = self.key.split_once(':') else {
            return Err(ConfigError::new(
                format!("{path}.key"),
                format!("{:?} must be a DefiLlama key `chain:address`", self.key),
            ));
        };
        keeper_common::sources::validate_defillama_key(&self.key)
            .map_err(|p| ConfigError::new(format!("{path}.key"), p))?;
        if chain == "ton" {
            validate::ton_address(&format!("{path}.key"), address)?;
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
        check_thresholds(
            path,
            "degraded_pct",
            self.degraded_pct,
            "critical_pct",
            Some(self.critical_pct),
        )?;
        validate::nonzero(&format!("{path}.max_age"), self.max_age)
    }
}

/// Judges one quote against the peg: off by more than `critical_pct` critical, more than
/// `degraded_pct` degraded.
pub fn evaluate(
    cfg: &PegConfig,
    quote: Option<&Result<PegQuote, String>>,
    now: i64,
) -> Result<Observation, SignalError> {
    let q = match quote {
        None => {
            return Err(SignalError::Missing {
                upstream: UPSTREAM,
                what: format!("{} price ({})", cfg.symbol, cfg.key),
            });
        }
        Some(Err(problem)) => {
            return Err(SignalError::malformed(
                UPSTREAM,
                format!("{} entry: {problem}", cfg.symbol),
            ));
        }
        Some(Ok(q)) => q,
    };
    if !(q.price.is_finite() && q.price > 0.0) {
        return Err(SignalError::malformed(
            UPSTREAM,
            format!("{} price is {}", cfg.symbol, q.price),
        ));
    }
    let age = now - q.timestamp;
    if age > cfg.max_age as i64 {
        return Err(SignalError::Stale {
            upstream: UPSTREAM,
            what: format!("{} price", cfg.symbol),
            age_secs: age,
            max_secs: cfg.max_age,
        });
    }
    let off_pct = (q.price - cfg.target).abs() / cfg.target * 100.0;
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
    Ok(Observation::new(
        verdict,
        json!({"price": q.price, "target": cfg.target, "off_pct": round2(off_pct), "timestamp": q.timestamp}),
        format!(
            "{} at {:.4} USD, {:.2}% off its {} peg ({limit})",
            cfg.symbol, q.price, off_pct, cfg.target
        ),
    ))
}

/// Reads the quote from the cycle's batch.
pub async fn check(cfg: &PegConfig, ctx: &Ctx<'_>) -> Result<Observation, SignalError> {
    match ctx.pegs.clone().await {
        Ok(quotes) => evaluate(cfg, quotes.get(&cfg.key), ctx.now),
        Err(e) => Err(SignalError::Shared(e)),
    }
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> PegConfig {
        PegConfig {
            key: "ton:EQBynBO23ywHy_CgarY9NK9FTz0yDsG82PtcbSTQgGoXwiuA".into(),
            symbol: "jUSDT".into(),
            target: 1.0,
            degraded_pct: 2.0,
            critical_pct: 10.0,
            max_age: 3600,
        }
    }

    fn q(price: f64, timestamp: i64) -> Result<PegQuote, String> {
        Ok(PegQuote { price, timestamp })
    }

    #[test]
    fn verdict_follows_the_thresholds() {
        let now = 1_767_222_012;
        let v = |p| {
            evaluate(&cfg(), Some(&q(p, now - 60)), now)
                .unwrap()
                .verdict
        };
        assert_eq!(v(0.9995), Verdict::Healthy);
        assert_eq!(v(1.02), Verdict::Healthy, "exactly 2% is not more than 2%");
        assert_eq!(v(0.9712), Verdict::Degraded);
        assert_eq!(v(1.05), Verdict::Degraded);
        assert_eq!(v(0.85), Verdict::Critical);
        let o = evaluate(&cfg(), Some(&q(0.9712, now)), now).unwrap();
        assert!(
            o.why.contains("jUSDT at 0.9712 USD, 2.88% off"),
            "{}",
            o.why
        );
        assert_eq!(o.value["off_pct"], 2.88);
    }

    #[test]
    fn missing_stale_and_nonsense_quotes_are_unknown() {
        let now = 1_767_222_012;
        let e = evaluate(&cfg(), None, now).unwrap_err();
        assert!(e.to_string().contains("jUSDT price"), "{e}");
        let e = evaluate(&cfg(), Some(&q(1.0, now - 7200)), now).unwrap_err();
        assert!(
            matches!(e, SignalError::Stale { age_secs: 7200, .. }),
            "{e}"
        );
        assert!(evaluate(&cfg(), Some(&q(0.0, now)), now).is_err());
        assert!(evaluate(&cfg(), Some(&q(f64::NAN, now)), now).is_err());
        let e = evaluate(&cfg(), Some(&Err("no price".into())), now).unwrap_err();
        assert!(e.to_string().contains("jUSDT entry: no price"), "{e}");
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
        assert!(cfg().validate("p").is_ok());
    }
}

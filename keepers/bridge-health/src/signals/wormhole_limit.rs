//! Wormhole governor headroom from Wormholescan `/api/v1/governor/limit`: the notional a chain
//! may still send out today against its daily limit. Headroom near zero means outflows are
//! saturating the governor and further transfers will queue.

use keeper_runtime::config::ConfigError;
use serde::Deserialize;
use serde_json::json;

use super::fetch::{self, Policy};
use super::wormhole_health::{UPSTREAM, parse_data};
use super::{Ctx, Observation, SignalError, Verdict, non_negative, usd};

/// `kind = "wormhole_governor_limit"`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GovernorLimitConfig {
    /// Wormhole chain ids to watch (2 = Ethereum); empty watches every governed chain.
    #[serde(default = "ethereum")]
    pub chain_ids: Vec<u16>,
    /// Available notional below this fraction of the limit: degraded.
    #[serde(default = "tenth")]
    pub degraded_fraction: f64,
    /// Available notional below this fraction of the limit: critical (unset: never critical).
    #[serde(default)]
    pub critical_fraction: Option<f64>,
}

fn ethereum() -> Vec<u16> {
    vec![2]
}
fn tenth() -> f64 {
    0.1
}

impl GovernorLimitConfig {
    /// Checks the fractions are within 0..1 and ordered.
    pub fn validate(&self, path: &str) -> Result<(), ConfigError> {
        let in_unit = |v: f64| v.is_finite() && v > 0.0 && v <= 1.0;
        if !in_unit(self.degraded_fraction) {
            return Err(ConfigError::new(
                format!("{path}.degraded_fraction"),
                "must be a fraction in (0, 1]",
            ));
        }
        if let Some(c) = self.critical_fraction {
            if !in_unit(c) {
                return Err(ConfigError::new(
                    format!("{path}.critical_fraction"),
                    "must be a fraction in (0, 1]",
                ));
            }
            if c > self.degraded_fraction {
                return Err(ConfigError::new(
                    format!("{path}.critical_fraction"),
                    format!(
                        "{c} is above degraded_fraction ({})",
                        self.degraded_fraction
                    ),
                ));
            }
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChainLimit {
    chain_id: u16,
    available_notional: f64,
    notional_limit: f64,
}

/// Headroom of one chain.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Headroom {
    /// Wormhole chain id.
    pub chain_id: u16,
    /// USD that may still flow out today.
    pub available: f64,
    /// The daily limit, USD.
    pub limit: f64,
}

impl Headroom {
    /// Available over limit, clamped to 0..1.
    pub fn fraction(&self) -> f64 {
        (self.available / self.limit).clamp(0.0, 1.0)
    }
}

/// Parses the limits of the watched chains; a watched chain missing from the answer is an error
/// (its headroom is unknown, not fine).
pub fn parse(body: &[u8], chain_ids: &[u16]) -> Result<Vec<Headroom>, SignalError> {
    let data: Vec<ChainLimit> = parse_data(body)?;
    let mut out = Vec::new();
    for c in data {
        if !chain_ids.is_empty() && !chain_ids.contains(&c.chain_id) {
            continue;
        }
        let available = non_negative(UPSTREAM, "availableNotional", c.available_notional)?;
        let limit = non_negative(UPSTREAM, "notionalLimit", c.notional_limit)?;
        // A zero limit means the chain is not governed: nothing to measure.
        if limit > 0.0 {
            out.push(Headroom {
                chain_id: c.chain_id,
                available,
                limit,
            });
        }
    }
    for id in chain_ids {
        if !out.iter().any(|h| h.chain_id == *id) {
            return Err(SignalError::Missing {
                upstream: UPSTREAM,
                what: format!("governor limit of chain {id}"),
            });
        }
    }
    if out.is_empty() {
        return Err(SignalError::Missing {
            upstream: UPSTREAM,
            what: "any governed chain".into(),
        });
    }
    Ok(out)
}

/// The tightest watched chain decides.
pub fn evaluate(cfg: &GovernorLimitConfig, chains: &[Headroom]) -> Observation {
    let tightest = chains
        .iter()
        .min_by(|a, b| a.fraction().total_cmp(&b.fraction()))
        .copied();
    let Some(t) = tightest else {
        // `parse` never returns an empty list; treat it as nothing watched.
        return Observation::new(Verdict::Healthy, json!({}), "no governed chain watched");
    };
    let f = t.fraction();
    let verdict = match cfg.critical_fraction {
        Some(c) if f < c => Verdict::Critical,
        _ if f < cfg.degraded_fraction => Verdict::Degraded,
        _ => Verdict::Healthy,
    };
    Observation::new(
        verdict,
        json!({
            "chain_id": t.chain_id,
            "available_usd": t.available,
            "limit_usd": t.limit,
            "available_fraction": (f * 10_000.0).round() / 10_000.0,
        }),
        format!(
            "chain {} governor headroom {} of {} ({:.1}%, degraded below {:.1}%)",
            t.chain_id,
            usd(t.available),
            usd(t.limit),
            f * 100.0,
            cfg.degraded_fraction * 100.0
        ),
    )
}

/// Reads the limits and judges them.
pub async fn check(
    cfg: &GovernorLimitConfig,
    ctx: &Ctx<'_>,
    policy: &Policy,
) -> Result<Observation, SignalError> {
    let url = fetch::join(&ctx.upstreams.wormholescan_url, "api/v1/governor/limit");
    let chains = fetch::fetch(
        ctx,
        policy,
        UPSTREAM,
        || ctx.http.get(&url),
        |b| parse(b, &cfg.chain_ids),
    )
    .await?;
    Ok(evaluate(cfg, &chains))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(available: f64) -> String {
        format!(
            r#"{{"data":[{{"chainId":2,"availableNotional":{available},"notionalLimit":50000000,"maxTransactionSize":5000000}},{{"chainId":1,"availableNotional":1,"notionalLimit":0,"maxTransactionSize":0}}],"pagination":{{"next":""}}}}"#
        )
    }

    fn cfg() -> GovernorLimitConfig {
        toml::from_str("").unwrap()
    }

    #[test]
    fn headroom_against_the_fraction() {
        let v = |a: f64| evaluate(&cfg(), &parse(doc(a).as_bytes(), &[2]).unwrap()).verdict;
        assert_eq!(v(47_120_553.0), Verdict::Healthy);
        assert_eq!(v(5_000_000.0), Verdict::Healthy, "exactly 10% is not below");
        assert_eq!(v(1_000_000.0), Verdict::Degraded);
        let mut c = cfg();
        c.critical_fraction = Some(0.01);
        let o = evaluate(&c, &parse(doc(0.0).as_bytes(), &[2]).unwrap());
        assert_eq!(o.verdict, Verdict::Critical);
        assert!(
            o.why
                .starts_with("chain 2 governor headroom 0.00 USD of 50.00 M USD"),
            "{}",
            o.why
        );
    }

    #[test]
    fn ungoverned_chains_are_skipped_and_missing_watched_chains_are_unknown() {
        let all = parse(doc(47e6).as_bytes(), &[]).unwrap();
        assert_eq!(all.len(), 1, "chain 1 has no limit");
        let e = parse(doc(47e6).as_bytes(), &[2, 4]).unwrap_err();
        assert!(e.to_string().contains("chain 4"), "{e}");
    }

    #[test]
    fn garbage_is_unknown() {
        for bad in [
            &br#"{"data":[{"chainId":2,"availableNotional":"lots","notionalLimit":1}]}"#[..],
            br#"{"data":[{"chainId":2,"availableNotional":-1,"notionalLimit":1}]}"#,
            br#"{"data":[]}"#,
            br#"{"code":3,"message":"rpc error"}"#,
            b"<html>",
        ] {
            assert!(
                parse(bad, &[2]).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let mut c = cfg();
        c.critical_fraction = Some(0.5);
        assert_eq!(c.validate("w").unwrap_err().setting, "w.critical_fraction");
    }
}

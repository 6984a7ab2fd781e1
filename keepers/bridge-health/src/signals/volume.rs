//! Volume stall from DefiLlama bridges `/bridge/{id}`: `lastHourlyVolume` is 0 while the
//! trailing daily average is above the floor. DefiLlama itself reports 0 once its newest hourly
//! record is over 2 h old, so a stall also covers "no data": either way nothing is seen moving.

use keeper_runtime::config::ConfigError;
use serde::Deserialize;
use serde_json::json;

use super::fetch::{self, Policy};
use super::{Ctx, Observation, SignalError, Trip, Verdict, non_negative, usd};

/// Metrics `source` label of `bridges.llama.fi`.
pub const UPSTREAM: &str = "defillama_bridges";

/// `kind = "volume_stall"`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeConfig {
    /// The bridges-server numeric id (Wormhole 77, Axelar 17).
    pub bridge_id: u32,
    /// A stall only counts when the trailing daily average exceeds this many USD.
    #[serde(default)]
    pub min_daily_average_usd: f64,
    /// Verdict of a stall.
    #[serde(default = "degraded")]
    pub verdict: Trip,
}

fn degraded() -> Trip {
    Trip::Degraded
}

impl VolumeConfig {
    /// Checks the id and the floor.
    pub fn validate(&self, path: &str) -> Result<(), ConfigError> {
        if self.bridge_id == 0 {
            return Err(ConfigError::new(
                format!("{path}.bridge_id"),
                "must be the DefiLlama bridges id (e.g. 77 for Wormhole)",
            ));
        }
        if !(self.min_daily_average_usd.is_finite() && self.min_daily_average_usd >= 0.0) {
            return Err(ConfigError::new(
                format!("{path}.min_daily_average_usd"),
                "must be a non-negative amount",
            ));
        }
        Ok(())
    }
}

/// The parts of `/bridge/{id}` the check reads.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct BridgeDoc {
    id: Option<serde_json::Value>,
    last_hourly_volume: Option<f64>,
    last_daily_volume: Option<f64>,
    day_before_last_volume: Option<f64>,
    weekly_volume: Option<f64>,
    message: Option<String>,
}

/// The volumes the verdict is built from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Volumes {
    /// `lastHourlyVolume`, USD.
    pub last_hourly: f64,
    /// Trailing daily average, USD: `weeklyVolume / 7`, else the mean of the last two days.
    pub daily_average: f64,
}

/// Parses `/bridge/{id}`, checking it answers for the bridge asked about.
pub fn parse(body: &[u8], bridge_id: u32) -> Result<Volumes, SignalError> {
    let doc: BridgeDoc = fetch::json(UPSTREAM, body)?;
    if let Some(m) = doc.message.filter(|_| doc.last_hourly_volume.is_none()) {
        return Err(SignalError::Upstream {
            upstream: UPSTREAM,
            message: m,
        });
    }
    if let Some(id) = &doc.id {
        let same = match id {
            serde_json::Value::Number(n) => n.as_u64() == Some(u64::from(bridge_id)),
            serde_json::Value::String(s) => s.trim() == bridge_id.to_string(),
            _ => false,
        };
        if !same {
            return Err(SignalError::malformed(
                UPSTREAM,
                format!("answer is for bridge {id}, asked for {bridge_id}"),
            ));
        }
    }
    let last_hourly = non_negative(
        UPSTREAM,
        "lastHourlyVolume",
        doc.last_hourly_volume.ok_or_else(|| SignalError::Missing {
            upstream: UPSTREAM,
            what: "lastHourlyVolume".into(),
        })?,
    )?;
    let daily_average = match (
        doc.weekly_volume,
        doc.last_daily_volume,
        doc.day_before_last_volume,
    ) {
        (Some(w), _, _) => non_negative(UPSTREAM, "weeklyVolume", w)? / 7.0,
        (None, Some(a), Some(b)) => {
            (non_negative(UPSTREAM, "lastDailyVolume", a)?
                + non_negative(UPSTREAM, "dayBeforeLastVolume", b)?)
                / 2.0
        }
        (None, Some(a), None) => non_negative(UPSTREAM, "lastDailyVolume", a)?,
        _ => {
            return Err(SignalError::Missing {
                upstream: UPSTREAM,
                what: "weeklyVolume and lastDailyVolume".into(),
            });
        }
    };
    Ok(Volumes {
        last_hourly,
        daily_average,
    })
}

/// A stall is `lastHourlyVolume == 0` while the daily average is above the floor.
pub fn evaluate(cfg: &VolumeConfig, v: Volumes) -> Observation {
    let value = json!({
        "last_hourly_volume_usd": v.last_hourly,
        "daily_average_usd": v.daily_average,
    });
    let stalled = v.last_hourly == 0.0 && v.daily_average > cfg.min_daily_average_usd;
    let mut o = if stalled {
        Observation::new(
            cfg.verdict.into(),
            value,
            format!(
                "no volume in the last hour on bridge {} while it averages {} a day",
                cfg.bridge_id,
                usd(v.daily_average)
            ),
        )
    } else {
        Observation::new(
            Verdict::Healthy,
            value,
            format!(
                "{} in the last hour on bridge {} (daily average {})",
                usd(v.last_hourly),
                cfg.bridge_id,
                usd(v.daily_average)
            ),
        )
    };
    o.active = v.last_hourly > 0.0;
    o
}

/// Reads `/bridge/{id}` and judges it.
pub async fn check(
    cfg: &VolumeConfig,
    ctx: &Ctx<'_>,
    policy: &Policy,
) -> Result<Observation, SignalError> {
    let url = fetch::join(
        &ctx.upstreams.defillama_bridges_url,
        &format!("bridge/{}", cfg.bridge_id),
    );
    let v = fetch::fetch(
        ctx,
        policy,
        UPSTREAM,
        || ctx.http.get(&url),
        |b| parse(b, cfg.bridge_id),
    )
    .await?;
    Ok(evaluate(cfg, v))
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORMHOLE: &str = r#"{"id":77,"name":"wormhole","displayName":"Wormhole","lastHourlyVolume":1502233.7,"currentDayVolume":12004551.3,
 "lastDailyVolume":39950120.4,"dayBeforeLastVolume":38811020.0,"weeklyVolume":281004500.9,"monthlyVolume":1169002344.1,
 "lastHourlyTxs":{"deposits":212,"withdrawals":187},"currentDayTxs":{"deposits":2301,"withdrawals":2044},
 "prevDayTxs":{"deposits":7120,"withdrawals":6890},"dayBeforeLastTxs":{"deposits":6950,"withdrawals":6701},
 "weeklyTxs":{"deposits":48810,"withdrawals":47002},"monthlyTxs":{"deposits":201004,"withdrawals":195550},
 "chainBreakdown":{"Ethereum":{"lastHourlyVolume":801220.1,"currentDayVolume":6400100.0}},
 "destinationChain":"false"}"#;

    fn cfg(id: u32) -> VolumeConfig {
        VolumeConfig {
            bridge_id: id,
            min_daily_average_usd: 0.0,
            verdict: Trip::Degraded,
        }
    }

    #[test]
    fn active_bridge_is_healthy_and_active() {
        let v = parse(WORMHOLE.as_bytes(), 77).unwrap();
        assert!((v.daily_average - 281_004_500.9 / 7.0).abs() < 1e-6);
        let o = evaluate(&cfg(77), v);
        assert_eq!(o.verdict, Verdict::Healthy);
        assert!(o.active);
    }

    #[test]
    fn zero_hourly_with_trailing_volume_is_a_stall() {
        let body = WORMHOLE.replace("\"lastHourlyVolume\":1502233.7", "\"lastHourlyVolume\":0");
        let o = evaluate(&cfg(77), parse(body.as_bytes(), 77).unwrap());
        assert_eq!(o.verdict, Verdict::Degraded);
        assert!(!o.active);
        assert!(
            o.why.starts_with("no volume in the last hour on bridge 77"),
            "{}",
            o.why
        );
        // A bridge that never moves anything is not stalled.
        let idle = r#"{"id":17,"lastHourlyVolume":0,"lastDailyVolume":0,"dayBeforeLastVolume":0}"#;
        let o = evaluate(&cfg(17), parse(idle.as_bytes(), 17).unwrap());
        assert_eq!(o.verdict, Verdict::Healthy);
        // Below the configured floor: not a stall either.
        let small = r#"{"id":17,"lastHourlyVolume":0,"weeklyVolume":70}"#;
        let mut c = cfg(17);
        c.min_daily_average_usd = 100.0;
        assert_eq!(
            evaluate(&c, parse(small.as_bytes(), 17).unwrap()).verdict,
            Verdict::Healthy
        );
    }

    #[test]
    fn errors_and_malformed_answers_are_unknown() {
        let e = parse(br#"{"message":"Bridge ID not found."}"#, 999).unwrap_err();
        assert_eq!(
            e.to_string(),
            "defillama_bridges: error: Bridge ID not found."
        );
        assert!(parse(WORMHOLE.as_bytes(), 17).is_err(), "wrong bridge");
        for bad in [
            &br#"{"id":77,"lastHourlyVolume":null,"weeklyVolume":1}"#[..],
            br#"{"id":77,"lastHourlyVolume":-1,"weeklyVolume":1}"#,
            br#"{"id":77,"lastHourlyVolume":"0","weeklyVolume":1}"#,
            br#"{"id":77,"lastHourlyVolume":0}"#,
            b"<html><body>Bad gateway</body></html>",
            b"[]",
            b"",
        ] {
            assert!(parse(bad, 77).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}

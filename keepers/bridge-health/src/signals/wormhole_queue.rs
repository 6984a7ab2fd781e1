//! Wormhole governor queue from Wormholescan `/api/v1/governor/enqueued_vaas/`: transfers the
//! guardians' governor is holding back because a chain hit its daily outflow limit or a single
//! transfer exceeded the big-transaction size. A non-empty queue is the first sign of an outflow
//! run (or an exploit being throttled).

use keeper_runtime::config::ConfigError;
use serde::Deserialize;
use serde_json::json;

use super::fetch::{self, Policy};
use super::wormhole_health::{UPSTREAM, parse_data};
use super::{Ctx, Observation, SignalError, Verdict, non_negative, usd};

/// `kind = "wormhole_governor_queue"`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GovernorQueueConfig {
    /// Wormhole chain ids to watch (2 = Ethereum); empty watches every chain.
    #[serde(default)]
    pub chain_ids: Vec<u16>,
    /// This many queued VAAs or more: degraded.
    #[serde(default = "one")]
    pub degraded_count: u64,
    /// This many queued VAAs or more: critical (unset: never critical).
    #[serde(default)]
    pub critical_count: Option<u64>,
}

fn one() -> u64 {
    1
}

impl GovernorQueueConfig {
    /// Checks the counts.
    pub fn validate(&self, path: &str) -> Result<(), ConfigError> {
        keeper_runtime::config::validate::nonzero(
            &format!("{path}.degraded_count"),
            self.degraded_count,
        )?;
        if let Some(c) = self.critical_count
            && c < self.degraded_count
        {
            return Err(ConfigError::new(
                format!("{path}.critical_count"),
                format!("{c} is below degraded_count ({})", self.degraded_count),
            ));
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct ChainQueue {
    chain_id: u16,
    #[serde(default)]
    enqueued_vaas: Vec<QueuedVaa>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct QueuedVaa {
    #[serde(default)]
    notional_value: Option<f64>,
}

/// The watched part of the queue.
#[derive(Debug, Clone, PartialEq)]
pub struct Queue {
    /// Queued VAAs on watched chains.
    pub count: u64,
    /// Their summed notional value, USD.
    pub notional_usd: f64,
    /// Watched chains with something queued.
    pub chains: Vec<u16>,
}

/// Parses the queue, keeping the watched chains.
pub fn parse(body: &[u8], chain_ids: &[u16]) -> Result<Queue, SignalError> {
    let data: Vec<ChainQueue> = parse_data(body)?;
    let mut q = Queue {
        count: 0,
        notional_usd: 0.0,
        chains: Vec::new(),
    };
    for c in data {
        if !chain_ids.is_empty() && !chain_ids.contains(&c.chain_id) {
            continue;
        }
        if c.enqueued_vaas.is_empty() {
            continue;
        }
        q.chains.push(c.chain_id);
        for v in &c.enqueued_vaas {
            q.count += 1;
            if let Some(n) = v.notional_value {
                q.notional_usd += non_negative(UPSTREAM, "notionalValue", n)?;
            }
        }
    }
    Ok(q)
}

/// Queue length against the thresholds.
pub fn evaluate(cfg: &GovernorQueueConfig, q: &Queue) -> Observation {
    let verdict = match cfg.critical_count {
        Some(c) if q.count >= c => Verdict::Critical,
        _ if q.count >= cfg.degraded_count => Verdict::Degraded,
        _ => Verdict::Healthy,
    };
    let why = if q.count == 0 {
        "governor queue is empty".to_owned()
    } else {
        format!(
            "governor holds {} VAA(s) worth {} on chain(s) {:?}",
            q.count,
            usd(q.notional_usd),
            q.chains
        )
    };
    Observation::new(
        verdict,
        json!({"enqueued": q.count, "notional_usd": q.notional_usd, "chains": q.chains}),
        why,
    )
}

/// Reads the queue and judges it.
pub async fn check(
    cfg: &GovernorQueueConfig,
    ctx: &Ctx<'_>,
    policy: &Policy,
) -> Result<Observation, SignalError> {
    let url = fetch::join(
        &ctx.upstreams.wormholescan_url,
        "api/v1/governor/enqueued_vaas/",
    );
    let q = fetch::fetch(
        ctx,
        policy,
        UPSTREAM,
        || ctx.http.get(&url),
        |b| parse(b, &cfg.chain_ids),
    )
    .await?;
    Ok(evaluate(cfg, &q))
}

#[cfg(test)]
mod tests {
    use super::*;

    const QUEUED: &str = r#"{"data":[{"chainId":2,"enqueuedVaas":[{"chainId":2,"emitterAddress":"0000000000000000000000003ee18b2214aff97000d974cf647e7c347e8fa585","sequence":"184221","notionalValue":6200000,"txHash":"0xabc"}]},{"chainId":1,"enqueuedVaas":[{"chainId":1,"emitterAddress":"ec7372995d5cc8732397fb0ad35c0121e0eaa90d26f828a534cab54391b3a4f5","sequence":"9","notionalValue":100,"txHash":"x"}]}],"pagination":{"next":""}}"#;

    fn cfg(chains: &[u16]) -> GovernorQueueConfig {
        GovernorQueueConfig {
            chain_ids: chains.to_vec(),
            degraded_count: 1,
            critical_count: None,
        }
    }

    #[test]
    fn empty_queue_is_healthy() {
        let q = parse(br#"{"data":[],"pagination":{"next":""}}"#, &[]).unwrap();
        assert_eq!(evaluate(&cfg(&[]), &q).verdict, Verdict::Healthy);
        let q = parse(br#"{"data":[{"chainId":2,"enqueuedVaas":[]}]}"#, &[]).unwrap();
        assert_eq!(q.count, 0);
    }

    #[test]
    fn queued_vaas_degrade_and_filter_by_chain() {
        let q = parse(QUEUED.as_bytes(), &[2]).unwrap();
        assert_eq!(
            (q.count, q.notional_usd, q.chains.clone()),
            (1, 6_200_000.0, vec![2])
        );
        let o = evaluate(&cfg(&[2]), &q);
        assert_eq!(o.verdict, Verdict::Degraded);
        assert!(o.why.contains("1 VAA(s) worth 6.20 M USD"), "{}", o.why);
        assert_eq!(parse(QUEUED.as_bytes(), &[]).unwrap().count, 2);
        assert_eq!(parse(QUEUED.as_bytes(), &[5]).unwrap().count, 0);
        let mut c = cfg(&[]);
        c.critical_count = Some(2);
        assert_eq!(
            evaluate(&c, &parse(QUEUED.as_bytes(), &[]).unwrap()).verdict,
            Verdict::Critical
        );
    }

    #[test]
    fn errors_and_garbage_are_unknown() {
        let e = parse(br#"{"code":13,"message":"internal"}"#, &[]).unwrap_err();
        assert!(matches!(e, SignalError::Upstream { .. }));
        for bad in [
            &br#"{"data":{"chainId":2}}"#[..],
            br#"{"data":[{"chainId":"two","enqueuedVaas":[]}]}"#,
            br#"{"data":[{"chainId":2,"enqueuedVaas":[{"notionalValue":-5}]}]}"#,
            br#"{"pagination":{}}"#,
            b"<html>",
        ] {
            assert!(parse(bad, &[]).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}

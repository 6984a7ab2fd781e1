//! Wormholescan `/api/v1/health`: `{"status":"OK"}` when the explorer's API and its backends are
//! up. Anything else it says is a warning about the Wormhole data path; no answer at all says
//! nothing about the bridge and is unknown.

use serde::Deserialize;
use serde_json::json;

use super::fetch::{self, Policy};
use super::{Ctx, Observation, SignalError, Trip, Verdict};

/// Metrics `source` label of Wormholescan.
pub const UPSTREAM: &str = "wormholescan";

/// `kind = "wormhole_health"`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WormholeHealthConfig {
    /// Verdict when the status is not `OK`.
    #[serde(default = "degraded")]
    pub verdict: Trip,
}

fn degraded() -> Trip {
    Trip::Degraded
}

#[derive(Deserialize)]
struct HealthDoc {
    status: Option<String>,
    code: Option<serde_json::Value>,
    message: Option<String>,
}

/// Parses the body into the reported status.
pub fn parse(body: &[u8]) -> Result<String, SignalError> {
    let doc: HealthDoc = fetch::json(UPSTREAM, body)?;
    match (doc.status, doc.message) {
        (Some(s), _) => Ok(s),
        // The API's error object: {"code":3,"message":"…","details":[…]}.
        (None, Some(m)) => Err(SignalError::Upstream {
            upstream: UPSTREAM,
            message: match doc.code {
                Some(c) => format!("{m} (code {c})"),
                None => m,
            },
        }),
        (None, None) => Err(SignalError::Missing {
            upstream: UPSTREAM,
            what: "`status`".into(),
        }),
    }
}

/// `OK` (any case) is healthy; any other status trips the configured verdict.
pub fn evaluate(cfg: &WormholeHealthConfig, status: &str) -> Observation {
    if status.eq_ignore_ascii_case("ok") {
        Observation::new(
            Verdict::Healthy,
            json!({"status": status}),
            "wormholescan health is OK",
        )
    } else {
        Observation::new(
            cfg.verdict.into(),
            json!({"status": status}),
            format!("wormholescan health reports {status:?}"),
        )
    }
}

/// Reads `/api/v1/health` and judges it.
pub async fn check(
    cfg: &WormholeHealthConfig,
    ctx: &Ctx<'_>,
    policy: &Policy,
) -> Result<Observation, SignalError> {
    let url = fetch::join(&ctx.upstreams.wormholescan_url, "api/v1/health");
    let status = fetch::fetch(ctx, policy, UPSTREAM, || ctx.http.get(&url), parse).await?;
    Ok(evaluate(cfg, &status))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> WormholeHealthConfig {
        WormholeHealthConfig {
            verdict: Trip::Degraded,
        }
    }

    #[test]
    fn ok_is_healthy_other_statuses_trip() {
        assert_eq!(
            evaluate(&cfg(), &parse(br#"{"status":"OK"}"#).unwrap()).verdict,
            Verdict::Healthy
        );
        let o = evaluate(&cfg(), &parse(br#"{"status":"DEGRADED"}"#).unwrap());
        assert_eq!(o.verdict, Verdict::Degraded);
        assert!(o.why.contains("DEGRADED"));
    }

    #[test]
    fn error_objects_and_garbage_are_unknown() {
        let e = parse(br#"{"code":3,"message":"internal error","details":[{"request_id":"ab"}]}"#)
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "wormholescan: error: internal error (code 3)"
        );
        for bad in [&b"{}"[..], b"{\"status\":5}", b"OK", b"<html></html>"] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}

/// Wormholescan's list envelope `{"data": [...]}`; errors come as `{"message": ...}` instead.
#[derive(Deserialize)]
struct Envelope<T> {
    data: Option<Vec<T>>,
    message: Option<String>,
}

/// Parses a Wormholescan list answer into its `data` items; an error object or a missing
/// `data` is an error, never an empty (healthy-looking) list.
pub fn parse_data<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<Vec<T>, SignalError> {
    let doc: Envelope<T> = fetch::json(UPSTREAM, body)?;
    match (doc.data, doc.message) {
        (Some(d), _) => Ok(d),
        (None, Some(m)) => Err(SignalError::Upstream {
            upstream: UPSTREAM,
            message: m,
        }),
        (None, None) => Err(SignalError::Missing {
            upstream: UPSTREAM,
            what: "`data`".into(),
        }),
    }
}

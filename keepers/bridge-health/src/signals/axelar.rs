//! Axelarscan `getTVLAlert`: Axelar's own check of escrowed and locked balances against minted
//! supply per asset. Any of its four statuses other than `ok` means an asset's supply and
//! backing diverged past Axelar's thresholds (5% and more than 0.8–3 M USD on mainnet).

use serde::Deserialize;
use serde_json::json;

use super::fetch::{self, Policy};
use super::{Ctx, Observation, SignalError, Trip, Verdict};

/// Metrics `source` label of Axelarscan.
pub const UPSTREAM: &str = "axelarscan";

/// The four statuses `getTVLAlert` reports.
pub const STATUS_FIELDS: [&str; 4] = [
    "native_on_evm_total_status",
    "native_on_evm_escrow_status",
    "native_on_cosmos_evm_escrow_status",
    "native_on_cosmos_escrow_status",
];

/// `kind = "axelar_tvl_alert"`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AxelarConfig {
    /// Verdict when any status is not `ok`.
    #[serde(default = "degraded")]
    pub verdict: Trip,
}

fn degraded() -> Trip {
    Trip::Degraded
}

/// What `getTVLAlert` reported.
#[derive(Debug, Clone, PartialEq)]
pub struct TvlAlert {
    /// Status fields that are not `ok`, with their values.
    pub alerting: Vec<(String, String)>,
    /// `summary` (e.g. the assets concerned).
    pub summary: Option<String>,
    /// `symbol percent_diff_supply%` of each detailed asset.
    pub details: Vec<String>,
}

/// Parses the body; its own error object (`{"error":true,…}`) and a body with none of the four
/// statuses are errors, not "ok".
pub fn parse(body: &[u8]) -> Result<TvlAlert, SignalError> {
    let v: serde_json::Value = fetch::json(UPSTREAM, body)?;
    let obj = v
        .as_object()
        .ok_or_else(|| SignalError::malformed(UPSTREAM, "expected a JSON object"))?;
    if obj
        .get("error")
        .is_some_and(|e| e == &serde_json::Value::Bool(true))
    {
        let message = obj
            .get("message")
            .and_then(|m| m.as_str())
            .unwrap_or("unspecified error");
        return Err(SignalError::Upstream {
            upstream: UPSTREAM,
            message: message.to_owned(),
        });
    }
    let mut seen = 0;
    let mut alerting = Vec::new();
    for field in STATUS_FIELDS {
        match obj.get(field) {
            None | Some(serde_json::Value::Null) => {}
            Some(serde_json::Value::String(s)) => {
                seen += 1;
                if !s.eq_ignore_ascii_case("ok") {
                    alerting.push((field.to_owned(), s.clone()));
                }
            }
            Some(other) => {
                return Err(SignalError::malformed(
                    UPSTREAM,
                    format!("{field} is {other}, expected a string"),
                ));
            }
        }
    }
    if seen == 0 {
        return Err(SignalError::Missing {
            upstream: UPSTREAM,
            what: "every *_status field".into(),
        });
    }
    let details = obj
        .get("details")
        .and_then(|d| d.as_array())
        .map(|items| {
            items
                .iter()
                .take(5)
                .map(|d| {
                    let sym = d
                        .get("symbol")
                        .or_else(|| d.get("asset"))
                        .and_then(|s| s.as_str())
                        .unwrap_or("?");
                    match d.get("percent_diff_supply").and_then(|p| p.as_f64()) {
                        Some(p) => format!("{sym} {p:.1}%"),
                        None => sym.to_owned(),
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(TvlAlert {
        alerting,
        summary: obj
            .get("summary")
            .and_then(|s| s.as_str())
            .map(|s| s.chars().take(120).collect()),
        details,
    })
}

/// All statuses `ok` is healthy; otherwise the configured verdict, naming the statuses.
pub fn evaluate(cfg: &AxelarConfig, a: &TvlAlert) -> Observation {
    let value = json!({
        "alerting": a.alerting.iter().map(|(k, v)| json!({"status": k, "value": v})).collect::<Vec<_>>(),
        "details": a.details,
    });
    if a.alerting.is_empty() {
        return Observation::new(
            Verdict::Healthy,
            value,
            "axelarscan TVL alert statuses all ok",
        );
    }
    let statuses: Vec<String> = a.alerting.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let mut why = format!("axelarscan TVL alert: {}", statuses.join(", "));
    if !a.details.is_empty() {
        why.push_str(&format!(" (supply gap: {})", a.details.join(", ")));
    } else if let Some(s) = &a.summary {
        why.push_str(&format!(" ({s})"));
    }
    Observation::new(cfg.verdict.into(), value, why)
}

/// Calls `getTVLAlert` (method-style API, JSON body) and judges it.
pub async fn check(
    cfg: &AxelarConfig,
    ctx: &Ctx<'_>,
    policy: &Policy,
) -> Result<Observation, SignalError> {
    let url = fetch::join(&ctx.upstreams.axelarscan_url, "api/getTVLAlert");
    let a = fetch::fetch(
        ctx,
        policy,
        UPSTREAM,
        || ctx.http.post(&url).json(&json!({})),
        parse,
    )
    .await?;
    Ok(evaluate(cfg, &a))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALERT: &str = r#"{"summary":"axlUSDC","timestamp":"2026-01-01T00:00:00Z","native_on_evm_total_status":"alert","native_on_evm_escrow_status":"ok","native_on_cosmos_evm_escrow_status":"ok","native_on_cosmos_escrow_status":"ok","details":[{"asset":"uusdc","symbol":"USDC","price":1,"percent_diff_supply":7.4,"total":152000000,"links":["x"]}],"links":["y"]}"#;

    fn cfg() -> AxelarConfig {
        AxelarConfig {
            verdict: Trip::Degraded,
        }
    }

    #[test]
    fn all_ok_is_healthy() {
        let ok = r#"{"summary":"","timestamp":"2026-01-01T00:00:00Z","native_on_evm_total_status":"ok","native_on_evm_escrow_status":"ok","native_on_cosmos_evm_escrow_status":"ok","native_on_cosmos_escrow_status":"ok","links":[]}"#;
        assert_eq!(
            evaluate(&cfg(), &parse(ok.as_bytes()).unwrap()).verdict,
            Verdict::Healthy
        );
    }

    #[test]
    fn any_other_status_trips_and_is_named() {
        let o = evaluate(&cfg(), &parse(ALERT.as_bytes()).unwrap());
        assert_eq!(o.verdict, Verdict::Degraded);
        assert_eq!(
            o.why,
            "axelarscan TVL alert: native_on_evm_total_status=alert (supply gap: USDC 7.4%)"
        );
    }

    #[test]
    fn error_objects_and_garbage_are_unknown() {
        let e =
            parse(br#"{"error":true,"code":400,"message":"method not supported"}"#).unwrap_err();
        assert_eq!(e.to_string(), "axelarscan: error: method not supported");
        for bad in [
            &b"{}"[..],
            br#"{"native_on_evm_total_status":1}"#,
            b"[]",
            b"<html>",
            b"",
        ] {
            assert!(parse(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }
}

//! A boolean contract read on Ethereum: `eth_call` of a no-argument function (TON Bridge
//! `allowLock()`, selector `0x69d38e1c`, false while the bridge oracles have paused deposits).
//! The call goes through the shared Ethereum JSON-RPC client and its `ETH_RPC_URL` failover.

use keeper_runtime::config::ConfigError;
use serde::Deserialize;
use serde_json::json;

use super::fetch::Policy;
use super::{Ctx, Observation, SignalError, Trip, Verdict};

/// Metrics `source` label of the Ethereum JSON-RPC endpoints.
pub const UPSTREAM: &str = "eth_rpc";

/// `kind = "evm_call"`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvmCallConfig {
    /// Contract address, `0x` + 40 hex digits.
    pub contract: String,
    /// Function signature for messages (`allowLock()`).
    pub function: String,
    /// 4-byte selector, `0x` + 8 hex digits.
    pub selector: String,
    /// The healthy answer.
    #[serde(default = "yes")]
    pub expect: bool,
    /// Verdict when the answer differs.
    #[serde(default = "critical")]
    pub verdict: Trip,
}

fn yes() -> bool {
    true
}
fn critical() -> Trip {
    Trip::Critical
}

fn hex_of_len(s: &str, len: usize) -> Option<Vec<u8>> {
    let h = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X"))?;
    if h.len() != len * 2 {
        return None;
    }
    hex::decode(h).ok()
}

impl EvmCallConfig {
    /// Checks address and selector shapes.
    pub fn validate(&self, path: &str) -> Result<(), ConfigError> {
        keeper_sources::parse_address(&self.contract)
            .map_err(|p| ConfigError::new(format!("{path}.contract"), p))?;
        if hex_of_len(&self.selector, 4).is_none() {
            return Err(ConfigError::new(
                format!("{path}.selector"),
                format!(
                    "{:?} is not a 4-byte selector (0x + 8 hex digits)",
                    self.selector
                ),
            ));
        }
        if self.function.trim().is_empty() {
            return Err(ConfigError::new(
                format!("{path}.function"),
                "must not be empty",
            ));
        }
        Ok(())
    }

    /// The 4-byte selector (validated at load).
    pub fn selector_bytes(&self) -> [u8; 4] {
        let mut out = [0u8; 4];
        if let Some(b) = hex_of_len(&self.selector, 4) {
            out.copy_from_slice(&b);
        }
        out
    }
}

/// The expected answer is healthy; the other trips the configured verdict.
pub fn evaluate(cfg: &EvmCallConfig, value: bool) -> Observation {
    let v = json!({"contract": cfg.contract, "function": cfg.function, "result": value});
    if value == cfg.expect {
        Observation::new(
            Verdict::Healthy,
            v,
            format!("{} on {} is {value}", cfg.function, cfg.contract),
        )
    } else {
        Observation::new(
            cfg.verdict.into(),
            v,
            format!(
                "{} on {} is {value} (expected {})",
                cfg.function, cfg.contract, cfg.expect
            ),
        )
    }
}

/// Calls the function through the shared JSON-RPC client and judges the answer.
pub async fn check(
    cfg: &EvmCallConfig,
    ctx: &Ctx<'_>,
    _policy: &Policy,
) -> Result<Observation, SignalError> {
    let eth = ctx.eth.ok_or_else(|| {
        SignalError::NotConfigured(format!(
            "{UPSTREAM}: no Ethereum RPC configured for {} (set ETH_RPC_URL)",
            cfg.function
        ))
    })?;
    // The client counts its own requests per endpoint, failover included.
    let value = eth.call_bool(&cfg.contract, cfg.selector_bytes()).await?;
    Ok(evaluate(cfg, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> EvmCallConfig {
        toml::from_str(
            r#"contract = "0xb323692b6d4DB96af1f52E4499a2bd0Ded9af3C5"
function = "allowLock()"
selector = "0x69d38e1c""#,
        )
        .unwrap()
    }

    #[test]
    fn allow_lock_true_is_healthy_false_is_critical() {
        assert_eq!(cfg().selector_bytes(), [0x69, 0xd3, 0x8e, 0x1c]);
        assert_eq!(evaluate(&cfg(), true).verdict, Verdict::Healthy);
        let o = evaluate(&cfg(), false);
        assert_eq!(o.verdict, Verdict::Critical);
        assert!(o.why.contains("allowLock() on 0xb323"), "{}", o.why);
        let mut c = cfg();
        c.expect = false;
        c.verdict = Trip::Degraded;
        assert_eq!(evaluate(&c, true).verdict, Verdict::Degraded);
    }

    #[test]
    fn config_shapes_are_checked() {
        let mut c = cfg();
        c.selector = "0x69d38e".into();
        assert_eq!(c.validate("e").unwrap_err().setting, "e.selector");
        let mut c = cfg();
        c.contract = "0xb323".into();
        assert_eq!(c.validate("e").unwrap_err().setting, "e.contract");
        assert!(cfg().validate("e").is_ok());
    }
}

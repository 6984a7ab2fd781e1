//! Checks for individual settings; each names the setting and never echoes a secret value.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Deserializer};

use super::{BadInput, ConfigError};
use crate::secret::Secret;

/// Nanotons in one TON.
pub const NANOTON: u64 = 1_000_000_000;

/// Rejects zero for durations, counts and intervals.
pub fn nonzero(setting: &str, value: u64) -> Result<(), ConfigError> {
    if value == 0 {
        return Err(ConfigError::new(setting, "must be greater than zero"));
    }
    Ok(())
}

/// Requires `value <= max` (operators' typos and hostile numbers fail at start, not later).
pub fn at_most(setting: &str, value: u64, max: u64, unit: &str) -> Result<(), ConfigError> {
    if value > max {
        return Err(ConfigError::new(
            setting,
            format!("{value} {unit} is above the limit of {max} {unit}"),
        ));
    }
    Ok(())
}

/// Seconds in a day, for bounds.
pub const DAY_SECONDS: u64 = 86_400;
/// Basis points in 100 %.
pub const MAX_BPS: u64 = 10_000;

/// Requires an absolute `http`/`https` URL with a host.
pub fn http_url(setting: &str, value: &str) -> Result<url::Url, ConfigError> {
    url_with_scheme(setting, value, &["http", "https"], false)
}

/// Like [`http_url`] for a URL that is itself a credential: the message never shows it.
pub fn secret_http_url(setting: &str, value: &Secret) -> Result<url::Url, ConfigError> {
    url_with_scheme(setting, value.expose(), &["http", "https"], true)
}

/// Requires a URL with one of `schemes` and a host; `secret` keeps the value out of the message.
pub fn url_with_scheme(
    setting: &str,
    value: &str,
    schemes: &[&str],
    secret: bool,
) -> Result<url::Url, ConfigError> {
    // Never echo the value: keys live in paths and query strings of URLs that are not
    // themselves marked secret (RPC endpoints, base URLs).
    let _ = secret;
    let u = url::Url::parse(value)
        .map_err(|e| ConfigError::new(setting, format!("malformed URL: {e}")))?;
    if !schemes.contains(&u.scheme()) {
        return Err(ConfigError::new(
            setting,
            format!(
                "URL scheme must be one of {}, got {:?}",
                schemes.join("/"),
                u.scheme()
            ),
        ));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(ConfigError::new(setting, "URL has no host"));
    }
    Ok(u)
}

/// Requires a SQL identifier usable unquoted (schema names).
pub fn identifier(setting: &str, value: &str) -> Result<(), ConfigError> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && value
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ok {
        return Err(ConfigError::new(
            setting,
            format!("{value:?} must be a lower-case SQL identifier (a-z, 0-9, _; at most 63)"),
        ));
    }
    Ok(())
}

/// Requires a cron expression with an optional seconds field (`0 0 */6 * * *`).
pub fn cron(setting: &str, value: &str) -> Result<(), ConfigError> {
    crate::schedule::Schedule::parse(value)
        .map(|_| ())
        .map_err(|e| {
            ConfigError::new(
                setting,
                format!("cron expression {value:?} does not parse: {}", e.reason),
            )
        })
}

/// Deserializes an amount of TON given as a number or a decimal string into nanotons.
pub fn de_ton_amount<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Amount {
        Text(String),
        Int(i64),
        Float(f64),
    }
    let text = match Amount::deserialize(d)? {
        Amount::Text(s) => s,
        Amount::Int(i) => i.to_string(),
        Amount::Float(f) => f.to_string(),
    };
    ton_to_nano(&text).map_err(serde::de::Error::custom)
}

/// Converts a decimal amount of TON (`"0.05"`) into nanotons, exactly.
pub fn ton_to_nano(text: &str) -> Result<u64, BadInput> {
    let bad = |problem: String| BadInput::new(text, problem);
    let d = Decimal::from_str(text.trim())
        .map_err(|_| bad(format!("{text:?} is not a decimal amount of TON")))?;
    if d.is_sign_negative() || d.is_zero() {
        return Err(bad(format!("{text:?} must be a positive amount of TON")));
    }
    let nano = d
        .checked_mul(Decimal::from(NANOTON))
        .ok_or_else(|| bad(format!("{text:?} is too large")))?;
    if nano.fract() != Decimal::ZERO {
        return Err(bad(format!("{text:?} has more than 9 decimals")));
    }
    u64::try_from(nano).map_err(|_| bad(format!("{text:?} is too large")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_exact() {
        assert_eq!(ton_to_nano("0.05"), Ok(50_000_000));
        assert!(
            ton_to_nano("10000000000000000000000000000").is_err(),
            "no panic on overflow"
        );
        assert_eq!(ton_to_nano("1"), Ok(NANOTON));
        assert!(ton_to_nano("0.0000000001").is_err());
        assert!(ton_to_nano("-1").is_err());
        assert!(ton_to_nano("abc").is_err());
    }

    #[test]
    fn urls_and_cron() {
        assert!(http_url("u", "https://toncenter.com/api/v2/jsonRPC").is_ok());
        assert!(http_url("u", "toncenter.com").is_err());
        assert!(http_url("u", "ftp://x").is_err());
        let e = secret_http_url("s", &Secret::new("hooks.slack.com/T000/SECRET")).unwrap_err();
        assert!(!e.problem.contains("SECRET"));
        assert!(cron("c", "0 0 */6 * * *").is_ok());
        assert!(cron("c", "*/5 * * * *").is_ok());
        assert!(cron("c", "every day").is_err());
    }
}

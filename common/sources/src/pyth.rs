//! Pyth through Hermes `GET /v2/updates/price/latest?ids[]=…&parsed=true`: one batched
//! request per tick, `price × 10^expo` as an exact decimal, `publish_time` as the observation
//! time, and the publishers' confidence interval kept for the `conf / price` bound.

use std::collections::HashMap;
use std::sync::Arc;

use rust_decimal::Decimal;
use serde::Deserialize;
use serde_json::value::RawValue;

use super::quote::{InvalidValue, PricePoint, parse_timestamp};
use super::upstream::{HttpUpstream, SourceError};
use super::{RequestPolicy, SourcesSettings};
use keeper_runtime::secret::Secret;
use keeper_runtime::telemetry::Metrics;

/// One feed's latest price as Hermes reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PythPrice {
    /// The price (exact), with `publish_time` as its timestamp.
    pub point: PricePoint,
    /// The confidence interval around the price, in the same unit (exact).
    pub conf: Decimal,
}

impl PythPrice {
    /// `conf / price` in basis points (2 decimals); `None` for a non-positive price.
    pub fn conf_bps(&self) -> Option<Decimal> {
        if self.point.price <= Decimal::ZERO {
            return None;
        }
        self.conf
            .checked_div(self.point.price)
            .and_then(|r| r.checked_mul(Decimal::from(10_000u32)))
            .map(|b| b.round_dp(2).normalize())
    }
}

/// Per requested feed id (as configured): its price, or why its entry is unusable. Ids Hermes
/// left out (unknown ids are ignored on request) are absent from the map.
pub type Feeds = HashMap<String, Result<PythPrice, InvalidValue>>;

/// A Hermes client.
#[derive(Clone)]
pub struct Pyth {
    up: HttpUpstream,
    base: String,
    key: Option<Arc<Secret>>,
}

impl Pyth {
    /// A client for `base_url` (e.g. `https://hermes.pyth.network`); a key goes out as
    /// `Authorization: Bearer`.
    pub fn new(
        base_url: &str,
        key: Option<Arc<Secret>>,
        policy: RequestPolicy,
        metrics: Option<Arc<Metrics>>,
    ) -> Self {
        Self {
            up: HttpUpstream::new("pyth", policy, metrics),
            base: base_url.trim_end_matches('/').to_owned(),
            key: key.filter(|k| !k.is_empty()),
        }
    }

    /// A client configured by `[sources]`.
    pub fn from_settings(s: &SourcesSettings, metrics: Option<Arc<Metrics>>) -> Self {
        Self::new(
            &s.pyth_hermes_url,
            s.pyth_api_key.clone(),
            s.request_policy(),
            metrics,
        )
    }

    fn request(&self, client: &reqwest::Client, query: &[(&str, &str)]) -> reqwest::RequestBuilder {
        let mut rb = client
            .get(format!("{}/v2/updates/price/latest", self.base))
            .query(query)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some(key) = &self.key {
            match reqwest::header::HeaderValue::from_str(&format!("Bearer {}", key.expose())) {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    rb = rb.header(reqwest::header::AUTHORIZATION, v);
                }
                // Validated at start; an unusable key is not sent (Hermes answers 401).
                Err(_) => tracing::error!("pyth API key is not a valid header value"),
            }
        }
        rb
    }

    /// The latest parsed prices of `ids` (32-byte hex, `0x` optional) in one request. Unknown
    /// ids are left out rather than failing the whole batch (`ignore_invalid_price_ids`).
    pub async fn latest(&self, ids: &[&str]) -> Result<Feeds, SourceError> {
        if ids.is_empty() {
            return Ok(Feeds::new());
        }
        for id in ids {
            validate_feed_id(id).map_err(|detail| SourceError::Malformed {
                upstream: "pyth".into(),
                detail,
            })?;
        }
        let mut query: Vec<(&str, &str)> = ids.iter().map(|id| ("ids[]", *id)).collect();
        query.push(("parsed", "true"));
        query.push(("ignore_invalid_price_ids", "true"));
        self.up
            .get(|c| self.request(c, &query), |body| parse_latest(body, ids))
            .await
    }
}

/// Normalised form of a feed id: lower-case hex without `0x`, as Hermes answers.
pub fn normalize_feed_id(id: &str) -> String {
    id.trim()
        .trim_start_matches("0x")
        .trim_start_matches("0X")
        .to_ascii_lowercase()
}

/// Checks a Pyth feed id: 32 bytes of hex, `0x` optional.
pub fn validate_feed_id(id: &str) -> Result<(), String> {
    let hex = normalize_feed_id(id);
    if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(format!("{id:?} is not a 32-byte hex Pyth feed id"))
    }
}

/// Reads `{"binary":…,"parsed":[{"id","price":{"price","conf","expo","publish_time"}}]}`.
fn parse_latest(body: &[u8], requested: &[&str]) -> Result<Feeds, String> {
    #[derive(Deserialize)]
    struct Top {
        parsed: Vec<Box<RawValue>>,
    }
    #[derive(Deserialize)]
    struct Item {
        id: String,
        price: Box<RawValue>,
    }
    let top: Top = serde_json::from_slice(body).map_err(|e| {
        format!(
            "expected {{\"parsed\":[…]}}: {e} (body starts {:?})",
            keeper_runtime::http::snippet(body)
        )
    })?;
    let mut by_id: HashMap<String, &RawValue> = HashMap::new();
    let mut bad: HashMap<String, InvalidValue> = HashMap::new();
    let items: Vec<(String, Result<Item, InvalidValue>)> = top
        .parsed
        .iter()
        .map(|raw| {
            let item = serde_json::from_str::<Item>(raw.get())
                .map_err(|e| InvalidValue::new(raw.get(), format!("not a price update: {e}")));
            let id = match &item {
                Ok(i) => normalize_feed_id(&i.id),
                Err(_) => String::new(),
            };
            (id, item)
        })
        .collect();
    for (id, item) in &items {
        match item {
            Ok(i) => {
                by_id.insert(id.clone(), i.price.as_ref());
            }
            Err(e) if !id.is_empty() => {
                bad.insert(id.clone(), e.clone());
            }
            Err(_) => {}
        }
    }
    let mut out = Feeds::new();
    for id in requested {
        let norm = normalize_feed_id(id);
        if let Some(raw) = by_id.get(&norm) {
            out.insert((*id).to_owned(), parse_price(raw));
        } else if let Some(e) = bad.get(&norm) {
            out.insert((*id).to_owned(), Err(e.clone()));
        }
    }
    Ok(out)
}

/// One `{"price":"<i64>","conf":"<u64>","expo":<i32>,"publish_time":<unix s>}`.
fn parse_price(raw: &RawValue) -> Result<PythPrice, InvalidValue> {
    let fields: HashMap<String, Box<RawValue>> = serde_json::from_str(raw.get())
        .map_err(|_| InvalidValue::new(raw.get(), "price is not an object"))?;
    let field = |name: &str| {
        fields
            .get(name)
            .ok_or_else(|| InvalidValue::new(raw.get(), format!("no {name}")))
    };
    let expo_raw = field("expo")?;
    let expo: i32 = serde_json::from_str(expo_raw.get())
        .map_err(|_| InvalidValue::new(expo_raw.get(), "expo is not a 32-bit integer"))?;
    let mantissa = int_string::<i64>(field("price")?, "price")?;
    let conf = int_string::<u64>(field("conf")?, "conf")?;
    let price = scale(Decimal::from(mantissa), expo, raw)?;
    let conf = scale(Decimal::from(conf), expo, raw)?;
    let timestamp = parse_timestamp(field("publish_time")?)?;
    Ok(PythPrice {
        point: PricePoint {
            price,
            timestamp,
            confidence: None,
        },
        conf,
    })
}

/// Hermes writes 64-bit integers as JSON strings (`"100012345"`).
fn int_string<T: std::str::FromStr>(raw: &RawValue, name: &str) -> Result<T, InvalidValue> {
    let text: String = serde_json::from_str(raw.get())
        .map_err(|_| InvalidValue::new(raw.get(), format!("{name} is not an integer string")))?;
    let ok = !text.is_empty()
        && text
            .strip_prefix('-')
            .unwrap_or(&text)
            .bytes()
            .all(|b| b.is_ascii_digit());
    if !ok {
        return Err(InvalidValue::new(
            raw.get(),
            format!("{name} is not an integer"),
        ));
    }
    text.parse::<T>()
        .map_err(|_| InvalidValue::new(raw.get(), format!("{name} is out of range")))
}

/// `mantissa × 10^expo`, exactly; an exponent beyond the decimal range is invalid.
fn scale(mantissa: Decimal, expo: i32, raw: &RawValue) -> Result<Decimal, InvalidValue> {
    let out_of_range = || InvalidValue::new(raw.get(), format!("expo {expo} is out of range"));
    if expo <= 0 {
        let scale = expo.unsigned_abs();
        if scale > Decimal::MAX_SCALE {
            return Err(out_of_range());
        }
        let mut d = mantissa;
        d.set_scale(scale).map_err(|_| out_of_range())?;
        Ok(d)
    } else {
        let factor = u32::try_from(expo)
            .ok()
            .filter(|e| *e <= 28)
            .and_then(|e| 10u128.checked_pow(e))
            .and_then(|f| Decimal::try_from_i128_with_scale(i128::try_from(f).ok()?, 0).ok())
            .ok_or_else(out_of_range)?;
        mantissa.checked_mul(factor).ok_or_else(out_of_range)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const USDT: &str = "2b89b9dc8fdf9f34709a5b106b472f0f39bb6ca9ce04b0fd7f2e971688e2e53b";

    #[test]
    fn reference_body_parses_exactly() {
        let body = br#"{"binary":{"encoding":"hex","data":["504e4155"]},
          "parsed":[{"id":"2b89b9dc8fdf9f34709a5b106b472f0f39bb6ca9ce04b0fd7f2e971688e2e53b",
          "price":{"price":"100012345","conf":"61234","expo":-8,"publish_time":1767222010},
          "ema_price":{"price":"100009000","conf":"70000","expo":-8,"publish_time":1767222010},
          "metadata":{"slot":251234567,"proof_available_time":1767222011,"prev_publish_time":1767222009}}]}"#;
        let upper = format!("0x{}", USDT.to_ascii_uppercase());
        let f = parse_latest(body, &[&upper]).unwrap();
        let p = f[&upper].as_ref().unwrap();
        assert_eq!(p.point.price.to_string(), "1.00012345");
        assert_eq!(p.conf.to_string(), "0.00061234");
        assert_eq!(p.point.timestamp, 1_767_222_010);
        assert_eq!(p.conf_bps().unwrap().to_string(), "6.12");
    }

    #[test]
    fn hostile_items_are_named() {
        for (price, want) in [
            (
                r#""price":1,"conf":"1","expo":-8,"publish_time":1"#,
                "integer string",
            ),
            (
                r#""price":"1.5","conf":"1","expo":-8,"publish_time":1"#,
                "not an integer",
            ),
            (
                r#""price":"99999999999999999999","conf":"1","expo":-8,"publish_time":1"#,
                "out of range",
            ),
            (
                r#""price":"1","conf":"-1","expo":-8,"publish_time":1"#,
                "conf is out of range",
            ),
            (
                r#""price":"1","conf":"1","expo":-40,"publish_time":1"#,
                "expo",
            ),
            (
                r#""price":"1","conf":"1","expo":99,"publish_time":1"#,
                "expo",
            ),
            (
                r#""price":"1","conf":"1","expo":-8,"publish_time":"soon""#,
                "timestamp",
            ),
            (r#""price":"1","conf":"1","expo":-8"#, "publish_time"),
        ] {
            let body = format!(r#"{{"parsed":[{{"id":"{USDT}","price":{{{price}}}}}]}}"#);
            let f = parse_latest(body.as_bytes(), &[USDT]).unwrap();
            let e = f[USDT].as_ref().unwrap_err();
            assert!(e.to_string().contains(want), "{price}: {e}");
        }
        assert!(parse_latest(b"<html>", &[USDT]).is_err());
        assert!(parse_latest(br#"{"parsed":{}}"#, &[USDT]).is_err());
        assert!(
            parse_latest(br#"{"parsed":[]}"#, &[USDT])
                .unwrap()
                .is_empty()
        );
        let negative = format!(
            r#"{{"parsed":[{{"id":"{USDT}","price":{{"price":"-5","conf":"1","expo":-8,"publish_time":1}}}}]}}"#
        );
        let f = parse_latest(negative.as_bytes(), &[USDT]).unwrap();
        let p = f[USDT].as_ref().unwrap();
        assert!(p.point.price < Decimal::ZERO && p.conf_bps().is_none());
        assert!(validate_feed_id("0x1234").is_err());
        assert!(validate_feed_id(USDT).is_ok());
    }
}

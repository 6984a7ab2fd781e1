//! CoinGecko `/simple/price` and `/simple/token_price/{platform}` (reference §1): one batched
//! request per tick, exact decimals, absent ids reported as missing.

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::value::RawValue;

use super::quote::{InvalidValue, PricePoint, parse_decimal, parse_timestamp};
use super::upstream::{HttpUpstream, SourceError};
use super::{CoinGeckoTier, RequestPolicy, SourcesSettings};
use keeper_runtime::secret::Secret;
use keeper_runtime::telemetry::Metrics;

/// Per requested id: its price point, or why its entry is unusable. Ids the API left out
/// (unknown, no data) are absent from the map.
pub type Prices = HashMap<String, Result<PricePoint, InvalidValue>>;

/// A CoinGecko client for one tier (keyless, demo or pro).
#[derive(Clone)]
pub struct CoinGecko {
    up: HttpUpstream,
    base: String,
    key: Option<(&'static str, Arc<Secret>)>,
}

impl CoinGecko {
    /// A client for `base_url` (e.g. `https://api.coingecko.com/api/v3`); the tier decides the
    /// key header.
    pub fn new(
        base_url: &str,
        tier: CoinGeckoTier,
        key: Option<Arc<Secret>>,
        policy: RequestPolicy,
        metrics: Option<Arc<Metrics>>,
    ) -> Self {
        Self {
            up: HttpUpstream::new("coingecko", policy, metrics),
            base: base_url.trim_end_matches('/').to_owned(),
            key: tier.key_header().zip(key.filter(|k| !k.is_empty())),
        }
    }

    /// A client configured by `[sources]`.
    pub fn from_settings(s: &SourcesSettings, metrics: Option<Arc<Metrics>>) -> Self {
        Self::new(
            &s.coingecko_base_url(),
            s.coingecko_tier(),
            s.coingecko_api_key.clone(),
            s.request_policy(),
            metrics,
        )
    }

    fn request(
        &self,
        client: &reqwest::Client,
        path: &str,
        query: &[(&str, &str)],
    ) -> reqwest::RequestBuilder {
        let mut rb = client
            .get(format!("{}{path}", self.base))
            .query(query)
            .header(reqwest::header::ACCEPT, "application/json");
        if let Some((header, key)) = &self.key {
            match reqwest::header::HeaderValue::from_str(key.expose()) {
                Ok(mut v) => {
                    v.set_sensitive(true);
                    rb = rb.header(*header, v);
                }
                // Validated at start; an unusable key is simply not sent (the API answers 10002).
                Err(_) => tracing::error!("coingecko API key is not a valid header value"),
            }
        }
        rb
    }

    /// `GET /simple/price?ids=…&vs_currencies=usd&include_last_updated_at=true&precision=full`
    /// for all `ids` in one request.
    pub async fn simple_price(&self, ids: &[&str]) -> Result<Prices, SourceError> {
        if ids.is_empty() {
            return Ok(Prices::new());
        }
        let joined = ids.join(",");
        let query = [
            ("ids", joined.as_str()),
            ("vs_currencies", "usd"),
            ("include_last_updated_at", "true"),
            ("precision", "full"),
        ];
        self.up
            .get(
                |c| self.request(c, "/simple/price", &query),
                |body| parse_prices(body, ids),
            )
            .await
    }

    /// `GET /simple/token_price/{platform}?contract_addresses=…` (platform `ethereum`,
    /// `the-open-network`…); results keyed by the requested address (EVM matched ignoring case).
    pub async fn token_price(
        &self,
        platform: &str,
        addresses: &[&str],
    ) -> Result<Prices, SourceError> {
        if addresses.is_empty() {
            return Ok(Prices::new());
        }
        if !platform
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        {
            return Err(SourceError::Malformed {
                upstream: "coingecko".into(),
                detail: format!("{platform:?} is not a platform id"),
            });
        }
        let joined = addresses.join(",");
        let query = [
            ("contract_addresses", joined.as_str()),
            ("vs_currencies", "usd"),
            ("include_last_updated_at", "true"),
            ("precision", "full"),
        ];
        let path = format!("/simple/token_price/{platform}");
        self.up
            .get(
                |c| self.request(c, &path, &query),
                |body| parse_prices(body, addresses),
            )
            .await
    }
}

/// Matching key: EVM addresses are compared ignoring case, everything else exactly (TON
/// addresses are case-sensitive).
pub(crate) fn match_key(key: &str) -> std::borrow::Cow<'_, str> {
    let addr = key.rsplit(':').next().unwrap_or(key);
    if addr.len() == 42 && addr.starts_with("0x") {
        std::borrow::Cow::Owned(key.to_ascii_lowercase())
    } else {
        std::borrow::Cow::Borrowed(key)
    }
}

/// Reads a `{"<id>": {"usd": N, "last_updated_at": T}}` body for the `requested` ids.
fn parse_prices(body: &[u8], requested: &[&str]) -> Result<Prices, String> {
    let top: HashMap<String, Box<RawValue>> = serde_json::from_slice(body).map_err(|e| {
        format!(
            "expected a JSON object of ids: {e} (body starts {:?})",
            keeper_runtime::http::snippet(body)
        )
    })?;
    let by_key: HashMap<std::borrow::Cow<'_, str>, &RawValue> = top
        .iter()
        .map(|(k, v)| (match_key(k), v.as_ref()))
        .collect();
    let mut out = Prices::new();
    for id in requested {
        if let Some(entry) = by_key.get(&match_key(id)) {
            out.insert((*id).to_owned(), parse_entry(entry));
        }
    }
    Ok(out)
}

fn parse_entry(entry: &RawValue) -> Result<PricePoint, InvalidValue> {
    let fields: HashMap<String, Box<RawValue>> = serde_json::from_str(entry.get())
        .map_err(|_| InvalidValue::new(entry.get(), "entry is not an object"))?;
    let price = fields
        .get("usd")
        .ok_or_else(|| InvalidValue::new(entry.get(), "no usd price"))
        .and_then(|r| parse_decimal(r))?;
    let timestamp = fields
        .get("last_updated_at")
        .ok_or_else(|| InvalidValue::new(entry.get(), "no last_updated_at"))
        .and_then(|r| parse_timestamp(r))?;
    Ok(PricePoint {
        price,
        timestamp,
        confidence: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_body_parses_exactly() {
        let body = br#"{"tether":{"usd":1.000213,"last_updated_at":1767222012},
            "usd-coin":{"usd":0.999874,"last_updated_at":1767222015},
            "junk":{"usd":"NaN","last_updated_at":1}}"#;
        let p = parse_prices(body, &["tether", "usd-coin", "dai"]).unwrap();
        assert_eq!(p["tether"].as_ref().unwrap().price.to_string(), "1.000213");
        assert_eq!(p["usd-coin"].as_ref().unwrap().timestamp, 1_767_222_015);
        assert!(!p.contains_key("dai"));
        assert!(!p.contains_key("junk"));
        assert!(parse_prices(b"{}", &["tether"]).unwrap().is_empty());
        assert!(parse_prices(b"[]", &["tether"]).is_err());
        assert!(parse_prices(b"<html>", &["tether"]).is_err());
    }

    #[test]
    fn evm_keys_ignore_case_ton_keys_do_not() {
        let body = br#"{"0xdac17f958d2ee523a2206206994597c13d831ec7":{"usd":1,"last_updated_at":5},
            "EQBynBO23ywHy_CgarY9NK9FTz0yDsG82PtcbSTQgGoXwiuA":{"usd":0.97,"last_updated_at":5}}"#;
        let p = parse_prices(
            body,
            &[
                "0xdAC17F958D2ee523a2206206994597C13D831ec7",
                "EQBynBO23ywHy_CgarY9NK9FTz0yDsG82PtcbSTQgGoXwiuA",
                "eqbynbo23ywhy_cgary9nk9ftz0ydsg82ptcbstqggoxwiua",
            ],
        )
        .unwrap();
        assert_eq!(p.len(), 2);
        assert!(p.contains_key("0xdAC17F958D2ee523a2206206994597C13D831ec7"));
    }
}

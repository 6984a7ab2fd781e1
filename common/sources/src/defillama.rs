//! DefiLlama coins `/prices/current/{keys}?searchWidth=…` (reference §2): one batched request
//! per tick; coins older than `searchWidth` or unknown are absent, not errors.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::coingecko::match_key;
use super::quote::{InvalidValue, PricePoint, parse_decimal, parse_timestamp};
use super::upstream::{HttpUpstream, SourceError};
use super::{RequestPolicy, SourcesSettings, validate_defillama_key};
use keeper_runtime::secret::Secret;
use keeper_runtime::telemetry::Metrics;

/// Per requested key: its price point (with `confidence`), or why its entry is unusable.
/// Keys the API left out are absent from the map.
pub type Coins = HashMap<String, Result<PricePoint, InvalidValue>>;

/// A DefiLlama coins API client; the bridge keeper uses it for `ton:` peg keys too.
#[derive(Clone)]
pub struct DefiLlama {
    up: HttpUpstream,
    base: Arc<Secret>,
    search_width: String,
}

impl DefiLlama {
    /// A client for `base_url` (e.g. `https://coins.llama.fi`, or a pro URL with its key).
    pub fn new(
        base_url: &Secret,
        search_width: &str,
        policy: RequestPolicy,
        metrics: Option<Arc<Metrics>>,
    ) -> Self {
        Self {
            up: HttpUpstream::new("defillama", policy, metrics),
            base: Arc::new(Secret::new(base_url.expose().trim_end_matches('/'))),
            search_width: search_width.trim().to_owned(),
        }
    }

    /// A client configured by `[sources]`.
    pub fn from_settings(s: &SourcesSettings, metrics: Option<Arc<Metrics>>) -> Self {
        Self::new(
            &s.defillama_coins_url,
            &s.defillama_search_width,
            s.request_policy(),
            metrics,
        )
    }

    /// `GET /prices/current/{keys}?searchWidth=…` for all `keys` in one request. Keys keep
    /// their case (TON addresses are case-sensitive); EVM keys are matched ignoring case.
    pub async fn current(&self, keys: &[&str]) -> Result<Coins, SourceError> {
        if keys.is_empty() {
            return Ok(Coins::new());
        }
        for k in keys {
            validate_defillama_key(k).map_err(|detail| SourceError::Malformed {
                upstream: "defillama".into(),
                detail: format!("bad key: {detail}"),
            })?;
        }
        let url = format!("{}/prices/current/{}", self.base.expose(), keys.join(","));
        let query = [("searchWidth", self.search_width.as_str())];
        self.up
            .get(
                |c| {
                    c.get(&url)
                        .query(&query)
                        .header(reqwest::header::ACCEPT, "application/json")
                },
                |body| parse_coins(body, keys),
            )
            .await
    }
}

/// Reads `{"coins": {"<key>": {"price", "timestamp", "confidence", …}}}` for `requested`.
fn parse_coins(body: &[u8], requested: &[&str]) -> Result<Coins, String> {
    #[derive(Deserialize)]
    struct Top {
        coins: HashMap<String, Box<RawValue>>,
    }
    let top: Top = serde_json::from_slice(body).map_err(|e| {
        format!(
            "expected {{\"coins\":{{…}}}}: {e} (body starts {:?})",
            keeper_runtime::http::snippet(body)
        )
    })?;
    let by_key: HashMap<std::borrow::Cow<'_, str>, &RawValue> = top
        .coins
        .iter()
        .map(|(k, v)| (match_key(k), v.as_ref()))
        .collect();
    let mut out = Coins::new();
    for key in requested {
        if let Some(entry) = by_key.get(&match_key(key)) {
            out.insert((*key).to_owned(), parse_coin(entry));
        }
    }
    Ok(out)
}

fn parse_coin(entry: &RawValue) -> Result<PricePoint, InvalidValue> {
    let fields: HashMap<String, Box<RawValue>> = serde_json::from_str(entry.get())
        .map_err(|_| InvalidValue::new(entry.get(), "coin entry is not an object"))?;
    let price = fields
        .get("price")
        .ok_or_else(|| InvalidValue::new(entry.get(), "no price"))
        .and_then(|r| parse_decimal(r))?;
    let timestamp = fields
        .get("timestamp")
        .ok_or_else(|| InvalidValue::new(entry.get(), "no timestamp"))
        .and_then(|r| parse_timestamp(r))?;
    // Diagnostics only: an unreadable confidence does not void the price.
    let confidence = fields.get("confidence").and_then(|r| parse_decimal(r).ok());
    Ok(PricePoint {
        price,
        timestamp,
        confidence,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_body_parses() {
        let body = br#"{"coins":{
          "coingecko:tether":{"price":1.000213,"symbol":"USDT","timestamp":1767222012,"confidence":0.99},
          "ethereum:0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48":{"decimals":6,"price":0.999874,"symbol":"USDC","timestamp":1767222015,"confidence":0.99},
          "ton:EQBynBO23ywHy_CgarY9NK9FTz0yDsG82PtcbSTQgGoXwiuA":{"decimals":6,"price":0.9712,"symbol":"jUSDT","timestamp":1767221400,"confidence":0.9}
        }}"#;
        let c = parse_coins(
            body,
            &[
                "coingecko:tether",
                "ethereum:0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48",
                "ton:EQBynBO23ywHy_CgarY9NK9FTz0yDsG82PtcbSTQgGoXwiuA",
                "ton:eqbynbo23ywhy_cgary9nk9ftz0ydsg82ptcbstqggoxwiua",
                "coingecko:dai",
            ],
        )
        .unwrap();
        assert_eq!(c.len(), 3);
        let t = c["ton:EQBynBO23ywHy_CgarY9NK9FTz0yDsG82PtcbSTQgGoXwiuA"]
            .as_ref()
            .unwrap();
        assert_eq!(t.price.to_string(), "0.9712");
        assert_eq!(t.confidence.unwrap().to_string(), "0.9");
        assert!(
            parse_coins(br#"{"coins":{}}"#, &["coingecko:dai"])
                .unwrap()
                .is_empty()
        );
        assert!(parse_coins(br#"{"message":"x"}"#, &["coingecko:dai"]).is_err());
    }
}

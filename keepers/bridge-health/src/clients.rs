//! The shared clients behind the peg and `eth_call` signals: the DefiLlama coins client and the
//! Ethereum JSON-RPC client with failover, both from `keeper_sources`.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use keeper_sources::{CoinGecko, DefiLlama, EvmRpc, InvalidValue, PricePoint, parse_address};
use rust_decimal::prelude::ToPrimitive as _;

use crate::config::{BridgeSpec, Check};
use crate::signals::{BoolCall, PegBatch, PegFuture, PegQuote, SignalError, ready_pegs};

/// `allowLock()`-style reads through [`EvmRpc`] (endpoints tried in order).
pub struct EthBool(pub EvmRpc);

impl BoolCall for EthBool {
    fn call_bool<'a>(
        &'a self,
        contract: &'a str,
        selector: [u8; 4],
    ) -> BoxFuture<'a, Result<bool, SignalError>> {
        async move {
            let to = parse_address(contract).map_err(|e| SignalError::Rpc(e.to_string()))?;
            self.0
                .call_bool(to, selector)
                .await
                .map_err(|e| SignalError::Rpc(e.to_string()))
        }
        .boxed()
    }
}

/// What the cycle's peg prefetch asks for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PegRequests {
    /// DefiLlama coin keys, once each, in configuration order.
    pub defillama: Vec<String>,
    /// CoinGecko `(platform, addresses)`, one request per platform.
    pub coingecko: Vec<(String, Vec<String>)>,
}

/// Every peg key of every bridge.
pub fn peg_requests(bridges: &[BridgeSpec]) -> PegRequests {
    let mut r = PegRequests::default();
    for s in bridges.iter().flat_map(|b| &b.signals) {
        let Check::Peg(p) = &s.check else { continue };
        if !r.defillama.contains(&p.key) {
            r.defillama.push(p.key.clone());
        }
        if p.coingecko {
            let address = p.address().to_owned();
            match r
                .coingecko
                .iter_mut()
                .find(|(platform, _)| *platform == p.coingecko_platform)
            {
                Some((_, list)) if !list.contains(&address) => list.push(address),
                Some(_) => {}
                None => r
                    .coingecko
                    .push((p.coingecko_platform.clone(), vec![address])),
            }
        }
    }
    r
}

/// The peg price clients, each present only when some signal needs it.
#[derive(Clone, Default)]
pub struct PegClients {
    /// DefiLlama coins.
    pub defillama: Option<DefiLlama>,
    /// CoinGecko token prices.
    pub coingecko: Option<CoinGecko>,
}

fn convert(
    prices: HashMap<String, Result<PricePoint, InvalidValue>>,
    prefix: &str,
) -> HashMap<String, Result<PegQuote, InvalidValue>> {
    prices
        .into_iter()
        .map(|(k, v)| {
            let q = v.and_then(|p| {
                p.price
                    .to_f64()
                    .map(|price| PegQuote {
                        price,
                        timestamp: p.timestamp,
                    })
                    .ok_or_else(|| InvalidValue::new(&p.price.to_string(), "out of range"))
            });
            (format!("{prefix}{k}"), q)
        })
        .collect()
}

/// Starts the cycle's peg requests (one per source, concurrently); every peg signal awaits the
/// same shared result, so they overlap with the other signals.
pub fn prefetch_pegs(clients: &PegClients, req: &PegRequests) -> PegFuture {
    if req.defillama.is_empty() && req.coingecko.is_empty() {
        return ready_pegs(PegBatch::default());
    }
    let clients = clients.clone();
    let req = req.clone();
    async move {
        let llama = async {
            let Some(c) = clients
                .defillama
                .as_ref()
                .filter(|_| !req.defillama.is_empty())
            else {
                return Ok(HashMap::new());
            };
            let keys: Vec<&str> = req.defillama.iter().map(String::as_str).collect();
            c.current(&keys)
                .await
                .map(|coins| convert(coins, ""))
                .map_err(|e| Arc::from(e.to_string()))
        };
        let gecko = async {
            let Some(c) = clients.coingecko.as_ref() else {
                return Ok(HashMap::new());
            };
            let mut out = HashMap::new();
            for (platform, addresses) in &req.coingecko {
                let refs: Vec<&str> = addresses.iter().map(String::as_str).collect();
                let prices = c
                    .token_price(platform, &refs)
                    .await
                    .map_err(|e| Arc::<str>::from(e.to_string()))?;
                out.extend(convert(prices, &format!("{platform}:")));
            }
            Ok(out)
        };
        let (defillama, coingecko) = futures_util::future::join(llama, gecko).await;
        PegBatch {
            defillama,
            coingecko,
        }
    }
    .boxed()
    .shared()
}

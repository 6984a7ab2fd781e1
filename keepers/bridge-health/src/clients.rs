//! The shared clients behind the peg and `eth_call` signals: the DefiLlama coins client and the
//! Ethereum JSON-RPC client with failover, both from `keeper_common::sources`.

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::FutureExt as _;
use futures_util::future::BoxFuture;
use keeper_common::sources::{DefiLlama, EvmRpc, parse_address};
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
            let to = parse_address(contract).map_err(SignalError::Rpc)?;
            self.0
                .call_bool(to, selector)
                .await
                .map_err(|e| SignalError::Rpc(e.to_string()))
        }
        .boxed()
    }
}

/// Every peg key of every bridge, once each, in configuration order.
pub fn peg_keys(bridges: &[BridgeSpec]) -> Vec<String> {
    let mut keys: Vec<String> = Vec::new();
    for s in bridges.iter().flat_map(|b| &b.signals) {
        if let Check::Peg(p) = &s.check
            && !keys.contains(&p.key)
        {
            keys.push(p.key.clone());
        }
    }
    keys
}

/// Starts the cycle's one DefiLlama request for `keys` (nothing when there are none).
pub fn prefetch_pegs(client: Option<&DefiLlama>, keys: Vec<String>) -> PegFuture {
    let Some(client) = client.filter(|_| !keys.is_empty()).cloned() else {
        return ready_pegs(Ok(HashMap::new()));
    };
    async move {
        let refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let batch: PegBatch = match client.current(&refs).await {
            Ok(coins) => Ok(coins
                .into_iter()
                .map(|(k, v)| {
                    let q = v.map_err(|e| e.to_string()).and_then(|p| {
                        p.price
                            .to_f64()
                            .map(|price| PegQuote {
                                price,
                                timestamp: p.timestamp,
                            })
                            .ok_or_else(|| format!("price {} out of range", p.price))
                    });
                    (k, q)
                })
                .collect()),
            Err(e) => Err(Arc::from(e.to_string())),
        };
        batch
    }
    .boxed()
    .shared()
}

//! Chainlink data feeds on Ethereum mainnet: `latestRoundData()` and `decimals()` per proxy in
//! one JSON-RPC batch, ABI-decoded with `alloy-sol-types`, with the rejection rules of
//! `decimals()` is cached per proxy after the first success.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use alloy_primitives::aliases::U80;
use alloy_primitives::{Address, Bytes, I256, U256};
use alloy_sol_types::SolCall;
use rust_decimal::Decimal;

use super::evm::{EthCall, EvmRpc, RpcError};
use super::quote::{InvalidValue, Observation, Quote, Reason, Rejected, Source};
use super::{AssetConfig, SourcesSettings};
use keeper_runtime::config::BadInput;
use keeper_runtime::telemetry::Metrics;

alloy_sol_types::sol! {
    /// AggregatorV3Interface.latestRoundData
    function latestRoundData() external view returns (uint80 roundId, int256 answer, uint256 startedAt, uint256 updatedAt, uint80 answeredInRound);
    /// AggregatorV3Interface.decimals
    function decimals() external view returns (uint8);
}

/// `latestRoundData()` selector, `0xfeaf968c`.
pub const LATEST_ROUND_DATA: [u8; 4] = latestRoundDataCall::SELECTOR;
/// `decimals()` selector, `0x313ce567`.
pub const DECIMALS: [u8; 4] = decimalsCall::SELECTOR;
/// A round's `updatedAt` may lead the keeper's clock by this much (clock skew).
pub use super::quote::FUTURE_TOLERANCE_SECS;

/// A decoded `latestRoundData()` answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RoundData {
    /// `(phaseId << 64) | aggregatorRoundId`: needs 80 bits.
    pub round_id: U80,
    /// The price, scaled by `decimals()`, two's-complement.
    pub answer: I256,
    /// When the round started, unix seconds.
    pub started_at: U256,
    /// When the answer was last updated, unix seconds.
    pub updated_at: U256,
    /// The round in which the answer was computed.
    pub answered_in_round: U80,
}

/// Decodes the 160-byte `latestRoundData()` return (five static words), strictly.
pub fn decode_round(data: &[u8]) -> Result<RoundData, BadInput> {
    let r = latestRoundDataCall::abi_decode_returns_validate(data).map_err(|e| {
        BadInput::new(
            &format!("0x{}", hex::encode(data)),
            format!(
                "latestRoundData() returned {} bytes that do not decode: {e}",
                data.len()
            ),
        )
    })?;
    Ok(RoundData {
        round_id: r.roundId,
        answer: r.answer,
        started_at: r.startedAt,
        updated_at: r.updatedAt,
        answered_in_round: r.answeredInRound,
    })
}

/// Decodes the `decimals()` return (one `uint8` word), strictly.
pub fn decode_decimals(data: &[u8]) -> Result<u8, BadInput> {
    decimalsCall::abi_decode_returns_validate(data).map_err(|e| {
        BadInput::new(
            &format!("0x{}", hex::encode(data)),
            format!(
                "decimals() returned {} bytes that do not decode: {e}",
                data.len()
            ),
        )
    })
}

/// Applies the Chainlink rules to a round: `answer <= 0`, `updatedAt == 0`,
/// `updatedAt > now + 60 s`, `answeredInRound < roundId`, and `now - updatedAt > heartbeat + grace`.
pub fn evaluate(
    asset: &str,
    round: &RoundData,
    decimals: u8,
    heartbeat: u64,
    grace: u64,
    now: i64,
) -> Observation {
    let reject = |price: Option<Decimal>, timestamp: Option<i64>, reason: Reason| {
        Observation::Rejected(Rejected {
            asset: asset.to_owned(),
            source: Source::Chainlink,
            lineage: Source::Chainlink.default_lineage().to_owned(),
            price,
            timestamp,
            reason,
        })
    };
    let invalid = |raw: String, problem: &str| {
        Observation::Rejected(Rejected::without_value(
            asset,
            Source::Chainlink,
            Reason::InvalidValue(InvalidValue::new(&raw, problem)),
        ))
    };
    let timestamp = i64::try_from(round.updated_at).ok();
    if !round.answer.is_positive() {
        let price = i128::try_from(round.answer)
            .ok()
            .and_then(|a| Decimal::try_from_i128_with_scale(a, u32::from(decimals)).ok());
        return reject(price, timestamp, Reason::NotPositive);
    }
    let Some(price) = i128::try_from(round.answer)
        .ok()
        .and_then(|a| Decimal::try_from_i128_with_scale(a, u32::from(decimals)).ok())
    else {
        return invalid(
            round.answer.to_string(),
            &format!("answer with {decimals} decimals is beyond the exact decimal range"),
        );
    };
    let Some(updated_at) = timestamp else {
        return invalid(round.updated_at.to_string(), "updatedAt out of range");
    };
    if updated_at == 0 {
        return reject(Some(price), None, Reason::NoTimestamp);
    }
    if updated_at > now.saturating_add(FUTURE_TOLERANCE_SECS) {
        return reject(
            Some(price),
            Some(updated_at),
            Reason::FromFuture {
                ahead: updated_at - now,
            },
        );
    }
    if round.answered_in_round < round.round_id {
        return reject(
            Some(price),
            Some(updated_at),
            Reason::IncompleteRound {
                round_id: round.round_id.to_string(),
                answered_in_round: round.answered_in_round.to_string(),
            },
        );
    }
    let max_age = heartbeat.saturating_add(grace);
    let age = now - updated_at;
    if age > 0 && age.unsigned_abs() > max_age {
        return reject(
            Some(price),
            Some(updated_at),
            Reason::Stale { age, max_age },
        );
    }
    Observation::Quote(Quote {
        asset: asset.to_owned(),
        source: Source::Chainlink,
        lineage: Source::Chainlink.default_lineage().to_owned(),
        price,
        timestamp: updated_at,
        max_age,
        confidence: None,
    })
}

#[derive(Debug, Clone)]
struct Feed {
    asset: String,
    proxy: Address,
    heartbeat: u64,
}

/// The Chainlink source: every configured feed read in one batch per tick.
pub struct Chainlink {
    rpc: EvmRpc,
    feeds: Vec<Feed>,
    grace: u64,
    decimals: Mutex<HashMap<Address, u8>>,
}

impl Chainlink {
    /// The source for the assets that have a `chainlink` feed (validated addresses).
    pub fn new(rpc: EvmRpc, assets: &[AssetConfig], grace: u64) -> Self {
        let feeds = assets
            .iter()
            .filter_map(|a| {
                let feed = a.chainlink.as_ref()?;
                match feed.address() {
                    Ok(proxy) => Some(Feed {
                        asset: a.symbol.clone(),
                        proxy,
                        heartbeat: feed.heartbeat,
                    }),
                    Err(e) => {
                        tracing::error!(asset = %a.symbol, "skipping Chainlink feed: {e}");
                        None
                    }
                }
            })
            .collect();
        Self {
            rpc,
            feeds,
            grace,
            decimals: Mutex::new(HashMap::new()),
        }
    }

    /// The source configured by `[sources]` and `[[assets]]`.
    pub fn from_settings(
        s: &SourcesSettings,
        assets: &[AssetConfig],
        metrics: Option<Arc<Metrics>>,
    ) -> Self {
        let rpc = EvmRpc::new(&s.eth_rpc_urls, s.request_policy(), metrics, "chainlink");
        Self::new(rpc, assets, s.chainlink_grace)
    }

    /// The assets this source covers.
    pub fn assets(&self) -> impl Iterator<Item = &str> {
        self.feeds.iter().map(|f| f.asset.as_str())
    }

    /// Reads every feed (plus `decimals()` for feeds not yet cached) and judges each round.
    pub async fn fetch(&self, now: i64) -> Vec<Observation> {
        let cached: HashMap<Address, u8> = self
            .decimals
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut calls: Vec<EthCall> = self
            .feeds
            .iter()
            .map(|f| EthCall::selector(f.proxy, LATEST_ROUND_DATA))
            .collect();
        let mut decimals_at: HashMap<Address, usize> = HashMap::new();
        for f in &self.feeds {
            if !cached.contains_key(&f.proxy) && !decimals_at.contains_key(&f.proxy) {
                decimals_at.insert(f.proxy, calls.len());
                calls.push(EthCall::selector(f.proxy, DECIMALS));
            }
        }
        let results = if calls.is_empty() {
            Vec::new()
        } else {
            self.rpc.eth_call_batch(&calls).await
        };
        let mut learned = HashMap::new();
        let out = self
            .feeds
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let decimals = match cached.get(&f.proxy) {
                    Some(d) => Ok(*d),
                    None => match decimals_at.get(&f.proxy).and_then(|j| results.get(*j)) {
                        Some(r) => decimals_of(r),
                        None => Err("decimals() was not called".to_owned()),
                    },
                };
                let round = results.get(i).map_or_else(
                    || Err(Reason::Unavailable {
                        detail: "latestRoundData() was not called".into(),
                    }),
                    round_of,
                );
                let obs = match (round, decimals) {
                    (Err(reason), _) => Observation::Rejected(Rejected::without_value(
                        &f.asset,
                        Source::Chainlink,
                        reason,
                    )),
                    (Ok(_), Err(e)) => Observation::Rejected(Rejected::without_value(
                        &f.asset,
                        Source::Chainlink,
                        Reason::Unavailable { detail: e },
                    )),
                    (Ok(round), Ok(d)) => {
                        learned.insert(f.proxy, d);
                        evaluate(&f.asset, &round, d, f.heartbeat, self.grace, now)
                    }
                };
                if let Observation::Rejected(r) = &obs {
                    tracing::warn!(asset = %f.asset, source = "chainlink", reason = %r.reason, "quote rejected");
                }
                obs
            })
            .collect();
        if !learned.is_empty() {
            self.decimals
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(learned);
        }
        out
    }
}

fn decimals_of(r: &Result<Bytes, RpcError>) -> Result<u8, String> {
    match r {
        Ok(b) => decode_decimals(b).map_err(String::from).and_then(|d| {
            if u32::from(d) > Decimal::MAX_SCALE {
                Err(format!("decimals() = {d} exceeds 28"))
            } else {
                Ok(d)
            }
        }),
        Err(e) => Err(format!("decimals(): {e}")),
    }
}

fn round_of(r: &Result<Bytes, RpcError>) -> Result<RoundData, Reason> {
    match r {
        Ok(b) => decode_round(b).map_err(|problem| {
            Reason::InvalidValue(InvalidValue::new(&problem.input, problem.problem))
        }),
        Err(e) => Err(Reason::Unavailable {
            detail: format!("latestRoundData(): {e}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Reference §3 worked example: USDT/USD, answer 99985000, roundId = 6 << 64 | 2623.
    const WORKED: &str = "0000000000000000000000000000000000000000000000060000000000000a3f0000000000000000000000000000000000000000000000000000000005f5a668000000000000000000000000000000000000000000000000000000006955aaf0000000000000000000000000000000000000000000000000000000006955aaf00000000000000000000000000000000000000000000000060000000000000a3f";

    #[test]
    fn selectors_match_the_reference() {
        assert_eq!(hex::encode(LATEST_ROUND_DATA), "feaf968c");
        assert_eq!(hex::encode(DECIMALS), "313ce567");
    }

    #[test]
    fn worked_example_decodes_with_a_round_id_beyond_64_bits() {
        let r = decode_round(&hex::decode(WORKED).unwrap()).unwrap();
        assert_eq!(r.round_id.to_string(), "110680464442257312319");
        assert!(r.round_id > U80::from(u64::MAX));
        assert_eq!(r.answer, I256::try_from(99_985_000i64).unwrap());
        assert_eq!(r.updated_at, U256::from(1_767_222_000u64));
        match evaluate("USDT", &r, 8, 86_400, 600, 1_767_222_100) {
            Observation::Quote(q) => {
                assert_eq!(q.price.to_string(), "0.99985000");
                assert_eq!(q.max_age, 87_000);
            }
            o => panic!("{o:?}"),
        }
        let eight = "0000000000000000000000000000000000000000000000000000000000000008";
        assert_eq!(decode_decimals(&hex::decode(eight).unwrap()), Ok(8));
        assert!(decode_decimals(&[]).is_err());
        assert!(decode_round(&[0u8; 64]).is_err());
    }

    #[test]
    fn rules_reject_each_bad_round() {
        let good = decode_round(&hex::decode(WORKED).unwrap()).unwrap();
        let now = 1_767_222_100;
        let code = |r: RoundData, now: i64| match evaluate("USDT", &r, 8, 3_600, 600, now) {
            Observation::Rejected(r) => r.reason.code(),
            Observation::Quote(_) => "accepted",
        };
        assert_eq!(code(good, now), "accepted");
        assert_eq!(
            code(
                RoundData {
                    answer: I256::ZERO,
                    ..good
                },
                now
            ),
            "not_positive"
        );
        assert_eq!(
            code(
                RoundData {
                    answer: I256::MINUS_ONE,
                    ..good
                },
                now
            ),
            "not_positive"
        );
        assert_eq!(
            code(
                RoundData {
                    updated_at: U256::ZERO,
                    ..good
                },
                now
            ),
            "no_timestamp"
        );
        assert_eq!(code(good, 1_767_222_000 - 61), "from_future");
        assert_eq!(code(good, 1_767_222_000 - 60), "accepted");
        assert_eq!(
            code(
                RoundData {
                    answered_in_round: good.round_id - U80::from(1),
                    ..good
                },
                now
            ),
            "incomplete_round"
        );
        assert_eq!(code(good, 1_767_222_000 + 4_200), "accepted");
        assert_eq!(code(good, 1_767_222_000 + 4_201), "stale");
        assert_eq!(
            code(
                RoundData {
                    answer: I256::MAX,
                    ..good
                },
                now
            ),
            "invalid_value"
        );
        assert_eq!(
            code(
                RoundData {
                    updated_at: U256::MAX,
                    ..good
                },
                now
            ),
            "invalid_value"
        );
    }
}

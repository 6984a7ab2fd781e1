//! Oracle message bodies (the Tonsurance v3 PriceOracle layout, described in
//! docs/architecture.md) and their decoder.
//!
//! ```text
//! update_price#03         asset_id:uint16 price:Coins timestamp:uint32 ^signature
//! update_bridge_status#04 bridge_id:uint8 is_online:uint1 last_seen:uint32 ^signature
//! ```
//! `op` is a uint32. `^signature` holds exactly 512 bits: the ed25519 signature, by the keeper's
//! wallet key, of the representation hash of the payload cell (the same bits, no reference).

use num_bigint::BigUint;
use serde::{Deserialize, Serialize};
use tonlib_core::TonAddress;
use tonlib_core::cell::{Cell, CellBuilder};

use super::keys::{WalletKeys, verify_signature};
use super::{BuildError, DecodeError};

/// `op` of `update_price`.
pub const OP_UPDATE_PRICE: u32 = 0x03;
/// `op` of `update_bridge_status`.
pub const OP_UPDATE_BRIDGE_STATUS: u32 = 0x04;

/// A new aggregated price for one asset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceUpdate {
    /// Asset symbol from the config (not on chain; for summaries and metrics).
    pub asset: String,
    /// On-chain asset id.
    pub asset_id: u16,
    /// Price in USD with 6 decimals.
    pub price_micro: u64,
    /// Observation time of the aggregate, unix seconds.
    pub timestamp: u32,
}

/// A bridge's online flag.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeStatusUpdate {
    /// Bridge name from the config (not on chain).
    pub bridge: String,
    /// On-chain bridge id.
    pub bridge_id: u8,
    /// Whether the bridge is considered online.
    pub is_online: bool,
    /// Last time the bridge was seen healthy, unix seconds.
    pub last_seen: u32,
}

/// One oracle update, the unit a keeper publishes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum OracleUpdate {
    /// `update_price` (op 0x03).
    #[serde(rename = "update_price")]
    Price(PriceUpdate),
    /// `update_bridge_status` (op 0x04).
    #[serde(rename = "update_bridge_status")]
    BridgeStatus(BridgeStatusUpdate),
}

impl OracleUpdate {
    /// The op name used in summaries and the `op` metric label.
    pub fn op_name(&self) -> &'static str {
        match self {
            Self::Price(_) => "update_price",
            Self::BridgeStatus(_) => "update_bridge_status",
        }
    }

    /// The subject's config name (asset symbol or bridge name).
    pub fn subject(&self) -> &str {
        match self {
            Self::Price(p) => &p.asset,
            Self::BridgeStatus(b) => &b.bridge,
        }
    }

    /// The payload cell: `op` and fields, no reference. Its hash is what gets signed.
    pub fn payload_cell(&self) -> Result<Cell, BuildError> {
        let mut b = CellBuilder::new();
        match self {
            Self::Price(p) => {
                b.store_u32(32, OP_UPDATE_PRICE)?
                    .store_u16(16, p.asset_id)?
                    .store_coins(&BigUint::from(p.price_micro))?
                    .store_u32(32, p.timestamp)?;
            }
            Self::BridgeStatus(s) => {
                b.store_u32(32, OP_UPDATE_BRIDGE_STATUS)?
                    .store_u8(8, s.bridge_id)?
                    .store_bit(s.is_online)?
                    .store_u32(32, s.last_seen)?;
            }
        }
        Ok(b.build()?)
    }

    /// The full message body: the payload plus `^signature` by `keys`.
    pub fn body(&self, keys: &WalletKeys) -> Result<Cell, BuildError> {
        let payload = self.payload_cell()?;
        let signature = keys.sign(payload.cell_hash().as_slice());
        let sig_cell = CellBuilder::new().store_slice(&signature)?.build()?;
        let mut b = CellBuilder::new();
        b.store_cell(&payload)?.store_child(sig_cell)?;
        Ok(b.build()?)
    }
}

/// One update addressed to an oracle contract.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OracleMessage {
    /// The oracle contract (PriceOracle, or the bridge oracle).
    pub to: TonAddress,
    /// What to publish.
    pub update: OracleUpdate,
}

impl OracleMessage {
    /// Addresses `update` to `to`.
    pub fn new(to: TonAddress, update: OracleUpdate) -> Self {
        Self { to, update }
    }
}

/// The fields of a decoded body. Prices are `u128`: `Coins` holds up to 120 bits on chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum DecodedPayload {
    /// `update_price`.
    #[serde(rename = "update_price")]
    Price {
        /// Asset id.
        asset_id: u16,
        /// Price, 6 decimals.
        price_micro: u128,
        /// Observation time.
        timestamp: u32,
    },
    /// `update_bridge_status`.
    #[serde(rename = "update_bridge_status")]
    BridgeStatus {
        /// Bridge id.
        bridge_id: u8,
        /// Online flag.
        is_online: bool,
        /// Last seen, unix seconds.
        last_seen: u32,
    },
}

/// A decoded oracle body with its signature and the hash the signature must cover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedBody {
    /// The fields.
    pub payload: DecodedPayload,
    /// The 512-bit signature from `^signature`.
    pub signature: [u8; 64],
    /// Representation hash of the payload cell (bits only, no reference).
    pub payload_hash: [u8; 32],
}

impl DecodedBody {
    /// True when the signature is by `public_key` over the payload hash.
    pub fn verify(&self, public_key: &[u8]) -> bool {
        verify_signature(public_key, &self.payload_hash, &self.signature)
    }
}

fn bad(problem: impl Into<String>) -> DecodeError {
    DecodeError::new("oracle body", problem)
}

/// Decodes an `update_price` / `update_bridge_status` body, checking the exact layout
/// (no trailing bits, exactly one reference of exactly 512 bits).
pub fn decode_body(body: &Cell) -> Result<DecodedBody, DecodeError> {
    let mut p = body.parser();
    let op = p.load_u32(32).map_err(|e| bad(format!("op: {e}")))?;
    let payload = match op {
        OP_UPDATE_PRICE => {
            let asset_id = p.load_u16(16).map_err(|e| bad(format!("asset_id: {e}")))?;
            let coins = p.load_coins().map_err(|e| bad(format!("price: {e}")))?;
            let price_micro =
                biguint_to_u128(&coins).ok_or_else(|| bad("price exceeds 128 bits"))?;
            let timestamp = p.load_u32(32).map_err(|e| bad(format!("timestamp: {e}")))?;
            DecodedPayload::Price {
                asset_id,
                price_micro,
                timestamp,
            }
        }
        OP_UPDATE_BRIDGE_STATUS => {
            let bridge_id = p.load_u8(8).map_err(|e| bad(format!("bridge_id: {e}")))?;
            let is_online = p.load_bit().map_err(|e| bad(format!("is_online: {e}")))?;
            let last_seen = p.load_u32(32).map_err(|e| bad(format!("last_seen: {e}")))?;
            DecodedPayload::BridgeStatus {
                bridge_id,
                is_online,
                last_seen,
            }
        }
        other => return Err(bad(format!("unknown op 0x{other:x}"))),
    };
    if p.remaining_bits() != 0 {
        return Err(bad(format!(
            "{} unexpected trailing bits",
            p.remaining_bits()
        )));
    }
    if body.references().len() != 1 {
        return Err(bad(format!(
            "expected 1 reference (^signature), found {}",
            body.references().len()
        )));
    }
    let sig_cell = &body.references()[0];
    if sig_cell.bit_len() != 512 || !sig_cell.references().is_empty() {
        return Err(bad(format!(
            "^signature must hold exactly 512 bits and no references, it holds {} bits and {} references",
            sig_cell.bit_len(),
            sig_cell.references().len()
        )));
    }
    let mut signature = [0u8; 64];
    signature.copy_from_slice(&sig_cell.data()[..64]);
    let payload_cell = CellBuilder::new()
        .store_bits(body.bit_len(), body.data())
        .and_then(|b| b.build())
        .map_err(|e| bad(format!("payload cell: {e}")))?;
    let mut payload_hash = [0u8; 32];
    payload_hash.copy_from_slice(payload_cell.cell_hash().as_slice());
    Ok(DecodedBody {
        payload,
        signature,
        payload_hash,
    })
}

pub(crate) fn biguint_to_u128(v: &BigUint) -> Option<u128> {
    let digits = v.to_u64_digits();
    match digits.len() {
        0 => Some(0),
        1 => Some(u128::from(digits[0])),
        2 => Some(u128::from(digits[0]) | (u128::from(digits[1]) << 64)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn price() -> OracleUpdate {
        OracleUpdate::Price(PriceUpdate {
            asset: "USDT".into(),
            asset_id: 1,
            price_micro: 999_850,
            timestamp: 1_760_000_000,
        })
    }

    #[test]
    fn price_body_round_trips_and_verifies() {
        let k = WalletKeys::from_seed(&[1u8; 32]).unwrap();
        let body = price().body(&k).unwrap();
        let d = decode_body(&body).unwrap();
        assert_eq!(
            d.payload,
            DecodedPayload::Price {
                asset_id: 1,
                price_micro: 999_850,
                timestamp: 1_760_000_000
            }
        );
        assert!(d.verify(k.public_key()));
        assert_eq!(
            &d.payload_hash,
            price().payload_cell().unwrap().cell_hash().as_slice()
        );
        // 32 + 16 + (4 + 24) + 32 bits: Coins of 999850 take 3 bytes.
        assert_eq!(body.bit_len(), 108);
    }

    #[test]
    fn bridge_body_round_trips() {
        let k = WalletKeys::from_seed(&[2u8; 32]).unwrap();
        let u = OracleUpdate::BridgeStatus(BridgeStatusUpdate {
            bridge: "wormhole".into(),
            bridge_id: 3,
            is_online: true,
            last_seen: 1_760_000_100,
        });
        let d = decode_body(&u.body(&k).unwrap()).unwrap();
        assert_eq!(
            d.payload,
            DecodedPayload::BridgeStatus {
                bridge_id: 3,
                is_online: true,
                last_seen: 1_760_000_100
            }
        );
        assert!(d.verify(k.public_key()));
        assert!(!d.verify(WalletKeys::from_seed(&[3u8; 32]).unwrap().public_key()));
    }

    #[test]
    fn malformed_bodies_are_errors() {
        let no_sig = price().payload_cell().unwrap();
        assert!(
            decode_body(&no_sig)
                .unwrap_err()
                .to_string()
                .contains("reference")
        );
        let unknown = CellBuilder::new()
            .store_u32(32, 0x99)
            .unwrap()
            .build()
            .unwrap();
        assert!(
            decode_body(&unknown)
                .unwrap_err()
                .to_string()
                .contains("unknown op")
        );
        let short = CellBuilder::new()
            .store_u32(32, 3)
            .unwrap()
            .build()
            .unwrap();
        assert!(decode_body(&short).is_err());
    }
}

//! Dry runs and the decoded message summary (`--output json` `messages` items).

use serde::{Deserialize, Serialize};

use super::external::{OutgoingMessage, SignedExternal, build_external, decode_external};
use super::oracle::{DecodedPayload, OracleMessage, OracleUpdate};
use super::settings::Network;
use super::wallet::Wallet;
use super::{BuildError, DecodeError};

/// The fields that differ between the two ops.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SummarySubject {
    /// `update_price`.
    Price {
        /// Asset symbol.
        asset: String,
        /// Asset id.
        asset_id: u16,
        /// Price, 6 decimals.
        price_micro: u64,
        /// Observation time.
        timestamp: u32,
    },
    /// `update_bridge_status`.
    Bridge {
        /// Bridge name.
        bridge: String,
        /// Bridge id.
        bridge_id: u8,
        /// Online flag.
        is_online: bool,
        /// Last seen.
        last_seen: u32,
    },
}

/// One message as printed by `--dry-run --output json`: `{"op", "asset"|"bridge",
/// "asset_id"|"bridge_id", "price_micro"|"is_online", "timestamp"|"last_seen", "to", "value_nanoton"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageSummary {
    /// `update_price` or `update_bridge_status`.
    pub op: String,
    /// Op-specific fields.
    #[serde(flatten)]
    pub subject: SummarySubject,
    /// Destination, user-friendly bounceable form.
    pub to: String,
    /// TON attached, nanotons.
    pub value_nanoton: u128,
}

/// One signed external message of a dry run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DryRunExternal {
    /// Seqno it would consume.
    pub seqno: u32,
    /// Its `valid_until`.
    pub valid_until: u32,
    /// StateInit attached (wallet not deployed yet).
    pub state_init: bool,
    /// Number of oracle messages it carries.
    pub actions: usize,
    /// The BoC, base64.
    pub boc: String,
    /// Normalized message hash, hex.
    pub normalized_hash: String,
}

/// Everything a dry run built and signed, decoded back from the BoCs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DryRun {
    /// The first (for V5R1: the only) external message, base64.
    pub boc: String,
    /// Every external message (V4R2 needs one per 4 updates, with consecutive seqnos).
    pub externals: Vec<DryRunExternal>,
    /// Every oracle message, in execution order.
    pub messages: Vec<MessageSummary>,
}

/// How far before the chain's (or the local) clock a dry run's `valid_until` lies: wider than
/// any plausible clock skew, so every wallet rejects the message as expired whoever submits it.
pub const DRY_RUN_EXPIRED_BY_SECONDS: u64 = 3_600;

/// The `valid_until` a dry run signs with, given the current time: already in the past.
pub fn dry_run_valid_until(now: u64) -> u32 {
    u32::try_from(now.saturating_sub(DRY_RUN_EXPIRED_BY_SECONDS)).unwrap_or(u32::MAX)
}

/// What every dry run says about the message it signed, so nobody mistakes it for a sendable one.
pub fn dry_run_note(valid_until: u32, now: u64) -> String {
    format!(
        "dry run: signed with valid_until {valid_until}, {DRY_RUN_EXPIRED_BY_SECONDS} s before \
         the current time {now}; the network rejects this message as expired"
    )
}

/// The outgoing internal messages for `messages`, each with a fresh payload signature.
pub fn outgoing(
    wallet: &Wallet,
    messages: &[OracleMessage],
    value_nanoton: u64,
) -> Result<Vec<OutgoingMessage>, BuildError> {
    messages
        .iter()
        .map(|m| {
            Ok(OutgoingMessage {
                to: m.to.clone(),
                value_nanoton,
                bounce: true,
                body: m.update.body(wallet.keys())?.to_arc(),
            })
        })
        .collect()
}

/// Why a dry run failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DryRunError {
    /// Building or signing failed.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// The signed BoC did not decode back to what was asked (a bug).
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// Builds and signs every external for `messages` without any chain access: seqnos start at
/// `seqno`, each valid until `valid_until`; StateInit on the first when `deployed` is false.
/// The summary is decoded back from the BoCs, so it shows what was really signed.
pub fn dry_run_offline(
    wallet: &Wallet,
    messages: &[OracleMessage],
    value_nanoton: u64,
    seqno: u32,
    valid_until: u32,
    deployed: bool,
) -> Result<DryRun, DryRunError> {
    let testnet = wallet.network() == Network::Testnet;
    let mut externals = Vec::new();
    let mut summaries = Vec::new();
    for (i, chunk) in messages.chunks(wallet.max_actions()).enumerate() {
        let seq = seqno.wrapping_add(i as u32);
        let ext = build_external(
            wallet,
            seq,
            valid_until,
            !deployed && i == 0,
            &outgoing(wallet, chunk, value_nanoton)?,
        )?;
        summaries.extend(summarize(&ext, wallet, chunk, testnet)?);
        externals.push(DryRunExternal {
            seqno: ext.seqno,
            valid_until: ext.valid_until,
            state_init: ext.with_state_init,
            actions: ext.actions,
            boc: ext.boc_base64(),
            normalized_hash: hex::encode(ext.normalized_hash),
        });
    }
    Ok(DryRun {
        boc: externals.first().map(|e| e.boc.clone()).unwrap_or_default(),
        externals,
        messages: summaries,
    })
}

/// Decodes `ext` and describes each action, taking names from `messages` (same order).
pub fn summarize(
    ext: &SignedExternal,
    wallet: &Wallet,
    messages: &[OracleMessage],
    testnet: bool,
) -> Result<Vec<MessageSummary>, DecodeError> {
    let decoded = decode_external(&ext.boc, wallet.version())?;
    if decoded.actions.len() != messages.len() {
        return Err(DecodeError::new(
            "external message",
            format!(
                "{} actions decoded, {} built",
                decoded.actions.len(),
                messages.len()
            ),
        ));
    }
    decoded
        .actions
        .iter()
        .zip(messages)
        .map(|(action, m)| {
            let body = action.oracle_body()?;
            let subject = match (body.payload, &m.update) {
                (
                    DecodedPayload::Price {
                        asset_id,
                        price_micro,
                        timestamp,
                    },
                    OracleUpdate::Price(p),
                ) => SummarySubject::Price {
                    asset: p.asset.clone(),
                    asset_id,
                    // Keepers publish u64 micro-prices; a larger one cannot be ours.
                    price_micro: u64::try_from(price_micro).map_err(|_| {
                        DecodeError::new("external message", "price exceeds 64 bits")
                    })?,
                    timestamp,
                },
                (
                    DecodedPayload::BridgeStatus {
                        bridge_id,
                        is_online,
                        last_seen,
                    },
                    OracleUpdate::BridgeStatus(b),
                ) => SummarySubject::Bridge {
                    bridge: b.bridge.clone(),
                    bridge_id,
                    is_online,
                    last_seen,
                },
                _ => {
                    return Err(DecodeError::new(
                        "external message",
                        "action order does not match the updates",
                    ));
                }
            };
            Ok(MessageSummary {
                op: m.update.op_name().to_owned(),
                subject,
                to: action.to.to_base64_url_flags(false, testnet),
                value_nanoton: action.value_nanoton,
            })
        })
        .collect()
}

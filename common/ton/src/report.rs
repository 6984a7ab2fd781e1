//! What a delivery reports: each confirmed external message, what the oracle shows after it,
//! and why a delivery failed.

use std::time::Duration;

use serde::Serialize;

use super::BuildError;
use super::transport::TransportError;

/// One confirmed external message.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct BatchReport {
    /// Seqno it consumed.
    pub seqno: u32,
    /// Its valid_until.
    pub valid_until: u32,
    /// Oracle messages it carried.
    pub actions: usize,
    /// StateInit attached (the wallet was deployed by it).
    pub state_init: bool,
    /// Normalized message hash, hex.
    pub normalized_hash: String,
    /// Wallet transaction `(lt, hash)`, when found through `getTransactions`.
    pub transaction: Option<(u64, String)>,
    /// Times it was rebuilt after expiring.
    pub rebuilds: u32,
    /// From the first send to confirmation.
    pub latency_ms: u64,
    /// Fencing token of the wallet lease checked right before it was signed (Redis leases).
    pub fencing_token: Option<u64>,
    /// The oracle's compute exit code: 0 when every oracle transaction of the batch succeeded,
    /// else the first failing one's; absent when the endpoint has no transaction index.
    pub exit_code: Option<i32>,
    /// Fees of the wallet and oracle transactions, nanotons (with `exit_code`).
    pub fees_nanoton: Option<u128>,
    /// TON the batch carried to the oracle, nanotons.
    pub value_nanoton: u128,
    /// Messages the wallet's action phase skipped because it could not pay them (known only
    /// with a transaction index; 0 otherwise).
    pub unpaid: usize,
    /// Each oracle transaction's exit code, in the order the messages were sent (empty when
    /// the endpoint could not show them).
    #[serde(skip)]
    pub oracle_exit_codes: Vec<i32>,
    /// The oracle's latest transactions as listed when the batch's were found, newest first
    /// (empty without a v2 listing of one oracle).
    #[serde(skip)]
    pub oracle_listing: Vec<OracleTransaction>,
}

/// One oracle transaction in the listing read after a batch landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OracleTransaction {
    /// Its logical time.
    pub lt: u64,
    /// This batch caused it.
    pub ours: bool,
}

/// What the oracle showed for one update after delivery.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReadBack {
    /// `update_price` or `update_bridge_status`.
    pub op: String,
    /// Asset or bridge name.
    pub subject: String,
    /// Asset or bridge id.
    pub id: u16,
    /// Published value (price_micro, or 1/0 for online).
    pub expected_value: u128,
    /// Published timestamp / last_seen.
    pub expected_timestamp: u32,
    /// On-chain value, when the get-method answered.
    pub onchain_value: Option<u128>,
    /// On-chain timestamp / last_seen, when the get-method answered.
    pub onchain_timestamp: Option<u32>,
    /// The update is in: on-chain time is newer than ours, or equal with our value.
    pub landed: bool,
    /// Why it could not be read, if so.
    pub error: Option<String>,
    /// The wallet accepted the batch but could not pay for this message: it was never sent.
    pub unpaid: bool,
}

/// A delivery that reached the chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryReport {
    /// One per external message (V4R2: one per 4 updates).
    pub batches: Vec<BatchReport>,
    /// One per update, in input order.
    pub read_back: Vec<ReadBack>,
}

impl DeliveryReport {
    /// Updates that did not land.
    pub fn not_landed(&self) -> impl Iterator<Item = &ReadBack> {
        self.read_back.iter().filter(|r| !r.landed)
    }

    /// Updates the wallet could not pay for (skipped in its action phase).
    pub fn unpaid(&self) -> impl Iterator<Item = &ReadBack> {
        self.read_back.iter().filter(|r| r.unpaid)
    }
}

/// What a batch needs that the wallet does not have; nothing of it was signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Shortfall {
    /// Wallet label.
    pub wallet: String,
    /// Its balance at the last read, nanotons.
    pub balance_nanoton: u128,
    /// What the batch needs: values plus estimated fees, nanotons.
    pub needed_nanoton: u128,
    /// The updates left out (`op subject`), in input order.
    pub left_out: Vec<String>,
    /// Every endpoint refused a message because the wallet cannot pay the gas of accepting it.
    pub refused: bool,
}

/// Why a delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Nothing to send.
    #[error("no oracle updates to deliver")]
    Empty,
    /// Building or signing failed.
    #[error(transparent)]
    Build(#[from] BuildError),
    /// A chain call failed after retries.
    #[error("{stage}: {source}")]
    Transport {
        /// What delivery was doing.
        stage: &'static str,
        /// The failure.
        source: TransportError,
    },
    /// The wallet is frozen and cannot send.
    #[error("wallet {wallet} is frozen")]
    Frozen {
        /// Wallet label.
        wallet: String,
    },
    /// The wallet refused the message and its seqno did not move. It stays in flight until it
    /// expires, so the next call cannot sign another body for that seqno; unless every endpoint
    /// refused it for a seqno the wallet had left behind (then it could never land, and this
    /// only says that re-signing from fresh reads did not help either).
    #[error("wallet rejected the message with seqno {seqno}: {error}")]
    Rejected {
        /// Seqno of the refused message.
        seqno: u32,
        /// toncenter's answer.
        error: String,
    },
    /// Expired again after the allowed rebuilds.
    #[error("message with seqno {seqno} expired {attempts} times without landing")]
    Expired {
        /// Last seqno tried.
        seqno: u32,
        /// Builds tried.
        attempts: u32,
    },
    /// Neither confirmed nor expired within the confirm timeout; it may still land, so it stays
    /// in flight.
    #[error("message with seqno {seqno} neither confirmed nor expired within {waited:?}")]
    Unconfirmed {
        /// Its seqno.
        seqno: u32,
        /// Time waited.
        waited: Duration,
    },
    /// A message from an earlier call can still land; nothing new was signed.
    #[error("message with seqno {seqno} (valid until {valid_until}) is still in flight")]
    InFlight {
        /// Its seqno.
        seqno: u32,
        /// Its valid_until.
        valid_until: u32,
    },
    /// A journaled message from before a restart or takeover was resumed and landed; nothing
    /// new was signed, since what to send was chosen without it.
    #[error(
        "a journaled message (seqno {seqno}) from before a restart landed; nothing new sent this time"
    )]
    ResumedLanded {
        /// Its seqno.
        seqno: u32,
    },
    /// The wallet's seqno moved past a sweep, but no wallet transaction carries the sweep's
    /// message: another body (a keeper still running?) consumed the seqno, or the transaction
    /// index does not list it. It can no longer land; check the balance before sweeping again.
    #[error(
        "the wallet's seqno {seqno} was consumed, but no wallet transaction carries this sweep: another message took the seqno (is the keeper stopped?) or the index does not list it; not confirmed, check the balance before sweeping again"
    )]
    SweepNotConfirmed {
        /// The sweep's seqno.
        seqno: u32,
    },
    /// The in-flight journal could not be read or written; nothing new was sent.
    #[error(transparent)]
    Journal(#[from] super::journal::JournalError),
    /// The wallet lease could not be proven ours right before signing; nothing was signed.
    #[error("not signing: {0}")]
    Fenced(#[from] crate::lease::FenceError),
    /// The wallet cannot pay for the batch: nothing was signed (or the only body signed was
    /// refused by every endpoint for lack of gas money and is forgotten).
    #[error("wallet {} holds {} TON but the batch needs {} TON (values plus estimated fees){}: top it up; not sent: {}",
        .0.wallet, ton(.0.balance_nanoton), ton(.0.needed_nanoton),
        if .0.refused { ", and the chain refused it for lack of gas money" } else { "" },
        .0.left_out.join(", "))]
    Unfunded(Box<Shortfall>),
    /// Confirmed on the wallet, but some updates are not on the oracle (keeper not registered,
    /// stale timestamp, bounced message…).
    #[error("{} of {} updates did not land on the oracle: {}{}", .missing.len(), .report.read_back.len(), describe(.missing), failed_onchain(.report))]
    NotLanded {
        /// The updates that did not land.
        missing: Vec<ReadBack>,
        /// The full report.
        report: Box<DeliveryReport>,
    },
}

/// `; the oracle's transaction failed with exit code -14 (out of gas…)` when one did.
fn failed_onchain(report: &DeliveryReport) -> String {
    report
        .batches
        .iter()
        .find_map(|b| b.exit_code.filter(|c| *c != 0).map(|c| (b.seqno, c)))
        .map(|(seqno, code)| {
            format!(
                "; the oracle's transaction (seqno {seqno}) failed with exit code {code} ({})",
                exit_code_meaning(code)
            )
        })
        .unwrap_or_default()
}

/// What a compute exit code usually means for an oracle update (here, below `publish`, because
/// a failed delivery's message names it too).
pub fn exit_code_meaning(code: i32) -> &'static str {
    match code {
        -14 | 13 => "out of gas: raise UPDATE_VALUE_TON or use auto",
        -1..=127 => "a TVM error in the oracle contract",
        _ => "refused by the oracle contract (unknown keeper, bad signature, stale update…)",
    }
}

/// Nanotons as TON with nine decimals, exact.
fn ton(nanoton: u128) -> String {
    format!("{}.{:09}", nanoton / 1_000_000_000, nanoton % 1_000_000_000)
}

fn describe(missing: &[ReadBack]) -> String {
    missing
        .iter()
        .map(|r| match (&r.error, r.onchain_timestamp) {
            (Some(e), _) => format!("{} {}: {e}", r.op, r.subject),
            (None, Some(t)) => format!(
                "{} {} (ours {}@{}, chain {}@{t})",
                r.op,
                r.subject,
                r.expected_value,
                r.expected_timestamp,
                r.onchain_value.unwrap_or_default()
            ),
            (None, None) => format!("{} {}", r.op, r.subject),
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl DeliveryError {
    /// A short label for logs and records: `empty`, `build`, `transport`, `frozen`, `rejected`,
    /// `expired`, `unconfirmed`, `in_flight`, `sweep_not_confirmed`, `fenced`, `journal`,
    /// `resumed_landed`, `unfunded`, `not_landed`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Empty => "empty",
            Self::Build(_) => "build",
            Self::Transport { .. } => "transport",
            Self::Frozen { .. } => "frozen",
            Self::Rejected { .. } => "rejected",
            Self::Expired { .. } => "expired",
            Self::Unconfirmed { .. } => "unconfirmed",
            Self::InFlight { .. } => "in_flight",
            Self::SweepNotConfirmed { .. } => "sweep_not_confirmed",
            Self::Fenced(_) => "fenced",
            Self::Journal(_) => "journal",
            Self::ResumedLanded { .. } => "resumed_landed",
            Self::Unfunded(_) => "unfunded",
            Self::NotLanded { .. } => "not_landed",
        }
    }

    /// True when the wallet could not pay: nothing signed ([`DeliveryError::Unfunded`]), or
    /// messages skipped in its action phase.
    pub fn is_unfunded(&self) -> bool {
        match self {
            Self::Unfunded(_) => true,
            Self::NotLanded { missing, .. } => missing.iter().any(|r| r.unpaid),
            _ => false,
        }
    }

    /// Subjects the wallet sent whose result the oracle could not be read for: they may well
    /// be on chain, so a keeper counts them as its own last publication rather than sending
    /// them again on every tick the oracle stays unreadable. Empty when an oracle transaction
    /// of the delivery failed (then they surely did not land) and for every other error.
    pub fn sent_unverified(&self) -> Vec<&str> {
        let Self::NotLanded { missing, report } = self else {
            return Vec::new();
        };
        if report
            .batches
            .iter()
            .any(|b| b.exit_code.is_some_and(|c| c != 0))
        {
            return Vec::new();
        }
        missing
            .iter()
            // An unpaid message was never sent; an answering oracle showed something else.
            .filter(|r| r.onchain_value.is_none() && !r.unpaid)
            .map(|r| r.subject.as_str())
            .collect()
    }
}

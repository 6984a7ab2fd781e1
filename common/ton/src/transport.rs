//! What delivery needs from the chain, behind a trait so a liteserver client can be added later.

use std::future::Future;
use std::time::Duration;

use num_bigint::BigInt;
use serde::Serialize;
use tonlib_core::TonAddress;
use tonlib_core::cell::ArcCell;

/// A failed chain call. Messages name the method and what the server said, never a URL or key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// No connection, reset, TLS failure.
    #[error("toncenter {method}: request failed: {reason}")]
    Transport {
        /// API method.
        method: &'static str,
        /// What failed.
        reason: String,
    },
    /// No answer within the request timeout.
    #[error("toncenter {method}: timed out after {after:?}")]
    Timeout {
        /// API method.
        method: &'static str,
        /// The timeout.
        after: Duration,
    },
    /// The server answered with an error status or `"ok": false`.
    #[error("toncenter {method}: HTTP {status}{}: {error}", code.map(|c| format!(" (code {c})")).unwrap_or_default())]
    Api {
        /// API method.
        method: &'static str,
        /// HTTP status.
        status: u16,
        /// toncenter's `code` field, when present.
        code: Option<i64>,
        /// toncenter's `error` text (or the start of a non-JSON body).
        error: String,
        /// `Retry-After` of a 429.
        retry_after: Option<Duration>,
    },
    /// The endpoint answered with a chain state behind what another endpoint already showed.
    #[error("toncenter {method}: endpoint is behind: {problem}")]
    Lagging {
        /// API method.
        method: &'static str,
        /// What was behind.
        problem: String,
    },
    /// The answer was not in the documented shape.
    #[error("toncenter {method}: unexpected response: {problem}")]
    Decode {
        /// API method.
        method: &'static str,
        /// What was wrong.
        problem: String,
    },
}

impl TransportError {
    /// Worth retrying: transport errors, timeouts, 429 and 5xx — except a rejected external
    /// message, which is a definitive answer about the message.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Transport { .. } | Self::Timeout { .. } | Self::Lagging { .. } => true,
            Self::Api { status, .. } => {
                *status == 429 || (*status >= 500 && !self.is_message_rejected())
            }
            Self::Decode { .. } => false,
        }
    }

    /// True for the wallet refusing an external message ("cannot apply external message to
    /// current state": wrong seqno, expired, bad signature, not deployed).
    pub fn is_message_rejected(&self) -> bool {
        match self {
            Self::Api { status, error, .. } => {
                *status >= 500
                    && error
                        .to_ascii_lowercase()
                        .contains("cannot apply external message")
            }
            _ => false,
        }
    }

    /// True for a refusal before the wallet code ran ("inbound external message rejected by
    /// account … before smart-contract execution"): the wallet cannot buy the gas to accept the
    /// message (or, undeployed, got no StateInit). Only the balance tells which.
    pub fn is_refused_before_execution(&self) -> bool {
        match self {
            Self::Api { error, .. } if self.is_message_rejected() => error
                .to_ascii_lowercase()
                .contains("before smart-contract execution"),
            _ => false,
        }
    }

    /// True for the wallet's seqno check refusing the message (exit code 33 of V4R2, 133 of
    /// V5R1): the wallet is at another seqno than the message.
    pub fn is_seqno_refusal(&self) -> bool {
        match self {
            Self::Api { error, .. } if self.is_message_rejected() => {
                matches!(refusal_exit_code(error), Some(33 | 133))
            }
            _ => false,
        }
    }

    /// The HTTP status, when the server answered.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The server-requested delay of a 429.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Api { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// The wallet's exit code in a liteserver refusal (`…exitcode=33, steps=…`).
fn refusal_exit_code(error: &str) -> Option<i32> {
    let (_, after) = error.split_once("exitcode=")?;
    let end = after
        .char_indices()
        .find(|(i, c)| !(c.is_ascii_digit() || (*i == 0 && *c == '-')))
        .map_or(after.len(), |(i, _)| i);
    after[..end].parse().ok()
}

/// An account's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AccountState {
    /// Deployed and running.
    Active,
    /// No code yet (may hold a balance).
    Uninitialized,
    /// Frozen for unpaid storage.
    Frozen,
}

impl AccountState {
    /// Parses toncenter's `account_state` / `state` text (`active`, `uninitialized`, `frozen`, `nonexist`).
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "active" => Some(Self::Active),
            "uninitialized" | "uninit" | "nonexist" | "" => Some(Self::Uninitialized),
            "frozen" => Some(Self::Frozen),
            _ => None,
        }
    }
}

/// `getWalletInformation`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalletInformation {
    /// Account state.
    pub state: AccountState,
    /// Balance, nanotons.
    pub balance_nanoton: u128,
    /// The wallet's seqno; `None` when not deployed (treat as 0).
    pub seqno: Option<u32>,
    /// `wallet_type`, e.g. `wallet v5 r1`, when toncenter recognises the code.
    pub wallet_type: Option<String>,
    /// Logical time of the last transaction (0 when none).
    pub last_transaction_lt: u64,
}

/// `getAddressInformation`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressInformation {
    /// Account state.
    pub state: AccountState,
    /// Balance, nanotons.
    pub balance_nanoton: u128,
    /// Account data cell, when deployed.
    pub data: Option<ArcCell>,
    /// Chain time of the state that was read (the block's utime): the clock `valid_until` is
    /// compared against.
    pub sync_utime: u64,
}

/// One stack entry of a get-method result.
#[derive(Debug, Clone, PartialEq)]
pub enum StackValue {
    /// An integer (TVM integers are 257-bit).
    Num(BigInt),
    /// A cell (base64 BoC decoded).
    Cell(ArcCell),
    /// A slice, given as the cell that holds it.
    Slice(ArcCell),
    /// A tuple or list.
    Tuple(Vec<StackValue>),
    /// Null.
    Null,
}

impl StackValue {
    /// The value as `u64`, if it is a non-negative integer that fits.
    pub fn as_u64(&self) -> Option<u64> {
        match self {
            Self::Num(n) => u64::try_from(n).ok(),
            _ => None,
        }
    }

    /// The value as `u128`, if it is a non-negative integer that fits.
    pub fn as_u128(&self) -> Option<u128> {
        match self {
            Self::Num(n) => u128::try_from(n).ok(),
            _ => None,
        }
    }

    /// The value as `i64`, if it is an integer that fits.
    pub fn as_i64(&self) -> Option<i64> {
        match self {
            Self::Num(n) => i64::try_from(n).ok(),
            _ => None,
        }
    }
}

/// `runGetMethod`.
#[derive(Debug, Clone, PartialEq)]
pub struct GetMethodResult {
    /// TVM exit code; 0 and 1 are success.
    pub exit_code: i32,
    /// Result stack, bottom first (the order toncenter lists it).
    pub stack: Vec<StackValue>,
    /// The account's last transaction when the method ran (`last_transaction_id.lt`); 0 when
    /// the endpoint did not say.
    pub last_transaction_lt: u64,
}

impl GetMethodResult {
    /// True for exit codes 0 and 1.
    pub fn succeeded(&self) -> bool {
        self.exit_code == 0 || self.exit_code == 1
    }
}

/// `sendBocReturnHash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentMessage {
    /// Message hash (base64) as toncenter reports it.
    pub hash: String,
    /// Normalized hash (base64), when reported.
    pub hash_norm: Option<String>,
}

/// One item of `getTransactions`, reduced to what confirmation needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction {
    /// Block time.
    pub utime: u64,
    /// Logical time.
    pub lt: u64,
    /// Transaction hash (base64).
    pub hash: String,
    /// Hash of the inbound message body (base64), when there is an inbound message.
    pub in_msg_body_hash: Option<String>,
    /// Inbound message hash (base64), when reported.
    pub in_msg_hash: Option<String>,
    /// Number of outbound messages.
    pub out_msgs: usize,
    /// All fees of the transaction (`fee`), nanotons.
    pub fee_nanoton: u128,
    /// Compute phase exit code, parsed from the transaction BoC (`data`) when it is there.
    pub exit_code: Option<i32>,
    /// Sender of the inbound message (user-friendly or raw), for an internal one.
    pub in_msg_source: Option<String>,
    /// Logical time the inbound message was created at, for an internal one.
    pub in_msg_created_lt: Option<u64>,
    /// The outbound messages.
    pub out_messages: Vec<IndexedMessage>,
}

/// The chain calls delivery makes. Implementations retry transient failures themselves.
pub trait TonTransport: Send + Sync {
    /// State, balance and seqno of a wallet.
    fn wallet_information(
        &self,
        address: &TonAddress,
    ) -> impl Future<Output = Result<WalletInformation, TransportError>> + Send;

    /// State, balance, data and the chain time of the read.
    fn address_information(
        &self,
        address: &TonAddress,
    ) -> impl Future<Output = Result<AddressInformation, TransportError>> + Send;

    /// Runs a get-method with integer arguments.
    fn run_get_method(
        &self,
        address: &TonAddress,
        method: &str,
        args: &[i64],
    ) -> impl Future<Output = Result<GetMethodResult, TransportError>> + Send;

    /// Sends a serialized external message.
    fn send_boc(
        &self,
        boc: &[u8],
    ) -> impl Future<Output = Result<SentMessage, TransportError>> + Send;

    /// The latest `limit` transactions of an account, newest first.
    fn transactions(
        &self,
        address: &TonAddress,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<Transaction>, TransportError>> + Send;

    /// Transactions whose inbound message has this hash (raw or normalized, hex), through the
    /// toncenter v3 index; `None` when the endpoint does not offer it.
    fn transactions_by_message(
        &self,
        msg_hash_hex: &str,
    ) -> impl Future<Output = Result<Option<Vec<IndexedTransaction>>, TransportError>> + Send;

    /// [`TonTransport::address_information`] from every endpoint at once, for decisions that
    /// must not rest on one endpoint (clearing a journal entry, proving expiry). The default
    /// asks the one endpoint there is: with one endpoint its word is all there is, so it is
    /// trusted, and a single endpoint that runs ahead can clear what it likes.
    fn address_views(&self, address: &TonAddress) -> impl Future<Output = ChainViews> + Send {
        async move {
            ChainViews {
                asked: 1,
                answered: self
                    .address_information(address)
                    .await
                    .into_iter()
                    .collect(),
            }
        }
    }
}

/// What each endpoint that answered showed of one account, and how many were asked.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ChainViews {
    /// Endpoints asked.
    pub asked: usize,
    /// One answer per endpoint that answered in the documented shape.
    pub answered: Vec<AddressInformation>,
}

impl ChainViews {
    /// How many endpoints must agree before a view is believed: two when two or more
    /// answered, so one running ahead of the others moves nothing. When only one answers (the
    /// only one configured, or the others down) its word is taken: waiting for a second could
    /// stall the wallet for as long as an endpoint is down, and one endpoint is all a
    /// single-endpoint setup ever trusts.
    pub fn quorum(&self) -> usize {
        self.answered.len().clamp(1, 2)
    }

    /// The latest chain time that [`ChainViews::quorum`] endpoints have reached (the second
    /// highest of several, the only one of one); `None` when too few answered.
    pub fn agreed_chain_time(&self) -> Option<u64> {
        let mut times: Vec<u64> = self.answered.iter().map(|a| a.sync_utime).collect();
        times.sort_unstable_by(|a, b| b.cmp(a));
        times.get(self.quorum().saturating_sub(1)).copied()
    }
}

/// One transaction as the toncenter v3 index describes it: enough to follow a message from the
/// wallet to the oracle and to read the oracle's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedTransaction {
    /// The account, raw form.
    pub account: String,
    /// The transaction hash (base64); empty when the index omits it.
    pub hash: String,
    /// Compute phase exit code (absent when the phase was skipped).
    pub exit_code: Option<i32>,
    /// All fees of the transaction, nanotons.
    pub total_fees_nanoton: u128,
    /// Value of the inbound message, nanotons (none for an external).
    pub in_value_nanoton: Option<u128>,
    /// Its outbound messages, in the order they were sent.
    pub out_msgs: Vec<IndexedMessage>,
}

/// One outbound message of an [`IndexedTransaction`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexedMessage {
    /// Message hash, base64.
    pub hash: String,
    /// Destination account, raw form (empty for an external out).
    pub destination: String,
    /// Value carried, nanotons.
    pub value_nanoton: u128,
    /// Forwarding fee paid for it on top of the transaction's fees, nanotons.
    pub fwd_fee_nanoton: u128,
    /// Logical time it was created at (0 when not reported).
    pub created_lt: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_say_whether_the_wallet_could_pay_or_was_at_another_seqno() {
        let refusal = |text: &str| TransportError::Api {
            method: "sendBocReturnHash",
            status: 500,
            code: Some(500),
            error: format!(
                "LITE_SERVER_UNKNOWN: cannot apply external message to current state : External message was not accepted\n{text}"
            ),
            retry_after: None,
        };
        let poor = refusal(
            "Cannot run message on account: inbound external message rejected by account 0:ab before smart-contract execution",
        );
        assert!(poor.is_refused_before_execution());
        assert!(!poor.is_seqno_refusal());
        let seqno = refusal(
            "Cannot run message on account: inbound external message rejected by transaction 0:ab:\nexitcode=133, steps=10, gas_used=0",
        );
        assert!(seqno.is_seqno_refusal());
        assert!(!seqno.is_refused_before_execution());
        let v4 = refusal("rejected by transaction 0:ab:\nexitcode=33, steps=10");
        assert!(v4.is_seqno_refusal());
        let expired = refusal("rejected by transaction 0:ab:\nexitcode=136, steps=10");
        assert!(!expired.is_seqno_refusal());
        assert_eq!(refusal_exit_code("exitcode=-14, steps=0"), Some(-14));
        assert_eq!(refusal_exit_code("no code"), None);
    }
}

//! What the chain already knows about this wallet's sends: at start (and in every `--once` run)
//! the wallet's recent messages to the oracle and their results size `UPDATE_VALUE_TON=auto`,
//! and its transactions of the last day give the spend rate. Nothing is stored locally: the
//! chain is the record.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use tonlib_core::TonAddress;

use super::Delivery;
use super::cost::unix_now;
use crate::transport::{IndexedMessage, TonTransport, Transaction, TransportError};

/// Transactions listed per account (the most `getTransactions` returns in one call).
const LISTED: u32 = 100;
/// Oracle results looked up: as many as `auto` keeps per op.
const RESULTS: usize = 16;
/// The spend window, seconds.
const DAY_SECS: u64 = 24 * 3600;

/// Why the wallet's history could not be read; `auto` then starts at the maximum.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    /// `getTransactions` failed for an account.
    #[error("cannot list the transactions of {account}: {source}")]
    List {
        /// The account (wallet or oracle), user-friendly.
        account: String,
        /// What the transport said.
        #[source]
        source: TransportError,
    },
}

/// What was learned from the chain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Learned {
    /// Oracle results whose cost now sizes `auto`.
    pub results: usize,
    /// Wallet sends of the last day counted in the spend rate.
    pub sends: usize,
    /// The value `auto` attaches now, nanotons (the fixed value without `auto`).
    pub value_nanoton: u64,
}

impl<T: TonTransport> Delivery<T> {
    /// Reads the wallet's recent messages to `oracle` (all of kind `op`) and their results on
    /// chain: each result's cost refines `auto` as if this process had sent it, and the wallet's
    /// sends of the last day (fees and values, less what the oracle sent back) join the spend
    /// rate. A wallet with no history leaves `auto` at the maximum. Call once before the first
    /// send; a history that cannot be read is an error and leaves both untouched.
    pub async fn learn_from_chain(
        &self,
        oracle: &TonAddress,
        op: &'static str,
    ) -> Result<Learned, HistoryError> {
        let list = |address: TonAddress| async move {
            self.transport
                .transactions(&address, LISTED)
                .await
                .map_err(|source| HistoryError::List {
                    account: address.to_base64_url(),
                    source,
                })
        };
        let wallet_txs = list(self.wallet.address().clone()).await?;
        let oracle_txs = list(oracle.clone()).await?;
        let now = unix_now();

        // Newest first: the wallet's sends (external in) and what each sent to the oracle.
        let sends: Vec<&Transaction> = wallet_txs
            .iter()
            .filter(|t| t.in_msg_source.is_none() && !t.out_messages.is_empty())
            .collect();
        let to_oracle: Vec<&IndexedMessage> = sends
            .iter()
            .flat_map(|t| t.out_messages.iter())
            .filter(|m| same_account(&m.destination, oracle))
            .take(RESULTS)
            .collect();
        let mut results = Vec::new();
        for m in &to_oracle {
            if let Some(found) = self.oracle_result(m, &oracle_txs).await {
                results.push(found);
            }
        }
        // Oldest first, so the newest results are the ones `auto` keeps.
        for (code, fee) in results.iter().rev() {
            self.costs.observe(op, *code, *fee);
        }

        let back_from_oracle = |t: &Transaction| -> u128 {
            t.out_messages
                .iter()
                .filter(|m| self.is_wallet(&m.destination))
                .map(|m| m.value_nanoton)
                .fold(0u128, u128::saturating_add)
        };
        let mut counted = 0;
        for t in sends
            .iter()
            .filter(|t| now.saturating_sub(t.utime) <= DAY_SECS)
        {
            let out: u128 = t
                .out_messages
                .iter()
                .map(|m| m.value_nanoton.saturating_add(m.fwd_fee_nanoton))
                .fold(0u128, u128::saturating_add);
            // What the oracle returned for these messages (change, bounces) was not spent.
            let back: u128 = oracle_txs
                .iter()
                .filter(|o| {
                    t.out_messages.iter().any(|m| {
                        !m.hash.is_empty() && o.in_msg_hash.as_deref() == Some(m.hash.as_str())
                    })
                })
                .map(back_from_oracle)
                .fold(0u128, u128::saturating_add);
            self.costs.spent_at(
                t.utime,
                t.fee_nanoton.saturating_add(out).saturating_sub(back),
            );
            counted += 1;
        }
        // The listing is complete back to its oldest entry (or a day, whichever is nearer).
        if let Some(oldest) = wallet_txs.iter().map(|t| t.utime).filter(|u| *u > 0).min() {
            self.costs
                .history_since(oldest.max(now.saturating_sub(DAY_SECS)));
        }
        let learned = Learned {
            results: results.len(),
            sends: counted,
            value_nanoton: self.value_nanoton_for(&[op]),
        };
        tracing::info!(
            results = learned.results,
            sends = learned.sends,
            value_nanoton = learned.value_nanoton,
            "learned the oracle's cost and the wallet's spend from the chain"
        );
        Ok(learned)
    }

    /// The oracle's result (exit code, fee) for `message`: in the oracle's listing, else through
    /// the v3 index. `None` when not found or unparsed (no exit code, no fee): such a result
    /// says nothing about the cost.
    async fn oracle_result(
        &self,
        message: &IndexedMessage,
        oracle_txs: &[Transaction],
    ) -> Option<(i32, u128)> {
        let listed = oracle_txs.iter().find(|t| {
            (!message.hash.is_empty() && t.in_msg_hash.as_deref() == Some(message.hash.as_str()))
                || (message.created_lt > 0
                    && t.in_msg_created_lt == Some(message.created_lt)
                    && t.in_msg_source
                        .as_deref()
                        .is_some_and(|s| self.is_wallet(s)))
        });
        if let Some(t) = listed {
            return t
                .exit_code
                .filter(|_| t.fee_nanoton > 0)
                .map(|c| (c, t.fee_nanoton));
        }
        let hash = B64.decode(&message.hash).ok().map(hex::encode)?;
        match self.transport.transactions_by_message(&hash).await {
            Ok(Some(txs)) => txs
                .into_iter()
                .next()
                .filter(|t| t.total_fees_nanoton > 0)
                .and_then(|t| t.exit_code.map(|c| (c, t.total_fees_nanoton))),
            Ok(None) => None,
            Err(e) => {
                tracing::debug!(error = %e, "oracle result not found through the index");
                None
            }
        }
    }
}

/// True when `text` (raw or user-friendly) names `account`.
fn same_account(text: &str, account: &TonAddress) -> bool {
    text.parse::<TonAddress>().is_ok_and(|a| &a == account)
}

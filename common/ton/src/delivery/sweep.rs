//! `wallet sweep`: the whole balance of the keeper wallet to its successor, for wallet rotation.
//! Only once nothing is in flight: a journaled message is settled first, and one that may still
//! land stops the sweep.

use serde::Serialize;

use super::{Delivery, DeliveryError, InFlight, Settled};
use crate::external::{OutgoingMessage, SWEEP_MODE, build_external_with_mode};
use crate::journal::JournalEntry;
use crate::summary::{dry_run_note, dry_run_valid_until};
use crate::transport::{AccountState, TonTransport};
use crate::{Network, TonAddress, valid_until_after};

/// What `wallet sweep` did (or, with `--dry-run`, would do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// The keeper wallet, user-friendly.
    pub from: String,
    /// The successor, user-friendly non-bounceable (it may not be deployed yet).
    pub to: String,
    /// Balance before the sweep, nanotons; all of it goes, less the fees.
    pub balance_nanoton: u128,
    /// Seqno the sweep consumes.
    pub seqno: u32,
    /// True for `--dry-run`: signed with a `valid_until` in the past, never sent.
    pub dry_run: bool,
    /// The signed message, base64 (dry runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub boc: Option<String>,
    /// Normalized message hash, hex.
    pub normalized_hash: String,
    /// Balance left on the keeper wallet after confirmation, nanotons.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance_after_nanoton: Option<u128>,
    /// What the operator should know.
    pub notes: Vec<String>,
}

impl<T: TonTransport> Delivery<T> {
    /// Sends the wallet's whole balance to `to` (mode 128 + 2, not bounceable) once no
    /// journaled message can still land; `dry_run` signs a message that cannot land and sends
    /// nothing, not even a journaled message's re-send.
    pub async fn sweep(
        &self,
        to: &TonAddress,
        dry_run: bool,
    ) -> Result<SweepReport, DeliveryError> {
        let mut slot = self.in_flight.lock().await;
        // A dry run sends nothing at all, not even the re-send that settling a journaled
        // message does: it only says what is journaled.
        let mut pending_notes = Vec::new();
        if dry_run {
            for e in self.journal.entries(&self.wallet.address_raw()).await? {
                pending_notes.push(format!(
                    "a journaled message (seqno {}, valid until {}) may still be in flight: the \
                     real sweep settles it first and stops while it can land",
                    e.seqno, e.valid_until
                ));
            }
        } else {
            self.settle_slot(&mut slot, false).await?;
        }
        let w = self.read_wallet().await?;
        let balance = self
            .transport
            .wallet_information(self.wallet.address())
            .await
            .map_err(|source| DeliveryError::Transport {
                stage: "reading the balance",
                source,
            })?
            .balance_nanoton;
        let now = self.chain_time().await?;
        let message = OutgoingMessage {
            to: to.clone(),
            value_nanoton: 0,
            bounce: false,
            body: tonlib_core::cell::Cell::default().to_arc(),
        };
        let valid_until = if dry_run {
            dry_run_valid_until(now)
        } else {
            valid_until_after(now, self.config.ttl)
        };
        let ext = build_external_with_mode(
            &self.wallet,
            w.seqno,
            valid_until,
            w.state != AccountState::Active,
            &[message],
            SWEEP_MODE,
        )?;
        let mut report = SweepReport {
            from: self.wallet.label(),
            to: to.to_base64_url_flags(true, self.wallet.network() == Network::Testnet),
            balance_nanoton: balance,
            seqno: ext.seqno,
            dry_run,
            boc: None,
            normalized_hash: hex::encode(ext.normalized_hash),
            balance_after_nanoton: None,
            notes: pending_notes,
        };
        if dry_run {
            report.boc = Some(ext.boc_base64());
            report.notes.push(dry_run_note(valid_until, now));
            return Ok(report);
        }
        let flight = InFlight {
            ext,
            ops: vec!["sweep"],
            chain_at_build: now,
            built_at: tokio::time::Instant::now(),
            fencing_token: None,
            resumed: false,
        };
        let wallet = self.wallet.address_raw();
        self.journal
            .put(
                &JournalEntry::new(&wallet, &flight.ext, &["sweep"], None, now),
                now,
            )
            .await?;
        *slot = Some(flight.clone());
        let sent = self.transport.send_boc(&flight.ext.boc).await.err();
        match self
            .settle(
                &flight,
                sent,
                super::Poll::JustSent,
                self.config.confirm_timeout,
            )
            .await?
        {
            Settled::Confirmed(_) => {
                self.forget(&flight).await;
                *slot = None;
                report.balance_after_nanoton = self
                    .transport
                    .wallet_information(self.wallet.address())
                    .await
                    .ok()
                    .map(|i| i.balance_nanoton);
                Ok(report)
            }
            Settled::Expired => {
                self.forget(&flight).await;
                *slot = None;
                Err(DeliveryError::Expired {
                    seqno: flight.ext.seqno,
                    attempts: 1,
                })
            }
        }
    }
}

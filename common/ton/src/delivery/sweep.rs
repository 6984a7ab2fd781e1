//! `wallet sweep`: the whole balance of the keeper wallet to its successor, for wallet rotation.
//! Only once nothing is in flight: a journaled message is settled first, and one that may still
//! land stops the sweep. The destination is checked before anything is signed (checksum,
//! workchain, network, not the keeper itself), and a sweep counts as done only when the wallet
//! transaction that consumed its own message is found.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::Serialize;
use tokio::time::Instant;

use super::{Delivery, DeliveryError, Fence, InFlight, Settled};
use crate::external::{OutgoingMessage, SWEEP_MODE, SignedExternal, build_external_with_mode};
use crate::journal::{JournalEntry, JournalError};
use crate::lease::FenceError;
use crate::summary::{dry_run_note, dry_run_valid_until};
use crate::transport::{AccountState, TonTransport};
use crate::wallet::network_name;
use crate::{Network, TonAddress, valid_until_after};

/// Workchains a sweep may go to: the basechain, where keeper wallets live, and the masterchain.
pub const SWEEP_WORKCHAINS: [i32; 2] = [0, -1];

/// Where `wallet sweep` sends the balance, checked by [`SweepDestination::parse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SweepDestination {
    /// The successor wallet.
    pub address: TonAddress,
    /// Whether the internal message is bounceable: the user-friendly form's flag, false for the
    /// raw form.
    pub bounce: bool,
}

/// Why a sweep destination was refused; the text is echoed (it is an address, never a secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SweepAddressError {
    /// Not a 48-character user-friendly address with a valid checksum.
    #[error(
        "{text:?} is not a user-friendly TON address (48 base64 or base64url characters with a valid checksum): {problem}"
    )]
    NotUserFriendly {
        /// What was given.
        text: String,
        /// What the parser found wrong.
        problem: String,
    },
    /// A raw `<workchain>:<hex>` address without the flag that accepts one.
    #[error(
        "{text:?} is a raw address, which carries no checksum: give the user-friendly form, or pass --raw-address to send to it anyway"
    )]
    RawNotAllowed {
        /// What was given.
        text: String,
    },
    /// Meant as raw, but not `<workchain>:<64 hex digits>`.
    #[error("{text:?} is not a raw TON address (<workchain>:<64 hex digits>): {problem}")]
    NotRaw {
        /// What was given.
        text: String,
        /// What the parser found wrong.
        problem: String,
    },
    /// On a workchain the keeper does not send to.
    #[error("{text:?} is on workchain {workchain}: a sweep goes to workchain 0 or -1 only")]
    Workchain {
        /// What was given.
        text: String,
        /// Its workchain.
        workchain: i32,
    },
    /// The address's testnet flag names the other network.
    #[error("{text:?} is a {address_network} address but TON_NETWORK is {network}")]
    Network {
        /// What was given.
        text: String,
        /// The network its flag names.
        address_network: &'static str,
        /// The configured network.
        network: &'static str,
    },
    /// The keeper's own wallet, in whatever form.
    #[error("{text:?} is the keeper wallet itself: sweep to its successor")]
    OwnWallet {
        /// What was given.
        text: String,
    },
}

impl SweepDestination {
    /// Checks `text` as the destination of a sweep from `own` on `network`: user-friendly with
    /// a valid checksum and the network's testnet flag (bounce follows its bounceable flag), or,
    /// only with `allow_raw`, raw `<workchain>:<hex>` (sent non-bounceable); workchain 0 or -1;
    /// never `own`.
    pub fn parse(
        text: &str,
        allow_raw: bool,
        network: Network,
        own: &TonAddress,
    ) -> Result<Self, SweepAddressError> {
        let text = text.trim();
        let owned = || text.to_owned();
        let (address, bounce) = if text.contains(':') {
            if !allow_raw {
                return Err(SweepAddressError::RawNotAllowed { text: owned() });
            }
            let address = parse_raw(text).map_err(|problem| SweepAddressError::NotRaw {
                text: owned(),
                problem,
            })?;
            // No flags in the raw form: non-bounceable, so an undeployed successor keeps it.
            (address, false)
        } else {
            let (address, non_bounceable, testnet) =
                parse_user_friendly(text).map_err(|problem| {
                    SweepAddressError::NotUserFriendly {
                        text: owned(),
                        problem,
                    }
                })?;
            let address_network = if testnet {
                Network::Testnet
            } else {
                Network::Mainnet
            };
            if address_network != network {
                return Err(SweepAddressError::Network {
                    text: owned(),
                    address_network: network_name(address_network),
                    network: network_name(network),
                });
            }
            (address, !non_bounceable)
        };
        if !SWEEP_WORKCHAINS.contains(&address.workchain) {
            return Err(SweepAddressError::Workchain {
                text: owned(),
                workchain: address.workchain,
            });
        }
        if &address == own {
            return Err(SweepAddressError::OwnWallet { text: owned() });
        }
        Ok(Self { address, bounce })
    }
}

/// `<workchain>:<64 hex digits>`, or what is wrong with it.
fn parse_raw(text: &str) -> Result<TonAddress, String> {
    let Some((workchain, hash)) = text.split_once(':') else {
        return Err("no ':' between workchain and hash".to_owned());
    };
    if workchain.parse::<i32>().is_err() {
        return Err(format!("workchain {workchain:?} is not a number"));
    }
    if hash.len() != 64 {
        return Err(format!("the hash has {} characters, not 64", hash.len()));
    }
    if !hash.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err("the hash is not hexadecimal".to_owned());
    }
    TonAddress::from_hex_str(text).map_err(|_| "not a raw address".to_owned())
}

/// A user-friendly address with its non-bounceable and testnet flags, checksum verified (by
/// `tonlib-core`), or what is wrong with it.
fn parse_user_friendly(text: &str) -> Result<(TonAddress, bool, bool), String> {
    if text.len() != 48 {
        return Err(format!("{} characters, not 48", text.len()));
    }
    // Either alphabet: they differ only in `+/` against `-_`.
    let parsed = if text.contains(['-', '_']) {
        TonAddress::from_base64_url_flags(text)
    } else {
        TonAddress::from_base64_std_flags(text)
    };
    parsed.map_err(|e| {
        // The parser's message repeats the address; say only what it found.
        let e = e.to_string();
        if e.contains("CRC") {
            "the checksum does not match (a mistyped character?)".to_owned()
        } else if e.contains("tag byte") {
            "its first byte is not a user-friendly address tag".to_owned()
        } else {
            "not valid base64".to_owned()
        }
    })
}

/// What `wallet sweep` did (or, with `--dry-run`, would do).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    /// The keeper wallet, user-friendly.
    pub from: String,
    /// The successor, user-friendly, with the bounceable flag the sweep was sent with.
    pub to: String,
    /// Whether the sweep's internal message is bounceable.
    pub bounce: bool,
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
    /// Hash of the wallet transaction that consumed the sweep, base64 (once confirmed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub transaction_hash: Option<String>,
    /// Balance left on the keeper wallet after confirmation, nanotons.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance_after_nanoton: Option<u128>,
    /// What the operator should know.
    pub notes: Vec<String>,
}

impl<T: TonTransport> Delivery<T> {
    /// Sends the wallet's whole balance to `to` (mode 128 + 2, bounceable as `to` says) once no
    /// journaled message can still land, asking `fence` right before the signature. Confirmed
    /// only by the wallet transaction carrying this very message: a seqno consumed by another
    /// body is [`DeliveryError::SweepNotConfirmed`]. `dry_run` signs a message that cannot land
    /// and sends and journals nothing, not even a journaled message's re-send.
    pub async fn sweep(
        &self,
        to: &SweepDestination,
        dry_run: bool,
        fence: &impl Fence,
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
        let balance = w.balance_nanoton;
        // A dry run journals nothing; a real sweep replaces another body's journal entry only
        // by a chain time two endpoints agree on (0 when they do not: nothing is replaced).
        let (now, agreed_now) = if dry_run {
            (self.chain_time().await?, None)
        } else {
            self.signing_chain_time().await?
        };
        let message = OutgoingMessage {
            to: to.address.clone(),
            value_nanoton: 0,
            bounce: to.bounce,
            body: tonlib_core::cell::Cell::default().to_arc(),
        };
        let (valid_until, fencing_token) = if dry_run {
            (dry_run_valid_until(now), None)
        } else {
            self.check_journal_at(w.seqno, agreed_now, &mut slot)
                .await?;
            // Last moment before a signature: without the wallet lease nothing is signed.
            (
                valid_until_after(now, self.config.ttl),
                fence.check().await?,
            )
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
            to: to
                .address
                .to_base64_url_flags(!to.bounce, self.wallet.network() == Network::Testnet),
            bounce: to.bounce,
            balance_nanoton: balance,
            seqno: ext.seqno,
            dry_run,
            boc: None,
            normalized_hash: hex::encode(ext.normalized_hash),
            transaction_hash: None,
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
            messages: Vec::new(),
            value_nanoton: 0,
            chain_at_build: now,
            fencing_token,
            resumed: false,
        };
        let wallet = self.wallet.address_raw();
        match self
            .journal
            .put(
                &JournalEntry::new(&wallet, &flight.ext, &["sweep"], fencing_token, now),
                agreed_now.unwrap_or(0),
            )
            .await
        {
            Ok(()) => {}
            Err(JournalError::Fenced { token, .. }) => {
                return Err(DeliveryError::Fenced(FenceError::Superseded { token }));
            }
            Err(e) => return Err(e.into()),
        }
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
                // The seqno moved past the sweep's: whatever consumed it, this body can never
                // land any more, so the journal lets it go either way.
                self.forget(&flight).await;
                *slot = None;
                let Some(hash) = self.own_transaction(&flight.ext).await else {
                    return Err(DeliveryError::SweepNotConfirmed {
                        seqno: flight.ext.seqno,
                    });
                };
                report.transaction_hash = Some(hash);
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

    /// The hash of the keeper wallet's transaction whose inbound message is `ext` itself: by
    /// its normalized hash in the v3 index, else among the latest v2 `getTransactions` by its
    /// message or body hash; polled until the read-back timeout. `None` when neither lists it.
    async fn own_transaction(&self, ext: &SignedExternal) -> Option<String> {
        let deadline = Instant::now() + self.config.readback_timeout;
        let body = B64.encode(ext.body_hash);
        let hashes = [
            B64.encode(ext.message_hash),
            B64.encode(ext.normalized_hash),
        ];
        loop {
            let indexed = match self
                .transport
                .transactions_by_message(&hex::encode(ext.normalized_hash))
                .await
            {
                Ok(Some(txs)) => {
                    if let Some(tx) = txs.iter().find(|t| self.is_wallet(&t.account)) {
                        return Some(tx.hash.clone());
                    }
                    true
                }
                Ok(None) => false,
                Err(e) => {
                    tracing::debug!(error = %e, "transaction index lookup failed");
                    false
                }
            };
            if !indexed {
                match self.transport.transactions(self.wallet.address(), 16).await {
                    Ok(txs) => {
                        if let Some(t) = txs.into_iter().find(|t| {
                            t.in_msg_body_hash.as_deref() == Some(body.as_str())
                                || t.in_msg_hash.as_ref().is_some_and(|h| hashes.contains(h))
                        }) {
                            return Some(t.hash);
                        }
                    }
                    Err(e) => tracing::debug!(error = %e, "getTransactions failed"),
                }
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    seqno = ext.seqno,
                    "the wallet's seqno moved but no transaction of it carries the sweep"
                );
                return None;
            }
            tokio::time::sleep(self.config.poll_interval).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(workchain: i32, byte: u8) -> TonAddress {
        TonAddress::new(workchain, tonlib_core::TonHash::from([byte; 32]))
    }

    #[test]
    fn the_user_friendly_flags_decide_bounce_and_network() {
        let own = address(0, 1);
        let to = address(-1, 2);
        let parse = |text: &str, network| SweepDestination::parse(text, false, network, &own);
        let uq = to.to_base64_url_flags(true, false);
        assert_eq!(
            parse(&uq, Network::Mainnet),
            Ok(SweepDestination {
                address: to.clone(),
                bounce: false
            })
        );
        let kq = to.to_base64_std_flags(false, true);
        assert_eq!(parse(&kq, Network::Testnet).map(|d| d.bounce), Ok(true));
        // The other network, either way round.
        assert_eq!(
            parse(&kq, Network::Mainnet),
            Err(SweepAddressError::Network {
                text: kq.clone(),
                address_network: "testnet",
                network: "mainnet"
            })
        );
        assert!(matches!(
            parse(&uq, Network::Testnet),
            Err(SweepAddressError::Network { .. })
        ));
    }

    #[test]
    fn raw_needs_the_flag_and_goes_non_bounceable() {
        let own = address(0, 1);
        let raw = address(0, 3).to_hex();
        assert_eq!(
            SweepDestination::parse(&raw, false, Network::Mainnet, &own),
            Err(SweepAddressError::RawNotAllowed { text: raw.clone() })
        );
        assert_eq!(
            SweepDestination::parse(&raw, true, Network::Testnet, &own),
            Ok(SweepDestination {
                address: address(0, 3),
                bounce: false
            })
        );
        let upper = raw.to_uppercase();
        assert!(SweepDestination::parse(&upper, true, Network::Mainnet, &own).is_ok());
        for bad in ["0:12", "x:00", &raw.replace('0', "g")] {
            assert!(
                matches!(
                    SweepDestination::parse(bad, true, Network::Mainnet, &own),
                    Err(SweepAddressError::NotRaw { .. })
                ),
                "{bad}"
            );
        }
    }
}

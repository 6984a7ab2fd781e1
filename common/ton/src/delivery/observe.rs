//! The wallet as the endpoints last showed it. One account read of every endpoint gives the
//! seqno, state, balance and chain time at once, so a tick reads its wallet once: the tick's
//! first read serves the balance and runway watch, the chain time of the decisions and the
//! first signature; each confirmation poll's read serves the signature after it.
//!
//! A read stands in for the read before a signature at most once and only while younger than
//! [`OBSERVATION_REUSE`]. A seqno read a little early costs at worst a refusal and a fresh read,
//! never a second body for a live seqno: the journal is still read before every signature.

use std::time::Duration;

use tokio::time::Instant;

use super::{Delivery, DeliveryError, NANO, WalletRead, lock};
use crate::metrics::ChainMetrics;
use crate::transport::{AccountState, AddressInformation, ChainViews, TonTransport};
use crate::wallet::seqno_from_data;
use keeper_runtime::telemetry::metrics::labels;

/// How long a wallet read stands in for the read before the next signature.
pub const OBSERVATION_REUSE: Duration = Duration::from_secs(10);

/// The wallet at one read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalletView {
    /// Account state.
    pub state: AccountState,
    /// Seqno (0 before deployment).
    pub seqno: u32,
    /// Balance, nanotons.
    pub balance_nanoton: u128,
    /// Chain time to build a message at: the agreed one, else the least any endpoint showed.
    pub chain_time: u64,
    /// Chain time enough endpoints agree on; `None` when too few answered.
    pub agreed_chain_time: Option<u64>,
}

/// A view and when it was read.
#[derive(Debug, Clone)]
pub(super) struct Observation {
    view: WalletView,
    at: Instant,
}

impl<T: TonTransport> Delivery<T> {
    /// Reads the wallet from every endpoint once (see the module doc), keeps the view for the
    /// next signature and sets the balance and seqno gauges. When no endpoint's view can be
    /// read, falls back to one endpoint's wallet read and chain time (with retries).
    pub async fn observe_wallet(&self) -> Result<WalletView, DeliveryError> {
        let views = self.transport.address_views(self.wallet.address()).await;
        let view = match self.remember(&views) {
            Some(view) => view,
            None => {
                let w = self.read_wallet().await?;
                let chain_time = self.chain_time().await?;
                let view = WalletView {
                    state: w.state,
                    seqno: w.seqno,
                    balance_nanoton: w.balance_nanoton,
                    chain_time,
                    agreed_chain_time: None,
                };
                self.keep(view.clone());
                view
            }
        };
        if view.state == AccountState::Frozen {
            return Err(DeliveryError::Frozen {
                wallet: self.wallet.label(),
            });
        }
        Ok(view)
    }

    /// The wallet as `views` show it, kept for the next signature; `None` when no endpoint
    /// answered or a deployed wallet's data is missing or unreadable.
    pub(super) fn remember(&self, views: &ChainViews) -> Option<WalletView> {
        let agreed = views.agreed_chain_time();
        let least = views.answered.iter().map(|a| a.sync_utime).min()?;
        let shown = representative(views)?;
        let seqno = match (&shown.state, &shown.data) {
            (AccountState::Active, Some(data)) => {
                seqno_from_data(self.wallet.version(), data).ok()?
            }
            (AccountState::Active, None) => return None,
            _ => 0,
        };
        let view = WalletView {
            state: shown.state,
            seqno,
            balance_nanoton: shown.balance_nanoton,
            chain_time: agreed.unwrap_or(least),
            agreed_chain_time: agreed,
        };
        self.keep(view.clone());
        Some(view)
    }

    fn keep(&self, view: WalletView) {
        if let Some(m) = &self.metrics {
            let l = labels([("wallet", &self.wallet.label())]);
            ChainMetrics::of(m)
                .wallet_seqno
                .get_or_create(&l)
                .set(i64::from(view.seqno));
            ChainMetrics::of(m)
                .wallet_balance
                .get_or_create(&l)
                .set(view.balance_nanoton as f64 / NANO);
        }
        *lock(&self.observed) = Some(Observation {
            view,
            at: Instant::now(),
        });
    }

    /// The last view, once, if younger than [`OBSERVATION_REUSE`]: the wallet read and chain
    /// time for a signature.
    pub(super) fn take_observation(&self) -> Option<(WalletRead, u64, Option<u64>)> {
        let o = lock(&self.observed).take()?;
        if o.at.elapsed() >= OBSERVATION_REUSE {
            return None;
        }
        let v = o.view;
        Some((
            WalletRead {
                state: v.state,
                seqno: v.seqno,
                balance_nanoton: v.balance_nanoton,
            },
            v.chain_time,
            v.agreed_chain_time,
        ))
    }
}

/// The answer whose chain time is the agreed one (the second latest of several, the only one
/// of one): one endpoint running ahead never supplies the seqno a message is signed for.
fn representative(views: &ChainViews) -> Option<&AddressInformation> {
    let mut answered: Vec<&AddressInformation> = views.answered.iter().collect();
    answered.sort_by_key(|a| std::cmp::Reverse(a.sync_utime));
    answered
        .get(views.quorum().saturating_sub(1))
        .or(answered.first())
        .copied()
}

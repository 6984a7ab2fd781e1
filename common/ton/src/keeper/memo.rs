//! An oracle's get-method results as this process last read them, kept while the oracle's
//! account has no new transaction: its state (and so every get-method) cannot change without
//! one, and one account read costs less than a get-method per asset or bridge.
//!
//! Each result is kept the moment it arrives, not when the whole read ends: a tick that the
//! cycle timeout cuts (a shared, rate-limited endpoint can make a start take longer than one
//! interval) leaves what it read to the next tick, which reads only the rest. Each result is
//! kept under the account's last transaction it ran at, which toncenter's `runGetMethod`
//! reports: while nothing or only part is kept (the start, or a read a cut tick left), the
//! get-methods themselves say where they stand and the account is not asked first.

use std::future::Future;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::future::join_all;
use tonlib_core::TonAddress;

use crate::readback::ReadAt;
use crate::report::{DeliveryReport, OracleTransaction, ReadBack};
use crate::transport::{TonTransport, TransportError};

/// One subject's view of the oracle, or why it is unknown.
pub type View<V> = Result<V, String>;

/// A view and the oracle's last transaction lt the get-method ran at (0: not reported).
pub type ViewAt<V> = ReadAt<View<V>>;

/// A get-method's answer as a view: `view` makes its value what the decisions see; a failed
/// read is unknown, at no lt.
pub fn view_at<T, V>(
    read: Result<ReadAt<T>, TransportError>,
    view: impl FnOnce(T) -> V,
) -> ViewAt<V> {
    match read {
        Ok(ReadAt { value, lt }) => ReadAt {
            value: Ok(view(value)),
            lt,
        },
        Err(e) => ReadAt {
            value: Err(e.to_string()),
            lt: 0,
        },
    }
}

#[derive(Debug)]
enum Seen<V> {
    /// Nothing kept.
    Never,
    /// What was read after the account's last transaction was `lt`, per subject (`None`: not
    /// read yet, or the read failed).
    At { lt: u64, views: Vec<Option<V>> },
}

impl<V: Clone> Seen<V> {
    /// Nothing read yet of `subjects` subjects at `lt`.
    fn nothing_at(lt: u64, subjects: usize) -> Self {
        Self::At {
            lt,
            views: vec![None; subjects],
        }
    }
}

/// What the oracle's get-methods returned, by the account's last transaction lt.
#[derive(Debug)]
pub struct ChainMemo<V> {
    seen: Mutex<Seen<V>>,
    /// `--once`: there is no next tick to keep anything for, so the account is not asked.
    one_shot: bool,
    /// False once an endpoint answered a get-method without its lt: from then on the account
    /// is read first, and answers are kept under its lt.
    answers_carry_lt: AtomicBool,
}

impl<V: Clone> ChainMemo<V> {
    /// An empty memo; a `one_shot` run (`--once`) reads the oracle without its account.
    pub fn new(one_shot: bool) -> Self {
        Self {
            seen: Mutex::new(Seen::Never),
            one_shot,
            answers_carry_lt: AtomicBool::new(true),
        }
    }

    fn seen(&self) -> std::sync::MutexGuard<'_, Seen<V>> {
        // Every update is a single assignment, so a poisoned value is still consistent.
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The oracle's views of `subjects` subjects, `read(i)` (concurrently) for those not kept,
    /// each kept as it arrives. When every view is kept, one account read says whether they
    /// still hold: the oracle's last transaction is unchanged. When only part is kept, the
    /// rest is read and each answer kept under the lt it ran at (a newer one starts over). A
    /// view that failed is never kept. With the account unreadable, everything is read and
    /// nothing kept.
    pub async fn read<T, F, Fut>(
        &self,
        transport: &T,
        oracle: &TonAddress,
        subjects: usize,
        read: F,
    ) -> Vec<View<V>>
    where
        T: TonTransport,
        F: Fn(usize) -> Fut,
        Fut: Future<Output = ViewAt<V>>,
    {
        let read = &read;
        let read_all = || join_all((0..subjects).map(|i| async move { read(i).await.value }));
        if self.one_shot {
            return read_all().await;
        }
        let ask_account =
            self.complete_at(subjects).is_some() || !self.answers_carry_lt.load(Ordering::Relaxed);
        let anchor = if ask_account {
            match transport.wallet_information(oracle).await {
                Ok(info) if info.last_transaction_lt > 0 => Some(info.last_transaction_lt),
                Ok(_) => return read_all().await,
                Err(e) => {
                    tracing::debug!(error = %e, "oracle account unreadable; reading the oracle");
                    return read_all().await;
                }
            }
        } else {
            None
        };
        if let Some(lt) = anchor {
            self.start_at(lt, subjects);
        }
        join_all((0..subjects).map(|i| {
            async move {
                if let Some(kept) = self.kept(anchor, i) {
                    return Ok(kept);
                }
                let ReadAt {
                    value: view,
                    lt: ran_at,
                } = read(i).await;
                if ran_at == 0 {
                    self.answers_carry_lt.store(false, Ordering::Relaxed);
                }
                // An answer without its lt ran after the account read, at its lt or later.
                let at = Some(ran_at).filter(|lt| *lt > 0).or(anchor);
                if let (Ok(v), Some(at)) = (&view, at) {
                    self.keep(at, subjects, i, v.clone());
                }
                view
            }
        }))
        .await
    }

    /// The lt every one of `subjects` views is kept at, if all are.
    fn complete_at(&self, subjects: usize) -> Option<u64> {
        match &*self.seen() {
            Seen::At { lt, views }
                if views.len() == subjects && views.iter().all(Option::is_some) =>
            {
                Some(*lt)
            }
            _ => None,
        }
    }

    /// Starts over unless what is kept was read at `lt`.
    fn start_at(&self, lt: u64, subjects: usize) {
        let mut seen = self.seen();
        if !matches!(&*seen, Seen::At { lt: kept, views } if *kept == lt && views.len() == subjects)
        {
            *seen = Seen::nothing_at(lt, subjects);
        }
    }

    /// The view of subject `i` kept at `lt` (at any lt when `None`).
    fn kept(&self, lt: Option<u64>, i: usize) -> Option<V> {
        match &*self.seen() {
            Seen::At { lt: kept, views } if lt.is_none_or(|lt| lt == *kept) => {
                views.get(i).cloned().flatten()
            }
            _ => None,
        }
    }

    /// Keeps subject `i`'s view read at `lt`: beside the others kept at the same lt, alone
    /// when `lt` is newer (the oracle changed: the others no longer hold), not at all when
    /// older (an endpoint behind).
    fn keep(&self, lt: u64, subjects: usize, i: usize, view: V) {
        let mut seen = self.seen();
        let start_over = match &*seen {
            Seen::Never => true,
            Seen::At { lt: kept, views } => *kept < lt || views.len() != subjects,
        };
        if start_over {
            *seen = Seen::nothing_at(lt, subjects);
        }
        if let Seen::At { lt: kept, views } = &mut *seen
            && *kept == lt
            && let Some(slot) = views.get_mut(i)
        {
            *slot = Some(view);
        }
    }

    /// After this process's own batches landed: when the oracle's listing shows that every
    /// transaction since the views were read is the batches' own, the views become what the
    /// batches wrote (`written` maps a landed update to its subject's index and view), at the
    /// oracle's new last transaction. The next tick then finds them without reading the
    /// oracle. Anything else the oracle did in between leaves the views to be read again.
    pub fn landed(
        &self,
        report: &DeliveryReport,
        written: impl Fn(&ReadBack) -> Option<(usize, V)>,
    ) {
        let mut seen = self.seen();
        let Seen::At { lt, views } = &mut *seen else {
            tracing::debug!("nothing kept of the oracle: read again next tick");
            return;
        };
        // Each batch lists the oracle after it landed and marks only its own transactions:
        // a transaction is ours when any batch of the delivery made it.
        let mut listing: Vec<OracleTransaction> = Vec::new();
        for t in report.batches.iter().flat_map(|b| &b.oracle_listing) {
            match listing.iter_mut().find(|seen| seen.lt == t.lt) {
                Some(seen) => seen.ours |= t.ours,
                None => listing.push(*t),
            }
        }
        let Some(last) = only_ours_since(&listing, *lt) else {
            tracing::debug!(
                read_at = *lt,
                listed = ?listing,
                "the oracle's listing does not show only this keeper's batch since the last read: read again next tick"
            );
            return;
        };
        for r in report.read_back.iter().filter(|r| r.landed) {
            if let Some((i, view)) = written(r)
                && let Some(slot) = views.get_mut(i)
            {
                *slot = Some(view);
            }
        }
        *lt = last;
    }
}

/// The last lt of `listing` when it reaches back to `since` and every transaction after it is
/// ours; `None` when the listing does not show that.
fn only_ours_since(listing: &[OracleTransaction], since: u64) -> Option<u64> {
    if since == 0 || !listing.iter().any(|t| t.lt == since) {
        return None;
    }
    let mut newer = listing.iter().filter(|t| t.lt > since).peekable();
    newer.peek()?;
    let mut last = since;
    for t in newer {
        if !t.ours {
            return None;
        }
        last = last.max(t.lt);
    }
    Some(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::BatchReport;

    #[test]
    fn views_are_kept_per_subject_for_their_lt_only() {
        let m: ChainMemo<u32> = ChainMemo::new(false);
        m.start_at(7, 2);
        m.keep(7, 2, 0, 5);
        assert_eq!(m.kept(Some(7), 0), Some(5));
        assert_eq!(m.kept(None, 0), Some(5), "a part read is taken at its lt");
        assert_eq!(m.kept(Some(7), 1), None, "not read yet");
        assert_eq!(m.complete_at(2), None, "one of two read");
        m.keep(6, 2, 1, 9);
        assert_eq!(
            m.kept(Some(7), 1),
            None,
            "read behind the kept lt: not kept"
        );
        m.keep(7, 2, 1, 8);
        assert_eq!(m.complete_at(2), Some(7));
        m.start_at(7, 2);
        assert_eq!(
            m.kept(Some(7), 0),
            Some(5),
            "the same lt keeps what was read"
        );
        m.keep(9, 2, 1, 4);
        assert_eq!(m.kept(None, 0), None, "a newer answer starts over");
        assert_eq!(m.kept(Some(9), 1), Some(4));
        m.start_at(10, 2);
        assert_eq!(m.kept(Some(10), 1), None, "a new transaction starts over");
    }

    #[test]
    fn the_first_answer_starts_the_memo_at_its_lt() {
        let m: ChainMemo<u32> = ChainMemo::new(false);
        assert_eq!(m.complete_at(1), None);
        m.keep(3, 1, 0, 1);
        assert_eq!(m.complete_at(1), Some(3));
    }

    #[test]
    fn what_a_delivery_of_two_batches_wrote_is_kept_at_its_last_transaction() {
        let m: ChainMemo<u128> = ChainMemo::new(false);
        m.start_at(10, 2);
        m.keep(10, 2, 0, 1);
        m.keep(10, 2, 1, 2);
        let batch = |listing: Vec<OracleTransaction>| BatchReport {
            oracle_listing: listing,
            ..BatchReport::default()
        };
        let report = DeliveryReport {
            // The second batch's listing shows the first batch's transaction as not its own.
            batches: vec![
                batch(vec![tx(20, true), tx(10, false)]),
                batch(vec![tx(30, true), tx(20, false), tx(10, false)]),
            ],
            read_back: vec![ReadBack {
                id: 0,
                onchain_value: Some(5),
                landed: true,
                ..ReadBack::default()
            }],
        };
        m.landed(&report, |r| Some((usize::from(r.id), r.onchain_value?)));
        assert_eq!(m.kept(Some(30), 0), Some(5), "written by the delivery");
        assert_eq!(m.kept(Some(30), 1), Some(2), "untouched, still as read");
        assert_eq!(m.kept(Some(10), 0), None);
    }

    fn tx(lt: u64, ours: bool) -> OracleTransaction {
        OracleTransaction { lt, ours }
    }

    #[test]
    fn only_the_batches_own_transactions_since_the_read_keep_the_views() {
        assert_eq!(
            only_ours_since(&[tx(30, true), tx(20, true), tx(10, false)], 10),
            Some(30)
        );
        assert_eq!(
            only_ours_since(&[tx(30, true), tx(20, false), tx(10, false)], 10),
            None,
            "someone else wrote in between"
        );
        assert_eq!(
            only_ours_since(&[tx(30, true), tx(20, true)], 10),
            None,
            "the listing does not reach back to the read"
        );
        assert_eq!(
            only_ours_since(&[tx(10, false)], 10),
            None,
            "nothing of ours landed"
        );
        assert_eq!(only_ours_since(&[tx(0, true)], 0), None);
    }
}

//! An oracle's get-method results as this process last read them, kept while the oracle's
//! account has no new transaction: its state (and so every get-method) cannot change without
//! one, and one account read costs less than a get-method per asset or bridge.

use std::future::Future;
use std::sync::Mutex;

use tonlib_core::TonAddress;

use crate::report::{DeliveryReport, OracleTransaction, ReadBack};
use crate::transport::TonTransport;

/// One subject's view of the oracle, or why it is unknown.
pub type View<V> = Result<V, String>;

#[derive(Debug)]
enum Seen<V> {
    /// Nothing read yet: a one-shot run reads the oracle only, without its account.
    Never,
    /// Read once without the account's last transaction.
    Once,
    /// Every subject read after the account's last transaction was `lt`.
    At { lt: u64, views: Vec<View<V>> },
}

/// What the oracle's get-methods returned, by the account's last transaction lt.
#[derive(Debug)]
pub struct ChainMemo<V> {
    seen: Mutex<Seen<V>>,
}

impl<V> Default for ChainMemo<V> {
    fn default() -> Self {
        Self {
            seen: Mutex::new(Seen::Never),
        }
    }
}

impl<V: Clone> ChainMemo<V> {
    fn seen(&self) -> std::sync::MutexGuard<'_, Seen<V>> {
        // Every update is a single assignment, so a poisoned value is still consistent.
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The oracle's views: what `read` returned last time while `oracle`'s last transaction is
    /// unchanged, else `read` again. The first call reads without asking for the account,
    /// which a one-shot run would not use; a view that failed is never kept.
    pub async fn read<T, F, Fut>(&self, transport: &T, oracle: &TonAddress, read: F) -> Vec<View<V>>
    where
        T: TonTransport,
        F: FnOnce() -> Fut,
        Fut: Future<Output = Vec<View<V>>>,
    {
        let lt = if matches!(*self.seen(), Seen::Never) {
            None
        } else {
            match transport.wallet_information(oracle).await {
                Ok(info) => Some(info.last_transaction_lt),
                Err(e) => {
                    tracing::debug!(error = %e, "oracle account unreadable; reading the oracle");
                    None
                }
            }
        };
        if let Some(views) = lt.and_then(|lt| self.get(lt)) {
            return views;
        }
        let views = read().await;
        self.put(lt, &views);
        views
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
            return;
        };
        let listing: Vec<OracleTransaction> = report
            .batches
            .iter()
            .flat_map(|b| b.oracle_listing.iter().copied())
            .collect();
        let Some(last) = only_ours_since(&listing, *lt) else {
            return;
        };
        for r in report.read_back.iter().filter(|r| r.landed) {
            if let Some((i, view)) = written(r)
                && let Some(slot) = views.get_mut(i)
            {
                *slot = Ok(view);
            }
        }
        *lt = last;
    }

    fn get(&self, lt: u64) -> Option<Vec<View<V>>> {
        match &*self.seen() {
            Seen::At { lt: seen, views } if *seen == lt && lt > 0 => Some(views.clone()),
            _ => None,
        }
    }

    fn put(&self, lt: Option<u64>, views: &[View<V>]) {
        let next = match lt {
            Some(lt) if lt > 0 && views.iter().all(Result::is_ok) => Seen::At {
                lt,
                views: views.to_vec(),
            },
            _ => Seen::Once,
        };
        *self.seen() = next;
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

    #[test]
    fn views_are_kept_for_their_lt_only_and_failures_never() {
        let m: ChainMemo<u32> = ChainMemo::default();
        let ok: Vec<View<u32>> = vec![Ok(5)];
        m.put(None, &ok);
        assert!(matches!(*m.seen(), Seen::Once));
        assert!(m.get(0).is_none());
        m.put(Some(7), &ok);
        assert_eq!(m.get(7), Some(vec![Ok(5)]));
        assert!(m.get(8).is_none());
        m.put(Some(8), &[Ok(1), Err("unreadable".into())]);
        assert!(m.get(8).is_none());
        assert!(matches!(*m.seen(), Seen::Once));
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

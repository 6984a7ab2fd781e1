//! The oracle's prices as this process last read them, kept while the oracle's account has no
//! new transaction: its state (and so `get_price`) cannot change without one, and one
//! account read costs a sixth of reading six assets.

use std::sync::Mutex;

use super::ChainView;

#[derive(Debug, Default)]
enum Seen {
    /// Nothing read yet: a one-shot run reads the prices only, without the account.
    #[default]
    Never,
    /// Read once without the account's last transaction.
    Once,
    /// Every asset read after the account's last transaction was `lt`.
    At { lt: u64, views: Vec<ChainView> },
}

/// What `get_price` returned, by the oracle's last transaction lt.
#[derive(Debug, Default)]
pub(super) struct ChainMemo {
    seen: Mutex<Seen>,
}

impl ChainMemo {
    fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        // Every update is a single assignment, so a poisoned value is still consistent.
        self.seen.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether the account's last transaction is worth reading before the prices: not on the
    /// first read, which a one-shot run never repeats.
    pub(super) fn wants_lt(&self) -> bool {
        !matches!(*self.seen(), Seen::Never)
    }

    /// The views read when the oracle's last transaction was `lt`, if it still is.
    pub(super) fn get(&self, lt: u64) -> Option<Vec<ChainView>> {
        match &*self.seen() {
            Seen::At { lt: seen, views } if *seen == lt && lt > 0 => Some(views.clone()),
            _ => None,
        }
    }

    /// Remembers `views`, read after the account's last transaction was `lt` (unknown: `None`);
    /// a view that failed is never remembered, so the next tick asks again.
    pub(super) fn put(&self, lt: Option<u64>, views: &[ChainView]) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::OnChain;

    #[test]
    fn views_are_kept_for_their_lt_only_and_failures_never() {
        let m = ChainMemo::default();
        assert!(!m.wants_lt());
        let ok: Vec<ChainView> = vec![Ok(Some(OnChain {
            price_micro: 1,
            timestamp: 2,
        }))];
        m.put(None, &ok);
        assert!(m.wants_lt());
        assert!(m.get(0).is_none());
        m.put(Some(7), &ok);
        assert_eq!(m.get(7).map(|v| v.len()), Some(1));
        assert!(m.get(8).is_none());
        m.put(Some(8), &[Ok(None), Err("unreadable".into())]);
        assert!(m.get(8).is_none());
        assert!(m.wants_lt());
    }
}

//! Redundant keepers without paying twice: a keeper with a fallback offset publishes only what
//! the chain still lacks that many seconds after a primary would have published it. In steady
//! state only the primary spends; a dead primary costs at most the offset in freshness.

use std::collections::HashMap;

/// What a fallback keeper decided about one subject (asset, bridge) it would publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate {
    /// Publish: a primary keeper, or the chain still lacks it after the offset.
    Publish,
    /// Wait this many more seconds for a primary to publish it.
    Wait(u64),
}

/// The fallback offset and, per subject, since when this keeper has seen it due against the
/// current on-chain value.
#[derive(Debug, Default)]
pub struct FallbackGate {
    offset_secs: u64,
    due_since: HashMap<String, DueSince>,
}

/// When a subject was first seen due, and the heartbeat deadline of the on-chain value then.
#[derive(Debug, Clone, Copy)]
struct DueSince {
    heartbeat_due: Option<u64>,
    seen: u64,
}

impl FallbackGate {
    /// A gate for `offset_secs` (0: a primary, every call says publish).
    pub fn new(offset_secs: u64) -> Self {
        Self {
            offset_secs,
            due_since: HashMap::new(),
        }
    }

    /// True for a fallback keeper (offset above 0).
    pub fn is_fallback(&self) -> bool {
        self.offset_secs > 0
    }

    /// `subject` is due at chain time `now`. `heartbeat_due` is when a primary's heartbeat made
    /// it due (on-chain timestamp + heartbeat), when that is the cause; otherwise (a deviation,
    /// a change, nothing on chain) it is due since this keeper first saw it so. A new on-chain
    /// value (another `heartbeat_due`) restarts the wait: someone is publishing, so the wait
    /// measures the primary's delay on this value, not how long the subject has stayed due.
    pub fn check(&mut self, subject: &str, heartbeat_due: Option<u64>, now: u64) -> Gate {
        if self.offset_secs == 0 {
            return Gate::Publish;
        }
        let entry = self
            .due_since
            .entry(subject.to_owned())
            .or_insert(DueSince {
                heartbeat_due,
                seen: now,
            });
        if entry.heartbeat_due != heartbeat_due {
            *entry = DueSince {
                heartbeat_due,
                seen: now,
            };
        }
        let seen = entry.seen;
        let due = heartbeat_due.map_or(seen, |h| h.min(seen));
        let at = due.saturating_add(self.offset_secs);
        if now >= at {
            Gate::Publish
        } else {
            Gate::Wait(at - now)
        }
    }

    /// `subject` is not due (the chain has it): the next deviation starts a new wait.
    pub fn settled(&mut self, subject: &str) {
        self.due_since.remove(subject);
    }
}

impl Gate {
    /// The reason a fallback skips, for the tick output.
    pub fn wait_reason(&self, offset_secs: u64) -> Option<String> {
        match self {
            Self::Publish => None,
            Self::Wait(left) => Some(format!(
                "fallback (offset {offset_secs} s): the primary has {left} s left to publish it"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_primary_always_publishes() {
        let mut g = FallbackGate::new(0);
        assert!(!g.is_fallback());
        assert_eq!(g.check("USDT", None, 100), Gate::Publish);
    }

    #[test]
    fn a_fallback_waits_the_offset_after_a_deviation_or_a_heartbeat() {
        let mut g = FallbackGate::new(60);
        assert_eq!(g.check("USDT", None, 1000), Gate::Wait(60));
        assert_eq!(g.check("USDT", None, 1030), Gate::Wait(30));
        assert_eq!(g.check("USDT", None, 1060), Gate::Publish);
        g.settled("USDT");
        assert_eq!(g.check("USDT", None, 2000), Gate::Wait(60), "a new wait");
        g.settled("USDT");
        // The heartbeat fell due at 2900 (a primary would have published then).
        assert_eq!(g.check("USDT", Some(2900), 3000), Gate::Publish);
        g.settled("USDT");
        assert_eq!(g.check("USDT", Some(2990), 3000), Gate::Wait(50));
        g.settled("USDT");
        // A value whose heartbeat fell due at 3100; the primary then publishes one that is due
        // again at once (a short heartbeat): the wait starts over instead of running out.
        assert_eq!(g.check("USDT", Some(3100), 3100), Gate::Wait(60));
        assert_eq!(g.check("USDT", Some(3150), 3160), Gate::Wait(50));
        assert_eq!(g.check("USDT", Some(3150), 3210), Gate::Publish);
        assert_eq!(
            Gate::Wait(50).wait_reason(60).unwrap(),
            "fallback (offset 60 s): the primary has 50 s left to publish it"
        );
    }
}

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
    /// Added to the wait when the offset is no longer than the tick interval: a primary may
    /// publish as late as one interval after a value fell due, and its send needs time to land.
    grace_secs: u64,
    due_since: HashMap<String, DueSince>,
}

/// When a subject was first seen due, against which on-chain value.
#[derive(Debug, Clone, Copy)]
struct DueSince {
    on_chain: Option<(u64, u64)>,
    seen: u64,
}

impl FallbackGate {
    /// A gate for `offset_secs` (0: a primary, every call says publish).
    pub fn new(offset_secs: u64) -> Self {
        Self {
            offset_secs,
            grace_secs: 0,
            due_since: HashMap::new(),
        }
    }

    /// The keeper ticks every `interval_secs`: an offset no longer than that waits one interval
    /// more, so a primary ticking just before this keeper is not raced.
    pub fn with_interval(mut self, interval_secs: u64) -> Self {
        self.grace_secs = if self.offset_secs > 0 && self.offset_secs <= interval_secs {
            interval_secs
        } else {
            0
        };
        self
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
        self.check_value(subject, heartbeat_due.map(|h| (h, 0)), heartbeat_due, now)
    }

    /// Like [`FallbackGate::check`], with the wait restarting whenever `on_chain` (the on-chain
    /// observation time and value) changes rather than when the heartbeat deadline does: a
    /// deadline estimated from the sources' lag moves a little every tick.
    pub fn check_value(
        &mut self,
        subject: &str,
        on_chain: Option<(u64, u64)>,
        heartbeat_due: Option<u64>,
        now: u64,
    ) -> Gate {
        if self.offset_secs == 0 {
            return Gate::Publish;
        }
        let entry = self
            .due_since
            .entry(subject.to_owned())
            .or_insert(DueSince {
                on_chain,
                seen: now,
            });
        if entry.on_chain != on_chain {
            *entry = DueSince {
                on_chain,
                seen: now,
            };
        }
        let seen = entry.seen;
        let due = heartbeat_due.map_or(seen, |h| h.min(seen));
        let at = due
            .saturating_add(self.offset_secs)
            .saturating_add(self.grace_secs);
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
        // A deadline that moves with the sources' lag does not restart the wait; a new value does.
        g.settled("USDT");
        assert_eq!(
            g.check_value("USDT", Some((3000, 1)), Some(3300), 3300),
            Gate::Wait(60)
        );
        assert_eq!(
            g.check_value("USDT", Some((3000, 1)), Some(3302), 3330),
            Gate::Wait(30)
        );
        assert_eq!(
            g.check_value("USDT", Some((3320, 1)), Some(3620), 3340),
            Gate::Wait(60)
        );
        assert_eq!(
            Gate::Wait(50).wait_reason(60).unwrap(),
            "fallback (offset 60 s): the primary has 50 s left to publish it"
        );
    }

    #[test]
    fn an_offset_equal_to_the_interval_waits_one_interval_more() {
        let mut g = FallbackGate::new(10).with_interval(10);
        assert_eq!(
            g.check_value("USDT", Some((100, 1)), Some(200), 200),
            Gate::Wait(20)
        );
        assert_eq!(
            g.check_value("USDT", Some((100, 1)), Some(200), 210),
            Gate::Wait(10)
        );
        assert_eq!(
            g.check_value("USDT", Some((100, 1)), Some(200), 220),
            Gate::Publish
        );
        let mut g = FallbackGate::new(4).with_interval(1);
        assert_eq!(g.check("USDT", Some(200), 200), Gate::Wait(4));
    }
}

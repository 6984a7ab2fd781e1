//! The circuit breaker: a large move goes on chain at once only when enough independent
//! lineages show it; otherwise it waits until it persisted for `confirm_ticks` ticks. A depeg
//! every source shows is published in its first tick; one or two lineages cannot move the
//! oracle far in one step.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::policy::deviation_bps;

/// The breaker's settings for one asset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerRules {
    /// Moves up to this many basis points of the reference pass unchecked.
    pub max_step_bps: u32,
    /// Lineages that confirm a larger move at once.
    pub confirm_lineages: u32,
    /// Consecutive ticks that confirm a larger move otherwise.
    pub confirm_ticks: u32,
    /// Two aggregates within this many basis points are the same move.
    pub same_move_bps: u32,
}

/// What the breaker says about one aggregate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Within `max_step_bps`, or nothing to compare with.
    Pass,
    /// A large move that enough lineages agree on.
    ConfirmedByLineages {
        /// The step, basis points.
        step_bps: u128,
        /// Lineages that agree.
        lineages: usize,
    },
    /// A large move that persisted for `confirm_ticks` ticks.
    ConfirmedByTicks {
        /// The step, basis points.
        step_bps: u128,
        /// Ticks it persisted.
        ticks: u32,
    },
    /// A large move that waits.
    Hold {
        /// The step, basis points.
        step_bps: u128,
        /// Lineages that agree on it.
        lineages: usize,
        /// Lineages needed to publish at once.
        needed: u32,
        /// Ticks it has persisted, this one included.
        tick: u32,
        /// Ticks needed.
        of: u32,
    },
}

impl Verdict {
    /// True when the aggregate may be published.
    pub fn allows(&self) -> bool {
        !matches!(self, Self::Hold { .. })
    }

    /// The words for the tick output and the decision log, e.g.
    /// `held: step 300 bps, 2 of 3 lineages (tick 1 of 2)`.
    pub fn describe(&self) -> Option<String> {
        match self {
            Self::Pass => None,
            Self::ConfirmedByLineages { step_bps, lineages } => Some(format!(
                "step {step_bps} bps confirmed by {lineages} lineages"
            )),
            Self::ConfirmedByTicks { step_bps, ticks } => {
                Some(format!("step {step_bps} bps persisted for {ticks} ticks"))
            }
            Self::Hold {
                step_bps,
                lineages,
                needed,
                tick,
                of,
            } => Some(format!(
                "held: step {step_bps} bps, {lineages} of {needed} lineages (tick {tick} of {of})"
            )),
        }
    }
}

/// A held move: the aggregate that waits, its direction, and the ticks it has persisted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    /// The held aggregate, 6 decimals.
    pub price_micro: u64,
    /// Up from the compared value.
    pub up: bool,
    /// Consecutive ticks so far.
    pub ticks: u32,
}

/// Held moves per asset, across ticks of this process (and restored from the decision log by
/// the next process, so `--once` runs confirm too).
#[derive(Debug, Default)]
pub struct Breaker {
    pending: HashMap<String, Pending>,
}

impl Breaker {
    /// Judges `new_micro` against `reference_micro` (the on-chain value, or this keeper's own
    /// last publication) given the lineages that agree on it.
    pub fn check(
        &mut self,
        asset: &str,
        new_micro: u64,
        reference_micro: Option<u64>,
        lineages: usize,
        rules: BreakerRules,
    ) -> Verdict {
        let Some(reference) = reference_micro.filter(|r| *r > 0) else {
            self.pending.remove(asset);
            return Verdict::Pass;
        };
        let step_bps = deviation_bps(new_micro, reference);
        if step_bps <= u128::from(rules.max_step_bps) {
            self.pending.remove(asset);
            return Verdict::Pass;
        }
        if lineages >= rules.confirm_lineages as usize {
            self.pending.remove(asset);
            return Verdict::ConfirmedByLineages { step_bps, lineages };
        }
        let up = new_micro > reference;
        let ticks = match self.pending.get(asset) {
            Some(p)
                if p.up == up
                    && deviation_bps(new_micro, p.price_micro)
                        <= u128::from(rules.same_move_bps) =>
            {
                p.ticks.saturating_add(1)
            }
            _ => 1,
        };
        if ticks >= rules.confirm_ticks {
            self.pending.remove(asset);
            return Verdict::ConfirmedByTicks { step_bps, ticks };
        }
        self.pending.insert(
            asset.to_owned(),
            Pending {
                price_micro: new_micro,
                up,
                ticks,
            },
        );
        Verdict::Hold {
            step_bps,
            lineages,
            needed: rules.confirm_lineages,
            tick: ticks,
            of: rules.confirm_ticks,
        }
    }

    /// The move held for `asset`, if any.
    pub fn pending(&self, asset: &str) -> Option<Pending> {
        self.pending.get(asset).copied()
    }

    /// Restores a move an earlier process held.
    pub fn restore(&mut self, asset: &str, pending: Pending) {
        self.pending.insert(asset.to_owned(), pending);
    }

    /// Forgets a held move (the asset lost quorum or was forced).
    pub fn clear(&mut self, asset: &str) {
        self.pending.remove(asset);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULES: BreakerRules = BreakerRules {
        max_step_bps: 100,
        confirm_lineages: 3,
        confirm_ticks: 2,
        same_move_bps: 200,
    };

    #[test]
    fn small_moves_and_unknown_references_pass() {
        let mut b = Breaker::default();
        assert_eq!(
            b.check("USDT", 1_010_000, Some(1_000_000), 1, RULES),
            Verdict::Pass
        );
        assert_eq!(b.check("USDT", 2_000_000, None, 1, RULES), Verdict::Pass);
        assert_eq!(b.check("USDT", 2_000_000, Some(0), 1, RULES), Verdict::Pass);
    }

    #[test]
    fn a_move_all_lineages_show_goes_at_once() {
        let mut b = Breaker::default();
        let v = b.check("USDT", 950_000, Some(1_000_000), 3, RULES);
        assert_eq!(
            v,
            Verdict::ConfirmedByLineages {
                step_bps: 500,
                lineages: 3
            }
        );
        assert!(v.allows());
    }

    #[test]
    fn a_move_two_lineages_show_waits_for_confirm_ticks() {
        let mut b = Breaker::default();
        let v = b.check("USDT", 1_030_000, Some(1_000_000), 2, RULES);
        assert!(!v.allows());
        assert_eq!(
            v.describe().unwrap(),
            "held: step 300 bps, 2 of 3 lineages (tick 1 of 2)"
        );
        // Another asset's hold is its own.
        assert!(!b.check("DAI", 970_000, Some(1_000_000), 2, RULES).allows());
        let v = b.check("USDT", 1_031_000, Some(1_000_000), 2, RULES);
        assert_eq!(
            v,
            Verdict::ConfirmedByTicks {
                step_bps: 310,
                ticks: 2
            }
        );
        // Confirmed and forgotten: the next large move starts over.
        assert!(
            !b.check("USDT", 1_060_000, Some(1_000_000), 2, RULES)
                .allows()
        );
    }

    #[test]
    fn a_move_that_reverses_or_changes_starts_over() {
        let mut b = Breaker::default();
        assert!(
            !b.check("USDT", 1_030_000, Some(1_000_000), 1, RULES)
                .allows()
        );
        // Now down: a different move.
        assert!(!b.check("USDT", 970_000, Some(1_000_000), 1, RULES).allows());
        // Up again but far from the held value: different again.
        assert!(
            !b.check("USDT", 1_100_000, Some(1_000_000), 1, RULES)
                .allows()
        );
        // Back within the band: the hold is dropped.
        assert_eq!(
            b.check("USDT", 1_000_500, Some(1_000_000), 1, RULES),
            Verdict::Pass
        );
        assert!(
            !b.check("USDT", 1_100_000, Some(1_000_000), 1, RULES)
                .allows()
        );
        b.clear("USDT");
        assert!(
            !b.check("USDT", 1_100_000, Some(1_000_000), 1, RULES)
                .allows()
        );
        // One confirm tick means no waiting.
        let once = BreakerRules {
            confirm_ticks: 1,
            ..RULES
        };
        assert!(
            b.check("USDC", 1_100_000, Some(1_000_000), 1, once)
                .allows()
        );
    }
}

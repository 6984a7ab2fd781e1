//! When an asset's price goes on-chain.

use serde::Serialize;

pub use crate::records::UpdateReason as Reason;

/// What the oracle holds for an asset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OnChain {
    /// Price with 6 decimals.
    pub price_micro: u64,
    /// Unix seconds of the observation the price came from.
    pub timestamp: u64,
}

/// Publishing thresholds.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    /// Minimum move, in basis points of the on-chain price, that triggers an update.
    pub deviation_bps: u32,
    /// How much newer, seconds, an observation must be than the on-chain one to go out as a
    /// heartbeat update (Pyth's `time_difference`).
    pub heartbeat: u64,
    /// On-chain age, seconds, at which the oracle's value counts as stale (`policy.stale_after`);
    /// 0: none.
    pub max_age_secs: u64,
    /// How long before `max_age_secs` a newer observation goes out anyway, seconds: the tick
    /// interval, so the next tick is not already too late.
    pub lead_secs: u64,
}

/// When the next heartbeat update of an on-chain value is due, and what will make it so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct NextHeartbeat {
    /// Observation time, unix seconds, a new observation must reach (on-chain + heartbeat).
    pub observed_at: u64,
    /// Chain time, unix seconds, at which a newer observation goes out even if it is not
    /// `heartbeat` newer, because the on-chain value nears the oracle's maximum age.
    pub before_max_age_at: Option<u64>,
}

impl Thresholds {
    /// The heartbeat deadlines of `chain`.
    pub fn next_heartbeat(&self, chain: OnChain) -> NextHeartbeat {
        NextHeartbeat {
            observed_at: chain.timestamp.saturating_add(self.heartbeat),
            before_max_age_at: (self.max_age_secs > 0).then(|| {
                chain
                    .timestamp
                    .saturating_add(self.max_age_secs.saturating_sub(self.lead_secs))
            }),
        }
    }
}

/// Decides whether a fresh aggregate observed at `observed_at` (unix seconds) must be published
/// at chain time `now`, and why; `None` means skip. A heartbeat compares observation times, not
/// the clock with the on-chain observation: sources that lag do not make every tick due.
pub fn decide(
    aggregate_micro: u64,
    observed_at: u64,
    on_chain: Option<OnChain>,
    now: u64,
    t: Thresholds,
    force: bool,
) -> Option<Reason> {
    if force {
        return Some(Reason::Forced);
    }
    let Some(chain) = on_chain else {
        return Some(Reason::Initial);
    };
    if chain.price_micro == 0 {
        return Some(Reason::Initial);
    }
    if deviation_bps(aggregate_micro, chain.price_micro) >= u128::from(t.deviation_bps) {
        return Some(Reason::Deviation);
    }
    let next = t.next_heartbeat(chain);
    if observed_at >= next.observed_at {
        return Some(Reason::Heartbeat);
    }
    // Nothing newer: publishing it again would not make the oracle any fresher.
    if observed_at > chain.timestamp && next.before_max_age_at.is_some_and(|at| now >= at) {
        return Some(Reason::Heartbeat);
    }
    None
}

/// |new − old| / old in basis points, rounded down, computed exactly in integers.
pub fn deviation_bps(new: u64, old: u64) -> u128 {
    if old == 0 {
        return u128::MAX;
    }
    let diff = u128::from(new.abs_diff(old));
    diff * 10_000 / u128::from(old)
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Thresholds = Thresholds {
        deviation_bps: 10,
        heartbeat: 240,
        max_age_secs: 0,
        lead_secs: 0,
    };

    fn chain(price_micro: u64, timestamp: u64) -> Option<OnChain> {
        Some(OnChain {
            price_micro,
            timestamp,
        })
    }

    #[test]
    fn unknown_on_chain_value_publishes() {
        assert_eq!(
            decide(1_000_000, 1000, None, 1000, T, false),
            Some(Reason::Initial)
        );
        assert_eq!(
            decide(1_000_000, 1000, chain(0, 990), 1000, T, false),
            Some(Reason::Initial)
        );
    }

    #[test]
    fn inside_band_and_fresh_skips() {
        // 9 bps below the 10 bps threshold.
        assert_eq!(
            decide(1_000_900, 1000, chain(1_000_000, 900), 1000, T, false),
            None
        );
    }

    #[test]
    fn deviation_at_threshold_publishes() {
        assert_eq!(
            decide(1_001_000, 1000, chain(1_000_000, 900), 1000, T, false),
            Some(Reason::Deviation)
        );
        assert_eq!(
            decide(999_000, 1000, chain(1_000_000, 900), 1000, T, false),
            Some(Reason::Deviation)
        );
    }

    #[test]
    fn heartbeat_expiry_publishes() {
        assert_eq!(
            decide(1_000_000, 1000, chain(1_000_000, 760), 1000, T, false),
            Some(Reason::Heartbeat)
        );
        assert_eq!(
            decide(1_000_000, 1000, chain(1_000_000, 761), 1000, T, false),
            None
        );
    }

    #[test]
    fn force_wins() {
        assert_eq!(
            decide(1_000_000, 1000, chain(1_000_000, 999), 1000, T, true),
            Some(Reason::Forced)
        );
    }

    #[test]
    fn heartbeat_follows_the_observation_age_not_the_clock() {
        // Sources lag 100 s behind the clock: an observation at 900 against 760 on chain is
        // only 140 s newer, not due although the clock is 240 s past the on-chain value.
        assert_eq!(
            decide(1_000_000, 900, chain(1_000_000, 760), 1000, T, false),
            None
        );
        assert_eq!(
            decide(1_000_000, 1000, chain(1_000_000, 760), 1100, T, false),
            Some(Reason::Heartbeat)
        );
    }

    #[test]
    fn near_the_maximum_age_only_a_newer_observation_goes_out() {
        let t = Thresholds {
            max_age_secs: 300,
            lead_secs: 60,
            ..T
        };
        // 250 s old on chain (past 300 − 60), an observation 10 s newer exists: publish it.
        assert_eq!(
            decide(1_000_000, 1010, chain(1_000_000, 1000), 1250, t, false),
            Some(Reason::Heartbeat)
        );
        // Nothing newer: nothing to publish, oracle_stale says the rest.
        assert_eq!(
            decide(1_000_000, 1000, chain(1_000_000, 1000), 1250, t, false),
            None
        );
        assert_eq!(
            decide(1_000_000, 1010, chain(1_000_000, 1000), 1200, t, false),
            None
        );
        assert_eq!(
            t.next_heartbeat(OnChain {
                price_micro: 1,
                timestamp: 1000
            }),
            NextHeartbeat {
                observed_at: 1240,
                before_max_age_at: Some(1240)
            }
        );
    }
}

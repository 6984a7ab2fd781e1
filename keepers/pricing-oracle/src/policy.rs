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
    /// Maximum on-chain age, seconds, before a heartbeat update.
    pub heartbeat: u64,
}

/// Decides whether a fresh aggregate must be published, and why; `None` means skip.
pub fn decide(
    aggregate_micro: u64,
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
    if now.saturating_sub(chain.timestamp) >= t.heartbeat {
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
            decide(1_000_000, None, 1000, T, false),
            Some(Reason::Initial)
        );
        assert_eq!(
            decide(1_000_000, chain(0, 990), 1000, T, false),
            Some(Reason::Initial)
        );
    }

    #[test]
    fn inside_band_and_fresh_skips() {
        // 9 bps below the 10 bps threshold.
        assert_eq!(
            decide(1_000_900, chain(1_000_000, 900), 1000, T, false),
            None
        );
    }

    #[test]
    fn deviation_at_threshold_publishes() {
        assert_eq!(
            decide(1_001_000, chain(1_000_000, 900), 1000, T, false),
            Some(Reason::Deviation)
        );
        assert_eq!(
            decide(999_000, chain(1_000_000, 900), 1000, T, false),
            Some(Reason::Deviation)
        );
    }

    #[test]
    fn heartbeat_expiry_publishes() {
        assert_eq!(
            decide(1_000_000, chain(1_000_000, 760), 1000, T, false),
            Some(Reason::Heartbeat)
        );
        assert_eq!(
            decide(1_000_000, chain(1_000_000, 761), 1000, T, false),
            None
        );
    }

    #[test]
    fn force_wins() {
        assert_eq!(
            decide(1_000_000, chain(1_000_000, 999), 1000, T, true),
            Some(Reason::Forced)
        );
    }
}

//! What sending costs: the value `auto` attaches per op (the oracle's observed cost × a safety
//! factor, within bounds), and what the wallet spends, for the spend rate and runway.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

/// Observations kept per op: the value follows the most expensive of the recent ones.
const OBSERVATIONS: usize = 16;
/// Spends older than this leave the spend rate.
const SPEND_WINDOW: Duration = Duration::from_secs(24 * 3600);
/// The shortest span a spend rate is extrapolated from: one send right after start is not a
/// day's worth of sends.
const MIN_RATE_SPAN: Duration = Duration::from_secs(3600);
/// The history a spend rate must rest on before `wallet_runway_low` may fire: the wallet's
/// transactions on chain and this process's own sends together.
pub const RUNWAY_HISTORY_SECS: u64 = 6 * 3600;
/// Sends the spend history must hold before `wallet_runway_low` may fire.
pub const RUNWAY_MIN_SENDS: usize = 3;

/// Unix seconds now, from the local clock.
pub(super) fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Gas a wallet pays to accept one external and run its actions, nanotons: what a V5R1 or
/// V4R2 wallet pays on the basechain, with room, so a batch is not signed on a balance that
/// cannot even be accepted.
pub const EXTERNAL_GAS_ESTIMATE_NANOTON: u128 = 5_000_000;
/// Forwarding fee of one oracle message (signed body in a reference), nanotons, with room: send
/// mode 1 pays it on top of the value.
pub const FORWARD_FEE_ESTIMATE_NANOTON: u128 = 1_500_000;

/// What one external carrying `messages` messages of `value_nanoton` each costs the wallet:
/// the values, their forwarding fees and the gas of accepting it.
pub fn batch_cost_nanoton(value_nanoton: u64, messages: usize) -> u128 {
    let n = u128::try_from(messages).unwrap_or(u128::MAX);
    u128::from(value_nanoton)
        .saturating_add(FORWARD_FEE_ESTIMATE_NANOTON)
        .saturating_mul(n)
        .saturating_add(EXTERNAL_GAS_ESTIMATE_NANOTON)
}

/// `UPDATE_VALUE_TON=auto`: bounds and safety factor of the value attached to each message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutoValue {
    /// Least value per message, nanotons (`ton.min_value_ton`).
    pub min_nanoton: u64,
    /// Most value per message and the value before anything was observed, nanotons
    /// (`ton.max_value_ton`).
    pub max_nanoton: u64,
    /// Multiplier on the observed cost, in thousandths (`ton.value_safety_factor` 2 → 2000).
    pub safety_factor_milli: u64,
}

impl AutoValue {
    /// The value for an op whose oracle transactions recently cost at most `observed`.
    pub fn value_for(&self, observed: Option<u128>) -> u64 {
        let Some(cost) = observed else {
            return self.max_nanoton;
        };
        let scaled = cost.saturating_mul(u128::from(self.safety_factor_milli)) / 1000;
        let scaled = u64::try_from(scaled).unwrap_or(u64::MAX);
        scaled.clamp(self.min_nanoton, self.max_nanoton.max(self.min_nanoton))
    }
}

/// What one op's oracle transactions cost lately.
#[derive(Debug, Default)]
struct OpCost {
    observed: VecDeque<u128>,
    /// The last result ran out of gas: the next send carries the maximum.
    out_of_gas: bool,
}

/// Per-op observed costs and the wallet's spends (unix seconds, nanotons). Shared by every
/// call of one delivery.
#[derive(Debug)]
pub(super) struct Costs {
    ops: Mutex<HashMap<&'static str, OpCost>>,
    spends: Mutex<VecDeque<(u64, u128)>>,
    /// Since when the spends are complete, unix seconds: the process start, or earlier once
    /// the wallet's history was read from the chain.
    since: Mutex<u64>,
}

impl Default for Costs {
    fn default() -> Self {
        Self {
            ops: Mutex::default(),
            spends: Mutex::default(),
            since: Mutex::new(unix_now()),
        }
    }
}

/// What the spend rate rests on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpendRate {
    /// Nanotons per day.
    pub per_day_nanoton: f64,
    /// Seconds of history behind it (at most a day).
    pub history_secs: u64,
    /// Sends within that history.
    pub sends: usize,
}

impl SpendRate {
    /// True once the history is long enough for `wallet_runway_low`: at least
    /// [`RUNWAY_HISTORY_SECS`] and [`RUNWAY_MIN_SENDS`] sends.
    pub fn is_settled(&self) -> bool {
        self.history_secs >= RUNWAY_HISTORY_SECS && self.sends >= RUNWAY_MIN_SENDS
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Costs {
    /// The value per message for a batch of `ops`: the largest any of them needs.
    pub(super) fn value_for(&self, auto: &AutoValue, ops: &[&'static str]) -> u64 {
        let costs = lock(&self.ops);
        ops.iter()
            .map(|op| {
                let observed = costs
                    .get(op)
                    .filter(|c| !c.out_of_gas)
                    .and_then(|c| c.observed.iter().copied().max());
                auto.value_for(observed)
            })
            .max()
            .unwrap_or(auto.max_nanoton)
    }

    /// One oracle transaction of `op`: its cost when it succeeded; running out of gas makes the
    /// next send carry the maximum (its cost says only what the value covered).
    pub(super) fn observe(&self, op: &'static str, exit_code: i32, cost_nanoton: u128) {
        let mut costs = lock(&self.ops);
        let c = costs.entry(op).or_default();
        if is_out_of_gas(exit_code) {
            c.out_of_gas = true;
            c.observed.clear();
        } else if exit_code == 0 {
            c.out_of_gas = false;
            if c.observed.len() == OBSERVATIONS {
                c.observed.pop_front();
            }
            c.observed.push_back(cost_nanoton);
        }
    }

    /// The wallet spent `nanoton` (fees and values, less what came back).
    pub(super) fn spent(&self, nanoton: u128) {
        self.spent_at(unix_now(), nanoton);
    }

    /// The wallet spent `nanoton` at unix time `at` (its own sends, or ones read from chain).
    pub(super) fn spent_at(&self, at: u64, nanoton: u128) {
        let mut spends = lock(&self.spends);
        let now = unix_now();
        while spends
            .front()
            .is_some_and(|(t, _)| now.saturating_sub(*t) > SPEND_WINDOW.as_secs())
        {
            spends.pop_front();
        }
        let i = spends.partition_point(|(t, _)| *t <= at);
        spends.insert(i, (at, nanoton));
    }

    /// The spends are complete since unix time `since` (the wallet's history on chain).
    pub(super) fn history_since(&self, since: u64) {
        let mut s = lock(&self.since);
        *s = (*s).min(since);
    }

    /// Nanotons spent per day over the last 24 h (extrapolated from at least an hour), `None`
    /// before anything was spent.
    pub(super) fn per_day(&self) -> Option<f64> {
        self.rate().map(|r| r.per_day_nanoton)
    }

    /// The spend rate and what it rests on, `None` before anything was spent.
    pub(super) fn rate(&self) -> Option<SpendRate> {
        let spends = lock(&self.spends);
        let now = unix_now();
        let window = SPEND_WINDOW.as_secs();
        let recent: Vec<u128> = spends
            .iter()
            .filter(|(at, _)| now.saturating_sub(*at) <= window)
            .map(|(_, n)| *n)
            .collect();
        if recent.is_empty() {
            return None;
        }
        // Index data is not trusted to stay small: the sum saturates rather than overflow.
        let total = recent.iter().copied().fold(0u128, u128::saturating_add);
        let history_secs = now.saturating_sub(*lock(&self.since)).min(window);
        let span = history_secs.clamp(MIN_RATE_SPAN.as_secs(), window);
        Some(SpendRate {
            per_day_nanoton: total as f64 * window as f64 / span as f64,
            history_secs,
            sends: recent.len(),
        })
    }
}

/// TVM's out-of-gas exit codes: -14 (out of gas) and 13 (its `~` form some tools print).
pub fn is_out_of_gas(exit_code: i32) -> bool {
    exit_code == -14 || exit_code == 13
}

#[cfg(test)]
mod tests {
    use super::*;

    const AUTO: AutoValue = AutoValue {
        min_nanoton: 5_000_000,
        max_nanoton: 50_000_000,
        safety_factor_milli: 2000,
    };

    #[test]
    fn auto_starts_at_the_maximum_follows_the_cost_and_backs_off_after_out_of_gas() {
        let c = Costs::default();
        assert_eq!(c.value_for(&AUTO, &["update_price"]), 50_000_000);
        c.observe("update_price", 0, 4_000_000);
        assert_eq!(c.value_for(&AUTO, &["update_price"]), 8_000_000);
        c.observe("update_price", 0, 1_000_000);
        assert_eq!(
            c.value_for(&AUTO, &["update_price"]),
            8_000_000,
            "the most expensive recent one"
        );
        c.observe("update_price", -14, 8_000_000);
        assert_eq!(c.value_for(&AUTO, &["update_price"]), 50_000_000);
        c.observe("update_price", 0, 1_000_000);
        assert_eq!(
            c.value_for(&AUTO, &["update_price"]),
            5_000_000,
            "at least the minimum"
        );
        c.observe("update_price", 0, 40_000_000);
        assert_eq!(
            c.value_for(&AUTO, &["update_price"]),
            50_000_000,
            "at most the maximum"
        );
        assert_eq!(
            c.value_for(&AUTO, &["update_bridge_status"]),
            50_000_000,
            "ops are observed apart"
        );
    }

    #[test]
    fn a_batch_costs_its_values_forwarding_fees_and_the_gas_of_accepting_it() {
        assert_eq!(
            batch_cost_nanoton(50_000_000, 6),
            6 * 51_500_000 + 5_000_000
        );
        assert_eq!(batch_cost_nanoton(50_000_000, 1), 56_500_000);
    }

    #[test]
    fn the_spend_rate_needs_an_hour_before_it_extrapolates() {
        let c = Costs::default();
        assert_eq!(c.per_day(), None);
        c.spent(1_000_000);
        let per_day = c.per_day().unwrap();
        assert!((per_day - 24_000_000.0).abs() < 1.0, "{per_day}");
        assert!(!c.rate().unwrap().is_settled(), "one send is no history");
    }

    #[test]
    fn a_day_of_history_from_the_chain_gives_the_rate_at_once() {
        let c = Costs::default();
        let now = unix_now();
        c.history_since(now - 24 * 3600);
        for i in 0..360 {
            c.spent_at(now - 24 * 3600 + i * 240, 1_000_000);
        }
        let rate = c.rate().unwrap();
        assert!(rate.is_settled(), "{rate:?}");
        assert!(
            (rate.per_day_nanoton - 360_000_000.0).abs() < 2_000_000.0,
            "{rate:?}"
        );
    }
}

//! The client-side request budget of one TON endpoint, which learns from 429.
//!
//! `max_rps` is what the operator allows; the endpoint's real share may be less (two keepers
//! behind one keyless endpoint each see half of its limit). A 429 halves the rate (not below
//! [`FLOOR_RPS`]) and holds further requests for the `Retry-After` the endpoint gave; every
//! [`RECOVERY_STEP`] without a 429 the rate grows by [`RECOVERY_SHARE`] of `max_rps`, up to
//! `max_rps`. Halving and adding (not multiplying) is what lets keepers sharing an endpoint
//! settle near equal shares without being told them: a multiplicative recovery keeps whatever
//! unequal split the first 429s made, and one keeper starves.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lowest rate a run of 429s brings a budget down to: one request every 10 s still lets a tick
/// read its wallet.
pub const FLOOR_RPS: f64 = 0.1;
/// Quiet time (no 429) after which the rate grows by one [`RECOVERY_SHARE`].
pub const RECOVERY_STEP: Duration = Duration::from_secs(10);
/// Growth per [`RECOVERY_STEP`] without a 429, as a share of `max_rps`: from the floor back to
/// the maximum in under two minutes.
pub const RECOVERY_SHARE: f64 = 0.1;
/// Longest `Retry-After` a budget holds an endpoint for: a hostile header must not park the
/// keeper for hours.
pub const HOLD_CAP: Duration = Duration::from_secs(60);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every update leaves the state consistent, so a poisoned value is still usable.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[derive(Debug)]
struct State {
    rps: f64,
    /// Earliest start of the next request.
    next: Instant,
    /// Start of the current quiet period: the last 429 or the last recovery step.
    quiet_since: Instant,
    /// When the rate was last halved.
    last_cut: Option<Instant>,
}

/// At most `rps` requests per second, queued in arrival order; `rps` falls on a 429 and
/// recovers while the endpoint stays quiet.
#[derive(Debug)]
pub struct Budget {
    max_rps: f64,
    state: Mutex<State>,
}

impl Budget {
    /// A budget of `max_rps` requests per second; 0 means none (nothing to pace or learn).
    pub fn new(max_rps: u32) -> Self {
        let now = Instant::now();
        let max_rps = f64::from(max_rps);
        Self {
            max_rps,
            state: Mutex::new(State {
                rps: max_rps,
                next: now,
                quiet_since: now,
                last_cut: None,
            }),
        }
    }

    /// False when the endpoint has no client-side budget.
    pub fn is_limited(&self) -> bool {
        self.max_rps > 0.0
    }

    /// The rate allowed now, in requests per second (0: no budget).
    pub fn rps(&self) -> f64 {
        self.rps_at(Instant::now())
    }

    fn rps_at(&self, now: Instant) -> f64 {
        if !self.is_limited() {
            return 0.0;
        }
        let mut s = lock(&self.state);
        self.recover(&mut s, now);
        s.rps
    }

    /// Waits for this request's slot.
    pub async fn take(&self) {
        if !self.is_limited() {
            return;
        }
        let wait = {
            let mut s = lock(&self.state);
            let now = Instant::now();
            self.recover(&mut s, now);
            let slot = s.next.max(now);
            s.next = slot + interval(s.rps);
            slot - now
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }

    /// The endpoint answered 429: halve the rate and wait out `retry_after` (or one interval
    /// of the new rate, whichever is longer) before the next request to it.
    pub fn rate_limited(&self, retry_after: Option<Duration>) {
        if !self.is_limited() {
            return;
        }
        let mut s = lock(&self.state);
        let now = Instant::now();
        // Requests already on their way when the first 429 came are refused too: one burst
        // halves the rate once, or a keeper that happened to be refused first would fall to
        // the floor while the other kept its rate.
        let cut_lately = s.last_cut.is_some_and(|at| {
            now.saturating_duration_since(at) < interval(s.rps).saturating_mul(2)
        });
        if !cut_lately {
            s.rps = (s.rps / 2.0).max(FLOOR_RPS).min(self.max_rps);
            s.last_cut = Some(now);
        }
        s.quiet_since = now;
        // A random stretch, so that keepers rejected together do not come back together.
        let spread = 1.0 + rand::random::<f64>() / 2.0;
        let pause = interval(s.rps)
            .mul_f64(spread)
            .max(retry_after.unwrap_or_default())
            .min(HOLD_CAP);
        s.next = s.next.max(now + pause);
    }

    /// Applies the recovery steps that quiet time since the last 429 has earned.
    fn recover(&self, s: &mut State, now: Instant) {
        if s.rps >= self.max_rps {
            s.quiet_since = now;
            return;
        }
        let quiet = now.saturating_duration_since(s.quiet_since);
        let steps = quiet.as_secs() / RECOVERY_STEP.as_secs();
        if steps == 0 {
            return;
        }
        // Beyond 100 steps any rate has long reached the maximum.
        let capped = steps.min(100) as f64;
        s.rps = (s.rps + capped * RECOVERY_SHARE * self.max_rps).min(self.max_rps);
        let earned = RECOVERY_STEP.saturating_mul(u32::try_from(steps).unwrap_or(u32::MAX));
        s.quiet_since = s.quiet_since.checked_add(earned).unwrap_or(now).min(now);
    }
}

fn interval(rps: f64) -> Duration {
    // `rps` is never below FLOOR_RPS here, so the interval stays within 10 s.
    Duration::from_secs_f64(1.0 / rps.max(FLOOR_RPS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_429_halves_down_to_the_floor_and_quiet_time_recovers_to_the_maximum() {
        let b = Budget::new(1);
        assert_eq!(b.rps(), 1.0);
        b.rate_limited(None);
        assert_eq!(b.rps(), 0.5);
        b.rate_limited(None);
        assert_eq!(b.rps(), 0.5, "a burst of 429s halves once");
        for _ in 0..10 {
            lock(&b.state).last_cut = Some(Instant::now() - Duration::from_secs(100));
            b.rate_limited(None);
        }
        assert_eq!(b.rps(), FLOOR_RPS);
        let later = Instant::now() + RECOVERY_STEP + Duration::from_millis(100);
        let grown = b.rps_at(later);
        assert!(
            (grown - (FLOOR_RPS + RECOVERY_SHARE)).abs() < 1e-9,
            "{grown}"
        );
        assert_eq!(b.rps_at(later + RECOVERY_STEP * 1_000_000), 1.0);
    }

    #[test]
    fn retry_after_holds_the_next_request_within_the_cap() {
        let b = Budget::new(1);
        let before = Instant::now();
        b.rate_limited(Some(Duration::from_secs(7)));
        let next = lock(&b.state).next;
        assert!(next >= before + Duration::from_secs(7));
        b.rate_limited(Some(Duration::from_secs(u64::MAX)));
        let next = lock(&b.state).next;
        assert!(next <= Instant::now() + HOLD_CAP);
    }

    #[test]
    fn no_budget_learns_nothing() {
        let b = Budget::new(0);
        b.rate_limited(Some(Duration::from_secs(5)));
        assert_eq!(b.rps(), 0.0);
        assert!(lock(&b.state).next <= Instant::now());
    }
}

//! The client-side request budget of one TON endpoint, which learns from 429.
//!
//! `max_rps` is what the operator allows; the endpoint's real share may be less (two keepers
//! behind one keyless endpoint each see half of its limit). The budget is AIMD, like TCP's
//! congestion window, plus two rules that a token bucket of burst 1 (toncenter without a key)
//! needs:
//!
//! - **Multiplicative decrease**: a 429 halves the rate (not below [`FLOOR_RPS`]), once per
//!   burst of refusals.
//! - **Additive increase**: every [`RECOVERY_STEP`] below `max_rps` the rate grows by
//!   [`RECOVERY_SHARE`] of `max_rps`, up to `max_rps`. The steps count from when the rate fell
//!   below the maximum, and a 429 does not restart them: if every 429 reset a quiet period, a
//!   slow keeper (whose rare requests often meet a fast keeper's) would never grow while the
//!   fast one kept its rate. With growth equal for both and cuts proportional to the rate,
//!   the faster keeper loses more per cut and the two converge to equal shares. Whole steps
//!   keep the rate (and its gauge) steady between them.
//! - **Spacing margin**: requests are spaced [`SPACING_MARGIN`] wider than the rate. A lone
//!   keeper at exactly `max_rps` against a bucket of burst 1 is refused whenever network jitter
//!   brings two requests closer than one interval; the margin absorbs that jitter. It also
//!   leaves a gap after each of a keeper's requests, which is what lets another keeper in.
//! - **Retry when the token is back**: a 429 from a bucket of burst 1 means another client took
//!   the endpoint's token less than one `1 / max_rps` ago. The refused keeper asks again exactly
//!   one such interval after the refusal, when the token has come back and before the other
//!   keeper (spaced by the margin) returns: the other keeper is then the one refused, so the
//!   429 reaches both and both halve. Waiting out its own, now longer, interval instead lands
//!   the refused keeper at an arbitrary point of the other's period, where it is refused again
//!   and again while the other keeps the whole endpoint: one keeper starves at the floor.
//!   Coming back at the same delay each time (no random stretch) also means that, if the
//!   first try misses, each further try lands a little earlier within the other's period
//!   (the other is spaced by the margin, the retries are not) until one gets in.
//!
//! `Retry-After`, when the endpoint gives one, holds requests for at least that long.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lowest rate a run of 429s brings a budget down to: one request every 10 s still lets a tick
/// read its wallet.
pub const FLOOR_RPS: f64 = 0.1;
/// Period of the rate's growth while below `max_rps`.
pub const RECOVERY_STEP: Duration = Duration::from_secs(10);
/// Growth per [`RECOVERY_STEP`], as a share of `max_rps`: from half the maximum back to the
/// maximum in 100 s. Growing is probing: two keepers sharing an endpoint each meet a 429
/// about every `rate / 2 / share * step` seconds (a cut from 0.5 to 0.25 request/s grows back
/// in 50 s), so faster growth means more 429s at the shared equilibrium.
pub const RECOVERY_SHARE: f64 = 0.05;
/// Requests are spaced this much wider than `1 / rps`: 25 % (250 ms at 1 request/s) absorbs
/// network jitter, and is the gap through which a second keeper gets its token. A lone keeper
/// keeps its rate at `max_rps` and starts requests at `max_rps / 1.25`. A narrower gap (10 %)
/// split a saturated endpoint as evenly, but two keepers ticking side by side met in it more
/// often: 6 of their requests were refused in 75 s against 4 with this one.
pub const SPACING_MARGIN: f64 = 1.25;
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
    /// Start of the latest request.
    last_slot: Instant,
    /// Start of the current growth step (kept at now while `rps` is at the maximum).
    grown_at: Instant,
    /// When the rate was last halved.
    last_cut: Option<Instant>,
}

/// At most `rps` requests per second; `rps` falls on a 429 and grows back over time.
#[derive(Debug)]
pub struct Budget {
    max_rps: f64,
    state: Mutex<State>,
}

impl Budget {
    /// A budget of `max_rps` requests per second; 0 means none (nothing to pace or learn).
    pub fn new(max_rps: u32) -> Self {
        Self::new_at(max_rps, Instant::now())
    }

    fn new_at(max_rps: u32, now: Instant) -> Self {
        let max_rps = f64::from(max_rps);
        Self {
            max_rps,
            state: Mutex::new(State {
                rps: max_rps,
                next: now,
                last_slot: now,
                grown_at: now,
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
        self.grow(&mut s, now);
        s.rps
    }

    /// Waits for this request's slot.
    pub async fn take(&self) {
        if !self.is_limited() {
            return;
        }
        while let Some(free_at) = self.try_take_at(Instant::now()) {
            tokio::time::sleep_until(free_at.into()).await;
        }
    }

    /// Starts a request at `now` if the budget allows one, or tells when it will. A waiting
    /// request holds no slot: a keeper abandons the requests of a cycle that timed out, and
    /// slots they had reserved ahead would hold the next cycles back for nothing (at the floor
    /// rate, ten queued requests are 100 s).
    fn try_take_at(&self, now: Instant) -> Option<Instant> {
        let mut s = lock(&self.state);
        self.grow(&mut s, now);
        if now < s.next {
            return Some(s.next);
        }
        s.last_slot = now;
        s.next = now + spacing(s.rps);
        None
    }

    /// The endpoint answered 429: halve the rate, and ask again once the endpoint's token has
    /// come back (or after `retry_after`, whichever is later).
    pub fn rate_limited(&self, retry_after: Option<Duration>) {
        if self.is_limited() {
            self.rate_limited_at(Instant::now(), retry_after);
        }
    }

    fn rate_limited_at(&self, now: Instant, retry_after: Option<Duration>) {
        let mut s = lock(&self.state);
        self.grow(&mut s, now);
        // Requests already on their way when the first 429 came are refused too: one burst
        // halves the rate once, or a keeper that happened to be refused first would fall to
        // the floor while the other kept its rate.
        let cut_lately = s
            .last_cut
            .is_some_and(|at| now.saturating_duration_since(at) < interval(s.rps) * 2);
        if !cut_lately {
            s.rps = (s.rps / 2.0).max(FLOOR_RPS).min(self.max_rps);
            s.last_cut = Some(now);
        }
        // One interval of the endpoint's rate after the refusal (or after the latest request
        // started, if that is later): the token is back, and a keeper spaced by the
        // margin is not yet (see the module doc). This may be earlier than the slot the old
        // rate gave: that slot is where the other keeper's requests keep landing.
        let token_back = now.max(s.last_slot) + interval(self.max_rps);
        let held = now + retry_after.unwrap_or_default().min(HOLD_CAP);
        s.next = token_back.max(held);
    }

    /// Applies the growth steps completed since the last one.
    fn grow(&self, s: &mut State, now: Instant) {
        if s.rps >= self.max_rps {
            s.grown_at = now;
            return;
        }
        let steps = now.saturating_duration_since(s.grown_at).as_secs() / RECOVERY_STEP.as_secs();
        if steps == 0 {
            return;
        }
        // Beyond 1 / RECOVERY_SHARE steps any rate has reached the maximum.
        let capped = steps.min(100) as f64;
        s.rps = (s.rps + capped * RECOVERY_SHARE * self.max_rps).min(self.max_rps);
        let done = RECOVERY_STEP.saturating_mul(u32::try_from(steps).unwrap_or(u32::MAX));
        s.grown_at = s.grown_at.checked_add(done).unwrap_or(now).min(now);
    }
}

fn interval(rps: f64) -> Duration {
    // `rps` is never below FLOOR_RPS here, so the interval stays within 10 s.
    Duration::from_secs_f64(1.0 / rps.max(FLOOR_RPS))
}

fn spacing(rps: f64) -> Duration {
    interval(rps).mul_f64(SPACING_MARGIN)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-6
    }

    impl Budget {
        /// When a request asked for at `now` starts, waiting as [`Budget::take`] does.
        fn take_at(&self, mut now: Instant) -> Instant {
            while let Some(free_at) = self.try_take_at(now) {
                now = free_at;
            }
            now
        }
    }

    #[test]
    fn a_waiting_request_holds_no_slot() {
        let t0 = Instant::now();
        let b = Budget::new_at(1, t0);
        assert_eq!(b.try_take_at(t0), None);
        let free_at = t0 + spacing(1.0);
        // Any number of waiters (then dropped) leave the next start where it was.
        for _ in 0..10 {
            assert_eq!(b.try_take_at(t0), Some(free_at));
        }
        assert_eq!(b.try_take_at(free_at), None);
    }

    #[test]
    fn a_429_halves_once_per_burst_down_to_the_floor() {
        let t0 = Instant::now();
        let b = Budget::new_at(1, t0);
        assert_eq!(b.rps_at(t0), 1.0);
        b.rate_limited_at(t0, None);
        assert_eq!(b.rps_at(t0), 0.5);
        b.rate_limited_at(t0 + secs(0.1), None);
        let rps = b.rps_at(t0 + secs(0.1));
        assert!(rps < 0.501, "a burst of 429s halves once: {rps}");
        // The next burst, later than two intervals, halves again.
        b.rate_limited_at(t0 + secs(5.0), None);
        let rps = b.rps_at(t0 + secs(5.0));
        assert!(close(rps, 0.25), "{rps}");
        {
            let mut s = lock(&b.state);
            s.rps = 0.15;
            s.grown_at = t0 + secs(30.0);
        }
        b.rate_limited_at(t0 + secs(30.0), None);
        assert_eq!(b.rps_at(t0 + secs(30.0)), FLOOR_RPS);
    }

    #[test]
    fn the_rate_grows_back_in_steps_that_429s_do_not_restart() {
        let t0 = Instant::now();
        let b = Budget::new_at(2, t0);
        b.rate_limited_at(t0, None);
        assert!(close(b.rps_at(t0 + secs(9.9)), 1.0));
        assert!(close(b.rps_at(t0 + secs(10.0)), 1.1));
        // A cut halves the rate but keeps the steps' clock: the next step is still at 20 s.
        b.rate_limited_at(t0 + secs(15.0), None);
        assert!(close(b.rps_at(t0 + secs(15.0)), 0.55));
        assert!(
            close(b.rps_at(t0 + secs(20.0)), 0.65),
            "{}",
            b.rps_at(t0 + secs(20.0))
        );
        assert_eq!(
            b.rps_at(t0 + secs(1_000.0)),
            2.0,
            "growth stops at the maximum"
        );
    }

    #[test]
    fn requests_are_spaced_by_the_margin_and_a_lone_client_keeps_its_rate() {
        let t0 = Instant::now();
        let b = Budget::new_at(1, t0);
        let mut at = t0;
        for i in 0..100 {
            let slot = b.take_at(at);
            assert_eq!(slot, t0 + spacing(1.0) * i);
            at = slot + secs(0.05);
        }
        assert_eq!(b.rps_at(at), 1.0);
    }

    #[test]
    fn a_refused_client_asks_again_when_the_token_is_back() {
        let t0 = Instant::now();
        let b = Budget::new_at(1, t0);
        let slot = b.take_at(t0);
        // The answer (429) comes 20 ms later; the old rate would have given slot + 1.25 s.
        let refused = slot + secs(0.02);
        b.rate_limited_at(refused, None);
        assert_eq!(b.take_at(refused), refused + secs(1.0));
        // After that retry the halved rate (grown a little since) spaces the requests.
        let after = b.take_at(refused + secs(1.05));
        assert!(after >= refused + secs(1.0) + spacing(0.5) - secs(0.05));
    }

    #[test]
    fn two_clients_behind_one_bucket_of_burst_1_converge_to_equal_shares() {
        // Two clients in tight loops against a bucket of 1 request/s and burst 1, 10 ms each
        // way, each asking again through its budget as soon as it has an answer.
        let t0 = Instant::now();
        let clients = [Budget::new_at(1, t0), Budget::new_at(1, t0)];
        let settled = t0 + secs(30.0);
        let end = t0 + secs(100.0);
        let (mut tokens, mut filled) = (1.0_f64, t0);
        // Each client's next request reaches the endpoint at this time.
        let mut arrives = [0, 1].map(|c| clients[c].take_at(t0) + secs(0.01 + 0.001 * c as f64));
        let mut answers = [0_u32; 2];
        let mut refusals_late = 0;
        loop {
            let c = usize::from(arrives[1] < arrives[0]);
            let arrive = arrives[c];
            if arrive >= end {
                break;
            }
            tokens = (tokens + (arrive - filled).as_secs_f64()).min(1.0);
            filled = arrive;
            let answered = arrive + secs(0.01);
            let late = arrive >= settled;
            if tokens >= 1.0 {
                tokens -= 1.0;
                answers[c] += u32::from(late);
            } else {
                clients[c].rate_limited_at(answered, None);
                refusals_late += u32::from(late);
            }
            arrives[c] = clients[c].take_at(answered) + secs(0.01);
        }
        let total = answers[0] + answers[1];
        // 70 s at up to 1 request/s: over half of it used, split near evenly, few refusals.
        assert!(
            answers.iter().all(|&a| a * 3 >= total) && total >= 35 && refusals_late <= 8,
            "{answers:?}, {refusals_late} refused after settling"
        );
        println!("{answers:?}, {refusals_late} refused after settling");
    }

    #[test]
    fn retry_after_holds_the_next_request_within_the_cap() {
        let t0 = Instant::now();
        let b = Budget::new_at(1, t0);
        b.rate_limited_at(t0, Some(secs(7.0)));
        assert_eq!(b.take_at(t0), t0 + secs(7.0));
        b.rate_limited_at(t0, Some(Duration::from_secs(u64::MAX)));
        assert_eq!(b.take_at(t0), t0 + HOLD_CAP);
    }

    #[test]
    fn no_budget_learns_nothing() {
        let b = Budget::new(0);
        b.rate_limited(Some(Duration::from_secs(5)));
        assert_eq!(b.rps(), 0.0);
        assert!(lock(&b.state).next <= Instant::now());
    }
}

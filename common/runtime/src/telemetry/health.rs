//! Shared liveness/readiness/status state, written by the runner and the keeper, read by the ops
//! server.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

/// Intervals without a completed tick after which `/healthz` fails.
pub const LIVENESS_INTERVALS: u32 = 3;

/// What the last cycle did, as shown by `/status`.
#[derive(Debug, Clone, Serialize)]
pub struct CycleRecord {
    /// Tick number since start (1 is the first).
    pub tick: u64,
    /// `success`, `failure`, `timeout` or `skipped`.
    pub outcome: String,
    /// When the cycle started.
    pub started_at: DateTime<Utc>,
    /// Wall time of the cycle.
    pub duration_seconds: f64,
    /// One-line summary (also the systemd STATUS).
    pub summary: String,
    /// The cycle's full report, when it produced one.
    pub report: Option<Value>,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

/// Answer of the liveness check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// False once no tick completed within `window`.
    pub live: bool,
    /// Time since the last completed tick (or since start, before the first).
    pub since_last_tick: Duration,
    /// How long the loop may go without completing a tick.
    pub window: Duration,
}

#[derive(Debug)]
struct State {
    keeper: String,
    interval: Duration,
    window: Duration,
    last_tick: Instant,
    last_tick_at: Option<DateTime<Utc>>,
    ticks: u64,
    checks: BTreeMap<String, bool>,
    draining: bool,
    last_cycle: Option<CycleRecord>,
    last_success_at: Option<DateTime<Utc>>,
    published: BTreeMap<String, Value>,
    lock_holder: Option<String>,
}

/// Cloneable handle on the process's health state.
#[derive(Debug, Clone)]
pub struct Health {
    state: Arc<Mutex<State>>,
}

impl Health {
    /// New state for `keeper` ticking every `interval`; `required` names the readiness checks
    /// (e.g. `config`, `wallet`, `upstreams`) that must all pass before `/readyz` answers 200.
    pub fn new(keeper: &str, interval: Duration, required: &[&str]) -> Self {
        Self {
            state: Arc::new(Mutex::new(State {
                keeper: keeper.to_owned(),
                interval,
                window: interval * LIVENESS_INTERVALS,
                last_tick: Instant::now(),
                last_tick_at: None,
                ticks: 0,
                checks: required.iter().map(|c| ((*c).to_owned(), false)).collect(),
                draining: false,
                last_cycle: None,
                last_success_at: None,
                published: BTreeMap::new(),
                lock_holder: None,
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves plain data behind; keep serving it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Sets the tick interval and how long the loop may go without completing a tick.
    pub fn set_timing(&self, interval: Duration, liveness_window: Duration) {
        let mut s = self.lock();
        s.interval = interval;
        s.window = liveness_window;
    }

    /// Adds a readiness check that must pass before `/readyz` answers 200.
    pub fn require(&self, check: &str) {
        self.lock().checks.entry(check.to_owned()).or_insert(false);
    }

    /// Marks a readiness check as passed (checks stay passed: readiness is "reached once").
    pub fn mark_ready(&self, check: &str) {
        self.lock().checks.insert(check.to_owned(), true);
    }

    /// Records that the loop completed a tick (whatever the cycle's outcome).
    pub fn tick_completed(&self) {
        let mut s = self.lock();
        s.last_tick = Instant::now();
        s.last_tick_at = Some(Utc::now());
        s.ticks += 1;
    }

    /// Records the last cycle for `/status`.
    pub fn record_cycle(&self, record: CycleRecord) {
        let mut s = self.lock();
        if record.outcome == "success" {
            s.last_success_at = Some(Utc::now());
        }
        s.last_cycle = Some(record);
    }

    /// Sets a published value shown under `published` in `/status` (e.g. the last price of USDT).
    pub fn set_published(&self, key: &str, value: impl Serialize) {
        let value = serde_json::to_value(value).unwrap_or_else(|e| Value::String(e.to_string()));
        self.lock().published.insert(key.to_owned(), value);
    }

    /// Sets who holds the wallet lease (`None` when nobody or unknown).
    pub fn set_lock_holder(&self, holder: Option<String>) {
        self.lock().lock_holder = holder;
    }

    /// Marks the process as stopping: `/readyz` answers 503 from now on.
    pub fn set_draining(&self) {
        self.lock().draining = true;
    }

    /// Whether the loop completed a tick recently enough.
    pub fn liveness(&self) -> Liveness {
        let s = self.lock();
        let since_last_tick = s.last_tick.elapsed();
        Liveness {
            live: since_last_tick <= s.window,
            since_last_tick,
            window: s.window,
        }
    }

    /// The readiness checks that have not passed yet (`draining` while stopping).
    pub fn pending(&self) -> Vec<String> {
        let s = self.lock();
        let mut pending: Vec<String> = s
            .checks
            .iter()
            .filter(|(_, ok)| !**ok)
            .map(|(c, _)| c.clone())
            .collect();
        if s.draining {
            pending.push("draining".to_owned());
        }
        pending
    }

    /// The last cycle recorded, if any.
    pub fn last_cycle(&self) -> Option<CycleRecord> {
        self.lock().last_cycle.clone()
    }

    /// The `/status` document.
    pub fn status(&self) -> Value {
        let live = self.liveness();
        let pending = self.pending();
        let s = self.lock();
        serde_json::json!({
            "keeper": s.keeper,
            "version": env!("CARGO_PKG_VERSION"),
            "live": live.live,
            "ready": pending.is_empty(),
            "pending": pending,
            "interval_seconds": s.interval.as_secs_f64(),
            "ticks": s.ticks,
            "last_tick_at": s.last_tick_at,
            "seconds_since_last_tick": live.since_last_tick.as_secs_f64(),
            "last_success_at": s.last_success_at,
            "last_cycle": s.last_cycle,
            "published": s.published,
            "lock_holder": s.lock_holder,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_needs_every_check_and_drops_when_draining() {
        let h = Health::new("k", Duration::from_secs(60), &["config", "wallet"]);
        assert_eq!(h.pending(), ["config", "wallet"]);
        h.mark_ready("config");
        h.mark_ready("wallet");
        assert!(h.pending().is_empty());
        h.set_draining();
        assert_eq!(h.pending(), ["draining"]);
    }

    #[test]
    fn liveness_window_follows_timing() {
        let h = Health::new("k", Duration::from_secs(60), &[]);
        assert!(h.liveness().live);
        assert_eq!(h.liveness().window, Duration::from_secs(180));
        h.set_timing(Duration::from_millis(1), Duration::ZERO);
        std::thread::sleep(Duration::from_millis(2));
        assert!(!h.liveness().live);
        h.set_timing(Duration::from_secs(1), Duration::from_secs(3));
        h.tick_completed();
        assert!(h.liveness().live);
        assert_eq!(h.status()["ticks"], 1);
    }
}

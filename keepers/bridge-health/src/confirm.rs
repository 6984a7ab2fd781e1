//! Steady verdicts: one heuristic signal (TVL, volume, peg, governor…) cannot flip a bridge
//! offline in a single cycle. A bridge goes offline at once only on an authoritative signal
//! (its own contract says it is paused) or on two independent critical signals; one critical
//! heuristic signal makes it degraded until it persisted for `confirm_ticks` consecutive
//! ticks. Recovery needs the same confirmation. The history lives in PostgreSQL or Redis when
//! configured, so it survives restarts and `--once` runs.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::signals::Verdict;

/// A bridge's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Every signal that was read is healthy.
    Healthy,
    /// Some signal is past its warning threshold; the bridge still works.
    Degraded,
    /// Some signal is past its critical threshold.
    Offline,
    /// No signal could be read.
    Unknown,
}

impl Status {
    /// The lowercase name used in summaries, records and alerts.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Healthy => "healthy",
            Self::Degraded => "degraded",
            Self::Offline => "offline",
            Self::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a bridge's verdicts were over the last ticks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    /// Consecutive ticks each signal has been critical (effective verdict), by signal name.
    #[serde(default)]
    pub critical_ticks: BTreeMap<String, u32>,
    /// The last status decided (never `unknown`).
    #[serde(default)]
    pub status: Option<Status>,
    /// Consecutive ticks the evidence pointed to a better status than `status`.
    #[serde(default)]
    pub better_ticks: u32,
}

/// One signal's effective verdict this tick, for confirmation.
#[derive(Debug, Clone, Copy)]
pub struct Evidence<'a> {
    /// Signal name.
    pub signal: &'a str,
    /// Check kind (`tvl`, `peg`, `evm_call`…).
    pub kind: &'a str,
    /// Its verdict, a held one included; `None` when unknown.
    pub verdict: Option<Verdict>,
}

/// True for a signal that is the bridge's own word (an `eth_call` on its contract, such as
/// TON Bridge's `allowLock()`): it needs no confirmation.
pub fn is_authoritative(kind: &str) -> bool {
    kind == "evm_call"
}

/// Signals that read the same upstream are one piece of evidence, not two.
fn evidence_group(kind: &str) -> &str {
    if kind.starts_with("wormhole") {
        "wormhole"
    } else {
        kind
    }
}

fn rank(s: Status) -> u8 {
    match s {
        Status::Healthy => 0,
        Status::Degraded => 1,
        Status::Offline => 2,
        Status::Unknown => 3,
    }
}

/// The confirmed status and, when confirmation changed it, why.
pub fn confirm(
    evidence: &[Evidence<'_>],
    history: &mut History,
    confirm_ticks: u32,
) -> (Status, Option<String>) {
    let needed = confirm_ticks.max(1);
    let mut critical_ticks = BTreeMap::new();
    for e in evidence {
        if e.verdict == Some(Verdict::Critical) {
            let before = history.critical_ticks.get(e.signal).copied().unwrap_or(0);
            critical_ticks.insert(e.signal.to_owned(), before.saturating_add(1));
        }
    }
    history.critical_ticks = critical_ticks;

    let critical: Vec<&Evidence<'_>> = evidence
        .iter()
        .filter(|e| e.verdict == Some(Verdict::Critical))
        .collect();
    let authoritative = critical.iter().find(|e| is_authoritative(e.kind));
    let mut groups: Vec<&str> = critical.iter().map(|e| evidence_group(e.kind)).collect();
    groups.sort_unstable();
    groups.dedup();
    let persisted = critical
        .iter()
        .find(|e| history.critical_ticks.get(e.signal).copied().unwrap_or(0) >= needed);
    let degraded = evidence
        .iter()
        .any(|e| e.verdict == Some(Verdict::Degraded));

    let (raw, mut note) = if let Some(a) = authoritative {
        (
            Status::Offline,
            Some(format!("{} is authoritative: offline at once", a.signal)),
        )
    } else if groups.len() >= 2 {
        (
            Status::Offline,
            Some(format!("{} independent critical signals", groups.len())),
        )
    } else if let Some(p) = persisted {
        let ticks = history.critical_ticks.get(p.signal).copied().unwrap_or(0);
        (
            Status::Offline,
            Some(format!(
                "{} critical for {ticks} consecutive ticks",
                p.signal
            )),
        )
    } else if let Some(c) = critical.first() {
        let ticks = history.critical_ticks.get(c.signal).copied().unwrap_or(0);
        (
            Status::Degraded,
            Some(format!(
                "one heuristic critical signal ({}, tick {ticks} of {needed}): degraded until it persists",
                c.signal
            )),
        )
    } else if degraded {
        (Status::Degraded, None)
    } else {
        (Status::Healthy, None)
    };

    // Better evidence must persist too before the status improves.
    let status = match history.status {
        Some(prev) if rank(raw) < rank(prev) => {
            history.better_ticks = history.better_ticks.saturating_add(1);
            if history.better_ticks >= needed {
                history.better_ticks = 0;
                raw
            } else {
                note = Some(format!(
                    "recovering: {} for {} of {needed} ticks, {prev} until confirmed",
                    raw, history.better_ticks
                ));
                prev
            }
        }
        _ => {
            history.better_ticks = 0;
            raw
        }
    };
    history.status = Some(status);
    (status, note)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev<'a>(signal: &'a str, kind: &'a str, verdict: Verdict) -> Evidence<'a> {
        Evidence {
            signal,
            kind,
            verdict: Some(verdict),
        }
    }

    #[test]
    fn one_heuristic_critical_is_degraded_then_offline_when_it_persists() {
        let mut h = History::default();
        let tick = |h: &mut History| {
            confirm(
                &[
                    ev("tvl:orbit", "tvl", Verdict::Critical),
                    ev("peg:oUSDT", "peg", Verdict::Healthy),
                ],
                h,
                2,
            )
        };
        let (s, note) = tick(&mut h);
        assert_eq!(s, Status::Degraded);
        assert!(note.unwrap().contains("tick 1 of 2"));
        let (s, note) = tick(&mut h);
        assert_eq!(s, Status::Offline);
        assert!(note.unwrap().contains("critical for 2 consecutive ticks"));
        // The history survives a round trip through JSON (PostgreSQL, Redis).
        let text = serde_json::to_string(&h).unwrap();
        let back: History = serde_json::from_str(&text).unwrap();
        assert_eq!(back, h);
    }

    #[test]
    fn two_independent_critical_signals_or_an_authoritative_one_are_offline_at_once() {
        let mut h = History::default();
        let (s, _) = confirm(
            &[
                ev("tvl:orbit", "tvl", Verdict::Critical),
                ev("peg:oUSDT", "peg", Verdict::Critical),
            ],
            &mut h,
            2,
        );
        assert_eq!(s, Status::Offline);
        // Two wormhole signals read one upstream: one piece of evidence.
        let mut h = History::default();
        let (s, _) = confirm(
            &[
                ev(
                    "governor_queue",
                    "wormhole_governor_queue",
                    Verdict::Critical,
                ),
                ev(
                    "governor_limit",
                    "wormhole_governor_limit",
                    Verdict::Critical,
                ),
            ],
            &mut h,
            2,
        );
        assert_eq!(s, Status::Degraded);
        let mut h = History::default();
        let (s, note) = confirm(
            &[ev("evm_call:allowLock", "evm_call", Verdict::Critical)],
            &mut h,
            2,
        );
        assert_eq!(s, Status::Offline);
        assert!(note.unwrap().contains("authoritative"));
    }

    #[test]
    fn recovery_needs_the_same_confirmation() {
        let mut h = History::default();
        let paused = [ev("evm_call:allowLock", "evm_call", Verdict::Critical)];
        let fine = [ev("evm_call:allowLock", "evm_call", Verdict::Healthy)];
        assert_eq!(confirm(&paused, &mut h, 2).0, Status::Offline);
        let (s, note) = confirm(&fine, &mut h, 2);
        assert_eq!(s, Status::Offline);
        assert!(note.unwrap().starts_with("recovering: healthy for 1 of 2"));
        assert_eq!(confirm(&fine, &mut h, 2).0, Status::Healthy);
        // A relapse resets the count.
        assert_eq!(confirm(&paused, &mut h, 2).0, Status::Offline);
        assert_eq!(confirm(&fine, &mut h, 2).0, Status::Offline);
        assert_eq!(confirm(&paused, &mut h, 2).0, Status::Offline);
        assert_eq!(confirm(&fine, &mut h, 2).0, Status::Offline);
        assert_eq!(confirm(&fine, &mut h, 2).0, Status::Healthy);
        // Unknown evidence is neither critical nor healthy; worse news is never delayed.
        let mut h = History::default();
        let unknown = [Evidence {
            signal: "tvl:orbit",
            kind: "tvl",
            verdict: None,
        }];
        assert_eq!(confirm(&unknown, &mut h, 2).0, Status::Healthy);
        let worse = [ev("peg:oUSDT", "peg", Verdict::Degraded)];
        assert_eq!(confirm(&worse, &mut h, 2).0, Status::Degraded);
    }
}

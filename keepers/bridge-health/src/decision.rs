//! From signal reports to a bridge status, whether to publish it, and which alerts to raise.
//!
//! Rules:
//! - an unreadable signal is unknown and never counts as healthy; when every signal of a bridge
//!   is unknown the bridge is unknown: nothing is published for it and an alert is raised;
//! - a signal that turns unreadable keeps its last degraded/critical verdict for
//!   `policy.hold_unknown` seconds, so an upstream outage cannot make a sick bridge look well;
//! - offline needs confirmation (`crate::confirm`): an authoritative signal (the bridge's own
//!   contract says it is paused) or two independent critical signals at once, otherwise one
//!   critical heuristic signal is degraded until it persisted for `confirm_ticks` ticks;
//!   recovery needs the same confirmation; any degraded signal → degraded;
//! - score: the weight-averaged verdict scores (healthy 1, degraded 0.5, critical 0) of the
//!   signals that count, placed in the status's band — healthy 1, degraded [0.25, 0.75),
//!   offline [0, 0.25) — so a dashboard threshold on the score agrees with the status;
//! - `last_seen` moves to the observation time of the newest signal behind the verdict (the
//!   upstream's own time, else its fetch time) whenever the bridge is online or a signal saw it
//!   moving value, never backwards;
//! - publish on status change, or as a heartbeat once the new `last_seen` is at least the
//!   heartbeat newer than the published one: signals that lag do not make every tick due.

use std::collections::HashMap;

use keeper_runtime::alert::{Alert, Severity};
use serde::{Deserialize, Serialize};

use crate::config::BridgeSpec;
// `Status` lives in `confirm`, below this module, which confirms it; its path here stays.
pub use crate::confirm::Status;
use crate::confirm::{self, Evidence, History};
use crate::signals::{SignalReport, Verdict};

/// What the keeper concluded about one bridge this cycle.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BridgeDecision {
    /// On-chain id.
    pub bridge_id: u8,
    /// Short name.
    pub bridge: String,
    /// Status.
    pub status: Status,
    /// 0 (down) to 1 (healthy); 0 when unknown.
    pub score: f64,
    /// What goes on-chain; `None` when unknown (nothing is published).
    pub is_online: Option<bool>,
    /// Last time (unix seconds) the bridge was seen healthy or active.
    pub last_seen: Option<i64>,
    /// Observation time (unix seconds) of the newest signal behind this verdict; `None` when
    /// unknown.
    pub observed_at: Option<i64>,
    /// The signals that decided the status.
    pub deciding: Vec<String>,
    /// One sentence: why this status.
    pub reason: String,
    /// Every signal with its value and verdict.
    pub signals: Vec<SignalReport>,
}

/// The last status this process published for a bridge.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Published {
    /// Status published.
    pub status: Status,
    /// `is_online` published.
    pub is_online: bool,
    /// `last_seen` published.
    pub last_seen: i64,
    /// When it was confirmed, unix seconds.
    pub at: i64,
}

/// What the keeper remembers about a bridge between cycles.
#[derive(Debug, Clone, Default)]
pub struct Memory {
    /// Last time seen healthy or active.
    pub last_seen: Option<i64>,
    /// Last non-healthy verdict per signal and when it was observed.
    pub held: HashMap<String, (Verdict, i64)>,
    /// Last confirmed publication.
    pub published: Option<Published>,
    /// Recent verdicts, for confirmation (persisted when a store is configured).
    pub history: History,
}

/// Decides one bridge's status from its reports, updating its memory.
pub fn decide(
    bridge: &BridgeSpec,
    mut reports: Vec<SignalReport>,
    mem: &mut Memory,
    hold_unknown: u64,
    confirm_ticks: u32,
    now: i64,
) -> BridgeDecision {
    let any_known = reports.iter().any(|r| r.verdict != Verdict::Unknown);
    for r in &mut reports {
        match r.verdict {
            Verdict::Unknown => {
                if let Some((v, at)) = mem.held.get(&r.signal).copied() {
                    if now.saturating_sub(at) <= i64::try_from(hold_unknown).unwrap_or(i64::MAX) {
                        r.held = Some(v);
                    } else {
                        mem.held.remove(&r.signal);
                    }
                }
            }
            Verdict::Healthy => {
                mem.held.remove(&r.signal);
            }
            v => {
                mem.held.insert(r.signal.clone(), (v, now));
            }
        }
    }
    let active = reports.iter().any(|r| r.active);

    if !any_known {
        if active {
            mem.last_seen = Some(now);
        }
        let errors: Vec<String> = reports
            .iter()
            .map(|r| format!("{}: {}", r.signal, r.why))
            .collect();
        return BridgeDecision {
            bridge_id: bridge.id,
            bridge: bridge.name.clone(),
            status: Status::Unknown,
            score: 0.0,
            is_online: None,
            last_seen: mem.last_seen,
            observed_at: None,
            deciding: reports.iter().map(|r| r.signal.clone()).collect(),
            reason: format!("no signal could be read ({})", errors.join("; ")),
            signals: reports,
        };
    }

    let effective = |r: &SignalReport| -> Option<Verdict> {
        match r.verdict {
            Verdict::Unknown => r.held,
            v => Some(v),
        }
    };
    let (mut sum, mut weights) = (0.0, 0.0);
    let mut worst = Verdict::Healthy;
    for r in &reports {
        if let Some(v) = effective(r) {
            if let Some(s) = v.score() {
                sum += s * r.weight;
                weights += r.weight;
            }
            if v.rank() > worst.rank() {
                worst = v;
            }
        }
    }
    let evidence: Vec<Evidence<'_>> = reports
        .iter()
        .map(|r| Evidence {
            signal: &r.signal,
            kind: r.kind,
            verdict: effective(r),
        })
        .collect();
    let (status, confirmation) = confirm::confirm(&evidence, &mut mem.history, confirm_ticks);
    let mean = if weights > 0.0 { sum / weights } else { 0.0 };
    // Degraded means lie in [0.5, 1), offline ones in [0, 1): shift and squeeze into the bands;
    // a status held by confirmation is kept inside its band too.
    let banded = match status {
        Status::Healthy => mean,
        Status::Degraded => (mean - 0.25).clamp(0.25, 0.7499),
        _ => (mean * 0.25).min(0.2499),
    };
    let score = (banded.clamp(0.0, 1.0) * 10_000.0).round() / 10_000.0;
    let unknown = reports
        .iter()
        .filter(|r| r.verdict == Verdict::Unknown)
        .count();
    let (deciding, reason) = if status == Status::Healthy {
        let names: Vec<String> = reports
            .iter()
            .filter(|r| r.verdict == Verdict::Healthy)
            .map(|r| r.signal.clone())
            .collect();
        let reason = format!(
            "{} of {} signals healthy{}",
            names.len(),
            reports.len(),
            if unknown > 0 {
                format!(", {unknown} unknown")
            } else {
                String::new()
            }
        );
        (names, reason)
    } else {
        let decisive: Vec<&SignalReport> = reports
            .iter()
            .filter(|r| effective(r) == Some(worst))
            .collect();
        let reason = decisive
            .iter()
            .map(|r| match r.held {
                Some(h) => format!("{} {h} (held while unreadable: {})", r.signal, r.why),
                None => format!("{} {}: {}", r.signal, r.verdict, r.why),
            })
            .collect::<Vec<_>>()
            .join("; ");
        (decisive.iter().map(|r| r.signal.clone()).collect(), reason)
    };
    let reason = match confirmation {
        Some(note) => format!("{reason}; {note}"),
        None => reason,
    };
    let observed_at = newest_observation(&reports, &deciding);
    if status != Status::Offline || active {
        // The oracle refuses a `last_seen` older than the one it holds.
        mem.last_seen = mem.last_seen.max(observed_at.or(Some(now)));
    }
    BridgeDecision {
        bridge_id: bridge.id,
        bridge: bridge.name.clone(),
        status,
        score,
        is_online: Some(status != Status::Offline),
        last_seen: mem.last_seen,
        observed_at,
        deciding,
        reason,
        signals: reports,
    }
}

/// The newest observation among the `deciding` signals read this tick; when those are all held
/// from earlier ticks, the newest of every signal read this tick.
fn newest_observation(reports: &[SignalReport], deciding: &[String]) -> Option<i64> {
    let read = |r: &&SignalReport| r.verdict != Verdict::Unknown;
    reports
        .iter()
        .filter(read)
        .filter(|r| deciding.contains(&r.signal))
        .filter_map(|r| r.observed_at)
        .max()
        .or_else(|| {
            reports
                .iter()
                .filter(read)
                .filter_map(|r| r.observed_at)
                .max()
        })
}

/// The bridge's state as read back from the oracle (`get_bridge_status`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OnChain {
    /// `is_online`.
    pub is_online: bool,
    /// `last_seen`, unix seconds.
    pub last_seen: i64,
}

/// Why a bridge's status is sent this cycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PublishReason {
    /// Nothing known on-chain or in memory.
    Initial,
    /// Status differs from the last one published (or, before any, from the chain's
    /// `is_online`).
    StatusChange,
    /// The heartbeat elapsed.
    Heartbeat,
    /// Operator asked (`--force`).
    Forced,
}

impl PublishReason {
    /// The snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Initial => "initial",
            Self::StatusChange => "status_change",
            Self::Heartbeat => "heartbeat",
            Self::Forced => "forced",
        }
    }
}

/// What to do with a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send `update_bridge_status`.
    Publish(PublishReason),
    /// Nothing changed and the heartbeat has not elapsed.
    Skip(String),
    /// Unknown status: nothing is published.
    Withhold(String),
}

impl Action {
    /// `publish`, `skip` or `withhold`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Publish(_) => "publish",
            Self::Skip(_) => "skip",
            Self::Withhold(_) => "withhold",
        }
    }

    /// Why.
    pub fn reason(&self) -> String {
        match self {
            Self::Publish(r) => r.as_str().to_owned(),
            Self::Skip(s) | Self::Withhold(s) => s.clone(),
        }
    }
}

/// Publish on status change or heartbeat; never publish an unknown status. A heartbeat is due
/// when the `last_seen` to publish is at least `heartbeat` newer than the published one.
pub fn plan(
    d: &BridgeDecision,
    mem: &Memory,
    onchain: Option<OnChain>,
    heartbeat: u64,
    force: bool,
) -> Action {
    let is_online = match status_to_publish(d, force) {
        Ok(is_online) => is_online,
        Err(settled) => return settled,
    };
    let hb = i64::try_from(heartbeat).unwrap_or(i64::MAX);
    let seen = d.last_seen.unwrap_or(0);
    if let Some(p) = mem.published {
        // Once we have published, our own record decides: the chain holds the median of every
        // registered keeper and may lawfully disagree with us; chasing it would spend TON on
        // every tick. A lost update is caught by the read-back after each send.
        if p.status != d.status {
            return Action::Publish(PublishReason::StatusChange);
        }
        let due = p.last_seen.saturating_add(hb);
        if seen >= due {
            return Action::Publish(PublishReason::Heartbeat);
        }
        return Action::Skip(format!(
            "{} unchanged; heartbeat once an observation reaches {due} (newest {seen}, {} s short)",
            d.status,
            due - seen
        ));
    }
    from_chain(is_online, seen, onchain, hb)
}

/// A fallback keeper's plan: what the chain lacks, judged against the chain (a primary
/// publishes, not this keeper), except a status this keeper published itself within the
/// heartbeat (the on-chain median may lawfully differ). The caller then waits the offset.
pub fn plan_fallback(
    d: &BridgeDecision,
    mem: &Memory,
    onchain: Option<OnChain>,
    heartbeat: u64,
    now: i64,
    force: bool,
) -> Action {
    let is_online = match status_to_publish(d, force) {
        Ok(is_online) => is_online,
        Err(settled) => return settled,
    };
    let hb = i64::try_from(heartbeat).unwrap_or(i64::MAX);
    if let Some(p) = mem.published
        && p.status == d.status
        && now.saturating_sub(p.at) < hb
    {
        return Action::Skip(format!(
            "fallback: published {} itself {} s ago",
            d.status,
            now.saturating_sub(p.at)
        ));
    }
    from_chain(is_online, d.last_seen.unwrap_or(0), onchain, hb)
}

/// The status a plan weighs, or the action that settles it first: an unknown status is
/// withheld, a forced run publishes.
fn status_to_publish(d: &BridgeDecision, force: bool) -> Result<bool, Action> {
    let Some(is_online) = d.is_online else {
        return Err(Action::Withhold(
            "every signal unknown: nothing to publish".into(),
        ));
    };
    if force {
        return Err(Action::Publish(PublishReason::Forced));
    }
    Ok(is_online)
}

fn from_chain(is_online: bool, seen: i64, onchain: Option<OnChain>, hb: i64) -> Action {
    match onchain {
        None => Action::Publish(PublishReason::Initial),
        Some(oc) if oc.is_online != is_online => Action::Publish(PublishReason::StatusChange),
        Some(oc) if seen >= oc.last_seen.saturating_add(hb) => {
            Action::Publish(PublishReason::Heartbeat)
        }
        Some(oc) => Action::Skip(format!(
            "on-chain is_online={} matches; heartbeat once an observation reaches {} (newest {seen})",
            oc.is_online,
            oc.last_seen.saturating_add(hb)
        )),
    }
}

/// An alert to raise or clear.
#[derive(Debug, Clone, PartialEq)]
pub enum AlertAction {
    /// Raise (or keep firing).
    Fire(Alert),
    /// Clear, if firing.
    Resolve(String),
}

/// Alert key for a degraded bridge.
pub fn degraded_key(bridge: &str) -> String {
    format!("bridge_degraded:{bridge}")
}

/// Alert key for an offline bridge.
pub fn offline_key(bridge: &str) -> String {
    format!("bridge_offline:{bridge}")
}

/// Alert key for a bridge none of whose signals could be read.
pub fn unknown_key(bridge: &str) -> String {
    format!("bridge_unknown:{bridge}")
}

/// The alerts a decision raises and clears. An unknown status clears nothing: not being able to
/// look is not a recovery.
pub fn alerts(bridge: &BridgeSpec, d: &BridgeDecision) -> Vec<AlertAction> {
    let name = &bridge.name;
    let make = |key: String, severity: Severity, summary: String| {
        AlertAction::Fire(
            Alert::new(key, severity, summary)
                .label("bridge", name.clone())
                .label("bridge_id", bridge.id.to_string()),
        )
    };
    match d.status {
        Status::Healthy => vec![
            AlertAction::Resolve(offline_key(name)),
            AlertAction::Resolve(degraded_key(name)),
            AlertAction::Resolve(unknown_key(name)),
        ],
        Status::Degraded => vec![
            make(
                degraded_key(name),
                Severity::Warning,
                format!(
                    "{} degraded (score {:.2}): {}",
                    bridge.display_name, d.score, d.reason
                ),
            ),
            AlertAction::Resolve(offline_key(name)),
            AlertAction::Resolve(unknown_key(name)),
        ],
        Status::Offline => vec![
            make(
                offline_key(name),
                Severity::Critical,
                format!(
                    "{} offline (score {:.2}): {}",
                    bridge.display_name, d.score, d.reason
                ),
            ),
            AlertAction::Resolve(degraded_key(name)),
            AlertAction::Resolve(unknown_key(name)),
        ],
        Status::Unknown => vec![make(
            unknown_key(name),
            Severity::Warning,
            format!("{} status unknown: {}", bridge.display_name, d.reason),
        )],
    }
}

#[cfg(test)]
#[path = "decision_tests.rs"]
mod tests;

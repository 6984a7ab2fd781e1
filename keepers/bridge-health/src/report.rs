//! The cycle summary: what `--output json` prints, `/status` shows and the cycle log line says
//! (`{"outcome", "messages", "boc", "bridges": [...]}`).

use std::fmt::Write as _;

use keeper_runtime::runner::CycleReport;
use keeper_ton::SendSummary;
use serde::Serialize;

use crate::decision::{BridgeDecision, Status};

/// One bridge in the summary: the decision and what was done with it.
#[derive(Debug, Clone, Serialize)]
pub struct BridgeSummary {
    /// The decision (`bridge_id`, `bridge`, `status`, `score`, `is_online`, `last_seen`,
    /// `deciding`, `reason`, `signals`).
    #[serde(flatten)]
    pub decision: BridgeDecision,
    /// `publish`, `skip` or `withhold`.
    pub action: &'static str,
    /// Why (`status_change`, `heartbeat`, "unchanged…", "every signal unknown…").
    pub action_reason: String,
    /// Observation time, unix seconds, a new observation must reach for the next heartbeat
    /// update (this keeper's last published `last_seen`, else the on-chain one, plus the
    /// heartbeat); unknown without either.
    pub next_heartbeat_at: Option<i64>,
}

/// What one cycle did: what was sent (shared with every chain keeper) and every bridge.
#[derive(Debug, Clone, Serialize)]
pub struct CycleSummary {
    /// Outcome, messages, BoC, notes and delivery.
    #[serde(flatten)]
    pub send: SendSummary,
    /// Every configured bridge, published or not.
    pub bridges: Vec<BridgeSummary>,
}

impl CycleSummary {
    /// An empty summary carrying the standing notes.
    pub fn new(dry_run: bool, notes: &[String]) -> Self {
        Self {
            send: SendSummary::new(dry_run, notes),
            bridges: Vec::new(),
        }
    }

    /// Bridges whose status is unknown.
    pub fn unknown(&self) -> Vec<&str> {
        self.bridges
            .iter()
            .filter(|b| b.decision.status == Status::Unknown)
            .map(|b| b.decision.bridge.as_str())
            .collect()
    }

    /// A human-readable rendering for `--once` without `--output json`.
    pub fn render_text(&self) -> String {
        let mut out = self.send.text_header();
        let _ = writeln!(
            out,
            "{:<12} {:>3} {:<9} {:>6} {:<7} {:<9} why",
            "bridge", "id", "status", "score", "online", "action"
        );
        for b in &self.bridges {
            let d = &b.decision;
            let online = match d.is_online {
                Some(true) => "yes",
                Some(false) => "no",
                None => "-",
            };
            let _ = writeln!(
                out,
                "{:<12} {:>3} {:<9} {:>6.3} {:<7} {:<9} {}",
                d.bridge, d.bridge_id, d.status, d.score, online, b.action, d.reason
            );
            for s in &d.signals {
                let _ = writeln!(out, "    {:<28} {:<9} {}", s.signal, s.verdict, s.why);
            }
        }
        for m in &self.send.messages {
            let _ = writeln!(
                out,
                "message: {}",
                serde_json::to_string(m).unwrap_or_default()
            );
        }
        if let Some(boc) = &self.send.boc {
            let _ = writeln!(out, "boc: {boc}");
        }
        out
    }
}

impl CycleReport for CycleSummary {
    fn to_text(&self) -> String {
        self.render_text()
    }

    fn summary(&self) -> String {
        let count = |s: Status| {
            self.bridges
                .iter()
                .filter(|b| b.decision.status == s)
                .count()
        };
        let mut line = format!(
            "{}: {} message(s); healthy {}, degraded {}, offline {}, unknown {}",
            self.send.outcome,
            self.send.messages.len(),
            count(Status::Healthy),
            count(Status::Degraded),
            count(Status::Offline),
            count(Status::Unknown)
        );
        let sick: Vec<String> = self
            .bridges
            .iter()
            .filter(|b| b.decision.status != Status::Healthy)
            .map(|b| format!("{} {}", b.decision.bridge, b.decision.status))
            .collect();
        if !sick.is_empty() {
            let _ = write!(line, " ({})", sick.join(", "));
        }
        line
    }
}

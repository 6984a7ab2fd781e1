//! The cycle summary: what `--output json` prints, `/status` shows and the cycle log line says
//! (`{"outcome", "messages", "boc", "bridges": [...]}`).

use std::fmt::Write as _;

use keeper_common::runner::CycleReport;
use keeper_common::ton::MessageSummary;
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
}

/// What one cycle did.
#[derive(Debug, Clone, Serialize)]
pub struct CycleSummary {
    /// `published`, `nothing_to_publish`, `dry_run`, `standby`, `failed`.
    pub outcome: String,
    /// True for `--dry-run`.
    pub dry_run: bool,
    /// Every `update_bridge_status` sent (or, in a dry run, signed).
    pub messages: Vec<MessageSummary>,
    /// The signed external message, base64 (dry runs).
    pub boc: Option<String>,
    /// External messages built.
    #[serde(skip_serializing_if = "is_zero")]
    pub externals: usize,
    /// Every configured bridge, published or not.
    pub bridges: Vec<BridgeSummary>,
    /// Confirmation and read-back of a real send.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<serde_json::Value>,
    /// Things the operator should know (ephemeral key, placeholder oracle…).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl CycleSummary {
    /// An empty summary.
    pub fn new(dry_run: bool) -> Self {
        Self {
            outcome: String::new(),
            dry_run,
            messages: Vec::new(),
            boc: None,
            externals: 0,
            bridges: Vec::new(),
            delivery: None,
            notes: Vec::new(),
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
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "outcome: {}", self.outcome);
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
        for m in &self.messages {
            let _ = writeln!(
                out,
                "message: {}",
                serde_json::to_string(m).unwrap_or_default()
            );
        }
        if let Some(boc) = &self.boc {
            let _ = writeln!(out, "boc: {boc}");
        }
        for n in &self.notes {
            let _ = writeln!(out, "note: {n}");
        }
        out
    }
}

impl CycleReport for CycleSummary {
    fn summary(&self) -> String {
        let count = |s: Status| {
            self.bridges
                .iter()
                .filter(|b| b.decision.status == s)
                .count()
        };
        let mut line = format!(
            "{}: {} message(s); healthy {}, degraded {}, offline {}, unknown {}",
            self.outcome,
            self.messages.len(),
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

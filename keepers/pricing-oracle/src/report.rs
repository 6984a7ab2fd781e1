//! What a cycle did, as `/status`, `--output json` and human-readable text.

use std::fmt::Write as _;

use keeper_common::aggregate::QuoteSummary;
use keeper_common::runner::CycleReport;
use keeper_common::ton::{SendSummary, SummarySubject};
use serde::Serialize;

use crate::policy::OnChain;

/// What happened to one asset this tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Goes on-chain this tick.
    Publish,
    /// Inside the deviation band and fresh.
    Skip,
    /// Too few sources agree: nothing is published for it.
    NoQuorum,
}

/// The decision for one configured asset, published or not.
#[derive(Debug, Clone, Serialize)]
pub struct AssetDecision {
    /// On-chain asset id.
    pub asset_id: u16,
    /// Symbol.
    pub asset: String,
    /// The aggregate with 6 decimals, when there is one.
    pub price_micro: Option<u64>,
    /// What happens.
    pub action: Action,
    /// Why (`deviation`, `heartbeat`, `forced`, `initial`, or the skip/quorum explanation).
    pub reason: String,
    /// What the oracle held before this tick.
    pub on_chain: Option<OnChain>,
    /// Every source's quote with its fate.
    pub quotes: Vec<QuoteSummary>,
}

/// One tick's summary: what was sent (shared with every chain keeper) and every asset's decision.
#[derive(Debug, Clone, Serialize)]
pub struct CycleSummary {
    /// Outcome, messages, BoC, notes and delivery.
    #[serde(flatten)]
    pub send: SendSummary,
    /// Every configured asset's decision.
    pub assets: Vec<AssetDecision>,
}

impl CycleSummary {
    /// An empty summary carrying the standing notes.
    pub fn new(dry_run: bool, notes: &[String]) -> Self {
        Self {
            send: SendSummary::new(dry_run, notes),
            assets: Vec::new(),
        }
    }

    /// Human-readable rendering for terminals.
    pub fn render_text(&self) -> String {
        let mut out = self.send.text_header();
        let _ = writeln!(
            out,
            "{:<6} {:>3} {:>10} {:<9} reason",
            "asset", "id", "price", "action"
        );
        for a in &self.assets {
            let price = a
                .price_micro
                .map(format_micro)
                .unwrap_or_else(|| "-".into());
            let action = match a.action {
                Action::Publish => "publish",
                Action::Skip => "skip",
                Action::NoQuorum => "no quorum",
            };
            let _ = writeln!(
                out,
                "{:<6} {:>3} {:>10} {:<9} {}",
                a.asset, a.asset_id, price, action, a.reason
            );
            for q in &a.quotes {
                let price = q.price.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
                let fate = match (&q.accepted, &q.why) {
                    (true, _) => "used".to_owned(),
                    (false, Some(why)) => format!("rejected: {why}"),
                    (false, None) => "rejected".to_owned(),
                };
                let _ = writeln!(
                    out,
                    "         {:<10} {:>12}  {fate}",
                    q.source.as_str(),
                    price
                );
            }
        }
        for m in &self.send.messages {
            if let SummarySubject::Price {
                asset,
                asset_id,
                price_micro,
                timestamp,
            } = &m.subject
            {
                let _ = writeln!(
                    out,
                    "message: {} {asset} (id {asset_id}) price_micro={price_micro} timestamp={timestamp} to={} value={} nanoton",
                    m.op, m.to, m.value_nanoton
                );
            }
        }
        if let Some(boc) = &self.send.boc {
            let _ = writeln!(out, "boc: {boc}");
        }
        out
    }
}

/// `999850` → `0.999850`.
pub fn format_micro(micro: u64) -> String {
    format!("{}.{:06}", micro / 1_000_000, micro % 1_000_000)
}

impl CycleReport for CycleSummary {
    fn to_text(&self) -> String {
        self.render_text()
    }

    fn summary(&self) -> String {
        let published = self
            .assets
            .iter()
            .filter(|a| a.action == Action::Publish)
            .count();
        let no_quorum = self
            .assets
            .iter()
            .filter(|a| a.action == Action::NoQuorum)
            .count();
        format!(
            "{}: {published} of {} assets to publish, {no_quorum} without quorum",
            self.send.outcome,
            self.assets.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn micro_prices_print_with_six_decimals() {
        assert_eq!(format_micro(999_850), "0.999850");
        assert_eq!(format_micro(1_000_000), "1.000000");
    }
}

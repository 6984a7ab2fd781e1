//! What a cycle did, as `/status`, `--output json` and human-readable text.

use std::fmt::Write as _;

use keeper_runtime::runner::CycleReport;
use keeper_sources::aggregate::QuoteSummary;
use keeper_ton::{SendSummary, SummarySubject};
use serde::Serialize;

use crate::policy::{NextHeartbeat, OnChain};
use crate::reference::Origin;

/// What happened to one asset this tick.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Goes on-chain this tick.
    Publish,
    /// Inside the deviation band and fresh, or nothing trustworthy to compare with.
    Skip,
    /// A move beyond `max_step_bps` that too few lineages show: waits for confirmation.
    Hold,
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
    /// Why (`deviation`, `heartbeat`, `forced`, `initial`, the hold with its step and
    /// lineages, or the skip/quorum explanation).
    pub reason: String,
    /// The circuit breaker's word on a published move beyond `max_step_bps`.
    pub breaker: Option<String>,
    /// The move held for confirmation, when the action is `hold`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held: Option<crate::breaker::Pending>,
    /// What the oracle held before this tick (or this keeper's own last publication when the
    /// oracle could not be read; see `compared_with`).
    pub on_chain: Option<OnChain>,
    /// Where `on_chain` came from.
    pub compared_with: Origin,
    /// The independent lineages behind the aggregate.
    pub lineages: Vec<String>,
    /// The median observation time of the quotes used, unix seconds.
    pub observed_at: Option<i64>,
    /// The timestamp that goes on chain (the observation time, never past chain time).
    pub timestamp: Option<u64>,
    /// Every source's quote with its fate.
    pub quotes: Vec<QuoteSummary>,
    /// When the on-chain value's next heartbeat update is due (unknown without one).
    pub next_heartbeat: Option<NextHeartbeat>,
    /// The last update this process delivered for the asset and why it went out.
    pub last_update: Option<LastUpdate>,
}

/// An update this process delivered, and why it went out.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastUpdate {
    /// `initial`, `deviation`, `heartbeat` or `forced`.
    pub reason: String,
    /// The price published, 6 decimals.
    pub price_micro: u64,
    /// Its observation time, unix seconds.
    pub timestamp: u64,
}

/// One tick's summary: what was sent (shared with every chain keeper) and every asset's decision.
#[derive(Debug, Clone, Serialize)]
pub struct CycleSummary {
    /// Outcome, messages, BoC, notes and delivery.
    #[serde(flatten)]
    pub send: SendSummary,
    /// Every configured asset's decision.
    pub assets: Vec<AssetDecision>,
    /// `aggregation.allow_single_source` is on: one lineage may set a price.
    pub single_source: bool,
    /// Chain time of this tick, when toncenter answered.
    pub chain_time: Option<i64>,
    /// Local clock minus chain time, seconds.
    pub clock_skew_seconds: Option<i64>,
    /// `get_price` failed for these assets; they were judged against this keeper's own record.
    pub oracle_unreadable: Vec<String>,
}

impl CycleSummary {
    /// An empty summary carrying the standing notes.
    pub fn new(dry_run: bool, notes: &[String]) -> Self {
        Self {
            send: SendSummary::new(dry_run, notes),
            assets: Vec::new(),
            single_source: false,
            chain_time: None,
            clock_skew_seconds: None,
            oracle_unreadable: Vec::new(),
        }
    }

    /// Human-readable rendering for terminals.
    pub fn render_text(&self) -> String {
        let mut out = self.send.text_header();
        if self.single_source {
            let _ = writeln!(
                out,
                "single-source mode: aggregation.allow_single_source lets one lineage set a price"
            );
        }
        if !self.oracle_unreadable.is_empty() {
            let _ = writeln!(
                out,
                "oracle unreadable for {}: judged against this keeper's own last publication",
                self.oracle_unreadable.join(", ")
            );
        }
        if let Some(skew) = self.clock_skew_seconds {
            let _ = writeln!(out, "clock skew: {skew} s (local minus chain time)");
        }
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
                Action::Hold => "hold",
                Action::NoQuorum => "no quorum",
            };
            let mut reason = a.reason.clone();
            if let Some(b) = &a.breaker {
                let _ = write!(reason, " ({b})");
            }
            let _ = writeln!(
                out,
                "{:<6} {:>3} {:>10} {:<9} {reason}",
                a.asset, a.asset_id, price, action
            );
            if !a.lineages.is_empty() {
                let _ = writeln!(out, "         lineages: {}", a.lineages.join(", "));
            }
            for q in &a.quotes {
                let price = q.price.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
                let fate = match (&q.accepted, &q.why) {
                    (true, _) => "used".to_owned(),
                    (false, Some(why)) => format!("rejected: {why}"),
                    (false, None) => "rejected".to_owned(),
                };
                let _ = writeln!(
                    out,
                    "         {:<10} {:<10} {:>12}  {fate}",
                    q.source.as_str(),
                    q.lineage,
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
        let count = |action| self.assets.iter().filter(|a| a.action == action).count();
        format!(
            "{}: {published} of {} assets to publish, {} held, {} without quorum{}",
            self.send.outcome,
            self.assets.len(),
            count(Action::Hold),
            count(Action::NoQuorum),
            if self.single_source {
                " (single-source mode)"
            } else {
                ""
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_shows_holds_lineages_and_single_source_mode() {
        let mut s = CycleSummary::new(false, &[]);
        s.single_source = true;
        s.clock_skew_seconds = Some(-3);
        s.oracle_unreadable = vec!["DAI".into()];
        s.assets.push(AssetDecision {
            asset_id: 1,
            asset: "USDT".into(),
            price_micro: Some(1_030_000),
            action: Action::Hold,
            reason: "held: step 300 bps, 2 of 3 lineages (tick 1 of 2)".into(),
            breaker: None,
            held: None,
            on_chain: None,
            compared_with: Origin::Chain,
            lineages: vec!["chainlink".into(), "pyth".into()],
            observed_at: Some(1),
            timestamp: Some(1),
            quotes: vec![],
            next_heartbeat: None,
            last_update: None,
        });
        let text = s.render_text();
        assert!(text.contains("single-source mode"), "{text}");
        assert!(text.contains("oracle unreadable for DAI"), "{text}");
        assert!(text.contains("clock skew: -3 s"), "{text}");
        assert!(
            text.contains("USDT     1   1.030000 hold      held: step 300 bps"),
            "{text}"
        );
        assert!(text.contains("lineages: chainlink, pyth"), "{text}");
        assert_eq!(
            s.summary(),
            "failed: 0 of 1 assets to publish, 1 held, 0 without quorum (single-source mode)"
                .replace("failed", &s.send.outcome.to_string())
        );
    }

    #[test]
    fn micro_prices_print_with_six_decimals() {
        assert_eq!(format_micro(999_850), "0.999850");
        assert_eq!(format_micro(1_000_000), "1.000000");
    }
}

//! One asset's decision: publish, hold, skip or no quorum, and why.

use keeper_runtime::alert::{Alert, Severity};
use keeper_runtime::telemetry::metrics::labels;
use keeper_sources::AssetConfig;
use keeper_sources::aggregate::Aggregate;

use super::{ChainView, Decided, PRICE_MOVE_HELD, PricingCycle, skip_reason};
use crate::breaker::BreakerRules;
use crate::policy::{self, OnChain, Reason, Thresholds};
use crate::reference::Origin;
use crate::report::{Action, AssetDecision};

impl PricingCycle {
    /// One asset's decision: publish, hold, skip or no quorum, with the reason.
    pub(super) fn decide(
        &mut self,
        asset: &AssetConfig,
        agg: &Aggregate,
        view: &ChainView,
        reference: Option<OnChain>,
        origin: Origin,
        now_secs: i64,
    ) -> Decided {
        let rules = self.p.config.rules_for(asset);
        let now_ts = u64::try_from(now_secs).unwrap_or(0);
        // Never later than chain time: an observation "from the future" is stamped now.
        let timestamp = agg
            .observed_at
            .map(|t| u64::try_from(t.min(now_secs)).unwrap_or(0));
        let mut report = AssetDecision {
            asset_id: asset.id,
            asset: asset.symbol.clone(),
            price_micro: agg.price_micro(),
            action: Action::Skip,
            reason: String::new(),
            breaker: None,
            held: None,
            on_chain: reference,
            compared_with: origin,
            lineages: agg.lineages.iter().map(|l| l.lineage.clone()).collect(),
            observed_at: agg.observed_at,
            timestamp,
            quotes: agg.quotes(),
            next_heartbeat: reference.map(|r| self.thresholds(&rules).next_heartbeat(r)),
            last_update: self.last_update.get(&asset.symbol).cloned(),
        };
        let mut update_reason = Reason::Initial;
        let mut held = false;
        match (agg.price_micro(), timestamp) {
            (Some(micro), Some(ts)) => {
                let thresholds = self.thresholds(&rules);
                let decided =
                    policy::decide(micro, ts, reference, now_ts, thresholds, self.p.force);
                let blind = view.is_err() && reference.is_none();
                let behind = reference.is_some_and(|r| ts < r.timestamp);
                match decided {
                    Some(Reason::Forced) => {
                        self.breaker.clear(&asset.symbol);
                        report.action = Action::Publish;
                        update_reason = Reason::Forced;
                    }
                    Some(_) if blind => {
                        report.reason = format!(
                            "on-chain value unreadable ({}) and no record of this keeper's own publication: not publishing blind",
                            view.as_ref().err().map_or("", String::as_str)
                        );
                    }
                    Some(_) if behind => {
                        report.reason = format!(
                            "observations (t={ts}) are older than the value compared with (t={}): nothing newer to publish",
                            reference.map_or(0, |r| r.timestamp)
                        );
                    }
                    Some(reason) => {
                        let verdict = self.breaker.check(
                            &asset.symbol,
                            micro,
                            reference.map(|r| r.price_micro),
                            agg.lineages.len(),
                            self.breaker_rules(rules.max_step_bps),
                        );
                        if !verdict.allows() {
                            held = true;
                            report.held = self.breaker.pending(&asset.symbol);
                            report.action = Action::Hold;
                            report.reason = verdict.describe().unwrap_or_default();
                        } else if let Some(wait) =
                            self.fallback_waits(asset, micro, ts, reference, now_ts, thresholds)
                        {
                            report.reason = wait;
                        } else {
                            report.action = Action::Publish;
                            report.breaker = verdict.describe();
                            update_reason = reason;
                        }
                    }
                    None => {
                        self.breaker.clear(&asset.symbol);
                        self.fallback.settled(&asset.symbol);
                        report.reason = skip_reason(micro, reference, now_ts, view);
                    }
                }
                if report.action == Action::Publish {
                    report.reason = update_reason.as_str().to_owned();
                }
            }
            _ => {
                self.breaker.clear(&asset.symbol);
                report.action = Action::NoQuorum;
                report.reason = agg.explain();
            }
        }
        self.track_hold(asset, &report, held);
        Decided {
            report,
            update_reason,
        }
    }

    /// For a fallback keeper (`fallback_offset` > 0), why it leaves a due update to the primary
    /// for now: the offset has not passed since a primary would have published it (heartbeat
    /// due, or since this keeper first saw the deviation), or this keeper already published
    /// about this value itself and the on-chain median just differs. `None`: publish.
    fn fallback_waits(
        &mut self,
        asset: &AssetConfig,
        micro: u64,
        observed_at: u64,
        reference: Option<OnChain>,
        now: u64,
        t: Thresholds,
    ) -> Option<String> {
        if !self.fallback.is_fallback() {
            return None;
        }
        if let Some(own) = self.own_published.get(&asset.symbol)
            && policy::deviation_bps(micro, own.price_micro) < u128::from(t.deviation_bps)
            && now.saturating_sub(own.timestamp) < t.heartbeat
        {
            return Some(format!(
                "fallback: published {} itself at t={}; the on-chain value differs",
                crate::report::format_micro(own.price_micro),
                own.timestamp
            ));
        }
        // In chain time: when the sources' observations reached the heartbeat, assuming their
        // lag now; without the lag a heartbeat shorter than it would look overdue at once.
        let lag = now.saturating_sub(observed_at);
        let heartbeat_due = reference.map(|r| {
            let next = t.next_heartbeat(r);
            let by_age = next.observed_at.saturating_add(lag);
            next.before_max_age_at.map_or(by_age, |at| at.min(by_age))
        });
        self.fallback
            .check_value(
                &asset.symbol,
                reference.map(|r| (r.timestamp, r.price_micro)),
                heartbeat_due,
                now,
            )
            .wait_reason(self.p.config.policy.fallback_offset)
    }

    /// The publishing thresholds of an asset: its deviation and heartbeat, the oracle's
    /// maximum age (`stale_after`) and the tick interval as the lead before it.
    fn thresholds(&self, rules: &crate::config::AssetRules) -> Thresholds {
        Thresholds {
            deviation_bps: rules.deviation_bps,
            heartbeat: rules.heartbeat,
            max_age_secs: self.p.config.policy.stale_after,
            lead_secs: self.p.config.runner.period().as_secs(),
        }
    }

    /// The breaker's settings with this asset's step.
    fn breaker_rules(&self, max_step_bps: u32) -> BreakerRules {
        BreakerRules {
            max_step_bps,
            confirm_lineages: self.p.config.policy.confirm_lineages,
            confirm_ticks: self.p.config.policy.confirm_ticks,
            same_move_bps: self.p.config.aggregation.max_deviation_bps,
        }
    }

    /// `pricing_oracle_moves_held_total` and `price_move_held:{asset}` while a move waits.
    fn track_hold(&self, asset: &AssetConfig, report: &AssetDecision, held: bool) {
        let key = format!("{PRICE_MOVE_HELD}:{}", asset.symbol);
        if !held {
            self.p.alerter.resolve(&key);
            return;
        }
        self.own
            .moves_held
            .get_or_create(&labels([("asset", &asset.symbol)]))
            .inc();
        let micro = |m: Option<u64>| m.map_or_else(|| "-".into(), crate::report::format_micro);
        self.p.alerter.fire(
            Alert::new(
                key,
                Severity::Warning,
                format!(
                    "{}: {} (aggregate {}, on-chain {})",
                    asset.symbol,
                    report.reason,
                    micro(report.price_micro),
                    micro(report.on_chain.map(|r| r.price_micro))
                ),
            )
            .label("asset", asset.symbol.as_str()),
        );
    }
}

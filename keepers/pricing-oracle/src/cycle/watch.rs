//! What a tick watches besides prices: sources that stopped answering, quorum and divergence,
//! on-chain freshness, the clock against chain time, and an unreadable oracle.

use chrono::{DateTime, TimeZone, Utc};
use keeper_runtime::alert::{Alert, Severity};
use keeper_runtime::telemetry::metrics::labels;
use keeper_sources::aggregate::Aggregate;
use keeper_sources::metrics::PriceMetrics;
use keeper_sources::{AssetObservations, Observation, Source};
use keeper_ton::metrics::ChainMetrics;
use rust_decimal::prelude::ToPrimitive;

use super::{CLOCK_SKEW, ChainView, ORACLE_UNREADABLE, PricingCycle};
use crate::report::CycleSummary;

impl PricingCycle {
    /// Raises `source_down:{source}` for sources that produced no quote for `source_down_after`.
    pub(super) fn track_sources(&mut self, assets: &[AssetObservations], now: DateTime<Utc>) {
        let observed = || assets.iter().flat_map(|a| &a.observations);
        for source in Source::ALL {
            let configured = observed().any(|o| o.source() == source);
            if !configured {
                continue;
            }
            let answered =
                observed().any(|o| o.source() == source && matches!(o, Observation::Quote(_)));
            if answered {
                self.source_last_ok.insert(source, now);
            }
            let key = format!("source_down:{}", source.as_str());
            let last = self
                .source_last_ok
                .get(&source)
                .copied()
                .unwrap_or(self.started);
            let down_for = (now - last).num_seconds().max(0) as u64;
            if down_for >= self.p.config.policy.source_down_after {
                self.p.alerter.fire(
                    Alert::new(
                        key,
                        Severity::Warning,
                        format!(
                            "{} has returned no usable quote for {down_for} s",
                            source.as_str()
                        ),
                    )
                    .label("source", source.as_str()),
                );
            } else if answered {
                self.p.alerter.resolve(&key);
            }
        }
    }

    /// Quorum and divergence alerts plus aggregate metrics for one asset.
    pub(super) fn judge(&self, agg: &Aggregate) {
        let asset = agg.asset.as_str();
        let quorum_key = format!("quorum_lost:{asset}");
        if agg.has_quorum() {
            self.p.alerter.resolve(&quorum_key);
            if let Some(p) = agg.price.and_then(|p| p.to_f64()) {
                PriceMetrics::of(&self.p.metrics)
                    .aggregate_price
                    .get_or_create(&labels([("asset", asset)]))
                    .set(p);
            }
        } else {
            self.p.alerter.fire(
                Alert::new(
                    quorum_key,
                    Severity::Critical,
                    format!("{asset}: {}", agg.explain()),
                )
                .label("asset", asset),
            );
        }
        let divergence_key = format!("source_divergence:{asset}");
        let outliers: Vec<String> = agg
            .outliers()
            .map(|r| format!("{} ({})", r.source.as_str(), r.reason))
            .collect();
        if outliers.is_empty() {
            self.p.alerter.resolve(&divergence_key);
        } else {
            self.p.alerter.fire(
                Alert::new(
                    divergence_key,
                    Severity::Warning,
                    format!(
                        "{asset}: sources diverge from the median: {}",
                        outliers.join(", ")
                    ),
                )
                .label("asset", asset),
            );
        }
    }

    /// Freshness metric and `oracle_stale:{asset}` from what the chain holds.
    pub(super) fn track_freshness(&mut self, views: &[ChainView], now: DateTime<Utc>) {
        for (asset, view) in self.p.config.assets.iter().zip(views) {
            let Ok(view) = view else { continue };
            let last = view.and_then(|c| Utc.timestamp_opt(c.timestamp as i64, 0).single());
            if let Some(c) = view {
                ChainMetrics::of(&self.p.metrics)
                    .oracle_last_update
                    .get_or_create(&labels([("asset", &asset.symbol)]))
                    .set(c.timestamp as i64);
            }
            self.stale.check(&asset.symbol, last, now);
        }
    }

    /// The clock-skew gauge and `clock_skew` alert.
    pub(super) fn track_clock(&self, local: i64, chain: Option<i64>, summary: &mut CycleSummary) {
        summary.chain_time = chain;
        let Some(chain) = chain else { return };
        let skew = local.saturating_sub(chain);
        summary.clock_skew_seconds = Some(skew);
        self.own.clock_skew.set(skew);
        let max = self.p.config.policy.max_clock_skew;
        if skew.unsigned_abs() > max {
            self.p.alerter.fire(Alert::new(
                CLOCK_SKEW,
                Severity::Warning,
                format!(
                    "the local clock is {skew} s off chain time (limit {max} s); timestamps and valid_until follow chain time"
                ),
            ));
        } else {
            self.p.alerter.resolve(CLOCK_SKEW);
        }
    }

    /// `oracle_unreadable` while `get_price` fails for any asset.
    pub(super) fn track_unreadable(&self, views: &[ChainView], summary: &mut CycleSummary) {
        let failed: Vec<(&str, &str)> = self
            .p
            .config
            .assets
            .iter()
            .zip(views)
            .filter_map(|(a, v)| v.as_ref().err().map(|e| (a.symbol.as_str(), e.as_str())))
            .collect();
        summary.oracle_unreadable = failed.iter().map(|(a, _)| (*a).to_owned()).collect();
        match failed.first() {
            Some((_, error)) => self.p.alerter.fire(Alert::new(
                ORACLE_UNREADABLE,
                Severity::Critical,
                format!(
                    "get_price failed for {} ({error}); deciding against this keeper's own last publication",
                    summary.oracle_unreadable.join(", ")
                ),
            )),
            None => self.p.alerter.resolve(ORACLE_UNREADABLE),
        }
    }
}

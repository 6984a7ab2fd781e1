//! The pricing keeper's own metric families, registered beside the shared ones.

use keeper_runtime::telemetry::Metrics;
use keeper_runtime::telemetry::metrics::Labels;
use keeper_sources::metrics::PriceMetrics;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

/// Lineages, holds, single-source mode and clock skew.
#[derive(Clone, Default)]
pub struct PricingMetrics {
    /// `pricing_oracle_lineages_used{asset}`: independent lineages behind this tick's aggregate.
    pub lineages_used: Family<Labels, Gauge>,
    /// `pricing_oracle_moves_held_total{asset}`: ticks a large move was held by the breaker.
    pub moves_held: Family<Labels, Counter>,
    /// `pricing_oracle_single_source_mode`: 1 while `allow_single_source` lets one lineage
    /// set a price.
    pub single_source: Gauge,
    /// `keeper_clock_skew_seconds`: local clock minus chain time.
    pub clock_skew: Gauge,
}

impl PricingMetrics {
    /// Registers the families in `metrics`.
    pub fn register(metrics: &mut Metrics) -> Self {
        metrics.add::<PriceMetrics>();
        let m = Self::default();
        metrics.register(
            "pricing_oracle_lineages_used",
            "Independent lineages behind the asset's aggregate in the last tick",
            m.lineages_used.clone(),
        );
        metrics.register(
            "pricing_oracle_moves_held",
            "Ticks in which a move beyond max_step_bps was held for confirmation",
            m.moves_held.clone(),
        );
        metrics.register(
            "pricing_oracle_single_source_mode",
            "1 while aggregation.allow_single_source lets one lineage set a price",
            m.single_source.clone(),
        );
        metrics.register(
            "keeper_clock_skew_seconds",
            "Local clock minus chain time, seconds",
            m.clock_skew.clone(),
        );
        m
    }
}

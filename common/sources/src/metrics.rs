//! The price source and aggregate families, registered with `Metrics::with::<PriceMetrics>()`.

use std::sync::LazyLock;

use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use keeper_runtime::telemetry::metrics::{Families, FloatGauge, Labels, Metrics};

/// Families of the price sources and aggregation.
#[derive(Clone, Default)]
pub struct PriceMetrics {
    /// `pricing_oracle_price{asset,source}`
    pub source_price: Family<Labels, FloatGauge>,
    /// `pricing_oracle_aggregate_price{asset}`
    pub aggregate_price: Family<Labels, FloatGauge>,
}

impl Families for PriceMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        registry.register(
            "pricing_oracle_price",
            "Latest price quoted by each source, USD",
            m.source_price.clone(),
        );
        registry.register(
            "pricing_oracle_aggregate_price",
            "Latest aggregated price per asset, USD",
            m.aggregate_price.clone(),
        );
        m
    }
}

impl PriceMetrics {
    /// The price families of `metrics`; a registry built without them (a test of other code)
    /// gets a set that is updated but never exported.
    pub fn of(metrics: &Metrics) -> &PriceMetrics {
        static UNREGISTERED: LazyLock<PriceMetrics> =
            LazyLock::new(|| PriceMetrics::register(&mut Registry::default()));
        metrics.families::<PriceMetrics>().unwrap_or(&UNREGISTERED)
    }
}

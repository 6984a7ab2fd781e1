//! The bridge keeper's own metric families, registered beside the shared ones.

use keeper_runtime::telemetry::Metrics;
use keeper_runtime::telemetry::metrics::{FloatGauge, Labels};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

/// `bridge_health_score{bridge}` and `bridge_online{bridge}`.
#[derive(Clone, Default)]
pub struct BridgeMetrics {
    /// `bridge_health_score{bridge}`: 0 (down) to 1 (healthy).
    pub score: Family<Labels, FloatGauge>,
    /// `bridge_online{bridge}`: 1 when the bridge is considered online.
    pub online: Family<Labels, Gauge>,
}

impl BridgeMetrics {
    /// Registers the families in `metrics`.
    pub fn register(metrics: &mut Metrics) -> Self {
        let b = Self::default();
        metrics.register(
            "bridge_health_score",
            "Health score of each bridge, 0 (down) to 1 (healthy)",
            b.score.clone(),
        );
        metrics.register(
            "bridge_online",
            "1 when the bridge is considered online",
            b.online.clone(),
        );
        b
    }
}

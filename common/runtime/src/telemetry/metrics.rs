//! The Prometheus registry: the families every keeper exports, [`Metrics::with`] for a set of
//! families another crate owns (the TON and price families), and [`Metrics::register`] for a
//! keeper's own families.

use std::any::Any;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Metric, Registry};

/// A label set: ordered name/value pairs.
pub type Labels = Vec<(&'static str, String)>;
/// A gauge holding an `f64`.
pub type FloatGauge = Gauge<f64, AtomicU64>;
/// A histogram family with the latency buckets.
pub type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// Buckets for request latencies, 10 ms to 60 s.
pub fn latency_histogram() -> Histogram {
    Histogram::new([
        0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ])
}

/// A set of families that a crate other than this one owns and updates: registered once with
/// [`Metrics::with`], found again with [`Metrics::families`].
pub trait Families: Clone + Send + Sync + 'static {
    /// Creates the families and registers each one in `registry`.
    fn register(registry: &mut Registry) -> Self;
}

fn cycle_histogram() -> Histogram {
    Histogram::new([
        0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
    ])
}

/// Builds a label set from pairs.
pub fn labels<const N: usize>(pairs: [(&'static str, &str); N]) -> Labels {
    pairs.into_iter().map(|(k, v)| (k, v.to_owned())).collect()
}

/// The process's registry and the families the shared code updates.
pub struct Metrics {
    registry: Registry,
    /// Which keeper this process is (`pricing-oracle`, `bridge-health`, `db-backup`).
    pub keeper: String,
    /// `keeper_cycles_total{keeper,outcome}`
    pub cycles: Family<Labels, Counter>,
    /// `keeper_cycle_duration_seconds`
    pub cycle_duration: Histogram,
    /// `keeper_last_success_timestamp_seconds{keeper}`
    pub last_success: Family<Labels, Gauge>,
    /// `keeper_ticks_skipped_total{keeper}`: ticks missed because a cycle ran long.
    pub ticks_skipped: Family<Labels, Counter>,
    /// `keeper_source_requests_total{source,outcome}`: requests to upstream APIs.
    pub source_requests: Family<Labels, Counter>,
    /// `keeper_source_latency_seconds{source}`
    pub source_latency: HistogramFamily,
    /// `keeper_alert_notifications_total{channel,outcome}`
    pub alert_notifications: Family<Labels, Counter>,
    /// `keeper_alerts_firing{alert}`: 1 while the alert key is firing.
    pub alerts_firing: Family<Labels, Gauge>,
    /// `keeper_store_up{store}`: 1 while PostgreSQL/Redis answer, 0 when degraded.
    pub store_up: Family<Labels, Gauge>,
    /// `keeper_store_errors_total{store}`
    pub store_errors: Family<Labels, Counter>,
    /// `keeper_build_info{version}`: always 1.
    pub build_info: Family<Labels, Gauge>,
    /// Sets of families registered with [`Metrics::with`].
    sets: Vec<Arc<dyn Any + Send + Sync>>,
}

impl Metrics {
    /// Registers the shared families for `keeper`; a keeper adds its own with [`Metrics::register`].
    pub fn new(keeper: &str) -> Self {
        let mut r = Registry::default();
        let m = Self {
            keeper: keeper.to_owned(),
            cycles: Family::default(),
            cycle_duration: cycle_histogram(),
            last_success: Family::default(),
            ticks_skipped: Family::default(),
            source_requests: Family::default(),
            source_latency: Family::new_with_constructor(latency_histogram),
            alert_notifications: Family::default(),
            alerts_firing: Family::default(),
            store_up: Family::default(),
            store_errors: Family::default(),
            build_info: Family::default(),
            sets: Vec::new(),
            registry: Registry::default(),
        };
        // Counters get their `_total` suffix from the library.
        r.register("keeper_cycles", "Cycles by outcome", m.cycles.clone());
        r.register(
            "keeper_cycle_duration_seconds",
            "Wall time of one cycle",
            m.cycle_duration.clone(),
        );
        r.register(
            "keeper_last_success_timestamp_seconds",
            "Unix time of the last successful cycle",
            m.last_success.clone(),
        );
        r.register(
            "keeper_ticks_skipped",
            "Ticks skipped because the previous cycle was still running",
            m.ticks_skipped.clone(),
        );
        r.register(
            "keeper_source_requests",
            "Upstream requests by source and outcome",
            m.source_requests.clone(),
        );
        r.register(
            "keeper_source_latency_seconds",
            "Upstream request latency by source",
            m.source_latency.clone(),
        );
        r.register(
            "keeper_alert_notifications",
            "Alert deliveries by channel and outcome",
            m.alert_notifications.clone(),
        );
        r.register(
            "keeper_alerts_firing",
            "1 while an alert key is firing",
            m.alerts_firing.clone(),
        );
        r.register(
            "keeper_store_up",
            "1 while the store answers, 0 when degraded",
            m.store_up.clone(),
        );
        r.register(
            "keeper_store_errors",
            "Store operations that failed",
            m.store_errors.clone(),
        );
        r.register(
            "keeper_build_info",
            "Build information; always 1",
            m.build_info.clone(),
        );
        m.build_info
            .get_or_create(&labels([("version", env!("CARGO_PKG_VERSION"))]))
            .set(1);
        Self { registry: r, ..m }
    }

    /// Registers the set of families `T` (once: a second call keeps the first set).
    pub fn with<T: Families>(mut self) -> Self {
        self.add::<T>();
        self
    }

    /// Registers the set of families `T` in place (once: a second call keeps the first set).
    pub fn add<T: Families>(&mut self) {
        if self.families::<T>().is_none() {
            let set = T::register(&mut self.registry);
            self.sets.push(Arc::new(set));
        }
    }

    /// The set of families `T`, if registered with [`Metrics::with`].
    pub fn families<T: Families>(&self) -> Option<&T> {
        self.sets.iter().find_map(|s| s.downcast_ref::<T>())
    }

    /// Registers a keeper's own family (`metric` is a handle: keep a clone to update it).
    pub fn register(&mut self, name: &str, help: &str, metric: impl Metric) {
        self.registry.register(name, help, metric);
    }

    /// The registry in Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// Counts one cycle with its outcome (`success`, `failure`, `timeout`, `skipped`).
    pub fn record_cycle(&self, outcome: &str, seconds: f64) {
        self.cycles
            .get_or_create(&labels([("keeper", &self.keeper), ("outcome", outcome)]))
            .inc();
        self.cycle_duration.observe(seconds);
    }

    /// Counts one upstream request and its latency.
    pub fn record_source_request(&self, source: &str, outcome: &str, seconds: f64) {
        self.source_requests
            .get_or_create(&labels([("source", source), ("outcome", outcome)]))
            .inc();
        self.source_latency
            .get_or_create(&labels([("source", source)]))
            .observe(seconds);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_names_are_exported_and_keepers_add_their_own() {
        let mut m = Metrics::new("db-backup");
        let own: Family<Labels, FloatGauge> = Family::default();
        m.register("bridge_health_score", "score", own.clone());
        m.record_cycle("success", 0.2);
        m.record_source_request("coingecko", "ok", 0.1);
        own.get_or_create(&labels([("bridge", "wormhole")]))
            .set(0.5);
        let text = m.render();
        for name in [
            "keeper_cycles_total{keeper=\"db-backup\",outcome=\"success\"} 1",
            "keeper_source_requests_total{source=\"coingecko\",outcome=\"ok\"} 1",
            "bridge_health_score{bridge=\"wormhole\"} 0.5",
            "keeper_build_info{version=",
        ] {
            assert!(text.contains(name), "missing {name} in\n{text}");
        }
    }
}

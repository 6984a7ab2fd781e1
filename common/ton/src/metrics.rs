//! The TON wallet, lease and delivery families, registered with `Metrics::with::<ChainMetrics>()`.

use std::sync::LazyLock;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use keeper_runtime::telemetry::metrics::{
    Families, FloatGauge, Labels, Metrics, latency_histogram,
};

/// Families of the TON wallet and delivery.
#[derive(Clone)]
pub struct ChainMetrics {
    /// `pricing_oracle_last_update_timestamp{asset}`, read back from chain.
    pub oracle_last_update: Family<Labels, Gauge>,
    /// `keeper_update_success_total`: oracle updates confirmed on-chain.
    pub update_success: Counter,
    /// `keeper_update_latency_seconds`: send to confirmation.
    pub update_latency: Histogram,
    /// `keeper_wallet_balance_ton{wallet}`
    pub wallet_balance: Family<Labels, FloatGauge>,
    /// `keeper_ton_messages_total{op,outcome}`
    pub ton_messages: Family<Labels, Counter>,
    /// `keeper_wallet_seqno{wallet}`
    pub wallet_seqno: Family<Labels, Gauge>,
    /// `keeper_lock_held{wallet}`: 1 while this process holds the wallet lease.
    pub lock_held: Family<Labels, Gauge>,
    /// `keeper_ton_endpoint_requests_total{endpoint,outcome}`: requests per TON endpoint.
    pub endpoint_requests: Family<Labels, Counter>,
    /// `keeper_ton_endpoint_up{endpoint}`: 0 while the endpoint fails or lags.
    pub endpoint_up: Family<Labels, Gauge>,
    /// `keeper_ton_endpoint_budget_rps{endpoint}`: requests per second the endpoint's budget
    /// allows now (lowered by 429s, recovering while it is quiet).
    pub endpoint_budget: Family<Labels, FloatGauge>,
    /// `keeper_ton_requests_per_tick`: TON API requests made by the last tick.
    pub requests_per_tick: Gauge,
    /// `keeper_ton_spent_nanoton_total`: what the wallet spent on updates (fees and values,
    /// less what came back).
    pub ton_spent: Counter,
    /// `keeper_ton_spend_per_day_ton{wallet}`: spend rate over the last 24 hours.
    pub spend_per_day: Family<Labels, FloatGauge>,
    /// `keeper_wallet_runway_days{wallet}`: balance ÷ spend per day.
    pub runway_days: Family<Labels, FloatGauge>,
    /// `keeper_ton_oracle_results_total{op,exit_code}`: the oracle's transactions by exit code.
    pub oracle_results: Family<Labels, Counter>,
}

impl Families for ChainMetrics {
    fn register(registry: &mut Registry) -> Self {
        let m = Self {
            oracle_last_update: Family::default(),
            update_success: Counter::default(),
            update_latency: latency_histogram(),
            wallet_balance: Family::default(),
            ton_messages: Family::default(),
            wallet_seqno: Family::default(),
            lock_held: Family::default(),
            endpoint_requests: Family::default(),
            endpoint_up: Family::default(),
            endpoint_budget: Family::default(),
            requests_per_tick: Gauge::default(),
            ton_spent: Counter::default(),
            spend_per_day: Family::default(),
            runway_days: Family::default(),
            oracle_results: Family::default(),
        };
        registry.register(
            "keeper_ton_spent_nanoton",
            "Nanotons the keeper wallet spent on updates: fees and values, less what came back",
            m.ton_spent.clone(),
        );
        registry.register(
            "keeper_ton_spend_per_day_ton",
            "TON the keeper wallet spends per day, over the last 24 hours",
            m.spend_per_day.clone(),
        );
        registry.register(
            "keeper_wallet_runway_days",
            "Days the keeper wallet's balance lasts at the current spend per day",
            m.runway_days.clone(),
        );
        registry.register(
            "keeper_ton_oracle_results",
            "The oracle's transactions for this keeper's updates, by op and compute exit code",
            m.oracle_results.clone(),
        );
        registry.register(
            "keeper_ton_endpoint_requests",
            "TON API requests per endpoint (host only) and outcome: ok, error, rate_limited, lagging",
            m.endpoint_requests.clone(),
        );
        registry.register(
            "keeper_ton_endpoint_up",
            "1 while the TON endpoint answers and is not behind another one",
            m.endpoint_up.clone(),
        );
        registry.register(
            "keeper_ton_endpoint_budget_rps",
            "Requests per second the TON endpoint's client-side budget allows now; lowered by 429s",
            m.endpoint_budget.clone(),
        );
        registry.register(
            "keeper_ton_requests_per_tick",
            "TON API requests made by the last tick, all endpoints",
            m.requests_per_tick.clone(),
        );
        registry.register(
            "pricing_oracle_last_update_timestamp",
            "Last update time of each asset read back from the oracle (unix seconds)",
            m.oracle_last_update.clone(),
        );
        registry.register(
            "keeper_update_success",
            "Oracle updates confirmed on-chain",
            m.update_success.clone(),
        );
        registry.register(
            "keeper_update_latency_seconds",
            "Seconds from sending an external message to its confirmation",
            m.update_latency.clone(),
        );
        registry.register(
            "keeper_wallet_balance_ton",
            "Balance of the keeper wallet in TON",
            m.wallet_balance.clone(),
        );
        registry.register(
            "keeper_ton_messages",
            "Oracle messages by op and outcome",
            m.ton_messages.clone(),
        );
        registry.register(
            "keeper_wallet_seqno",
            "Last seqno read from the keeper wallet",
            m.wallet_seqno.clone(),
        );
        registry.register(
            "keeper_lock_held",
            "1 while this process holds the wallet lease",
            m.lock_held.clone(),
        );
        m
    }
}

impl ChainMetrics {
    /// The chain families of `metrics`; a registry built without them (a test of other code)
    /// gets a set that is updated but never exported.
    pub fn of(metrics: &Metrics) -> &ChainMetrics {
        static UNREGISTERED: LazyLock<ChainMetrics> =
            LazyLock::new(|| ChainMetrics::register(&mut Registry::default()));
        metrics.families::<ChainMetrics>().unwrap_or(&UNREGISTERED)
    }
}

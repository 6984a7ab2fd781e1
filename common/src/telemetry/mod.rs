//! Logs, traces, metrics and the ops HTTP server.

pub mod metrics;

pub use metrics::Metrics;

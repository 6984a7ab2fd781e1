//! Logs, traces, metrics and the ops HTTP server.

pub mod health;
pub mod logging;
pub mod metrics;
pub mod server;

pub use health::{CycleRecord, Health, Liveness};
pub use logging::{TelemetryError, TelemetryGuard, init_tracing};
pub use metrics::Metrics;
pub use server::{OpsError, OpsServer, serve_ops};

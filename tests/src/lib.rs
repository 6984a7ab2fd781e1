//! Test harness shared by the workspace-level tests: where the real servers are, and local
//! stand-ins for the third-party services (answering in their documented formats).

pub mod bridge_keeper;
pub mod bridges;
pub mod env;
pub mod pricing;
pub mod probe;
pub mod process;
pub mod proxy;
pub mod requests;
pub mod sink;
pub mod toncenter;
pub mod upstreams;

/// The pricing keeper's default asset table, read from its shipped example file.
pub fn default_assets() -> keeper_sources::AssetList {
    keeper_sources::AssetList::from_toml(include_str!("../../config/pricing-oracle.toml"))
        .expect("config/pricing-oracle.toml has a valid [[assets]] table")
}

/// Unix seconds now, as the oracle's 32-bit timestamps carry them.
pub fn unix_now() -> u32 {
    u32::try_from(bridges::now()).unwrap_or(0)
}

/// The value of the first sample of a Prometheus text exposition whose line starts with
/// `line_start` (a metric name with its labels).
pub fn sample(exposition: &str, line_start: &str) -> Option<f64> {
    exposition
        .lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

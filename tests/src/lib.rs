//! Test harness shared by the workspace-level tests: where the real servers are, and local
//! stand-ins for the third-party services (answering in their documented formats).

pub mod bridge_keeper;
pub mod bridges;
pub mod env;
pub mod pricing;
pub mod probe;
pub mod process;
pub mod proxy;
pub mod sink;
pub mod toncenter;
pub mod upstreams;

/// The pricing keeper's default asset table, read from its shipped example file.
pub fn default_assets() -> keeper_sources::AssetList {
    keeper_sources::AssetList::from_toml(include_str!("../../config/pricing-oracle.toml"))
        .expect("config/pricing-oracle.toml has a valid [[assets]] table")
}

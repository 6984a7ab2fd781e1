//! The environment variables the bridge keeper reads, and the settings they set.

use keeper_runtime::config::{COMMON_ENV, EnvBinding, Kind, bind};
use keeper_sources::SOURCES_ENV;

/// Environment bindings of this keeper's own settings (the shared ones are in [`COMMON_ENV`]).
/// `PRICING_ORACLE_ADDRESS` binds to a fallback slot so that an explicit bridge oracle in the
/// file still wins over the pricing oracle from the environment.
pub const BRIDGE_ENV: &[EnvBinding] = &[
    bind(
        "PRICING_ORACLE_ADDRESS",
        "oracle.pricing_address",
        Kind::Str,
    ),
    bind("BRIDGE_ORACLE_ADDRESS", "oracle.address", Kind::Str),
    bind("BRIDGE_HEARTBEAT", "policy.heartbeat", Kind::Int),
    bind("BRIDGE_CONFIRM_TICKS", "policy.confirm_ticks", Kind::Int),
    bind("FALLBACK_OFFSET", "policy.fallback_offset", Kind::Int),
    bind(
        "WALLET_RUNWAY_LOW_DAYS",
        "policy.wallet_runway_low_days",
        Kind::Int,
    ),
    bind(
        "DEFILLAMA_BRIDGES_URL",
        "upstreams.defillama_bridges_url",
        Kind::Str,
    ),
    bind(
        "DEFILLAMA_API_URL",
        "upstreams.defillama_api_url",
        Kind::Str,
    ),
    bind("WORMHOLESCAN_URL", "upstreams.wormholescan_url", Kind::Str),
    bind("AXELARSCAN_URL", "upstreams.axelarscan_url", Kind::Str),
];

/// Every environment binding this binary honours, in precedence order. The pricing keeper's
/// aggregation knobs (`MIN_SOURCES`…) are left out: a shared env file may carry them.
pub fn bindings() -> Vec<EnvBinding> {
    COMMON_ENV
        .iter()
        .chain(keeper_ton::TON_ENV)
        .chain(
            SOURCES_ENV
                .iter()
                .filter(|b| b.path.starts_with("sources.")),
        )
        .chain(BRIDGE_ENV)
        .copied()
        .collect()
}

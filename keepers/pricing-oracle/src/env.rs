//! The environment variables the pricing keeper reads, and the settings they set.

use keeper_runtime::config::{COMMON_ENV, EnvBinding, Kind, bind};
use keeper_sources::SOURCES_ENV;

/// Environment bindings of the pricing keeper's own sections.
pub const PRICING_ENV: &[EnvBinding] = &[
    bind("PRICING_ORACLE_ADDRESS", "oracle.address", Kind::Str),
    bind("PRICE_DEVIATION_BPS", "policy.deviation_bps", Kind::Int),
    bind("PRICE_HEARTBEAT", "policy.heartbeat", Kind::Int),
    bind("STALE_AFTER", "policy.stale_after", Kind::Int),
    bind(
        "WALLET_BALANCE_LOW_TON",
        "policy.wallet_balance_low_ton",
        Kind::Decimal,
    ),
    bind(
        "WALLET_RUNWAY_LOW_DAYS",
        "policy.wallet_runway_low_days",
        Kind::Int,
    ),
    bind("SOURCE_DOWN_AFTER", "policy.source_down_after", Kind::Int),
    bind("MAX_STEP_BPS", "policy.max_step_bps", Kind::Int),
    bind("CONFIRM_LINEAGES", "policy.confirm_lineages", Kind::Int),
    bind("CONFIRM_TICKS", "policy.confirm_ticks", Kind::Int),
    bind("MAX_CLOCK_SKEW", "policy.max_clock_skew", Kind::Int),
    bind("FALLBACK_OFFSET", "policy.fallback_offset", Kind::Int),
];

/// Every binding, shared sections first.
pub fn bindings() -> Vec<EnvBinding> {
    COMMON_ENV
        .iter()
        .chain(keeper_ton::TON_ENV)
        .chain(SOURCES_ENV)
        .chain(PRICING_ENV)
        .copied()
        .collect()
}

//! Price sources: Chainlink feeds over Ethereum JSON-RPC, CoinGecko, DefiLlama and Pyth,
//! fetched concurrently into per-asset observations (which `crate::aggregate` turns into prices;
//! this module does not depend on it).
//!
//! The JSON-RPC client ([`EvmRpc`]) and the DefiLlama and CoinGecko clients are public: the
//! bridge keeper reuses them for `allowLock()` and `ton:` peg checks.

pub mod aggregate;
mod assets;
pub mod chainlink;
pub mod coingecko;
mod config;
pub mod defillama;
pub mod evm;
mod fetcher;
pub mod metrics;
pub mod pyth;
mod quote;
pub mod upstream;

pub use assets::{AssetConfig, AssetList, ChainlinkFeed, parse_address, validate_defillama_key};
pub use chainlink::Chainlink;
pub use coingecko::CoinGecko;
pub use config::{
    AggregatePolicy, AggregationSettings, COINGECKO_PRO_URL, COINGECKO_PUBLIC_URL, CoinGeckoTier,
    DEFAULT_ETH_RPC_URLS, DEFILLAMA_COINS_URL, PYTH_HERMES_URL, RequestPolicy, SOURCES_ENV,
    SanityBand, SourcesSettings, host_of, parse_search_width,
};
pub use defillama::DefiLlama;
pub use evm::{EthCall, EvmRpc, RpcError, RpcErrorKind};
pub use fetcher::{AssetObservations, Fetched, PriceFetcher};
pub use pyth::Pyth;
pub use quote::{
    FUTURE_TOLERANCE_SECS, InvalidValue, MicroError, Observation, PricePoint, Quote, Reason,
    Rejected, Source, decimal_from_json_number, parse_decimal, parse_timestamp, price_micro,
};
pub use upstream::SourceError;

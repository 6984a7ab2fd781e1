//! `pricing-oracle-keeper`: fetches stablecoin prices from Chainlink, CoinGecko and DefiLlama,
//! aggregates them, and pushes signed `update_price` messages to the TON PriceOracle.

fn main() -> std::process::ExitCode {
    keeper_common::runtime::main::<pricing_oracle::PricingKeeper>()
}

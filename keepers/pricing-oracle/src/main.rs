//! `pricing-oracle-keeper`: fetches stablecoin prices from Chainlink, Pyth, CoinGecko and
//! DefiLlama, aggregates them by lineage, and pushes signed `update_price` messages to the TON
//! PriceOracle. `history` prints the recorded decisions; everything else is the shared runtime.

fn main() -> std::process::ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if pricing_oracle::history::requested(&args) {
        return pricing_oracle::history::main(args);
    }
    keeper_ton::keeper::main::<pricing_oracle::PricingKeeper>()
}

//! `pricing-oracle-keeper`: fetches stablecoin prices from Chainlink, Pyth, CoinGecko and
//! DefiLlama, aggregates them by lineage, and pushes signed `update_price` messages to the TON
//! PriceOracle. The command line is in `command/`, one file per subcommand.

mod command;

fn main() -> std::process::ExitCode {
    keeper_runtime::disable_core_dumps();
    command::main()
}

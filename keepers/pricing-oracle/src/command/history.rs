//! `history`: the recorded decisions of one asset, the answer to "why was this price published
//! at that time?".

use std::path::Path;
use std::process::ExitCode;

use keeper_runtime::cli::{Output, Threads, run_async_on};

/// The flags of `history`.
#[derive(Debug, clap::Args)]
pub struct HistoryArgs {
    /// The asset's symbol, e.g. USDT.
    #[arg(long)]
    pub asset: String,
    /// How far back: 90s, 30m, 2h, 1d, 1w.
    #[arg(long, default_value = "1h")]
    pub since: String,
    /// Format of the decisions: text or one JSON document [default: text].
    #[arg(long, value_enum)]
    pub output: Option<Output>,
}

/// Prints the decisions; the process exit status.
pub fn run(config: Option<&Path>, args: HistoryArgs) -> ExitCode {
    let output = args.output.unwrap_or_default();
    run_async_on(
        Threads::One,
        pricing_oracle::history::run(config, &args.asset, &args.since, output),
    )
}

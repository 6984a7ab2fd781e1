//! `run`, the default: the keeper as a daemon, or one cycle with `--once`.

use std::path::Path;
use std::process::ExitCode;

use keeper_ton::keeper::{self, RunArgs};
use pricing_oracle::PricingKeeper;

/// Runs the keeper; the process exit status.
pub fn run(config: Option<&Path>, args: RunArgs) -> ExitCode {
    keeper::start::<PricingKeeper, _, _>(config, args.needs(), async move |loaded| {
        keeper::run::<PricingKeeper>(loaded, &args).await
    })
}

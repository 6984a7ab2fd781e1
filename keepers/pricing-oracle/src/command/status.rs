//! `status`: the price and its age the oracle holds for every configured asset.

use std::path::Path;
use std::process::ExitCode;

use keeper_ton::keeper::{self, StatusArgs};
use pricing_oracle::PricingKeeper;

/// Prints the oracle's prices; the process exit status.
pub fn run(config: Option<&Path>, args: StatusArgs) -> ExitCode {
    keeper::start::<PricingKeeper, _, _>(config, args.needs(), async move |loaded| {
        keeper::status::<PricingKeeper>(loaded, &args).await
    })
}

//! `wallet`: the keeper wallet (addresses, key, balance), and `wallet sweep` for rotation.

use std::path::Path;
use std::process::ExitCode;

use keeper_ton::keeper::{self, WalletArgs};
use pricing_oracle::PricingKeeper;

/// Prints or sweeps the keeper wallet; the process exit status.
pub fn run(config: Option<&Path>, args: WalletArgs) -> ExitCode {
    keeper::start::<PricingKeeper, _, _>(config, args.needs(), async move |loaded| {
        keeper::wallet::<PricingKeeper>(loaded, &args).await
    })
}

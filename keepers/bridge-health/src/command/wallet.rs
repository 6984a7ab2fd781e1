//! `wallet`: the keeper wallet (addresses, key, balance), and `wallet sweep` for rotation.

use std::path::Path;
use std::process::ExitCode;

use bridge_health::BridgeKeeper;
use keeper_ton::keeper::{self, WalletArgs};

/// Prints or sweeps the keeper wallet; the process exit status.
pub fn run(config: Option<&Path>, args: WalletArgs) -> ExitCode {
    keeper::start::<BridgeKeeper, _, _>(config, args.needs(), async move |loaded| {
        keeper::wallet::<BridgeKeeper>(loaded, &args).await
    })
}

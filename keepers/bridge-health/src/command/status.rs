//! `status`: the status and its age the oracle holds for every configured bridge.

use std::path::Path;
use std::process::ExitCode;

use bridge_health::BridgeKeeper;
use keeper_ton::keeper::{self, StatusArgs};

/// Prints the oracle's bridge statuses; the process exit status.
pub fn run(config: Option<&Path>, args: StatusArgs) -> ExitCode {
    keeper::start::<BridgeKeeper, _, _>(config, args.needs(), async move |loaded| {
        keeper::status::<BridgeKeeper>(loaded, &args).await
    })
}

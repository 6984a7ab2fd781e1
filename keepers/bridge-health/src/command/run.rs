//! `run`, the default: the keeper as a daemon, or one cycle with `--once`.

use std::path::Path;
use std::process::ExitCode;

use bridge_health::BridgeKeeper;
use keeper_ton::keeper::{self, RunArgs};

/// Runs the keeper; the process exit status.
pub fn run(config: Option<&Path>, args: RunArgs) -> ExitCode {
    keeper::start::<BridgeKeeper, _, _>(config, args.needs(), async move |loaded| {
        keeper::run::<BridgeKeeper>(loaded, &args).await
    })
}

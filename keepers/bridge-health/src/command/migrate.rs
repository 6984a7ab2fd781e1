//! `migrate`: applies the embedded database migrations and exits.

use std::path::Path;
use std::process::ExitCode;

use bridge_health::BridgeKeeper;
use keeper_ton::keeper::{self, MIGRATE_NEEDS};

/// Applies the migrations; the process exit status.
pub fn run(config: Option<&Path>) -> ExitCode {
    keeper::start::<BridgeKeeper, _, _>(config, MIGRATE_NEEDS, keeper::migrate)
}

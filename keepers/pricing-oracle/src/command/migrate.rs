//! `migrate`: applies the embedded database migrations and exits.

use std::path::Path;
use std::process::ExitCode;

use keeper_ton::keeper::{self, MIGRATE_NEEDS};
use pricing_oracle::PricingKeeper;

/// Applies the migrations; the process exit status.
pub fn run(config: Option<&Path>) -> ExitCode {
    keeper::start::<PricingKeeper, _, _>(config, MIGRATE_NEEDS, keeper::migrate)
}

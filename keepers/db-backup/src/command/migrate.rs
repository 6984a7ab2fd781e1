//! `migrate`: applies the embedded database migrations (the `backup_runs` table) and exits.

use std::path::Path;
use std::process::ExitCode;

/// Applies the migrations; the process exit status.
pub fn run(config: Option<&Path>) -> ExitCode {
    db_backup::app::start(config, db_backup::commands::migrate_command)
}

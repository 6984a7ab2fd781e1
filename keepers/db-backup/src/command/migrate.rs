//! `migrate`: creates `backup_runs` in the records database (`BACKUP_RECORDS_URL`) and exits.

use std::path::Path;
use std::process::ExitCode;

/// Applies the migrations; the process exit status.
pub fn run(config: Option<&Path>) -> ExitCode {
    db_backup::app::start(config, db_backup::commands::migrate_command)
}

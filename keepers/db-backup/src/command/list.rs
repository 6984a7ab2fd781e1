//! `list`: local and remote backups with what an operator decides by: age, size, encryption,
//! verification, where they are, status.

use std::path::Path;
use std::process::ExitCode;

use keeper_runtime::cli::Output;

/// The flags of `list`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ListArgs {
    /// Format of the list: a table, or one JSON array [default: text].
    #[arg(long, value_enum)]
    pub output: Option<Output>,
}

/// Prints the backups; the process exit status.
pub fn run(config: Option<&Path>, args: ListArgs) -> ExitCode {
    let output = args.output.unwrap_or_default();
    db_backup::app::start(config, async move |settings| {
        db_backup::commands::list_command(settings, output).await
    })
}

//! `prune`: GFS retention applied now, or shown with `--dry-run`.

use std::path::Path;
use std::process::ExitCode;

use keeper_runtime::cli::Output;

/// The flags of `prune`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PruneArgs {
    /// Only show what retention would keep and delete; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Format of the retention report: text, or one JSON document [default: text].
    #[arg(long, value_enum)]
    pub output: Option<Output>,
}

/// Applies retention; the process exit status.
pub fn run(config: Option<&Path>, args: PruneArgs) -> ExitCode {
    let output = args.output.unwrap_or_default();
    db_backup::app::start(config, async move |settings| {
        db_backup::commands::prune_command(settings, args.dry_run, output).await
    })
}

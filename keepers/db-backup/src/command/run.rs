//! `run`, the default: backups on `BACKUP_SCHEDULE` as a daemon, one backup with `--once`, or
//! the plan of one with `--dry-run`.

use std::path::Path;
use std::process::ExitCode;

use keeper_runtime::cli::{Carried, Output, misplaced_run_flags};

/// The flags of `run`; also accepted with no subcommand, since `run` is the default.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct RunArgs {
    /// Back up once and exit (0 success, 1 failed, 2 bad configuration).
    #[arg(long)]
    pub once: bool,
    /// Check what a backup needs (database, pg_dump, lock) and show what retention would
    /// delete, as one JSON document; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Format of the run report printed by --once [default: text].
    #[arg(long, value_enum)]
    pub output: Option<Output>,
}

impl RunArgs {
    /// The flags of both places: those written before `run` and those after it.
    pub fn merged(self, after: RunArgs) -> RunArgs {
        RunArgs {
            once: self.once || after.once,
            dry_run: self.dry_run || after.dry_run,
            output: after.output.or(self.output),
        }
    }

    /// Checks the flags written before `subcommand`, which takes `--output` when it `prints`
    /// and `--dry-run` when it `dry_runs`; what carries over to it (accepted there since these
    /// flags were once global).
    pub fn before(
        &self,
        subcommand: &str,
        prints: bool,
        dry_runs: bool,
    ) -> Result<Carried, clap::Error> {
        let given = [
            ("--once", self.once),
            ("--dry-run", self.dry_run && !dry_runs),
            ("--output", self.output.is_some() && !prints),
        ];
        match misplaced_run_flags(subcommand, &given) {
            Some(e) => Err(e),
            None => Ok(Carried {
                output: self.output,
                dry_run: self.dry_run,
            }),
        }
    }
}

/// Runs the backup job; the process exit status.
pub fn run(config: Option<&Path>, args: RunArgs) -> ExitCode {
    let output = args.output.unwrap_or_default();
    db_backup::app::start(config, async move |settings| {
        db_backup::daemon::run_command(settings, args.once, args.dry_run, output).await
    })
}

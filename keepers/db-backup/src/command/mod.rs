//! The command line of `db-backup` and its dispatch; each subcommand is one file.

mod list;
mod migrate;
mod prune;
mod restore;
mod run;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};

/// Logical PostgreSQL backups: dump, compress, checksum, store (local and/or S3), verify, prune.
///
/// Settings come from defaults < --config FILE < environment (BACKUP_DIR, BACKUP_S3_URL,
/// BACKUP_SCHEDULE, BACKUP_VERIFY, DATABASE_URL, …; see the README) < the flags of `restore`
/// and `verify`. Without a subcommand it runs.
#[derive(Debug, Parser)]
#[command(name = "db-backup", version)]
struct Cli {
    /// TOML configuration file (settings: defaults < file < environment < the flags of
    /// `restore` and `verify`).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    // `run` is the default, so its flags are taken without naming it.
    #[command(flatten, next_help_heading = "Options of run (the default)")]
    run: run::RunArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Back up on BACKUP_SCHEDULE as a daemon (the default), or once with --once.
    Run(run::RunArgs),
    /// List local and remote backups: age, size, encryption, verification, where, status.
    List(list::ListArgs),
    /// Restore a backup into an existing database, after checking its checksum.
    Restore(restore::RestoreArgs),
    /// Verify an existing backup (or every backup retention keeps, with --all) and record the
    /// result in its manifest and backup_runs.
    Verify(verify::VerifyArgs),
    /// Apply GFS retention now (with --dry-run: only show what would be deleted).
    Prune(prune::PruneArgs),
    /// Create the backup_runs table in BACKUP_RECORDS_URL (only it, with db-backup's own
    /// migration bookkeeping) and exit.
    Migrate,
}

impl Cli {
    /// The subcommand to run, with the flags written before it moved into it.
    fn resolve(self) -> Result<Command, clap::Error> {
        let before = self.run;
        Ok(match self.command {
            None => Command::Run(before),
            Some(Command::Run(after)) => Command::Run(before.merged(after)),
            Some(Command::List(mut args)) => {
                args.output = args.output.or(before.before("list", true, false)?.output);
                Command::List(args)
            }
            Some(Command::Restore(mut args)) => {
                args.output = args
                    .output
                    .or(before.before("restore", true, false)?.output);
                Command::Restore(args)
            }
            Some(Command::Verify(mut args)) => {
                args.output = args.output.or(before.before("verify", true, false)?.output);
                Command::Verify(args)
            }
            Some(Command::Prune(mut args)) => {
                let carried = before.before("prune", true, true)?;
                args.output = args.output.or(carried.output);
                args.dry_run |= carried.dry_run;
                Command::Prune(args)
            }
            Some(Command::Migrate) => {
                before.before("migrate", false, false)?;
                Command::Migrate
            }
        })
    }
}

/// Parses the command line and runs the subcommand; the process exit status.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = cli.config.clone();
    let config = config.as_deref();
    let command = cli
        .resolve()
        .unwrap_or_else(|e| e.format(&mut Cli::command()).exit());
    match command {
        Command::Run(args) => run::run(config, args),
        Command::List(args) => list::run(config, args),
        Command::Restore(args) => restore::run(config, args),
        Command::Verify(args) => verify::run(config, args),
        Command::Prune(args) => prune::run(config, args),
        Command::Migrate => migrate::run(config),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keeper_runtime::cli::Output;

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from(args)?.resolve()
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_before_a_subcommand_reach_it_only_where_they_act() {
        let Command::Prune(prune) =
            parse(&["k", "--dry-run", "--output", "json", "prune"]).unwrap()
        else {
            panic!("not prune");
        };
        assert!(prune.dry_run);
        assert_eq!(prune.output, Some(Output::Json));
        for args in [
            &["k", "--once", "list"][..],
            &["k", "--dry-run", "restore", "--from", "latest"],
            &["k", "--output", "json", "migrate"],
        ] {
            let e = parse(args).unwrap_err();
            assert_eq!(
                e.kind(),
                clap::error::ErrorKind::ArgumentConflict,
                "{args:?}"
            );
        }
        let Command::Run(run) = parse(&["k", "--once", "run", "--output", "json"]).unwrap() else {
            panic!("not run");
        };
        assert!(run.once && !run.dry_run);
        assert_eq!(run.output, Some(Output::Json));
    }
}

//! The command line of `bridge-health-keeper` and its dispatch; each subcommand is one file.

mod migrate;
mod run;
mod status;
mod wallet;

use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};
use keeper_runtime::cli::ConfigArg;
use keeper_ton::keeper::{RunArgs, StatusArgs, WalletArgs};

/// Watches cross-chain bridges and publishes their status to the TON oracle.
///
/// Settings: built-in defaults (config/bridge-health.toml, the four default bridges) < --config
/// FILE < environment. Without a subcommand it runs.
#[derive(Debug, Parser)]
#[command(name = "bridge-health-keeper", version)]
struct Cli {
    #[command(flatten)]
    config: ConfigArg,
    // `run` is the default, so its flags are taken without naming it.
    #[command(flatten, next_help_heading = "Options of run (the default)")]
    run: RunArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the keeper (the default): a daemon, or one cycle with --once.
    Run(RunArgs),
    /// Print the keeper wallet: addresses, version, network, public key, balance and seqno.
    Wallet(WalletArgs),
    /// Read the status the oracle holds for every configured bridge and print its age.
    Status(StatusArgs),
    /// Apply the embedded database migrations and exit.
    Migrate,
}

impl Cli {
    /// The subcommand to run, with the flags written before it moved into it.
    fn resolve(self) -> Result<Command, clap::Error> {
        let before = self.run;
        Ok(match self.command {
            None => Command::Run(before),
            Some(Command::Run(after)) => Command::Run(before.merged(after)),
            Some(Command::Wallet(mut args)) => {
                args.take_leading(&before)?;
                Command::Wallet(args)
            }
            Some(Command::Status(mut args)) => {
                args.take_leading(&before)?;
                Command::Status(args)
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
    let config = cli.config.config.clone();
    let config = config.as_deref();
    let command = cli
        .resolve()
        .unwrap_or_else(|e| e.format(&mut Cli::command()).exit());
    match command {
        Command::Run(args) => run::run(config, args),
        Command::Wallet(args) => wallet::run(config, args),
        Command::Status(args) => status::run(config, args),
        Command::Migrate => migrate::run(config),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keeper_runtime::cli::Output;
    use keeper_ton::keeper::WalletAction;

    fn parse(args: &[&str]) -> Result<Command, clap::Error> {
        Cli::try_parse_from(args)?.resolve()
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn output_before_a_subcommand_that_prints_reaches_it() {
        let Command::Status(args) = parse(&["k", "--output", "json", "status"]).unwrap() else {
            panic!("not status");
        };
        assert_eq!(args.output, Some(Output::Json));
    }

    #[test]
    fn run_flags_before_another_subcommand_are_refused() {
        for args in [
            &["k", "--once", "wallet"][..],
            &["k", "--dry-run", "status"],
            &["k", "--dry-run", "wallet"],
            &["k", "--force", "wallet", "--offline"],
            &["k", "--output", "json", "migrate"],
        ] {
            let e = parse(args).unwrap_err();
            assert_eq!(
                e.kind(),
                clap::error::ErrorKind::ArgumentConflict,
                "{args:?}"
            );
            assert!(e.to_string().contains("act only on `run`"), "{e}");
        }
        // `run` is the default: its flags before and after its name are one set.
        let Command::Run(run) =
            parse(&["k", "--once", "--config", "f", "run", "--dry-run"]).unwrap()
        else {
            panic!("not run");
        };
        assert!(run.once && run.dry_run && !run.force);
        // `wallet sweep` has a dry run of its own.
        let Command::Wallet(wallet) =
            parse(&["k", "--dry-run", "wallet", "sweep", "--to", "A"]).unwrap()
        else {
            panic!("not wallet");
        };
        let Some(WalletAction::Sweep(sweep)) = wallet.action else {
            panic!("not sweep");
        };
        assert!(sweep.dry_run);
    }
}

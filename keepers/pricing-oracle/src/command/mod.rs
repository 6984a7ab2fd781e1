//! The command line of `pricing-oracle-keeper` and its dispatch; each subcommand is one file.

mod history;
mod migrate;
mod run;
mod status;
mod wallet;

use std::process::ExitCode;

use clap::{CommandFactory as _, Parser, Subcommand};
use keeper_runtime::cli::ConfigArg;
use keeper_ton::keeper::{RunArgs, StatusArgs, WalletArgs};

/// Pushes aggregated stablecoin prices to the TON PriceOracle.
///
/// Settings: built-in defaults (config/pricing-oracle.toml) < --config FILE < environment; the
/// README lists every setting and its environment variable. Without a subcommand it runs.
#[derive(Debug, Parser)]
#[command(name = "pricing-oracle-keeper", version)]
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
    /// Read the price the oracle holds for every configured asset and print its age.
    Status(StatusArgs),
    /// Apply the embedded database migrations and exit.
    Migrate,
    /// Print the recorded decisions of one asset (needs DATABASE_URL).
    History(history::HistoryArgs),
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
            Some(Command::History(mut args)) => {
                args.output = args
                    .output
                    .or(before.before("history", true, false)?.output);
                Command::History(args)
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
        Command::History(args) => history::run(config, args),
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

    /// The command line names `history`, whether or not its own flags are complete.
    fn requested(args: &[&str]) -> bool {
        match parse(args) {
            Ok(command) => matches!(command, Command::History(_)),
            Err(e) => {
                e.kind() == clap::error::ErrorKind::MissingRequiredArgument
                    && e.to_string().contains("history --asset")
            }
        }
    }

    #[test]
    fn the_command_line_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn history_is_recognised_wherever_the_global_flags_are() {
        assert!(requested(&["k", "history", "--asset", "USDT"]));
        assert!(requested(&["k", "--config", "f.toml", "history"]));
        assert!(requested(&["k", "--output", "json", "history"]));
        assert!(!requested(&["k", "--once"]));
        assert!(!requested(&["k", "status"]));
        assert!(!requested(&["k", "--config", "history"]));
        let Command::History(args) = parse(&[
            "k", "--output", "json", "history", "--asset", "USDT", "--since", "2h",
        ])
        .unwrap() else {
            panic!("not history");
        };
        assert_eq!(args.output, Some(Output::Json));
        assert_eq!((args.asset.as_str(), args.since.as_str()), ("USDT", "2h"));
    }

    #[test]
    fn run_flags_before_another_subcommand_are_refused() {
        for args in [
            &["k", "--once", "wallet"][..],
            &["k", "--dry-run", "status"],
            &["k", "--dry-run", "wallet"],
            &["k", "--force", "history", "--asset", "USDT"],
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

//! `verify`: checks an existing backup (or, with `--all`, every backup retention keeps) and
//! records the result in its manifest and `backup_runs`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::ValueEnum;
use db_backup::config::VerifyMode;
use keeper_runtime::cli::Output;

/// How deep `verify` goes.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ModeArg {
    /// Checksum, full decompression and `pg_restore --list`.
    List,
    /// Checksum, restore into a scratch database, compare every table's row count.
    Restore,
}

/// The flags of `verify`.
#[derive(Debug, Clone, clap::Args)]
pub struct VerifyArgs {
    /// `latest`, a `.dump.zst` file, a backup name or its S3 key.
    #[arg(long, value_name = "FILE|KEY|latest", required_unless_present = "all")]
    pub from: Option<String>,
    /// Every backup within retention (of BACKUP_NAME's database, or of all); exits 1 naming
    /// the bad ones.
    #[arg(long, conflicts_with = "from")]
    pub all: bool,
    /// How (default: BACKUP_VERIFY, or `list` when that is `none`).
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// age identity file for an encrypted backup; default BACKUP_AGE_IDENTITY_FILE.
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Format of the verification result: one line, or one JSON document [default: text].
    #[arg(long, value_enum)]
    pub output: Option<Output>,
}

/// Verifies the backup; the process exit status (1 when it failed verification).
pub fn run(config: Option<&Path>, args: VerifyArgs) -> ExitCode {
    let output = args.output.unwrap_or_default();
    let mode = args.mode.map(|m| match m {
        ModeArg::List => VerifyMode::List,
        ModeArg::Restore => VerifyMode::Restore,
    });
    db_backup::app::start(config, async move |settings| {
        let from = args.from.as_deref().filter(|_| !args.all);
        db_backup::commands::verify_command(settings, from, mode, args.identity, output).await
    })
}

//! `restore`: a backup into an existing database, after checking its checksum.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use db_backup::commands::{RestoreOptions, RestoreRequest};
use keeper_runtime::cli::Output;

/// The flags of `restore`.
#[derive(Debug, Clone, clap::Args)]
pub struct RestoreArgs {
    /// `latest`, a `.dump.zst` file, a backup name (app-20260101T000000Z) or its S3 key.
    #[arg(long, value_name = "FILE|KEY|latest")]
    pub from: String,
    /// Database to restore into (or TARGET_DATABASE_URL, which keeps the password out of
    /// the process list).
    #[arg(long, value_name = "URL")]
    pub target_database_url: Option<String>,
    /// Do not restore ownership and privileges (roles of the source may not exist here).
    #[arg(long)]
    pub no_owner: bool,
    /// Restore into a database that already has tables: the backup's objects are dropped
    /// and recreated (others are left alone). Without it such a target is refused.
    #[arg(long)]
    pub clean: bool,
    /// First apply the backup's cluster globals (roles, memberships, role settings,
    /// tablespaces), skipping roles that exist; for a restore into a fresh cluster.
    #[arg(long)]
    pub with_globals: bool,
    /// age identity file (or unencrypted OpenSSH private key) for an encrypted backup;
    /// default BACKUP_AGE_IDENTITY_FILE.
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Format of the restore report: one line, or one JSON document [default: text].
    #[arg(long, value_enum)]
    pub output: Option<Output>,
}

/// Restores the backup; the process exit status.
pub fn run(config: Option<&Path>, args: RestoreArgs) -> ExitCode {
    let output = args.output.unwrap_or_default();
    let request = RestoreRequest {
        from: args.from,
        target_database_url: args.target_database_url,
        options: RestoreOptions {
            no_owner: args.no_owner,
            clean: args.clean,
            with_globals: args.with_globals,
        },
        identity: args.identity,
    };
    db_backup::app::start(config, async move |settings| {
        db_backup::commands::restore_command(settings, request, output).await
    })
}

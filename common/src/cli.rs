//! Command-line pieces every keeper shares (DESIGN §3) and the exit codes.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

/// Success, also "nothing needed publishing".
pub const EXIT_OK: i32 = 0;
/// The cycle failed: quorum not met, send failed, backup failed.
pub const EXIT_FAILED: i32 = 1;
/// Invalid configuration or usage.
pub const EXIT_USAGE: i32 = crate::config::EXIT_CONFIG;

/// How summaries are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Output {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON document on stdout, for scripts.
    Json,
}

/// Flags shared by every keeper binary.
#[derive(Debug, Clone, Args, Default)]
pub struct CommonArgs {
    /// TOML configuration file (settings: defaults < file < environment < flags).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Run one cycle and exit (0 success, 1 cycle failed, 2 bad configuration).
    #[arg(long, global = true)]
    pub once: bool,
    /// Do everything except send to the chain; print the signed BoC and a decoded summary.
    #[arg(long, global = true)]
    pub dry_run: bool,
    /// Output format of cycle summaries and of the `wallet` and `status` subcommands.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

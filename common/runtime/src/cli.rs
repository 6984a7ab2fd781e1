//! Command-line pieces every keeper shares, and the exit codes.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

/// Success, also "nothing needed publishing".
pub const EXIT_OK: i32 = 0;
/// The cycle failed: quorum not met, send failed, backup failed.
pub const EXIT_FAILED: i32 = 1;
/// Invalid configuration or usage.
pub const EXIT_USAGE: i32 = crate::config::EXIT_CONFIG;
/// The keeper wallet cannot pay for the batch (outcome `unfunded`): top it up.
pub const EXIT_UNFUNDED: i32 = 3;

/// How summaries are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Output {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON document on stdout, for scripts.
    Json,
}

/// `--config`: the one flag every subcommand of a chain keeper takes, so it is accepted before or
/// after the subcommand.
#[derive(Debug, Clone, Args, Default)]
pub struct ConfigArg {
    /// TOML configuration file (settings: defaults < file < environment).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
}

/// The usage error for flags of the default `run` written before another subcommand, where they
/// would do nothing: `given` pairs each flag's spelling with whether it was written. `None` when
/// none was.
pub fn misplaced_run_flags(subcommand: &str, given: &[(&str, bool)]) -> Option<clap::Error> {
    let flags: Vec<&str> = given
        .iter()
        .filter(|(_, set)| *set)
        .map(|(flag, _)| *flag)
        .collect();
    if flags.is_empty() {
        return None;
    }
    Some(clap::Error::raw(
        clap::error::ErrorKind::ArgumentConflict,
        format!(
            "{} before `{subcommand}` act only on `run`; `{subcommand} --help` lists what it takes\n",
            flags.join(", ")
        ),
    ))
}

/// The flags of the default `run` written before another subcommand that takes them too, and
/// so carry over to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Carried {
    /// `--output`, for a subcommand that prints.
    pub output: Option<Output>,
    /// `--dry-run`, for a subcommand with a dry run of its own.
    pub dry_run: bool,
}

/// Prints `value` as one JSON document, or as the text `text` renders.
pub fn print_as<T: serde::Serialize>(output: Output, value: &T, text: impl FnOnce() -> String) {
    match output {
        Output::Json => match serde_json::to_string_pretty(value) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("error: cannot encode output: {e}"),
        },
        Output::Text => println!("{}", text()),
    }
}

/// `1234500000` nanotons → `1.234500000`.
pub fn nano_to_ton(nano: u128) -> String {
    format!("{}.{:09}", nano / 1_000_000_000, nano % 1_000_000_000)
}

/// Prints a `--once` cycle: its summary as one JSON document (with `error` added when the
/// cycle failed) or as text rendered by `text`.
pub fn print_cycle<S: serde::Serialize>(
    summary: Option<&S>,
    text: impl Fn(&S) -> String,
    error: Option<&str>,
    output: Output,
) {
    match output {
        Output::Json => {
            let mut doc = summary
                .and_then(|s| serde_json::to_value(s).ok())
                .unwrap_or_else(|| serde_json::json!({"outcome": "failed"}));
            if let (Some(e), Some(obj)) = (error, doc.as_object_mut()) {
                obj.insert("error".into(), e.into());
            }
            println!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
        }
        Output::Text => {
            if let Some(s) = summary {
                print!("{}", text(s));
            }
            if let Some(e) = error {
                println!("error: {e}");
            }
        }
    }
}

/// Runs a keeper's async entry point on a two-worker runtime and turns its code into the process
/// exit status.
pub fn run_async(entry: impl std::future::Future<Output = i32>) -> std::process::ExitCode {
    run_async_on(Threads::Two, entry)
}

/// How many threads drive a keeper's tasks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Threads {
    /// One: for keepers that only wait on I/O (less memory, no cross-thread wake-ups).
    One,
    /// Two workers: the OTLP exporter can then flush its last spans on exit.
    Two,
}

/// Like [`run_async`] with the runtime chosen by `threads`.
pub fn run_async_on(
    threads: Threads,
    entry: impl std::future::Future<Output = i32>,
) -> std::process::ExitCode {
    let built = match threads {
        Threads::One => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        Threads::Two => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build(),
    };
    let runtime = match built {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::from(EXIT_FAILED as u8);
        }
    };
    let code = runtime.block_on(entry);
    std::process::ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// What a command cannot work without; configuration loading enforces it (exit 2).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Needs {
    /// A mnemonic (sending, `wallet`).
    pub mnemonic: bool,
    /// The oracle address (sending, `status`).
    pub oracle: bool,
    /// `DATABASE_URL` (`migrate`).
    pub database: bool,
}

/// The `migrate` subcommand: applies the binary's migration sets (`storage.migrations`) to
/// `storage`'s database and schema.
pub async fn migrate_command(
    storage: &crate::config::StorageSettings,
) -> Result<(), crate::store::StoreError> {
    // Configuration loading already required DATABASE_URL for this command.
    if let Some(url) = &storage.database_url {
        crate::store::migrate(url, &storage.db_schema, storage.migrations).await?;
        println!("migrations applied to schema {}", storage.db_schema);
    }
    Ok(())
}

//! Command-line pieces every keeper shares, and the exit codes.

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

#[cfg(feature = "chain")]
/// Why the keeper wallet could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum WalletSetupError {
    /// Deriving the key from the mnemonic failed (the message never carries a word).
    #[error("deriving the wallet key: {0}")]
    Key(#[from] crate::ton::KeyError),
    /// Building the wallet contract failed.
    #[error("building the wallet: {0}")]
    Build(#[from] crate::ton::BuildError),
}

#[cfg(feature = "chain")]
/// Said in every summary when a dry run signs with a throwaway key.
pub const EPHEMERAL_NOTE: &str =
    "no mnemonic given: signed with an EPHEMERAL key; nothing can be sent";

#[cfg(feature = "chain")]
/// The keeper wallet from the mnemonic, or (dry runs without one) from an ephemeral key, in
/// which case the note to show operators comes back too.
pub async fn load_wallet(
    ton: &crate::ton::TonSettings,
    mnemonic: Option<&crate::secret::Secret>,
) -> Result<(crate::ton::Wallet, Option<String>), WalletSetupError> {
    use crate::ton::{Wallet, WalletKeys};
    let (keys, note) = match mnemonic {
        Some(m) => (WalletKeys::from_mnemonic_blocking(m.clone()).await?, None),
        None => (WalletKeys::ephemeral(), Some(EPHEMERAL_NOTE.to_owned())),
    };
    let wallet = Wallet::new(keys, ton.wallet_version, ton.network)?;
    if let Some(n) = &note {
        tracing::warn!(address = %wallet.label(), "{n}");
    }
    Ok((wallet, note))
}

#[cfg(feature = "chain")]
/// Who contends for the wallet lease: the pod name (Kubernetes) or host name, and the pid.
pub fn holder_id() -> String {
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "keeper".to_owned());
    format!("{host}:{}", std::process::id())
}

/// `1234500000` nanotons → `1.234500000`.
pub fn nano_to_ton(nano: u128) -> String {
    format!("{}.{:09}", nano / 1_000_000_000, nano % 1_000_000_000)
}

#[cfg(feature = "chain")]
/// What the `wallet` subcommand prints, balance and seqno unless `--offline`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WalletOutput {
    /// Version, network, addresses and public key.
    #[serde(flatten)]
    pub info: crate::ton::WalletInfo,
    /// `active`, `uninitialized` or `frozen`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// Balance in TON, exact.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance_ton: Option<String>,
    /// The wallet's seqno (0 before deployment).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seqno: Option<u32>,
}

#[cfg(feature = "chain")]
/// The `wallet` subcommand shared by the keepers: reads the chain unless `offline`, prints
/// text or one JSON document.
pub async fn wallet_command(
    ton: &crate::ton::TonSettings,
    wallet: &crate::ton::Wallet,
    offline: bool,
    output: Output,
) -> Result<(), crate::ton::TransportError> {
    use crate::ton::TonTransport as _;
    let mut out = WalletOutput {
        info: wallet.info(),
        state: None,
        balance_ton: None,
        seqno: None,
    };
    if !offline {
        let transport = crate::ton::Toncenter::new(ton)?;
        let info = transport.wallet_information(wallet.address()).await?;
        out.state = Some(format!("{:?}", info.state).to_lowercase());
        out.balance_ton = Some(nano_to_ton(info.balance_nanoton));
        out.seqno = Some(info.seqno.unwrap_or(0));
    }
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&out).unwrap_or_default()),
        Output::Text => {
            let i = &out.info;
            println!("version:            {}", i.version);
            println!("network:            {}", i.network);
            println!("address (raw):      {}", i.address_raw);
            println!("bounceable:         {}", i.address_bounceable);
            println!("non-bounceable:     {}", i.address_non_bounceable);
            println!("public key:         {}", i.public_key_hex);
            if let (Some(state), Some(balance), Some(seqno)) =
                (&out.state, &out.balance_ton, out.seqno)
            {
                println!("state:              {state}");
                println!("balance:            {balance} TON");
                println!("seqno:              {seqno}");
            }
            println!("Fund the non-bounceable address; register the public key with the oracle.");
        }
    }
    Ok(())
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

#[cfg(feature = "chain")]
/// The subcommands of the chain-publishing keepers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Subcommand)]
pub enum KeeperCommand {
    /// Run the keeper (the default): a daemon, or one cycle with --once.
    Run,
    /// Print the keeper wallet: addresses, version, network, public key, balance and seqno.
    Wallet {
        /// Do not contact the chain (no balance or seqno).
        #[arg(long)]
        offline: bool,
    },
    /// Read what the oracle holds for every configured asset or bridge and print its age.
    Status,
    /// Apply the embedded database migrations and exit.
    Migrate,
}

/// Runs a keeper's async entry point on a two-worker runtime (multi-threaded so the OTLP
/// exporter can flush on exit) and turns its code into the process exit status.
pub fn run_async(entry: impl std::future::Future<Output = i32>) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
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

#[cfg(feature = "chain")]
impl KeeperCommand {
    /// What this command needs; a dry run sends nothing, so it needs neither key nor oracle.
    pub fn needs(self, dry_run: bool) -> Needs {
        match self {
            Self::Run => Needs {
                mnemonic: !dry_run,
                oracle: !dry_run,
                database: false,
            },
            Self::Wallet { .. } => Needs {
                mnemonic: true,
                ..Needs::default()
            },
            Self::Status => Needs {
                oracle: true,
                ..Needs::default()
            },
            Self::Migrate => Needs {
                database: true,
                ..Needs::default()
            },
        }
    }
}

/// The `migrate` subcommand: applies the embedded migrations to `storage`'s database and schema.
pub async fn migrate_command(
    storage: &crate::config::StorageSettings,
) -> Result<(), crate::store::StoreError> {
    // Configuration loading already required DATABASE_URL for this command.
    if let Some(url) = &storage.database_url {
        crate::store::migrate(url, &storage.db_schema).await?;
        println!("migrations applied to schema {}", storage.db_schema);
    }
    Ok(())
}

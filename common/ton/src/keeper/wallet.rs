//! The keeper wallet at start, and `wallet` (print it) and `wallet sweep` (empty it into its
//! successor).

use std::sync::Arc;

use anyhow::Context as _;
use keeper_runtime::alert::Alerter;
use keeper_runtime::cli::{EXIT_OK, EXIT_USAGE, Needs, Output, nano_to_ton};
use keeper_runtime::telemetry::Metrics;

use super::run::{RunArgs, state_dir};
use super::{ChainConfig as _, ChainKeeper, Loaded};
use crate::cache::ChainStore;
use crate::metrics::ChainMetrics;
use crate::{Delivery, DeliveryConfig, Journal, SweepDestination, Toncenter};

/// Why the keeper wallet could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum WalletSetupError {
    /// Deriving the key from the mnemonic failed (the message never carries a word).
    #[error("deriving the wallet key: {0}")]
    Key(#[from] crate::KeyError),
    /// Building the wallet contract failed.
    #[error("building the wallet: {0}")]
    Build(#[from] crate::BuildError),
}

/// Said in every summary when a dry run signs with a throwaway key.
pub const EPHEMERAL_NOTE: &str =
    "no mnemonic given: signed with an EPHEMERAL key; nothing can be sent";

/// The keeper wallet from the mnemonic, or (dry runs without one) from an ephemeral key, in
/// which case the note to show operators comes back too.
pub async fn load_wallet(
    ton: &crate::TonSettings,
    mnemonic: Option<std::sync::Arc<keeper_runtime::secret::Secret>>,
) -> Result<(crate::Wallet, Option<String>), WalletSetupError> {
    use crate::{Wallet, WalletKeys};
    let (keys, note) = match mnemonic {
        Some(m) => (WalletKeys::from_mnemonic_blocking(m).await?, None),
        None => (WalletKeys::ephemeral(), Some(EPHEMERAL_NOTE.to_owned())),
    };
    let wallet = Wallet::new(keys, ton.wallet_version, ton.network)?;
    if let Some(n) = &note {
        tracing::warn!(address = %wallet.label(), "{n}");
    }
    Ok((wallet, note))
}

/// Who contends for the wallet lease: the pod name (Kubernetes) or host name, the pid, and a
/// random id drawn once per process. Host and pid alone collide: systemd hosts often run without
/// `HOSTNAME` in the environment, and containers all start at pid 1.
pub fn holder_id() -> String {
    static INSTANCE: std::sync::LazyLock<u64> = std::sync::LazyLock::new(rand::random);
    let host = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "keeper".to_owned());
    format!("{host}:{}:{:016x}", std::process::id(), *INSTANCE)
}

/// What the `wallet` subcommand prints, balance and seqno unless `--offline`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct WalletOutput {
    /// Version, network, addresses and public key.
    #[serde(flatten)]
    pub info: crate::WalletInfo,
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

/// The `wallet` subcommand shared by the keepers: reads the chain unless `offline`, prints
/// text or one JSON document.
pub async fn wallet_command(
    ton: &crate::TonSettings,
    wallet: &crate::Wallet,
    offline: bool,
    output: Output,
) -> Result<(), crate::TransportError> {
    use crate::TonTransport as _;
    let mut out = WalletOutput {
        info: wallet.info(),
        state: None,
        balance_ton: None,
        seqno: None,
    };
    if !offline {
        let transport = crate::Toncenter::new(ton)?;
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

/// The flags of `wallet`; `--output` also reaches `wallet sweep`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct WalletArgs {
    /// Do not contact the chain (no balance or seqno).
    #[arg(long)]
    pub offline: bool,
    /// Format of the wallet details, or of the sweep report [default: text].
    #[arg(long, value_enum, global = true)]
    pub output: Option<Output>,
    /// What to do with the wallet (default: print it).
    #[command(subcommand)]
    pub action: Option<WalletAction>,
}

/// Actions on the keeper wallet.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum WalletAction {
    /// Send the whole balance to ADDRESS (wallet rotation), once no journaled message is in
    /// flight; with --dry-run, sign a message that cannot land and print it. Stop the keeper first.
    Sweep(SweepArgs),
}

/// The flags of `wallet sweep`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Args)]
pub struct SweepArgs {
    /// The successor wallet, user-friendly (48 characters, checksum verified, of TON_NETWORK):
    /// UQ… is sent non-bounceable, EQ… bounceable (back here if the successor is not deployed).
    #[arg(long, value_name = "ADDRESS")]
    pub to: String,
    /// Accept --to in raw form <workchain>:<64 hex> (no checksum; workchain 0 or -1), sent
    /// non-bounceable.
    #[arg(long)]
    pub raw_address: bool,
    /// Sign a sweep that has already expired and print it: the chain cannot accept it.
    #[arg(long)]
    pub dry_run: bool,
}

impl WalletArgs {
    /// Takes over the flags of `run` written before `wallet`: `--output`, and `--dry-run` for
    /// `wallet sweep`; any other is a usage error.
    pub fn take_leading(&mut self, before: &RunArgs) -> Result<(), clap::Error> {
        let sweeps = matches!(self.action, Some(WalletAction::Sweep(_)));
        let carried = before.before("wallet", true, sweeps)?;
        self.output = self.output.or(carried.output);
        if let Some(WalletAction::Sweep(sweep)) = &mut self.action {
            sweep.dry_run |= carried.dry_run;
        }
        Ok(())
    }

    /// Printing or sweeping the wallet needs its key.
    pub fn needs(&self) -> Needs {
        Needs {
            mnemonic: true,
            ..Needs::default()
        }
    }
}

/// `wallet`: prints the keeper wallet, or sweeps it (`wallet sweep`); the exit code.
pub async fn wallet<K: ChainKeeper>(
    loaded: Loaded<K::Config>,
    args: &WalletArgs,
) -> anyhow::Result<i32> {
    let output = args.output.unwrap_or_default();
    if let Some(WalletAction::Sweep(sweep_args)) = &args.action {
        return sweep::<K>(loaded, sweep_args, output).await;
    }
    let ton = loaded.config.ton();
    let (wallet, _) = load_wallet(ton, loaded.mnemonic).await?;
    wallet_command(ton, &wallet, args.offline, output)
        .await
        .context("reading the wallet from toncenter (use --offline to skip)")?;
    Ok(EXIT_OK)
}

/// Why a real sweep refuses to start without PostgreSQL or a state directory.
const NO_DURABLE_JOURNAL: &str = "wallet sweep needs a durable journal: set DATABASE_URL, \
     KEEPER_STATE_DIR or systemd StateDirectory=";

/// `wallet sweep --to ADDRESS [--dry-run]`: the whole balance to the successor wallet, through
/// the same journal and under the same wallet lease as the keeper, so a keeper still running or
/// a message of it still in flight stops it. A refused destination or a missing durable journal
/// exits 2 with one line.
async fn sweep<K: ChainKeeper>(
    loaded: Loaded<K::Config>,
    args: &SweepArgs,
    output: Output,
) -> anyhow::Result<i32> {
    let ton = loaded.config.ton();
    // The mnemonic goes into the derivation and is wiped there.
    let (wallet, _) = load_wallet(ton, loaded.mnemonic).await?;
    let to =
        match SweepDestination::parse(&args.to, args.raw_address, ton.network, wallet.address()) {
            Ok(to) => to,
            Err(e) => {
                eprintln!("error: wallet sweep --to: {e}");
                return Ok(EXIT_USAGE);
            }
        };
    // A sweep that forgets its message on a crash could be followed by a keeper signing
    // another body for its seqno: only a durable journal will do (a dry run journals nothing).
    // Said before connecting anything, so the refusal is the only line printed.
    let durable = loaded.config.storage().database_url.is_some() || state_dir(ton).is_some();
    if !durable && !args.dry_run {
        eprintln!("error: {NO_DURABLE_JOURNAL}");
        return Ok(EXIT_USAGE);
    }
    let metrics = Arc::new(Metrics::new(K::NAME).with::<ChainMetrics>());
    let store = ChainStore::connect(
        loaded.config.storage(),
        metrics.clone(),
        Alerter::disabled(),
    )
    .await;
    let transport = Toncenter::new(ton).context("toncenter transport")?;
    let journal = match Journal::choose(&store, state_dir(ton)) {
        Some(j) => j,
        None if args.dry_run => Journal::memory(),
        None => {
            eprintln!("error: {NO_DURABLE_JOURNAL}");
            return Ok(EXIT_USAGE);
        }
    };
    // The keeper's own lease: while a keeper holds it, the sweep would race its sends. A dry
    // run signs nothing that can land and leaves the lease alone.
    let lease = if args.dry_run {
        None
    } else {
        let mut lease = store.lease(&wallet.address_raw(), &holder_id());
        let status = lease.try_acquire_or_renew().await;
        if !status.held {
            anyhow::bail!(
                "the wallet lease of {} is held by {} ({} lease): stop the keeper first, or wait \
                 for its lease to lapse",
                wallet.label(),
                status.holder.as_deref().unwrap_or("another instance"),
                lease.backend()
            );
        }
        Some(tokio::sync::Mutex::new(lease))
    };
    let delivery =
        Delivery::new(transport, wallet, DeliveryConfig::from_settings(ton)).with_journal(journal);
    let swept = delivery.sweep(&to, args.dry_run, &lease).await;
    if let Some(lease) = &lease
        && let Err(e) = lease.lock().await.release().await
    {
        tracing::warn!(error = %e, "could not release the wallet lease; it lapses by itself");
    }
    let report = swept.context("sweeping the wallet")?;
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        ),
        Output::Text => {
            println!("from:     {}", report.from);
            println!("to:       {}", report.to);
            println!("bounce:   {}", report.bounce);
            println!("balance:  {} TON", nano_to_ton(report.balance_nanoton));
            println!("seqno:    {}", report.seqno);
            if let Some(boc) = &report.boc {
                println!("boc:      {boc}");
            }
            if let Some(tx) = &report.transaction_hash {
                println!("tx:       {tx}");
            }
            if let Some(after) = report.balance_after_nanoton {
                println!("left:     {} TON", nano_to_ton(after));
            }
            for note in &report.notes {
                println!("note:     {note}");
            }
        }
    }
    Ok(EXIT_OK)
}

#[cfg(test)]
mod tests {
    #[test]
    fn holder_id_carries_a_per_process_instance_id() {
        let id = super::holder_id();
        let parts: Vec<&str> = id.rsplitn(3, ':').collect();
        assert_eq!(parts.len(), 3, "{id}");
        assert_eq!(parts[0].len(), 16, "{id}");
        assert!(parts[0].chars().all(|c| c.is_ascii_hexdigit()), "{id}");
        assert_eq!(parts[1], std::process::id().to_string());
        // Drawn once: every lease of this process contends under the same name.
        assert_eq!(super::holder_id(), id);
    }
}

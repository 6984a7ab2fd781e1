//! `run`: the keeper as a daemon, or one cycle with `--once`, sending or (`--dry-run`) not.

use std::sync::Arc;

use anyhow::Context as _;
use keeper_runtime::alert::Alerter;
use keeper_runtime::cli::{Carried, Needs, Output, misplaced_run_flags, print_cycle};
use keeper_runtime::runner::{Cycle, CycleReport, Runner, Shutdown};
use keeper_runtime::telemetry::server::serve_ops;
use keeper_runtime::telemetry::{Health, Metrics};

use super::{ChainConfig, ChainKeeper, ChainParts, Loaded, holder_id, load_wallet, oracle_address};
use crate::cache::ChainStore;
use crate::metrics::ChainMetrics;
use crate::{Delivery, DeliveryConfig, Journal, Publisher, TonSettings, Toncenter};

/// The flags of `run`; also accepted with no subcommand, since `run` is the default.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args)]
pub struct RunArgs {
    /// Run one cycle and exit (0 success, 1 cycle failed, 2 bad configuration, 3 the wallet
    /// cannot pay).
    #[arg(long)]
    pub once: bool,
    /// Do everything except send to the chain; print the signed BoC and a decoded summary.
    #[arg(long)]
    pub dry_run: bool,
    /// Publish every subject with a value this tick, whatever the thresholds.
    #[arg(long)]
    pub force: bool,
    /// Format of the cycle summary printed by --once [default: text].
    #[arg(long, value_enum)]
    pub output: Option<Output>,
}

impl RunArgs {
    /// The flags of both places: those written before `run` and those after it.
    pub fn merged(self, after: RunArgs) -> RunArgs {
        RunArgs {
            once: self.once || after.once,
            dry_run: self.dry_run || after.dry_run,
            force: self.force || after.force,
            output: after.output.or(self.output),
        }
    }

    /// Checks the flags written before `subcommand`, which takes `--output` when it `prints`
    /// and `--dry-run` when it `dry_runs`, and none of the others; what carries over to it
    /// (accepted there since these flags were once global).
    pub fn before(
        &self,
        subcommand: &str,
        prints: bool,
        dry_runs: bool,
    ) -> Result<Carried, clap::Error> {
        let given = [
            ("--once", self.once),
            ("--dry-run", self.dry_run && !dry_runs),
            ("--force", self.force),
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

    /// A dry run sends nothing, so it needs neither key nor oracle.
    pub fn needs(&self) -> Needs {
        Needs {
            mnemonic: !self.dry_run,
            oracle: !self.dry_run,
            database: false,
        }
    }
}

/// `run`: sets up the wallet, storage, alerts and the ops server, then runs the cycle once or
/// on the interval; the exit code.
pub async fn run<K: ChainKeeper>(loaded: Loaded<K::Config>, args: &RunArgs) -> anyhow::Result<i32> {
    let dry_run = args.dry_run;
    let (wallet, ephemeral_note) = load_wallet(loaded.config.ton(), loaded.mnemonic)
        .await
        .context("setting up the keeper wallet")?;
    // The mnemonic went into the derivation and was wiped there: only the key remains.
    let config = Arc::new(loaded.config);
    let mut registry = Metrics::new(K::NAME).with::<ChainMetrics>();
    let families = K::register(&mut registry);
    let metrics = Arc::new(registry);
    let shutdown = Shutdown::new();
    shutdown
        .install_signal_handlers()
        .context("installing signal handlers")?;
    let health = Health::new(
        K::NAME,
        config.runner().period(),
        &["config", "wallet", "upstreams"],
    );
    health.mark_ready("config");
    let alerter = Alerter::start(config.alerts(), K::NAME, metrics.clone());
    let store = ChainStore::connect(config.storage(), metrics.clone(), alerter.clone()).await;
    let transport = Toncenter::new(config.ton())
        .context("toncenter transport")?
        .observed(metrics.clone(), alerter.clone());
    // A dry run sends nothing to confirm: its cycle timeout stays as configured.
    let (runner_settings, raised) = if dry_run {
        (config.runner().clone(), None)
    } else {
        super::runner_for_delivery(config.runner(), config.ton())
    };
    if let Some(warning) = raised {
        tracing::warn!("{warning}");
    }
    // A message an earlier cycle left unconfirmed is waited for within half a cycle at most:
    // the rest of the cycle still ends in time, with the message reported as settling.
    let cycle_timeout = super::cycle_timeout_for_delivery(config.runner(), config.ton());
    let delivery = Delivery::new(
        transport,
        wallet,
        DeliveryConfig::from_settings(config.ton()),
    )
    .with_metrics(metrics.clone())
    .with_journal(journal(config.ton(), &store, dry_run))
    .with_earlier_settle_timeout(cycle_timeout / 2);
    let lease = (!dry_run).then(|| store.lease(&delivery.wallet().address_raw(), &holder_id()));
    let publisher = Publisher::new(
        delivery,
        lease,
        config.ton(),
        alerter.clone(),
        metrics.clone(),
        health.clone(),
    )
    .to_oracle(oracle_address::<K>(&config)?, K::ORACLE_SETTING)
    .learning(K::OP);
    let parts = ChainParts {
        config: config.clone(),
        publisher,
        store,
        alerter: alerter.clone(),
        metrics: metrics.clone(),
        health: health.clone(),
        force: args.force,
        one_shot: args.once,
        notes: ephemeral_note.into_iter().collect(),
    };
    let mut cycle = K::cycle(parts, families)?;
    let mut runner = Runner::new(
        K::NAME,
        &runner_settings,
        metrics.clone(),
        health.clone(),
        alerter,
        shutdown.clone(),
    );

    if args.once {
        let run = runner.run_once(&mut cycle).await;
        print_cycle(
            cycle.last_report(),
            CycleReport::to_text,
            run.result.as_ref().err().map(|e| e.message()),
            args.output.unwrap_or_default(),
        );
        return Ok(run.exit_code());
    }

    let addr = config.telemetry().metrics_addr.context("metrics address")?;
    let ops = serve_ops(addr, metrics, health, shutdown.clone())
        .await
        .context("ops server")?;
    let code = runner.run_forever(&mut cycle).await;
    shutdown.trigger();
    ops.stopped().await;
    Ok(code)
}

/// Where in-flight messages are journaled: PostgreSQL (also reading the state directory), else
/// the state directory (`ton.state_dir` / `KEEPER_STATE_DIR`, else systemd's
/// `$STATE_DIRECTORY`), else memory, which is said once.
pub(super) fn journal(ton: &TonSettings, store: &ChainStore, dry_run: bool) -> Journal {
    if ton.journal == crate::JournalChoice::Memory {
        if !dry_run {
            tracing::warn!(
                "KEEPER_JOURNAL=memory: the message in flight is kept in memory only, as chosen; \
                 run one instance, since a restart may sign a second body for its seqno while the \
                 first can still land"
            );
        }
        return Journal::memory();
    }
    match Journal::choose(store, state_dir(ton)) {
        Some(journal) => {
            if !dry_run {
                tracing::info!(journal = %journal.describe(), "in-flight messages are journaled");
            }
            journal
        }
        // Only a dry run gets here (a sending keeper without a durable journal does not load):
        // it never journals anything.
        None => Journal::memory(),
    }
}

/// The state directory: `ton.state_dir` / `KEEPER_STATE_DIR`, else systemd's first
/// `$STATE_DIRECTORY`.
pub(super) fn state_dir(ton: &TonSettings) -> Option<std::path::PathBuf> {
    ton.state_dir.clone().or_else(|| {
        // systemd passes several directories colon-separated; the first is ours.
        std::env::var("STATE_DIRECTORY")
            .ok()
            .and_then(|d| d.split(':').next().map(std::path::PathBuf::from))
            .filter(|d| !d.as_os_str().is_empty())
    })
}

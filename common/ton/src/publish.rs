//! The end of every chain keeper's tick, shared: renew the wallet lease, watch the wallet's
//! balance and seqno, and turn the tick's oracle messages into a dry run, a standby skip or a
//! confirmed, read-back delivery. A keeper only says which messages and what to record.

use crate::metrics::ChainMetrics;
use std::sync::Arc;

use serde::Serialize;

use super::delivery::{Delivery, DeliveryError, DeliveryReport, Fence, WalletView};
use super::oracle::{OracleMessage, OracleUpdate};
use super::report::exit_code_meaning;
use super::summary::SummarySubject;
use super::summary::{DryRun, MessageSummary, dry_run_note, dry_run_offline, dry_run_valid_until};
use super::toncenter::Toncenter;
use super::{TonAddress, TonSettings};
use crate::lease::{FenceError, LeaseStatus, WalletLease};
use keeper_runtime::alert::{Alert, Alerter, Severity};
use keeper_runtime::cli::EXIT_UNFUNDED;
use keeper_runtime::runner::CycleError;
use keeper_runtime::telemetry::Health;
use keeper_runtime::telemetry::metrics::{Metrics, labels};

/// Alert raised when a confirmed message does not show on the oracle.
pub const UPDATE_NOT_APPLIED: &str = "update_not_applied";
/// Alert raised when the oracle's transaction for an update failed (non-zero compute exit code).
pub const UPDATE_FAILED_ONCHAIN: &str = "update_failed_onchain";
/// Alert raised when the keeper wallet's balance is below the configured threshold.
pub const WALLET_BALANCE_LOW: &str = "wallet_balance_low";
/// Alert raised when the keeper wallet's balance lasts fewer days than configured at the
/// current spend per day.
pub const WALLET_RUNWAY_LOW: &str = "wallet_runway_low";
/// Alert raised when the keeper wallet cannot pay for a batch (nothing was signed) or skipped
/// messages it could not pay; resolved once a batch can be paid again.
pub const WALLET_UNFUNDED: &str = "wallet_unfunded";
const NANOTON_PER_TON: f64 = 1e9;

/// How a chain keeper's tick ended; `outcome` in its summary and `/status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TickOutcome {
    /// Updates were sent, confirmed and read back.
    Published,
    /// `--dry-run`: built and signed, never sent.
    DryRun,
    /// Nothing needed publishing.
    #[default]
    NothingToPublish,
    /// Some subject lacked quorum and nothing else needed publishing.
    NoQuorum,
    /// Another instance holds the wallet lease.
    Standby,
    /// Building or sending failed.
    Failed,
    /// The wallet cannot pay for the batch: nothing was signed, or the messages it could not
    /// pay were skipped.
    Unfunded,
    /// A message from an earlier tick (one a cycle timeout cut, or one resumed from the journal)
    /// was still settling or has just landed: nothing new was signed, the next tick decides
    /// again with what is then on chain.
    Settling,
}

impl TickOutcome {
    /// The text in summaries and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Published => "published",
            Self::DryRun => "dry_run",
            Self::NothingToPublish => "nothing_to_publish",
            Self::NoQuorum => "no_quorum",
            Self::Standby => "standby",
            Self::Failed => "failed",
            Self::Unfunded => "unfunded",
            Self::Settling => "settling",
        }
    }
}

impl std::fmt::Display for TickOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What every chain keeper's summary says about sending; flattened into its own summary.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SendSummary {
    /// How the tick ended.
    pub outcome: TickOutcome,
    /// True for `--dry-run`.
    pub dry_run: bool,
    /// Every oracle message sent (or that a dry run signed), in execution order.
    pub messages: Vec<MessageSummary>,
    /// The signed external message, base64 (dry runs).
    pub boc: Option<String>,
    /// External messages built.
    pub externals: usize,
    /// Things the operator should know (ephemeral key, placeholder oracle, offline build…).
    pub notes: Vec<String>,
    /// Confirmation and read-back of a real send.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delivery: Option<DeliveryReport>,
}

impl SendSummary {
    /// An empty summary for a run with or without `--dry-run`, carrying the standing notes.
    pub fn new(dry_run: bool, notes: &[String]) -> Self {
        Self {
            dry_run,
            notes: notes.to_vec(),
            ..Self::default()
        }
    }

    /// Takes in a dry run's signed message.
    pub fn dry_run_built(&mut self, run: DryRun) {
        self.boc = Some(run.boc);
        self.externals = run.externals.len();
        self.messages = run.messages;
        self.outcome = TickOutcome::DryRun;
    }

    /// Takes in a confirmed delivery of `messages`.
    pub fn delivered(&mut self, messages: Vec<MessageSummary>, report: DeliveryReport) {
        self.externals = report.batches.len();
        self.messages = messages;
        self.delivery = Some(report);
        self.outcome = TickOutcome::Published;
    }

    /// Takes in a failed delivery: outcome `failed` (`unfunded` when the wallet could not pay),
    /// and the batches (exit codes, fees) when the messages were confirmed but did not apply.
    pub fn failed(&mut self, error: &DeliveryError) {
        self.outcome = if error.is_unfunded() {
            TickOutcome::Unfunded
        } else {
            TickOutcome::Failed
        };
        if let DeliveryError::NotLanded { report, .. } = error {
            self.externals = report.batches.len();
            self.delivery = Some((**report).clone());
        }
    }

    /// The first lines of a text rendering: outcome and notes.
    pub fn text_header(&self) -> String {
        let mut out = format!("outcome: {}\n", self.outcome);
        for note in &self.notes {
            out.push_str(&format!("note: {note}\n"));
        }
        for b in self.delivery.iter().flat_map(|d| &d.batches) {
            let result = match b.exit_code {
                Some(0) => "exit code 0".to_owned(),
                Some(code) => format!("exit code {code} ({})", exit_code_meaning(code)),
                None => "oracle result unknown (no transaction index)".to_owned(),
            };
            let fees = b
                .fees_nanoton
                .map(|f| format!(", fees {} TON", ton_text(f)))
                .unwrap_or_default();
            let unpaid = if b.unpaid > 0 {
                format!(", {} not paid for (skipped by the wallet)", b.unpaid)
            } else {
                String::new()
            };
            out.push_str(&format!(
                "batch: seqno {} ({} updates): {result}{fees}, value {} TON{unpaid}\n",
                b.seqno,
                b.actions,
                ton_text(b.value_nanoton)
            ));
        }
        out
    }
}

/// What happened to one tick's messages.
#[derive(Debug)]
pub enum Publication<T> {
    /// `--dry-run`: built and signed, never sent.
    DryRun(DryRun),
    /// Another instance holds the wallet lease; nothing was sent.
    Standby {
        /// Who holds it, as far as the lease knows.
        holder: String,
    },
    /// Confirmed on the wallet and read back from the oracle.
    Delivered {
        /// The messages sent, in execution order.
        messages: Vec<MessageSummary>,
        /// Batches and read-back.
        report: DeliveryReport,
        /// What the keeper's `before_send` returned (row ids…).
        sent: T,
    },
    /// A message from an earlier tick had to settle first and nothing new was signed
    /// ([`TickOutcome::Settling`]): still in flight, or it just landed and changed what is due.
    Settling {
        /// Which message, and what became of it.
        error: DeliveryError,
        /// What the keeper's `before_send` returned (nothing of it was sent).
        sent: T,
    },
    /// Sending failed (or the oracle did not apply the update: `update_not_applied` is raised).
    Failed {
        /// Why.
        error: DeliveryError,
        /// What the keeper's `before_send` returned.
        sent: T,
    },
}

/// Why a tick's messages could not even be attempted.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// Sending needs the oracle address (only dry runs work without one).
    #[error("no oracle address configured ({setting})")]
    NoOracle {
        /// The setting that names it.
        setting: &'static str,
    },
    /// The dry-run message could not be built.
    #[error("building the dry-run message failed: {0}")]
    DryRun(String),
}

/// The sending side of a chain keeper: delivery, the wallet lease, and what they report.
pub struct Publisher {
    delivery: Delivery<Toncenter>,
    oracle: Option<TonAddress>,
    oracle_setting: &'static str,
    /// Behind a mutex only so that `publish(&self)` can ask it for the fencing check.
    lease: Option<tokio::sync::Mutex<WalletLease>>,
    lease_status: Option<LeaseStatus>,
    alerter: Alerter,
    metrics: Arc<Metrics>,
    health: Health,
    dry_run: bool,
    value_nanoton: u64,
    /// What the last batch the wallet could not pay needed: a balance read that covers it
    /// resolves `wallet_unfunded` even before the next batch.
    unfunded_need: std::sync::Mutex<Option<u128>>,
    /// The op whose cost and spend are learned from the chain before the first send.
    learn_op: Option<&'static str>,
    /// The chain's history was read (once per process, successful or not).
    learned: std::sync::atomic::AtomicBool,
}

impl Publisher {
    /// A publisher with no oracle yet (see [`Publisher::to_oracle`]); `lease` is `None` for dry
    /// runs, which never send.
    pub fn new(
        delivery: Delivery<Toncenter>,
        lease: Option<WalletLease>,
        settings: &TonSettings,
        alerter: Alerter,
        metrics: Arc<Metrics>,
        health: Health,
    ) -> Self {
        Self {
            delivery,
            oracle: None,
            oracle_setting: "the oracle address",
            dry_run: lease.is_none(),
            lease: lease.map(tokio::sync::Mutex::new),
            lease_status: None,
            alerter,
            metrics,
            health,
            value_nanoton: settings.fixed_value_nanoton(),
            unfunded_need: std::sync::Mutex::new(None),
            learn_op: None,
            learned: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Before its first send, learns what messages of `op` cost and what the wallet spends
    /// from the chain (see [`Delivery::learn_from_chain`]).
    pub fn learning(mut self, op: &'static str) -> Self {
        self.learn_op = Some(op);
        self
    }

    /// Once per process, before anything is sent: `auto` and the spend rate from the wallet's
    /// history on chain. A history that cannot be read leaves `auto` at the maximum.
    async fn learn_once(&self, wallet: &WalletView) {
        let (Some(op), Some(oracle)) = (self.learn_op, &self.oracle) else {
            return;
        };
        if self.learned.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        // A wallet at seqno 0 has never sent: there is no history to learn from, and the two
        // listings would only cost a start on a rate-limited endpoint. Its first delivery's
        // confirmation teaches the value instead.
        if wallet.seqno > 0
            && let Err(e) = self.delivery.learn_from_chain(oracle, op).await
        {
            tracing::warn!(
                error = %e,
                "the wallet's history on chain is unreadable: UPDATE_VALUE_TON=auto starts at the maximum"
            );
        }
        // Marked only once it ran to the end: a tick the cycle timeout cut learns next time.
        self.learned
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Publishes to `oracle`, named by `setting` in messages (dry runs work without one).
    pub fn to_oracle(mut self, oracle: Option<TonAddress>, setting: &'static str) -> Self {
        self.oracle = oracle;
        self.oracle_setting = setting;
        self
    }

    /// The oracle this keeper publishes to, when configured.
    pub fn oracle(&self) -> Option<&TonAddress> {
        self.oracle.as_ref()
    }

    /// The delivery (wallet and transport), for reading the chain.
    pub fn delivery(&self) -> &Delivery<Toncenter> {
        &self.delivery
    }

    /// True for `--dry-run`.
    pub fn is_dry_run(&self) -> bool {
        self.dry_run
    }

    /// True when another instance holds the wallet lease: this one reads but never sends, and
    /// must not count its ticks as the keeper's own.
    pub fn is_standby(&self) -> bool {
        self.lease_status.as_ref().is_some_and(|s| !s.held)
    }

    /// Renews (or tries to take) the wallet lease; call first in every tick, so a standby keeps
    /// reading and serving metrics but never sends. Also sets `keeper_ton_requests_per_tick`
    /// from the requests made since the previous call.
    pub async fn renew_lease(&mut self) {
        // Ticks start here: what the TON endpoints were asked since the last start.
        let requests = self.delivery.transport().take_request_count();
        ChainMetrics::of(&self.metrics)
            .requests_per_tick
            .set(i64::try_from(requests).unwrap_or(i64::MAX));
        if let Some(lease) = &mut self.lease {
            let status = lease.get_mut().try_acquire_or_renew().await;
            let was_held = self.lease_status.as_ref().is_some_and(|s| s.held);
            let last_token = self.lease_status.as_ref().and_then(|s| s.token);
            // A takeover shows as a new fencing token even when "held" never read false between.
            if status.held && (!was_held || status.token != last_token) {
                self.delivery.journal_changed_hands();
            }
            self.health.set_lock_holder(status.holder.clone());
            self.lease_status = Some(status);
        }
    }

    /// At the start of a tick, before the oracle is read: this process's own message from an
    /// earlier tick (one the cycle timeout cut before its confirmation), booked if it landed
    /// meanwhile ([`Delivery::settle_earlier`]). Nothing in a dry run or on a standby.
    pub async fn settle_earlier(&self) -> Option<DeliveryReport> {
        if self.dry_run || self.is_standby() {
            return None;
        }
        self.delivery.settle_earlier().await
    }

    /// Balance and seqno gauges of the keeper wallet; below `balance_low_nanoton` (not in dry
    /// runs) raises `wallet_balance_low`. Once the keeper spent something, spend per day and
    /// runway (balance ÷ spend per day) gauges; a runway under `runway_low_days` raises
    /// `wallet_runway_low`. Marks the wallet reached for `/readyz`. The tick's one wallet read:
    /// its chain time serves the tick's decisions and the view the first signature after it.
    pub async fn watch_wallet(
        &self,
        balance_low_nanoton: Option<u64>,
        runway_low_days: Option<u64>,
    ) -> Result<WalletView, DeliveryError> {
        let wallet = self.delivery.wallet();
        let info = self.delivery.observe_wallet().await?;
        self.learn_once(&info).await;
        // The balance and seqno gauges were set by the read itself.
        let label = wallet.label();
        let balance_ton = info.balance_nanoton as f64 / NANOTON_PER_TON;
        match balance_low_nanoton {
            Some(low) if info.balance_nanoton < u128::from(low) && !self.dry_run => {
                self.alerter.fire(
                    Alert::new(
                        WALLET_BALANCE_LOW,
                        Severity::Warning,
                        format!(
                            "keeper wallet {label} holds {balance_ton:.3} TON, below {:.3} TON",
                            low as f64 / NANOTON_PER_TON
                        ),
                    )
                    .label("wallet", label.clone()),
                );
            }
            Some(_) => self.alerter.resolve(WALLET_BALANCE_LOW),
            None => {}
        }
        self.watch_runway(&label, info.balance_nanoton, runway_low_days);
        let covered = self
            .unfunded()
            .is_some_and(|need| info.balance_nanoton >= need);
        if covered {
            self.set_unfunded(None);
        }
        self.health.mark_ready("wallet");
        Ok(info)
    }

    fn watch_runway(&self, label: &str, balance_nanoton: u128, low_days: Option<u64>) {
        let Some(rate) = self
            .delivery
            .spend_rate()
            .filter(|r| r.per_day_nanoton > 0.0)
        else {
            return;
        };
        let per_day = rate.per_day_nanoton;
        let series = labels([("wallet", label)]);
        let runway_days = balance_nanoton as f64 / per_day;
        ChainMetrics::of(&self.metrics)
            .spend_per_day
            .get_or_create(&series)
            .set(per_day / NANOTON_PER_TON);
        ChainMetrics::of(&self.metrics)
            .runway_days
            .get_or_create(&series)
            .set(runway_days);
        match low_days {
            // Quiet until the rate rests on enough history: one batch is not a day.
            Some(_) if !rate.is_settled() => {}
            Some(low) if runway_days < low as f64 && !self.dry_run => {
                self.alerter.fire(
                    Alert::new(
                        WALLET_RUNWAY_LOW,
                        Severity::Warning,
                        format!(
                            "keeper wallet {label} lasts {runway_days:.1} days at {:.3} TON per \
                             day, below {low} days: top it up",
                            per_day / NANOTON_PER_TON
                        ),
                    )
                    .label("wallet", label.to_owned()),
                );
            }
            Some(_) => self.alerter.resolve(WALLET_RUNWAY_LOW),
            None => {}
        }
    }

    /// Publishes the messages `build` makes for the oracle: a dry run signs them (addressed to
    /// a placeholder when no oracle is set, offline when toncenter is unreachable); a standby
    /// sends nothing; otherwise `before_send` runs (record rows as sent…) and the batch is
    /// delivered, confirmed and read back.
    pub async fn publish<T>(
        &self,
        build: impl Fn(&TonAddress) -> Vec<OracleMessage>,
        notes: &mut Vec<String>,
        before_send: impl AsyncFnOnce() -> T,
    ) -> Result<Publication<T>, PublishError> {
        if self.dry_run {
            let to = match &self.oracle {
                Some(a) => a.clone(),
                None => {
                    notes.push(format!(
                        "no {} set: messages go to a placeholder address",
                        self.oracle_setting
                    ));
                    TonAddress::NULL
                }
            };
            return self.sign_dry_run(&build(&to), notes).await;
        }
        if let Some(status) = &self.lease_status
            && !status.held
        {
            let holder = status.holder.clone().unwrap_or_else(|| "unknown".into());
            return Ok(Publication::Standby { holder });
        }
        let oracle = self.oracle.as_ref().ok_or(PublishError::NoOracle {
            setting: self.oracle_setting,
        })?;
        let messages = build(oracle);
        let sent = before_send().await;
        let result = self.delivery.deliver_fenced(&messages, &self.lease).await;
        self.watch_funds(&messages, &result);
        match &result {
            Ok(report) => self.check_onchain(report),
            Err(DeliveryError::NotLanded { report, .. }) => self.check_onchain(report),
            Err(_) => {}
        }
        match result {
            Err(error @ (DeliveryError::InFlight { .. } | DeliveryError::ResumedLanded { .. })) => {
                tracing::info!(error = %error, "an earlier message settles first: nothing new signed this tick");
                Ok(Publication::Settling { error, sent })
            }
            Ok(report) => {
                self.alerter.resolve(UPDATE_NOT_APPLIED);
                // Each message carried its batch's value (with `auto` it changes between sends).
                let values = report.batches.iter().flat_map(|b| {
                    let per = b.value_nanoton / u128::try_from(b.actions.max(1)).unwrap_or(1);
                    std::iter::repeat_n(u64::try_from(per).unwrap_or(u64::MAX), b.actions)
                });
                let messages = messages
                    .iter()
                    .zip(values.chain(std::iter::repeat(self.value_nanoton)))
                    .map(|(m, value)| summarize(m, value))
                    .collect();
                Ok(Publication::Delivered {
                    messages,
                    report,
                    sent,
                })
            }
            Err(error) => {
                // Only an oracle that answered with something else did not apply the update;
                // one that could not be read says nothing about registration.
                let refused = matches!(&error, DeliveryError::NotLanded { missing, .. }
                    if missing.iter().any(|r| r.onchain_value.is_some()));
                if refused {
                    self.alerter.fire(Alert::new(
                        UPDATE_NOT_APPLIED,
                        Severity::Critical,
                        format!(
                            "the oracle did not apply the update: {error} (is this keeper registered?)"
                        ),
                    ));
                }
                Ok(Publication::Failed { error, sent })
            }
        }
    }

    /// The need of the last batch the wallet could not pay, while `wallet_unfunded` fires.
    fn unfunded(&self) -> Option<u128> {
        *self
            .unfunded_need
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Fires `wallet_unfunded` for an unpaid batch's `need` (its summary in `summary`), or
    /// resolves it with `None`.
    fn set_unfunded(&self, need: Option<(u128, String)>) {
        let mut slot = self
            .unfunded_need
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match need {
            Some((need, summary)) => {
                *slot = Some(need);
                self.alerter.fire(
                    Alert::new(WALLET_UNFUNDED, Severity::Critical, summary)
                        .label("wallet", self.delivery.wallet().label()),
                );
            }
            None => {
                *slot = None;
                self.alerter.resolve(WALLET_UNFUNDED);
            }
        }
    }

    /// `wallet_unfunded` after a delivery: fires when the wallet could not pay, resolves once a
    /// batch was paid in full.
    fn watch_funds(
        &self,
        messages: &[OracleMessage],
        result: &Result<DeliveryReport, DeliveryError>,
    ) {
        match result {
            Err(e @ DeliveryError::Unfunded(short)) => {
                self.set_unfunded(Some((
                    // Refused for gas although the estimate fit: only more than that balance helps.
                    short
                        .needed_nanoton
                        .max(short.balance_nanoton.saturating_add(1)),
                    format!("publishing stopped: {e}"),
                )));
            }
            Err(e @ DeliveryError::NotLanded { report, .. }) if e.is_unfunded() => {
                let unpaid: Vec<String> = report
                    .unpaid()
                    .map(|r| format!("{} {}", r.op, r.subject))
                    .collect();
                // Read back in input order: what the skipped ones would cost says when it is over.
                let skipped: Vec<OracleMessage> = messages
                    .iter()
                    .zip(&report.read_back)
                    .filter(|(_, r)| r.unpaid)
                    .map(|(m, _)| m.clone())
                    .collect();
                self.set_unfunded(Some((
                    self.delivery.cost_nanoton(&skipped),
                    format!(
                        "keeper wallet {} could not pay for {} update(s), skipped on chain: {}; \
                         top it up",
                        self.delivery.wallet().label(),
                        unpaid.len(),
                        unpaid.join(", ")
                    ),
                )));
            }
            Ok(_) | Err(DeliveryError::NotLanded { .. }) => self.set_unfunded(None),
            Err(_) => {}
        }
    }

    /// Raises `update_failed_onchain` when an oracle transaction of the delivery failed,
    /// naming its exit code; resolves it when every batch's result is known and 0.
    fn check_onchain(&self, report: &DeliveryReport) {
        let failed: Vec<(u32, i32)> = report
            .batches
            .iter()
            .filter_map(|b| b.exit_code.filter(|c| *c != 0).map(|c| (b.seqno, c)))
            .collect();
        if let Some((seqno, code)) = failed.first() {
            self.alerter.fire(
                Alert::new(
                    UPDATE_FAILED_ONCHAIN,
                    Severity::Critical,
                    format!(
                        "the oracle's transaction for the message with seqno {seqno} failed with \
                         exit code {code} ({}); the update did not apply",
                        exit_code_meaning(*code)
                    ),
                )
                .label("exit_code", code.to_string()),
            );
        } else if report.batches.iter().all(|b| b.exit_code == Some(0)) {
            self.alerter.resolve(UPDATE_FAILED_ONCHAIN);
        }
    }

    async fn sign_dry_run<T>(
        &self,
        messages: &[OracleMessage],
        notes: &mut Vec<String>,
    ) -> Result<Publication<T>, PublishError> {
        let built = match self.delivery.dry_run(messages).await {
            Err(e @ DeliveryError::Transport { .. }) => {
                // Still useful offline: assume an undeployed wallet and the local clock.
                notes.push(format!(
                    "toncenter unreachable ({e}): seqno 0, StateInit and the local clock assumed"
                ));
                let now = u64::try_from(chrono::Utc::now().timestamp()).unwrap_or(0);
                let valid_until = dry_run_valid_until(now);
                notes.push(dry_run_note(valid_until, now));
                dry_run_offline(
                    self.delivery.wallet(),
                    messages,
                    self.value_nanoton,
                    0,
                    valid_until,
                    false,
                )
                .map_err(|e| e.to_string())
            }
            Ok((run, now)) => {
                let valid_until = run.externals.first().map_or(0, |e| e.valid_until);
                notes.push(dry_run_note(valid_until, now));
                Ok(run)
            }
            Err(e) => Err(e.to_string()),
        };
        built.map(Publication::DryRun).map_err(PublishError::DryRun)
    }
}

/// The publisher's lease (none in dry runs, which never sign anything that can land).
impl Fence for Option<tokio::sync::Mutex<WalletLease>> {
    async fn check(&self) -> Result<Option<u64>, FenceError> {
        match self {
            Some(lease) => lease.lock().await.check_fence().await,
            None => Ok(None),
        }
    }
}

/// Nanotons as TON with nine decimals, exact.
fn ton_text(nanoton: u128) -> String {
    format!("{}.{:09}", nanoton / 1_000_000_000, nanoton % 1_000_000_000)
}

/// The cycle error of a failed delivery, `what` failed first: under `--once` it exits
/// [`EXIT_UNFUNDED`] when the wallet could not pay, else 1.
pub fn delivery_failure(error: &DeliveryError, what: &str) -> CycleError {
    let e = CycleError::failed(format!("{what}: {error}"));
    if error.is_unfunded() {
        e.with_exit_code(EXIT_UNFUNDED)
    } else {
        e
    }
}

/// How a sent message is listed in a summary (dry runs decode theirs from the signed BoC).
fn summarize(message: &OracleMessage, value_nanoton: u64) -> MessageSummary {
    let subject = match &message.update {
        OracleUpdate::Price(p) => SummarySubject::Price {
            asset: p.asset.clone(),
            asset_id: p.asset_id,
            price_micro: p.price_micro,
            timestamp: p.timestamp,
        },
        OracleUpdate::BridgeStatus(b) => SummarySubject::Bridge {
            bridge: b.bridge.clone(),
            bridge_id: b.bridge_id,
            is_online: b.is_online,
            last_seen: b.last_seen,
        },
    };
    MessageSummary {
        op: message.update.op_name().to_owned(),
        subject,
        to: message.to.to_base64_url(),
        value_nanoton: u128::from(value_nanoton),
    }
}

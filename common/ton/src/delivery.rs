//! Delivery: one in-flight seqno per wallet, confirm by seqno (and the wallet
//! transaction when the API has it), rebuild after expiry, never a second body for a seqno
//! while the first can still land, then read the oracle back.
//!
//! The caller holds the wallet lease around [`Delivery::deliver`]; inside one process the
//! `Delivery` itself serializes calls.

mod cost;
mod learn;
mod observe;
mod sweep;

pub use cost::{
    AutoValue, EXTERNAL_GAS_ESTIMATE_NANOTON, FORWARD_FEE_ESTIMATE_NANOTON, RUNWAY_HISTORY_SECS,
    RUNWAY_MIN_SENDS, SpendRate, batch_cost_nanoton, is_out_of_gas,
};
pub use learn::{HistoryError, Learned};
pub use observe::{OBSERVATION_REUSE, WalletView};
pub use sweep::{SWEEP_WORKCHAINS, SweepAddressError, SweepDestination, SweepReport};

use crate::metrics::ChainMetrics;
use std::sync::Arc;
use std::time::Duration;
use tokio::time::Instant;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use tokio::sync::Mutex;
use tonlib_core::TonAddress;

use super::BuildError;
use super::external::{SignedExternal, build_external};
use super::journal::{Journal, JournalEntry, JournalError, LANDING_MARGIN_SECS};
use super::oracle::{OracleMessage, OracleUpdate};
use super::readback::{applied, read_one, unpaid};
pub use super::report::{
    BatchReport, DeliveryError, DeliveryReport, OracleTransaction, ReadBack, Shortfall,
};
use super::settings::TonSettings;
use super::summary::{DryRun, DryRunError, dry_run_offline, dry_run_valid_until, outgoing};
use super::transport::{AccountState, ChainViews, TonTransport, Transaction, TransportError};
use super::wallet::{Wallet, seqno_from_data};
use crate::lease::FenceError;
use keeper_runtime::telemetry::metrics::{Metrics, labels};

/// How long an endpoint whose transaction listing shows no results is not asked for them.
const RESULTS_RECHECK: Duration = Duration::from_secs(3600);

/// Nanotons per TON, for the balance gauge.
const NANO: f64 = 1e9;

/// The first confirmation poll after a send: soon, because a chain may include the message in
/// its next block; the wait then doubles up to `poll_interval`.
pub const FIRST_CONFIRMATION_POLL: Duration = Duration::from_millis(250);

/// The wait before confirmation poll number `round` (0-based) of a message this call sent:
/// [`FIRST_CONFIRMATION_POLL`], doubling each round, never more than `poll_interval`.
pub fn confirmation_poll_delay(round: u32, poll_interval: Duration) -> Duration {
    FIRST_CONFIRMATION_POLL
        .saturating_mul(2u32.saturating_pow(round.min(16)))
        .min(poll_interval)
}

/// Delivery knobs; [`DeliveryConfig::from_settings`] maps `[ton]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryConfig {
    /// TON attached to each oracle message, nanotons (with `auto_value`, what a message
    /// carries only where no setting of its own applies: dry runs without a chain).
    pub value_nanoton: u64,
    /// `UPDATE_VALUE_TON=auto`: the value follows the oracle's observed cost.
    pub auto_value: Option<AutoValue>,
    /// `valid_until` = chain time + this.
    pub ttl: Duration,
    /// Time between seqno polls.
    pub poll_interval: Duration,
    /// Local-clock bound on waiting for one external to confirm or expire; after it the message
    /// stays in flight and the next call settles it first.
    pub confirm_timeout: Duration,
    /// How long to wait for the oracle to show the updates after confirmation.
    pub readback_timeout: Duration,
    /// Rebuilds after expiry before giving up on a batch.
    pub max_rebuilds: u32,
}

impl DeliveryConfig {
    /// From `[ton]` settings.
    pub fn from_settings(s: &TonSettings) -> Self {
        Self {
            value_nanoton: s.fixed_value_nanoton(),
            auto_value: s.auto_value(),
            ttl: Duration::from_secs(s.message_ttl),
            poll_interval: Duration::from_millis(s.poll_interval_ms),
            confirm_timeout: Duration::from_secs(s.confirm_timeout),
            readback_timeout: Duration::from_secs(s.readback_timeout),
            max_rebuilds: s.max_rebuilds,
        }
    }
}

/// Asked right before every signature whether this process may still sign for the wallet.
pub trait Fence: Sync {
    /// The fencing token of the current holding (`None` when the lease has none), or why not.
    fn check(&self) -> impl Future<Output = Result<Option<u64>, FenceError>> + Send;
}

/// No lease to ask: this process is the wallet's only sender.
#[derive(Debug, Clone, Copy, Default)]
pub struct Unfenced;

impl Fence for Unfenced {
    async fn check(&self) -> Result<Option<u64>, FenceError> {
        Ok(None)
    }
}

/// The message that may still land, remembered across calls.
#[derive(Debug, Clone)]
struct InFlight {
    ext: SignedExternal,
    ops: Vec<&'static str>,
    /// The updates it carries and the value each carried (none when found in the journal).
    messages: Vec<OracleMessage>,
    value_nanoton: u64,
    /// Chain time when it was built.
    chain_at_build: u64,
    /// Token of the lease holding it was signed under.
    fencing_token: Option<u64>,
    /// Found in the journal rather than sent by this process: re-send it before polling.
    resumed: bool,
}

/// The static op name for metrics labels.
fn op_name(text: &str) -> &'static str {
    match text {
        "update_price" => "update_price",
        "update_bridge_status" => "update_bridge_status",
        "sweep" => "sweep",
        _ => "unknown",
    }
}

impl InFlight {
    /// A message found in the journal: its build time is the chain time at build plus the
    /// wall-clock time since, at least its `valid_until`.
    fn resumed(entry: &JournalEntry) -> Result<Self, JournalError> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Ok(Self {
            ext: entry.external()?,
            ops: entry.ops.iter().map(|o| op_name(o)).collect(),
            messages: Vec::new(),
            value_nanoton: 0,
            // The wall clock may have jumped or stood still across a restart: from the first
            // poll on, the chain itself is asked whether it expired.
            chain_at_build: entry
                .chain_at_build
                .saturating_add(now.saturating_sub(entry.built_at_unix))
                .max(u64::from(entry.valid_until)),
            fencing_token: entry.fencing_token,
            resumed: true,
        })
    }

    /// The chain time after which the message can no longer land: `valid_until` plus the
    /// journal's margin, so that a chain time read a little early proves nothing.
    fn dead_after(&self) -> u64 {
        u64::from(self.ext.valid_until).saturating_add(LANDING_MARGIN_SECS)
    }
}

/// The oracle's result for one batch.
#[derive(Debug, Clone)]
struct OnChain {
    /// 0, or the first failing oracle transaction's exit code.
    exit_code: i32,
    /// Fees of the wallet transaction and the oracle's.
    fees_nanoton: u128,
    /// What the wallet lost: its fees, values and forwarding fees, less what came back.
    spent_nanoton: u128,
    /// Each oracle transaction's exit code and fees, in the order the messages were sent.
    oracle: Vec<(i32, u128)>,
    /// Messages the wallet transaction sent (its action phase skips those it cannot pay).
    sent: usize,
    /// The oracle's transactions as listed when the batch's were found (v2 only).
    listing: Vec<OracleTransaction>,
}

/// The endpoint has no transaction index.
struct Unindexed;

enum Settled {
    /// The seqno moved past the message, as enough endpoints agree.
    Confirmed(Landed),
    /// Enough endpoints show a chain time past `valid_until` plus the margin with the seqno
    /// still at the message's.
    Expired,
}

/// Which body took the seqno.
enum Landed {
    /// This message: its own wallet transaction when listed, `None` when nothing can tell.
    Ours(Option<Box<Transaction>>),
    /// The wallet's transactions since the build are listed, another external landed and this
    /// message's own transaction is not among them: another body took the seqno.
    Other,
}

/// What every endpoint's view says about one in-flight message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// The seqno moved past it.
    Moved,
    /// It can no longer land and did not.
    Expired,
    /// Not decided: too few endpoints agree either way.
    Open,
}

/// Judges the message for `seqno` that can land until chain time `dead_after` from `views`
/// of a wallet of `version`: a claim counts only when [`ChainViews::quorum`] endpoints make it,
/// so one endpoint running ahead (a higher seqno, a later chain time) neither confirms nor
/// expires anything.
fn verdict(
    views: &ChainViews,
    version: super::settings::WalletVersion,
    seqno: u32,
    dead_after: u64,
) -> Verdict {
    let mut moved = 0usize;
    let mut expired = 0usize;
    for a in &views.answered {
        let current = match (&a.state, &a.data) {
            (AccountState::Active, Some(data)) => seqno_from_data(version, data).ok(),
            // Deployed but no data in the answer: this endpoint says nothing.
            (AccountState::Active, None) => None,
            _ => Some(0),
        };
        match current {
            Some(s) if s > seqno && a.state == AccountState::Active => moved += 1,
            Some(_) if a.sync_utime > dead_after => expired += 1,
            _ => {}
        }
    }
    let quorum = views.quorum();
    if moved >= quorum {
        Verdict::Moved
    } else if expired >= quorum {
        Verdict::Expired
    } else {
        if moved + expired > 0 {
            tracing::warn!(
                seqno,
                moved,
                expired,
                quorum,
                answered = views.answered.len(),
                "too few endpoints agree on the message's fate; not believed yet"
            );
        }
        Verdict::Open
    }
}

/// Whether `txs` (the wallet's latest, newest first, asked for `limit`) show that a body other
/// than the one with these hashes took the seqno of a message built at chain time
/// `built_at`: `Some(Ours)` when it is listed, `Some(Other)` when the listing reaches back
/// before the build, holds another external since and not this one, `None` when it cannot tell.
fn own_transaction(
    txs: &[Transaction],
    limit: u32,
    body_b64: &str,
    hashes_b64: &[String],
    built_at: u64,
) -> Option<Landed> {
    let ours = txs.iter().find(|t| {
        t.in_msg_body_hash.as_deref() == Some(body_b64)
            || t.in_msg_hash
                .as_ref()
                .is_some_and(|h| hashes_b64.contains(h))
    });
    if let Some(t) = ours {
        return Some(Landed::Ours(Some(Box::new(t.clone()))));
    }
    let complete = usize::try_from(limit).is_ok_and(|l| txs.len() < l)
        || txs.iter().any(|t| t.utime > 0 && t.utime < built_at);
    // An external in has no source; the one that took the seqno landed after the build.
    let another = txs
        .iter()
        .any(|t| t.in_msg_source.is_none() && t.in_msg_hash.is_some() && t.utime >= built_at);
    (complete && another).then_some(Landed::Other)
}

/// What a refusal of a freshly signed body by every endpoint means.
enum Refusal {
    /// It may still mean anything: settle it as before (it stays in flight until it expires).
    Unclear,
    /// The wallet is at another seqno: the body can never land; sign again from a fresh read.
    Dead,
    /// The wallet cannot pay the gas of accepting it: nothing more is signed.
    Unfunded(DeliveryError),
}

/// Whose message [`Delivery::settle`] polls for, which decides when it first looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Poll {
    /// Sent by this call a moment ago: the first look waits [`FIRST_CONFIRMATION_POLL`].
    JustSent,
    /// From an earlier call or another process: it may have landed already, so look at once.
    Earlier,
}

/// What the wallet looked like at one read.
struct WalletRead {
    state: AccountState,
    seqno: u32,
    balance_nanoton: u128,
}

/// Sends oracle updates through one wallet.
pub struct Delivery<T> {
    transport: T,
    wallet: Wallet,
    config: DeliveryConfig,
    metrics: Option<Arc<Metrics>>,
    in_flight: Mutex<Option<InFlight>>,
    costs: cost::Costs,
    journal: Journal,
    /// Seqno and balance at which every endpoint refused a body for lack of gas money: while
    /// the wallet stays there, signing again is hopeless.
    refused_for_gas: std::sync::Mutex<Option<(u32, u128)>>,
    /// How long a message from an earlier call is waited for before this call gives up with
    /// [`DeliveryError::InFlight`] (default: the confirm timeout).
    earlier_settle_timeout: Option<Duration>,
    /// The wallet as the last read showed it ([`observe`]).
    observed: std::sync::Mutex<Option<observe::Observation>>,
    /// Until when the v2 listing is not asked for results: it listed transactions without
    /// their BoC, so no exit code shows there.
    listing_without_results_until: std::sync::Mutex<Option<Instant>>,
    /// Batches of the current delivery that landed, in order, until the delivery returns its
    /// report: a cycle timeout that cuts it while it reads their results leaves them to
    /// [`Delivery::settle_earlier`] instead of to nobody.
    unbooked: std::sync::Mutex<Vec<Unbooked>>,
}

/// A batch that landed before its delivery returned.
#[derive(Debug, Clone)]
struct Unbooked {
    flight: InFlight,
    /// Its own wallet transaction, when listed.
    transaction: Option<Box<Transaction>>,
    /// Its result on chain, once read and booked.
    booked: Option<BatchReport>,
}

impl<T: TonTransport> Delivery<T> {
    /// A delivery through `transport` for `wallet`.
    pub fn new(transport: T, wallet: Wallet, config: DeliveryConfig) -> Self {
        Self {
            transport,
            wallet,
            config,
            metrics: None,
            in_flight: Mutex::new(None),
            costs: cost::Costs::default(),
            journal: Journal::memory(),
            refused_for_gas: std::sync::Mutex::new(None),
            earlier_settle_timeout: None,
            observed: std::sync::Mutex::new(None),
            listing_without_results_until: std::sync::Mutex::new(None),
            unbooked: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Bounds the wait for a message from an earlier call (one a cycle timeout cut, or one
    /// resumed from the journal) before anything new is signed. A keeper sets it well inside its
    /// cycle timeout, so that a cycle finding such a message still ends in time, with
    /// [`DeliveryError::InFlight`] if it has not settled, instead of being cut again.
    pub fn with_earlier_settle_timeout(mut self, timeout: Duration) -> Self {
        self.earlier_settle_timeout = Some(timeout);
        self
    }

    /// The wallet was (re)gained or its fencing token changed (lease takeover). The journal is
    /// read before every signature anyway; this only says so in the log.
    pub fn journal_changed_hands(&self) {
        tracing::info!(
            wallet = %self.wallet.label(),
            "wallet changed hands: the journal is read again before the next signature"
        );
    }

    /// Writes every message down in `journal` before its first send, and resumes what it finds
    /// there before signing anything.
    pub fn with_journal(mut self, journal: Journal) -> Self {
        self.journal = journal;
        self
    }

    /// Where in-flight messages are journaled.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// Records `keeper_ton_messages_total`, `keeper_wallet_seqno`, `keeper_wallet_balance_ton`,
    /// `keeper_update_latency_seconds`, `keeper_update_success_total` and
    /// `pricing_oracle_last_update_timestamp`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// The wallet.
    pub fn wallet(&self) -> &Wallet {
        &self.wallet
    }

    /// The transport.
    pub fn transport(&self) -> &T {
        &self.transport
    }

    /// The knobs.
    pub fn config(&self) -> &DeliveryConfig {
        &self.config
    }

    /// The value each message of a batch of `ops` carries: the fixed setting, or with `auto` the
    /// oracle's recently observed cost × the safety factor within the bounds (the maximum until
    /// something was observed, and again after an out-of-gas result).
    pub fn value_nanoton_for(&self, ops: &[&'static str]) -> u64 {
        match &self.config.auto_value {
            Some(auto) => self.costs.value_for(auto, ops),
            None => self.config.value_nanoton,
        }
    }

    /// What the wallet spent per day lately, nanotons: fees and values less what came back,
    /// over the last 24 hours (extrapolated from at least one hour). `None` before any send.
    pub fn spend_per_day_nanoton(&self) -> Option<f64> {
        self.costs.per_day()
    }

    /// The spend rate with the history behind it (chain history and this process's sends),
    /// `None` before any send is known.
    pub fn spend_rate(&self) -> Option<SpendRate> {
        self.costs.rate()
    }

    /// Seqno and valid_until of a message from an earlier call that may still land.
    pub async fn in_flight(&self) -> Option<(u32, u32)> {
        self.in_flight
            .lock()
            .await
            .as_ref()
            .map(|f| (f.ext.seqno, f.ext.valid_until))
    }

    fn count(&self, ops: &[&'static str], outcome: &str) {
        if let Some(m) = &self.metrics {
            for op in ops {
                ChainMetrics::of(m)
                    .ton_messages
                    .get_or_create(&labels([("op", op), ("outcome", outcome)]))
                    .inc();
            }
        }
    }

    /// Builds and signs everything `deliver` would send, from the current chain state, and
    /// sends nothing. The signature is real but `valid_until` lies in the past
    /// ([`dry_run_valid_until`]), so the printed BoC can never land; returns the chain time too.
    pub async fn dry_run(
        &self,
        messages: &[OracleMessage],
    ) -> Result<(DryRun, u64), DeliveryError> {
        if messages.is_empty() {
            return Err(DeliveryError::Empty);
        }
        let (w, now, _) = match self.take_observation() {
            Some(read) => read,
            None => (self.read_wallet().await?, self.chain_time().await?, None),
        };
        let ops: Vec<_> = messages.iter().map(|m| m.update.op_name()).collect();
        let run = dry_run_offline(
            &self.wallet,
            messages,
            self.value_nanoton_for(&ops),
            w.seqno,
            dry_run_valid_until(now),
            w.state == AccountState::Active,
        )
        .map_err(|e| match e {
            DryRunError::Build(b) => DeliveryError::Build(b),
            DryRunError::Decode(d) => DeliveryError::Build(BuildError::Cell(d.to_string())),
        })?;
        self.count(&ops, "dry_run");
        Ok((run, now))
    }

    /// Settles what `slot` holds (this process's last message, or one resumed from the
    /// journal) before anything new is signed: confirmed or expired, it is forgotten; still
    /// able to land, it is [`DeliveryError::InFlight`]. With `stop_on_resumed`, a predecessor's
    /// message that just landed ends the call ([`DeliveryError::ResumedLanded`]).
    async fn settle_slot(
        &self,
        slot: &mut Option<InFlight>,
        stop_on_resumed: bool,
    ) -> Result<(), DeliveryError> {
        let mut queue = match slot.take() {
            Some(own) => vec![own],
            None => Vec::new(),
        };
        // Every journaled message, this process's own or another holder's, is settled in seqno
        // order before anything new is signed.
        for found in self.resume().await? {
            if !queue.iter().any(|q| same_body(&q.ext, &found.ext)) {
                queue.push(found);
            }
        }
        queue.sort_by_key(|f| f.ext.seqno);
        for prev in queue {
            *slot = Some(prev.clone());
            tracing::info!(
                seqno = prev.ext.seqno,
                resumed = prev.resumed,
                "settling a message from an earlier cycle first"
            );
            let wait = self
                .earlier_settle_timeout
                .unwrap_or(self.config.confirm_timeout);
            match self.settle(&prev, None, Poll::Earlier, wait).await {
                Ok(Settled::Confirmed(Landed::Other)) => {
                    tracing::warn!(
                        seqno = prev.ext.seqno,
                        "another body took this seqno: this message never landed"
                    );
                    self.count(&prev.ops, "other_landed");
                    self.forget(&prev).await;
                    *slot = None;
                }
                Ok(Settled::Confirmed(_)) if prev.resumed && stop_on_resumed => {
                    // A predecessor's updates just landed: what this call was asked to send was
                    // chosen without them, so the caller decides again next time.
                    self.count(&prev.ops, "confirmed");
                    self.forget(&prev).await;
                    *slot = None;
                    return Err(DeliveryError::ResumedLanded {
                        seqno: prev.ext.seqno,
                    });
                }
                Ok(Settled::Confirmed(_)) => {
                    self.count(&prev.ops, "confirmed");
                    self.forget(&prev).await;
                    *slot = None;
                }
                Ok(Settled::Expired) => {
                    self.count(&prev.ops, "expired");
                    self.forget(&prev).await;
                    *slot = None;
                }
                Err(DeliveryError::Unconfirmed { .. }) => {
                    return Err(DeliveryError::InFlight {
                        seqno: prev.ext.seqno,
                        valid_until: prev.ext.valid_until,
                    });
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Right before a signature for `seqno`: a journaled body for this seqno or a later one
    /// that may still land (another holder's, written while this process did not hold the
    /// wallet) is taken into `slot` and stops the signature; a journal that cannot be read stops
    /// it too. Dead entries for this seqno are cleared, judged by `chain_now`, the chain time the
    /// endpoints agree on (`None`: too few answered, so every entry may still land).
    async fn check_journal_at(
        &self,
        seqno: u32,
        chain_now: Option<u64>,
        slot: &mut Option<InFlight>,
    ) -> Result<(), DeliveryError> {
        let wallet = self.wallet.address_raw();
        for entry in self.journal.entries(&wallet).await? {
            if entry.seqno < seqno {
                continue;
            }
            // Without a chain time enough endpoints agree on, every entry may still land.
            if chain_now.is_some_and(|now| !entry.may_land_at(now)) {
                if let Err(e) = self
                    .journal
                    .clear(&wallet, entry.seqno, &entry.body_hash)
                    .await
                {
                    tracing::warn!(seqno = entry.seqno, error = %e, "could not clear an expired journal entry");
                }
                continue;
            }
            tracing::warn!(
                seqno = entry.seqno,
                valid_until = entry.valid_until,
                fencing_token = entry.fencing_token,
                "another body is journaled for this seqno and may still land: settling it instead of signing"
            );
            let flight = InFlight::resumed(&entry)?;
            let err = DeliveryError::InFlight {
                seqno: flight.ext.seqno,
                valid_until: flight.ext.valid_until,
            };
            *slot = Some(flight);
            return Err(err);
        }
        Ok(())
    }

    /// Sends `messages` (in this order) and returns once every batch is confirmed and read back.
    /// Updates that did not land make it an error ([`DeliveryError::NotLanded`]). For a single
    /// sender per wallet; a keeper behind a lease uses [`Delivery::deliver_fenced`].
    pub async fn deliver(
        &self,
        messages: &[OracleMessage],
    ) -> Result<DeliveryReport, DeliveryError> {
        self.deliver_fenced(messages, &Unfenced).await
    }

    /// [`Delivery::deliver`], asking `fence` right before every signature (first build and
    /// every rebuild) whether this process still holds the wallet; its token goes into the
    /// batch report. A refusal signs nothing ([`DeliveryError::Fenced`]).
    pub async fn deliver_fenced(
        &self,
        messages: &[OracleMessage],
        fence: &impl Fence,
    ) -> Result<DeliveryReport, DeliveryError> {
        if messages.is_empty() {
            return Err(DeliveryError::Empty);
        }
        let mut slot = self.in_flight.lock().await;
        self.settle_slot(&mut slot, true).await?;
        lock(&self.unbooked).clear();
        let mut batches: Vec<BatchReport> = Vec::new();
        // Updates known without reading the oracle: not paid for, or applied by its transaction.
        let mut known: Vec<Option<ReadBack>> = vec![None; messages.len()];
        let mut offset = 0;
        while offset < messages.len() {
            let pending = &messages[offset..];
            match self.send_batch(pending, &mut slot, fence).await {
                Ok(b) => {
                    known_from_result(&mut known, messages, offset, &b);
                    offset += b.actions;
                    batches.push(b);
                }
                // Earlier batches went out: report them, and the rest as not paid for.
                Err(DeliveryError::Unfunded(_)) if !batches.is_empty() => {
                    for (i, m) in messages.iter().enumerate().skip(offset) {
                        known[i] = Some(unpaid(m));
                    }
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        drop(slot);
        // The oracle's transaction failed: the update cannot show up, so one read tells all.
        let failed = batches.iter().any(|b| b.exit_code.is_some_and(|c| c != 0));
        let wait = if failed {
            Duration::ZERO
        } else {
            self.config.readback_timeout
        };
        let read_back = self.read_back(messages, known, wait).await;
        lock(&self.unbooked).clear();
        let report = DeliveryReport { batches, read_back };
        let missing: Vec<ReadBack> = report.not_landed().cloned().collect();
        if missing.is_empty() {
            Ok(report)
        } else {
            Err(DeliveryError::NotLanded {
                missing,
                report: Box::new(report),
            })
        }
    }

    /// The journaled message of this wallet, if one may still land (start, takeover, or a
    /// predecessor's message): it is settled before anything new is signed.
    async fn resume(&self) -> Result<Vec<InFlight>, DeliveryError> {
        let wallet = self.wallet.address_raw();
        // An unreadable journal stops signing: another holder may have left a body in it.
        let entries = self.journal.entries(&wallet).await?;
        let mut out = Vec::with_capacity(entries.len());
        for entry in entries {
            tracing::warn!(
                seqno = entry.seqno,
                valid_until = entry.valid_until,
                fencing_token = entry.fencing_token,
                hash = %entry.normalized_hash,
                "resuming a journaled message: re-sending the same BoC, signing nothing new until it settles"
            );
            out.push(InFlight::resumed(&entry)?);
        }
        Ok(out)
    }

    /// Erases a settled message from the journal; a failure only means it is settled again
    /// (found confirmed or expired) next time.
    async fn forget(&self, flight: &InFlight) {
        if let Err(e) = self
            .journal
            .clear(
                &self.wallet.address_raw(),
                flight.ext.seqno,
                &hex::encode(flight.ext.body_hash),
            )
            .await
        {
            tracing::warn!(seqno = flight.ext.seqno, error = %e, "could not clear the in-flight journal");
        }
    }

    async fn read_wallet(&self) -> Result<WalletRead, DeliveryError> {
        let info = self
            .transport
            .wallet_information(self.wallet.address())
            .await
            .map_err(|source| DeliveryError::Transport {
                stage: "reading the wallet",
                source,
            })?;
        let seqno = if info.state == AccountState::Active {
            info.seqno.unwrap_or(0)
        } else {
            0
        };
        if let Some(m) = &self.metrics {
            let l = labels([("wallet", &self.wallet.label())]);
            ChainMetrics::of(m)
                .wallet_seqno
                .get_or_create(&l)
                .set(i64::from(seqno));
            ChainMetrics::of(m)
                .wallet_balance
                .get_or_create(&l)
                .set(info.balance_nanoton as f64 / NANO);
        }
        if info.state == AccountState::Frozen {
            return Err(DeliveryError::Frozen {
                wallet: self.wallet.label(),
            });
        }
        Ok(WalletRead {
            state: info.state,
            seqno,
            balance_nanoton: info.balance_nanoton,
        })
    }

    /// The chain time to build a message at, and the one to clear journal entries by (`None`
    /// when too few endpoints answered to agree on one). The build time is the agreed one, or
    /// with too few answers the least any endpoint showed: a time too early only shortens the
    /// message's life, and nothing is cleared by it.
    async fn signing_chain_time(&self) -> Result<(u64, Option<u64>), DeliveryError> {
        let views = self.transport.address_views(self.wallet.address()).await;
        let agreed = views.agreed_chain_time();
        let least = views.answered.iter().map(|a| a.sync_utime).min();
        match agreed.or(least) {
            Some(build) => Ok((build, agreed)),
            None => Ok((self.chain_time().await?, None)),
        }
    }

    async fn chain_time(&self) -> Result<u64, DeliveryError> {
        self.transport
            .address_information(self.wallet.address())
            .await
            .map(|a| a.sync_utime)
            .map_err(|source| DeliveryError::Transport {
                stage: "reading chain time",
                source,
            })
    }

    /// What `pending` costs the wallet in externals of at most `max_actions` messages: values,
    /// forwarding fees and the gas of accepting each external.
    pub fn cost_nanoton(&self, pending: &[OracleMessage]) -> u128 {
        pending
            .chunks(self.wallet.max_actions())
            .map(|chunk| {
                let ops: Vec<&'static str> = chunk.iter().map(|m| m.update.op_name()).collect();
                batch_cost_nanoton(self.value_nanoton_for(&ops), chunk.len())
            })
            .fold(0u128, u128::saturating_add)
    }

    /// Whether the wallet as read in `w` can pay for `pending` (this batch and every later
    /// one); if not, [`DeliveryError::Unfunded`] and nothing is signed.
    fn check_funds(&self, w: &WalletRead, pending: &[OracleMessage]) -> Result<(), DeliveryError> {
        let needed = self.cost_nanoton(pending);
        let mut refused = lock(&self.refused_for_gas);
        // Refused for gas at this seqno and no richer since: another body would be refused too.
        let hopeless = matches!(*refused, Some((s, b)) if s == w.seqno && w.balance_nanoton <= b);
        if w.balance_nanoton >= needed && !hopeless {
            *refused = None;
            return Ok(());
        }
        drop(refused);
        Err(self.unfunded(w.balance_nanoton, needed, pending, hopeless))
    }

    fn unfunded(
        &self,
        balance_nanoton: u128,
        needed_nanoton: u128,
        pending: &[OracleMessage],
        refused: bool,
    ) -> DeliveryError {
        let ops: Vec<&'static str> = pending.iter().map(|m| m.update.op_name()).collect();
        self.count(&ops, "unfunded");
        DeliveryError::Unfunded(Box::new(Shortfall {
            wallet: self.wallet.label(),
            balance_nanoton,
            needed_nanoton,
            left_out: pending
                .iter()
                .map(|m| format!("{} {}", m.update.op_name(), m.update.subject()))
                .collect(),
            refused,
        }))
    }

    /// Every endpoint refused the freshly signed `flight` with `error`: nobody broadcast it, so
    /// whether it can ever land depends only on the wallet, read again here.
    async fn judge_refusal(
        &self,
        flight: &InFlight,
        error: &TransportError,
        pending: &[OracleMessage],
    ) -> Result<Refusal, DeliveryError> {
        let seqno = flight.ext.seqno;
        if error.is_refused_before_execution() {
            let w = self.read_wallet().await?;
            if w.seqno != seqno {
                return Ok(Refusal::Unclear);
            }
            // The wallet code never ran: the balance cannot buy the gas to accept it.
            *lock(&self.refused_for_gas) = Some((seqno, w.balance_nanoton));
            let needed = self.cost_nanoton(pending);
            return Ok(Refusal::Unfunded(self.unfunded(
                w.balance_nanoton,
                needed,
                pending,
                true,
            )));
        }
        if error.is_seqno_refusal() {
            let w = self.read_wallet().await?;
            // Moved past it: maybe this very message landed; settling finds out.
            if w.seqno > seqno && w.state == AccountState::Active {
                return Ok(Refusal::Unclear);
            }
            return Ok(Refusal::Dead);
        }
        Ok(Refusal::Unclear)
    }

    /// Builds, sends and confirms one external with the first messages of `pending` (as many
    /// as the wallet takes at once), rebuilding after expiry. Nothing is signed unless the
    /// wallet can pay for all of `pending`.
    async fn send_batch(
        &self,
        pending: &[OracleMessage],
        slot: &mut Option<InFlight>,
        fence: &impl Fence,
    ) -> Result<BatchReport, DeliveryError> {
        let chunk = &pending[..pending.len().min(self.wallet.max_actions())];
        let ops: Vec<&'static str> = chunk.iter().map(|m| m.update.op_name()).collect();
        let value_nanoton = self.value_nanoton_for(&ops);
        let out = outgoing(&self.wallet, chunk, value_nanoton)?;
        let first_send = Instant::now();
        let mut rebuilds = 0u32;
        loop {
            let (w, now, agreed_now) = match self.take_observation() {
                Some(read) => read,
                None => {
                    let w = self.read_wallet().await?;
                    let (now, agreed_now) = self.signing_chain_time().await?;
                    (w, now, agreed_now)
                }
            };
            self.check_funds(&w, pending)?;
            self.check_journal_at(w.seqno, agreed_now, slot).await?;
            // Last moment before a signature: a holder that lost the lease never signs.
            let fencing_token = fence.check().await?;
            let ext = build_external(
                &self.wallet,
                w.seqno,
                valid_until(now, self.config.ttl),
                w.state != AccountState::Active,
                &out,
            )?;
            let flight = InFlight {
                ext,
                ops: ops.clone(),
                messages: chunk.to_vec(),
                value_nanoton,
                chain_at_build: now,
                fencing_token,
                resumed: false,
            };
            // Write it down before sending: from here on it can land, and a restart must find it.
            let entry = JournalEntry::new(
                &self.wallet.address_raw(),
                &flight.ext,
                &ops,
                fencing_token,
                now,
            );
            // Nothing is sent that is not journaled: a failed write (an outage, another body
            // for this seqno, a newer fencing token) sends nothing.
            // Replacing another body's entry needs a chain time enough endpoints agree on.
            match self.journal.put(&entry, agreed_now.unwrap_or(0)).await {
                Ok(()) => {}
                Err(JournalError::Fenced { token, .. }) => {
                    return Err(DeliveryError::Fenced(FenceError::Superseded { token }));
                }
                Err(e) => return Err(e.into()),
            }
            *slot = Some(flight.clone());
            tracing::info!(
                wallet = %self.wallet.label(),
                seqno = flight.ext.seqno,
                valid_until = flight.ext.valid_until,
                actions = flight.ext.actions,
                state_init = flight.ext.with_state_init,
                hash = %hex::encode(flight.ext.normalized_hash),
                fencing_token = flight.fencing_token,
                "sending external message"
            );
            self.count(&ops, "sent");
            let sent = self.transport.send_boc(&flight.ext.boc).await;
            let send_error = match sent {
                Ok(_) => None,
                Err(e) if e.is_message_rejected() => {
                    match self.judge_refusal(&flight, &e, pending).await? {
                        Refusal::Unclear => {
                            tracing::warn!(seqno = flight.ext.seqno, error = %e, "every endpoint refused the message; confirming by seqno");
                            Some(e)
                        }
                        Refusal::Dead => {
                            self.forget(&flight).await;
                            *slot = None;
                            self.count(&ops, "rejected");
                            rebuilds += 1;
                            if rebuilds > self.config.max_rebuilds {
                                return Err(DeliveryError::Rejected {
                                    seqno: flight.ext.seqno,
                                    error: e.to_string(),
                                });
                            }
                            tracing::warn!(seqno = flight.ext.seqno, error = %e, "the wallet is at another seqno: reading it again and signing anew");
                            continue;
                        }
                        Refusal::Unfunded(err) => {
                            // Nobody broadcast it and the wallet cannot accept it: it cannot land.
                            self.forget(&flight).await;
                            *slot = None;
                            return Err(err);
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(seqno = flight.ext.seqno, error = %e, "send not acknowledged; confirming by seqno");
                    Some(e)
                }
            };
            match self
                .settle(
                    &flight,
                    send_error,
                    Poll::JustSent,
                    self.config.confirm_timeout,
                )
                .await
            {
                Ok(Settled::Confirmed(Landed::Other)) => {
                    // Not ours: the updates did not go out; signed again at the new seqno.
                    self.forget(&flight).await;
                    *slot = None;
                    self.count(&ops, "other_landed");
                    rebuilds += 1;
                    if rebuilds > self.config.max_rebuilds {
                        return Err(DeliveryError::Rejected {
                            seqno: flight.ext.seqno,
                            error: "another body took this seqno".into(),
                        });
                    }
                    tracing::warn!(
                        seqno = flight.ext.seqno,
                        rebuilds,
                        "another body took this seqno; signing anew"
                    );
                }
                Ok(Settled::Confirmed(Landed::Ours(transaction))) => {
                    self.forget(&flight).await;
                    *slot = None;
                    self.count(&flight.ops, "confirmed");
                    lock(&self.unbooked).push(Unbooked {
                        flight: flight.clone(),
                        transaction: transaction.clone(),
                        booked: None,
                    });
                    let mut batch = self.confirmed(&flight, transaction).await;
                    if let Some(last) = lock(&self.unbooked).last_mut() {
                        last.booked = Some(batch.clone());
                    }
                    let latency = first_send.elapsed();
                    if let Some(m) = &self.metrics {
                        ChainMetrics::of(m)
                            .update_latency
                            .observe(latency.as_secs_f64());
                    }
                    batch.rebuilds = rebuilds;
                    batch.latency_ms = latency.as_millis() as u64;
                    return Ok(batch);
                }
                Ok(Settled::Expired) => {
                    self.forget(&flight).await;
                    *slot = None;
                    self.count(&ops, "expired");
                    rebuilds += 1;
                    if rebuilds > self.config.max_rebuilds {
                        return Err(DeliveryError::Expired {
                            seqno: flight.ext.seqno,
                            attempts: rebuilds,
                        });
                    }
                    tracing::warn!(
                        seqno = flight.ext.seqno,
                        rebuilds,
                        "message expired without landing; rebuilding"
                    );
                }
                Err(e) => {
                    // Rejected / unconfirmed: it stays in `slot` so no other body takes its seqno.
                    self.count(&ops, e.kind());
                    return Err(e);
                }
            }
        }
    }

    /// Books `flight`, which landed as `transaction`: its result on chain (what the oracle made
    /// of each update, what the wallet could not pay), the spend and `auto`'s cost history.
    async fn confirmed(
        &self,
        flight: &InFlight,
        transaction: Option<Box<Transaction>>,
    ) -> BatchReport {
        let onchain = self
            .onchain_result(&flight.ext, transaction.as_deref().cloned())
            .await;
        let unpaid = onchain
            .as_ref()
            .map_or(0, |o| flight.ext.actions.saturating_sub(o.sent));
        if unpaid > 0 {
            tracing::error!(
                wallet = %self.wallet.label(),
                seqno = flight.ext.seqno,
                unpaid,
                actions = flight.ext.actions,
                "the wallet could not pay for every message: its action phase skipped some; top it up"
            );
        }
        let value_total = u128::from(flight.value_nanoton)
            .saturating_mul(u128::try_from(flight.ext.actions.saturating_sub(unpaid)).unwrap_or(0));
        self.account(&flight.ops, onchain.as_ref(), value_total);
        BatchReport {
            seqno: flight.ext.seqno,
            valid_until: flight.ext.valid_until,
            actions: flight.ext.actions,
            state_init: flight.ext.with_state_init,
            normalized_hash: hex::encode(flight.ext.normalized_hash),
            transaction: transaction.map(|t| (t.lt, t.hash)),
            rebuilds: 0,
            latency_ms: 0,
            fencing_token: flight.fencing_token,
            exit_code: onchain.as_ref().map(|o| o.exit_code),
            fees_nanoton: onchain.as_ref().map(|o| o.fees_nanoton),
            value_nanoton: value_total,
            unpaid,
            oracle_exit_codes: onchain
                .as_ref()
                .map(|o| o.oracle.iter().map(|(code, _)| *code).collect())
                .unwrap_or_default(),
            oracle_listing: onchain.map(|o| o.listing).unwrap_or_default(),
        }
    }

    /// Looks once whether this process's own message from an earlier call (one a cycle timeout
    /// cut before its confirmation) has landed, and if so books it like a delivery: the
    /// report says what the oracle now holds, so the caller need not read it again. A
    /// delivery cut after its batches landed but before it returned is booked the same way,
    /// without asking the chain again what it already told. `None` when nothing of this
    /// process is in flight or unbooked, or it has not settled yet (the next
    /// [`Delivery::deliver`] settles it as before).
    pub async fn settle_earlier(&self) -> Option<DeliveryReport> {
        let mut slot = self.in_flight.lock().await;
        let unbooked = std::mem::take(&mut *lock(&self.unbooked));
        if !unbooked.is_empty() {
            drop(slot);
            tracing::info!(
                batches = unbooked.len(),
                "batches from an earlier cycle landed before it was cut: booking them"
            );
            return Some(self.book(unbooked).await);
        }
        let own = slot
            .as_ref()
            .filter(|f| !f.resumed && !f.messages.is_empty())?
            .clone();
        match self.settle(&own, None, Poll::Earlier, Duration::ZERO).await {
            Ok(Settled::Confirmed(Landed::Ours(transaction))) => {
                self.forget(&own).await;
                *slot = None;
                drop(slot);
                tracing::info!(
                    seqno = own.ext.seqno,
                    "a message from an earlier cycle landed"
                );
                self.count(&own.ops, "confirmed");
                Some(
                    self.book(vec![Unbooked {
                        flight: own,
                        transaction,
                        booked: None,
                    }])
                    .await,
                )
            }
            // Anything else is left to the next delivery, which settles it as before.
            _ => None,
        }
    }

    /// A report of batches that landed: each one's result read now unless already booked,
    /// then what the oracle made of their updates.
    async fn book(&self, landed: Vec<Unbooked>) -> DeliveryReport {
        let mut messages: Vec<OracleMessage> = Vec::new();
        let mut batches = Vec::with_capacity(landed.len());
        for entry in landed {
            let batch = match entry.booked {
                Some(batch) => batch,
                None => self.confirmed(&entry.flight, entry.transaction).await,
            };
            messages.extend(entry.flight.messages);
            batches.push(batch);
        }
        let mut known: Vec<Option<ReadBack>> = vec![None; messages.len()];
        let mut offset = 0;
        for batch in &batches {
            known_from_result(&mut known, &messages, offset, batch);
            offset += batch.actions;
        }
        let read_back = self.read_back(&messages, known, Duration::ZERO).await;
        DeliveryReport { batches, read_back }
    }

    /// Waits until `flight` is confirmed (seqno moved past it) or provably expired (a chain
    /// state past `valid_until` plus [`LANDING_MARGIN_SECS`] still has its seqno), each as
    /// enough endpoints agree ([`verdict`]). `send_error` is the failure of the
    /// send, if any: a possibly lost send is re-sent as the same BoC; a rejection is believed
    /// after a few polls, but the message stays in flight.
    async fn settle(
        &self,
        flight: &InFlight,
        send_error: Option<TransportError>,
        poll: Poll,
        wait: Duration,
    ) -> Result<Settled, DeliveryError> {
        let seqno = flight.ext.seqno;
        let deadline = Instant::now() + wait;
        let mut resend = flight.resumed
            || send_error
                .as_ref()
                .is_some_and(|e| !e.is_message_rejected());
        let mut rejection = send_error
            .filter(TransportError::is_message_rejected)
            .map(|e| e.to_string());
        let mut polls_since_reject = 0u32;
        let mut round = 0u32;
        loop {
            // A message just sent cannot be in a block yet; one from an earlier call may be.
            if round > 0 || poll == Poll::JustSent {
                let delay = match poll {
                    Poll::JustSent => confirmation_poll_delay(round, self.config.poll_interval),
                    Poll::Earlier => {
                        confirmation_poll_delay(round.saturating_sub(1), self.config.poll_interval)
                    }
                };
                // Never sleep past the deadline: the caller's cycle may end there.
                let left = deadline.saturating_duration_since(Instant::now());
                tokio::time::sleep(delay.min(left)).await;
            }
            round = round.saturating_add(1);
            // Every endpoint's view at once: the quorum decides, and the view is the wallet
            // read for the next signature.
            let views = self.transport.address_views(self.wallet.address()).await;
            if self.remember(&views).is_none() {
                tracing::warn!(seqno, "confirmation poll: no endpoint showed the wallet");
            }
            match verdict(&views, self.wallet.version(), seqno, flight.dead_after()) {
                Verdict::Moved => {
                    return Ok(Settled::Confirmed(self.find_transaction(flight).await));
                }
                Verdict::Expired => return Ok(Settled::Expired),
                Verdict::Open => {}
            }
            if resend {
                match self.transport.send_boc(&flight.ext.boc).await {
                    Ok(_) => resend = false,
                    Err(e) if e.is_message_rejected() => {
                        resend = false;
                        rejection = Some(e.to_string());
                    }
                    Err(e) => {
                        tracing::warn!(seqno, error = %e, "re-send of the same message failed")
                    }
                }
            }
            if let Some(error) = &rejection {
                polls_since_reject += 1;
                // A rejection right after a lost send usually means the first copy landed and
                // the seqno read lags: give the seqno a few polls to move before believing it.
                if polls_since_reject > 3 {
                    return Err(DeliveryError::Rejected {
                        seqno,
                        error: error.clone(),
                    });
                }
            }
            if Instant::now() >= deadline {
                return Err(DeliveryError::Unconfirmed {
                    seqno,
                    waited: wait,
                });
            }
        }
    }

    /// What the oracle made of a confirmed external: follows it from the wallet transaction
    /// (`wallet_tx`, when confirmation already listed it) to each oracle transaction it caused,
    /// through v2 `getTransactions` of the wallet and the oracle (exit code from the
    /// transaction BoC), or through toncenter's v3 index (by normalized hash) where v2 cannot
    /// tell, polling until everything is there or the read-back timeout passes. `None` when
    /// neither can tell. v2 comes first: one listing of the oracle answers a whole batch, where
    /// the index needs a lookup per message.
    async fn onchain_result(
        &self,
        ext: &SignedExternal,
        mut wallet_tx: Option<Transaction>,
    ) -> Option<OnChain> {
        let deadline = Instant::now() + self.config.readback_timeout;
        // What the endpoints speak is learned once, not asked per message.
        let mut listed =
            lock(&self.listing_without_results_until).is_none_or(|until| Instant::now() >= until);
        loop {
            let look = if listed {
                self.onchain_v2(ext, &mut wallet_tx).await
            } else {
                self.onchain_v3(ext).await
            };
            match look {
                Ok(Some(found)) => return Some(found),
                Ok(None) => {}
                Err(Unindexed) if listed => {
                    listed = false;
                    continue;
                }
                Err(Unindexed) => return None,
            }
            if Instant::now() >= deadline {
                tracing::warn!(
                    seqno = ext.seqno,
                    "the oracle's transactions are not listed yet; result unknown"
                );
                return None;
            }
            tokio::time::sleep(self.config.poll_interval).await;
        }
    }

    /// One look in the v3 index: `Ok(None)` while something is not indexed yet, `Err` when
    /// there is no index.
    async fn onchain_v3(&self, ext: &SignedExternal) -> Result<Option<OnChain>, Unindexed> {
        let lookup = |hash_hex: String| async move {
            match self.transport.transactions_by_message(&hash_hex).await {
                Ok(Some(txs)) => Ok(txs),
                Ok(None) => Err(Unindexed),
                Err(e) => {
                    tracing::debug!(error = %e, "transaction index lookup failed");
                    Ok(Vec::new())
                }
            }
        };
        let wallet_txs = lookup(hex::encode(ext.normalized_hash)).await?;
        let Some(wallet_tx) = wallet_txs.into_iter().next() else {
            return Ok(None);
        };
        let mut oracle = Vec::new();
        for out in &wallet_tx.out_msgs {
            let Some(hash) = B64.decode(&out.hash).ok().map(hex::encode) else {
                continue;
            };
            let Some(tx) = lookup(hash).await?.into_iter().next() else {
                return Ok(None);
            };
            oracle.push((
                tx.exit_code.unwrap_or(0),
                tx.total_fees_nanoton,
                tx.out_msgs,
            ));
        }
        Ok(Some(self.tally(
            wallet_tx.total_fees_nanoton,
            &wallet_tx.out_msgs,
            oracle,
        )))
    }

    /// One look through v2 `getTransactions`: the wallet's transaction by the message's hashes,
    /// then, on each destination, the transaction whose inbound message is the one the wallet
    /// sent. `Err` when the endpoint cannot list transactions or gives no transaction BoC.
    async fn onchain_v2(
        &self,
        ext: &SignedExternal,
        wallet_tx: &mut Option<Transaction>,
    ) -> Result<Option<OnChain>, Unindexed> {
        let body = B64.encode(ext.body_hash);
        let hashes = [
            B64.encode(ext.message_hash),
            B64.encode(ext.normalized_hash),
        ];
        let list = |address: TonAddress| async move {
            self.transport
                .transactions(&address, 16)
                .await
                .map_err(|e| {
                    tracing::debug!(error = %e, "getTransactions unavailable; oracle result unknown");
                    Unindexed
                })
        };
        if wallet_tx.is_none() {
            *wallet_tx = list(self.wallet.address().clone())
                .await?
                .into_iter()
                .find(|t| {
                    t.in_msg_body_hash.as_deref() == Some(body.as_str())
                        || t.in_msg_hash.as_ref().is_some_and(|h| hashes.contains(h))
                });
        }
        let Some(wallet_tx) = wallet_tx.as_ref() else {
            return Ok(None);
        };
        let mut oracle = Vec::new();
        let mut ours = Vec::new();
        // A batch sends every update to the same oracle: its list is read once, not per update.
        let mut listed: Vec<(TonAddress, Vec<super::transport::Transaction>)> = Vec::new();
        for out in &wallet_tx.out_messages {
            let Ok(to) = out.destination.parse::<TonAddress>() else {
                continue;
            };
            if !listed.iter().any(|(a, _)| a == &to) {
                let txs = list(to.clone()).await?;
                listed.push((to.clone(), txs));
            }
            let txs = listed
                .iter()
                .find(|(a, _)| a == &to)
                .map(|(_, txs)| txs.as_slice())
                .unwrap_or_default();
            // By the message's hash first; its creation lt and sender only where the listing
            // gives no hash (an lt alone could match a sibling message of the same batch).
            let by_hash = txs.iter().find(|t| {
                !out.hash.is_empty() && t.in_msg_hash.as_deref() == Some(out.hash.as_str())
            });
            let found = by_hash.or_else(|| {
                txs.iter().find(|t| {
                    out.created_lt > 0
                        && t.in_msg_created_lt == Some(out.created_lt)
                        && t.in_msg_source
                            .as_deref()
                            .is_some_and(|s| self.is_wallet(s))
                })
            });
            let Some(tx) = found else {
                return Ok(None);
            };
            let Some(code) = tx.exit_code else {
                *lock(&self.listing_without_results_until) = Some(Instant::now() + RESULTS_RECHECK);
                return Err(Unindexed);
            };
            ours.push(tx.lt);
            oracle.push((code, tx.fee_nanoton, tx.out_messages.clone()));
        }
        let mut onchain = self.tally(wallet_tx.fee_nanoton, &wallet_tx.out_messages, oracle);
        // What else the oracle did around the batch: only a listing of one oracle says it.
        if let [(_, txs)] = listed.as_slice() {
            onchain.listing = txs
                .iter()
                .map(|t| OracleTransaction {
                    lt: t.lt,
                    ours: ours.contains(&t.lt),
                })
                .collect();
        }
        Ok(Some(onchain))
    }

    /// True when `text` (raw or user-friendly) names this keeper's wallet.
    fn is_wallet(&self, text: &str) -> bool {
        text.parse::<TonAddress>()
            .is_ok_and(|a| &a == self.wallet.address())
    }

    /// The batch's result from the wallet transaction (fees, messages sent) and each oracle
    /// transaction (exit code, fees, messages it sent).
    fn tally(
        &self,
        wallet_fee: u128,
        sent: &[super::transport::IndexedMessage],
        oracle_txs: Vec<(i32, u128, Vec<super::transport::IndexedMessage>)>,
    ) -> OnChain {
        let mut fees = wallet_fee;
        let mut spent = sent.iter().fold(wallet_fee, |acc, m| {
            acc.saturating_add(m.value_nanoton)
                .saturating_add(m.fwd_fee_nanoton)
        });
        let mut exit_code = 0;
        let mut oracle = Vec::new();
        for (code, fee, back) in oracle_txs {
            fees = fees.saturating_add(fee);
            // A bounce or the oracle's change coming back to the wallet is not spent.
            for m in back.iter().filter(|m| self.is_wallet(&m.destination)) {
                spent = spent.saturating_sub(m.value_nanoton);
            }
            if code != 0 && exit_code == 0 {
                exit_code = code;
            }
            oracle.push((code, fee));
        }
        OnChain {
            exit_code,
            fees_nanoton: fees,
            spent_nanoton: spent,
            oracle,
            sent: sent.len(),
            listing: Vec::new(),
        }
    }

    /// Books a confirmed batch: each oracle transaction's cost for `auto`, the spend for the
    /// spend rate and `keeper_ton_spent_nanoton_total`, the results by exit code. Without a
    /// transaction index only the values carried are known to be spent.
    fn account(&self, ops: &[&'static str], onchain: Option<&OnChain>, value_total: u128) {
        let spent = onchain.map_or(value_total, |o| o.spent_nanoton);
        self.costs.spent(spent);
        if let Some(o) = onchain {
            for (i, (code, fee)) in o.oracle.iter().enumerate() {
                let op = ops.get(i).or(ops.first()).copied().unwrap_or("unknown");
                self.costs.observe(op, *code, *fee);
                if let Some(m) = &self.metrics {
                    ChainMetrics::of(m)
                        .oracle_results
                        .get_or_create(&labels([("op", op), ("exit_code", &code.to_string())]))
                        .inc();
                }
            }
        }
        if let Some(m) = &self.metrics {
            ChainMetrics::of(m)
                .ton_spent
                .inc_by(u64::try_from(spent).unwrap_or(u64::MAX));
        }
    }

    /// Whose body took the seqno of `flight`: its own transaction where the wallet's listing
    /// shows it, another body's where the listing shows that, else by seqno (ours, as nothing
    /// says otherwise).
    async fn find_transaction(&self, flight: &InFlight) -> Landed {
        const LIMIT: u32 = 16;
        let ext = &flight.ext;
        let body = B64.encode(ext.body_hash);
        let hashes = [
            B64.encode(ext.message_hash),
            B64.encode(ext.normalized_hash),
        ];
        match self
            .transport
            .transactions(self.wallet.address(), LIMIT)
            .await
        {
            Ok(txs) => match own_transaction(&txs, LIMIT, &body, &hashes, flight.chain_at_build) {
                Some(landed) => return landed,
                None => tracing::warn!(
                    seqno = ext.seqno,
                    "seqno moved but the message is not among the latest wallet transactions"
                ),
            },
            Err(e) => {
                tracing::debug!(error = %e, "transaction listing unavailable");
            }
        }
        Landed::Ours(None)
    }

    /// Reads every update back until all landed or the read-back timeout passes; the ones in
    /// `known` (never sent, or applied as their oracle transaction showed) are not read.
    async fn read_back(
        &self,
        messages: &[OracleMessage],
        known: Vec<Option<ReadBack>>,
        wait: Duration,
    ) -> Vec<ReadBack> {
        let deadline = Instant::now() + wait;
        let settled: Vec<bool> = known.iter().map(Option::is_some).collect();
        let mut results = known;
        loop {
            for (i, m) in messages.iter().enumerate() {
                if settled[i] || results[i].as_ref().is_some_and(|r| r.landed) {
                    continue;
                }
                results[i] = Some(read_one(&self.transport, m).await);
            }
            let done = results
                .iter()
                .zip(&settled)
                .all(|(r, s)| *s || r.as_ref().is_some_and(|r| r.landed));
            if done || Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(self.config.poll_interval).await;
        }
        let out: Vec<ReadBack> = results.into_iter().flatten().collect();
        for (r, m) in out.iter().zip(messages) {
            let outcome = match (r.landed, r.unpaid) {
                (true, _) => "landed",
                (false, true) => "unfunded",
                (false, false) => "not_landed",
            };
            self.count(&[m.update.op_name()], outcome);
            if let Some(metrics) = &self.metrics {
                if r.landed {
                    ChainMetrics::of(metrics).update_success.inc();
                }
                if let (OracleUpdate::Price(p), Some(t)) = (&m.update, r.onchain_timestamp) {
                    ChainMetrics::of(metrics)
                        .oracle_last_update
                        .get_or_create(&labels([("asset", &p.asset)]))
                        .set(i64::from(t));
                }
            }
            if !r.landed {
                tracing::error!(op = %r.op, subject = %r.subject, error = r.error.as_deref(), onchain_timestamp = r.onchain_timestamp, unpaid = r.unpaid, "update did not land on the oracle");
            }
        }
        out
    }
}

/// What batch `b`, which carried `messages[offset..]`, already tells of its updates: the last
/// ones were not paid for (the action phase runs in order and every message of a batch costs
/// about the same), and those whose oracle transaction exited 0 are in as sent.
fn known_from_result(
    known: &mut [Option<ReadBack>],
    messages: &[OracleMessage],
    offset: usize,
    b: &BatchReport,
) {
    let end = (offset + b.actions).min(messages.len());
    let paid = end.saturating_sub(b.unpaid).max(offset);
    for i in paid..end {
        known[i] = Some(unpaid(&messages[i]));
    }
    for (i, code) in (offset..paid).zip(&b.oracle_exit_codes) {
        if *code == 0 {
            known[i] = Some(applied(&messages[i]));
        }
    }
}

/// Two signed messages with the same seqno and body.
fn same_body(a: &SignedExternal, b: &SignedExternal) -> bool {
    a.seqno == b.seqno && a.body_hash == b.body_hash
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every update is a single write, so a poisoned value is still consistent.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// `valid_until` for a message built at chain time `chain_now` that lives `ttl`.
pub fn valid_until_after(chain_now: u64, ttl: Duration) -> u32 {
    valid_until(chain_now, ttl)
}

fn valid_until(chain_now: u64, ttl: Duration) -> u32 {
    u32::try_from(chain_now.saturating_add(ttl.as_secs())).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::settings::WalletVersion;
    use crate::transport::AddressInformation;
    use tonlib_core::cell::CellBuilder;

    const VALID_UNTIL: u64 = 1_000;
    const DEAD_AFTER: u64 = VALID_UNTIL + LANDING_MARGIN_SECS;

    /// An active V5R1 wallet at `seqno` as one endpoint shows it at chain time `t`.
    fn view(seqno: u32, t: u64) -> AddressInformation {
        let data = CellBuilder::new()
            .store_bit(false)
            .and_then(|b| b.store_u32(32, seqno))
            .and_then(|b| b.build())
            .unwrap()
            .to_arc();
        AddressInformation {
            state: AccountState::Active,
            balance_nanoton: 1,
            data: Some(data),
            sync_utime: t,
        }
    }

    fn judged(answered: Vec<AddressInformation>) -> Verdict {
        let views = ChainViews {
            asked: answered.len(),
            answered,
        };
        verdict(&views, WalletVersion::V5r1, 5, DEAD_AFTER)
    }

    #[test]
    fn a_higher_seqno_from_one_endpoint_alone_confirms_nothing() {
        assert_eq!(judged(vec![view(6, 990), view(5, 990)]), Verdict::Open);
        assert_eq!(judged(vec![view(6, 990), view(6, 991)]), Verdict::Moved);
        assert_eq!(
            judged(vec![view(u32::MAX, 990), view(5, 990), view(6, 990)]),
            Verdict::Moved,
            "two of three agree"
        );
    }

    #[test]
    fn a_future_chain_time_from_one_endpoint_alone_proves_no_expiry() {
        assert_eq!(judged(vec![view(5, u64::MAX), view(5, 990)]), Verdict::Open);
        assert_eq!(
            judged(vec![view(5, u64::MAX), view(5, DEAD_AFTER + 1)]),
            Verdict::Expired
        );
    }

    #[test]
    fn expiry_needs_the_landing_margin_past_valid_until() {
        assert_eq!(judged(vec![view(5, VALID_UNTIL)]), Verdict::Open);
        assert_eq!(judged(vec![view(5, DEAD_AFTER)]), Verdict::Open);
        assert_eq!(judged(vec![view(5, DEAD_AFTER + 1)]), Verdict::Expired);
    }

    #[test]
    fn with_one_endpoint_answering_its_word_is_taken() {
        // The doc of `ChainViews::quorum` says why: nothing else can be asked.
        assert_eq!(judged(vec![view(6, 990)]), Verdict::Moved);
        assert_eq!(judged(vec![]), Verdict::Open);
    }

    #[test]
    fn the_agreed_chain_time_is_what_two_endpoints_reached() {
        let views = ChainViews {
            asked: 3,
            answered: vec![view(5, u64::MAX), view(5, 100), view(5, 90)],
        };
        assert_eq!(views.agreed_chain_time(), Some(100));
        let one = ChainViews {
            asked: 2,
            answered: vec![view(5, 70)],
        };
        assert_eq!(one.agreed_chain_time(), Some(70));
        assert_eq!(ChainViews::default().agreed_chain_time(), None);
    }

    fn tx(utime: u64, in_msg_hash: Option<&str>, source: Option<&str>) -> Transaction {
        Transaction {
            utime,
            lt: utime * 10,
            hash: format!("tx{utime}"),
            in_msg_body_hash: None,
            in_msg_hash: in_msg_hash.map(str::to_owned),
            out_msgs: 0,
            fee_nanoton: 0,
            exit_code: None,
            in_msg_source: source.map(str::to_owned),
            in_msg_created_lt: None,
            out_messages: Vec::new(),
        }
    }

    fn whose(txs: &[Transaction]) -> Option<&'static str> {
        let hashes = ["OURS".to_owned(), "OURS_NORM".to_owned()];
        own_transaction(txs, 16, "BODY", &hashes, 500).map(|l| match l {
            Landed::Ours(_) => "ours",
            Landed::Other => "other",
        })
    }

    #[test]
    fn the_own_transaction_decides_whose_body_took_the_seqno() {
        let before = tx(400, Some("OLD"), None);
        assert_eq!(
            whose(&[tx(510, Some("OURS_NORM"), None), before.clone()]),
            Some("ours")
        );
        assert_eq!(
            whose(&[tx(510, Some("THEIRS"), None), before.clone()]),
            Some("other"),
            "listed back past the build, another external since, ours absent"
        );
        assert_eq!(
            whose(&[tx(510, Some("IN"), Some("EQsender")), before.clone()]),
            None,
            "only an internal since: the listing says nothing about the seqno"
        );
        let full: Vec<Transaction> = (0..16).map(|i| tx(600 + i, Some("THEIRS"), None)).collect();
        assert_eq!(
            whose(&full),
            None,
            "a full page not reaching back to the build"
        );
    }

    #[test]
    fn the_landing_deadline_saturates() {
        let ext = SignedExternal {
            boc: Vec::new(),
            seqno: 1,
            valid_until: u32::MAX,
            message_hash: [0; 32],
            normalized_hash: [0; 32],
            body_hash: [0; 32],
            actions: 0,
            with_state_init: false,
        };
        let f = InFlight {
            ext,
            ops: Vec::new(),
            messages: Vec::new(),
            value_nanoton: 0,
            chain_at_build: u64::MAX,
            fencing_token: None,
            resumed: false,
        };
        assert_eq!(f.dead_after(), u64::from(u32::MAX) + LANDING_MARGIN_SECS);
    }
}

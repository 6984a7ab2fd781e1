//! One bridge-health tick: read every signal of every bridge (and the oracle's current view)
//! concurrently → decide per bridge → alerts and metrics → publish changed or due statuses in
//! one external message, confirmed and read back → record snapshots, Redis hashes, pub/sub.

use chrono::{TimeZone, Utc};
use futures_util::future::join_all;
use keeper_runtime::runner::{Cycle, CycleContext, CycleError};
use keeper_runtime::telemetry::metrics::labels;
use keeper_ton::fallback::FallbackGate;
use keeper_ton::keeper::{ChainMemo, ChainParts, ViewAt, view_at};
use keeper_ton::{
    BridgeStatusUpdate, OracleMessage, OracleUpdate, Publication, PublishError, TickOutcome,
    TonAddress, read_bridge_status_at,
};

use crate::clients::{EthBool, PegClients, PegRequests, peg_requests, prefetch_pegs};
use crate::config::{BridgeSpec, Config};
use crate::decision::{
    self, Action, AlertAction, BridgeDecision, Memory, OnChain, PublishReason, Published, Status,
};
use crate::metrics::BridgeMetrics;
use crate::records::{BridgeStatus, NewBridgeSnapshot};
use crate::report::{BridgeSummary, CycleSummary};
use crate::signals::{self, BoolCall, Ctx, SignalReport, Verdict};

/// Reads every enabled signal of every bridge at once; reports come back per bridge in
/// configuration order.
pub async fn read_all(bridges: &[BridgeSpec], ctx: &Ctx<'_>) -> Vec<Vec<SignalReport>> {
    join_all(
        bridges
            .iter()
            .map(|b| async move { join_all(b.signals.iter().map(|s| signals::run(s, ctx))).await }),
    )
    .await
}

/// Decides every bridge from its reports, updating the per-bridge memory (same order).
pub fn decide_all(
    bridges: &[BridgeSpec],
    reports: Vec<Vec<SignalReport>>,
    memory: &mut [Memory],
    hold_unknown: u64,
    confirm_ticks: u32,
    now: i64,
) -> Vec<BridgeDecision> {
    bridges
        .iter()
        .zip(reports)
        .zip(memory.iter_mut())
        .map(|((b, r), m)| decision::decide(b, r, m, hold_unknown, confirm_ticks, now))
        .collect()
}

/// The oracle's view of a bridge: known, never set (`None`), or unreadable.
type ChainView = Result<Option<OnChain>, String>;

/// The bridge-health cycle; lives for the whole process.
pub struct BridgeCycle {
    p: ChainParts<Config>,
    families: BridgeMetrics,
    /// HTTP client of the bridge upstreams.
    http: reqwest::Client,
    /// DefiLlama coins and CoinGecko clients, for peg signals.
    pegs: PegClients,
    /// Ethereum JSON-RPC, for `eth_call` signals.
    eth: Option<EthBool>,
    memory: Vec<Memory>,
    /// The verdict history was read from the store (first tick).
    history_loaded: bool,
    peg_requests: PegRequests,
    last: Option<CycleSummary>,
    /// With `fallback_offset`: how long the primary has left per bridge.
    fallback: FallbackGate,
    /// `get_bridge_status` as last read, while the oracle's account has no newer transaction.
    chain_memo: ChainMemo<Option<OnChain>>,
}

/// One bridge picked for publishing.
struct Picked {
    index: usize,
    update: BridgeStatusUpdate,
}

impl BridgeCycle {
    /// A fallback's due update waits until the offset passed since a primary would have
    /// published it (the on-chain heartbeat due, or since this keeper first saw the change).
    fn wait_for_primary(
        &mut self,
        bridge: &str,
        action: Action,
        d: &BridgeDecision,
        onchain: Option<OnChain>,
        policy: &crate::config::PolicySettings,
        now: i64,
    ) -> Action {
        match action {
            Action::Publish(reason) if reason != PublishReason::Forced => {
                let now = u64::try_from(now).unwrap_or(0);
                let last_seen = |oc: OnChain| u64::try_from(oc.last_seen).unwrap_or(0);
                // A primary sees the same observations, so its heartbeat falls due by their
                // lag later than on-chain + heartbeat; without the lag a heartbeat shorter than
                // it would look overdue at once.
                let seen = d
                    .last_seen
                    .and_then(|t| u64::try_from(t).ok())
                    .unwrap_or(now);
                let lag = now.saturating_sub(seen);
                let heartbeat_due = onchain.map(|oc| {
                    last_seen(oc)
                        .saturating_add(policy.heartbeat)
                        .saturating_add(lag)
                });
                let value = onchain.map(|oc| (last_seen(oc), u64::from(oc.is_online)));
                match self
                    .fallback
                    .check_value(bridge, value, heartbeat_due, now)
                    .wait_reason(policy.fallback_offset)
                {
                    Some(wait) => Action::Skip(wait),
                    None => Action::Publish(reason),
                }
            }
            Action::Publish(reason) => Action::Publish(reason),
            other => {
                self.fallback.settled(bridge);
                other
            }
        }
    }

    /// Assembles the cycle from the shared parts and the bridge upstream clients.
    pub fn new(
        p: ChainParts<Config>,
        families: BridgeMetrics,
        http: reqwest::Client,
        pegs: PegClients,
        eth: Option<EthBool>,
    ) -> Self {
        let n = p.config.bridges.len();
        let peg_requests = peg_requests(&p.config.bridges);
        let fallback_offset = p.config.settings.policy.fallback_offset;
        let interval_secs = p.config.settings.runner.period().as_secs();
        let chain_memo = ChainMemo::new(p.one_shot);
        Self {
            p,
            families,
            http,
            pegs,
            eth,
            memory: vec![Memory::default(); n],
            history_loaded: false,
            peg_requests,
            last: None,
            fallback: FallbackGate::new(fallback_offset).with_interval(interval_secs),
            chain_memo,
        }
    }

    fn bridges(&self) -> &[BridgeSpec] {
        &self.p.config.bridges
    }

    /// Keeps what a landed delivery wrote as the oracle's view, so that the next read of the
    /// oracle is needed only if something else changed it.
    fn remember_written(&self, report: &keeper_ton::DeliveryReport) {
        let bridges = self.bridges();
        self.chain_memo.landed(report, |r| {
            let i = bridges.iter().position(|b| u16::from(b.id) == r.id)?;
            Some((
                i,
                Some(OnChain {
                    is_online: r.onchain_value? != 0,
                    last_seen: i64::from(r.onchain_timestamp?),
                }),
            ))
        });
    }

    /// `get_bridge_status` for every bridge, unless the oracle's account has had no transaction
    /// since this process last read it; unknown when no oracle is configured.
    async fn read_chain(&self) -> Vec<ChainView> {
        let Some(oracle) = self.p.publisher.oracle() else {
            return self.bridges().iter().map(|_| Ok(None)).collect();
        };
        let transport = self.p.publisher.delivery().transport();
        let bridges = self.bridges();
        self.chain_memo
            .read(transport, oracle, bridges.len(), |i| {
                read_view(transport, oracle, bridges[i].id)
            })
            .await
    }

    /// Score and online gauges; an unknown bridge has its series removed rather than left stale.
    fn export(&self, d: &BridgeDecision) {
        let l = labels([("bridge", &d.bridge)]);
        match d.is_online {
            Some(online) => {
                self.families.score.get_or_create(&l).set(d.score);
                self.families
                    .online
                    .get_or_create(&l)
                    .set(i64::from(online));
            }
            None => {
                self.families.score.remove(&l);
                self.families.online.remove(&l);
            }
        }
    }

    fn raise(&self, bridge: &BridgeSpec, d: &BridgeDecision) {
        for a in decision::alerts(bridge, d) {
            match a {
                AlertAction::Fire(alert) => self.p.alerter.fire(alert),
                AlertAction::Resolve(key) => self.p.alerter.resolve(&key),
            }
        }
    }

    /// One snapshot row per bridge, one Redis hash per bridge, one message per bridge on
    /// `bridge_health`. Storage failures are logged by the store and never stop the cycle.
    async fn record(&self, decisions: &[BridgeDecision], published: &[Option<String>]) {
        let store = &self.p.store;
        for (d, hash) in decisions.iter().zip(published) {
            let signals = serde_json::to_value(&d.signals).unwrap_or_default();
            let last_seen = d.last_seen.and_then(|t| Utc.timestamp_opt(t, 0).single());
            if store.postgres_configured() {
                let row = NewBridgeSnapshot {
                    bridge_id: i32::from(d.bridge_id),
                    bridge: d.bridge.clone(),
                    score: d.score,
                    status: store_status(d.status),
                    is_online: d.is_online.unwrap_or(false),
                    last_seen,
                    signals,
                    published: hash.is_some(),
                    message_hash: hash.clone().filter(|h| !h.is_empty()),
                };
                if let Err(e) = crate::records::insert_bridge_snapshot(store, &row).await {
                    tracing::warn!(bridge = %d.bridge, error = %e, "bridge snapshot not recorded");
                }
            }
            if store.redis_configured() {
                let now = Utc::now().timestamp().to_string();
                let fields = [
                    ("bridge", d.bridge.clone()),
                    ("status", d.status.as_str().to_owned()),
                    ("score", d.score.to_string()),
                    (
                        "is_online",
                        d.is_online
                            .map(|o| if o { "1" } else { "0" })
                            .unwrap_or("")
                            .to_owned(),
                    ),
                    (
                        "last_seen",
                        d.last_seen.map(|t| t.to_string()).unwrap_or_default(),
                    ),
                    ("deciding", d.deciding.join(",")),
                    ("reason", d.reason.clone()),
                    (
                        "published",
                        if hash.is_some() { "1" } else { "0" }.to_owned(),
                    ),
                    ("message_hash", hash.clone().unwrap_or_default()),
                    ("updated_at", now.clone()),
                ];
                if let Err(e) = store
                    .put_hash(&format!("bridge_health:{}", d.bridge_id), &fields)
                    .await
                {
                    tracing::warn!(bridge = %d.bridge, error = %e, "bridge health not cached");
                }
                let msg = serde_json::json!({
                    "bridge_id": d.bridge_id, "bridge": d.bridge, "status": d.status,
                    "score": d.score, "is_online": d.is_online, "last_seen": d.last_seen,
                    "deciding": d.deciding, "reason": d.reason, "published": hash.is_some(),
                    "message_hash": hash, "timestamp": now,
                });
                if let Err(e) = store
                    .publish(crate::records::CHANNEL, &msg.to_string())
                    .await
                {
                    tracing::warn!(bridge = %d.bridge, error = %e, "bridge health not published on pub/sub");
                }
            }
        }
    }

    async fn tick(&mut self) -> (CycleSummary, Option<CycleError>) {
        // Renew the lease first: a standby keeps reading and serving metrics but never sends.
        self.p.publisher.renew_lease().await;
        // A message the last cycle could not wait for may have landed: what it wrote need not
        // be read from the oracle again.
        if let Some(report) = self.p.publisher.settle_earlier().await {
            self.remember_written(&report);
        }
        let now = Utc::now().timestamp();
        let pegs = prefetch_pegs(&self.pegs, &self.peg_requests);
        let ctx = Ctx {
            http: &self.http,
            upstreams: &self.p.config.settings.upstreams,
            metrics: Some(&self.p.metrics),
            now,
            pegs: &pegs,
            eth: self.eth.as_ref().map(|e| e as &dyn BoolCall),
        };
        let (reports, views, wallet) = tokio::join!(
            read_all(&self.p.config.bridges, &ctx),
            self.read_chain(),
            self.p.publisher.watch_wallet(
                None,
                Some(self.p.config.settings.policy.wallet_runway_low_days).filter(|d| *d > 0)
            )
        );
        if let Err(e) = &wallet {
            tracing::warn!(error = %e, "cannot read the keeper wallet");
        }
        if reports
            .iter()
            .flatten()
            .any(|r| r.verdict != Verdict::Unknown)
        {
            self.p.health.mark_ready("upstreams");
        }
        // After a restart the chain remembers when each bridge was last seen.
        for (m, v) in self.memory.iter_mut().zip(&views) {
            if let (None, Ok(Some(oc))) = (m.last_seen, v) {
                m.last_seen = Some(oc.last_seen);
            }
        }
        let config = self.p.config.clone();
        if !self.history_loaded {
            // Confirmation counts survive restarts and --once runs.
            for (b, m) in config.bridges.iter().zip(self.memory.iter_mut()) {
                if let Some(h) = crate::history::load(&self.p.store, b.id).await {
                    m.history = h;
                }
            }
            self.history_loaded = true;
        }
        let policy = &config.settings.policy;
        let decisions = decide_all(
            &config.bridges,
            reports,
            &mut self.memory,
            policy.hold_unknown,
            policy.confirm_ticks,
            now,
        );
        // A dry run or a standby must not advance what the sending keeper will confirm.
        if !self.p.publisher.is_dry_run() && !self.p.publisher.is_standby() {
            for (b, m) in config.bridges.iter().zip(&self.memory) {
                crate::history::save(&self.p.store, b.id, &m.history).await;
            }
        }

        let mut summary = CycleSummary::new(self.p.publisher.is_dry_run(), &self.p.notes);
        let mut picked = Vec::new();
        for (i, ((bridge, d), view)) in config
            .bridges
            .iter()
            .zip(&decisions)
            .zip(&views)
            .enumerate()
        {
            self.export(d);
            self.raise(bridge, d);
            // An unreadable oracle is not an empty one: judge against this keeper's own last
            // publication, and without one publish nothing rather than blind.
            let (onchain, unreadable) = match view {
                Ok(v) => (*v, None),
                Err(e) => (
                    self.memory[i].published.map(|p| OnChain {
                        is_online: p.is_online,
                        last_seen: p.last_seen,
                    }),
                    Some(e.as_str()),
                ),
            };
            let blind = unreadable.filter(|_| onchain.is_none() && !self.p.force);
            let action = if let (Some(e), Some(_)) = (blind, d.is_online) {
                Action::Skip(format!(
                    "on-chain status unreadable ({e}) and no record of this keeper's own publication: not publishing blind"
                ))
            } else if self.fallback.is_fallback() {
                let action = decision::plan_fallback(
                    d,
                    &self.memory[i],
                    onchain,
                    policy.heartbeat,
                    now,
                    self.p.force,
                );
                self.wait_for_primary(&bridge.name, action, d, onchain, policy, now)
            } else {
                decision::plan(d, &self.memory[i], onchain, policy.heartbeat, self.p.force)
            };
            if let (Action::Publish(_), Some(is_online)) = (&action, d.is_online) {
                let last_seen = d.last_seen.unwrap_or(0).clamp(0, i64::from(u32::MAX));
                picked.push(Picked {
                    index: i,
                    update: BridgeStatusUpdate {
                        bridge: bridge.name.clone(),
                        bridge_id: bridge.id,
                        is_online,
                        last_seen: u32::try_from(last_seen).unwrap_or(0),
                    },
                });
            }
            let heartbeat_secs = i64::try_from(policy.heartbeat).unwrap_or(i64::MAX);
            let next_heartbeat_at = self.memory[i]
                .published
                .map(|p| p.last_seen)
                .or(onchain.map(|oc| oc.last_seen))
                .map(|t| t.saturating_add(heartbeat_secs));
            summary.bridges.push(BridgeSummary {
                decision: d.clone(),
                action: action.as_str(),
                action_reason: action.reason(),
                next_heartbeat_at,
            });
        }
        let mut published: Vec<Option<String>> = vec![None; decisions.len()];

        if picked.is_empty() {
            summary.send.outcome = TickOutcome::NothingToPublish;
            self.record(&decisions, &published).await;
            return finish(summary);
        }

        let published_now = self
            .p
            .publisher
            .publish(
                |oracle| messages_for(oracle, &picked),
                &mut summary.send.notes,
                async || (),
            )
            .await;
        let error = match published_now {
            Err(e) => {
                summary.send.outcome = TickOutcome::Failed;
                Some(match e {
                    PublishError::NoOracle { .. } => CycleError::fatal(e.to_string()),
                    PublishError::DryRun(_) => CycleError::failed(e.to_string()),
                })
            }
            Ok(Publication::DryRun(run)) => {
                summary.send.dry_run_built(run);
                None
            }
            Ok(Publication::Standby { holder }) => {
                summary.send.outcome = TickOutcome::Standby;
                Some(CycleError::skipped(format!(
                    "standby: wallet lease held by {holder}"
                )))
            }
            Ok(Publication::Delivered {
                messages, report, ..
            }) => {
                self.remember_written(&report);
                let hash = report
                    .batches
                    .last()
                    .map(|b| b.normalized_hash.clone())
                    .unwrap_or_default();
                for p in &picked {
                    let d = &decisions[p.index];
                    self.memory[p.index].published = Some(Published {
                        status: d.status,
                        is_online: p.update.is_online,
                        last_seen: i64::from(p.update.last_seen),
                        at: now,
                    });
                    published[p.index] = Some(hash.clone());
                    self.p.health.set_published(
                        &p.update.bridge,
                        serde_json::json!({
                            "status": d.status, "is_online": p.update.is_online,
                            "last_seen": p.update.last_seen, "published_at": now,
                        }),
                    );
                }
                summary.send.delivered(messages, report);
                None
            }
            Ok(Publication::Settling { error, .. }) => {
                // Nothing of this tick went out; the next tick decides again.
                summary.send.outcome = TickOutcome::Settling;
                summary.send.notes.push(error.to_string());
                None
            }
            Ok(Publication::Failed { error, .. }) => {
                // Sent but not read back (the oracle is unreadable): judged as published, or
                // every tick the oracle stays dark would send the same status again.
                let unverified = error.sent_unverified();
                for p in picked
                    .iter()
                    .filter(|p| unverified.contains(&p.update.bridge.as_str()))
                {
                    self.memory[p.index].published = Some(Published {
                        status: decisions[p.index].status,
                        is_online: p.update.is_online,
                        last_seen: i64::from(p.update.last_seen),
                        at: now,
                    });
                }
                summary.send.failed(&error);
                Some(keeper_ton::delivery_failure(
                    &error,
                    "sending bridge statuses failed",
                ))
            }
        };
        self.record(&decisions, &published).await;
        match error {
            Some(e) => {
                let e = e.with_report(&summary);
                (summary, Some(e))
            }
            None => finish(summary),
        }
    }
}

fn messages_for(oracle: &TonAddress, picked: &[Picked]) -> Vec<OracleMessage> {
    picked
        .iter()
        .map(|p| OracleMessage::new(oracle.clone(), OracleUpdate::BridgeStatus(p.update.clone())))
        .collect()
}

fn store_status(s: Status) -> BridgeStatus {
    match s {
        Status::Healthy => BridgeStatus::Healthy,
        Status::Degraded => BridgeStatus::Degraded,
        Status::Offline => BridgeStatus::Offline,
        Status::Unknown => BridgeStatus::Unknown,
    }
}

/// A cycle with a bridge whose status is unknown failed (exit 1), even if others were published.
fn finish(summary: CycleSummary) -> (CycleSummary, Option<CycleError>) {
    let unknown = summary.unknown();
    if !unknown.is_empty() {
        let err = CycleError::failed(format!(
            "status unknown (no signal readable) for {}",
            unknown.join(", ")
        ))
        .with_report(&summary);
        return (summary, Some(err));
    }
    (summary, None)
}

impl Cycle for BridgeCycle {
    type Report = CycleSummary;

    async fn run(&mut self, _ctx: &CycleContext) -> Result<CycleSummary, CycleError> {
        let (summary, error) = self.tick().await;
        self.last = Some(summary.clone());
        match error {
            None => Ok(summary),
            Some(e) => Err(e),
        }
    }

    fn last_report(&self) -> Option<&CycleSummary> {
        self.last.as_ref()
    }
}

/// `get_bridge_status` of one bridge as the decisions see it: `None` for a bridge never written
/// (it reads as `(false, 0)`).
async fn read_view(
    transport: &keeper_ton::Toncenter,
    oracle: &TonAddress,
    bridge_id: u8,
) -> ViewAt<Option<OnChain>> {
    view_at(
        read_bridge_status_at(transport, oracle, bridge_id).await,
        |(is_online, last_seen)| {
            (last_seen != 0).then(|| OnChain {
                is_online,
                last_seen: i64::from(last_seen),
            })
        },
    )
}

//! One pricing tick: fetch → aggregate → read the oracle → select → one signed batch → confirm →
//! read back → record.

use std::collections::HashMap;

use chrono::{DateTime, TimeZone, Utc};
use keeper_runtime::alert::Severity;
use keeper_runtime::runner::{Cycle, CycleContext, CycleError, Staleness};
use keeper_runtime::telemetry::metrics::labels;
use keeper_sources::{Observation, PriceFetcher, Source};
use keeper_ton::fallback::FallbackGate;
use keeper_ton::keeper::{ChainMemo, ChainParts, ViewAt, view_at};
use keeper_ton::{
    DeliveryReport, OracleMessage, OracleUpdate, PriceUpdate, Publication, PublishError,
    TickOutcome, TonAddress, read_price_at,
};

use crate::breaker::Breaker;
use crate::config::PricingConfig;
use crate::decisions::{self, DecisionRecord};
use crate::metrics::PricingMetrics;
use crate::policy::{self, OnChain, Reason};
use crate::records::{self, NewPriceUpdate, StatusChange, UpdateStatus};
use crate::reference::{Origin, OwnRecord};
use crate::report::{Action, AssetDecision, CycleSummary, LastUpdate};

mod decide;
mod watch;

/// Alert while a large move waits for confirmation: `price_move_held:{asset}`.
pub const PRICE_MOVE_HELD: &str = "price_move_held";
/// Alert while the local clock and chain time disagree beyond `policy.max_clock_skew`.
pub const CLOCK_SKEW: &str = "clock_skew";
/// Alert while `get_price` cannot be read.
pub const ORACLE_UNREADABLE: &str = "oracle_unreadable";

/// The oracle's view of an asset, or why it is unknown.
type ChainView = Result<Option<OnChain>, String>;

/// Everything one tick needs; lives for the whole process.
pub struct PricingCycle {
    p: ChainParts<PricingConfig>,
    fetcher: PriceFetcher,
    own: PricingMetrics,
    breaker: Breaker,
    /// Held moves were read back from the decision log (first tick).
    holds_restored: bool,
    record: OwnRecord,
    last: Option<CycleSummary>,
    stale: Staleness,
    source_last_ok: HashMap<Source, DateTime<Utc>>,
    started: DateTime<Utc>,
    /// With `fallback_offset`: how long the primary has left per asset.
    fallback: FallbackGate,
    /// What this keeper published itself (price, timestamp), so that a fallback does not chase
    /// an on-chain median that lawfully differs from its own value.
    own_published: HashMap<String, OnChain>,
    /// Per asset, the last update this process delivered and why it went out.
    last_update: HashMap<String, LastUpdate>,
    /// `get_price` as last read, while the oracle's account has no newer transaction.
    chain_memo: ChainMemo<Option<OnChain>>,
}

impl PricingCycle {
    /// Assembles the cycle from the shared parts and the price sources.
    pub fn new(p: ChainParts<PricingConfig>, fetcher: PriceFetcher, own: PricingMetrics) -> Self {
        let stale = Staleness::new(
            p.alerter.clone(),
            "oracle_stale",
            Severity::Critical,
            std::time::Duration::from_secs(p.config.policy.stale_after),
        )
        .subject_label("asset")
        .context("on-chain price of");
        let started = Utc::now();
        let p_fallback_offset = p.config.policy.fallback_offset;
        let interval_secs = p.config.runner.period().as_secs();
        let chain_memo = ChainMemo::new(p.one_shot);
        Self {
            source_last_ok: Source::ALL.iter().map(|s| (*s, started)).collect(),
            started,
            p,
            fetcher,
            own,
            breaker: Breaker::default(),
            holds_restored: false,
            record: OwnRecord::default(),
            last: None,
            fallback: FallbackGate::new(p_fallback_offset).with_interval(interval_secs),
            own_published: HashMap::new(),
            last_update: HashMap::new(),
            chain_memo,
            stale,
        }
    }

    fn wallet_label(&self) -> String {
        self.p.publisher.delivery().wallet().label()
    }

    /// Keeps what a landed delivery wrote as the oracle's view, so that the next read of the
    /// oracle is needed only if something else changed it.
    fn remember_written(&self, report: &keeper_ton::DeliveryReport) {
        let assets = &self.p.config.assets;
        self.chain_memo.landed(report, |r| {
            let i = assets.iter().position(|a| a.id == r.id)?;
            Some((
                i,
                Some(OnChain {
                    price_micro: u64::try_from(r.onchain_value?).ok()?,
                    timestamp: u64::from(r.onchain_timestamp?),
                }),
            ))
        });
    }

    /// Reads `get_price` for every asset concurrently, unless the oracle's account has had no
    /// transaction since this process last read it; unknown when no oracle is configured.
    async fn read_chain(&self) -> Vec<ChainView> {
        let Some(oracle) = self.p.publisher.oracle() else {
            return self.p.config.assets.iter().map(|_| Ok(None)).collect();
        };
        let transport = self.p.publisher.delivery().transport();
        let assets = &self.p.config.assets;
        self.chain_memo
            .read(transport, oracle, assets.len(), |i| {
                read_view(transport, oracle, assets[i].id)
            })
            .await
    }

    /// Records the batch with `status`; returns row ids in message order (absent when not stored).
    async fn record(
        &self,
        picked: &[Picked],
        status: UpdateStatus,
        seqno: Option<i64>,
    ) -> Vec<Option<i64>> {
        if !self.p.store.postgres_configured() {
            return vec![None; picked.len()];
        }
        let wallet = self.wallet_label();
        let mut ids = Vec::with_capacity(picked.len());
        for p in picked {
            let row = NewPriceUpdate {
                asset: p.asset.clone(),
                asset_id: i32::from(p.asset_id),
                price_micro: i64::try_from(p.price_micro).unwrap_or(i64::MAX),
                quotes: serde_json::to_value(&p.quotes).unwrap_or_default(),
                reason: p.reason,
                wallet: wallet.clone(),
                seqno,
                message_hash: None,
                status,
                observed_at: Utc
                    .timestamp_opt(p.timestamp as i64, 0)
                    .single()
                    .unwrap_or_else(Utc::now),
            };
            ids.push(
                match records::insert_price_update(&self.p.store, &row).await {
                    Ok(id) => Some(id),
                    Err(e) => {
                        tracing::warn!(asset = %p.asset, error = %e, "price update not recorded");
                        None
                    }
                },
            );
        }
        ids
    }

    async fn set_status(&self, ids: &[Option<i64>], change: &StatusChange) {
        for id in ids.iter().flatten() {
            if let Err(e) = records::set_price_update_status(&self.p.store, *id, change).await {
                tracing::warn!(id, error = %e, "price update status not recorded");
            }
        }
    }

    /// Latest price in Redis and a message on `pricing_oracle`, for every confirmed update.
    async fn cache(&self, picked: &[Picked], report: &DeliveryReport) {
        if !self.p.store.redis_configured() {
            return;
        }
        let hash = report
            .batches
            .last()
            .map(|b| b.normalized_hash.clone())
            .unwrap_or_default();
        for p in picked {
            let fields = [
                ("price_micro", p.price_micro.to_string()),
                ("price", p.price.clone()),
                ("timestamp", p.timestamp.to_string()),
                ("asset_id", p.asset_id.to_string()),
                ("reason", p.reason.as_str().to_owned()),
                ("message_hash", hash.clone()),
            ];
            if let Err(e) = self
                .p
                .store
                .put_hash(&format!("price:{}", p.asset), &fields)
                .await
            {
                tracing::warn!(asset = %p.asset, error = %e, "price not cached");
            }
            let msg = serde_json::json!({
                "asset": p.asset, "asset_id": p.asset_id, "price_micro": p.price_micro,
                "timestamp": p.timestamp, "reason": p.reason.as_str(), "message_hash": hash,
            });
            if let Err(e) = self
                .p
                .store
                .publish(records::CHANNEL, &msg.to_string())
                .await
            {
                tracing::warn!(asset = %p.asset, error = %e, "price not published on pub/sub");
            }
        }
    }
}

/// One asset's decision and, when published, why.
struct Decided {
    report: AssetDecision,
    update_reason: Reason,
}

/// One asset selected for publishing.
#[derive(Debug, Clone)]
struct Picked {
    asset: String,
    asset_id: u16,
    price: String,
    price_micro: u64,
    timestamp: u64,
    reason: Reason,
    quotes: Vec<keeper_sources::aggregate::QuoteSummary>,
}

fn messages_for(oracle: &TonAddress, picked: &[Picked]) -> Vec<OracleMessage> {
    picked
        .iter()
        .map(|p| {
            OracleMessage::new(
                oracle.clone(),
                OracleUpdate::Price(PriceUpdate {
                    asset: p.asset.clone(),
                    asset_id: p.asset_id,
                    price_micro: p.price_micro,
                    timestamp: u32::try_from(p.timestamp).unwrap_or(u32::MAX),
                }),
            )
        })
        .collect()
}

impl Cycle for PricingCycle {
    type Report = CycleSummary;

    async fn run(&mut self, _ctx: &CycleContext) -> Result<CycleSummary, CycleError> {
        let mut summary = CycleSummary::new(self.p.publisher.is_dry_run(), &self.p.notes);
        let result = self.tick(&mut summary).await;
        self.last = Some(summary.clone());
        match result {
            Ok(()) => Ok(summary),
            Err(e) => Err(e.with_report(&summary)),
        }
    }

    fn last_report(&self) -> Option<&CycleSummary> {
        self.last.as_ref()
    }
}

impl PricingCycle {
    async fn tick(&mut self, summary: &mut CycleSummary) -> Result<(), CycleError> {
        // Renew the lease first: a standby keeps fetching and serving metrics but never sends.
        self.p.publisher.renew_lease().await;
        // A message the last cycle could not wait for may have landed: what it wrote need not
        // be read from the oracle again.
        if let Some(report) = self.p.publisher.settle_earlier().await {
            self.remember_written(&report);
        }

        let fetched = self.fetcher.fetch().await;
        let local_now = fetched.now;
        let aggregates = fetched.aggregate(&self.p.config.aggregation);
        let any_quote = fetched
            .assets
            .iter()
            .flat_map(|a| &a.observations)
            .any(|o| matches!(o, Observation::Quote(_)));
        if any_quote {
            self.p.health.mark_ready("upstreams");
        }
        let single = self.p.config.aggregation.single_source();
        summary.single_source = single;
        self.own.single_source.set(i64::from(single));
        if single {
            summary.send.notes.push(
                "single-source mode: aggregation.allow_single_source lets one lineage set a price"
                    .into(),
            );
        }
        for agg in &aggregates {
            self.judge(agg);
            self.own
                .lineages_used
                .get_or_create(&labels([("asset", &agg.asset)]))
                .set(i64::try_from(agg.lineages.len()).unwrap_or(i64::MAX));
        }

        let policy = &self.p.config.policy;
        let balance_low = Some(policy.wallet_balance_low_nanoton);
        let runway_low = Some(policy.wallet_runway_low_days).filter(|d| *d > 0);
        let (views, wallet) = tokio::join!(
            self.read_chain(),
            self.p.publisher.watch_wallet(balance_low, runway_low)
        );
        // The chain time comes with the wallet read: no request of its own.
        let chain_time = match &wallet {
            Ok(w) => i64::try_from(w.chain_time).ok().filter(|t| *t > 0),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the keeper wallet; using the local clock");
                None
            }
        };
        self.track_clock(local_now, chain_time, summary);
        // Ages and the published timestamp follow chain time; the local clock only without it.
        let now_secs = chain_time.unwrap_or(local_now);
        let now = Utc
            .timestamp_opt(now_secs, 0)
            .single()
            .unwrap_or_else(Utc::now);
        self.track_sources(&fetched.assets, now);
        self.track_freshness(&views, now);
        self.track_unreadable(&views, summary);

        self.restore_holds(local_now).await;
        let mut picked = Vec::new();
        // The settings are shared (an Arc): one handle for the loop, no copy of the asset table.
        let config = self.p.config.clone();
        for ((asset, agg), view) in config.assets.iter().zip(&aggregates).zip(&views) {
            let (reference, origin) = match view {
                Ok(v) => (*v, Origin::Chain),
                Err(_) => self.record.last(&self.p.store, &asset.symbol).await,
            };
            let decision = self.decide(asset, agg, view, reference, origin, now_secs);
            if decision.report.action == Action::Publish
                && let (Some(micro), Some(price), Some(timestamp)) = (
                    decision.report.price_micro,
                    agg.price,
                    decision.report.timestamp,
                )
            {
                picked.push(Picked {
                    asset: asset.symbol.clone(),
                    asset_id: asset.id,
                    price: price.to_string(),
                    price_micro: micro,
                    timestamp,
                    reason: decision.update_reason,
                    quotes: decision.report.quotes.clone(),
                });
            }
            summary.assets.push(decision.report);
        }
        self.log_decisions(local_now, summary).await;
        let no_quorum = summary
            .assets
            .iter()
            .filter(|a| a.action == Action::NoQuorum)
            .count();

        if picked.is_empty() {
            summary.send.outcome = if no_quorum > 0 {
                TickOutcome::NoQuorum
            } else {
                TickOutcome::NothingToPublish
            };
            return finish(summary, no_quorum);
        }
        self.publish(&picked, summary).await?;
        finish(summary, no_quorum)
    }

    /// Once per process: moves an earlier process held within the last three intervals count
    /// on, so one-shot runs (`--once` from cron) confirm a move too.
    async fn restore_holds(&mut self, now: i64) {
        if self.holds_restored || !self.p.store.postgres_configured() {
            return;
        }
        let window = self
            .p
            .config
            .runner
            .period()
            .as_secs()
            .saturating_mul(3)
            .max(1);
        let since = Utc
            .timestamp_opt(
                now.saturating_sub(i64::try_from(window).unwrap_or(i64::MAX)),
                0,
            )
            .single()
            .unwrap_or_else(Utc::now);
        match decisions::recent_holds(&self.p.store, since).await {
            Ok(holds) => {
                self.holds_restored = true;
                for (asset, pending) in holds {
                    tracing::info!(asset, ticks = pending.ticks, "held move restored");
                    self.breaker.restore(&asset, pending);
                }
            }
            // Tried again next tick; a hold of this process is counted meanwhile.
            Err(e) => tracing::warn!(error = %e, "held moves not restored"),
        }
    }

    /// Records every asset's decision (PostgreSQL only; a failure is logged, never fatal).
    async fn log_decisions(&self, tick_at: i64, summary: &CycleSummary) {
        if !self.p.store.postgres_configured() {
            return;
        }
        let tick_at = Utc
            .timestamp_opt(tick_at, 0)
            .single()
            .unwrap_or_else(Utc::now);
        let mode = if self.p.publisher.is_dry_run() {
            "dry_run"
        } else if self.p.publisher.is_standby() {
            "standby"
        } else {
            "live"
        };
        let rows: Vec<DecisionRecord> = summary
            .assets
            .iter()
            .map(|d| DecisionRecord::of(tick_at, d, mode))
            .collect();
        if let Err(e) = decisions::insert_decisions(&self.p.store, &rows).await {
            tracing::warn!(error = %e, "decisions not recorded");
        }
    }

    /// Publishes the picked assets and records them: `dry_run` rows for a dry run; for a real
    /// send, `sent` rows first, then `confirmed` (cached and announced) or `failed`.
    async fn publish(
        &mut self,
        picked: &[Picked],
        summary: &mut CycleSummary,
    ) -> Result<(), CycleError> {
        let published = self
            .p
            .publisher
            .publish(
                |oracle| messages_for(oracle, picked),
                &mut summary.send.notes,
                async || self.record(picked, UpdateStatus::Sent, None).await,
            )
            .await;
        match published {
            Err(e) => {
                summary.send.outcome = TickOutcome::Failed;
                Err(match e {
                    PublishError::NoOracle { .. } => CycleError::fatal(e.to_string()),
                    PublishError::DryRun(_) => CycleError::failed(e.to_string()),
                })
            }
            Ok(Publication::DryRun(run)) => {
                let seqno = run.externals.first().map(|e| i64::from(e.seqno));
                self.record(picked, UpdateStatus::DryRun, seqno).await;
                summary.send.dry_run_built(run);
                Ok(())
            }
            Ok(Publication::Standby { holder }) => {
                summary.send.outcome = TickOutcome::Standby;
                Err(CycleError::skipped(format!(
                    "standby: wallet lease held by {holder}"
                )))
            }
            Ok(Publication::Delivered {
                messages,
                report,
                sent,
            }) => {
                let change = StatusChange {
                    status: UpdateStatus::Confirmed,
                    error: None,
                    message_hash: report.batches.last().map(|b| b.normalized_hash.clone()),
                    confirmed_at: Some(Utc::now()),
                };
                self.set_status(&sent, &change).await;
                self.cache(picked, &report).await;
                self.remember_written(&report);
                for p in picked {
                    let published = OnChain {
                        price_micro: p.price_micro,
                        timestamp: p.timestamp,
                    };
                    self.record.remember(&p.asset, published);
                    self.own_published.insert(p.asset.clone(), published);
                    self.last_update.insert(
                        p.asset.clone(),
                        LastUpdate {
                            reason: p.reason.as_str().to_owned(),
                            price_micro: p.price_micro,
                            timestamp: p.timestamp,
                        },
                    );
                    self.p.health.set_published(
                        &p.asset,
                        serde_json::json!({
                            "price_micro": p.price_micro, "timestamp": p.timestamp,
                        }),
                    );
                }
                summary.send.delivered(messages, report);
                Ok(())
            }
            Ok(Publication::Settling { error, sent }) => {
                // Nothing of this tick went out; the next tick decides with the chain as it is
                // once the earlier message settled.
                let change = StatusChange {
                    status: UpdateStatus::Failed,
                    error: Some(format!("not sent: {error}")),
                    message_hash: None,
                    confirmed_at: None,
                };
                self.set_status(&sent, &change).await;
                summary.send.outcome = TickOutcome::Settling;
                summary.send.notes.push(error.to_string());
                Ok(())
            }
            Ok(Publication::Failed { error, sent }) => {
                // The wallet took it but the oracle could not be read back: remember it as this
                // keeper's own last value, or every unreadable tick would send it again.
                let unverified = error.sent_unverified();
                for p in picked
                    .iter()
                    .filter(|p| unverified.contains(&p.asset.as_str()))
                {
                    self.record.remember(
                        &p.asset,
                        OnChain {
                            price_micro: p.price_micro,
                            timestamp: p.timestamp,
                        },
                    );
                }
                let change = StatusChange {
                    status: UpdateStatus::Failed,
                    error: Some(error.to_string()),
                    message_hash: None,
                    confirmed_at: None,
                };
                self.set_status(&sent, &change).await;
                summary.send.failed(&error);
                Err(keeper_ton::delivery_failure(
                    &error,
                    "sending updates failed",
                ))
            }
        }
    }
}

fn skip_reason(micro: u64, on_chain: Option<OnChain>, now: u64, view: &ChainView) -> String {
    match (on_chain, view) {
        (Some(c), _) => format!(
            "within {} bps of on-chain and {} s old",
            policy::deviation_bps(micro, c.price_micro),
            now.saturating_sub(c.timestamp)
        ),
        (None, Err(e)) => format!("on-chain value unreadable: {e}"),
        (None, Ok(_)) => "on-chain value unknown".into(),
    }
}

/// A cycle with assets lacking quorum failed (exit 1), even if others were published.
fn finish(summary: &CycleSummary, no_quorum: usize) -> Result<(), CycleError> {
    if no_quorum > 0 {
        let assets: Vec<&str> = summary
            .assets
            .iter()
            .filter(|a| a.action == Action::NoQuorum)
            .map(|a| a.asset.as_str())
            .collect();
        return Err(CycleError::failed(format!(
            "quorum not met for {}",
            assets.join(", ")
        )));
    }
    Ok(())
}

/// `get_price` of one asset as the decisions see it: `None` for a price never written.
async fn read_view(
    transport: &keeper_ton::Toncenter,
    oracle: &TonAddress,
    asset_id: u16,
) -> ViewAt<Option<OnChain>> {
    view_at(
        read_price_at(transport, oracle, asset_id).await,
        |(price, ts)| {
            (price > 0).then(|| OnChain {
                price_micro: u64::try_from(price).unwrap_or(u64::MAX),
                timestamp: u64::from(ts),
            })
        },
    )
}

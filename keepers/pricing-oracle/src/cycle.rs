//! One pricing tick: fetch → aggregate → read the oracle → select → one signed batch → confirm →
//! read back → record.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use futures_util::future::join_all;
use keeper_common::aggregate::Aggregate;
use keeper_common::alert::{Alert, Alerter, Severity};
use keeper_common::runner::{Cycle, CycleContext, CycleError, Staleness};
use keeper_common::sources::{AssetObservations, Observation, PriceFetcher, Source};
use keeper_common::store::{Store, WalletLease};
use keeper_common::telemetry::Health;
use keeper_common::telemetry::metrics::{Metrics, labels};
use keeper_common::ton::{
    Delivery, DeliveryError, DeliveryReport, OracleMessage, OracleUpdate, PriceUpdate, TonAddress,
    TonTransport, Toncenter, dry_run_offline, read_price,
};
use rust_decimal::prelude::ToPrimitive;

use crate::config::PricingConfig;
use crate::policy::{self, OnChain, Reason, Thresholds};
use crate::records::{self, NewPriceUpdate, StatusChange, UpdateStatus};
use crate::report::{Action, AssetDecision, CycleSummary};

/// The oracle's view of an asset, or why it is unknown.
type ChainView = Result<Option<OnChain>, String>;

/// Everything one tick needs; lives for the whole process.
pub struct PricingCycle {
    config: Arc<PricingConfig>,
    fetcher: PriceFetcher,
    delivery: Delivery<Toncenter>,
    oracle: Option<TonAddress>,
    store: Store,
    lease: Option<WalletLease>,
    alerter: Alerter,
    metrics: Arc<Metrics>,
    health: Health,
    dry_run: bool,
    force: bool,
    notes: Vec<String>,
    last: Option<CycleSummary>,
    stale: Staleness,
    source_last_ok: HashMap<Source, DateTime<Utc>>,
    started: DateTime<Utc>,
}

/// Parts the cycle is built from (assembled in `main`).
pub struct Parts {
    /// Settings.
    pub config: Arc<PricingConfig>,
    /// Sources.
    pub fetcher: PriceFetcher,
    /// TON sending.
    pub delivery: Delivery<Toncenter>,
    /// The PriceOracle, when configured.
    pub oracle: Option<TonAddress>,
    /// Records.
    pub store: Store,
    /// The wallet lease; `None` in dry runs, which never send.
    pub lease: Option<WalletLease>,
    /// Alerts.
    pub alerter: Alerter,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Health for the ops server.
    pub health: Health,
    /// `--dry-run`.
    pub dry_run: bool,
    /// `--force`.
    pub force: bool,
    /// Said in every summary (ephemeral key…).
    pub notes: Vec<String>,
}

impl PricingCycle {
    /// Assembles the cycle.
    pub fn new(p: Parts) -> Self {
        let stale = Staleness::new(
            p.alerter.clone(),
            "oracle_stale",
            Severity::Critical,
            std::time::Duration::from_secs(p.config.policy.stale_after),
        )
        .subject_label("asset")
        .context("on-chain price of");
        let started = Utc::now();
        Self {
            source_last_ok: Source::ALL.iter().map(|s| (*s, started)).collect(),
            started,
            config: p.config,
            fetcher: p.fetcher,
            delivery: p.delivery,
            oracle: p.oracle,
            store: p.store,
            lease: p.lease,
            alerter: p.alerter,
            metrics: p.metrics,
            health: p.health,
            dry_run: p.dry_run,
            force: p.force,
            notes: p.notes,
            last: None,
            stale,
        }
    }

    /// The summary of the last cycle, whether it succeeded or not.
    pub fn last_summary(&self) -> Option<&CycleSummary> {
        self.last.as_ref()
    }

    fn wallet_label(&self) -> String {
        self.delivery.wallet().label()
    }

    /// Raises `source_down:{source}` for sources that produced no quote for `source_down_after`.
    fn track_sources(&mut self, assets: &[AssetObservations], now: DateTime<Utc>) {
        let observed = || assets.iter().flat_map(|a| &a.observations);
        for source in Source::ALL {
            let configured = observed().any(|o| o.source() == source);
            if !configured {
                continue;
            }
            let answered =
                observed().any(|o| o.source() == source && matches!(o, Observation::Quote(_)));
            if answered {
                self.source_last_ok.insert(source, now);
            }
            let key = format!("source_down:{}", source.as_str());
            let last = self
                .source_last_ok
                .get(&source)
                .copied()
                .unwrap_or(self.started);
            let down_for = (now - last).num_seconds().max(0) as u64;
            if down_for >= self.config.policy.source_down_after {
                self.alerter.fire(
                    Alert::new(
                        key,
                        Severity::Warning,
                        format!(
                            "{} has returned no usable quote for {down_for} s",
                            source.as_str()
                        ),
                    )
                    .label("source", source.as_str()),
                );
            } else if answered {
                self.alerter.resolve(&key);
            }
        }
    }

    /// Quorum and divergence alerts plus aggregate metrics for one asset.
    fn judge(&self, agg: &Aggregate) {
        let asset = agg.asset.as_str();
        let quorum_key = format!("quorum_lost:{asset}");
        if agg.has_quorum() {
            self.alerter.resolve(&quorum_key);
            if let Some(p) = agg.price.and_then(|p| p.to_f64()) {
                self.metrics
                    .prices
                    .aggregate_price
                    .get_or_create(&labels([("asset", asset)]))
                    .set(p);
            }
        } else {
            self.alerter.fire(
                Alert::new(
                    quorum_key,
                    Severity::Critical,
                    format!("{asset}: {}", agg.explain()),
                )
                .label("asset", asset),
            );
        }
        let divergence_key = format!("source_divergence:{asset}");
        let outliers: Vec<String> = agg
            .outliers()
            .map(|r| format!("{} ({})", r.source.as_str(), r.reason))
            .collect();
        if outliers.is_empty() {
            self.alerter.resolve(&divergence_key);
        } else {
            self.alerter.fire(
                Alert::new(
                    divergence_key,
                    Severity::Warning,
                    format!(
                        "{asset}: sources diverge from the median: {}",
                        outliers.join(", ")
                    ),
                )
                .label("asset", asset),
            );
        }
    }

    /// Reads `get_price` for every asset concurrently; unknown when no oracle is configured.
    async fn read_chain(&self) -> Vec<ChainView> {
        let Some(oracle) = &self.oracle else {
            return self.config.assets.iter().map(|_| Ok(None)).collect();
        };
        let transport = self.delivery.transport();
        join_all(self.config.assets.iter().map(|a| async move {
            match read_price(transport, oracle, a.id).await {
                Ok((price, ts)) if price > 0 => Ok(Some(OnChain {
                    price_micro: u64::try_from(price).unwrap_or(u64::MAX),
                    timestamp: u64::from(ts),
                })),
                Ok(_) => Ok(None),
                Err(e) => Err(e.to_string()),
            }
        }))
        .await
    }

    /// Freshness metric and `oracle_stale:{asset}` from what the chain holds.
    fn track_freshness(&mut self, views: &[ChainView], now: DateTime<Utc>) {
        for (asset, view) in self.config.assets.iter().zip(views) {
            let Ok(view) = view else { continue };
            let last = view.and_then(|c| Utc.timestamp_opt(c.timestamp as i64, 0).single());
            if let Some(c) = view {
                self.metrics
                    .chain
                    .oracle_last_update
                    .get_or_create(&labels([("asset", &asset.symbol)]))
                    .set(c.timestamp as i64);
            }
            self.stale.check(&asset.symbol, last, now);
        }
    }

    /// Balance and seqno gauges, and `wallet_balance_low`.
    async fn check_wallet(&self) -> Result<(), String> {
        let wallet = self.delivery.wallet();
        let info = self
            .delivery
            .transport()
            .wallet_information(wallet.address())
            .await
            .map_err(|e| e.to_string())?;
        let label = labels([("wallet", &self.wallet_label())]);
        self.metrics
            .chain
            .wallet_balance
            .get_or_create(&label)
            .set(info.balance_nanoton as f64 / 1e9);
        if let Some(seqno) = info.seqno {
            self.metrics
                .chain
                .wallet_seqno
                .get_or_create(&label)
                .set(i64::from(seqno));
        }
        let low = u128::from(self.config.policy.wallet_balance_low_ton);
        if info.balance_nanoton < low && !self.dry_run {
            self.alerter.fire(
                Alert::new(
                    "wallet_balance_low",
                    Severity::Warning,
                    format!(
                        "keeper wallet {} holds {:.3} TON, below {:.3} TON",
                        self.wallet_label(),
                        info.balance_nanoton as f64 / 1e9,
                        low as f64 / 1e9
                    ),
                )
                .label("wallet", self.wallet_label()),
            );
        } else {
            self.alerter.resolve("wallet_balance_low");
        }
        self.health.mark_ready("wallet");
        Ok(())
    }

    /// Records the batch with `status`; returns row ids in message order (absent when not stored).
    async fn record(
        &self,
        picked: &[Picked],
        status: UpdateStatus,
        seqno: Option<i64>,
    ) -> Vec<Option<i64>> {
        if !self.store.postgres_configured() {
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
                match records::insert_price_update(&self.store, &row).await {
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
            if let Err(e) = records::set_price_update_status(&self.store, *id, change).await {
                tracing::warn!(id, error = %e, "price update status not recorded");
            }
        }
    }

    /// Latest price in Redis and a message on `pricing_oracle`, for every confirmed update.
    async fn cache(&self, picked: &[Picked], report: &DeliveryReport) {
        if !self.store.redis_configured() {
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
            if let Err(e) = self.store.publish(records::CHANNEL, &msg.to_string()).await {
                tracing::warn!(asset = %p.asset, error = %e, "price not published on pub/sub");
            }
        }
    }

    /// Sends the batch for real: lease, record, deliver, confirm, read back, record the outcome.
    async fn publish(
        &mut self,
        picked: &[Picked],
        summary: &mut CycleSummary,
    ) -> Result<(), CycleError> {
        let oracle = self
            .oracle
            .clone()
            .ok_or_else(|| CycleError::fatal("no PriceOracle address configured"))?;
        let messages = messages_for(&oracle, picked);
        let ids = self.record(picked, UpdateStatus::Sent, None).await;
        match self.delivery.deliver(&messages).await {
            Ok(report) => {
                let hash = report.batches.last().map(|b| b.normalized_hash.clone());
                let change = StatusChange {
                    status: UpdateStatus::Confirmed,
                    error: None,
                    message_hash: hash,
                    confirmed_at: Some(Utc::now()),
                };
                self.set_status(&ids, &change).await;
                self.cache(picked, &report).await;
                self.alerter.resolve("update_not_applied");
                for p in picked {
                    self.health.set_published(
                        &p.asset,
                        serde_json::json!({
                            "price_micro": p.price_micro, "timestamp": p.timestamp,
                        }),
                    );
                }
                summary.delivery = Some(serde_json::to_value(&report).unwrap_or_default());
                Ok(())
            }
            Err(e) => {
                let not_landed = matches!(e, DeliveryError::NotLanded { .. });
                let change = StatusChange {
                    status: UpdateStatus::Failed,
                    error: Some(e.to_string()),
                    message_hash: None,
                    confirmed_at: None,
                };
                self.set_status(&ids, &change).await;
                if not_landed {
                    self.alerter.fire(Alert::new(
                        "update_not_applied",
                        Severity::Critical,
                        format!(
                            "oracle did not apply the update: {e} (is this keeper registered?)"
                        ),
                    ));
                }
                Err(CycleError::failed(format!("sending updates failed: {e}")))
            }
        }
    }
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
    quotes: Vec<keeper_common::aggregate::QuoteSummary>,
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

/// The address dry runs use when no oracle is configured: they send nothing, so any valid
/// destination shows the layout; the summary says it is a placeholder.
pub fn placeholder_oracle() -> TonAddress {
    TonAddress::NULL
}

impl Cycle for PricingCycle {
    type Report = CycleSummary;

    async fn run(&mut self, ctx: &CycleContext) -> Result<CycleSummary, CycleError> {
        let mut summary = CycleSummary::new(self.dry_run);
        summary.notes.extend(self.notes.iter().cloned());
        let result = self.tick(ctx, &mut summary).await;
        self.last = Some(summary.clone());
        match result {
            Ok(()) => Ok(summary),
            Err(e) => Err(e.with_report(&summary)),
        }
    }
}

impl PricingCycle {
    async fn tick(
        &mut self,
        ctx: &CycleContext,
        summary: &mut CycleSummary,
    ) -> Result<(), CycleError> {
        let _ = ctx;
        // Renew the lease first: a standby keeps fetching and serving metrics but never sends.
        let lease = match &mut self.lease {
            Some(lease) => {
                let status = lease.try_acquire_or_renew().await;
                self.health.set_lock_holder(status.holder.clone());
                Some(status)
            }
            None => None,
        };

        let fetched = self.fetcher.fetch().await;
        let now_ts = fetched.now.max(0) as u64;
        let now = Utc
            .timestamp_opt(fetched.now, 0)
            .single()
            .unwrap_or_else(Utc::now);
        let aggregates = fetched.aggregate(&self.config.aggregation);
        let any_quote = fetched
            .assets
            .iter()
            .flat_map(|a| &a.observations)
            .any(|o| matches!(o, Observation::Quote(_)));
        if any_quote {
            self.health.mark_ready("upstreams");
        }
        self.track_sources(&fetched.assets, now);
        for agg in &aggregates {
            self.judge(agg);
        }

        let (views, wallet) = tokio::join!(self.read_chain(), self.check_wallet());
        if let Err(e) = &wallet {
            tracing::warn!(error = %e, "cannot read the keeper wallet");
        }
        self.track_freshness(&views, now);

        let thresholds = Thresholds {
            deviation_bps: self.config.policy.deviation_bps,
            heartbeat: self.config.policy.heartbeat,
        };
        let mut picked = Vec::new();
        for ((asset, agg), view) in self.config.assets.iter().zip(&aggregates).zip(&views) {
            let on_chain = view.clone().ok().flatten();
            let mut decision = AssetDecision {
                asset_id: asset.id,
                asset: asset.symbol.clone(),
                price_micro: agg.price_micro(),
                action: Action::Skip,
                reason: String::new(),
                on_chain,
                quotes: agg.quotes(),
            };
            match (agg.price_micro(), agg.price) {
                (Some(micro), Some(price)) => {
                    match policy::decide(micro, on_chain, now_ts, thresholds, self.force) {
                        Some(reason) => {
                            decision.action = Action::Publish;
                            decision.reason = reason.as_str().to_owned();
                            picked.push(Picked {
                                asset: asset.symbol.clone(),
                                asset_id: asset.id,
                                price: price.to_string(),
                                price_micro: micro,
                                timestamp: now_ts,
                                reason,
                                quotes: decision.quotes.clone(),
                            });
                        }
                        None => {
                            decision.reason = skip_reason(micro, on_chain, now_ts, view);
                        }
                    }
                }
                _ => {
                    decision.action = Action::NoQuorum;
                    decision.reason = agg.explain();
                }
            }
            summary.assets.push(decision);
        }
        let no_quorum = summary
            .assets
            .iter()
            .filter(|a| a.action == Action::NoQuorum)
            .count();

        if picked.is_empty() {
            summary.outcome = if no_quorum > 0 {
                "no_quorum"
            } else {
                "nothing_to_publish"
            }
            .into();
            return finish(summary, no_quorum);
        }

        if self.dry_run {
            let oracle = self.oracle.clone().unwrap_or_else(placeholder_oracle);
            if self.oracle.is_none() {
                summary.notes.push(
                    "no PRICING_ORACLE_ADDRESS set: messages go to a placeholder address".into(),
                );
            }
            let messages = messages_for(&oracle, &picked);
            let built = match self.delivery.dry_run(&messages).await {
                Err(e @ DeliveryError::Transport { .. }) => {
                    // A dry run is still useful offline: assume an undeployed wallet and the local clock.
                    summary.notes.push(format!(
                        "toncenter unreachable ({e}): seqno 0, StateInit and the local clock assumed"
                    ));
                    let valid_until = now_ts.saturating_add(self.config.ton.message_ttl);
                    dry_run_offline(
                        self.delivery.wallet(),
                        &messages,
                        self.config.ton.update_value_ton,
                        0,
                        u32::try_from(valid_until).unwrap_or(u32::MAX),
                        false,
                    )
                    .map_err(|e| e.to_string())
                }
                other => other.map_err(|e| e.to_string()),
            };
            match built {
                Ok(run) => {
                    let seqno = run.externals.first().map(|e| i64::from(e.seqno));
                    self.record(&picked, UpdateStatus::DryRun, seqno).await;
                    summary.boc = Some(run.boc.clone());
                    summary.messages = run.messages.clone();
                    summary.externals = run.externals.len();
                    summary.outcome = "dry_run".into();
                }
                Err(e) => {
                    summary.outcome = "failed".into();
                    return Err(CycleError::failed(format!(
                        "building the dry-run message failed: {e}"
                    )));
                }
            }
            return finish(summary, no_quorum);
        }

        if let Some(status) = &lease
            && !status.held
        {
            summary.outcome = "standby".into();
            let holder = status.holder.clone().unwrap_or_else(|| "unknown".into());
            return Err(CycleError::skipped(format!(
                "standby: wallet lease held by {holder}"
            )));
        }
        match self.publish(&picked, summary).await {
            Ok(()) => {
                summary.outcome = "published".into();
                summary.messages =
                    picked_summaries(&self.oracle, &picked, self.config.ton.update_value_ton);
                finish(summary, no_quorum)
            }
            Err(e) => {
                summary.outcome = "failed".into();
                Err(e)
            }
        }
    }
}

fn picked_summaries(
    oracle: &Option<TonAddress>,
    picked: &[Picked],
    value_nanoton: u64,
) -> Vec<keeper_common::ton::MessageSummary> {
    let to = oracle
        .as_ref()
        .map(|a| a.to_base64_url())
        .unwrap_or_default();
    picked
        .iter()
        .map(|p| keeper_common::ton::MessageSummary {
            op: "update_price".into(),
            subject: keeper_common::ton::SummarySubject::Price {
                asset: p.asset.clone(),
                asset_id: p.asset_id,
                price_micro: p.price_micro,
                timestamp: u32::try_from(p.timestamp).unwrap_or(u32::MAX),
            },
            to: to.clone(),
            value_nanoton: u128::from(value_nanoton),
        })
        .collect()
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

//! Runs the four sources concurrently, each bounded by its own deadline, and lists per asset
//! everything each source said: quotes, and rejections with reasons.

use crate::metrics::PriceMetrics;
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::Serialize;

use super::chainlink::Chainlink;
use super::coingecko::CoinGecko;
use super::defillama::DefiLlama;
use super::pyth::{Feeds, Pyth};
use super::quote::{InvalidValue, Observation, PricePoint, Reason, Rejected, Source};
use super::upstream::SourceError;
use super::{AssetConfig, SourcesSettings};
use keeper_runtime::telemetry::Metrics;
use keeper_runtime::telemetry::metrics::labels;

/// Everything the sources said about one asset in one tick.
#[derive(Debug, Clone, Serialize)]
pub struct AssetObservations {
    /// The asset's configuration.
    pub asset: AssetConfig,
    /// One observation per configured, enabled source, in [`Source::ALL`] order.
    pub observations: Vec<Observation>,
}

/// The result of one fetch of all sources.
#[derive(Debug, Clone, Serialize)]
pub struct Fetched {
    /// The keeper's clock at the fetch, unix seconds; ages are judged against it.
    pub now: i64,
    /// Per asset, in configuration order.
    pub assets: Vec<AssetObservations>,
}

/// Fetches prices of the configured assets from Chainlink, CoinGecko, DefiLlama and Pyth at once.
pub struct PriceFetcher {
    assets: Vec<AssetConfig>,
    chainlink: Option<Chainlink>,
    coingecko: Option<CoinGecko>,
    defillama: Option<DefiLlama>,
    pyth: Option<Pyth>,
    coingecko_max_age: u64,
    defillama_max_age: u64,
    pyth_max_age: u64,
    pyth_max_conf_bps: u32,
    deadline: Duration,
    metrics: Option<Arc<Metrics>>,
}

impl PriceFetcher {
    /// Builds the enabled sources from validated settings.
    pub fn new(
        settings: &SourcesSettings,
        assets: &[AssetConfig],
        metrics: Option<Arc<Metrics>>,
    ) -> Self {
        let on = |s| settings.is_enabled(s) && assets.iter().any(|a| a.sources().contains(&s));
        Self {
            assets: assets.to_vec(),
            chainlink: on(Source::Chainlink)
                .then(|| Chainlink::from_settings(settings, assets, metrics.clone())),
            coingecko: on(Source::Coingecko)
                .then(|| CoinGecko::from_settings(settings, metrics.clone())),
            defillama: on(Source::Defillama)
                .then(|| DefiLlama::from_settings(settings, metrics.clone())),
            pyth: on(Source::Pyth).then(|| Pyth::from_settings(settings, metrics.clone())),
            coingecko_max_age: settings.coingecko_max_age,
            defillama_max_age: settings.defillama_max_age,
            pyth_max_age: settings.pyth_max_age,
            pyth_max_conf_bps: settings.pyth_max_conf_bps,
            deadline: Duration::from_secs(settings.deadline),
            metrics,
        }
    }

    /// Overrides the per-source deadline (whole fetch of one source, retries included).
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = deadline;
        self
    }

    /// The configured assets.
    pub fn assets(&self) -> &[AssetConfig] {
        &self.assets
    }

    /// Fetches every source now.
    pub async fn fetch(&self) -> Fetched {
        self.fetch_at(chrono::Utc::now().timestamp()).await
    }

    /// Fetches every source, judging ages against `now` (unix seconds).
    pub async fn fetch_at(&self, now: i64) -> Fetched {
        let (cl, cg, dl, py) = tokio::join!(
            self.bounded(Source::Chainlink, self.fetch_chainlink(now)),
            self.bounded(Source::Coingecko, self.fetch_coingecko()),
            self.bounded(Source::Defillama, self.fetch_defillama()),
            self.bounded(Source::Pyth, self.fetch_pyth()),
        );
        let mut by_asset: HashMap<String, Vec<Observation>> = HashMap::new();
        for mut obs in cl.into_iter().chain(cg).chain(dl).chain(py) {
            if let Some(a) = self.assets.iter().find(|a| a.symbol == obs.asset()) {
                let lineage = a.lineage_of(obs.source());
                if obs.lineage() != lineage {
                    obs.set_lineage(lineage);
                }
            }
            if let (Some(m), Observation::Quote(q)) = (&self.metrics, &obs) {
                PriceMetrics::of(m)
                    .source_price
                    .get_or_create(&labels([
                        ("asset", &q.asset),
                        ("source", q.source.as_str()),
                    ]))
                    .set(q.price.to_f64().unwrap_or(f64::NAN));
            }
            by_asset
                .entry(obs.asset().to_owned())
                .or_default()
                .push(obs);
        }
        let assets = self
            .assets
            .iter()
            .map(|a| {
                let mut observations = by_asset.remove(&a.symbol).unwrap_or_default();
                observations.sort_by_key(Observation::source);
                AssetObservations {
                    asset: a.clone(),
                    observations,
                }
            })
            .collect();
        Fetched { now, assets }
    }

    /// Runs one source under the deadline; past it, every asset of the source is unavailable.
    async fn bounded(
        &self,
        source: Source,
        fut: impl Future<Output = Option<Vec<Observation>>>,
    ) -> Vec<Observation> {
        match tokio::time::timeout(self.deadline, fut).await {
            Ok(obs) => obs.unwrap_or_default(),
            Err(_) => {
                let e = SourceError::Deadline {
                    upstream: source.as_str().to_owned(),
                    after: self.deadline,
                };
                tracing::warn!(source = source.as_str(), error = %e, "source timed out");
                if let Some(m) = &self.metrics {
                    m.source_requests
                        .get_or_create(&labels([
                            ("source", source.as_str()),
                            ("outcome", "deadline"),
                        ]))
                        .inc();
                }
                self.all_unavailable(source, &e.to_string())
            }
        }
    }

    fn covered(&self, source: Source) -> impl Iterator<Item = &AssetConfig> {
        self.assets
            .iter()
            .filter(move |a| a.sources().contains(&source))
    }

    fn all_unavailable(&self, source: Source, detail: &str) -> Vec<Observation> {
        let enabled = match source {
            Source::Chainlink => self.chainlink.is_some(),
            Source::Coingecko => self.coingecko.is_some(),
            Source::Defillama => self.defillama.is_some(),
            Source::Pyth => self.pyth.is_some(),
        };
        if !enabled {
            return Vec::new();
        }
        self.covered(source)
            .map(|a| {
                Observation::Rejected(Rejected::without_value(
                    &a.symbol,
                    source,
                    Reason::Unavailable {
                        detail: detail.to_owned(),
                    },
                ))
            })
            .collect()
    }

    async fn fetch_chainlink(&self, now: i64) -> Option<Vec<Observation>> {
        Some(self.chainlink.as_ref()?.fetch(now).await)
    }

    async fn fetch_coingecko(&self) -> Option<Vec<Observation>> {
        let cg = self.coingecko.as_ref()?;
        let ids: Vec<&str> = self
            .covered(Source::Coingecko)
            .filter_map(|a| a.coingecko_id.as_deref())
            .collect();
        let result = cg.simple_price(&ids).await;
        Some(
            self.spread(Source::Coingecko, self.coingecko_max_age, result, |a| {
                a.coingecko_id.as_deref()
            }),
        )
    }

    async fn fetch_defillama(&self) -> Option<Vec<Observation>> {
        let dl = self.defillama.as_ref()?;
        let keys: Vec<&str> = self
            .covered(Source::Defillama)
            .filter_map(|a| a.defillama_key.as_deref())
            .collect();
        let result = dl.current(&keys).await;
        Some(
            self.spread(Source::Defillama, self.defillama_max_age, result, |a| {
                a.defillama_key.as_deref()
            }),
        )
    }

    async fn fetch_pyth(&self) -> Option<Vec<Observation>> {
        let pyth = self.pyth.as_ref()?;
        let ids: Vec<&str> = self
            .covered(Source::Pyth)
            .filter_map(|a| a.pyth_id.as_deref())
            .collect();
        let max_bps = self.pyth_max_conf_bps;
        // The confidence bound is checked here, where the interval is still known.
        let mut wide: HashMap<String, Decimal> = HashMap::new();
        let points = pyth.latest(&ids).await.map(|feeds: Feeds| {
            feeds
                .into_iter()
                .map(|(id, r)| {
                    if let Some(bps) = r.as_ref().ok().and_then(|p| p.conf_bps())
                        && bps > Decimal::from(max_bps)
                    {
                        wide.insert(id.clone(), bps);
                    }
                    (id, r.map(|p| p.point))
                })
                .collect()
        });
        let mut obs = self.spread(Source::Pyth, self.pyth_max_age, points, |a| {
            a.pyth_id.as_deref()
        });
        for o in &mut obs {
            let Observation::Quote(q) = o else { continue };
            let conf_bps = self
                .assets
                .iter()
                .find(|a| a.symbol == q.asset)
                .and_then(|a| a.pyth_id.as_deref())
                .and_then(|id| wide.get(id));
            if let Some(conf_bps) = conf_bps {
                *o = Observation::Rejected(Rejected::quote(
                    q,
                    Reason::WideConfidence {
                        conf_bps: *conf_bps,
                        max_bps,
                    },
                ));
            }
        }
        Some(obs)
    }

    /// Maps a keyed answer back onto the assets: a point, an invalid value, or missing.
    fn spread(
        &self,
        source: Source,
        max_age: u64,
        result: Result<HashMap<String, Result<PricePoint, InvalidValue>>, SourceError>,
        key_of: impl Fn(&AssetConfig) -> Option<&str>,
    ) -> Vec<Observation> {
        let answer = match result {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(source = source.as_str(), error = %e, "source failed");
                return self.all_unavailable(source, &e.to_string());
            }
        };
        self.covered(source)
            .filter_map(|a| {
                let key = key_of(a)?;
                Some(match answer.get(key).cloned() {
                    Some(point) => Observation::from_point(&a.symbol, source, max_age, point),
                    None => Observation::Rejected(Rejected::without_value(
                        &a.symbol,
                        source,
                        Reason::Missing {
                            detail: match source {
                                Source::Defillama => format!(
                                    "{key:?} absent (unknown key, or no price within searchWidth)"
                                ),
                                _ => format!("{key:?} absent (unknown id, or no price)"),
                            },
                        },
                    )),
                })
            })
            .collect()
    }
}

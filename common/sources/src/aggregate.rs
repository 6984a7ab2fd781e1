//! Aggregation of per-source quotes into one price per asset: validity, one value per lineage
//! (whose data a quote is: a mirrored value cannot outvote an independent one), median, outlier
//! drop beyond `max_deviation_bps`, quorum of `min_sources` distinct lineages, every rejection
//! with its reason. Exact decimal arithmetic throughout.

use std::cmp::Ordering;

use rust_decimal::Decimal;
use serde::Serialize;

use crate::{
    AggregatePolicy, AggregationSettings, FUTURE_TOLERANCE_SECS, Fetched, Observation, Quote,
    Reason, Rejected, SanityBand, Source, price_micro,
};

/// One asset's aggregation: the price to publish (if any) and every quote's fate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Aggregate {
    /// The asset's symbol.
    pub asset: String,
    /// The median of the used lineages' values; `None` when fewer than `min_sources` lineages
    /// remained or they disagree.
    pub price: Option<Decimal>,
    /// The median of all valid lineages' values, the reference for the outlier check.
    pub median: Option<Decimal>,
    /// One value per lineage of the used quotes (the mean of its paths), by name.
    pub lineages: Vec<LineageValue>,
    /// The median observation time of the used quotes, unix seconds; `None` without a price.
    pub observed_at: Option<i64>,
    /// Quotes that passed validity and the deviation check.
    pub used: Vec<Quote>,
    /// Everything else, each with its reason.
    pub rejected: Vec<Rejected>,
    /// The quorum that applied.
    pub min_sources: usize,
}

/// One lineage's value in an aggregate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LineageValue {
    /// The lineage (`chainlink`, `pyth`, `coingecko` or a configured name).
    pub lineage: String,
    /// The mean of its paths' prices.
    pub price: Decimal,
    /// The sources that carried it.
    pub sources: Vec<Source>,
}

/// One line of a cycle summary's `quotes` list: `{source, lineage, price, timestamp,
/// accepted, why}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuoteSummary {
    /// Who said it.
    pub source: Source,
    /// Whose data it is.
    pub lineage: String,
    /// The price, when one was read.
    pub price: Option<Decimal>,
    /// The source's timestamp, when one was read.
    pub timestamp: Option<i64>,
    /// Used in the aggregate.
    pub accepted: bool,
    /// Why not, for rejected quotes.
    pub why: Option<String>,
}

impl Aggregate {
    /// The price as the oracle's 6-decimal integer (half-even); `None` without quorum.
    pub fn price_micro(&self) -> Option<u64> {
        self.price.and_then(|p| price_micro(p).ok())
    }

    /// True when a price can be published.
    pub fn has_quorum(&self) -> bool {
        self.price.is_some()
    }

    /// Quotes dropped for diverging from the median (a source-divergence warning).
    pub fn outliers(&self) -> impl Iterator<Item = &Rejected> {
        self.rejected
            .iter()
            .filter(|r| matches!(r.reason, Reason::Outlier { .. }))
    }

    /// The used lineages' names, comma-separated.
    pub fn lineage_names(&self) -> String {
        let names: Vec<&str> = self.lineages.iter().map(|l| l.lineage.as_str()).collect();
        names.join(", ")
    }

    /// One line saying what happened: `median of 3 lineages (chainlink, coingecko, pyth)` or
    /// why there is no price.
    pub fn explain(&self) -> String {
        let n = self.lineages.len();
        match self.price {
            Some(_) => format!("median of {n} lineage(s) ({})", self.lineage_names()),
            None => format!(
                "quorum not met: {n} valid lineage(s) agree ({}), {} required",
                self.lineage_names(),
                self.min_sources
            ),
        }
    }

    /// Every quote with its fate, in source order, for summaries and records.
    pub fn quotes(&self) -> Vec<QuoteSummary> {
        let mut out: Vec<QuoteSummary> = self
            .used
            .iter()
            .map(|q| QuoteSummary {
                source: q.source,
                lineage: q.lineage.clone(),
                price: Some(q.price),
                timestamp: Some(q.timestamp),
                accepted: true,
                why: None,
            })
            .chain(self.rejected.iter().map(|r| QuoteSummary {
                source: r.source,
                lineage: r.lineage.clone(),
                price: r.price,
                timestamp: r.timestamp,
                accepted: false,
                why: Some(r.reason.to_string()),
            }))
            .collect();
        out.sort_by_key(|q| q.source);
        out
    }
}

/// One value per lineage, the exact mean of its paths' prices, ordered by lineage name.
pub fn lineage_values(quotes: &[Quote]) -> Vec<LineageValue> {
    let mut groups: Vec<(String, Vec<Decimal>, Vec<Source>)> = Vec::new();
    for q in quotes {
        match groups.iter_mut().find(|g| g.0 == q.lineage) {
            Some(g) => {
                g.1.push(q.price);
                if !g.2.contains(&q.source) {
                    g.2.push(q.source);
                }
            }
            None => groups.push((q.lineage.clone(), vec![q.price], vec![q.source])),
        }
    }
    let mut out: Vec<LineageValue> = groups
        .into_iter()
        .map(|(lineage, prices, mut sources)| {
            sources.sort();
            LineageValue {
                lineage,
                price: mean(&prices),
                sources,
            }
        })
        .collect();
    out.sort_by(|a, b| a.lineage.cmp(&b.lineage));
    out
}

/// The exact mean of a non-empty list (falls back to halving before summing on overflow).
fn mean(values: &[Decimal]) -> Decimal {
    let n = Decimal::from(values.len().max(1));
    match values
        .iter()
        .try_fold(Decimal::ZERO, |acc, v| acc.checked_add(*v))
    {
        Some(sum) => sum / n,
        None => values.iter().map(|v| *v / n).sum(),
    }
}

/// The median of unix times; an even count gives the mean of the middle two, rounded down.
pub fn median_time(times: &mut [i64]) -> Option<i64> {
    if times.is_empty() {
        return None;
    }
    times.sort_unstable();
    let mid = times.len() / 2;
    if times.len() % 2 == 1 {
        return Some(times[mid]);
    }
    let (a, b) = (times[mid - 1], times[mid]);
    Some(a / 2 + b / 2 + (a % 2 + b % 2) / 2)
}

/// Why a quote is invalid, if it is: not positive, outside the band, from the future, too old.
pub fn validity(q: &Quote, band: &SanityBand, now: i64) -> Option<Reason> {
    if q.price <= Decimal::ZERO {
        return Some(Reason::NotPositive);
    }
    if !band.contains(q.price) {
        return Some(Reason::OutsideBand {
            low: band.low,
            high: band.high,
        });
    }
    if q.timestamp > now.saturating_add(FUTURE_TOLERANCE_SECS) {
        return Some(Reason::FromFuture {
            ahead: q.timestamp - now,
        });
    }
    let age = now.saturating_sub(q.timestamp);
    if age > 0 && age.unsigned_abs() > q.max_age {
        return Some(Reason::Stale {
            age,
            max_age: q.max_age,
        });
    }
    None
}

/// The median of a non-empty list (sorted in place); an even count gives the exact mean of the
/// two middle values.
pub fn median(values: &mut [Decimal]) -> Option<Decimal> {
    if values.is_empty() {
        return None;
    }
    values.sort_unstable();
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        return Some(values[mid]);
    }
    let (a, b) = (values[mid - 1], values[mid]);
    Some(match a.checked_add(b) {
        Some(sum) => sum / Decimal::TWO,
        None => a / Decimal::TWO + b / Decimal::TWO,
    })
}

const BPS: Decimal = Decimal::from_parts(10_000, 0, 0, false, 0);

/// True when `price` is further than `max_bps` from `median` (> 0): |p − m| · 10⁴ > m · max_bps.
fn beyond(price: Decimal, median: Decimal, max_bps: u32) -> bool {
    let diff = (price - median).abs();
    match (
        diff.checked_mul(BPS),
        median.checked_mul(Decimal::from(max_bps)),
    ) {
        (Some(l), Some(r)) => l > r,
        // Only with absurd magnitudes: compare by ratio instead.
        _ => diff
            .checked_div(median)
            .and_then(|x| x.checked_mul(BPS))
            .is_none_or(|bps| bps > Decimal::from(max_bps)),
    }
}

/// True when the sorted `values` span more than `max_bps` of `median`: (max − min) · 10⁴ >
/// median · max_bps.
fn spread_beyond(values: &[Decimal], median: Decimal, max_bps: u32) -> bool {
    let (Some(lo), Some(hi)) = (values.first(), values.last()) else {
        return false;
    };
    match (
        hi.checked_sub(*lo).and_then(|d| d.checked_mul(BPS)),
        median.checked_mul(Decimal::from(max_bps)),
    ) {
        (Some(l), Some(r)) => l > r,
        _ => true,
    }
}

fn deviation_bps(price: Decimal, median: Decimal) -> Decimal {
    (price - median)
        .abs()
        .checked_div(median)
        .and_then(|x| x.checked_mul(BPS))
        .map_or(Decimal::MAX, |d| d.round_dp(2).normalize())
}

/// Aggregates one asset's observations at time `now` (unix seconds):
/// 1. rejections from the sources are kept with their reasons;
/// 2. a quote is valid if positive, inside the band, not from the future and not older than its
///    `max_age`;
/// 3. each lineage gets one value, the mean of its valid paths; the median of those values is
///    taken, and quotes further than `max_deviation_bps` from it are dropped as outliers;
/// 4. the median of the remaining lineage values is the price if at least `min_sources`
///    distinct lineages remain and they lie within `max_deviation_bps` of each other (two
///    lineages 3% apart have no credible middle).
///
/// So three lineages agreeing on a depeg publish it, while one lineage alone away from two
/// agreeing ones is dropped, however many paths carry it.
pub fn aggregate(
    asset: &str,
    observations: &[Observation],
    policy: &AggregatePolicy,
    now: i64,
) -> Aggregate {
    let mut valid: Vec<Quote> = Vec::with_capacity(observations.len());
    let mut rejected: Vec<Rejected> = Vec::new();
    for obs in observations {
        match obs {
            Observation::Rejected(r) => rejected.push(r.clone()),
            Observation::Quote(q) => match validity(q, &policy.band, now) {
                Some(reason) => rejected.push(Rejected::quote(q, reason)),
                None => valid.push(q.clone()),
            },
        }
    }
    let mut prices: Vec<Decimal> = lineage_values(&valid).iter().map(|l| l.price).collect();
    let first = median(&mut prices);
    let mut used = Vec::with_capacity(valid.len());
    if let Some(m) = first {
        for q in valid {
            if beyond(q.price, m, policy.max_deviation_bps) {
                let reason = Reason::Outlier {
                    median: m,
                    deviation_bps: deviation_bps(q.price, m),
                    max_bps: policy.max_deviation_bps,
                };
                rejected.push(Rejected::quote(&q, reason));
            } else {
                used.push(q);
            }
        }
    }
    let price = narrow(&mut used, &mut rejected, policy);
    // Deterministic order regardless of input order.
    used.sort_by(|a, b| a.source.cmp(&b.source).then(a.price.cmp(&b.price)));
    rejected.sort_by(|a, b| {
        a.source
            .cmp(&b.source)
            .then_with(|| a.price.cmp(&b.price))
            .then_with(|| a.reason.code().cmp(b.reason.code()))
            .then(Ordering::Equal)
    });
    let lineages = lineage_values(&used);
    let observed_at = price.and_then(|_| {
        let mut times: Vec<i64> = used.iter().map(|q| q.timestamp).collect();
        median_time(&mut times)
    });
    Aggregate {
        asset: asset.to_owned(),
        price,
        median: first,
        lineages,
        observed_at,
        used,
        rejected,
        min_sources: policy.min_sources,
    }
}

/// The median of the used lineages' values once they lie within `max_deviation_bps` of each
/// other: while they do not, the lineage furthest from the median is dropped as an outlier
/// (so an edge value cannot block two that agree, and two lineages far apart publish nothing).
fn narrow(
    used: &mut Vec<Quote>,
    rejected: &mut Vec<Rejected>,
    policy: &AggregatePolicy,
) -> Option<Decimal> {
    loop {
        let lineages = lineage_values(used);
        if lineages.len() < policy.min_sources.max(1) {
            return None;
        }
        let mut prices: Vec<Decimal> = lineages.iter().map(|l| l.price).collect();
        let m = median(&mut prices)?;
        if !spread_beyond(&prices, m, policy.max_deviation_bps) {
            return Some(m);
        }
        // Furthest from the median; ties go to the later name, so the result is deterministic.
        let far = lineages
            .iter()
            .max_by(|a, b| {
                (a.price - m)
                    .abs()
                    .cmp(&(b.price - m).abs())
                    .then_with(|| a.lineage.cmp(&b.lineage))
            })?
            .lineage
            .clone();
        let (drop, keep): (Vec<Quote>, Vec<Quote>) = used.drain(..).partition(|q| q.lineage == far);
        *used = keep;
        for q in drop {
            let reason = Reason::Outlier {
                median: m,
                deviation_bps: deviation_bps(q.price, m),
                max_bps: policy.max_deviation_bps,
            };
            rejected.push(Rejected::quote(&q, reason));
        }
    }
}

impl Fetched {
    /// Aggregates every asset with `settings`, in configuration order.
    pub fn aggregate(&self, settings: &AggregationSettings) -> Vec<Aggregate> {
        self.assets
            .iter()
            .map(|a| {
                aggregate(
                    &a.asset.symbol,
                    &a.observations,
                    &settings.policy_for(&a.asset),
                    self.now,
                )
            })
            .collect()
    }
}

#[cfg(test)]
#[path = "aggregate_tests.rs"]
mod tests;

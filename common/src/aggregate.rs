//! Aggregation of per-source quotes into one price per asset: validity, one value per lineage
//! (whose data a quote is: a mirrored value cannot outvote an independent one), median, outlier
//! drop beyond `max_deviation_bps`, quorum of `min_sources` distinct lineages, every rejection
//! with its reason. Exact decimal arithmetic throughout.

use std::cmp::Ordering;

use rust_decimal::Decimal;
use serde::Serialize;

use crate::sources::{
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
mod tests {
    use std::str::FromStr;

    use proptest::prelude::*;

    use super::*;

    const NOW: i64 = 1_767_222_100;

    fn d(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    fn quote(source: Source, price: Decimal) -> Observation {
        Observation::Quote(Quote {
            asset: "USDT".into(),
            source,
            lineage: source.default_lineage().into(),
            price,
            timestamp: NOW - 30,
            max_age: 600,
            confidence: None,
        })
    }

    /// Chainlink, CoinGecko, DefiLlama (CoinGecko's lineage) and Pyth.
    fn four(cl: &str, cg: &str, dl: &str, py: &str) -> Vec<Observation> {
        vec![
            quote(Source::Chainlink, d(cl)),
            quote(Source::Coingecko, d(cg)),
            quote(Source::Defillama, d(dl)),
            quote(Source::Pyth, d(py)),
        ]
    }

    fn down(source: Source) -> Observation {
        Observation::Rejected(Rejected::without_value(
            "USDT",
            source,
            Reason::Unavailable {
                detail: "down".into(),
            },
        ))
    }

    fn run(obs: &[Observation]) -> Aggregate {
        aggregate("USDT", obs, &AggregatePolicy::default(), NOW)
    }

    #[test]
    fn one_value_per_lineage_then_the_median() {
        // CoinGecko's lineage is the mean of its two paths (1.0002); median of three lineages.
        let a = run(&four("0.9999", "1.0002", "1.0002", "1.0001"));
        assert_eq!(a.price, Some(d("1.0001")));
        assert_eq!(a.price_micro(), Some(1_000_100));
        assert_eq!(a.used.len(), 4);
        assert_eq!(a.lineage_names(), "chainlink, coingecko, pyth");
        let cg = &a.lineages[1];
        assert_eq!(cg.sources, [Source::Coingecko, Source::Defillama]);
        let a = run(&four("1.0001", "1.0", "1.0004", "1.0003"));
        assert_eq!(a.lineages[1].price, d("1.0002"), "mean of the paths");
        assert_eq!(a.price, Some(d("1.0002")));
        // Two lineages: the exact mean of both.
        let a = run(&[
            quote(Source::Chainlink, d("0.9999")),
            quote(Source::Pyth, d("1.0002")),
            quote(Source::Coingecko, d("-1")),
            down(Source::Defillama),
        ]);
        assert_eq!(a.price, Some(d("1.00005")));
        assert_eq!(a.rejected[0].reason, Reason::NotPositive);
        assert!(a.explain().contains("2 lineage(s)"), "{}", a.explain());
    }

    #[test]
    fn a_mirrored_value_cannot_outvote_an_independent_one() {
        // CoinGecko 10% off with DefiLlama mirroring it: one opinion, outvoted.
        let a = run(&four("1.0", "0.9", "0.9", "1.0"));
        assert_eq!(a.price, Some(d("1.0")));
        assert_eq!(
            a.outliers().map(|r| r.source).collect::<Vec<_>>(),
            [Source::Coingecko, Source::Defillama]
        );
        // USDD-like (no Chainlink): Pyth against the mirrored pair is a tie of two lineages.
        let a = run(&[
            quote(Source::Coingecko, d("0.9")),
            quote(Source::Defillama, d("0.9")),
            quote(Source::Pyth, d("1.0")),
        ]);
        assert_eq!(a.price, None, "{a:?}");
        assert!(a.explain().contains("quorum not met"), "{}", a.explain());
        // The same mirrored pair, counted once, is not a quorum by itself.
        let a = run(&[
            quote(Source::Coingecko, d("1.0")),
            quote(Source::Defillama, d("1.0")),
            down(Source::Pyth),
        ]);
        assert_eq!(a.price, None);
        assert!(a.explain().contains("1 valid lineage"), "{}", a.explain());
        // An operator who knows DefiLlama prices a key from its own data may say so.
        let mut obs = four("1.0", "0.9", "0.9", "1.0");
        obs[0] = down(Source::Chainlink);
        obs[2].set_lineage("defillama");
        let a = run(&obs);
        assert_eq!(a.price, Some(d("0.9")));
    }

    #[test]
    fn unanimous_depeg_is_published_lone_outlier_is_not() {
        let a = run(&four("0.95", "0.951", "0.951", "0.949"));
        assert_eq!(a.price, Some(d("0.95")));
        let a = run(&four("1.0", "1.0001", "1.0001", "0.95"));
        assert_eq!(a.price, Some(d("1.00005")));
        let out: Vec<_> = a.outliers().collect();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].source, Source::Pyth);
        assert!(
            out[0].reason.to_string().contains("bps from the median"),
            "{}",
            out[0].reason
        );
    }

    #[test]
    fn two_lineages_far_apart_have_no_middle() {
        let a = run(&[
            quote(Source::Chainlink, d("1.0")),
            quote(Source::Pyth, d("0.97")),
        ]);
        assert_eq!(a.price, None);
        assert!(a.explain().contains("1 valid lineage"), "{}", a.explain());
        assert_eq!(a.outliers().count(), 1);
        assert_eq!(a.observed_at, None);
    }

    #[test]
    fn deviation_limit_is_inclusive() {
        // Median 1.0; 0.98 is exactly 200 bps away and stays, 0.9799 goes.
        let a = run(&four("1.0", "1.0", "1.0", "0.98"));
        assert_eq!(a.used.len(), 4);
        let a = run(&four("1.0", "1.0", "1.0", "0.9799"));
        assert_eq!(a.used.len(), 3);
    }

    #[test]
    fn observation_time_is_the_median_of_the_used_quotes() {
        let mut obs = four("1.0", "1.0", "1.0", "1.0");
        for (o, age) in obs.iter_mut().zip([3_000, 40, 20, 2]) {
            if let Observation::Quote(q) = o {
                q.timestamp = NOW - age;
                q.max_age = 3_600;
            }
        }
        let a = run(&obs);
        // Four used quotes: the mean of the two middle times, 40 s and 20 s old.
        assert_eq!(a.observed_at, Some(NOW - 30));
        assert_eq!(median_time(&mut [5, 1, 3]), Some(3));
        assert_eq!(median_time(&mut [1, 2]), Some(1));
        assert_eq!(
            median_time(&mut [i64::MAX, i64::MAX - 2]),
            Some(i64::MAX - 1)
        );
        assert_eq!(median_time(&mut []), None);
    }

    #[test]
    fn validity_rules() {
        let mut obs = four("1.0", "2.5", "0.4", "1.0");
        let a = run(&obs);
        assert_eq!(
            a.rejected
                .iter()
                .map(|r| r.reason.code())
                .collect::<Vec<_>>(),
            ["outside_band", "outside_band"]
        );
        assert_eq!(a.price, Some(d("1.0")));
        if let Observation::Quote(q) = &mut obs[1] {
            q.price = d("1.0");
            q.timestamp = NOW - 601;
        }
        if let Observation::Quote(q) = &mut obs[2] {
            q.price = d("1.0");
            q.timestamp = NOW + 61;
        }
        let a = run(&obs);
        assert_eq!(
            a.rejected
                .iter()
                .map(|r| r.reason.code())
                .collect::<Vec<_>>(),
            ["stale", "from_future"]
        );
        let summary = a.quotes();
        assert_eq!(summary.len(), 4);
        assert!(summary[0].accepted && !summary[1].accepted);
        assert_eq!(summary[2].lineage, "coingecko");
    }

    fn price() -> impl Strategy<Value = Decimal> {
        (400_000i64..2_100_000).prop_map(|m| Decimal::new(m, 6))
    }

    fn observation(source: Source) -> impl Strategy<Value = Observation> {
        prop_oneof![
            6 => price().prop_map(move |p| quote(source, p)),
            1 => (-1_000_000i64..=0).prop_map(move |m| quote(source, Decimal::new(m, 6))),
            1 => (0i64..2_000).prop_map(move |age| match quote(source, d("1")) {
                Observation::Quote(mut q) => { q.timestamp = NOW - age; Observation::Quote(q) }
                o => o,
            }),
            1 => Just(down(source)),
        ]
    }

    fn observations() -> impl Strategy<Value = Vec<Observation>> {
        (
            observation(Source::Chainlink),
            observation(Source::Coingecko),
            observation(Source::Defillama),
            observation(Source::Pyth),
            any::<bool>(),
            0usize..=4,
        )
            .prop_map(|(a, b, c, e, own_lineage, keep)| {
                let mut v = vec![a, b, c, e];
                if own_lineage {
                    v[2].set_lineage("defillama");
                }
                v.truncate(keep);
                v
            })
    }

    /// Prices that cluster near 1.0 (so quorum is common) with occasional far values.
    fn clustered(source: Source) -> impl Strategy<Value = Observation> {
        prop_oneof![
            6 => (970_000i64..1_030_000).prop_map(move |m| quote(source, Decimal::new(m, 6))),
            2 => price().prop_map(move |p| quote(source, p)),
            1 => Just(down(source)),
        ]
    }

    fn clustered_observations() -> impl Strategy<Value = Vec<Observation>> {
        (
            clustered(Source::Chainlink),
            clustered(Source::Coingecko),
            clustered(Source::Defillama),
            clustered(Source::Pyth),
            any::<bool>(),
        )
            .prop_map(|(a, b, c, e, own_lineage)| {
                let mut v = vec![a, b, c, e];
                if own_lineage {
                    v[2].set_lineage("defillama");
                }
                v
            })
    }

    fn range(a: &Aggregate) -> (Decimal, Decimal) {
        let lo = a.lineages.iter().map(|l| l.price).min().unwrap();
        let hi = a.lineages.iter().map(|l| l.price).max().unwrap();
        (lo, hi)
    }

    proptest! {
        #[test]
        fn published_price_lies_within_the_used_lineages(obs in observations(), min in 1usize..=3) {
            let policy = AggregatePolicy { min_sources: min, ..AggregatePolicy::default() };
            let a = aggregate("USDT", &obs, &policy, NOW);
            prop_assert_eq!(a.used.len() + a.rejected.len(), obs.len());
            if let Some(p) = a.price {
                let (lo, hi) = range(&a);
                prop_assert!(lo <= p && p <= hi);
                let qlo = a.used.iter().map(|q| q.price).min().unwrap();
                let qhi = a.used.iter().map(|q| q.price).max().unwrap();
                prop_assert!(qlo <= lo && hi <= qhi);
                prop_assert!(policy.band.contains(p));
                let t = a.observed_at.unwrap();
                prop_assert!(a.used.iter().any(|q| q.timestamp <= t));
                prop_assert!(a.used.iter().any(|q| q.timestamp >= t));
            }
        }

        #[test]
        fn removing_a_lineage_keeps_the_median_within_the_used_range(
            obs in clustered_observations(),
            min in 1usize..=3,
            which in 0usize..4,
        ) {
            // The statistic itself: dropping any one used lineage's value never moves the
            // median of the rest outside the range of the used values.
            let policy = AggregatePolicy { min_sources: min, ..AggregatePolicy::default() };
            let a = aggregate("USDT", &obs, &policy, NOW);
            if a.price.is_some() && a.lineages.len() > 1 {
                let (lo, hi) = range(&a);
                let mut rest: Vec<Decimal> = a.lineages.iter().map(|l| l.price).collect();
                rest.remove(which % rest.len());
                let m = median(&mut rest).unwrap();
                prop_assert!(lo <= m && m <= hi, "{} outside [{}, {}]", m, lo, hi);
            }
        }

        #[test]
        fn losing_a_lineage_publishes_only_what_the_rest_support(
            obs in clustered_observations(),
            min in 1usize..=3,
            which in 0usize..4,
        ) {
            // The whole rule: when a lineage disappears (its upstream goes down), the new price
            // lies within what the remaining lineages' valid quotes said.
            let policy = AggregatePolicy { min_sources: min, ..AggregatePolicy::default() };
            let a = aggregate("USDT", &obs, &policy, NOW);
            let names: Vec<String> = a.lineages.iter().map(|l| l.lineage.clone()).collect();
            if let Some(gone) = names.get(which % names.len().max(1)) {
                let fewer: Vec<Observation> =
                    obs.iter().filter(|o| o.lineage() != gone).cloned().collect();
                let b = aggregate("USDT", &fewer, &policy, NOW);
                if let Some(p) = b.price {
                    let valid: Vec<Decimal> = fewer.iter().filter_map(|o| match o {
                        Observation::Quote(q) if validity(q, &policy.band, NOW).is_none() => Some(q.price),
                        _ => None,
                    }).collect();
                    let lo = valid.iter().min().copied().unwrap();
                    let hi = valid.iter().max().copied().unwrap();
                    prop_assert!(lo <= p && p <= hi, "{} outside [{}, {}] without {}", p, lo, hi, gone);
                    prop_assert!(b.lineages.len() >= min);
                }
            }
        }

        #[test]
        fn order_does_not_matter(obs in observations(), seed in any::<u64>()) {
            let mut shuffled = obs.clone();
            // A deterministic permutation from the seed.
            let n = shuffled.len();
            if n > 1 {
                let mut s = seed;
                for i in (1..n).rev() {
                    s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    shuffled.swap(i, (s >> 33) as usize % (i + 1));
                }
            }
            let a = run(&obs);
            let b = run(&shuffled);
            prop_assert_eq!(a, b);
        }

        #[test]
        fn fewer_than_min_lineages_never_publish(obs in observations(), min in 1usize..=3) {
            let policy = AggregatePolicy { min_sources: min, ..AggregatePolicy::default() };
            let valid: Vec<Quote> = obs.iter().filter_map(|o| match o {
                Observation::Quote(q) if validity(q, &policy.band, NOW).is_none() => Some(q.clone()),
                _ => None,
            }).collect();
            let a = aggregate("USDT", &obs, &policy, NOW);
            if lineage_values(&valid).len() < min {
                prop_assert!(a.price.is_none());
            }
            if a.price.is_some() {
                prop_assert!(a.lineages.len() >= min);
            }
        }

        #[test]
        fn one_adversary_cannot_leave_the_honest_range(
            h1 in 900_000i64..1_100_000,
            spread in 0i64..=9_000,
            adversary in observation(Source::Pyth),
            wild in prop_oneof![Just(None), (-10_000_000_000i64..10_000_000_000).prop_map(Some)],
        ) {
            // Two honest lineages within 90 bps of each other (under the 200 bps limit).
            let (h1, h2) = (Decimal::new(h1, 6), Decimal::new(h1 + spread, 6));
            let adversary = match wild {
                Some(m) => quote(Source::Pyth, Decimal::new(m, 6)),
                None => adversary,
            };
            let obs = vec![quote(Source::Chainlink, h1), quote(Source::Coingecko, h2), adversary];
            let a = run(&obs);
            let p = a.price.expect("two honest lineages make quorum");
            prop_assert!(h1 <= p && p <= h2, "{} outside [{}, {}]", p, h1, h2);
        }

        #[test]
        fn a_mirror_never_outvotes_two_independent_lineages(
            honest in 990_000i64..1_010_000,
            skew in 300i64..=5_000,
        ) {
            // Chainlink and Pyth agree; CoinGecko and its DefiLlama mirror are `skew` bps off.
            let h = Decimal::new(honest, 6);
            let off = Decimal::new(honest * (10_000 - skew) / 10_000, 6);
            let a = run(&[
                quote(Source::Chainlink, h),
                quote(Source::Pyth, h),
                quote(Source::Coingecko, off),
                quote(Source::Defillama, off),
            ]);
            prop_assert_eq!(a.price, Some(h));
        }
    }
}

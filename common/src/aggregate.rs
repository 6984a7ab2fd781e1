//! Aggregation of per-source quotes into one price per asset: validity, median,
//! outlier drop beyond `max_deviation_bps`, quorum of `min_sources`, every rejection with its
//! reason. Exact decimal arithmetic throughout.

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
    /// The median of the used quotes; `None` when fewer than `min_sources` remained.
    pub price: Option<Decimal>,
    /// The median of all valid quotes, the reference for the outlier check.
    pub median: Option<Decimal>,
    /// Quotes that passed validity and the deviation check.
    pub used: Vec<Quote>,
    /// Everything else, each with its reason.
    pub rejected: Vec<Rejected>,
    /// The quorum that applied.
    pub min_sources: usize,
}

/// One line of a cycle summary's `quotes` list: `{source, price, timestamp,
/// accepted, why}`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct QuoteSummary {
    /// Who said it.
    pub source: Source,
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

    /// One line saying what happened: `median of 3 sources` or why there is no price.
    pub fn explain(&self) -> String {
        let n = distinct_sources(&self.used);
        match self.price {
            Some(_) => format!("median of {n} source(s)"),
            None => format!(
                "quorum not met: {n} valid source(s) agree, {} required",
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
                price: Some(q.price),
                timestamp: Some(q.timestamp),
                accepted: true,
                why: None,
            })
            .chain(self.rejected.iter().map(|r| QuoteSummary {
                source: r.source,
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

fn distinct_sources(quotes: &[Quote]) -> usize {
    let mut seen = [false; 3];
    for q in quotes {
        seen[q.source as usize] = true;
    }
    seen.iter().filter(|s| **s).count()
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
/// 3. the median of the valid quotes is taken, and quotes further than `max_deviation_bps` from
///    it are dropped as outliers;
/// 4. the median of the rest is the price if at least `min_sources` distinct sources remain.
///
/// So three sources agreeing on a depeg publish it, while one source alone away from two
/// agreeing ones is dropped.
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
    let mut prices: Vec<Decimal> = valid.iter().map(|q| q.price).collect();
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
    // Deterministic order regardless of input order.
    used.sort_by(|a, b| a.source.cmp(&b.source).then(a.price.cmp(&b.price)));
    rejected.sort_by(|a, b| {
        a.source
            .cmp(&b.source)
            .then_with(|| a.price.cmp(&b.price))
            .then_with(|| a.reason.code().cmp(b.reason.code()))
            .then(Ordering::Equal)
    });
    let price = if distinct_sources(&used) >= policy.min_sources.max(1) {
        prices.clear();
        prices.extend(used.iter().map(|q| q.price));
        median(&mut prices)
    } else {
        None
    };
    Aggregate {
        asset: asset.to_owned(),
        price,
        median: first,
        used,
        rejected,
        min_sources: policy.min_sources,
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
            price,
            timestamp: NOW - 30,
            max_age: 600,
            confidence: None,
        })
    }

    fn three(a: &str, b: &str, c: &str) -> Vec<Observation> {
        vec![
            quote(Source::Chainlink, d(a)),
            quote(Source::Coingecko, d(b)),
            quote(Source::Defillama, d(c)),
        ]
    }

    fn run(obs: &[Observation]) -> Aggregate {
        aggregate("USDT", obs, &AggregatePolicy::default(), NOW)
    }

    #[test]
    fn median_of_three_and_even_mean() {
        let a = run(&three("0.9999", "1.0002", "1.0001"));
        assert_eq!(a.price, Some(d("1.0001")));
        assert_eq!(a.price_micro(), Some(1_000_100));
        assert_eq!(a.used.len(), 3);
        let a = run(&three("0.9999", "1.0002", "-1")[..]);
        assert_eq!(a.price, Some(d("1.00005")));
        assert_eq!(a.price_micro(), Some(1_000_050));
        assert_eq!(a.rejected[0].reason, Reason::NotPositive);
    }

    #[test]
    fn unanimous_depeg_is_published_lone_outlier_is_not() {
        let a = run(&three("0.95", "0.951", "0.949"));
        assert_eq!(a.price, Some(d("0.95")));
        let a = run(&three("1.0", "1.0001", "0.95"));
        assert_eq!(a.price, Some(d("1.00005")));
        let out: Vec<_> = a.outliers().collect();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].source, Source::Defillama);
        assert!(
            out[0].reason.to_string().contains("bps from the median"),
            "{}",
            out[0].reason
        );
        // Two sources that disagree leave no quorum.
        let a = run(&three("1.0", "0.95", "0")[..]);
        assert_eq!(a.price, None);
        assert!(a.explain().contains("quorum not met"), "{}", a.explain());
    }

    #[test]
    fn deviation_limit_is_inclusive() {
        // Median 1.0; 0.98 is exactly 200 bps away and stays, 0.9799 goes.
        let a = run(&three("1.0", "1.0", "0.98"));
        assert_eq!(a.used.len(), 3);
        let a = run(&three("1.0", "1.0", "0.9799"));
        assert_eq!(a.used.len(), 2);
    }

    #[test]
    fn validity_rules() {
        let mut obs = three("1.0", "2.5", "0.4");
        let a = run(&obs);
        assert_eq!(a.price, None);
        assert_eq!(
            a.rejected
                .iter()
                .map(|r| r.reason.code())
                .collect::<Vec<_>>(),
            ["outside_band", "outside_band"]
        );
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
        assert_eq!(summary.len(), 3);
        assert!(summary[0].accepted && !summary[1].accepted);
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
            1 => Just(Observation::Rejected(Rejected::without_value(
                "USDT", source, Reason::Unavailable { detail: "down".into() }))),
        ]
    }

    fn observations() -> impl Strategy<Value = Vec<Observation>> {
        (
            observation(Source::Chainlink),
            observation(Source::Coingecko),
            observation(Source::Defillama),
            0usize..=3,
        )
            .prop_map(|(a, b, c, keep)| {
                let mut v = vec![a, b, c];
                v.truncate(keep);
                v
            })
    }

    proptest! {
        #[test]
        fn result_lies_within_the_used_quotes(obs in observations(), min in 1usize..=3) {
            let policy = AggregatePolicy { min_sources: min, ..AggregatePolicy::default() };
            let a = aggregate("USDT", &obs, &policy, NOW);
            prop_assert_eq!(a.used.len() + a.rejected.len(), obs.len());
            if let Some(p) = a.price {
                let lo = a.used.iter().map(|q| q.price).min().unwrap();
                let hi = a.used.iter().map(|q| q.price).max().unwrap();
                prop_assert!(lo <= p && p <= hi);
                prop_assert!(policy.band.contains(p));
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
        fn fewer_than_min_sources_never_publish(obs in observations(), min in 1usize..=3) {
            let policy = AggregatePolicy { min_sources: min, ..AggregatePolicy::default() };
            let valid = obs.iter().filter(|o| match o {
                Observation::Quote(q) => validity(q, &policy.band, NOW).is_none(),
                Observation::Rejected(_) => false,
            }).count();
            let a = aggregate("USDT", &obs, &policy, NOW);
            if valid < min {
                prop_assert!(a.price.is_none());
            }
            if a.price.is_some() {
                prop_assert!(distinct_sources(&a.used) >= min);
            }
        }

        #[test]
        fn one_adversary_cannot_leave_the_honest_range(
            h1 in 900_000i64..1_100_000,
            spread in 0i64..=9_000,
            adversary in observation(Source::Defillama),
            wild in prop_oneof![Just(None), (-10_000_000_000i64..10_000_000_000).prop_map(Some)],
        ) {
            // Two honest sources within 90 bps of each other (under the 200 bps limit).
            let (h1, h2) = (Decimal::new(h1, 6), Decimal::new(h1 + spread, 6));
            let adversary = match wild {
                Some(m) => quote(Source::Defillama, Decimal::new(m, 6)),
                None => adversary,
            };
            let obs = vec![quote(Source::Chainlink, h1), quote(Source::Coingecko, h2), adversary];
            let a = run(&obs);
            let p = a.price.expect("two honest sources make quorum");
            prop_assert!(h1 <= p && p <= h2, "{} outside [{}, {}]", p, h1, h2);
        }
    }
}

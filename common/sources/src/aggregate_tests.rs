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

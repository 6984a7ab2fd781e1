//! Aggregation cost per tick: 6 assets × 3 quotes (the default asset table), target < 20 µs.
//!
//! `cargo bench -p keeper-sources --bench aggregate`

#![allow(clippy::unwrap_used, clippy::expect_used)] // test harness: a failed setup is a failed test

use std::hint::black_box;
use std::str::FromStr;

use criterion::{Criterion, criterion_group, criterion_main};
use keeper_sources::AggregatePolicy;
use keeper_sources::aggregate::aggregate;
use keeper_sources::{Observation, Quote, Reason, Rejected, Source};
use rust_decimal::Decimal;

const NOW: i64 = 1_767_222_100;

fn quote(asset: &str, source: Source, price: &str) -> Observation {
    Observation::Quote(Quote {
        asset: asset.to_owned(),
        source,
        lineage: source.default_lineage().to_owned(),
        price: Decimal::from_str(price).unwrap(),
        timestamp: NOW - 40,
        max_age: 600,
        confidence: None,
    })
}

/// One tick's observations: realistic prices, one outlier and one missing source.
fn tick() -> Vec<(String, Vec<Observation>)> {
    let rows = [
        ("USDT", ["0.99985000", "1.000213", "1.000213"]),
        ("USDC", ["0.99990000", "0.999874", "0.999874"]),
        ("DAI", ["0.99994000", "0.999921", "0.95"]),
        ("USDD", ["", "0.998102", "0.998102"]),
        ("TUSD", ["0.99770000", "0.997650", "0.997650"]),
        ("FDUSD", ["0.99930000", "0.999305", "0.999305"]),
    ];
    rows.iter()
        .map(|(asset, prices)| {
            let obs = Source::ALL
                .iter()
                .zip(prices)
                .map(|(s, p)| {
                    if p.is_empty() {
                        Observation::Rejected(Rejected::without_value(
                            asset,
                            *s,
                            Reason::Missing {
                                detail: "no feed".into(),
                            },
                        ))
                    } else {
                        quote(asset, *s, p)
                    }
                })
                .collect();
            ((*asset).to_owned(), obs)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let tick = tick();
    let policy = AggregatePolicy::default();
    c.bench_function("aggregate 6 assets x 3 quotes", |b| {
        b.iter(|| {
            let mut micro = 0u64;
            for (asset, obs) in black_box(&tick) {
                let a = aggregate(asset, obs, &policy, NOW);
                micro = micro.wrapping_add(a.price_micro().unwrap_or(0));
            }
            black_box(micro)
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Concurrency of the price fetch: with each of the three sources answering after 400 ms, a
//! full fetch of the six default assets from all sources takes one slow round trip (target
//! < 500 ms wall), not three (1.2 s, measured here too as the sequential reference).
//!
//! `cargo bench -p keeper-tests --bench fetch`

use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use keeper_sources::{Observation, PriceFetcher, Source};
use keeper_tests::upstreams::UpstreamsHandle;

const LATENCY: Duration = Duration::from_millis(400);

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let up = rt.block_on(UpstreamsHandle::start());
    for s in Source::ALL {
        up.set_latency(s, LATENCY);
    }
    let mut settings = up.sources_settings();
    settings.request_timeout = 5;
    let assets = keeper_tests::default_assets();
    let all = PriceFetcher::new(&settings, &assets, None);
    let single: Vec<PriceFetcher> = Source::ALL
        .iter()
        .map(|s| {
            let mut one = settings.clone();
            one.enabled = vec![*s];
            PriceFetcher::new(&one, &assets, None)
        })
        .collect();
    // Warm up: decimals() cached, every source answering.
    let first = rt.block_on(all.fetch());
    let quotes = first
        .assets
        .iter()
        .flat_map(|a| &a.observations)
        .filter(|o| matches!(o, Observation::Quote(_)))
        .count();
    assert_eq!(
        quotes, 17,
        "every source must answer for the bench to mean anything"
    );

    let mut g = c.benchmark_group("fetch 6 assets, each source answering after 400 ms");
    g.sample_size(10);
    g.measurement_time(Duration::from_secs(6));
    g.bench_function("all sources concurrently", |b| {
        b.iter(|| rt.block_on(all.fetch()))
    });
    g.measurement_time(Duration::from_secs(14));
    g.bench_function("sources one after another (reference)", |b| {
        b.iter(|| {
            rt.block_on(async {
                for f in &single {
                    f.fetch().await;
                }
            })
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

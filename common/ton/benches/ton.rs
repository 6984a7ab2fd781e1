//! Building and signing one tick's external message: V5R1, 6 `update_price` messages (each with
//! its payload signature), the wallet signature and the BoC. Target < 200 µs. Also measures the
//! one-off mnemonic derivation (PBKDF2-HMAC-SHA512, 100 000 rounds) done at start.
//!
//! `cargo bench -p keeper-ton --bench ton`

#![allow(clippy::unwrap_used, clippy::expect_used)] // test harness: a failed setup is a failed test

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use keeper_runtime::secret::Secret;
use keeper_ton::summary::outgoing;
use keeper_ton::{Network, WalletVersion};
use keeper_ton::{
    OracleMessage, OracleUpdate, PriceUpdate, Wallet, WalletKeys, build_external, parse_address,
};

const MNEMONIC: &str = "section garden tomato dinner season dice renew length useful spin trade intact use universe what post spike keen mandate behind concert egg doll rug";

fn tick(oracle: &str) -> Vec<OracleMessage> {
    let to = parse_address(oracle).unwrap();
    (1..=6u16)
        .map(|id| {
            OracleMessage::new(
                to.clone(),
                OracleUpdate::Price(PriceUpdate {
                    asset: format!("A{id}"),
                    asset_id: id,
                    price_micro: 999_850 + u64::from(id),
                    timestamp: 1_767_222_000,
                }),
            )
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let keys = Arc::new(WalletKeys::from_seed(&[42; 32]).unwrap());
    let wallet = Wallet::new(keys, WalletVersion::V5r1, Network::Mainnet).unwrap();
    let messages = tick("EQCDM_QGggZ3qMa_f3lRPk4_qLDnLTqdi6OkMAV2NB9r5TG3");

    c.bench_function("ton/v5r1_external_6_update_price", |b| {
        b.iter(|| {
            let out = outgoing(&wallet, black_box(&messages), 50_000_000).unwrap();
            let ext = build_external(&wallet, black_box(17), 1_767_222_060, false, &out).unwrap();
            black_box(ext.boc)
        })
    });

    let mut slow = c.benchmark_group("ton/mnemonic");
    slow.sample_size(10)
        .measurement_time(Duration::from_secs(5));
    slow.bench_function("derive_key_pair_pbkdf2_100k", |b| {
        let phrase = Secret::new(MNEMONIC);
        b.iter(|| black_box(WalletKeys::from_mnemonic(&phrase).unwrap()))
    });
    slow.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

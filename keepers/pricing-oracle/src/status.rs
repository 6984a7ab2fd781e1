//! `pricing-oracle-keeper status`: what the PriceOracle holds for every configured asset.

use keeper_runtime::cli::Output;
use keeper_ton::keeper::Freshness;
use keeper_ton::{TonAddress, Toncenter, read_price};
use serde::Serialize;

use crate::config::PricingConfig;
use crate::report::format_micro;

#[derive(Serialize)]
struct AssetStatus {
    asset: String,
    asset_id: u16,
    price_micro: Option<u64>,
    price: Option<String>,
    timestamp: Option<u32>,
    /// Observation time a new quote must reach for the next heartbeat update.
    next_heartbeat_observed_at: Option<u64>,
    #[serde(flatten)]
    freshness: Freshness,
}

impl AssetStatus {
    /// A row without a price: never set, or unreadable.
    fn without_price(asset: &keeper_sources::AssetConfig, error: String, unreadable: bool) -> Self {
        Self {
            asset: asset.symbol.clone(),
            asset_id: asset.id,
            price_micro: None,
            price: None,
            timestamp: None,
            next_heartbeat_observed_at: None,
            freshness: Freshness::missing(error, unreadable),
        }
    }
}

/// The `status` subcommand: every asset's on-chain price and age; exit 1 when one is unreadable.
pub async fn print(
    config: &PricingConfig,
    oracle: TonAddress,
    transport: &Toncenter,
    output: Output,
) -> anyhow::Result<i32> {
    let now = chrono::Utc::now().timestamp().max(0) as u64;
    let mut rows = Vec::new();
    for asset in config.assets.iter() {
        let row = match read_price(transport, &oracle, asset.id).await {
            Ok((price, ts)) if price > 0 => {
                let age = now.saturating_sub(u64::from(ts));
                let micro = u64::try_from(price).unwrap_or(u64::MAX);
                AssetStatus {
                    asset: asset.symbol.clone(),
                    asset_id: asset.id,
                    price_micro: Some(micro),
                    price: Some(format_micro(micro)),
                    timestamp: Some(ts),
                    next_heartbeat_observed_at: Some(
                        u64::from(ts).saturating_add(config.rules_for(asset).heartbeat),
                    ),
                    freshness: Freshness::of(age, age > config.policy.stale_after),
                }
            }
            Ok(_) => AssetStatus::without_price(asset, "no price on-chain".into(), false),
            Err(e) => AssetStatus::without_price(asset, e.to_string(), true),
        };
        rows.push(row);
    }
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "oracle": oracle.to_base64_url(),
                "stale_after": config.policy.stale_after,
                "assets": rows,
            }))?
        ),
        Output::Text => {
            println!(
                "oracle {}  (stale after {} s)",
                oracle.to_base64_url(),
                config.policy.stale_after
            );
            println!(
                "{:<6} {:>3} {:>10} {:>8}  state",
                "asset", "id", "price", "age"
            );
            for r in &rows {
                let (age, state) = (r.freshness.age_text(), r.freshness.state_text());
                println!(
                    "{:<6} {:>3} {:>10} {:>8}  {state}",
                    r.asset,
                    r.asset_id,
                    r.price.clone().unwrap_or_else(|| "-".into()),
                    age
                );
            }
        }
    }
    Ok(Freshness::exit_code(rows.iter().map(|r| &r.freshness)))
}

//! `pricing-oracle-keeper history --asset USDT --since 2h [--output json]`: the recorded
//! decisions of one asset, the answer to "why was this price published at that time?".

use std::path::Path;
use std::sync::Arc;

use keeper_runtime::alert::Alerter;
use keeper_runtime::cli::{EXIT_FAILED, EXIT_OK, EXIT_USAGE, Output};
use keeper_runtime::config::ProcessEnv;
use keeper_runtime::store::Store;
use keeper_runtime::telemetry::Metrics;
use keeper_sources::parse_search_width;

use crate::config::PricingConfig;
use crate::decisions::{self, DecisionRecord};
use crate::report::format_micro;

/// Most decisions printed at once.
const LIMIT: i64 = 10_000;

/// Prints the decisions recorded for `asset` over the last `since` (`90s`, `2h`, `1w`); the exit
/// code (2 for a bad `since`, asset or configuration).
pub async fn run(config: Option<&Path>, asset: &str, since: &str, output: Output) -> i32 {
    let seconds = match parse_search_width(since) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: --since: {e}");
            return EXIT_USAGE;
        }
    };
    let config = match PricingConfig::load(config, &ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return EXIT_USAGE;
        }
    };
    if config.storage.database_url.is_none() {
        eprintln!(
            "error: storage.database_url (DATABASE_URL) is required: decisions live in PostgreSQL"
        );
        return EXIT_USAGE;
    }
    let Some(asset_cfg) = config
        .assets
        .iter()
        .find(|a| a.symbol.eq_ignore_ascii_case(asset))
    else {
        eprintln!("error: --asset {asset:?} is not a configured asset");
        return EXIT_USAGE;
    };
    let from = chrono::Utc::now()
        - chrono::Duration::seconds(i64::try_from(seconds).unwrap_or(i64::MAX / 1_000));
    let metrics = Arc::new(Metrics::new("pricing-oracle"));
    let store = Store::connect(&config.storage, metrics, Alerter::disabled()).await;
    let rows = match decisions::decisions_since(&store, &asset_cfg.symbol, from, LIMIT).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: reading decisions: {e}");
            return EXIT_FAILED;
        }
    };
    match output {
        Output::Json => {
            let doc = serde_json::json!({ "decisions": rows });
            match serde_json::to_string_pretty(&doc) {
                Ok(t) => println!("{t}"),
                Err(e) => {
                    eprintln!("error: {e}");
                    return EXIT_FAILED;
                }
            }
        }
        Output::Text => print!("{}", render(&asset_cfg.symbol, since, &rows)),
    }
    EXIT_OK
}

fn micro(v: Option<i64>) -> String {
    v.and_then(|m| u64::try_from(m).ok())
        .map_or_else(|| "-".into(), format_micro)
}

/// The decisions as text: one line per tick, then its quotes.
fn render(asset: &str, since: &str, rows: &[DecisionRecord]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{asset}: {} decision(s) in the last {since}",
        rows.len()
    );
    for r in rows {
        let lineages = r.detail["lineages"]
            .as_array()
            .map(|l| {
                l.iter()
                    .filter_map(|x| x.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            })
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "{} {:<9} price {} on-chain {} lineages [{lineages}]: {}{}",
            r.tick_at.format("%Y-%m-%dT%H:%M:%SZ"),
            r.action,
            micro(r.price_micro),
            micro(r.onchain_micro),
            r.reason,
            r.detail["breaker"]
                .as_str()
                .map(|b| format!(" ({b})"))
                .unwrap_or_default()
        );
        for q in r.quotes.as_array().into_iter().flatten() {
            let fate = match (q["accepted"].as_bool(), q["why"].as_str()) {
                (Some(true), _) => "used".to_owned(),
                (_, Some(why)) => format!("rejected: {why}"),
                _ => "rejected".to_owned(),
            };
            let _ = writeln!(
                out,
                "    {:<10} {:<10} {:>12} t={:<10} {fate}",
                q["source"].as_str().unwrap_or("?"),
                q["lineage"].as_str().unwrap_or("?"),
                q["price"].as_str().unwrap_or("-"),
                q["timestamp"]
                    .as_i64()
                    .map_or_else(|| "-".into(), |t| t.to_string()),
            );
        }
    }
    out
}

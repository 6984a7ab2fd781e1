//! `pricing-oracle-keeper history --asset USDT --since 2h [--output json]`: the recorded
//! decisions of one asset, the answer to "why was this price published at that time?".

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;

use clap::{Parser, Subcommand};
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

#[derive(Debug, Parser)]
#[command(name = "pricing-oracle-keeper")]
struct HistoryCli {
    /// TOML configuration file (for DATABASE_URL / DB_SCHEMA).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Text or one JSON document.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Print the recorded decisions of one asset (needs DATABASE_URL).
    History {
        /// The asset's symbol, e.g. USDT.
        #[arg(long)]
        asset: String,
        /// How far back: 90s, 30m, 2h, 1d, 1w.
        #[arg(long, default_value = "1h")]
        since: String,
    },
}

/// True when the command line asks for `history` (its first positional argument).
pub fn requested(args: &[OsString]) -> bool {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let Some(a) = a.to_str() else { return false };
        if a == "--config" || a == "--output" {
            it.next();
            continue;
        }
        if a.starts_with('-') {
            continue;
        }
        return a == "history";
    }
    false
}

/// Runs the `history` command; the process exit code.
pub fn main(args: Vec<OsString>) -> std::process::ExitCode {
    keeper_runtime::disable_core_dumps();
    let cli = match HistoryCli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    keeper_runtime::cli::run_async_on(keeper_runtime::cli::Threads::One, run(cli))
}

async fn run(cli: HistoryCli) -> i32 {
    let Command::History { asset, since } = cli.command;
    let seconds = match parse_search_width(&since) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: --since: {e}");
            return EXIT_USAGE;
        }
    };
    let config = match PricingConfig::load(cli.config.as_deref(), &ProcessEnv) {
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
        .find(|a| a.symbol.eq_ignore_ascii_case(&asset))
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
    match cli.output {
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
        Output::Text => print!("{}", render(&asset_cfg.symbol, &since, &rows)),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<OsString> {
        a.iter().map(OsString::from).collect()
    }

    #[test]
    fn history_is_recognised_wherever_the_global_flags_are() {
        assert!(requested(&args(&["k", "history", "--asset", "USDT"])));
        assert!(requested(&args(&["k", "--config", "f.toml", "history"])));
        assert!(requested(&args(&["k", "--output", "json", "history"])));
        assert!(!requested(&args(&["k", "--once"])));
        assert!(!requested(&args(&["k", "status"])));
        assert!(!requested(&args(&["k", "--config", "history"])));
        let cli = HistoryCli::try_parse_from(args(&[
            "k", "--output", "json", "history", "--asset", "USDT", "--since", "2h",
        ]))
        .unwrap();
        assert_eq!(cli.output, Output::Json);
        let Command::History { asset, since } = cli.command;
        assert_eq!((asset.as_str(), since.as_str()), ("USDT", "2h"));
    }
}

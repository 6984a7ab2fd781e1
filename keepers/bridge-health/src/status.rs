//! `bridge-health-keeper status`: what the oracle holds for every configured bridge.

use keeper_runtime::cli::Output;
use keeper_ton::keeper::Freshness;
use keeper_ton::{TonAddress, Toncenter, read_bridge_status};
use serde::Serialize;

use crate::config::Config;

#[derive(Serialize)]
struct BridgeStatusRow {
    bridge: String,
    bridge_id: u8,
    is_online: Option<bool>,
    last_seen: Option<u32>,
    #[serde(flatten)]
    freshness: Freshness,
}

impl BridgeStatusRow {
    /// A row without a status: never set, or unreadable.
    fn without_status(bridge: &crate::config::BridgeSpec, error: String, unreadable: bool) -> Self {
        Self {
            bridge: bridge.name.clone(),
            bridge_id: bridge.id,
            is_online: None,
            last_seen: None,
            freshness: Freshness::missing(error, unreadable),
        }
    }
}

/// The `status` subcommand: every bridge's on-chain status and age; exit 1 when one is
/// unreadable.
pub async fn print(
    config: &Config,
    oracle: TonAddress,
    transport: &Toncenter,
    output: Output,
) -> anyhow::Result<i32> {
    let max_age = config.settings.policy.max_status_age;
    let now = chrono::Utc::now().timestamp().max(0) as u64;
    let mut rows = Vec::new();
    for b in &config.bridges {
        let row = match read_bridge_status(transport, &oracle, b.id).await {
            Ok((_, 0)) => BridgeStatusRow::without_status(b, "no status on-chain".into(), false),
            Ok((online, last_seen)) => {
                let age = now.saturating_sub(u64::from(last_seen));
                BridgeStatusRow {
                    bridge: b.name.clone(),
                    bridge_id: b.id,
                    is_online: Some(online),
                    last_seen: Some(last_seen),
                    // An offline bridge keeps an old last_seen by design.
                    freshness: Freshness::of(age, online && age > max_age),
                }
            }
            Err(e) => BridgeStatusRow::without_status(b, e.to_string(), true),
        };
        rows.push(row);
    }
    match output {
        Output::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({
                "oracle": oracle.to_base64_url(),
                "max_status_age": max_age,
                "bridges": rows,
            }))?
        ),
        Output::Text => {
            println!(
                "oracle {}  (status stale after {max_age} s)",
                oracle.to_base64_url()
            );
            println!(
                "{:<12} {:>3} {:<7} {:>12} {:>8}  state",
                "bridge", "id", "online", "last_seen", "age"
            );
            for r in &rows {
                let (age, state) = (r.freshness.age_text(), r.freshness.state_text());
                let online = match r.is_online {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "-",
                };
                println!(
                    "{:<12} {:>3} {:<7} {:>12} {:>8}  {state}",
                    r.bridge,
                    r.bridge_id,
                    online,
                    r.last_seen
                        .map(|t| t.to_string())
                        .unwrap_or_else(|| "-".into()),
                    age
                );
            }
        }
    }
    Ok(Freshness::exit_code(rows.iter().map(|r| &r.freshness)))
}

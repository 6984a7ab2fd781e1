//! One cycle: read every signal of every bridge concurrently, then decide per bridge.

use futures_util::future::join_all;

use crate::config::BridgeSpec;
use crate::decision::{self, BridgeDecision, Memory};
use crate::signals::{self, Ctx, SignalReport};

/// Reads every enabled signal of every bridge at once; reports come back per bridge in
/// configuration order.
pub async fn read_all(bridges: &[BridgeSpec], ctx: &Ctx<'_>) -> Vec<Vec<SignalReport>> {
    join_all(
        bridges
            .iter()
            .map(|b| async move { join_all(b.signals.iter().map(|s| signals::run(s, ctx))).await }),
    )
    .await
}

/// Decides every bridge from its reports, updating the per-bridge memory (same order).
pub fn decide_all(
    bridges: &[BridgeSpec],
    reports: Vec<Vec<SignalReport>>,
    memory: &mut [Memory],
    hold_unknown: u64,
    now: i64,
) -> Vec<BridgeDecision> {
    bridges
        .iter()
        .zip(reports)
        .zip(memory.iter_mut())
        .map(|((b, r), m)| decision::decide(b, r, m, hold_unknown, now))
        .collect()
}

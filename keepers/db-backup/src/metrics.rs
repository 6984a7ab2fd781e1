//! The backup job's own metric families, registered beside the shared ones.

use keeper_runtime::telemetry::Metrics;
use keeper_runtime::telemetry::metrics::{FloatGauge, Labels, labels};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

/// `backup_last_success_timestamp_seconds`
pub const LAST_SUCCESS_TIMESTAMP: &str = "backup_last_success_timestamp_seconds";
/// `backup_duration_seconds`
pub const DURATION: &str = "backup_duration_seconds";
/// `backup_size_bytes`
pub const SIZE: &str = "backup_size_bytes";
/// `backup_runs_total` (the registry adds the `_total` suffix to the family name).
pub const RUNS: &str = "backup_runs";
/// `backup_restore_duration_seconds`
pub const RESTORE_DURATION: &str = "backup_restore_duration_seconds";
/// `backup_restore_verified`
pub const RESTORE_VERIFIED: &str = "backup_restore_verified";

/// What a backup run reports (the one-shot export after `run --once`).
pub const BACKUP_FAMILIES: [&str; 4] = [LAST_SUCCESS_TIMESTAMP, DURATION, SIZE, RUNS];
/// What a restore verification reports (`verify`, drills): exported alone so it never
/// overwrites what the last backup run reported.
pub const RESTORE_FAMILIES: [&str; 2] = [RESTORE_DURATION, RESTORE_VERIFIED];

/// `backup_*`: what the dashboards and the `backup_stale` rule read.
#[derive(Clone, Default)]
pub struct BackupMetrics {
    /// `backup_last_success_timestamp_seconds`
    pub last_success_timestamp: Gauge,
    /// `backup_duration_seconds` of the last run.
    pub duration_seconds: FloatGauge,
    /// `backup_size_bytes` of the last successful backup.
    pub size_bytes: Gauge,
    /// `backup_runs_total{outcome}`
    pub runs: Family<Labels, Counter>,
    /// `backup_restore_duration_seconds` of the last restore verification (drill).
    pub restore_duration_seconds: FloatGauge,
    /// `backup_restore_verified`: 1 when the last restore verification passed, 0 when it
    /// failed (absent until one ran).
    pub restore_verified: Gauge,
}

impl BackupMetrics {
    /// Registers the families in `metrics`, with zero series for both outcomes so `increase()`
    /// sees the first failure.
    pub fn register(metrics: &mut Metrics) -> Self {
        let b = Self::default();
        metrics.register(
            LAST_SUCCESS_TIMESTAMP,
            "Unix time of the last successful backup",
            b.last_success_timestamp.clone(),
        );
        metrics.register(
            DURATION,
            "Wall time of the last backup run",
            b.duration_seconds.clone(),
        );
        metrics.register(
            SIZE,
            "Size of the last successful backup artifact",
            b.size_bytes.clone(),
        );
        metrics.register(RUNS, "Backup runs by outcome", b.runs.clone());
        metrics.register(
            RESTORE_DURATION,
            "Wall time of the last restore verification (restore into a scratch database)",
            b.restore_duration_seconds.clone(),
        );
        metrics.register(
            RESTORE_VERIFIED,
            "1 if the last restore verification passed (row counts equal to the manifest), else 0",
            b.restore_verified.clone(),
        );
        for outcome in ["success", "failure"] {
            drop(b.runs.get_or_create(&labels([("outcome", outcome)])));
        }
        b
    }

    /// Records a finished restore verification (other modes leave the restore series alone).
    pub fn record_restore(&self, v: &crate::manifest::Verification) {
        if v.mode != crate::config::VerifyMode::Restore {
            return;
        }
        if let Some(d) = v.duration_seconds {
            self.restore_duration_seconds.set(d);
        }
        self.restore_verified.set(i64::from(v.ok));
    }
}

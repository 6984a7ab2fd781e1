//! The backup job's own metric families, registered beside the shared ones.

use keeper_runtime::telemetry::Metrics;
use keeper_runtime::telemetry::metrics::{FloatGauge, Labels, labels};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

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
            "backup_last_success_timestamp_seconds",
            "Unix time of the last successful backup",
            b.last_success_timestamp.clone(),
        );
        metrics.register(
            "backup_duration_seconds",
            "Wall time of the last backup run",
            b.duration_seconds.clone(),
        );
        metrics.register(
            "backup_size_bytes",
            "Size of the last successful backup artifact",
            b.size_bytes.clone(),
        );
        metrics.register("backup_runs", "Backup runs by outcome", b.runs.clone());
        metrics.register(
            "backup_restore_duration_seconds",
            "Wall time of the last restore verification (restore into a scratch database)",
            b.restore_duration_seconds.clone(),
        );
        metrics.register(
            "backup_restore_verified",
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

//! Applies the GFS plan to local and remote backups of this database, separately, through
//! [`store::prune`].

use serde::Serialize;

use crate::app::App;
use crate::retention::{Policy, Reason};
use crate::store::{self, Pruned};

/// What retention decided (and did) in one location.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LocationReport {
    /// Kept backups with their reasons, newest first.
    pub keep: Vec<Kept>,
    /// Backups to delete (or deleted, unless a dry run), newest first.
    pub delete: Vec<String>,
    /// Incomplete entries (manifest unreadable or archive missing), left for an operator.
    pub broken: Vec<String>,
}

/// A kept backup.
#[derive(Debug, Clone, Serialize)]
pub struct Kept {
    /// Backup name.
    pub name: String,
    /// Why.
    pub reasons: Vec<Reason>,
}

/// What retention did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    /// Nothing was deleted.
    pub dry_run: bool,
    /// `BACKUP_DIR`.
    pub local: LocationReport,
    /// The bucket, when configured.
    pub remote: Option<LocationReport>,
    /// Deletions or listings that failed.
    pub errors: Vec<String>,
}

/// The GFS policy of the settings.
pub(crate) fn policy(app: &App) -> Policy {
    let b = app.settings.backup();
    Policy {
        last: b.keep_last,
        daily: b.keep_daily,
        weekly: b.keep_weekly,
        monthly: b.keep_monthly,
    }
}

fn report_of(pruned: &Pruned) -> LocationReport {
    LocationReport {
        keep: pruned
            .plan
            .keep
            .iter()
            .map(|(id, reasons)| Kept {
                name: id.base(),
                reasons: reasons.clone(),
            })
            .collect(),
        delete: pruned.plan.delete.iter().map(|id| id.base()).collect(),
        broken: pruned.broken.iter().map(|id| id.base()).collect(),
    }
}

/// Plans retention over this database's backups and, unless `dry_run`, deletes what it may.
pub async fn prune(app: &App, dry_run: bool) -> PruneReport {
    let mut report = PruneReport {
        dry_run,
        ..PruneReport::default()
    };
    // Retention is per database: without a label there is no telling whose backups to weigh.
    if let Err(e) = app.require_label("prune") {
        report.errors.push(e.to_string());
        return report;
    }
    match store::prune(&app.local, &app.label, policy(app), dry_run).await {
        Ok(pruned) => {
            report.local = report_of(&pruned);
            report.errors.extend(pruned.errors);
        }
        Err(e) => report.errors.push(e.to_string()),
    }
    if let Some(remote) = &app.remote {
        match store::prune(remote, &app.label, policy(app), dry_run).await {
            Ok(pruned) => {
                report.remote = Some(report_of(&pruned));
                report.errors.extend(pruned.errors);
            }
            Err(e) => report.errors.push(e.to_string()),
        }
    }
    for e in &report.errors {
        tracing::warn!(error = %e, "retention");
    }
    report
}

//! Applies the GFS plan to local and remote backups of this database, separately.

use serde::Serialize;

use crate::app::App;
use crate::retention::{self, Plan, Policy, Reason};

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

fn report_of(plan: &Plan, broken: Vec<String>) -> LocationReport {
    LocationReport {
        keep: plan
            .keep
            .iter()
            .map(|(id, reasons)| Kept {
                name: id.base(),
                reasons: reasons.clone(),
            })
            .collect(),
        delete: plan.delete.iter().map(|id| id.base()).collect(),
        broken,
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
    match app.local.blocking(|l| l.list()).await {
        Ok(list) => {
            let mine: Vec<_> = list.into_iter().filter(|b| b.id.db == app.label).collect();
            let broken = mine
                .iter()
                .filter(|b| !b.complete())
                .map(|b| b.id.base())
                .collect();
            let candidates: Vec<_> = mine
                .iter()
                .filter_map(|b| b.manifest.as_ref().ok().filter(|_| b.dump_present))
                .map(|m| (m.id(), m.verified()))
                .collect();
            let plan = retention::plan(&candidates, policy(app));
            if !dry_run {
                for id in &plan.delete {
                    let id_owned = id.clone();
                    match app.local.blocking(move |l| l.delete(&id_owned)).await {
                        Ok(()) => tracing::info!(backup = %id, "pruned local backup"),
                        Err(e) => report.errors.push(e.to_string()),
                    }
                }
            }
            report.local = report_of(&plan, broken);
        }
        Err(e) => report.errors.push(e.to_string()),
    }
    if let Some(remote) = &app.remote {
        match remote.list().await {
            Ok(list) => {
                let mine: Vec<_> = list.into_iter().filter(|b| b.id.db == app.label).collect();
                let broken = mine
                    .iter()
                    .filter(|b| !b.complete())
                    .map(|b| b.id.base())
                    .collect();
                let candidates: Vec<_> = mine
                    .iter()
                    .filter_map(|b| b.manifest.as_ref().ok().filter(|_| b.dump_present))
                    .map(|m| (m.id(), m.verified()))
                    .collect();
                let plan = retention::plan(&candidates, policy(app));
                if !dry_run {
                    for id in &plan.delete {
                        match remote.delete(id).await {
                            Ok(()) => tracing::info!(backup = %id, "pruned remote backup"),
                            Err(e) => report.errors.push(e.to_string()),
                        }
                    }
                }
                report.remote = Some(report_of(&plan, broken));
            }
            Err(e) => report.errors.push(e.to_string()),
        }
    }
    for e in &report.errors {
        tracing::warn!(error = %e, "retention");
    }
    report
}

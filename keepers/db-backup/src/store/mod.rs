//! Where backups live: the backup directory ([`local::LocalStore`]) and S3-compatible storage
//! ([`s3::RemoteStore`]), behind one [`BackupStore`] trait. Finding a database's backups, its
//! newest complete one and pruning are written once, over what a store lists.

pub mod local;
pub mod s3;

use std::future::Future;

use keeper_runtime::config::BadInput;

use crate::manifest::{BackupId, Manifest};
use crate::retention::{self, Plan, Policy};

/// One backup found in a store (listed because its manifest exists).
#[derive(Debug, Clone)]
pub struct StoredBackup {
    /// Its identity.
    pub id: BackupId,
    /// The manifest, or why it could not be read.
    pub manifest: Result<Manifest, BadInput>,
    /// Whether the archive exists beside the manifest.
    pub dump_present: bool,
    /// Where the archive is, as shown to operators (a path or an `s3://` URL).
    pub archive: String,
}

impl StoredBackup {
    /// Complete: readable manifest and the archive present.
    pub fn complete(&self) -> bool {
        self.manifest.is_ok() && self.dump_present
    }
}

/// A place that holds backups: what retention, `latest` and `list` need from it.
pub trait BackupStore: Sync {
    /// Why listing or deleting failed.
    type Error: std::error::Error + Send + Sync + 'static;

    /// `local` or `remote`: names the store in logs.
    fn kind(&self) -> &'static str;

    /// Every backup with a manifest, of every database, oldest first.
    fn list_backups(&self) -> impl Future<Output = Result<Vec<StoredBackup>, Self::Error>> + Send;

    /// Deletes a backup: the manifest first, so a half-deleted backup is never listed.
    fn delete_backup(&self, id: &BackupId) -> impl Future<Output = Result<(), Self::Error>> + Send;
}

/// The backups of database `db` in `store`, oldest first.
pub async fn backups_of<S: BackupStore>(
    store: &S,
    db: &str,
) -> Result<Vec<StoredBackup>, S::Error> {
    let all = store.list_backups().await?;
    Ok(all.into_iter().filter(|b| b.id.db == db).collect())
}

/// The newest complete backup of database `db` in `store`.
pub async fn newest<S: BackupStore>(store: &S, db: &str) -> Result<Option<Manifest>, S::Error> {
    Ok(backups_of(store, db)
        .await?
        .into_iter()
        .filter(StoredBackup::complete)
        .filter_map(|b| b.manifest.ok())
        .filter(|m| m.name == db)
        .max_by_key(Manifest::id))
}

/// What retention decided, and did, in one store.
#[derive(Debug, Clone, Default)]
pub struct Pruned {
    /// The plan over the complete backups.
    pub plan: Plan,
    /// Incomplete entries (manifest unreadable or archive missing), left for an operator.
    pub broken: Vec<BackupId>,
    /// Deletions that failed.
    pub errors: Vec<String>,
}

/// Plans retention over the complete backups of `db` in `store` and, unless `dry_run`,
/// deletes what the plan drops; incomplete entries are neither counted nor deleted.
pub async fn prune<S: BackupStore>(
    store: &S,
    db: &str,
    policy: Policy,
    dry_run: bool,
) -> Result<Pruned, S::Error> {
    let mine = backups_of(store, db).await?;
    let broken = mine
        .iter()
        .filter(|b| !b.complete())
        .map(|b| b.id.clone())
        .collect();
    let candidates: Vec<(BackupId, bool)> = mine
        .iter()
        .filter_map(|b| b.manifest.as_ref().ok().filter(|_| b.dump_present))
        .map(|m| (m.id(), m.verified()))
        .collect();
    let plan = retention::plan(&candidates, policy);
    let mut errors = Vec::new();
    if !dry_run {
        for id in &plan.delete {
            match store.delete_backup(id).await {
                Ok(()) => tracing::info!(backup = %id, store = store.kind(), "pruned backup"),
                Err(e) => errors.push(e.to_string()),
            }
        }
    }
    Ok(Pruned {
        plan,
        broken,
        errors,
    })
}

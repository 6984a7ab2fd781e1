//! What every command shares: settings, stores, metrics, alerts, records.

use std::sync::Arc;

use keeper_runtime::alert::Alerter;
use keeper_runtime::config::{ConfigError, StorageSettings};
use keeper_runtime::store::Store;
use keeper_runtime::telemetry::Metrics;

use crate::config::Settings;
use crate::manifest::Manifest;
use crate::metrics::BackupMetrics;
use crate::store::s3::{RemoteStore, S3Keys};
use crate::store::{self, local::LocalStore};

/// The wired-up job.
pub struct App {
    /// Validated settings.
    pub settings: Settings,
    /// Label used in names: `BACKUP_NAME` or the source database's name; empty when neither is
    /// set (a restore on a machine that never saw the source).
    pub label: String,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// The `backup_*` families in it.
    pub backup_metrics: BackupMetrics,
    /// Alert lifecycle.
    pub alerter: Alerter,
    /// `backup_runs`, when records are on.
    pub records: Option<Store>,
    /// The backup directory.
    pub local: LocalStore,
    /// The bucket, when configured.
    pub remote: Option<RemoteStore>,
}

impl App {
    /// Opens the local directory and the remote client; connects records lazily.
    pub async fn new(
        settings: Settings,
        (metrics, backup_metrics): (Arc<Metrics>, BackupMetrics),
        alerter: Alerter,
        with_records: bool,
    ) -> anyhow::Result<Self> {
        let label = match (&settings.backup().name, &settings.source_url) {
            (Some(n), _) => n.clone(),
            (None, Some(url)) => database_label(url.expose())?,
            (None, None) => String::new(),
        };
        let local = LocalStore::open(&settings.backup().dir)?;
        let remote = match &settings.s3 {
            Some(loc) => {
                let b = settings.backup();
                let keys = S3Keys {
                    access_key_id: b.s3_access_key_id.clone(),
                    secret_access_key: b.s3_secret_access_key.clone(),
                    session_token: b.s3_session_token.clone(),
                };
                Some(RemoteStore::from_env(
                    loc,
                    (b.s3_part_size_mib as usize) << 20,
                    &keys,
                )?)
            }
            None => None,
        };
        let records = match (&settings.records_url, with_records) {
            (Some(url), true) => {
                let storage = StorageSettings {
                    database_url: Some(url.clone()),
                    redis_url: None,
                    migrations: crate::records::MIGRATIONS,
                    ..settings.raw.storage.clone()
                };
                Some(Store::connect(&storage, metrics.clone(), alerter.clone()).await)
            }
            _ => None,
        };
        Ok(Self {
            settings,
            label,
            metrics,
            backup_metrics,
            alerter,
            records,
            local,
            remote,
        })
    }

    /// The label, or why a command that picks backups by it cannot run without one.
    pub fn require_label(&self, what: &str) -> Result<&str, ConfigError> {
        if self.label.is_empty() {
            Err(ConfigError::new(
                "backup.name (BACKUP_NAME)",
                format!(
                    "{what} needs to know whose backups: set BACKUP_NAME (or DATABASE_URL) to the backup's name, e.g. app for app-20260101T000000Z"
                ),
            ))
        } else {
            Ok(&self.label)
        }
    }

    /// Sets the backup gauges from the newest complete backup on record (local or remote), so a
    /// restarted daemon or a one-shot push reports the true last success, not zero.
    pub async fn seed_metrics(&self) -> Option<Manifest> {
        let newest = self.newest_manifest().await;
        if let Some(m) = &newest {
            let b = &self.backup_metrics;
            b.last_success_timestamp.set(m.finished_at.timestamp());
            b.size_bytes.set(m.size_bytes as i64);
        }
        newest
    }

    /// The newest complete backup of this label, local or remote.
    pub async fn newest_manifest(&self) -> Option<Manifest> {
        let mut found = Vec::new();
        match store::newest(&self.local, &self.label).await {
            Ok(m) => found.extend(m),
            Err(e) => tracing::warn!(error = %e, "cannot list local backups"),
        }
        if let Some(r) = &self.remote {
            match store::newest(r, &self.label).await {
                Ok(m) => found.extend(m),
                Err(e) => tracing::warn!(error = %e, "cannot list remote backups"),
            }
        }
        found.into_iter().max_by_key(Manifest::id)
    }
}

/// The database name from a PostgreSQL URL (the path), checked for use in file names.
pub fn database_label(url: &str) -> Result<String, ConfigError> {
    let parsed = url::Url::parse(url).map_err(|e| {
        ConfigError::new(
            "storage.database_url (DATABASE_URL)",
            format!("not a URL: {e}"),
        )
    })?;
    let name = parsed.path().trim_start_matches('/');
    let name = if name.is_empty() {
        // libpq defaults the database to the user name.
        parsed.username().to_owned()
    } else {
        url::form_urlencoded::parse(format!("n={name}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    crate::config::check_name("DATABASE_URL database name (set BACKUP_NAME)", &name)?;
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_come_from_the_url() {
        assert_eq!(database_label("postgres://u:p@h/app").unwrap(), "app");
        assert_eq!(
            database_label("postgres://u:p@h:5/my-db?sslmode=require").unwrap(),
            "my-db"
        );
        assert_eq!(database_label("postgres://bob@h").unwrap(), "bob");
        let e = database_label("postgres://u:secret@h/we%20ird").unwrap_err();
        assert!(e.to_string().contains("BACKUP_NAME") && !e.to_string().contains("secret"));
    }
}

//! What every command shares: the process around it, settings, stores, metrics, alerts, records.

use std::future::Future;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use keeper_runtime::alert::Alerter;
use keeper_runtime::cli::{EXIT_FAILED, EXIT_USAGE, run_async};
use keeper_runtime::config::{ConfigError, ProcessEnv, StorageSettings};
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

/// Runs one command: loads the settings (exit 2 on a bad one), wipes the secret environment,
/// starts telemetry and runs `command` on the async runtime; the process exit status (2 when it
/// fails on configuration, 1 otherwise).
pub fn start<F, Fut>(config: Option<&Path>, command: F) -> ExitCode
where
    F: FnOnce(Settings) -> Fut,
    Fut: Future<Output = anyhow::Result<i32>>,
{
    let settings = match Settings::load(config, &ProcessEnv) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_USAGE as u8);
        }
    };
    // Before the runtime's threads exist: nothing later (a child, a crash report) sees them.
    keeper_runtime::scrub_secret_env(&crate::env::bindings(), &[]);
    run_async(async move {
        let _guard =
            match keeper_runtime::telemetry::init_tracing(&settings.raw.telemetry, "db-backup") {
                Ok(g) => g,
                Err(e) => {
                    eprintln!("error: {e}");
                    return EXIT_USAGE;
                }
            };
        keeper_runtime::install_crypto_provider();
        if settings.raw.storage.redis_url.is_some() {
            // The shared storage section binds REDIS_URL for every keeper; a backup has no use
            // for it, and an operator who set it should not think it does something here.
            tracing::info!("REDIS_URL is set but db-backup uses no Redis: ignored");
        }
        match command(settings).await {
            Ok(code) => code,
            Err(e) => {
                let usage = e.downcast_ref::<ConfigError>().is_some();
                eprintln!("error: {e:#}");
                if usage { EXIT_USAGE } else { EXIT_FAILED }
            }
        }
    })
}

/// A registry with the `backup_*` families, for [`App::new`].
pub fn registry() -> (Arc<Metrics>, BackupMetrics) {
    let mut registry = Metrics::new("db-backup");
    let backup_metrics = BackupMetrics::register(&mut registry);
    (Arc::new(registry), backup_metrics)
}

impl App {
    /// Pushes / writes the restore-verification metrics only (a drill must not overwrite what
    /// the last backup run reported).
    pub async fn export_restore_metrics(&self) {
        self.export_body(crate::export::restore_text).await;
    }

    /// Pushes / writes the metrics of a backup run.
    pub async fn export_metrics(&self) {
        self.export_body(crate::export::backup_text).await;
    }

    /// Sends a metrics exposition to the Pushgateway and/or the node-exporter textfile,
    /// whichever is configured; failures are logged, never fatal to the run they describe.
    async fn export_body(&self, render: fn(&Metrics) -> String) {
        let b = self.settings.backup();
        if b.pushgateway_url.is_none() && b.metrics_textfile.is_none() {
            return;
        }
        let body = render(&self.metrics);
        if let Some(url) = &b.pushgateway_url
            && let Err(e) = crate::export::push(url, &self.label, body.clone()).await
        {
            tracing::warn!(error = %e, "cannot push metrics");
        }
        if let Some(path) = b.metrics_textfile.clone() {
            match tokio::task::spawn_blocking(move || crate::export::write_textfile(&path, &body))
                .await
            {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "cannot write the metrics textfile"),
                Err(e) => tracing::warn!(error = %e, "cannot write the metrics textfile"),
            }
        }
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

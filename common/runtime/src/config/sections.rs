//! Settings sections shared by every keeper. Each keeper's own settings embed the ones it uses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, EnvBinding, Kind, bind, bind_secret, validate};
use crate::secret::{Secret, SecretUrl};

/// Environment bindings of the sections below; keepers append their own.
pub const COMMON_ENV: &[EnvBinding] = &[
    bind("UPDATE_INTERVAL", "runner.interval", Kind::Int),
    bind("UPDATE_INTERVAL_MS", "runner.interval_ms", Kind::Int),
    bind("CYCLE_TIMEOUT", "runner.cycle_timeout", Kind::Int),
    bind("SHUTDOWN_GRACE", "runner.shutdown_grace", Kind::Int),
    bind("METRICS_ADDR", "telemetry.metrics_addr", Kind::Str),
    bind("LOG_FORMAT", "telemetry.log_format", Kind::Str),
    bind(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "telemetry.otlp_endpoint",
        Kind::Str,
    ),
    bind_secret("SLACK_WEBHOOK_URL", "alerts.slack_webhook_url", Kind::Str),
    bind_secret("ALERT_WEBHOOK_URL", "alerts.webhook_url", Kind::Str),
    bind("ALERTMANAGER_URL", "alerts.alertmanager_url", Kind::Str),
    bind_secret(
        "PAGERDUTY_ROUTING_KEY",
        "alerts.pagerduty_routing_key",
        Kind::Str,
    ),
    bind("PAGERDUTY_URL", "alerts.pagerduty_url", Kind::Str),
    bind("ALERT_RENOTIFY", "alerts.renotify", Kind::Int),
    bind_secret("DATABASE_URL", "storage.database_url", Kind::Str),
    bind("DB_SCHEMA", "storage.db_schema", Kind::Str),
    bind_secret("REDIS_URL", "storage.redis_url", Kind::Str),
    bind("REDIS_PREFIX", "storage.redis_prefix", Kind::Str),
    bind("LEASE_TTL", "storage.lease_ttl", Kind::Int),
];

/// `[runner]`: the interval loop.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RunnerSettings {
    /// Seconds between ticks (`UPDATE_INTERVAL`).
    pub interval: u64,
    /// Milliseconds between ticks, overriding `interval` (`UPDATE_INTERVAL_MS`; benchmarks, tests).
    pub interval_ms: Option<u64>,
    /// Seconds one cycle may take before it is abandoned (`CYCLE_TIMEOUT`); default: the interval.
    pub cycle_timeout: Option<u64>,
    /// Seconds an in-flight cycle gets to finish after SIGTERM (`SHUTDOWN_GRACE`).
    pub shutdown_grace: u64,
    /// Raise `keeper_stale` after this many intervals without a successful cycle.
    pub stale_intervals: u32,
}

impl Default for RunnerSettings {
    fn default() -> Self {
        Self {
            interval: 60,
            interval_ms: None,
            cycle_timeout: None,
            shutdown_grace: 30,
            stale_intervals: 3,
        }
    }
}

impl RunnerSettings {
    /// The tick period: `interval_ms` when set, else `interval` seconds.
    pub fn period(&self) -> std::time::Duration {
        match self.interval_ms {
            Some(ms) => std::time::Duration::from_millis(ms.max(1)),
            None => std::time::Duration::from_secs(self.interval.max(1)),
        }
    }

    /// Rejects zero durations.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate::nonzero("runner.interval (UPDATE_INTERVAL)", self.interval)?;
        validate::at_most(
            "runner.interval (UPDATE_INTERVAL)",
            self.interval,
            validate::DAY_SECONDS,
            "s",
        )?;
        if let Some(ms) = self.interval_ms {
            validate::nonzero("runner.interval_ms (UPDATE_INTERVAL_MS)", ms)?;
        }
        if let Some(t) = self.cycle_timeout {
            validate::nonzero("runner.cycle_timeout (CYCLE_TIMEOUT)", t)?;
            validate::at_most(
                "runner.cycle_timeout (CYCLE_TIMEOUT)",
                t,
                7 * validate::DAY_SECONDS,
                "s",
            )?;
        }
        validate::nonzero(
            "runner.shutdown_grace (SHUTDOWN_GRACE)",
            self.shutdown_grace,
        )?;
        validate::at_most(
            "runner.shutdown_grace (SHUTDOWN_GRACE)",
            self.shutdown_grace,
            3_600,
            "s",
        )?;
        validate::nonzero("runner.stale_intervals", u64::from(self.stale_intervals))?;
        Ok(())
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// JSON when stdout is not a terminal, pretty otherwise.
    #[default]
    Auto,
    /// One JSON object per line.
    Json,
    /// Human-readable.
    Pretty,
}

/// `[telemetry]`: logs, traces, the ops HTTP server.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TelemetrySettings {
    /// Address of the ops server (`METRICS_ADDR`); each keeper has its own default port.
    pub metrics_addr: Option<SocketAddr>,
    /// `json`, `pretty` or `auto` (`LOG_FORMAT`).
    pub log_format: LogFormat,
    /// OTLP/HTTP endpoint for traces (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub otlp_endpoint: Option<String>,
}

impl TelemetrySettings {
    /// Checks the OTLP endpoint is a URL.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(u) = &self.otlp_endpoint {
            validate::http_url("telemetry.otlp_endpoint (OTEL_EXPORTER_OTLP_ENDPOINT)", u)?;
        }
        Ok(())
    }
}

/// `[alerts]`: channels and re-notification.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertSettings {
    /// Slack incoming webhook (`SLACK_WEBHOOK_URL`); the URL is itself a credential.
    pub slack_webhook_url: Option<Arc<Secret>>,
    /// Generic JSON webhook (`ALERT_WEBHOOK_URL`).
    pub webhook_url: Option<Arc<Secret>>,
    /// Alertmanager base URL; alerts go to `POST {url}/api/v2/alerts` (`ALERTMANAGER_URL`).
    pub alertmanager_url: Option<String>,
    /// PagerDuty Events v2 routing key (`PAGERDUTY_ROUTING_KEY`).
    pub pagerduty_routing_key: Option<Arc<Secret>>,
    /// PagerDuty Events v2 endpoint (`PAGERDUTY_URL`).
    pub pagerduty_url: String,
    /// Seconds between re-notifications while an alert keeps firing (`ALERT_RENOTIFY`).
    pub renotify: u64,
    /// Per-request timeout for a delivery, seconds.
    pub timeout: u64,
    /// Delivery attempts per notification before giving up (logged and counted).
    pub attempts: u32,
}

impl Default for AlertSettings {
    fn default() -> Self {
        Self {
            slack_webhook_url: None,
            webhook_url: None,
            alertmanager_url: None,
            pagerduty_routing_key: None,
            pagerduty_url: "https://events.pagerduty.com/v2/enqueue".into(),
            renotify: 1800,
            timeout: 10,
            attempts: 4,
        }
    }
}

impl AlertSettings {
    /// Checks every configured channel URL.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(u) = &self.slack_webhook_url {
            validate::secret_http_url("alerts.slack_webhook_url (SLACK_WEBHOOK_URL)", u)?;
        }
        if let Some(u) = &self.webhook_url {
            validate::secret_http_url("alerts.webhook_url (ALERT_WEBHOOK_URL)", u)?;
        }
        if let Some(u) = &self.alertmanager_url {
            validate::http_url("alerts.alertmanager_url (ALERTMANAGER_URL)", u)?;
        }
        validate::http_url("alerts.pagerduty_url (PAGERDUTY_URL)", &self.pagerduty_url)?;
        validate::nonzero("alerts.renotify (ALERT_RENOTIFY)", self.renotify)?;
        validate::at_most(
            "alerts.renotify (ALERT_RENOTIFY)",
            self.renotify,
            7 * validate::DAY_SECONDS,
            "s",
        )?;
        validate::nonzero("alerts.timeout", self.timeout)?;
        validate::nonzero("alerts.attempts", u64::from(self.attempts))?;
        Ok(())
    }
}

/// `[storage]`: optional PostgreSQL and Redis.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSettings {
    /// PostgreSQL URL for records (`DATABASE_URL`); unset means no records.
    pub database_url: Option<Arc<SecretUrl>>,
    /// Schema for the keepers' tables and migration bookkeeping (`DB_SCHEMA`).
    pub db_schema: String,
    /// Redis URL (`REDIS_URL`); unset means no cache, pub/sub or Redis lease.
    pub redis_url: Option<Arc<SecretUrl>>,
    /// Prefix of every Redis key (`REDIS_PREFIX`).
    pub redis_prefix: String,
    /// Seconds the wallet lease lasts without renewal (`LEASE_TTL`).
    pub lease_ttl: u64,
    /// Apply the embedded migrations at start when a database is configured.
    pub migrate_on_start: bool,
    /// The migration sets of the tables this binary uses: set by the binary, never by
    /// configuration.
    #[serde(skip)]
    pub migrations: crate::migrations::Migrations,
}

impl Default for StorageSettings {
    fn default() -> Self {
        Self {
            database_url: None,
            db_schema: "keepers".into(),
            redis_url: None,
            redis_prefix: "tonsurance:".into(),
            lease_ttl: 180,
            migrate_on_start: true,
            migrations: &[],
        }
    }
}

impl StorageSettings {
    /// Checks URL schemes and the schema name.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(u) = &self.database_url {
            validate::url_with_scheme(
                "storage.database_url (DATABASE_URL)",
                u.expose(),
                &["postgres", "postgresql"],
                true,
            )?;
        }
        if let Some(u) = &self.redis_url {
            validate::url_with_scheme(
                "storage.redis_url (REDIS_URL)",
                u.expose(),
                &["redis", "rediss"],
                true,
            )?;
        }
        validate::identifier("storage.db_schema (DB_SCHEMA)", &self.db_schema)?;
        validate::nonzero("storage.lease_ttl (LEASE_TTL)", self.lease_ttl)?;
        Ok(())
    }
}

/// Validates the sections every keeper embeds.
pub fn validate_shared(
    runner: &RunnerSettings,
    telemetry: &TelemetrySettings,
    alerts: &AlertSettings,
    storage: &StorageSettings,
) -> Result<(), ConfigError> {
    runner.validate()?;
    telemetry.validate()?;
    alerts.validate()?;
    storage.validate()
}

/// The wallet lease must outlive the longest cycle: a lease that lapses mid-cycle lets a standby
/// take the wallet while this instance is still about to sign.
pub fn validate_lease_ttl(
    runner: &RunnerSettings,
    storage: &StorageSettings,
) -> Result<(), ConfigError> {
    let cycle = runner
        .cycle_timeout
        .map(Duration::from_secs)
        .unwrap_or_else(|| runner.period());
    if Duration::from_secs(storage.lease_ttl) <= cycle {
        return Err(ConfigError::new(
            "storage.lease_ttl (LEASE_TTL)",
            format!(
                "{} s must exceed the cycle timeout ({} s, runner.cycle_timeout / CYCLE_TIMEOUT, \
                 default the interval)",
                storage.lease_ttl,
                cycle.as_secs_f64()
            ),
        ));
    }
    Ok(())
}

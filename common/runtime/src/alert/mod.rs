//! Alert lifecycle: firing → notify → re-notify every `renotify` → resolved → notify
//! once, delivered to Slack, a generic webhook, Alertmanager and PagerDuty.
//!
//! Callers hold a cheap, cloneable [`Alerter`] handle; `fire`/`resolve` never block and never
//! fail: delivery (with retries) happens on a background task.

mod channel;
mod deliver;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::{mpsc, watch};

pub use channel::{
    Notification, Status, alertmanager_body, alertmanager_endpoint, dedup_key, human_duration,
    pagerduty_body, slack_body, webhook_body,
};
pub use deliver::{ChannelStatus, DeliveryError};

use crate::config::AlertSettings;
use crate::telemetry::metrics::{Metrics, labels};

/// How bad an alert is; maps to Alertmanager's `severity` label and PagerDuty's severity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Pages someone.
    Critical,
    /// Needs attention soon.
    Warning,
    /// For the record.
    Info,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Critical => "critical",
            Self::Warning => "warning",
            Self::Info => "info",
        })
    }
}

/// One alert, identified by its key (`oracle_stale:USDT`, `bridge_offline:wormhole`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// Stable identity: `{alertname}` or `{alertname}:{subject}`.
    pub key: String,
    /// How bad it is.
    pub severity: Severity,
    /// One human sentence: what is wrong and the deciding facts.
    pub summary: String,
    /// Extra labels (`asset`, `bridge`, `source`…), sent to channels that take labels.
    pub labels: Vec<(String, String)>,
}

impl Alert {
    /// A new alert; the part of `key` before `:` becomes its `alertname`.
    pub fn new(key: impl Into<String>, severity: Severity, summary: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            severity,
            summary: summary.into(),
            labels: Vec::new(),
        }
    }

    /// Adds a label.
    pub fn label(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.push((name.into(), value.into()));
        self
    }

    /// The alert name: the key up to the first `:`.
    pub fn name(&self) -> &str {
        self.key.split(':').next().unwrap_or(&self.key)
    }
}

/// What the lifecycle remembers about one firing key.
struct Entry {
    /// The alert as last fired: re-notifications carry the newest summary.
    alert: Alert,
    /// When it started firing.
    starts_at: DateTime<Utc>,
    /// When the channels were last told (first notification or last re-notification).
    last_notified: Instant,
}

/// State shared by the handles, the dispatcher and the delivery tasks.
struct Shared {
    firing: Mutex<HashMap<String, Entry>>,
    /// Notifications queued or being delivered; `flush` waits for zero.
    pending: watch::Sender<usize>,
    metrics: Option<Arc<Metrics>>,
    channels: Mutex<Vec<ChannelStatus>>,
}

/// Locks a mutex, carrying on with the data if a panicking holder poisoned it: the lifecycle
/// map stays consistent because every update is a single insert, remove or field write.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Shared {
    fn add_pending(&self, n: usize) {
        self.pending.send_modify(|p| *p += n);
    }

    fn done_pending(&self, n: usize) {
        self.pending.send_modify(|p| *p = p.saturating_sub(n));
    }

    fn set_firing_gauge(&self, key: &str, value: i64) {
        if let Some(m) = &self.metrics {
            m.alerts_firing
                .get_or_create(&labels([("alert", key)]))
                .set(value);
        }
    }
}

struct Inner {
    shared: Arc<Shared>,
    /// `None` when disabled or when no channel is configured: lifecycle only.
    tx: Option<mpsc::UnboundedSender<Notification>>,
}

/// Cheap, cloneable handle to the alert lifecycle; see the module docs.
#[derive(Clone)]
pub struct Alerter {
    inner: Arc<Inner>,
}

impl fmt::Debug for Alerter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Channel destinations are secrets; show only which channels exist.
        let names: Vec<&str> = lock(&self.inner.shared.channels)
            .iter()
            .map(|c| c.channel)
            .collect();
        f.debug_struct("Alerter")
            .field("channels", &names)
            .field("delivering", &self.inner.tx.is_some())
            .finish()
    }
}

impl Alerter {
    /// Starts delivery to every channel configured in `settings` on a background task.
    ///
    /// With no channel configured the handle still tracks the lifecycle and metrics.
    ///
    /// # Panics
    /// When called outside a tokio runtime (it spawns the delivery task).
    pub fn start(settings: &AlertSettings, keeper: &str, metrics: Arc<Metrics>) -> Alerter {
        let channels = channel::Channel::from_settings(settings);
        let shared = Arc::new(Shared {
            firing: Mutex::new(HashMap::new()),
            pending: watch::channel(0).0,
            metrics: Some(metrics),
            channels: Mutex::new(
                channels
                    .iter()
                    .map(|c| ChannelStatus::new(c.name()))
                    .collect(),
            ),
        });
        if channels.is_empty() {
            tracing::info!("no alert channel configured; alerts are tracked but not delivered");
            return Alerter {
                inner: Arc::new(Inner { shared, tx: None }),
            };
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let renotify = Duration::from_secs(settings.renotify.max(1));
        let timeout = Duration::from_secs(settings.timeout.max(1));
        deliver::spawn(
            deliver::Ctx {
                client: crate::http::client(timeout),
                channels,
                keeper: keeper.to_owned(),
                renotify,
                timeout,
                attempts: settings.attempts.max(1),
                shared: shared.clone(),
            },
            rx,
        );
        Alerter {
            inner: Arc::new(Inner {
                shared,
                tx: Some(tx),
            }),
        }
    }

    /// A handle that keeps the lifecycle (fire, resolve, `firing`) but delivers nowhere and
    /// records no metrics: for tests and dry runs. Needs no runtime.
    pub fn disabled() -> Alerter {
        let shared = Arc::new(Shared {
            firing: Mutex::new(HashMap::new()),
            pending: watch::channel(0).0,
            metrics: None,
            channels: Mutex::new(Vec::new()),
        });
        Alerter {
            inner: Arc::new(Inner { shared, tx: None }),
        }
    }

    /// Raises `alert`. The first fire of a key notifies every channel; later fires of a key that
    /// is still firing only update its summary, severity and labels (re-notification happens on
    /// the `renotify` cadence). Never blocks, never fails.
    pub fn fire(&self, alert: Alert) {
        let shared = &self.inner.shared;
        let mut firing = lock(&shared.firing);
        if let Some(entry) = firing.get_mut(&alert.key) {
            entry.alert = alert;
            return;
        }
        let now = Utc::now();
        tracing::warn!(alert = %alert.key, severity = %alert.severity, summary = %alert.summary, "alert firing");
        shared.set_firing_gauge(&alert.key, 1);
        firing.insert(
            alert.key.clone(),
            Entry {
                alert: alert.clone(),
                starts_at: now,
                last_notified: Instant::now(),
            },
        );
        // Queued while the map is locked so queue order matches lifecycle order.
        self.enqueue(Notification {
            alert,
            status: Status::Firing,
            starts_at: now,
            ends_at: None,
            repeat: false,
            sent_at: now,
        });
    }

    /// Resolves `key`: a firing key notifies every channel once; any other key does nothing.
    pub fn resolve(&self, key: &str) {
        let shared = &self.inner.shared;
        let mut firing = lock(&shared.firing);
        let Some(entry) = firing.remove(key) else {
            return;
        };
        let now = Utc::now();
        tracing::info!(alert = %key, "alert resolved");
        shared.set_firing_gauge(key, 0);
        self.enqueue(Notification {
            alert: entry.alert,
            status: Status::Resolved,
            starts_at: entry.starts_at,
            ends_at: Some(now),
            repeat: false,
            sent_at: now,
        });
    }

    /// Keys currently firing, sorted.
    pub fn firing(&self) -> Vec<String> {
        let mut keys: Vec<String> = lock(&self.inner.shared.firing).keys().cloned().collect();
        keys.sort();
        keys
    }

    /// Whether `key` is currently firing.
    pub fn is_firing(&self, key: &str) -> bool {
        lock(&self.inner.shared.firing).contains_key(key)
    }

    /// Notifications queued or still being delivered (retries included).
    pub fn pending(&self) -> usize {
        *self.inner.shared.pending.borrow()
    }

    /// Waits until every queued notification was delivered or given up, or `timeout` passed
    /// (shutdown and `--once` runs call this before exiting).
    pub async fn flush(&self, timeout: Duration) {
        let mut rx = self.inner.shared.pending.subscribe();
        if tokio::time::timeout(timeout, rx.wait_for(|n| *n == 0))
            .await
            .is_err()
        {
            tracing::warn!(
                pending = *rx.borrow(),
                "alert notifications still undelivered after {timeout:?}; giving up on them"
            );
        }
    }

    /// Per-channel delivery counts and the last error (secrets scrubbed), for `/status`.
    pub fn channels(&self) -> Vec<ChannelStatus> {
        lock(&self.inner.shared.channels).clone()
    }

    fn enqueue(&self, n: Notification) {
        let Some(tx) = &self.inner.tx else {
            return;
        };
        let shared = &self.inner.shared;
        shared.add_pending(1);
        if tx.send(n).is_err() {
            shared.done_pending(1);
            tracing::error!("alert delivery task is gone; notification dropped");
        }
    }
}

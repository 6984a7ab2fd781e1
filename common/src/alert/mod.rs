//! Alert lifecycle (DESIGN §8): firing → notify → re-notify every `renotify` → resolved → notify
//! once, delivered to Slack, a generic webhook, Alertmanager and PagerDuty.
//!
//! Callers hold a cheap, cloneable [`Alerter`] handle; `fire`/`resolve` never block and never
//! fail: delivery (with retries) happens on a background task.

use std::fmt;

use serde::Serialize;

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
        Self { key: key.into(), severity, summary: summary.into(), labels: Vec::new() }
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

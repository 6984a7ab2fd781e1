//! Raises an alert when something has not succeeded for too long, and resolves it when it does.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::alert::{Alert, Alerter, Severity};

/// Tracks "last success" times of one kind of subject (the keeper itself, each asset, each
/// bridge) against a threshold, firing `{alertname}` or `{alertname}:{subject}` while stale.
#[derive(Debug)]
pub struct Staleness {
    alerter: Alerter,
    alertname: String,
    severity: Severity,
    threshold: Duration,
    subject_label: Option<String>,
    context: Option<String>,
    since: DateTime<Utc>,
    firing: BTreeSet<String>,
}

impl Staleness {
    /// A tracker firing `alertname` alerts once a subject's last success is older than
    /// `threshold`; a subject that never succeeded counts from the tracker's creation.
    pub fn new(alerter: Alerter, alertname: &str, severity: Severity, threshold: Duration) -> Self {
        Self {
            alerter,
            alertname: alertname.to_owned(),
            severity,
            threshold,
            subject_label: None,
            context: None,
            since: Utc::now(),
            firing: BTreeSet::new(),
        }
    }

    /// Sends the subject as this label too (e.g. `asset`, `bridge`), for Alertmanager routing.
    pub fn subject_label(mut self, label: &str) -> Self {
        self.subject_label = Some(label.to_owned());
        self
    }

    /// Prefixes every summary with this (e.g. the keeper name).
    pub fn context(mut self, context: &str) -> Self {
        self.context = Some(context.to_owned());
        self
    }

    /// The threshold in force.
    pub fn threshold(&self) -> Duration {
        self.threshold
    }

    /// The alert key of `subject` (`alertname` alone for an empty subject).
    pub fn key(&self, subject: &str) -> String {
        if subject.is_empty() {
            self.alertname.clone()
        } else {
            format!("{}:{subject}", self.alertname)
        }
    }

    /// Whether `subject` is currently considered stale by this tracker.
    pub fn is_stale(&self, subject: &str) -> bool {
        self.firing.contains(&self.key(subject))
    }

    /// Compares `subject`'s last success with `now`: fires (or refreshes) the alert while it is
    /// older than the threshold, resolves it once fresh again. Returns whether it is stale.
    pub fn check(
        &mut self,
        subject: &str,
        last_success: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> bool {
        let key = self.key(subject);
        let reference = last_success.unwrap_or(self.since);
        // A clock step backwards gives a negative age: treat it as fresh.
        let age = (now - reference).to_std().unwrap_or(Duration::ZERO);
        if age > self.threshold {
            let what = match (&self.context, subject.is_empty()) {
                (Some(c), true) => c.clone(),
                (Some(c), false) => format!("{c} {subject}"),
                (None, true) => self.alertname.clone(),
                (None, false) => subject.to_owned(),
            };
            let since = match last_success {
                Some(t) => format!("last success at {}", t.format("%Y-%m-%dT%H:%M:%SZ")),
                None => "no success since start".to_owned(),
            };
            let summary = format!(
                "{what}: stale, {since} ({} s ago, threshold {} s)",
                age.as_secs(),
                self.threshold.as_secs()
            );
            let mut alert = Alert::new(key.clone(), self.severity, summary);
            if let (Some(label), false) = (&self.subject_label, subject.is_empty()) {
                alert = alert.label(label.clone(), subject);
            }
            if self.firing.insert(key) {
                tracing::warn!(alert = %alert.key, summary = %alert.summary, "stale");
            }
            self.alerter.fire(alert);
            true
        } else {
            if self.firing.remove(&key) {
                tracing::info!(alert = %key, "fresh again");
                self.alerter.resolve(&key);
            }
            false
        }
    }

    /// Resolves every alert this tracker raised for a subject not in `keep` (a subject that was
    /// removed from the configuration must not stay firing forever).
    pub fn retain<'a>(&mut self, keep: impl IntoIterator<Item = &'a str>) {
        let keep: BTreeSet<String> = keep.into_iter().map(|s| self.key(s)).collect();
        let gone: Vec<String> = self.firing.difference(&keep).cloned().collect();
        for key in gone {
            self.firing.remove(&key);
            self.alerter.resolve(&key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_while_stale_then_resolves() {
        let alerter = Alerter::disabled();
        let mut s = Staleness::new(
            alerter.clone(),
            "oracle_stale",
            Severity::Critical,
            Duration::from_secs(60),
        )
        .subject_label("asset");
        let now = Utc::now();
        let old = now - chrono::Duration::seconds(120);
        assert!(!s.check("USDT", Some(now), now));
        assert!(s.check("USDT", Some(old), now));
        assert!(alerter.is_firing("oracle_stale:USDT"));
        assert!(!s.check("USDT", Some(now), now));
        assert!(!alerter.is_firing("oracle_stale:USDT"));
        // Never succeeded: counts from creation, so not stale yet.
        assert!(!s.check("USDC", None, now));
        assert!(s.check("USDC", None, now + chrono::Duration::seconds(61)));
        s.retain(["USDT"]);
        assert!(alerter.firing().is_empty());
    }
}

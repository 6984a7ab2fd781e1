//! The four delivery channels and the exact body each one receives.
//!
//! Bodies are built by pure functions so their shape can be checked without a network; the
//! destinations (webhook URLs, routing key) stay inside [`Channel`] and are only read when a
//! request is built.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};

use super::{Alert, Severity};
use crate::config::AlertSettings;
use crate::secret::Secret;

/// PagerDuty rejects longer summaries; Slack truncates long texts anyway.
const MAX_SUMMARY_CHARS: usize = 1024;
/// PagerDuty's limit on `dedup_key`.
const MAX_DEDUP_KEY_CHARS: usize = 255;

/// Whether a notification announces a problem or its end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// The alert is (still) firing.
    Firing,
    /// The alert stopped firing.
    Resolved,
}

impl Status {
    /// `firing` or `resolved`, as the generic webhook and logs spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Firing => "firing",
            Self::Resolved => "resolved",
        }
    }
}

/// One message to deliver to every channel.
#[derive(Debug, Clone)]
pub struct Notification {
    /// The alert as last fired (latest summary and labels).
    pub alert: Alert,
    /// Firing or resolved.
    pub status: Status,
    /// When the alert started firing.
    pub starts_at: DateTime<Utc>,
    /// When it was resolved (only for [`Status::Resolved`]).
    pub ends_at: Option<DateTime<Utc>>,
    /// A re-notification of an alert that keeps firing.
    pub repeat: bool,
    /// When this notification was produced.
    pub sent_at: DateTime<Utc>,
}

/// Where notifications go. Holds the destination secrets; never printed.
pub(crate) enum Channel {
    /// Slack incoming webhook; the URL itself is the credential.
    Slack { url: Arc<Secret> },
    /// Generic JSON webhook.
    Webhook { url: Arc<Secret> },
    /// Alertmanager `POST {base}/api/v2/alerts`.
    Alertmanager { endpoint: String },
    /// PagerDuty Events v2.
    PagerDuty {
        url: String,
        routing_key: Arc<Secret>,
    },
}

impl Channel {
    /// Every channel configured in `settings`, in a fixed order.
    pub(crate) fn from_settings(settings: &AlertSettings) -> Vec<Channel> {
        let mut out = Vec::new();
        if let Some(url) = settings
            .slack_webhook_url
            .as_ref()
            .filter(|u| !u.is_empty())
        {
            out.push(Channel::Slack { url: url.clone() });
        }
        if let Some(url) = settings.webhook_url.as_ref().filter(|u| !u.is_empty()) {
            out.push(Channel::Webhook { url: url.clone() });
        }
        if let Some(base) = settings
            .alertmanager_url
            .as_ref()
            .filter(|u| !u.trim().is_empty())
        {
            out.push(Channel::Alertmanager {
                endpoint: alertmanager_endpoint(base),
            });
        }
        if let Some(key) = settings
            .pagerduty_routing_key
            .as_ref()
            .filter(|k| !k.is_empty())
        {
            out.push(Channel::PagerDuty {
                url: settings.pagerduty_url.clone(),
                routing_key: key.clone(),
            });
        }
        out
    }

    /// The channel's name in logs and the `channel` metric label.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Slack { .. } => "slack",
            Self::Webhook { .. } => "webhook",
            Self::Alertmanager { .. } => "alertmanager",
            Self::PagerDuty { .. } => "pagerduty",
        }
    }

    /// Values that must be scrubbed from any error text about this channel.
    pub(crate) fn secrets(&self) -> Vec<&str> {
        match self {
            Self::Slack { url } | Self::Webhook { url } => secret_parts(url.expose()),
            Self::Alertmanager { endpoint } => secret_parts(endpoint),
            Self::PagerDuty { routing_key, .. } => vec![routing_key.expose()],
        }
    }

    /// The request for one notification.
    pub(crate) fn request(
        &self,
        client: &reqwest::Client,
        n: &Notification,
        keeper: &str,
        renotify: Duration,
    ) -> reqwest::RequestBuilder {
        match self {
            Self::Slack { url } => client.post(url.expose()).json(&slack_body(n, keeper)),
            Self::Webhook { url } => client.post(url.expose()).json(&webhook_body(n, keeper)),
            Self::Alertmanager { endpoint } => client
                .post(endpoint)
                .json(&alertmanager_body(n, keeper, renotify)),
            Self::PagerDuty { url, routing_key } => {
                client
                    .post(url)
                    .json(&pagerduty_body(n, keeper, routing_key.expose()))
            }
        }
    }
}

/// The parts of a URL worth scrubbing: the whole URL, its path (webhook tokens live there),
/// its query and any password.
fn secret_parts(raw: &str) -> Vec<&str> {
    let mut parts = vec![raw];
    let Some((_, rest)) = raw.split_once("://") else {
        return parts;
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if let Some((userinfo, _)) = authority.rsplit_once('@') {
        parts.push(userinfo);
    }
    // Short paths such as `/` or `/hook` carry no token and would scrub too much.
    if path.len() >= 8 {
        parts.push(path);
    }
    parts
}

/// `{base}/api/v2/alerts`, tolerating a trailing slash on the base.
pub fn alertmanager_endpoint(base: &str) -> String {
    format!("{}/api/v2/alerts", base.trim().trim_end_matches('/'))
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// The label map: the alert's own labels (last value wins), in name order.
fn label_map(alert: &Alert) -> BTreeMap<String, String> {
    alert.labels.iter().cloned().collect()
}

/// The part of the key after the first `:`, if any (`USDT` in `oracle_stale:USDT`).
fn subject(alert: &Alert) -> Option<&str> {
    alert
        .key
        .split_once(':')
        .map(|(_, s)| s)
        .filter(|s| !s.is_empty())
}

/// "3h 2m", "45s": how long an alert fired, for humans.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    let (h, m, sec) = (s / 3600, (s % 3600) / 60, s % 60);
    match (h, m) {
        (0, 0) => format!("{sec}s"),
        (0, _) => format!("{m}m {sec}s"),
        _ => format!("{h}h {m}m"),
    }
}

/// Slack treats `&`, `<` and `>` as control characters in `text`.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Slack incoming webhook body: `{"text": …}` with mrkdwn.
pub fn slack_body(n: &Notification, keeper: &str) -> Value {
    let a = &n.alert;
    let summary = slack_escape(&truncate(&a.summary, MAX_SUMMARY_CHARS));
    let key = slack_escape(&a.key);
    let keeper = slack_escape(keeper);
    let text = match n.status {
        Status::Firing => {
            let icon = match a.severity {
                Severity::Critical => ":rotating_light:",
                Severity::Warning => ":warning:",
                Severity::Info => ":information_source:",
            };
            let tag = a.severity.to_string().to_uppercase();
            let again = if n.repeat {
                let since = (n.sent_at - n.starts_at).to_std().unwrap_or_default();
                format!(" (still firing, for {})", human_duration(since))
            } else {
                String::new()
            };
            format!("{icon} *[{tag}] {key}*{again} on `{keeper}`\n{summary}")
        }
        Status::Resolved => {
            let end = n.ends_at.unwrap_or(n.sent_at);
            let lasted = (end - n.starts_at).to_std().unwrap_or_default();
            format!(
                ":white_check_mark: *[RESOLVED] {key}* on `{keeper}` after {}\n{summary}",
                human_duration(lasted)
            )
        }
    };
    json!({ "text": text })
}

/// Generic webhook body: one flat JSON object per notification.
pub fn webhook_body(n: &Notification, keeper: &str) -> Value {
    let a = &n.alert;
    let mut body = json!({
        "key": a.key,
        "alertname": a.name(),
        "status": n.status.as_str(),
        "severity": a.severity,
        "summary": a.summary,
        "labels": label_map(a),
        "keeper": keeper,
        "starts_at": rfc3339(n.starts_at),
        "repeat": n.repeat,
    });
    if let (Some(end), Some(obj)) = (n.ends_at, body.as_object_mut()) {
        obj.insert("ends_at".into(), Value::String(rfc3339(end)));
    }
    body
}

/// Alertmanager accepts label names matching `[a-zA-Z_][a-zA-Z0-9_]*` and rejects the whole
/// batch otherwise.
fn prom_label_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// Alertmanager `POST /api/v2/alerts` body: a one-element array of postable alerts.
///
/// The labels are the ones the Prometheus rule of the same problem carries: `alertname` (the
/// key's name, which is the rule's name), `severity`, and the subject label (`asset`, `wallet`,
/// `bridge`…), plus `keeper`; `subject` only when no label names the subject already. Routed
/// on `alertname` and the subject labels, both land in one group: one page per problem.
///
/// While firing, `endsAt` lies three re-notify periods ahead: each re-send keeps the alert
/// active, and a keeper that died stops holding it open forever. On resolve `endsAt` is the
/// resolution time, which Alertmanager treats as resolved.
pub fn alertmanager_body(n: &Notification, keeper: &str, renotify: Duration) -> Value {
    let a = &n.alert;
    let mut labels: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in &a.labels {
        labels.insert(prom_label_name(k), v.clone());
    }
    if let Some(s) = subject(a) {
        // The subject must be part of the identity or two assets would collapse into one alert.
        if !labels.values().any(|v| v == s) {
            labels.insert("subject".into(), s.to_owned());
        }
    }
    labels.insert("alertname".into(), a.name().to_owned());
    labels.insert("severity".into(), a.severity.to_string());
    labels.insert("keeper".into(), keeper.to_owned());
    let ends_at = match n.status {
        Status::Resolved => n.ends_at.unwrap_or(n.sent_at),
        Status::Firing => {
            let hold = chrono::Duration::from_std(renotify.saturating_mul(3))
                .unwrap_or(chrono::Duration::days(1));
            n.sent_at + hold
        }
    };
    json!([{
        "labels": labels,
        "annotations": { "summary": a.summary, "key": a.key },
        "startsAt": rfc3339(n.starts_at),
        "endsAt": rfc3339(ends_at),
    }])
}

/// A PagerDuty `dedup_key`: stable per keeper and alert key, at most 255 characters.
pub fn dedup_key(keeper: &str, key: &str) -> String {
    truncate(&format!("{keeper}/{key}"), MAX_DEDUP_KEY_CHARS)
}

/// PagerDuty Events v2 body: `trigger` with a payload, or `resolve` with only the dedup key.
pub fn pagerduty_body(n: &Notification, keeper: &str, routing_key: &str) -> Value {
    let a = &n.alert;
    let dedup = dedup_key(keeper, &a.key);
    match n.status {
        Status::Firing => {
            let mut details: BTreeMap<String, String> = label_map(a);
            details.insert("key".into(), a.key.clone());
            details.insert("starts_at".into(), rfc3339(n.starts_at));
            json!({
                "routing_key": routing_key,
                "event_action": "trigger",
                "dedup_key": dedup,
                "client": "tonsurance-keepers",
                "payload": {
                    "summary": truncate(&a.summary, MAX_SUMMARY_CHARS),
                    "source": keeper,
                    "severity": a.severity,
                    "component": subject(a).unwrap_or(a.name()),
                    "group": keeper,
                    "class": a.name(),
                    "timestamp": rfc3339(n.sent_at),
                    "custom_details": details,
                },
            })
        }
        Status::Resolved => json!({
            "routing_key": routing_key,
            "event_action": "resolve",
            "dedup_key": dedup,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn note(status: Status) -> Notification {
        let start = DateTime::parse_from_rfc3339("2025-01-01T00:00:00Z")
            .unwrap()
            .to_utc();
        Notification {
            alert: Alert::new(
                "oracle_stale:USDT",
                Severity::Critical,
                "age 900s > 600s <x> & y",
            ),
            status,
            starts_at: start,
            ends_at: (status == Status::Resolved).then(|| start + chrono::Duration::seconds(125)),
            repeat: false,
            sent_at: start + chrono::Duration::seconds(125),
        }
    }

    #[test]
    fn alertmanager_adds_subject_label_and_sanitises_names() {
        let mut n = note(Status::Firing);
        n.alert = n.alert.label("bad-name", "v");
        let b = alertmanager_body(&n, "pricing-oracle", Duration::from_secs(60));
        let l = &b[0]["labels"];
        assert_eq!(l["subject"], "USDT");
        assert_eq!(l["bad_name"], "v");
        assert_eq!(l["alertname"], "oracle_stale");
        assert_eq!(b[0]["endsAt"], "2025-01-01T00:05:05.000Z");
        let r = alertmanager_body(&note(Status::Resolved), "k", Duration::from_secs(60));
        assert_eq!(r[0]["endsAt"], "2025-01-01T00:02:05.000Z");
        assert_eq!(prom_label_name("9x"), "_9x");
    }

    /// What a rule of the same problem carries too (deploy/prometheus/keepers-rules.yml):
    /// nothing else, so Alertmanager puts the two in one group.
    #[test]
    fn alertmanager_labels_are_the_rule_labels() {
        let mut n = note(Status::Firing);
        n.alert = Alert::new("wallet_balance_low", Severity::Warning, "low").label("wallet", "UQA");
        let b = alertmanager_body(&n, "pricing-oracle", Duration::from_secs(60));
        let labels: BTreeMap<String, String> =
            serde_json::from_value(b[0]["labels"].clone()).unwrap();
        let want: BTreeMap<String, String> = [
            ("alertname", "wallet_balance_low"),
            ("severity", "warning"),
            ("keeper", "pricing-oracle"),
            ("wallet", "UQA"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(labels, want);
        n.alert = Alert::new("oracle_stale:USDT", Severity::Critical, "old").label("asset", "USDT");
        let b = alertmanager_body(&n, "pricing-oracle", Duration::from_secs(60));
        assert!(b[0]["labels"].get("subject").is_none(), "{b}");
        assert_eq!(b[0]["labels"]["asset"], "USDT");
    }

    #[test]
    fn slack_escapes_and_reports_duration() {
        let t = slack_body(&note(Status::Resolved), "k")["text"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(t.contains("&lt;x&gt; &amp; y"), "{t}");
        assert!(t.contains("after 2m 5s"), "{t}");
    }

    #[test]
    fn long_keys_and_summaries_are_truncated() {
        assert_eq!(dedup_key("k", &"x".repeat(400)).chars().count(), 255);
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcd", 3), "ab…");
    }

    #[test]
    fn url_secret_parts_cover_path_and_password() {
        let p = secret_parts("https://u:pw@hooks.slack.com/services/T0/B0/XYZ");
        assert!(p.contains(&"services/T0/B0/XYZ"));
        assert!(p.contains(&"u:pw"));
        assert_eq!(secret_parts("http://am:9093"), vec!["http://am:9093"]);
    }
}

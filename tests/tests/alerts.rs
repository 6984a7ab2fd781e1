//! Alert lifecycle and delivery against local recording sinks standing in for Slack,
//! a generic webhook, Alertmanager and PagerDuty, answering in their documented formats.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use keeper_runtime::alert::{Alert, Alerter, ChannelStatus, Severity};
use keeper_runtime::config::AlertSettings;
use keeper_runtime::secret::Secret;
use keeper_runtime::telemetry::Metrics;
use keeper_tests::sink::{Recorded, Reply, Sink};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

fn settings() -> AlertSettings {
    AlertSettings {
        renotify: 3600,
        timeout: 2,
        attempts: 3,
        ..AlertSettings::default()
    }
}

fn stale_usdt() -> Alert {
    Alert::new(
        "oracle_stale:USDT",
        Severity::Critical,
        "USDT on-chain price is 912 s old (limit 600 s)",
    )
    .label("asset", "USDT")
}

fn body(r: &Recorded) -> Value {
    r.json().unwrap_or_else(|| panic!("not JSON: {}", r.text()))
}

fn parse_time(v: &Value) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(v.as_str().unwrap_or_else(|| panic!("not a time: {v}")))
        .unwrap_or_else(|e| panic!("{v}: {e}"))
        .to_utc()
}

fn assert_json_post(r: &Recorded, path: &str) {
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, path);
    assert_eq!(r.header("content-type"), Some("application/json"));
    let ua = r.header("user-agent").unwrap_or_default();
    assert!(ua.starts_with("tonsurance-keepers/"), "user agent {ua}");
}

/// Polls the alerter until `pred` holds for the named channel's status.
async fn wait_channel(
    alerter: &Alerter,
    channel: &str,
    pred: impl Fn(&ChannelStatus) -> bool,
) -> ChannelStatus {
    let deadline = Instant::now() + WAIT;
    loop {
        let status = alerter
            .channels()
            .into_iter()
            .find(|c| c.channel == channel);
        match status {
            Some(s) if pred(&s) => return s,
            other if Instant::now() > deadline => {
                panic!("channel {channel} never reached the state: {other:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

fn metric_line(metrics: &Metrics, prefix: &str) -> Option<String> {
    metrics
        .render()
        .lines()
        .find(|l| l.starts_with(prefix))
        .map(str::to_owned)
}

#[tokio::test]
async fn slack_gets_a_text_message_for_firing_and_resolved() {
    let slack = Sink::with_default(Reply::text(200, "ok")).await;
    let s = AlertSettings {
        slack_webhook_url: Some(Secret::shared(
            slack.url_for("/services/T000/B000/XXXXXXXX"),
        )),
        ..settings()
    };
    let alerter = Alerter::start(
        &s,
        "pricing-oracle",
        Arc::new(Metrics::new("pricing-oracle")),
    );
    alerter.fire(stale_usdt());
    let got = slack.wait_for(1, WAIT).await;
    assert_json_post(&got[0], "/services/T000/B000/XXXXXXXX");
    let text = body(&got[0])["text"].as_str().unwrap().to_owned();
    assert!(text.contains("[CRITICAL] oracle_stale:USDT"), "{text}");
    assert!(text.contains("912 s old"), "{text}");
    assert!(text.contains("pricing-oracle"), "{text}");

    alerter.resolve("oracle_stale:USDT");
    let got = slack.wait_for(2, WAIT).await;
    let text = body(&got[1])["text"].as_str().unwrap().to_owned();
    assert!(text.contains("[RESOLVED] oracle_stale:USDT"), "{text}");
    assert_eq!(
        wait_channel(&alerter, "slack", |c| c.delivered == 2)
            .await
            .failed,
        0
    );
}

#[tokio::test]
async fn webhook_gets_the_documented_fields() {
    let hook = Sink::start().await;
    let s = AlertSettings {
        webhook_url: Some(Secret::shared(hook.url_for("/alerts"))),
        ..settings()
    };
    let alerter = Alerter::start(&s, "bridge-health", Arc::new(Metrics::new("bridge-health")));
    alerter.fire(
        Alert::new(
            "bridge_offline:wormhole",
            Severity::Warning,
            "no heartbeat for 3600 s",
        )
        .label("bridge", "wormhole"),
    );
    alerter.resolve("bridge_offline:wormhole");
    let got = hook.wait_for(2, WAIT).await;
    assert_json_post(&got[0], "/alerts");
    let (fired, resolved) = (body(&got[0]), body(&got[1]));
    assert_eq!(fired["key"], "bridge_offline:wormhole");
    assert_eq!(fired["alertname"], "bridge_offline");
    assert_eq!(fired["status"], "firing");
    assert_eq!(fired["severity"], "warning");
    assert_eq!(fired["summary"], "no heartbeat for 3600 s");
    assert_eq!(fired["labels"], json!({"bridge": "wormhole"}));
    assert_eq!(fired["keeper"], "bridge-health");
    assert!(fired.get("ends_at").is_none(), "{fired}");
    assert_eq!(resolved["status"], "resolved");
    assert_eq!(resolved["starts_at"], fired["starts_at"]);
    assert!(parse_time(&resolved["ends_at"]) >= parse_time(&fired["starts_at"]));
}

#[tokio::test]
async fn alertmanager_gets_postable_alerts_and_endsat_on_resolve() {
    let am = Sink::start().await;
    // A trailing slash on the base URL must not produce `//api`.
    let s = AlertSettings {
        alertmanager_url: Some(format!("{}/", am.url())),
        ..settings()
    };
    let alerter = Alerter::start(
        &s,
        "pricing-oracle",
        Arc::new(Metrics::new("pricing-oracle")),
    );
    let before = Utc::now();
    alerter.fire(stale_usdt());
    let got = am.wait_for(1, WAIT).await;
    assert_json_post(&got[0], "/api/v2/alerts");
    let fired = body(&got[0]);
    let list = fired.as_array().expect("a JSON array");
    assert_eq!(list.len(), 1);
    let a = &list[0];
    assert_eq!(
        a["labels"],
        json!({"alertname": "oracle_stale", "severity": "critical", "keeper": "pricing-oracle", "asset": "USDT"})
    );
    assert_eq!(
        a["annotations"]["summary"],
        "USDT on-chain price is 912 s old (limit 600 s)"
    );
    let starts = parse_time(&a["startsAt"]);
    assert!(starts >= before - chrono::Duration::seconds(1));
    // While firing, endsAt lies ahead so Alertmanager keeps the alert active between re-sends.
    assert!(parse_time(&a["endsAt"]) > Utc::now() + chrono::Duration::minutes(30));

    alerter.resolve("oracle_stale:USDT");
    let got = am.wait_for(2, WAIT).await;
    let r = &body(&got[1])[0];
    assert_eq!(
        r["labels"], a["labels"],
        "resolve must address the same alert"
    );
    assert_eq!(r["startsAt"], a["startsAt"]);
    let ends = parse_time(&r["endsAt"]);
    assert!(
        ends >= starts && ends <= Utc::now(),
        "endsAt {ends} must be the resolution time"
    );
}

#[tokio::test]
async fn pagerduty_gets_trigger_and_resolve_with_one_dedup_key() {
    let pd = Sink::with_default(Reply::json(
        202,
        json!({"status": "success", "message": "Event processed", "dedup_key": "x"}),
    ))
    .await;
    let s = AlertSettings {
        pagerduty_routing_key: Some(Secret::shared("R0UT1NGKEY0000000000000000000000")),
        pagerduty_url: pd.url_for("/v2/enqueue"),
        ..settings()
    };
    let alerter = Alerter::start(
        &s,
        "pricing-oracle",
        Arc::new(Metrics::new("pricing-oracle")),
    );
    alerter.fire(stale_usdt());
    alerter.resolve("oracle_stale:USDT");
    let got = pd.wait_for(2, WAIT).await;
    assert_json_post(&got[0], "/v2/enqueue");
    let (t, r) = (body(&got[0]), body(&got[1]));
    assert_eq!(t["routing_key"], "R0UT1NGKEY0000000000000000000000");
    assert_eq!(t["event_action"], "trigger");
    let dedup = t["dedup_key"].as_str().unwrap();
    assert!(dedup.contains("oracle_stale:USDT"), "{dedup}");
    assert_eq!(
        t["payload"]["summary"],
        "USDT on-chain price is 912 s old (limit 600 s)"
    );
    assert_eq!(t["payload"]["source"], "pricing-oracle");
    assert_eq!(t["payload"]["severity"], "critical");
    assert_eq!(t["payload"]["component"], "USDT");
    assert_eq!(t["payload"]["custom_details"]["asset"], "USDT");
    assert_eq!(r["event_action"], "resolve");
    assert_eq!(r["dedup_key"], t["dedup_key"]);
    assert_eq!(r["routing_key"], t["routing_key"]);
    wait_channel(&alerter, "pagerduty", |c| c.delivered == 2).await;
}

#[tokio::test]
async fn fire_renotifies_on_cadence_then_resolves_once() {
    let hook = Sink::start().await;
    let am = Sink::start().await;
    let s = AlertSettings {
        webhook_url: Some(Secret::shared(hook.url_for("/hook"))),
        alertmanager_url: Some(am.url()),
        renotify: 1,
        ..settings()
    };
    let metrics = Arc::new(Metrics::new("pricing-oracle"));
    let alerter = Alerter::start(&s, "pricing-oracle", metrics.clone());

    alerter.fire(stale_usdt());
    assert_eq!(alerter.firing(), vec!["oracle_stale:USDT".to_owned()]);
    let first = hook.wait_for(1, WAIT).await.remove(0);
    assert_eq!(body(&first)["repeat"], false);

    // Firing again within the re-notify period notifies nobody but keeps the newer summary.
    alerter.fire(
        Alert::new("oracle_stale:USDT", Severity::Critical, "now 970 s old").label("asset", "USDT"),
    );
    hook.assert_count_stays(1, Duration::from_millis(500)).await;

    let got = hook.wait_for(2, WAIT).await;
    let again = body(&got[1]);
    assert_eq!(again["status"], "firing");
    assert_eq!(again["repeat"], true);
    assert_eq!(again["summary"], "now 970 s old");
    assert_eq!(again["starts_at"], body(&first)["starts_at"]);
    let gap = got[1].at - first.at;
    assert!(
        gap >= Duration::from_millis(900),
        "re-notified after only {gap:?}"
    );
    // Alertmanager is re-sent the same alert, which keeps it active.
    let am_got = am.wait_for(2, WAIT).await;
    assert_eq!(body(&am_got[0])[0]["labels"], body(&am_got[1])[0]["labels"]);
    assert_eq!(
        body(&am_got[1])[0]["annotations"]["summary"],
        "now 970 s old"
    );

    alerter.resolve("oracle_stale:USDT");
    assert!(alerter.firing().is_empty());
    let n = hook
        .wait_until(WAIT, |r| body(r)["status"] == "resolved")
        .await
        .expect("resolved sent");
    assert_eq!(body(&n)["summary"], "now 970 s old");
    alerter.flush(WAIT).await;
    let count = hook.count();
    // Resolving again, or a key that never fired, sends nothing; nor does the stopped cadence.
    alerter.resolve("oracle_stale:USDT");
    alerter.resolve("bridge_offline:never");
    hook.assert_count_stays(count, Duration::from_millis(1500))
        .await;
    assert_eq!(
        hook.requests()
            .iter()
            .filter(|r| body(r)["status"] == "resolved")
            .count(),
        1
    );

    assert_eq!(
        metric_line(&metrics, "keeper_alerts_firing{").as_deref(),
        Some("keeper_alerts_firing{alert=\"oracle_stale:USDT\"} 0")
    );
    let ok = metric_line(
        &metrics,
        "keeper_alert_notifications_total{channel=\"webhook\",outcome=\"success\"}",
    );
    assert_eq!(
        ok.as_deref(),
        Some(format!("keeper_alert_notifications_total{{channel=\"webhook\",outcome=\"success\"}} {count}").as_str())
    );
}

#[tokio::test]
async fn a_500_is_retried_until_the_channel_accepts() {
    let hook = Sink::start().await;
    hook.enqueue(Reply::json(500, json!({"error": "internal"})), 2);
    let s = AlertSettings {
        webhook_url: Some(Secret::shared(hook.url_for("/hook"))),
        attempts: 4,
        ..settings()
    };
    let metrics = Arc::new(Metrics::new("bridge-health"));
    let alerter = Alerter::start(&s, "bridge-health", metrics.clone());
    alerter.fire(Alert::new(
        "bridge_degraded:axelar",
        Severity::Warning,
        "TVL dropped 31%",
    ));
    let got = hook.wait_for(3, WAIT).await;
    assert_eq!(
        body(&got[0]),
        body(&got[2]),
        "a retry resends the same notification"
    );
    let st = wait_channel(&alerter, "webhook", |c| c.delivered == 1).await;
    assert_eq!((st.failed, st.last_error), (0, None));
    alerter.flush(WAIT).await;
    assert_eq!(alerter.pending(), 0);
    hook.assert_count_stays(3, Duration::from_millis(300)).await;
    assert!(
        metric_line(
            &metrics,
            "keeper_alert_notifications_total{channel=\"webhook\",outcome=\"success\"} 1"
        )
        .is_some()
    );
}

#[tokio::test]
async fn retry_after_of_a_429_is_honoured() {
    let slack = Sink::with_default(Reply::text(200, "ok")).await;
    slack.enqueue(
        Reply::text(429, "rate_limited").header("retry-after", "1"),
        1,
    );
    let s = AlertSettings {
        slack_webhook_url: Some(Secret::shared(slack.url_for("/services/T1/B1/ZZZZZZZZ"))),
        ..settings()
    };
    let alerter = Alerter::start(&s, "db-backup", Arc::new(Metrics::new("db-backup")));
    alerter.fire(Alert::new(
        "backup_stale",
        Severity::Critical,
        "no backup for 27 h",
    ));
    let got = slack.wait_for(2, WAIT).await;
    // The computed backoff for the first retry is at most 0.5 s; only Retry-After explains 1 s.
    let gap = got[1].at - got[0].at;
    assert!(
        gap >= Duration::from_millis(950),
        "retried after {gap:?}, before Retry-After"
    );
    wait_channel(&alerter, "slack", |c| c.delivered == 1).await;
}

#[tokio::test]
async fn failing_and_hanging_channels_never_stall_the_cycle() {
    let slack = Sink::with_default(Reply::text(500, "internal_error")).await;
    let am = Sink::with_default(Reply::hang()).await;
    let hook = Sink::start().await;
    let s = AlertSettings {
        slack_webhook_url: Some(Secret::shared(slack.url_for("/services/T2/B2/YYYYYYYY"))),
        alertmanager_url: Some(am.url()),
        webhook_url: Some(Secret::shared(hook.url_for("/hook"))),
        timeout: 1,
        attempts: 3,
        ..settings()
    };
    let alerter = Alerter::start(
        &s,
        "pricing-oracle",
        Arc::new(Metrics::new("pricing-oracle")),
    );

    // Five "cycles" each raising and clearing an alert, then one that stays: delivery to the
    // dead channels takes at least attempts × timeout (3 s) per notification, so any blocking
    // of the caller would show.
    let started = Instant::now();
    for i in 0..5 {
        alerter.fire(Alert::new(
            format!("oracle_stale:A{i}"),
            Severity::Warning,
            "stale",
        ));
        alerter.resolve(&format!("oracle_stale:A{i}"));
    }
    alerter.fire(Alert::new("oracle_stale:HELD", Severity::Warning, "stale"));
    let spent = started.elapsed();
    assert!(
        spent < Duration::from_millis(500),
        "fire/resolve took {spent:?}"
    );

    // The healthy channel receives everything, in order per key, while the others fail or hang.
    let got = hook.wait_for(11, WAIT).await;
    for i in 0..5 {
        let statuses: Vec<Value> = got
            .iter()
            .map(body)
            .filter(|b| b["key"] == format!("oracle_stale:A{i}"))
            .map(|b| b["status"].clone())
            .collect();
        assert_eq!(statuses, vec![json!("firing"), json!("resolved")]);
    }
    am.wait_for(1, WAIT).await;
    assert_eq!(
        wait_channel(&alerter, "alertmanager", |_| true)
            .await
            .delivered,
        0
    );

    // A bounded flush returns even though deliveries are still hanging.
    let started = Instant::now();
    alerter.flush(Duration::from_millis(200)).await;
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        alerter.pending() > 0,
        "hanging deliveries are still pending"
    );

    // Every Slack notification ends as given up or replaced by its resolve; none is lost silently.
    let st = wait_channel(&alerter, "slack", |c| c.failed + c.superseded == 11).await;
    assert_eq!(st.delivered, 0);
    let err = st.last_error.unwrap();
    assert!(
        err.contains("HTTP 500") && err.contains("internal_error"),
        "{err}"
    );
    // The alert that stayed firing was tried exactly `attempts` times.
    let held = slack
        .requests()
        .into_iter()
        .filter(|r| {
            body(r)["text"]
                .as_str()
                .is_some_and(|t| t.contains("oracle_stale:HELD"))
        })
        .count();
    assert_eq!(held, 3);
    let st = wait_channel(&alerter, "alertmanager", |c| c.failed >= 1).await;
    let err = st.last_error.unwrap();
    assert!(err.contains("timed out"), "{err}");
    alerter.flush(WAIT).await;
    assert_eq!(alerter.pending(), 0);
}

/// A `MakeWriter` collecting every log line in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

// Current-thread runtime: every delivery task runs on this thread, under the capturing subscriber.
#[tokio::test(flavor = "current_thread")]
async fn secrets_never_reach_logs_or_errors() {
    let logs = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(logs.clone())
        .with_ansi(false)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    const SLACK_TOKEN: &str = "T9SECRET/B9SECRET/hooktokenSECRET";
    const ROUTING_KEY: &str = "pdroutingSECRETkey0000000000000000";
    const PASSWORD: &str = "hunter2SECRET";
    let slack = Sink::with_default(Reply::text(
        400,
        format!("invalid_payload: POST /services/{SLACK_TOKEN} rejected"),
    ))
    .await;
    let pd = Sink::with_default(Reply::json(
        400,
        json!({"status": "invalid event", "message": "Event object is invalid",
               "errors": [format!("routing_key {ROUTING_KEY} is not a valid integration key")]}),
    ))
    .await;
    // Nothing listens on the webhook's port: a transport error must not quote the URL either.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let webhook_url = format!("http://keeper:{PASSWORD}@127.0.0.1:{closed}/hook/{PASSWORD}");
    let s = AlertSettings {
        slack_webhook_url: Some(Secret::shared(
            slack.url_for(&format!("/services/{SLACK_TOKEN}")),
        )),
        webhook_url: Some(Secret::shared(webhook_url)),
        pagerduty_routing_key: Some(Secret::shared(ROUTING_KEY)),
        pagerduty_url: pd.url_for("/v2/enqueue"),
        attempts: 2,
        ..settings()
    };
    let alerter = Alerter::start(
        &s,
        "pricing-oracle",
        Arc::new(Metrics::new("pricing-oracle")),
    );
    alerter.fire(stale_usdt());

    let mut errors = Vec::new();
    for channel in ["slack", "webhook", "pagerduty"] {
        let st = wait_channel(&alerter, channel, |c| c.failed == 1).await;
        errors.push(st.last_error.unwrap());
    }
    // 4xx answers are final: one request each, no retries.
    assert_eq!(slack.count(), 1);
    assert_eq!(pd.count(), 1);
    assert!(
        errors[0].contains("HTTP 400") && errors[0].contains("invalid_payload"),
        "{}",
        errors[0]
    );
    assert!(errors[1].contains("connection failed"), "{}", errors[1]);
    assert!(errors[2].contains("invalid event"), "{}", errors[2]);

    let logs = String::from_utf8(logs.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("alert not delivered"), "{logs}");
    let shown = format!("{errors:?} {logs} {alerter:?}");
    for secret in [SLACK_TOKEN, "hooktokenSECRET", ROUTING_KEY, PASSWORD] {
        assert!(!shown.contains(secret), "{secret} leaked into: {shown}");
    }
    assert!(
        shown.contains("[redacted]"),
        "the echoed secrets were replaced: {shown}"
    );
}

#[test]
fn disabled_alerter_keeps_the_lifecycle_without_a_runtime() {
    let alerter = Alerter::disabled();
    alerter.fire(stale_usdt());
    alerter.fire(Alert::new("bridge_offline:ton", Severity::Critical, "down"));
    assert_eq!(
        alerter.firing(),
        vec![
            "bridge_offline:ton".to_owned(),
            "oracle_stale:USDT".to_owned()
        ]
    );
    alerter.resolve("bridge_offline:ton");
    assert!(!alerter.is_firing("bridge_offline:ton"));
    assert!(alerter.is_firing("oracle_stale:USDT"));
    assert_eq!(alerter.pending(), 0);
    assert!(alerter.channels().is_empty());
}

#[tokio::test]
async fn no_channel_configured_still_tracks_and_counts() {
    let metrics = Arc::new(Metrics::new("db-backup"));
    let alerter = Alerter::start(&settings(), "db-backup", metrics.clone());
    alerter.fire(Alert::new(
        "backup_stale",
        Severity::Critical,
        "no backup for 27 h",
    ));
    assert_eq!(alerter.firing(), vec!["backup_stale".to_owned()]);
    assert_eq!(
        metric_line(&metrics, "keeper_alerts_firing{").as_deref(),
        Some("keeper_alerts_firing{alert=\"backup_stale\"} 1")
    );
    let started = Instant::now();
    alerter.flush(WAIT).await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "nothing to flush"
    );
}

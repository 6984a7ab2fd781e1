//! Alerts delivered to a real Alertmanager (Debian's `prometheus-alertmanager`, installed by
//! `scripts/test.sh`): the alert becomes active with our labels, and resolving it ends it.

use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keeper_runtime::alert::{Alert, Alerter, Severity};
use keeper_runtime::config::AlertSettings;
use keeper_runtime::telemetry::Metrics;
use serde_json::Value;
use tokio::process::{Child, Command};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

struct RealAlertmanager {
    url: String,
    _child: Child,
    _dir: tempfile::TempDir,
}

async fn start_alertmanager() -> RealAlertmanager {
    let bin = std::env::var("KEEPERS_TEST_ALERTMANAGER")
        .unwrap_or_else(|_| "prometheus-alertmanager".to_owned());
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("alertmanager.yml");
    std::fs::write(
        &config,
        "route:\n  receiver: none\nreceivers:\n  - name: none\n",
    )
    .expect("config");
    let port = free_port();
    let child = Command::new(&bin)
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        // An empty value turns off the cluster gossip listener on 0.0.0.0:9094.
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{bin} could not start ({e}); scripts/test.sh installs it"));
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let client = keeper_runtime::http::client(Duration::from_secs(2));
    loop {
        if let Ok(r) = client.get(format!("{url}/-/ready")).send().await
            && r.status().is_success()
        {
            break;
        }
        assert!(Instant::now() < deadline, "Alertmanager never became ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    RealAlertmanager {
        url,
        _child: child,
        _dir: dir,
    }
}

/// Active alerts named `oracle_stale` as Alertmanager reports them.
async fn active(url: &str) -> Vec<Value> {
    let client = keeper_runtime::http::client(Duration::from_secs(2));
    let body: Value = client
        .get(format!("{url}/api/v2/alerts?active=true"))
        .send()
        .await
        .expect("query alerts")
        .json()
        .await
        .expect("JSON");
    body.as_array()
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .filter(|a| a["labels"]["alertname"] == "oracle_stale")
        .collect()
}

async fn wait_active(url: &str, want: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = active(url).await;
        if got.len() == want {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "expected {want} active alerts, got {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_alertmanager_shows_the_alert_then_ends_it_on_resolve() {
    keeper_runtime::install_crypto_provider();
    let am = start_alertmanager().await;
    let settings = AlertSettings {
        alertmanager_url: Some(am.url.clone()),
        attempts: 3,
        timeout: 5,
        ..AlertSettings::default()
    };
    let alerter = Alerter::start(
        &settings,
        "pricing-oracle",
        Arc::new(Metrics::new("pricing-oracle")),
    );
    alerter.fire(
        Alert::new(
            "oracle_stale:USDT",
            Severity::Critical,
            "USDT on-chain price is 912 s old",
        )
        .label("asset", "USDT"),
    );
    let got = wait_active(&am.url, 1).await;
    let labels = &got[0]["labels"];
    assert_eq!(labels["severity"], "critical");
    assert_eq!(labels["keeper"], "pricing-oracle");
    assert_eq!(labels["asset"], "USDT");
    assert_eq!(
        got[0]["annotations"]["summary"],
        "USDT on-chain price is 912 s old"
    );

    alerter.resolve("oracle_stale:USDT");
    wait_active(&am.url, 0).await;
}

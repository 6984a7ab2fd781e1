//! TON API requests per tick, counted at the toncenter stand-in: one publishing and one idle
//! `--once` run of each chain keeper, per method. Shared by the request-count test and the
//! `bench_requests` binary.

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use crate::bridge_keeper::BridgeHarness;
use crate::pricing::PricingHarness;
use crate::toncenter::ToncenterServer;

/// Requests per API method (v3 `transactionsByMessage` included).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally(pub BTreeMap<String, usize>);

impl Tally {
    /// Every request the stand-in received so far.
    pub fn of(chain: &ToncenterServer) -> Self {
        let mut t = BTreeMap::new();
        for r in chain.requests().into_iter().chain(chain.index_requests()) {
            *t.entry(r.method).or_insert(0) += 1;
        }
        Self(t)
    }

    /// What arrived after `before`.
    pub fn since(chain: &ToncenterServer, before: &Tally) -> Self {
        let mut now = Self::of(chain);
        for (m, n) in now.0.iter_mut() {
            *n -= before.get(m).min(*n);
        }
        now.0.retain(|_, n| *n > 0);
        now
    }

    /// Requests of `method`.
    pub fn get(&self, method: &str) -> usize {
        self.0.get(method).copied().unwrap_or(0)
    }

    /// All requests.
    pub fn total(&self) -> usize {
        self.0.values().sum()
    }
}

impl fmt::Display for Tally {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} requests", self.total())?;
        let parts: Vec<String> = self.0.iter().map(|(m, n)| format!("{n} {m}")).collect();
        if !parts.is_empty() {
            write!(f, " ({})", parts.join(", "))?;
        }
        Ok(())
    }
}

/// One publishing and one idle tick of a keeper, and what each one said it did.
#[derive(Debug)]
pub struct Ticks {
    /// The tick that published.
    pub publishing: Tally,
    /// Its `outcome`.
    pub publishing_outcome: String,
    /// The tick after it, with nothing to publish.
    pub idle: Tally,
    /// Its `outcome`.
    pub idle_outcome: String,
}

fn outcome(doc: &Value) -> String {
    doc["outcome"].as_str().unwrap_or("?").to_owned()
}

/// Two `--once` runs of the pricing keeper on a fresh chain: the first publishes every asset,
/// the second finds them current. Without Redis, so each run's wallet lease ends with it.
pub async fn pricing_ticks(h: &PricingHarness) -> Ticks {
    async fn once(h: &PricingHarness) -> (Tally, String) {
        let before = Tally::of(&h.ton);
        let out = h
            .command(&["--once", "--output", "json"])
            .env_remove("REDIS_URL")
            .output()
            .await
            .expect("run pricing-oracle-keeper");
        let doc: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(&out.stderr));
        });
        (Tally::since(&h.ton, &before), outcome(&doc))
    }
    two_runs(|| once(h)).await
}

/// Two `--once` runs of the bridge keeper on a fresh chain: the first publishes every bridge,
/// the second finds them current.
pub async fn bridge_ticks(h: &BridgeHarness) -> Ticks {
    async fn once(h: &BridgeHarness) -> (Tally, String) {
        let before = Tally::of(&h.ton);
        let (_, doc) = h.once_pg().await;
        (Tally::since(&h.ton, &before), outcome(&doc))
    }
    two_runs(|| once(h)).await
}

/// Two runs of `once`, the first expected to publish and the second to find nothing to do.
async fn two_runs<F, Fut>(once: F) -> Ticks
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = (Tally, String)>,
{
    let (publishing, publishing_outcome) = once().await;
    let (idle, idle_outcome) = once().await;
    Ticks {
        publishing,
        publishing_outcome,
        idle,
        idle_outcome,
    }
}

/// Ticks the keeper's `/status` reports (0 while it does not answer).
pub async fn status_ticks(metrics_addr: &str) -> u64 {
    let url = format!("http://{metrics_addr}/status");
    match reqwest::get(&url).await {
        Ok(r) => r
            .json::<Value>()
            .await
            .ok()
            .and_then(|s| s["ticks"].as_u64())
            .unwrap_or(0),
        Err(_) => 0,
    }
}

/// Waits until `/status` reports at least `n` ticks; false after `timeout`.
pub async fn wait_status_ticks(metrics_addr: &str, n: u64, timeout: std::time::Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while status_ticks(metrics_addr).await < n {
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    true
}

/// Requests of a running keeper: per idle tick, and per publishing tick.
#[derive(Debug, Clone, Copy)]
pub struct Running {
    /// Average over the idle ticks measured.
    pub idle: f64,
    /// The tick that published: the requests from the trigger until the tick after the
    /// publication ended, less what the other ticks in that span cost idle.
    pub publishing: f64,
}

/// Measures a running keeper (interval 1 s, `/status` on `metrics_addr`, chain `ton`) whose
/// first publication landed: `idle` idle ticks, then the publication `trigger` causes.
pub async fn running(
    metrics_addr: &str,
    ton: &ToncenterServer,
    idle: u64,
    trigger: impl FnOnce(),
) -> Running {
    use std::time::Duration;
    let wait = Duration::from_secs(60);
    // Past the tick that published first and the one after it.
    let t = status_ticks(metrics_addr).await;
    wait_status_ticks(metrics_addr, t + 2, wait).await;
    let before = Tally::of(ton);
    let t0 = status_ticks(metrics_addr).await;
    wait_status_ticks(metrics_addr, t0 + idle, wait).await;
    let per_idle = Tally::since(ton, &before).total() as f64
        / (status_ticks(metrics_addr).await - t0).max(1) as f64;
    let before = Tally::of(ton);
    let t0 = status_ticks(metrics_addr).await;
    let sent = ton.accepted_externals();
    trigger();
    ton.wait_accepted(sent + 1, wait).await;
    // The publishing tick ends after the confirmation; the one after it must find the oracle
    // as the keeper left it.
    let t1 = status_ticks(metrics_addr).await;
    wait_status_ticks(metrics_addr, t1 + 2, wait).await;
    let t2 = status_ticks(metrics_addr).await;
    let total = Tally::since(ton, &before).total() as f64;
    let others = (t2 - t0).saturating_sub(1) as f64;
    Running {
        idle: per_idle,
        publishing: total - others * per_idle,
    }
}

/// [`running`] for the pricing keeper: a moved DAI price makes the publication.
pub async fn running_pricing(h: &PricingHarness, idle: u64) -> Running {
    let mut child = h.spawn();
    h.wait_externals(1, std::time::Duration::from_secs(60))
        .await;
    let r = running(&h.metrics_addr, &h.ton, idle, || {
        h.up.set_price_everywhere("DAI", "0.98")
    })
    .await;
    let _ = child.kill().await;
    r
}

/// [`running`] for the bridge keeper: the TON bridge's own contract pausing (`allowLock()`
/// false) makes it offline at once, and the publication.
pub async fn running_bridge(h: &BridgeHarness, idle: u64) -> Running {
    let mut child = h.spawn();
    h.wait_externals(1).await;
    let r = running(&h.metrics_addr, &h.ton, idle, || {
        h.up.set_eth_bool(
            crate::bridge_keeper::TON_BRIDGE,
            crate::upstreams::ALLOW_LOCK,
            false,
        )
    })
    .await;
    let _ = child.kill().await;
    r
}

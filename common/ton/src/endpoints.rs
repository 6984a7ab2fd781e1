//! The TON endpoints behind one [`super::Toncenter`]: their URLs and keys, a client-side request
//! budget each, which of them is up, and what the freshest of them has shown (so that one that
//! lags behind another is not believed).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keeper_runtime::secret::Secret;

use crate::budget::Budget;

/// How long a failing endpoint is passed over before it is tried first again.
pub(super) const DOWN_FOR: Duration = Duration::from_secs(30);
/// How long an endpoint that answered 404 for its v3 index is not asked for it again.
pub(super) const INDEX_RECHECK: Duration = Duration::from_secs(3600);
/// Consecutive failed requests before `endpoint_down:{endpoint}` fires.
pub(super) const ALERT_AFTER_FAILURES: u32 = 3;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Every update is a single write, so a poisoned value is still consistent.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// How requests reach one endpoint.
#[derive(Debug, Clone)]
pub(super) enum Api {
    /// POST `{"jsonrpc","id","method","params"}` to this URL.
    JsonRpc(url::Url),
    /// `GET|POST {base}{method}`.
    Rest(url::Url),
}

/// One endpoint of the list.
#[derive(Debug)]
pub(super) struct Node {
    pub(super) api: Api,
    pub(super) api_key: Option<Arc<Secret>>,
    /// Host and port only: the path and query may carry a key.
    pub(super) label: String,
    pub(super) budget: Budget,
    down_until: Mutex<Option<Instant>>,
    failures: AtomicU32,
    /// Its last failure was being behind another endpoint, which may itself be running ahead.
    behind: AtomicBool,
    /// Until when the endpoint is taken to have no v3 index (it answered 404 for it).
    no_index_until: Mutex<Option<Instant>>,
}

impl Node {
    /// An endpoint from its URL (`…/jsonRPC` for JSON-RPC, anything else as the REST base);
    /// `max_rps` 0 means no client-side budget. The error never contains the URL.
    pub(super) fn parse(
        url: &str,
        api_key: Option<Arc<Secret>>,
        max_rps: u32,
    ) -> Result<Self, String> {
        let mut parsed =
            url::Url::parse(url.trim()).map_err(|e| format!("ton.rpc_url is not a URL ({e})"))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err("ton.rpc_url must be http(s)".into());
        }
        let label = match (parsed.host_str(), parsed.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => "unknown".to_owned(),
        };
        let path = parsed.path().to_owned();
        let api = if path
            .trim_end_matches('/')
            .to_ascii_lowercase()
            .ends_with("/jsonrpc")
        {
            Api::JsonRpc(parsed)
        } else {
            if path == "/" || path.is_empty() {
                parsed.set_path("/api/v2/");
            } else if !path.ends_with('/') {
                parsed.set_path(&format!("{path}/"));
            }
            Api::Rest(parsed)
        };
        Ok(Self {
            api,
            api_key,
            label,
            budget: Budget::new(max_rps),
            down_until: Mutex::new(None),
            failures: AtomicU32::new(0),
            behind: AtomicBool::new(false),
            no_index_until: Mutex::new(None),
        })
    }

    /// Waits until the budget allows one more request.
    pub(super) async fn pace(&self) {
        self.budget.take().await;
    }

    /// False for [`INDEX_RECHECK`] after the endpoint answered that it has no v3 index.
    pub(super) fn has_index(&self) -> bool {
        lock(&self.no_index_until).is_none_or(|until| Instant::now() >= until)
    }

    /// The endpoint has no v3 index: what an endpoint serves rarely changes, so it is not asked
    /// for every message.
    pub(super) fn lacks_index(&self) {
        *lock(&self.no_index_until) = Some(Instant::now() + INDEX_RECHECK);
    }

    /// Answering (and not behind): tried in list order.
    pub(super) fn is_up(&self) -> bool {
        lock(&self.down_until).is_none_or(|until| Instant::now() >= until)
    }

    /// A good answer; true when this ends a run of failures long enough to have alerted.
    pub(super) fn succeeded(&self) -> bool {
        *lock(&self.down_until) = None;
        self.behind.store(false, Ordering::Relaxed);
        self.failures.swap(0, Ordering::Relaxed) >= ALERT_AFTER_FAILURES
    }

    /// Whether its word counts when endpoints are polled for agreement: up, or passed over
    /// only for being behind (the bar it missed may be one endpoint running ahead).
    pub(super) fn has_a_say(&self) -> bool {
        self.is_up() || self.behind.load(Ordering::Relaxed)
    }

    /// A failed or lagging answer (`behind`); the count of consecutive failures.
    pub(super) fn failed(&self, behind: bool) -> u32 {
        self.behind.store(behind, Ordering::Relaxed);
        *lock(&self.down_until) = Some(Instant::now() + DOWN_FOR);
        self.failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1)
    }
}

/// Labels made unique: two endpoints on one host get `#2`, `#3`… after the second.
pub(super) fn dedupe_labels(nodes: &mut [Node]) {
    let mut seen: HashMap<String, u32> = HashMap::new();
    for n in nodes.iter_mut() {
        let count = seen.entry(n.label.clone()).or_insert(0);
        *count += 1;
        if *count > 1 {
            n.label = format!("{}#{count}", n.label);
        }
    }
}

/// The freshest chain state any endpoint has shown: chain time only grows, and so does a
/// wallet's seqno, so an endpoint that answers with less is behind. Checked with one endpoint
/// too: one URL may be a load balancer whose backends disagree. What one endpoint shows ahead of
/// the others raises this bar for reads only; clearing and expiry ask every endpoint
/// ([`crate::transport::ChainViews`]).
#[derive(Debug, Default)]
pub(super) struct Freshest {
    chain_time: u64,
    seqno: HashMap<String, u32>,
}

impl Freshest {
    /// Accepts `chain_time` unless another endpoint has shown a later one.
    pub(super) fn chain_time(&mut self, t: u64) -> Result<(), String> {
        if t < self.chain_time {
            return Err(format!(
                "chain time {t} is older than {} seen on another endpoint",
                self.chain_time
            ));
        }
        self.chain_time = t;
        Ok(())
    }

    /// Accepts `seqno` for `address` unless another endpoint has shown a higher one.
    pub(super) fn seqno(&mut self, address: &str, seqno: u32) -> Result<(), String> {
        let best = self.seqno.entry(address.to_owned()).or_insert(0);
        if seqno < *best {
            return Err(format!(
                "seqno {seqno} is below {best} seen on another endpoint"
            ));
        }
        *best = seqno;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_never_carry_path_or_query() {
        let n = Node::parse(
            "https://rpc.example/KEY123/api/v2/jsonRPC?api_key=K2",
            None,
            1,
        )
        .unwrap();
        assert_eq!(n.label, "rpc.example");
        assert!(matches!(n.api, Api::JsonRpc(_)));
        let e = Node::parse("ftp://x/KEY123", None, 1).unwrap_err();
        assert!(!e.contains("KEY123"));
        let mut two = vec![
            Node::parse("http://127.0.0.1:81/", None, 0).unwrap(),
            Node::parse("http://127.0.0.1:81/other/", None, 0).unwrap(),
        ];
        dedupe_labels(&mut two);
        assert_eq!(two[1].label, "127.0.0.1:81#2");
    }

    #[test]
    fn freshest_refuses_what_is_behind() {
        let mut f = Freshest::default();
        assert!(f.chain_time(100).is_ok());
        assert!(f.chain_time(99).is_err());
        assert!(f.chain_time(101).is_ok());
        assert!(f.seqno("w", 5).is_ok());
        assert!(f.seqno("w", 4).is_err());
        assert!(f.seqno("other", 1).is_ok());
    }

    #[tokio::test]
    async fn the_budget_paces_requests() {
        let n = Node::parse("http://127.0.0.1:1/", None, 20).unwrap();
        let start = Instant::now();
        for _ in 0..5 {
            n.pace().await;
        }
        // Slots at 0, 50, 100, 150, 200 ms.
        assert!(
            start.elapsed() >= Duration::from_millis(195),
            "{:?}",
            start.elapsed()
        );
    }
}

//! The background side of the alerter: re-notification timing and delivery with retries.
//!
//! One dispatcher task receives notifications and spawns one delivery task per channel, so a
//! hanging or failing channel delays only itself. Deliveries of the same key to the same channel
//! run in order (a resolve never overtakes its trigger); an older delivery that is still retrying
//! when a newer one for the same key arrives stops retrying, because the newer one carries the
//! current state.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::{BackoffBuilder, ExponentialBuilder};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::channel::{Channel, Notification, Status};
use super::{Shared, lock};
use crate::telemetry::metrics::labels;
use crate::{http, retry};

/// First retry delay; doubles (with jitter) up to [`MAX_DELAY`].
const MIN_DELAY: Duration = Duration::from_millis(250);
/// Longest computed backoff between two tries.
const MAX_DELAY: Duration = Duration::from_secs(30);
/// Longest `Retry-After` honoured; Slack may ask for minutes, a notification should not wait that long.
const RETRY_AFTER_CAP: Duration = Duration::from_secs(60);

/// A notification that could not be delivered to one channel. Carries no destination URL or
/// routing key: those are scrubbed from the upstream's answer too.
#[derive(Debug, Clone, thiserror::Error)]
#[error("alert {key} ({status}) to {channel}: gave up after {attempts} attempt(s): {reason}")]
pub struct DeliveryError {
    /// Which channel (`slack`, `webhook`, `alertmanager`, `pagerduty`).
    pub channel: &'static str,
    /// The alert key.
    pub key: String,
    /// `firing` or `resolved`.
    pub status: &'static str,
    /// How many requests were made.
    pub attempts: u32,
    /// The last failure, secrets removed.
    pub reason: String,
}

/// Delivery health of one channel, for `/status` and tests.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ChannelStatus {
    /// Which channel.
    pub channel: &'static str,
    /// Notifications delivered.
    pub delivered: u64,
    /// Notifications given up after all attempts.
    pub failed: u64,
    /// Notifications dropped because a newer one for the same key replaced them.
    pub superseded: u64,
    /// When the last delivery succeeded.
    pub last_success: Option<DateTime<Utc>>,
    /// The last [`DeliveryError`], as text.
    pub last_error: Option<String>,
}

impl ChannelStatus {
    pub(super) fn new(channel: &'static str) -> Self {
        Self {
            channel,
            delivered: 0,
            failed: 0,
            superseded: 0,
            last_success: None,
            last_error: None,
        }
    }
}

/// Everything a delivery needs, shared by all delivery tasks.
pub(super) struct Ctx {
    pub(super) client: reqwest::Client,
    pub(super) channels: Vec<Channel>,
    pub(super) keeper: String,
    pub(super) renotify: Duration,
    pub(super) timeout: Duration,
    pub(super) attempts: u32,
    pub(super) shared: Arc<Shared>,
}

/// The newest delivery for one (channel, key) and a counter that tells it when it is replaced.
struct Slot {
    generation: watch::Sender<u64>,
    last: JoinHandle<()>,
}

/// Spawns the dispatcher; it ends when every [`super::Alerter`] handle is dropped.
pub(super) fn spawn(ctx: Ctx, rx: mpsc::UnboundedReceiver<Notification>) {
    let policy = retry::backoff(ctx.attempts, MIN_DELAY, MAX_DELAY);
    let ctx = Arc::new(ctx);
    tokio::spawn(dispatch_loop(ctx, policy, rx));
}

async fn dispatch_loop(
    ctx: Arc<Ctx>,
    policy: ExponentialBuilder,
    mut rx: mpsc::UnboundedReceiver<Notification>,
) {
    let mut slots: HashMap<(usize, String), Slot> = HashMap::new();
    loop {
        let due = next_due(&ctx);
        let wait = async {
            match due {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(n) => {
                    dispatch(&ctx, &policy, &mut slots, Arc::new(n));
                    // Released only after the per-channel deliveries were counted, so `pending`
                    // never touches zero in between and `flush` cannot return early.
                    ctx.shared.done_pending(1);
                }
                None => break,
            },
            () = wait => {
                for n in take_due(&ctx) {
                    dispatch(&ctx, &policy, &mut slots, Arc::new(n));
                }
            }
        }
    }
}

/// When the earliest firing alert is due for re-notification; a `renotify` too large to add
/// to a clock reading means "never" rather than a panic.
fn next_due(ctx: &Ctx) -> Option<Instant> {
    lock(&ctx.shared.firing)
        .values()
        .filter_map(|e| e.last_notified.checked_add(ctx.renotify))
        .min()
}

/// Marks every alert due for re-notification as notified now and returns its notification.
fn take_due(ctx: &Ctx) -> Vec<Notification> {
    let now = Instant::now();
    let sent_at = Utc::now();
    let mut firing = lock(&ctx.shared.firing);
    let mut out = Vec::new();
    for entry in firing.values_mut() {
        if entry
            .last_notified
            .checked_add(ctx.renotify)
            .is_some_and(|due| due <= now)
        {
            entry.last_notified = now;
            out.push(Notification {
                alert: entry.alert.clone(),
                status: Status::Firing,
                starts_at: entry.starts_at,
                ends_at: None,
                repeat: true,
                sent_at,
            });
        }
    }
    out
}

fn dispatch(
    ctx: &Arc<Ctx>,
    policy: &ExponentialBuilder,
    slots: &mut HashMap<(usize, String), Slot>,
    n: Arc<Notification>,
) {
    slots.retain(|_, s| !s.last.is_finished());
    for idx in 0..ctx.channels.len() {
        let slot_key = (idx, n.alert.key.clone());
        let (generation, previous) = match slots.remove(&slot_key) {
            Some(slot) => {
                slot.generation.send_modify(|g| *g += 1);
                (slot.generation, Some(slot.last))
            }
            None => (watch::channel(0).0, None),
        };
        let mine = *generation.borrow();
        let job = Delivery {
            ctx: ctx.clone(),
            idx,
            n: n.clone(),
            mine,
            replaced: generation.subscribe(),
            backoff: policy.build(),
            _pending: PendingGuard::new(ctx.shared.clone()),
        };
        let last = tokio::spawn(job.run(previous));
        slots.insert(slot_key, Slot { generation, last });
    }
}

/// Counts one delivery as pending for as long as it lives, even if its task is cancelled.
struct PendingGuard(Arc<Shared>);

impl PendingGuard {
    fn new(shared: Arc<Shared>) -> Self {
        shared.add_pending(1);
        Self(shared)
    }
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        self.0.done_pending(1);
    }
}

enum Outcome {
    Delivered,
    Superseded,
    Failed(DeliveryError),
}

/// One notification to one channel, with its retries.
struct Delivery<B> {
    ctx: Arc<Ctx>,
    idx: usize,
    n: Arc<Notification>,
    mine: u64,
    replaced: watch::Receiver<u64>,
    backoff: B,
    _pending: PendingGuard,
}

impl<B: Iterator<Item = Duration>> Delivery<B> {
    async fn run(mut self, previous: Option<JoinHandle<()>>) {
        if let Some(previous) = previous {
            // Keeps per-key order on this channel; the previous one stops retrying once it
            // sees it was replaced, so this waits at most one request timeout.
            let _ = previous.await;
        }
        let outcome = self.attempt_all().await;
        self.record(outcome);
    }

    fn is_replaced(&self) -> bool {
        *self.replaced.borrow() != self.mine
    }

    async fn attempt_all(&mut self) -> Outcome {
        let ctx = self.ctx.clone();
        let channel = &ctx.channels[self.idx];
        let mut attempts = 0u32;
        loop {
            // Every notification gets one try, so a quick resolve does not swallow its trigger.
            if attempts > 0 && self.is_replaced() {
                return Outcome::Superseded;
            }
            attempts += 1;
            let request = channel.request(&ctx.client, &self.n, &ctx.keeper, ctx.renotify);
            let err = match http::send(channel.name(), request, ctx.timeout).await {
                Ok(_) => return Outcome::Delivered,
                Err(e) => e,
            };
            let reason = scrub(&err.to_string(), &channel.secrets());
            let next = if err.is_retryable() {
                retry::honour_retry_after(self.backoff.next(), err.retry_after(), RETRY_AFTER_CAP)
            } else {
                None
            };
            let Some(delay) = next else {
                return Outcome::Failed(DeliveryError {
                    channel: channel.name(),
                    key: self.n.alert.key.clone(),
                    status: self.n.status.as_str(),
                    attempts,
                    reason,
                });
            };
            tracing::debug!(
                channel = channel.name(),
                alert = %self.n.alert.key,
                attempt = attempts,
                error = %reason,
                "alert delivery failed; retrying in {delay:?}"
            );
            let sleep = tokio::time::sleep(delay);
            tokio::pin!(sleep);
            tokio::select! {
                () = &mut sleep => {}
                changed = self.replaced.changed() => {
                    // The dispatcher is gone, so nothing can replace this delivery any more.
                    if changed.is_err() {
                        sleep.await;
                    }
                }
            }
        }
    }

    fn record(&self, outcome: Outcome) {
        let channel = self.ctx.channels[self.idx].name();
        let label = match &outcome {
            Outcome::Delivered => "success",
            Outcome::Superseded => "superseded",
            Outcome::Failed(_) => "failure",
        };
        if let Some(m) = &self.ctx.shared.metrics {
            m.alert_notifications
                .get_or_create(&labels([("channel", channel), ("outcome", label)]))
                .inc();
        }
        let mut statuses = lock(&self.ctx.shared.channels);
        let Some(status) = statuses.get_mut(self.idx) else {
            return;
        };
        match outcome {
            Outcome::Delivered => {
                tracing::debug!(channel, alert = %self.n.alert.key, status = self.n.status.as_str(), "alert delivered");
                status.delivered += 1;
                status.last_success = Some(Utc::now());
            }
            Outcome::Superseded => {
                tracing::debug!(channel, alert = %self.n.alert.key, "alert delivery replaced by a newer notification");
                status.superseded += 1;
            }
            Outcome::Failed(e) => {
                tracing::warn!(channel, alert = %self.n.alert.key, error = %e, "alert not delivered");
                status.failed += 1;
                status.last_error = Some(e.to_string());
            }
        }
    }
}

/// Replaces every secret in `text` with `[redacted]`; an upstream may echo its URL or our key.
fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_owned();
    let mut secrets: Vec<&str> = secrets.iter().copied().filter(|s| s.len() >= 4).collect();
    // Longest first, so a URL is replaced whole before its path is.
    secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    for s in secrets {
        out = out.replace(s, "[redacted]");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrub_replaces_longest_first_and_ignores_tiny_values() {
        let t = scrub(
            "bad url http://x/services/ABCD and services/ABCD and ab",
            &["http://x/services/ABCD", "services/ABCD", "ab"],
        );
        assert_eq!(t, "bad url [redacted] and [redacted] and ab");
    }
}

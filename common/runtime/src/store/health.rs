//! Up/degraded state of one store, with its log lines, metrics and alert on each transition.

use std::sync::Arc;
use std::sync::atomic::{AtomicU8, Ordering};

use tracing::{info, warn};

use super::{StoreError, StoreKind};
use crate::alert::{Alert, Alerter, Severity};
use crate::telemetry::metrics::{Metrics, labels};

const UNKNOWN: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

/// Tracks whether a store answers; transitions (not every failure) are logged and alerted.
pub struct Health {
    kind: StoreKind,
    state: AtomicU8,
    metrics: Arc<Metrics>,
    alerter: Alerter,
}

impl Health {
    /// A tracker for `kind`, reporting to `metrics` and `alerter`.
    pub fn new(kind: StoreKind, metrics: Arc<Metrics>, alerter: Alerter) -> Self {
        Self {
            kind,
            state: AtomicU8::new(UNKNOWN),
            metrics,
            alerter,
        }
    }

    /// The store it tracks.
    pub fn kind(&self) -> StoreKind {
        self.kind
    }

    /// True once the store answered and until it fails again.
    pub fn is_up(&self) -> bool {
        self.state.load(Ordering::Acquire) == UP
    }

    fn alert_key(&self) -> String {
        format!("store_degraded:{}", self.kind)
    }

    fn set_gauge(&self, v: i64) {
        self.metrics
            .store_up
            .get_or_create(&labels([("store", self.kind.as_str())]))
            .set(v);
    }

    /// Counts one failed (or skipped) operation in `keeper_store_errors_total{store}`.
    pub fn count_error(&self) {
        self.metrics
            .store_errors
            .get_or_create(&labels([("store", self.kind.as_str())]))
            .inc();
    }

    /// The store answered.
    pub fn ok(&self) {
        let before = self.state.swap(UP, Ordering::AcqRel);
        self.set_gauge(1);
        match before {
            DOWN => {
                info!(store = %self.kind, "{} answers again; recording resumes", self.kind);
                self.alerter.resolve(&self.alert_key());
            }
            UNKNOWN => info!(store = %self.kind, "{} connected", self.kind),
            _ => {}
        }
    }

    /// An operation failed: an outage degrades the store; an error answered by the store is
    /// only logged (the store itself is fine, that one call was not).
    pub fn failed(&self, e: &StoreError) {
        if e.is_outage() {
            self.degrade(e);
        } else if !matches!(e, StoreError::Unavailable { .. }) {
            warn!(store = %self.kind, error = %e, "storage call failed");
        }
    }

    /// The store cannot be used (unreachable, or its schema cannot be migrated).
    pub fn degrade(&self, e: &StoreError) {
        let before = self.state.swap(DOWN, Ordering::AcqRel);
        self.set_gauge(0);
        if before != DOWN {
            warn!(
                store = %self.kind,
                error = %e,
                "{} unavailable: degraded, the keeper goes on without it and retries in the background",
                self.kind
            );
            self.alerter.fire(
                Alert::new(
                    self.alert_key(),
                    Severity::Warning,
                    format!(
                        "{} unavailable ({e}); the keeper runs on without it",
                        self.kind
                    ),
                )
                .label("store", self.kind.as_str()),
            );
        }
    }
}

//! One row's freshness in a keeper's `status` table: how old the on-chain value is, whether it is
//! stale, or why there is none.

use serde::Serialize;

use keeper_runtime::cli::{EXIT_FAILED, EXIT_OK};

/// The age part of a `status` row, flattened into the keeper's own row.
#[derive(Debug, Clone, Serialize)]
pub struct Freshness {
    /// Seconds since the value's timestamp, when there is one.
    pub age_seconds: Option<u64>,
    /// Older than the keeper's staleness bound (or missing).
    pub stale: bool,
    /// Why there is no value.
    pub error: Option<String>,
    /// The get-method failed (as opposed to answering "never set").
    #[serde(skip)]
    pub unreadable: bool,
}

impl Freshness {
    /// A value `age_seconds` old.
    pub fn of(age_seconds: u64, stale: bool) -> Self {
        Self {
            age_seconds: Some(age_seconds),
            stale,
            error: None,
            unreadable: false,
        }
    }

    /// No value: never set (`unreadable` false) or the read failed.
    pub fn missing(error: String, unreadable: bool) -> Self {
        Self {
            age_seconds: None,
            stale: true,
            error: Some(error),
            unreadable,
        }
    }

    /// `42s`, or `-`.
    pub fn age_text(&self) -> String {
        self.age_seconds
            .map_or_else(|| "-".into(), |a| format!("{a}s"))
    }

    /// The error, `STALE` or `fresh`.
    pub fn state_text(&self) -> String {
        match (&self.error, self.stale) {
            (Some(e), _) => e.clone(),
            (None, true) => "STALE".into(),
            (None, false) => "fresh".into(),
        }
    }

    /// Exit code of a `status` run: 1 when any read failed.
    pub fn exit_code<'a>(rows: impl IntoIterator<Item = &'a Freshness>) -> i32 {
        if rows.into_iter().any(|f| f.unreadable) {
            EXIT_FAILED
        } else {
            EXIT_OK
        }
    }
}

//! TON: keys, the keeper wallet, signed oracle messages, toncenter transport, delivery with
//! confirmation and read-back, and dry runs.
//!
//! Typical use by a keeper:
//! ```no_run
//! # async fn demo(settings: keeper_ton::TonSettings, phrase: std::sync::Arc<keeper_runtime::secret::Secret>,
//! #   oracle: tonlib_core::TonAddress, metrics: std::sync::Arc<keeper_runtime::telemetry::metrics::Metrics>)
//! #   -> Result<(), Box<dyn std::error::Error>> {
//! use keeper_ton::*;
//! let keys = WalletKeys::from_mnemonic_blocking(phrase).await?;       // once, at start
//! let wallet = Wallet::new(keys, settings.wallet_version, settings.network)?;
//! let transport = Toncenter::new(&settings)?;
//! let delivery = Delivery::new(transport, wallet, DeliveryConfig::from_settings(&settings))
//!     .with_metrics(metrics);
//! let update = OracleUpdate::Price(PriceUpdate {
//!     asset: "USDT".into(), asset_id: 1, price_micro: 999_850, timestamp: 1_760_000_000 });
//! let report = delivery.deliver(&[OracleMessage::new(oracle, update)]).await?;
//! # let _ = report; Ok(()) }
//! ```

mod budget;
pub mod cache;
pub mod delivery;
mod endpoints;
pub mod external;
pub mod fallback;
pub mod journal;
pub mod keeper;
pub mod keys;
pub mod lease;
pub mod metrics;
pub mod oracle;
pub mod publish;
pub mod readback;
pub mod report;
pub mod settings;
pub mod summary;
pub mod toncenter;
pub mod transport;
mod txboc;
pub mod wallet;

pub use delivery::{
    AutoValue, Delivery, DeliveryConfig, EXTERNAL_GAS_ESTIMATE_NANOTON, FIRST_CONFIRMATION_POLL,
    FORWARD_FEE_ESTIMATE_NANOTON, Fence, SWEEP_WORKCHAINS, SweepAddressError, SweepDestination,
    SweepReport, Unfenced, WalletView, batch_cost_nanoton, confirmation_poll_delay, is_out_of_gas,
    valid_until_after,
};
pub use external::{
    DecodedAction, DecodedExternal, OutgoingMessage, SEND_MODE, SWEEP_MODE, SignedExternal,
    build_external, build_external_with_mode, decode_external,
};
pub use journal::{Journal, JournalEntry, JournalError, LANDING_MARGIN_SECS, MemoryJournal};
pub use keys::{KeyError, WalletKeys, verify_signature};
pub use oracle::{
    BridgeStatusUpdate, DecodedBody, DecodedPayload, OP_UPDATE_BRIDGE_STATUS, OP_UPDATE_PRICE,
    OracleMessage, OracleUpdate, PriceUpdate, decode_body,
};
pub use publish::{
    Publication, PublishError, Publisher, SendSummary, TickOutcome, UPDATE_FAILED_ONCHAIN,
    UPDATE_NOT_APPLIED, WALLET_BALANCE_LOW, WALLET_RUNWAY_LOW, WALLET_UNFUNDED, delivery_failure,
};
pub use readback::{ReadAt, read_bridge_status, read_bridge_status_at, read_price, read_price_at};
pub use report::{
    BatchReport, DeliveryError, DeliveryReport, OracleTransaction, ReadBack, Shortfall,
    exit_code_meaning,
};
pub use settings::{
    JournalChoice, Network, TON_ENV, TonSettings, UpdateValue, WalletVersion, take_mnemonic,
    validate_address, validate_mnemonic,
};
pub use summary::{
    DRY_RUN_EXPIRED_BY_SECONDS, DryRun, DryRunError, DryRunExternal, MessageSummary,
    SummarySubject, dry_run_note, dry_run_offline, dry_run_valid_until,
};
pub use toncenter::{ENDPOINT_DOWN, Toncenter};
pub use transport::{
    AccountState, AddressInformation, ChainViews, GetMethodResult, IndexedMessage,
    IndexedTransaction, SentMessage, StackValue, TonTransport, Transaction, TransportError,
    WalletInformation,
};
pub use wallet::{Wallet, WalletInfo};

/// Re-export, so callers can name addresses and cells without their own dependency line.
pub use tonlib_core::TonAddress;

/// Building a cell, message or wallet failed (a bug or an out-of-range value, never the network).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    /// The cell library refused (overflow, too many references…).
    #[error("cannot build TON cell: {0}")]
    Cell(String),
    /// Too many or zero messages for one external of this wallet version.
    #[error("an external message carries 1 to {limit} actions, not {count}")]
    Actions {
        /// Requested.
        count: usize,
        /// Version limit.
        limit: usize,
    },
}

impl From<tonlib_core::cell::TonCellError> for BuildError {
    fn from(e: tonlib_core::cell::TonCellError) -> Self {
        Self::Cell(e.to_string())
    }
}

impl From<tonlib_core::message::TonMessageError> for BuildError {
    fn from(e: tonlib_core::message::TonMessageError) -> Self {
        Self::Cell(e.to_string())
    }
}

/// A BoC, cell or message did not have the expected layout.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode {what}: {problem}")]
pub struct DecodeError {
    /// What was being decoded.
    pub what: &'static str,
    /// What was wrong.
    pub problem: String,
}

impl DecodeError {
    /// Builds a decode error.
    pub fn new(what: &'static str, problem: impl Into<String>) -> Self {
        Self {
            what,
            problem: problem.into(),
        }
    }
}

/// Parses an address given as raw `0:hex` or user-friendly base64 (either flag set).
pub fn parse_address(text: &str) -> Result<TonAddress, DecodeError> {
    text.trim().parse::<TonAddress>().map_err(|_| {
        DecodeError::new(
            "TON address",
            format!("{text:?} is neither raw nor user-friendly"),
        )
    })
}

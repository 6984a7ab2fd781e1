//! `[ton]` settings: chain access, the keeper wallet and its mnemonic, message value and timing.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use serde::Deserialize;

use crate::config::{ConfigError, EnvBinding, Kind, bind, bind_secret, validate};
use crate::secret::Secret;

/// The most an oracle message may carry (10 TON): more is a typo, and a costly one.
pub const MAX_VALUE_NANOTON: u64 = 10 * validate::NANOTON;

/// Environment bindings of `[ton]`.
pub const TON_ENV: &[EnvBinding] = &[
    bind("TON_RPC_URL", "ton.rpc_url", Kind::Str),
    bind_secret("TON_API_KEY", "ton.api_key", Kind::Str),
    bind("TON_NETWORK", "ton.network", Kind::Str),
    bind("WALLET_VERSION", "ton.wallet_version", Kind::Str),
    bind_secret("KEEPER_MNEMONIC", "ton.mnemonic", Kind::Str),
    bind("UPDATE_VALUE_TON", "ton.update_value_ton", Kind::Decimal),
    bind("MESSAGE_TTL", "ton.message_ttl", Kind::Int),
];

/// Which TON network the wallet lives on (the V5R1 wallet id, and so the address, differ).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Network {
    /// The main network (global id −239).
    #[default]
    Mainnet,
    /// The test network (global id −3).
    Testnet,
}

/// Wallet contract version of the keeper's hot wallet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum WalletVersion {
    /// Wallet V5R1: up to 255 actions per external message (default).
    #[default]
    V5r1,
    /// Wallet V4R2: up to 4 actions per external message.
    V4r2,
}

/// `[ton]`: chain access, wallet and message settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TonSettings {
    /// toncenter v2 endpoint: the JSON-RPC URL or the `/api/v2/` base (`TON_RPC_URL`).
    pub rpc_url: String,
    /// toncenter API key, sent as `X-API-Key` (`TON_API_KEY`).
    pub api_key: Option<Arc<Secret>>,
    /// `mainnet` or `testnet` (`TON_NETWORK`).
    pub network: Network,
    /// `v5r1` or `v4r2` (`WALLET_VERSION`).
    pub wallet_version: WalletVersion,
    /// The 24-word mnemonic (`KEEPER_MNEMONIC`, `KEEPER_MNEMONIC_FILE` or the systemd credential
    /// `keeper-mnemonic`); taken out by [`take_mnemonic`] before the keeper starts.
    pub mnemonic: Option<Arc<Secret>>,
    /// File holding the mnemonic, for a config file that names one.
    pub mnemonic_file: Option<PathBuf>,
    /// Nanotons attached to each oracle message (`update_value_ton` / `UPDATE_VALUE_TON`, given in TON).
    #[serde(
        rename = "update_value_ton",
        deserialize_with = "validate::de_ton_amount"
    )]
    pub update_value_nanoton: u64,
    /// Seconds an external message stays valid after chain time (`MESSAGE_TTL`).
    pub message_ttl: u64,
    /// Per-request timeout towards toncenter, seconds.
    pub request_timeout: u64,
    /// Milliseconds between seqno polls while waiting for confirmation.
    pub poll_interval_ms: u64,
    /// Seconds to wait for one external message to confirm or expire before leaving it in flight.
    pub confirm_timeout: u64,
    /// Seconds to wait for the oracle's get-methods to show a confirmed update.
    pub readback_timeout: u64,
    /// Rebuilds of an expired message (fresh seqno and valid_until) before the send fails.
    pub max_rebuilds: u32,
}

impl Default for TonSettings {
    fn default() -> Self {
        Self {
            rpc_url: "https://toncenter.com/api/v2/jsonRPC".into(),
            api_key: None,
            network: Network::Mainnet,
            wallet_version: WalletVersion::V5r1,
            mnemonic: None,
            mnemonic_file: None,
            update_value_nanoton: 50_000_000,
            message_ttl: 60,
            request_timeout: 10,
            poll_interval_ms: 2_000,
            confirm_timeout: 120,
            readback_timeout: 30,
            max_rebuilds: 2,
        }
    }
}

impl TonSettings {
    /// Checks URLs and bounds; the mnemonic is checked where it is resolved.
    pub fn validate(&self) -> Result<(), ConfigError> {
        validate::http_url("ton.rpc_url (TON_RPC_URL)", &self.rpc_url)?;
        validate::nonzero("ton.message_ttl (MESSAGE_TTL)", self.message_ttl)?;
        validate::at_most(
            "ton.message_ttl (MESSAGE_TTL)",
            self.message_ttl,
            3_600,
            "s",
        )?;
        validate::at_most(
            "ton.update_value_ton (UPDATE_VALUE_TON)",
            self.update_value_nanoton,
            MAX_VALUE_NANOTON,
            "nanoton",
        )?;
        validate::nonzero("ton.request_timeout", self.request_timeout)?;
        validate::nonzero("ton.poll_interval_ms", self.poll_interval_ms)?;
        validate::nonzero("ton.confirm_timeout", self.confirm_timeout)?;
        Ok(())
    }
}

/// Requires a TON address in raw (`0:abcd…`) or user-friendly (48 base64 chars) form.
pub fn validate_address(
    setting: &str,
    value: &str,
) -> Result<tonlib_core::TonAddress, ConfigError> {
    tonlib_core::TonAddress::from_str(value.trim()).map_err(|_| {
        ConfigError::new(
            setting,
            format!(
                "{value:?} is not a TON address (raw 0:<64 hex> or 48-char user-friendly form)"
            ),
        )
    })
}

/// Checks a TON mnemonic without ever echoing a word: 24 words, each in the TON word list,
/// and a passwordless TON seed version.
pub fn validate_mnemonic(setting: &str, phrase: &Secret) -> Result<(), ConfigError> {
    let words: Vec<&str> = phrase.expose().split_whitespace().collect();
    if words.len() != 24 {
        return Err(ConfigError::new(
            setting,
            format!("mnemonic must have 24 words, it has {}", words.len()),
        ));
    }
    let list = &*tonlib_core::wallet::mnemonic::WORDLIST_EN_SET;
    if let Some(pos) = words
        .iter()
        .position(|w| !list.contains_key(w.to_lowercase().as_str()))
    {
        return Err(ConfigError::new(
            setting,
            format!("mnemonic word #{} is not in the TON word list", pos + 1),
        ));
    }
    tonlib_core::wallet::mnemonic::Mnemonic::new(words, &None).map(|_| ()).map_err(|_| {
        ConfigError::new(
            setting,
            "mnemonic has a bad TON seed version (not a TON wallet mnemonic, or one with a password)",
        )
    })
}

/// Takes the keeper's mnemonic out of the settings: `ton.mnemonic` (`KEEPER_MNEMONIC`, its
/// `KEEPER_MNEMONIC_FILE` or systemd's `$CREDENTIALS_DIRECTORY/keeper-mnemonic`), else the file
/// `ton.mnemonic_file` names. The settings keep no copy.
pub fn take_mnemonic(ton: &mut TonSettings) -> Result<Option<Arc<Secret>>, ConfigError> {
    if let Some(m) = ton.mnemonic.take() {
        return Ok(Some(m));
    }
    match &ton.mnemonic_file {
        Some(path) => Secret::from_file(path)
            .map(|m| Some(Arc::new(m)))
            .map_err(|e| {
                ConfigError::new(
                    "ton.mnemonic_file",
                    format!("cannot read {}: {}", path.display(), e.kind()),
                )
            }),
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "fancy carpet hello mandate penalty trial consider property top vicious exit rebuild tragic profit urban major total month holiday sudden rib gather media vicious";

    #[test]
    fn mnemonic_checks_never_echo_words() {
        assert!(validate_mnemonic("m", &Secret::new(GOOD)).is_ok());
        let short = validate_mnemonic("m", &Secret::new("fancy carpet hello")).unwrap_err();
        assert!(short.problem.contains("24 words") && !short.problem.contains("fancy"));
        let bad_word = GOOD.replace("penalty", "zzzzzz");
        let e = validate_mnemonic("m", &Secret::new(bad_word)).unwrap_err();
        assert!(
            e.problem.contains("#5") && !e.problem.contains("zzzzzz"),
            "{e}"
        );
        // Valid words, wrong seed version: swap two words.
        let swapped = GOOD.replacen("fancy carpet", "carpet fancy", 1);
        let e = validate_mnemonic("m", &Secret::new(swapped)).unwrap_err();
        assert!(e.problem.contains("seed version"), "{e}");
    }

    #[test]
    fn addresses() {
        assert!(validate_address("a", "EQCDM_QGggZ3qMa_f3lRPk4_qLDnLTqdi6OkMAV2NB9r5TG3").is_ok());
        assert!(validate_address("a", "EQnot-an-address").is_err());
    }
}

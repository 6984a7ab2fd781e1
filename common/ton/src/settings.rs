//! `[ton]` settings: chain access, the keeper wallet and its mnemonic, message value and timing.

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

use serde::Deserialize;

use keeper_runtime::config::{ConfigError, EnvBinding, Kind, bind, bind_secret, validate};
use keeper_runtime::secret::Secret;

/// The most an oracle message may carry (10 TON): more is a typo, and a costly one.
pub const MAX_VALUE_NANOTON: u64 = 10 * validate::NANOTON;

/// toncenter's public mainnet endpoint, used when none is configured.
pub const DEFAULT_RPC_URL: &str = "https://toncenter.com/api/v2/jsonRPC";

/// One configured endpoint: its URL and the API key sent to it.
pub type EndpointSetting = (String, Option<Arc<Secret>>);

/// Environment bindings of `[ton]`.
pub const TON_ENV: &[EnvBinding] = &[
    bind("TON_RPC_URL", "ton.rpc_urls", Kind::List),
    bind_secret("TON_API_KEY", "ton.api_key", Kind::Str),
    // Kept as one string: an empty entry means "no key" and must keep its position.
    bind_secret("TON_API_KEYS", "ton.api_keys", Kind::Str),
    bind("TON_MAX_RPS", "ton.max_rps", Kind::Int),
    bind("KEEPER_STATE_DIR", "ton.state_dir", Kind::Str),
    bind("KEEPER_JOURNAL", "ton.journal", Kind::Str),
    bind("TON_NETWORK", "ton.network", Kind::Str),
    bind("WALLET_VERSION", "ton.wallet_version", Kind::Str),
    bind_secret("KEEPER_MNEMONIC", "ton.mnemonic", Kind::Str),
    bind("UPDATE_VALUE_TON", "ton.update_value_ton", Kind::Decimal),
    bind("MIN_VALUE_TON", "ton.min_value_ton", Kind::Decimal),
    bind("MAX_VALUE_TON", "ton.max_value_ton", Kind::Decimal),
    bind(
        "VALUE_SAFETY_FACTOR",
        "ton.value_safety_factor",
        Kind::Decimal,
    ),
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

/// Where a sending keeper journals the message it has in flight (`KEEPER_JOURNAL`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum JournalChoice {
    /// PostgreSQL when `DATABASE_URL` is set, else a file in the state directory; a sending
    /// keeper with neither does not start.
    #[default]
    Durable,
    /// Memory only, chosen explicitly: one instance that accepts that a restart within
    /// `MESSAGE_TTL` of a send may sign a second body for that seqno.
    Memory,
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
    /// toncenter v2 endpoints in order of preference, each the JSON-RPC URL or the `/api/v2/`
    /// base (`TON_RPC_URL`, comma-separated); they must serve the same network.
    pub rpc_urls: Vec<String>,
    /// One endpoint, the form of earlier releases; `rpc_urls` wins when both are set.
    pub rpc_url: Option<String>,
    /// toncenter API key for every endpoint, sent as `X-API-Key` (`TON_API_KEY`).
    pub api_key: Option<Arc<Secret>>,
    /// One API key per endpoint, in the order of `rpc_urls` (`TON_API_KEYS`, comma-separated;
    /// an empty entry means no key for that endpoint).
    #[serde(deserialize_with = "de_api_keys")]
    pub api_keys: Vec<Arc<Secret>>,
    /// Directory of the in-flight journal file when PostgreSQL is not configured
    /// (`KEEPER_STATE_DIR`); systemd's `$STATE_DIRECTORY` is used when this is unset.
    pub state_dir: Option<PathBuf>,
    /// `durable` (default) or `memory` (`KEEPER_JOURNAL`): see [`JournalChoice`].
    pub journal: JournalChoice,
    /// Requests per second allowed to each endpoint (`TON_MAX_RPS`); default 1 for an endpoint
    /// without an API key and 10 with one, toncenter's limits.
    pub max_rps: Option<u32>,
    /// `mainnet` or `testnet` (`TON_NETWORK`).
    pub network: Network,
    /// `v5r1` or `v4r2` (`WALLET_VERSION`).
    pub wallet_version: WalletVersion,
    /// The 24-word mnemonic (`KEEPER_MNEMONIC`, `KEEPER_MNEMONIC_FILE` or the systemd credential
    /// `keeper-mnemonic`); taken out by [`take_mnemonic`] before the keeper starts.
    pub mnemonic: Option<Arc<Secret>>,
    /// File holding the mnemonic, for a config file that names one.
    pub mnemonic_file: Option<PathBuf>,
    /// Value attached to each oracle message (`update_value_ton` / `UPDATE_VALUE_TON`): an
    /// amount of TON, or `auto`.
    #[serde(rename = "update_value_ton", deserialize_with = "de_update_value")]
    pub update_value: UpdateValue,
    /// With `auto`, the least value per message, nanotons (`min_value_ton` / `MIN_VALUE_TON`).
    #[serde(rename = "min_value_ton", deserialize_with = "validate::de_ton_amount")]
    pub min_value_nanoton: u64,
    /// With `auto`, the most value per message and the first send's, nanotons
    /// (`max_value_ton` / `MAX_VALUE_TON`).
    #[serde(rename = "max_value_ton", deserialize_with = "validate::de_ton_amount")]
    pub max_value_nanoton: u64,
    /// With `auto`, the multiplier on the oracle's observed cost (`VALUE_SAFETY_FACTOR`).
    #[serde(deserialize_with = "de_factor")]
    pub value_safety_factor: f64,
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
            rpc_urls: Vec::new(),
            rpc_url: None,
            api_key: None,
            api_keys: Vec::new(),
            max_rps: None,
            state_dir: None,
            journal: JournalChoice::Durable,
            network: Network::Mainnet,
            wallet_version: WalletVersion::V5r1,
            mnemonic: None,
            mnemonic_file: None,
            update_value: UpdateValue::Fixed(50_000_000),
            min_value_nanoton: 5_000_000,
            max_value_nanoton: 50_000_000,
            value_safety_factor: 1.5,
            message_ttl: 60,
            request_timeout: 10,
            poll_interval_ms: 2_000,
            confirm_timeout: 120,
            readback_timeout: 30,
            max_rebuilds: 2,
        }
    }
}

/// What `UPDATE_VALUE_TON` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateValue {
    /// This many nanotons on every message.
    Fixed(u64),
    /// The oracle's observed cost × `value_safety_factor`, within `[min_value, max_value]`.
    Auto,
}

fn de_update_value<'de, D: serde::Deserializer<'de>>(d: D) -> Result<UpdateValue, D::Error> {
    let v = toml::Value::deserialize(d)?;
    if v.as_str()
        .is_some_and(|t| t.trim().eq_ignore_ascii_case("auto"))
    {
        return Ok(UpdateValue::Auto);
    }
    validate::de_ton_amount(v)
        .map(UpdateValue::Fixed)
        .map_err(|e| serde::de::Error::custom(e.message()))
}

fn de_factor<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let v = toml::Value::deserialize(d)?;
    match v {
        toml::Value::Float(f) => Ok(f),
        toml::Value::Integer(i) => Ok(i as f64),
        toml::Value::String(t) => t
            .trim()
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("{t:?} is not a number"))),
        other => Err(serde::de::Error::custom(format!(
            "expected a number, found {}",
            other.type_str()
        ))),
    }
}

impl TonSettings {
    /// The value of a message when it is fixed; with `auto`, the maximum (what the first send
    /// carries).
    pub fn fixed_value_nanoton(&self) -> u64 {
        match self.update_value {
            UpdateValue::Fixed(v) => v,
            UpdateValue::Auto => self.max_value_nanoton,
        }
    }

    /// The bounds and factor of `UPDATE_VALUE_TON=auto`, when set.
    pub fn auto_value(&self) -> Option<crate::AutoValue> {
        (self.update_value == UpdateValue::Auto).then(|| crate::AutoValue {
            min_nanoton: self.min_value_nanoton,
            max_nanoton: self.max_value_nanoton,
            safety_factor_milli: (self.value_safety_factor * 1000.0).round() as u64,
        })
    }
    /// The endpoints in order of preference, each with its API key: `rpc_urls`, else
    /// `rpc_url` (comma-separated allowed), else toncenter's public endpoint.
    pub fn endpoints(&self) -> Result<Vec<EndpointSetting>, ConfigError> {
        const SETTING: &str = "ton.rpc_urls (TON_RPC_URL)";
        let urls: Vec<String> = if !self.rpc_urls.is_empty() {
            self.rpc_urls.clone()
        } else if let Some(one) = &self.rpc_url {
            one.split(',').map(str::to_owned).collect()
        } else {
            vec![DEFAULT_RPC_URL.to_owned()]
        };
        let urls: Vec<String> = urls
            .into_iter()
            .map(|u| u.trim().to_owned())
            .filter(|u| !u.is_empty())
            .collect();
        if urls.is_empty() {
            return Err(ConfigError::new(SETTING, "no endpoint given"));
        }
        if !self.api_keys.is_empty() && self.api_keys.len() != urls.len() {
            return Err(ConfigError::new(
                "ton.api_keys (TON_API_KEYS)",
                format!(
                    "{} keys for {} endpoints: give one per endpoint, in the same order \
                     (an empty entry for none), or a single TON_API_KEY for all",
                    self.api_keys.len(),
                    urls.len()
                ),
            ));
        }
        let shared = self.api_key.clone().filter(|k| !k.is_empty());
        Ok(urls
            .into_iter()
            .enumerate()
            .map(|(i, url)| {
                let key = match self.api_keys.get(i) {
                    Some(k) => Some(k.clone()).filter(|k| !k.is_empty()),
                    None => shared.clone(),
                };
                (url, key)
            })
            .collect())
    }

    /// Checks URLs and bounds; the mnemonic is checked where it is resolved.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (url, _) in self.endpoints()? {
            validate::http_url("ton.rpc_urls (TON_RPC_URL)", &url)?;
        }
        if let Some(rps) = self.max_rps {
            validate::nonzero("ton.max_rps (TON_MAX_RPS)", u64::from(rps))?;
            validate::at_most(
                "ton.max_rps (TON_MAX_RPS)",
                u64::from(rps),
                1_000,
                "requests/s",
            )?;
        }
        validate::nonzero("ton.message_ttl (MESSAGE_TTL)", self.message_ttl)?;
        validate::at_most(
            "ton.message_ttl (MESSAGE_TTL)",
            self.message_ttl,
            3_600,
            "s",
        )?;
        if let UpdateValue::Fixed(value) = self.update_value {
            validate::at_most(
                "ton.update_value_ton (UPDATE_VALUE_TON)",
                value,
                MAX_VALUE_NANOTON,
                "nanoton",
            )?;
        }
        validate::at_most(
            "ton.max_value_ton (MAX_VALUE_TON)",
            self.max_value_nanoton,
            MAX_VALUE_NANOTON,
            "nanoton",
        )?;
        if self.min_value_nanoton > self.max_value_nanoton {
            return Err(ConfigError::new(
                "ton.min_value_ton (MIN_VALUE_TON)",
                "must not exceed ton.max_value_ton (MAX_VALUE_TON)",
            ));
        }
        if !(1.0..=100.0).contains(&self.value_safety_factor) {
            return Err(ConfigError::new(
                "ton.value_safety_factor (VALUE_SAFETY_FACTOR)",
                "must be between 1 and 100",
            ));
        }
        validate::nonzero("ton.request_timeout", self.request_timeout)?;
        validate::nonzero("ton.poll_interval_ms", self.poll_interval_ms)?;
        validate::nonzero("ton.confirm_timeout", self.confirm_timeout)?;
        Ok(())
    }
}

/// `api_keys` as a list, or as one comma-separated string (the form `TON_API_KEYS` takes), empty
/// entries kept in place; the text is wiped once split.
fn de_api_keys<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Arc<Secret>>, D::Error> {
    struct Keys;
    impl<'de> serde::de::Visitor<'de> for Keys {
        type Value = Vec<Arc<Secret>>;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a list of API keys or one comma-separated string")
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Self::Value, E> {
            Ok(text.split(',').map(|k| Secret::shared(k.trim())).collect())
        }
        fn visit_string<E: serde::de::Error>(self, text: String) -> Result<Self::Value, E> {
            let text = zeroize::Zeroizing::new(text);
            self.visit_str(&text)
        }
        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let mut keys = Vec::new();
            while let Some(k) = seq.next_element::<Secret>()? {
                keys.push(Arc::new(k));
            }
            Ok(keys)
        }
    }
    d.deserialize_any(Keys)
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

    #[derive(Deserialize)]
    struct Doc {
        ton: TonSettings,
    }

    fn keys_of(env: &[(&str, &str)], file: &str) -> Vec<Option<String>> {
        let env: std::collections::HashMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let doc: Doc = keeper_runtime::config::Layers::new(file, None, &env, TON_ENV)
            .load()
            .unwrap();
        doc.ton
            .endpoints()
            .unwrap()
            .into_iter()
            .map(|(_, k)| k.map(|k| k.expose().to_owned()))
            .collect()
    }

    #[test]
    fn per_endpoint_keys_come_from_a_file_or_credential_and_keep_their_positions() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("keys");
        std::fs::write(&file, "k1, ,k3\n").unwrap();
        std::fs::write(dir.path().join("ton-api-keys"), "c1,c2,\n").unwrap();
        let f = file.display().to_string();
        let d = dir.path().display().to_string();
        let urls = (
            "TON_RPC_URL",
            "https://a.example/api/v2/,https://b.example/api/v2/,https://c.example/api/v2/",
        );
        let some = |k: &str| Some(k.to_owned());
        assert_eq!(
            keys_of(&[urls, ("TON_API_KEYS_FILE", f.as_str())], ""),
            vec![some("k1"), None, some("k3")]
        );
        assert_eq!(
            keys_of(&[urls, ("CREDENTIALS_DIRECTORY", d.as_str())], ""),
            vec![some("c1"), some("c2"), None]
        );
        // TOML takes a list; TON_API_KEY is the key of every endpoint without one of its own.
        assert_eq!(
            keys_of(
                &[urls, ("TON_API_KEY", "all")],
                "[ton]\napi_keys = [\"t1\", \"\", \"t3\"]\n"
            ),
            vec![some("t1"), None, some("t3")]
        );
        assert_eq!(
            keys_of(&[urls, ("TON_API_KEY", "all")], ""),
            vec![some("all"), some("all"), some("all")]
        );
        assert!(secret_env_names_of_ton().contains(&"TON_API_KEYS"));
    }

    #[test]
    fn update_value_takes_an_amount_or_auto_within_checked_bounds() {
        let load = |env: &[(&str, &str)]| {
            let env: std::collections::HashMap<String, String> = env
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            keeper_runtime::config::Layers::new("", None, &env, TON_ENV)
                .load::<Doc>()
                .map(|d| d.ton)
        };
        let fixed = load(&[("UPDATE_VALUE_TON", "0.02")]).unwrap();
        assert_eq!(fixed.update_value, UpdateValue::Fixed(20_000_000));
        assert_eq!(fixed.auto_value(), None);
        let auto = load(&[("UPDATE_VALUE_TON", "auto"), ("VALUE_SAFETY_FACTOR", "1.5")]).unwrap();
        assert_eq!(
            auto.fixed_value_nanoton(),
            50_000_000,
            "the first send: the maximum"
        );
        assert_eq!(
            auto.auto_value(),
            Some(crate::AutoValue {
                min_nanoton: 5_000_000,
                max_nanoton: 50_000_000,
                safety_factor_milli: 1500,
            })
        );
        auto.validate().unwrap();
        let inverted = load(&[("MIN_VALUE_TON", "0.1"), ("MAX_VALUE_TON", "0.05")]).unwrap();
        assert!(
            inverted
                .validate()
                .unwrap_err()
                .setting
                .contains("min_value_ton")
        );
        assert!(load(&[("UPDATE_VALUE_TON", "often")]).is_err());
    }

    fn secret_env_names_of_ton() -> Vec<&'static str> {
        keeper_runtime::config::secret_env_names(TON_ENV)
    }

    #[test]
    fn addresses() {
        assert!(validate_address("a", "EQCDM_QGggZ3qMa_f3lRPk4_qLDnLTqdi6OkMAV2NB9r5TG3").is_ok());
        assert!(validate_address("a", "EQnot-an-address").is_err());
    }
}

//! The keeper's ed25519 key pair: from a TON mnemonic (once, at start) or random (dry runs).

use std::fmt;
use std::sync::Arc;

use ed25519_dalek::{Signature, Signer as _, SigningKey, Verifier as _, VerifyingKey};
use tonlib_core::wallet::mnemonic::{Mnemonic, WORDLIST_EN_SET};
use zeroize::{Zeroize as _, Zeroizing};

use keeper_runtime::secret::Secret;

/// Why a key pair could not be made. Never carries a mnemonic word.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// A TON mnemonic has exactly 24 words.
    #[error("mnemonic must have 24 words, it has {0}")]
    WordCount(usize),
    /// A word is not in the TON (BIP-39 English) word list; 1-based position.
    #[error("mnemonic word #{0} is not in the TON word list")]
    UnknownWord(usize),
    /// The words are valid but fail TON's seed-version check (a BIP-39 phrase or a password-protected one).
    #[error(
        "mnemonic has a bad TON seed version (not a TON wallet mnemonic, or one with a password)"
    )]
    NotTonMnemonic,
    /// The derived key was rejected by the signing library.
    #[error("key derivation failed: {0}")]
    Derivation(String),
}

/// An ed25519 key pair. `Debug` shows only the public key.
pub struct WalletKeys {
    // Zeroized on drop.
    pair: SigningKey,
    public: [u8; 32],
    ephemeral: bool,
}

impl WalletKeys {
    /// Derives the key pair from a 24-word TON mnemonic (no password).
    ///
    /// This runs PBKDF2-HMAC-SHA512 with 100 000 rounds (tens of milliseconds in release builds,
    /// seconds in debug ones): call it once at start, and from async code through
    /// [`WalletKeys::from_mnemonic_blocking`].
    pub fn from_mnemonic(phrase: &Secret) -> Result<Self, KeyError> {
        let words: Vec<&str> = phrase.expose().split_whitespace().collect();
        if words.len() != 24 {
            return Err(KeyError::WordCount(words.len()));
        }
        let lower: Zeroizing<Vec<String>> =
            Zeroizing::new(words.iter().map(|w| w.to_lowercase()).collect());
        if let Some(pos) = lower
            .iter()
            .position(|w| !WORDLIST_EN_SET.contains_key(w.as_str()))
        {
            return Err(KeyError::UnknownWord(pos + 1));
        }
        let refs: Vec<&str> = lower.iter().map(String::as_str).collect();
        let mnemonic = Mnemonic::new(refs, &None).map_err(|_| KeyError::NotTonMnemonic)?;
        // The error types of the library may echo words; report only that derivation failed.
        let mut pair = mnemonic
            .to_key_pair()
            .map_err(|_| KeyError::Derivation("PBKDF2 failed".into()))?;
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&pair.secret_key[..32]);
        let result = Self::from_seed(&seed).and_then(|k| {
            // The library's own derivation must agree with ours.
            if k.public_key().as_slice() == pair.public_key.as_slice() {
                Ok(k)
            } else {
                Err(KeyError::Derivation("public key mismatch".into()))
            }
        });
        seed.zeroize();
        // Best effort: do not leave the secret half lying around in the library's buffer.
        pair.secret_key.zeroize();
        result
    }

    /// [`WalletKeys::from_mnemonic`] on the blocking thread pool, for use inside the runtime.
    pub async fn from_mnemonic_blocking(phrase: Arc<Secret>) -> Result<Self, KeyError> {
        tokio::task::spawn_blocking(move || Self::from_mnemonic(&phrase))
            .await
            .map_err(|e| KeyError::Derivation(format!("derivation task failed: {e}")))?
    }

    /// Builds the key pair from a 32-byte ed25519 seed (the first half of a TON secret key).
    pub fn from_seed(seed: &[u8; 32]) -> Result<Self, KeyError> {
        Ok(Self::wrap(SigningKey::from_bytes(seed), false))
    }

    /// A fresh random key pair, for dry runs without a configured mnemonic.
    pub fn ephemeral() -> Self {
        let mut seed: [u8; 32] = rand::random();
        let keys = Self::wrap(SigningKey::from_bytes(&seed), true);
        seed.fill(0);
        keys
    }

    fn wrap(pair: SigningKey, ephemeral: bool) -> Self {
        let public = pair.verifying_key().to_bytes();
        Self {
            pair,
            public,
            ephemeral,
        }
    }

    /// The 32-byte public key, as stored in the wallet's data cell.
    pub fn public_key(&self) -> &[u8; 32] {
        &self.public
    }

    /// The public key as lower-case hex (the `wallet` command's `public_key_hex`).
    pub fn public_key_hex(&self) -> String {
        hex::encode(self.public)
    }

    /// True for a random key made by [`WalletKeys::ephemeral`].
    pub fn is_ephemeral(&self) -> bool {
        self.ephemeral
    }

    /// Signs `message` (for TON: a 32-byte cell representation hash).
    pub fn sign(&self, message: &[u8]) -> [u8; 64] {
        self.pair.sign(message).to_bytes()
    }
}

impl fmt::Debug for WalletKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WalletKeys")
            .field("public_key", &self.public_key_hex())
            .field("ephemeral", &self.ephemeral)
            .finish_non_exhaustive()
    }
}

/// Checks an ed25519 `signature` of `message` by `public_key` (what `check_signature` does on chain).
pub fn verify_signature(public_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    let Ok(pk) = <[u8; 32]>::try_from(public_key) else {
        return false;
    };
    let Ok(sig) = Signature::from_slice(signature) else {
        return false;
    };
    VerifyingKey::from_bytes(&pk).is_ok_and(|k| k.verify(message, &sig).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_mnemonics_never_echo_words() {
        let e = WalletKeys::from_mnemonic(&Secret::new("fancy carpet hello")).unwrap_err();
        assert_eq!(e, KeyError::WordCount(3));
        let mut words = vec!["fancy"; 24];
        words[5] = "zzzsecretword";
        let e = WalletKeys::from_mnemonic(&Secret::new(words.join(" "))).unwrap_err();
        assert_eq!(e, KeyError::UnknownWord(6));
        assert!(!e.to_string().contains("zzzsecretword"));
        // 24 valid words that are not a TON mnemonic fail the seed-version check.
        let e = WalletKeys::from_mnemonic(&Secret::new(["abandon"; 24].join(" "))).unwrap_err();
        assert_eq!(e, KeyError::NotTonMnemonic);
    }

    #[test]
    fn signatures_verify_and_tampering_fails() {
        let k = WalletKeys::ephemeral();
        assert!(k.is_ephemeral());
        let sig = k.sign(b"hash");
        assert!(verify_signature(k.public_key(), b"hash", &sig));
        assert!(!verify_signature(k.public_key(), b"hasH", &sig));
        let other = WalletKeys::from_seed(&[7u8; 32]).unwrap();
        assert!(!verify_signature(other.public_key(), b"hash", &sig));
        assert!(!format!("{k:?}").contains("pair"));
    }
}

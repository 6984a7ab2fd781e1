//! Client-side encryption of every artifact with age (`BACKUP_AGE_RECIPIENTS`): the stream is
//! encrypted between zstd and the SHA-256, so the digest, the sidecar and the upload all cover
//! the ciphertext and the bucket never sees plaintext. Decryption (`--identity FILE`,
//! `BACKUP_AGE_IDENTITY_FILE`) happens while reading, before zstd. No key material is logged:
//! only recipients' fingerprints are recorded.

use std::io::{self, BufReader, Read, Write};
use std::path::Path;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use sha2::{Digest, Sha256};

/// Why encryption or decryption could not be set up or failed.
#[derive(Debug, thiserror::Error)]
pub enum CryptError {
    /// A recipient is neither an age X25519 key nor a supported SSH public key.
    #[error(
        "BACKUP_AGE_RECIPIENTS: entry {index} is not an age X25519 (age1…) or SSH (ssh-ed25519/ssh-rsa) public key"
    )]
    BadRecipient {
        /// 1-based position in the list (the key itself is public, but may be long).
        index: usize,
    },
    /// The identity file could not be read or holds no usable key.
    #[error("identity file {path}: {reason}")]
    Identity {
        /// The file.
        path: String,
        /// What is wrong (never the key).
        reason: String,
    },
    /// The archive is encrypted and no identity was given.
    #[error(
        "the backup is encrypted with age for {recipients}; pass --identity FILE or set BACKUP_AGE_IDENTITY_FILE"
    )]
    NoIdentity {
        /// Fingerprints of its recipients.
        recipients: String,
    },
    /// None of the identities opens the file, or it is not an age file.
    #[error("cannot decrypt: {0}")]
    Decrypt(String),
    /// The encryption stream failed.
    #[error("age: {0}")]
    Io(#[from] io::Error),
}

/// Parsed recipients and their fingerprints.
pub struct Recipients {
    keys: Vec<Box<dyn age::Recipient + Send>>,
    /// `SHA256:…` per recipient, in order.
    pub fingerprints: Vec<String>,
}

/// The fingerprint recorded for a recipient: for an SSH key the one `ssh-keygen -l` prints
/// (`SHA256:` + base64 of the SHA-256 of the key blob); for an age key `SHA256:` + base64 of
/// the SHA-256 of its `age1…` text.
pub fn fingerprint(recipient: &str) -> String {
    let r = recipient.trim();
    let blob = if r.starts_with("ssh-") {
        r.split_whitespace()
            .nth(1)
            .and_then(|b| STANDARD.decode(b).ok())
    } else {
        None
    };
    let digest = Sha256::digest(blob.as_deref().unwrap_or(r.as_bytes()));
    format!("SHA256:{}", STANDARD_NO_PAD.encode(digest))
}

/// Parses `BACKUP_AGE_RECIPIENTS` entries; an empty list means no encryption.
pub fn parse_recipients(raw: &[String]) -> Result<Recipients, CryptError> {
    let mut keys: Vec<Box<dyn age::Recipient + Send>> = Vec::new();
    let mut fingerprints = Vec::new();
    for (i, r) in raw.iter().map(|r| r.trim()).enumerate() {
        let key: Box<dyn age::Recipient + Send> = if r.starts_with("age1") {
            Box::new(
                age::x25519::Recipient::from_str(r)
                    .map_err(|_| CryptError::BadRecipient { index: i + 1 })?,
            )
        } else {
            Box::new(
                age::ssh::Recipient::from_str(r)
                    .map_err(|_| CryptError::BadRecipient { index: i + 1 })?,
            )
        };
        keys.push(key);
        fingerprints.push(fingerprint(r));
    }
    Ok(Recipients { keys, fingerprints })
}

impl Recipients {
    /// True when there is nobody to encrypt for.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

/// Where compressed bytes go: straight to `W`, or through age first.
pub enum Sink<W: Write> {
    /// No encryption.
    Plain(W),
    /// age encryption in front of `W`.
    Age(age::stream::StreamWriter<W>),
}

impl<W: Write> Sink<W> {
    /// Encrypts for `recipients` when there are any.
    pub fn new(inner: W, recipients: &Recipients) -> Result<Self, CryptError> {
        if recipients.is_empty() {
            return Ok(Self::Plain(inner));
        }
        let enc = age::Encryptor::with_recipients(
            recipients
                .keys
                .iter()
                .map(|k| k.as_ref() as &dyn age::Recipient),
        )
        .map_err(|e| CryptError::Decrypt(format!("cannot encrypt: {e}")))?;
        Ok(Self::Age(enc.wrap_output(inner)?))
    }

    /// Writes the final age chunk and returns the inner writer.
    pub fn finish(self) -> io::Result<W> {
        match self {
            Self::Plain(w) => Ok(w),
            Self::Age(w) => w.finish(),
        }
    }
}

impl<W: Write> Write for Sink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Self::Plain(w) => w.write(buf),
            Self::Age(w) => w.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Self::Plain(w) => w.flush(),
            Self::Age(w) => w.flush(),
        }
    }
}

/// Reads identities: an age identity file (`AGE-SECRET-KEY-1…` lines, as `age-keygen` writes)
/// or an unencrypted OpenSSH private key.
pub fn load_identities(
    path: &Path,
) -> Result<Vec<Box<dyn age::Identity + Send + Sync>>, CryptError> {
    let err = |reason: String| CryptError::Identity {
        path: path.display().to_string(),
        reason,
    };
    let bytes = crate::file::read_bounded(path, 1 << 20).map_err(|e| err(e.to_string()))?;
    if let Ok(file) = age::IdentityFile::from_buffer(&bytes[..])
        && let Ok(ids) = file.into_identities()
        && !ids.is_empty()
    {
        return Ok(ids);
    }
    match age::ssh::Identity::from_buffer(&bytes[..], None) {
        Ok(age::ssh::Identity::Unencrypted(key)) => {
            Ok(vec![Box::new(age::ssh::Identity::Unencrypted(key))])
        }
        Ok(age::ssh::Identity::Encrypted(_)) => Err(err(
            "a passphrase-protected SSH key cannot be used unattended; use an age identity or an unencrypted key".into(),
        )),
        Ok(age::ssh::Identity::Unsupported(_)) => Err(err("unsupported SSH key type".into())),
        Err(_) => Err(err(
            "neither an age identity file nor an OpenSSH private key".into(),
        )),
    }
}

/// `input` decrypted when `encrypted_for` is set (the recipients' fingerprints), else as is.
pub fn reader<'a, R: Read + 'a>(
    input: R,
    encrypted_for: Option<&[String]>,
    identity: Option<&Path>,
) -> Result<Box<dyn Read + 'a>, CryptError> {
    let Some(recipients) = encrypted_for else {
        return Ok(Box::new(input));
    };
    let Some(path) = identity else {
        return Err(CryptError::NoIdentity {
            recipients: recipients.join(", "),
        });
    };
    let ids = load_identities(path)?;
    let dec = age::Decryptor::new_buffered(BufReader::new(input))
        .map_err(|e| CryptError::Decrypt(e.to_string()))?;
    let r = dec
        .decrypt(ids.iter().map(|i| i.as_ref() as &dyn age::Identity))
        .map_err(|e| match e {
            age::DecryptError::NoMatchingKeys => CryptError::Decrypt(format!(
                "no identity in {} matches the recipients ({})",
                path.display(),
                recipients.join(", ")
            )),
            other => CryptError::Decrypt(other.to_string()),
        })?;
    Ok(Box::new(r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;

    #[test]
    fn round_trip_and_wrong_identity() {
        let right = age::x25519::Identity::generate();
        let wrong = age::x25519::Identity::generate();
        let dir = tempfile::tempdir().unwrap();
        let (rp, wp) = (dir.path().join("right"), dir.path().join("wrong"));
        std::fs::write(&rp, format!("{}\n", right.to_string().expose_secret())).unwrap();
        std::fs::write(&wp, format!("{}\n", wrong.to_string().expose_secret())).unwrap();
        let recipients = parse_recipients(&[right.to_public().to_string()]).unwrap();
        let mut sink = Sink::new(Vec::new(), &recipients).unwrap();
        sink.write_all(&[7u8; 200_000]).unwrap();
        let ct = sink.finish().unwrap();
        assert!(!ct.windows(1000).any(|w| w.iter().all(|b| *b == 7)));
        let fps = recipients.fingerprints.clone();
        let mut out = Vec::new();
        reader(&ct[..], Some(&fps), Some(&rp))
            .unwrap()
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, vec![7u8; 200_000]);
        let e = reader(&ct[..], Some(&fps), Some(&wp)).err().unwrap();
        assert!(e.to_string().contains("no identity in"), "{e}");
        assert!(!e.to_string().contains("AGE-SECRET-KEY"), "{e}");
        let e = reader(&ct[..], Some(&fps), None).err().unwrap();
        assert!(e.to_string().contains("--identity FILE"), "{e}");
    }

    #[test]
    fn recipients_parse_and_fingerprint() {
        let id = age::x25519::Identity::generate();
        let ssh = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB+VHtZ6isGN alice@example";
        let r = parse_recipients(&[id.to_public().to_string(), ssh.to_owned()]).unwrap();
        assert_eq!(r.fingerprints.len(), 2);
        // What `ssh-keygen -lf` prints for that key.
        assert_eq!(r.fingerprints[1], fingerprint(ssh));
        assert!(r.fingerprints[1].starts_with("SHA256:"));
        let e = parse_recipients(&["age1notakey".to_owned()]).err().unwrap();
        assert!(e.to_string().contains("entry 1"), "{e}");
        assert!(parse_recipients(&[]).unwrap().is_empty());
    }
}

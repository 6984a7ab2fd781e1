//! Values that must never reach a log line, an error message, a metric or `--help` output, nor
//! outlive their use in memory: the types are not `Clone` (one copy, one owner) and wipe their
//! bytes when dropped. [`scrub_environment`] removes secrets from the process environment once
//! they have been read.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::{Deserialize, Deserializer};
use zeroize::{Zeroize, Zeroizing};

mod environ;

pub use environ::{ScrubError, scrub_environment};

/// A secret string: `Debug` and `Display` print `[redacted]`; read it with [`Secret::expose`].
#[derive(PartialEq, Eq)]
pub struct Secret(String);

impl Drop for Secret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl Secret {
    /// Wraps a value that must stay out of any output.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// A secret for several holders (settings and the client that uses it): one copy of the
    /// bytes, wiped when the last holder drops it.
    pub fn shared(value: impl Into<String>) -> Arc<Self> {
        Arc::new(Self::new(value))
    }

    /// Reads a secret from a file, trimming surrounding white space (a trailing newline is usual).
    pub fn from_file(path: &Path) -> std::io::Result<Self> {
        let text = Zeroizing::new(std::fs::read_to_string(path)?);
        Ok(Self(text.trim().to_owned()))
    }

    /// The secret value itself; call it only where the value is used, never to print.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when the secret is the empty string (an unset optional credential).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Secret)
    }
}

/// A URL that may carry a password (`postgres://user:pw@host/db`): printing it hides the password.
#[derive(PartialEq, Eq)]
pub struct SecretUrl(String);

impl Drop for SecretUrl {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl SecretUrl {
    /// Wraps a connection URL.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// A URL for several holders; one copy, wiped when the last holder drops it.
    pub fn shared(value: impl Into<String>) -> Arc<Self> {
        Arc::new(Self::new(value))
    }

    /// The full URL, password included; pass it only to the client that connects.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password (and query string, which may carry tokens) replaced.
    pub fn redacted(&self) -> String {
        redact_url(&self.0)
    }
}

/// Replaces the password and the query of a URL with `[redacted]`; a non-URL is redacted whole.
pub fn redact_url(raw: &str) -> String {
    match url::Url::parse(raw) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("redacted"));
            }
            if u.query().is_some() {
                u.set_query(Some("redacted"));
            }
            u.to_string()
        }
        Err(_) => "[redacted]".to_owned(),
    }
}

impl fmt::Debug for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl fmt::Display for SecretUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.redacted())
    }
}

impl<'de> Deserialize<'de> for SecretUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(SecretUrl)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_never_prints() {
        let s = Secret::new("abandon ability");
        assert_eq!(format!("{s} {s:?}"), "[redacted] [redacted]");
        assert_eq!(s.expose(), "abandon ability");
    }

    #[test]
    fn url_password_is_hidden() {
        let u = SecretUrl::new("postgres://keeper:hunter2@db:5432/app?sslmode=require");
        let shown = format!("{u} {u:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("db:5432"), "{shown}");
        assert_eq!(redact_url("not a url hunter2"), "[redacted]");
    }
}

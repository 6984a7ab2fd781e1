//! One reading of a `postgres://` URL for both sqlx and the libpq tools, so that whatever the
//! job itself connects with is exactly what `pg_dump` and `pg_restore` get.
//!
//! libpq decodes URI parts by RFC 3986 percent-decoding only: `+` is a plus and `&` inside the
//! userinfo is an ampersand. Form-urlencoding (what `Url::query_pairs` and sqlx's own parser
//! apply to query values) turns `+` into a space, so a password read that way authenticates in
//! one client and not the other. The password, from the userinfo or a `password=` parameter,
//! never goes on a command line: children get it in `PGPASSWORD`, which only the same user can
//! read (`/proc/PID/environ`), where `ps` shows every argument to everyone.

use std::str::FromStr;
use std::sync::Arc;

use keeper_runtime::secret::{Secret, SecretUrl};
use percent_encoding::percent_decode_str;
use sqlx::postgres::PgConnectOptions;

/// The URL could not be read; the message never contains the URL's password.
#[derive(Debug, thiserror::Error)]
#[error("database URL {target}: {reason}")]
pub struct UrlError {
    /// The URL, password redacted.
    pub target: String,
    /// What is wrong with it.
    pub reason: String,
}

/// A connection split into the password-free URL and the password.
#[derive(Debug, Clone)]
pub struct LibpqTarget {
    /// URL for `--dbname`: no password in the userinfo nor in the query.
    pub dbname: String,
    /// The password, if the URL had one (userinfo wins over a `password=` parameter, as in
    /// libpq).
    password: Option<Arc<Secret>>,
}

impl LibpqTarget {
    /// Splits `url`.
    pub fn new(url: &SecretUrl) -> Result<Self, UrlError> {
        let err = |reason: String| UrlError {
            target: url.redacted(),
            reason,
        };
        let mut u =
            url::Url::parse(url.expose()).map_err(|e| err(format!("not a valid URL ({e})")))?;
        if !matches!(u.scheme(), "postgres" | "postgresql") {
            return Err(err("the scheme must be postgres:// or postgresql://".into()));
        }
        let mut password = match u.password() {
            Some(raw) => Some(decode(raw).map_err(|()| err("the password is not UTF-8".into()))?),
            None => None,
        };
        if let Some(query) = u.query() {
            let mut kept = Vec::new();
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
                if key == "password" {
                    let p = decode(value)
                        .map_err(|()| err("the password parameter is not UTF-8".into()))?;
                    password.get_or_insert(p);
                } else {
                    // Kept byte for byte: libpq decodes it the same way we would.
                    kept.push(pair.to_owned());
                }
            }
            u.set_query((!kept.is_empty()).then(|| kept.join("&")).as_deref());
        }
        u.set_password(None)
            .map_err(|()| err("the URL cannot carry a user".into()))?;
        Ok(Self {
            dbname: u.to_string(),
            password: password.map(Secret::shared),
        })
    }

    /// The password, for redaction and for sqlx.
    pub fn password(&self) -> Option<&str> {
        self.password.as_deref().map(Secret::expose)
    }

    /// sqlx options equal to what libpq makes of the URL: the password is set from our
    /// decoding, never from sqlx's reading of the original.
    pub fn connect_options(&self) -> Result<PgConnectOptions, sqlx::Error> {
        let opts = PgConnectOptions::from_str(&self.dbname)?;
        Ok(match self.password() {
            Some(p) => opts.password(p),
            None => opts,
        })
    }

    /// Adds the connection to a child command: `--dbname` without the password, the password
    /// in `PGPASSWORD`, `--no-password` so a missing one fails instead of prompting.
    pub fn apply(&self, cmd: &mut std::process::Command) {
        cmd.arg(format!("--dbname={}", self.dbname))
            .arg("--no-password")
            .env("PGAPPNAME", "db-backup");
        match self.password() {
            Some(p) => cmd.env("PGPASSWORD", p),
            None => cmd.env_remove("PGPASSWORD"),
        };
    }
}

/// RFC 3986 percent-decoding: `%XX` only; `+` stays a plus; a `%` not followed by two hex
/// digits stays as it is (libpq rejects those; the server then says the password is wrong).
fn decode(raw: &str) -> Result<String, ()> {
    percent_decode_str(raw)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| ())
}

/// Removes `url`'s password, raw and decoded, from a message, in case a driver or tool echoes
/// it.
pub fn scrub(message: &str, url: &SecretUrl) -> String {
    let mut out = message.to_owned();
    if let Ok(t) = LibpqTarget::new(url)
        && let Some(p) = t.password()
        && !p.is_empty()
    {
        out = out.replace(p, "[redacted]");
    }
    if let Some(raw) = url::Url::parse(url.expose())
        .ok()
        .and_then(|u| u.password().map(str::to_owned))
        && !raw.is_empty()
    {
        out = out.replace(&raw, "[redacted]");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sqlx::ConnectOptions;

    fn split(url: &str) -> (String, Option<String>) {
        let t = LibpqTarget::new(&SecretUrl::new(url)).unwrap();
        (t.dbname.clone(), t.password().map(str::to_owned))
    }

    #[test]
    fn userinfo_is_percent_decoded_only() {
        let (db, pw) = split("postgres://bob:p%40ss%20w+x&y@db:5432/app?sslmode=require");
        assert_eq!(db, "postgres://bob@db:5432/app?sslmode=require");
        assert_eq!(pw.as_deref(), Some("p@ss w+x&y"));
        let (_, pw) = split("postgres://bob:%2B%26%25%40%3A%2F%3F%23%20@db/app");
        assert_eq!(pw.as_deref(), Some("+&%@:/?# "));
        // A lone % is not an escape.
        let (_, pw) = split("postgres://bob:100%25%zz@db/app");
        assert_eq!(pw.as_deref(), Some("100%%zz"));
    }

    #[test]
    fn password_parameter_leaves_the_query() {
        let (db, pw) =
            split("postgres://bob@db/app?sslmode=disable&password=a+b%26c&application_name=x+y");
        assert_eq!(
            db,
            "postgres://bob@db/app?sslmode=disable&application_name=x+y"
        );
        assert_eq!(pw.as_deref(), Some("a+b&c"));
        let (db, pw) = split("postgres://bob:first@db/app?password=second");
        assert_eq!(db, "postgres://bob@db/app");
        assert_eq!(pw.as_deref(), Some("first"));
        let (db, pw) = split("postgresql://db/app");
        assert_eq!(db, "postgresql://db/app");
        assert_eq!(pw, None);
    }

    #[test]
    fn sqlx_gets_the_same_password() {
        let t = LibpqTarget::new(&SecretUrl::new("postgres://bob@db/app?password=a+b")).unwrap();
        let opts = t.connect_options().unwrap();
        // sqlx alone would read `a b` from the query; ours is what libpq uses.
        let url = opts.to_url_lossy().to_string();
        assert!(url.contains("a%2Bb"), "{url}");
    }

    #[test]
    fn bad_urls_are_typed_errors_without_the_password() {
        let e = LibpqTarget::new(&SecretUrl::new("mysql://u:hunter2@h/db")).unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = LibpqTarget::new(&SecretUrl::new("postgres://u:%FF@h/db")).unwrap_err();
        assert!(e.to_string().contains("not UTF-8"), "{e}");
        assert_eq!(
            scrub(
                "auth failed for a+b and a%2Bb",
                &SecretUrl::new("postgres://u:a%2Bb@h/db")
            ),
            "auth failed for [redacted] and [redacted]"
        );
    }
}

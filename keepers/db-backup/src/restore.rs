//! What makes a restore into a real database safe: never into the database the backup came
//! from, never over existing tables unless asked (`--clean`), and nothing committed unless the
//! restored row counts equal the manifest's, checked inside the restore's own transaction.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use keeper_runtime::secret::SecretUrl;

use crate::libpq::LibpqTarget;
use crate::manifest::{Manifest, SourceIdentity};
use crate::pg::{self, PgError};

/// Why a restore was refused before anything was written.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// The target is the backup's source.
    #[error(
        "refusing to restore into {target}: it is the database this backup was taken from ({why}); restore into a new database and switch over"
    )]
    Source {
        /// The target, password redacted.
        target: String,
        /// How that was recognised.
        why: &'static str,
    },
    /// The target already holds tables.
    #[error(
        "refusing to restore into {target}: it already has {count} table(s) ({examples}); restore into an empty database, or pass --clean to drop and recreate the backup's objects there"
    )]
    NotEmpty {
        /// The target, password redacted.
        target: String,
        /// How many user tables.
        count: usize,
        /// The first few.
        examples: String,
    },
    /// A table name in the manifest is not a quoted identifier pair: the manifest was not
    /// written by db-backup, and its names must not reach SQL.
    #[error("the manifest's table name {0:?} is not a schema.table identifier; not restoring")]
    BadTableName(String),
    /// Talking to the target failed.
    #[error(transparent)]
    Pg(#[from] PgError),
}

/// Host (lower case), port and database of a URL, as libpq would default them.
pub(crate) fn address(t: &LibpqTarget) -> Option<(String, u16, String)> {
    let u = url::Url::parse(&t.dbname).ok()?;
    let host = u.host_str().unwrap_or("localhost").to_ascii_lowercase();
    let port = u.port().unwrap_or(5432);
    let db = u.path().trim_start_matches('/');
    let db = if db.is_empty() {
        u.username().to_owned()
    } else {
        db.to_owned()
    };
    let db = percent_encoding::percent_decode_str(&db)
        .decode_utf8_lossy()
        .into_owned();
    Some((host, port, db))
}

/// The source's identity as the manifest records it; older manifests have only the
/// `system_identifier` and the database name.
fn recorded_source(m: &Manifest) -> SourceIdentity {
    m.source.clone().unwrap_or_else(|| SourceIdentity {
        system_identifier: m.system_identifier.clone(),
        database: m.database.clone(),
        host: String::new(),
        port: 0,
        server_addr: None,
        server_port: None,
    })
}

/// Why `found` (what the target server says it is) is the backup's source, if it is. The
/// cluster's `system_identifier` decides when both sides have one: it is the same whatever
/// name or address the cluster is reached by, and differs between clusters that share one.
fn same_as_source(src: &SourceIdentity, found: &pg::Identity) -> Option<&'static str> {
    if src.database != found.database {
        return None;
    }
    match (&src.system_identifier, &found.system_identifier) {
        (Some(a), Some(b)) => (a == b)
            .then_some("same cluster (system identifier) and database name as in the manifest"),
        _ => (src.server_addr.is_some()
            && src.server_addr == found.server_addr
            && src.server_port.is_some()
            && src.server_port == found.server_port)
            .then_some("same server address, port and database name as in the manifest"),
    }
}

/// Refuses the source database and, without `clean`, a target that already has tables. The
/// source is recognised from the manifest's record of it; `source`, the source's URL, is an
/// extra check when it is configured, never a requirement.
pub async fn check_target(
    target: &SecretUrl,
    source: Option<&SecretUrl>,
    manifest: Option<&Manifest>,
    clean: bool,
) -> Result<(), Refused> {
    let t = LibpqTarget::new(target).map_err(PgError::from)?;
    let target_address = address(&t);
    if let Some(source) = source {
        let s = LibpqTarget::new(source).map_err(PgError::from)?;
        if target_address.is_some() && target_address == address(&s) {
            return Err(Refused::Source {
                target: target.redacted(),
                why: "same host, port and database as DATABASE_URL",
            });
        }
    }
    let recorded = manifest.map(recorded_source);
    if let (Some(src), Some((host, port, db))) = (&recorded, &target_address)
        && !src.host.is_empty()
        && (&src.host, src.port, &src.database) == (host, *port, db)
    {
        return Err(Refused::Source {
            target: target.redacted(),
            why: "same host, port and database as the backup's source, recorded in the manifest",
        });
    }
    let mut conn = pg::connect(target).await?;
    let checked = async {
        let found = pg::identity(&mut conn, target).await?;
        if let Some(why) = recorded
            .as_ref()
            .and_then(|src| same_as_source(src, &found))
        {
            return Err(Refused::Source {
                target: target.redacted(),
                why,
            });
        }
        let tables = pg::user_tables(&mut conn, target).await?;
        if !tables.is_empty() && !clean {
            return Err(Refused::NotEmpty {
                target: target.redacted(),
                count: tables.len(),
                examples: tables
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
        Ok(())
    }
    .await;
    let _ = sqlx::Connection::close(conn).await;
    checked
}

/// True for `a.b` where each part is a plain lower-case identifier or a `"…"` quoted one with
/// doubled inner quotes: what `format('%I.%I')` produces.
fn is_qualified_name(name: &str) -> bool {
    fn ident(s: &str) -> Option<&str> {
        if let Some(rest) = s.strip_prefix('"') {
            let mut chars = rest.char_indices().peekable();
            while let Some((i, c)) = chars.next() {
                if c == '"' {
                    if chars.peek().map(|(_, c)| *c) == Some('"') {
                        chars.next();
                        continue;
                    }
                    return (i > 0).then(|| &rest[i + 1..]);
                }
            }
            None
        } else {
            let end = s
                .find(|c: char| {
                    !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '$')
                })
                .unwrap_or(s.len());
            let first = s.chars().next()?;
            (end > 0 && (first.is_ascii_lowercase() || first == '_')).then(|| &s[end..])
        }
    }
    ident(name)
        .and_then(|rest| rest.strip_prefix('.'))
        .and_then(ident)
        .is_some_and(str::is_empty)
}

/// SQL literal.
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A `DO` block that raises (rolling back the restore) unless every table of `counts` holds
/// exactly that many rows. Names are checked to be identifiers and reach SQL only as literals
/// cast to `regclass`, so a tampered manifest cannot inject statements.
pub fn count_check_sql(counts: &BTreeMap<String, i64>) -> Result<String, Refused> {
    let mut body = String::from("DECLARE n bigint; bad text := ''; BEGIN\n");
    for (table, expected) in counts {
        if !is_qualified_name(table) {
            return Err(Refused::BadTableName(table.clone()));
        }
        let lit = literal(table);
        body.push_str(&format!(
            "EXECUTE format('SELECT count(*) FROM ONLY %s', {lit}::regclass) INTO n;\n\
             IF n <> {expected} THEN bad := bad || format('%s: %s rows, expected %s; ', {lit}, n, {expected}); END IF;\n"
        ));
    }
    body.push_str(
        "IF bad <> '' THEN RAISE EXCEPTION 'db-backup: restored row counts differ from the manifest, nothing committed: %', bad; END IF;\nEND",
    );
    // A dollar-quote tag that cannot occur in the body.
    let mut tag = String::from("$dbb$");
    while body.contains(&tag) {
        tag.insert(tag.len() - 1, 'x');
    }
    Ok(format!("DO {tag}{body}{tag};"))
}

/// `psql` beside `pg_restore` (same installation, same major version), or from PATH.
pub fn psql_beside(pg_restore: &Path) -> PathBuf {
    match pg_restore.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir.join("psql"),
        _ => PathBuf::from("psql"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_names_must_be_identifiers() {
        for ok in [
            "public.t",
            "\"My Schema\".\"we\"\"ird\"",
            "s_1.t$x",
            "\"a.b\".c",
        ] {
            assert!(is_qualified_name(ok), "{ok}");
        }
        for bad in [
            "t",
            "public.t; DROP TABLE x",
            "public.\"t",
            "Public.t",
            "public.t.u",
            "\"\".t",
            "public.t' || pg_sleep(1) || '",
        ] {
            assert!(!is_qualified_name(bad), "{bad}");
        }
        let counts: BTreeMap<String, i64> = [("public.\"it's\"".to_owned(), 3)].into();
        let sql = count_check_sql(&counts).unwrap();
        assert!(sql.contains("'public.\"it''s\"'::regclass"), "{sql}");
        assert!(
            sql.starts_with("DO $dbb$") && sql.ends_with("$dbb$;"),
            "{sql}"
        );
        let bad: BTreeMap<String, i64> = [("x; DROP".to_owned(), 1)].into();
        assert!(matches!(
            count_check_sql(&bad),
            Err(Refused::BadTableName(_))
        ));
    }

    #[test]
    fn the_source_is_its_cluster_and_database_whatever_the_address() {
        let src = SourceIdentity {
            system_identifier: Some("7301".into()),
            database: "app".into(),
            host: "db.internal".into(),
            port: 5432,
            server_addr: Some("10.0.0.5".into()),
            server_port: Some(5432),
        };
        let found = |sys: Option<&str>, db: &str, addr: Option<&str>| pg::Identity {
            system_identifier: sys.map(str::to_owned),
            database: db.into(),
            server_addr: addr.map(str::to_owned),
            server_port: Some(5432),
        };
        assert!(same_as_source(&src, &found(Some("7301"), "app", Some("192.168.1.9"))).is_some());
        assert!(same_as_source(&src, &found(Some("7301"), "app_restored", None)).is_none());
        // Another cluster on a reused address is not the source when both identifiers are known.
        assert!(same_as_source(&src, &found(Some("9999"), "app", Some("10.0.0.5"))).is_none());
        // Without an identifier on one side, the server's own address and port decide.
        assert!(same_as_source(&src, &found(None, "app", Some("10.0.0.5"))).is_some());
        assert!(same_as_source(&src, &found(None, "app", None)).is_none());
    }

    #[test]
    fn addresses_default_like_libpq() {
        let a = |u: &str| address(&LibpqTarget::new(&SecretUrl::new(u)).unwrap());
        assert_eq!(
            a("postgres://u:p@DB.example:5432/app"),
            a("postgres://other@db.example/app")
        );
        assert_ne!(a("postgres://u@db/app"), a("postgres://u@db/app2"));
        assert_ne!(a("postgres://u@db:5433/app"), a("postgres://u@db/app"));
        assert_eq!(a("postgres://app@db"), a("postgres://x@db/app"));
        assert_eq!(psql_beside(Path::new("pg_restore")), PathBuf::from("psql"));
        assert_eq!(
            psql_beside(Path::new("/usr/lib/postgresql/16/bin/pg_restore")),
            PathBuf::from("/usr/lib/postgresql/16/bin/psql")
        );
    }
}

//! What makes a restore into a real database safe: never into the database the backup came
//! from, never over existing tables unless asked (`--clean`), and nothing committed unless the
//! restored row counts equal the manifest's, checked inside the restore's own transaction.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use keeper_common::secret::SecretUrl;

use crate::libpq::LibpqTarget;
use crate::manifest::Manifest;
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
fn address(t: &LibpqTarget) -> Option<(String, u16, String)> {
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

/// Refuses the source database and, without `clean`, a target that already has tables.
pub async fn check_target(
    target: &SecretUrl,
    source: &SecretUrl,
    manifest: Option<&Manifest>,
    clean: bool,
) -> Result<(), Refused> {
    let t = LibpqTarget::new(target).map_err(PgError::from)?;
    let s = LibpqTarget::new(source).map_err(PgError::from)?;
    if address(&t).is_some() && address(&t) == address(&s) {
        return Err(Refused::Source {
            target: target.redacted(),
            why: "same host, port and database as DATABASE_URL",
        });
    }
    let mut conn = pg::connect(target).await?;
    let checked = async {
        let (system, database) = pg::identity(&mut conn, target).await?;
        if let Some(m) = manifest
            && m.system_identifier.is_some()
            && m.system_identifier == system
            && m.database == database
        {
            return Err(Refused::Source {
                target: target.redacted(),
                why: "same cluster (system identifier) and database name as in the manifest",
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

/// Largest decompressed globals script applied (a cluster with tens of thousands of roles
/// stays far below this).
pub const MAX_GLOBALS_SQL_BYTES: u64 = 64 << 20;

/// What applying the globals did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct GlobalsReport {
    /// Roles created from the backup.
    pub roles_created: Vec<String>,
    /// Roles of the backup that already existed in the target cluster: left exactly as they
    /// were (no attribute, password or setting of theirs is changed).
    pub roles_skipped: Vec<String>,
    /// Tablespaces that already existed and were skipped.
    pub tablespaces_skipped: Vec<String>,
}

/// Parses an identifier as `fmtId` writes it (`name` or `"we""ird"`) at the start of `s`;
/// returns it unquoted and the rest.
fn leading_ident(s: &str) -> Option<(String, &str)> {
    if let Some(rest) = s.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            if c == '"' {
                if chars.peek().map(|(_, c)| *c) == Some('"') {
                    chars.next();
                    out.push('"');
                    continue;
                }
                return Some((out, &rest[i + 1..]));
            }
            out.push(c);
        }
        None
    } else {
        let end = s
            .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == '$'))
            .unwrap_or(s.len());
        (end > 0).then(|| (s[..end].to_owned(), &s[end..]))
    }
}

/// Drops from `pg_dumpall --globals-only` output every statement about a role or tablespace
/// the target already has: `CREATE ROLE`, `ALTER ROLE` (attributes, password, settings),
/// `COMMENT ON ROLE`, `CREATE TABLESPACE`. Memberships (`GRANT … TO …`) stay: granting an
/// existing membership is a no-op.
pub fn filter_globals(
    sql: &str,
    roles: &std::collections::HashSet<String>,
    tablespaces: &std::collections::HashSet<String>,
) -> (String, GlobalsReport) {
    let mut out = String::with_capacity(sql.len());
    let mut report = GlobalsReport::default();
    for line in sql.split_inclusive('\n') {
        let about = |prefix: &str| line.strip_prefix(prefix).and_then(leading_ident);
        let skip = if let Some((role, _)) = about("CREATE ROLE ") {
            if roles.contains(&role) {
                report.roles_skipped.push(role);
                true
            } else {
                report.roles_created.push(role);
                false
            }
        } else if let Some((role, _)) = about("ALTER ROLE ").or_else(|| about("COMMENT ON ROLE ")) {
            roles.contains(&role)
        } else if let Some((ts, _)) = about("CREATE TABLESPACE ") {
            let exists = tablespaces.contains(&ts);
            if exists {
                report.tablespaces_skipped.push(ts);
            }
            exists
        } else {
            false
        };
        if !skip {
            out.push_str(line);
        }
    }
    (out, report)
}

/// Roles and tablespaces the target cluster already has.
pub async fn existing_globals(
    target: &SecretUrl,
) -> Result<
    (
        std::collections::HashSet<String>,
        std::collections::HashSet<String>,
    ),
    PgError,
> {
    let mut conn = pg::connect(target).await?;
    let read = async {
        let roles: Vec<String> = sqlx::query_scalar("SELECT rolname::text FROM pg_roles")
            .fetch_all(&mut conn)
            .await?;
        let spaces: Vec<String> = sqlx::query_scalar("SELECT spcname::text FROM pg_tablespace")
            .fetch_all(&mut conn)
            .await?;
        Ok::<_, sqlx::Error>((roles.into_iter().collect(), spaces.into_iter().collect()))
    }
    .await;
    let _ = sqlx::Connection::close(conn).await;
    read.map_err(|e| PgError::Sql {
        what: "reading the target's roles",
        target: target.redacted(),
        reason: pg::scrub(&e.to_string(), target),
    })
}

/// Runs `script` through `psql -v ON_ERROR_STOP=1` on `target` (in one transaction unless it
/// creates a tablespace, which cannot run inside one). Blocking.
pub fn run_psql_script(
    psql: &Path,
    target: &LibpqTarget,
    script: &[u8],
    killer: &crate::dump::Killer,
) -> Result<(), crate::dump::DumpError> {
    use crate::dump::DumpError;
    use std::io::Write;
    let tool = psql.display().to_string();
    let mut cmd = crate::child::command(psql);
    cmd.args(["-X", "-q", "-v", "ON_ERROR_STOP=1"]);
    if !String::from_utf8_lossy(script).contains("\nCREATE TABLESPACE ") {
        cmd.arg("--single-transaction");
    }
    target.apply(&mut cmd);
    cmd.arg("--file=-")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = crate::child::Running::spawn(&mut cmd).map_err(|source| DumpError::Spawn {
        tool: tool.clone(),
        source,
    })?;
    if let Err(reason) = killer.register_child(child.handle()) {
        return Err(DumpError::Stopped(reason));
    }
    let stderr = crate::dump::stderr_tail(child.child_mut().stderr.take());
    let fed = child
        .child_mut()
        .stdin
        .take()
        .map(|mut stdin| stdin.write_all(script));
    let status = child.wait();
    let stderr = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
    if let Some(reason) = killer.reason() {
        return Err(DumpError::Stopped(reason));
    }
    match status {
        Ok(s) if s.success() => match fed {
            Some(Err(source)) => Err(DumpError::Spawn { tool, source }),
            _ => Ok(()),
        },
        Ok(s) => Err(DumpError::Tool {
            tool,
            status: crate::dump::describe_status(s),
            stderr,
        }),
        Err(source) => Err(DumpError::Spawn { tool, source }),
    }
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
    fn globals_of_existing_roles_are_left_out() {
        let sql = "SET default_transaction_read_only = off;\n\
            CREATE ROLE postgres;\n\
            ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN;\n\
            CREATE ROLE \"app \"\"owner\"\"\";\n\
            ALTER ROLE \"app \"\"owner\"\"\" WITH NOSUPERUSER LOGIN;\n\
            ALTER ROLE postgres SET search_path TO app;\n\
            COMMENT ON ROLE postgres IS 'x';\n\
            CREATE TABLESPACE fast OWNER postgres LOCATION '/mnt/fast';\n\
            GRANT \"app \"\"owner\"\"\" TO postgres GRANTED BY postgres;\n";
        let roles = ["postgres".to_owned()].into();
        let spaces = ["fast".to_owned()].into();
        let (out, r) = filter_globals(sql, &roles, &spaces);
        assert_eq!(
            out,
            "SET default_transaction_read_only = off;\n\
             CREATE ROLE \"app \"\"owner\"\"\";\n\
             ALTER ROLE \"app \"\"owner\"\"\" WITH NOSUPERUSER LOGIN;\n\
             GRANT \"app \"\"owner\"\"\" TO postgres GRANTED BY postgres;\n"
        );
        assert_eq!(r.roles_created, vec!["app \"owner\"".to_owned()]);
        assert_eq!(r.roles_skipped, vec!["postgres".to_owned()]);
        assert_eq!(r.tablespaces_skipped, vec!["fast".to_owned()]);
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

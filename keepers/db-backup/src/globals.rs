//! The cluster globals at restore time (`restore --with-globals`): fetch and check the
//! artifact, decrypt and decompress it (bounded), leave out every statement about roles and
//! tablespaces the target already has, and apply the rest with `psql`.

use std::path::Path;

use anyhow::{Context, anyhow, bail};
use keeper_runtime::secret::SecretUrl;

use crate::app::App;
use crate::archive::Decrypt;
use crate::dump::Killer;
use crate::libpq::LibpqTarget;
use crate::manifest::Manifest;
use crate::pg::{self, PgError};
use crate::verify::run_blocking;

/// Removes a downloaded file when dropped.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        crate::store::local::LocalStore::remove_file(&self.0);
    }
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
    killer: &Killer,
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

/// Fetches the backup's globals (beside the archive, or from the bucket), checks their
/// SHA-256, and applies them to the target's cluster, skipping roles and tablespaces it has.
pub async fn apply(
    app: &App,
    archive: &Path,
    downloaded: bool,
    manifest: Option<&Manifest>,
    target: &SecretUrl,
    killer: &Killer,
) -> anyhow::Result<GlobalsReport> {
    let g = manifest
        .and_then(|m| m.globals.clone())
        .ok_or_else(|| {
            anyhow!(
                "--with-globals: this backup has no globals artifact (taken with BACKUP_GLOBALS=false, or without a manifest)"
            )
        })?;
    let local = archive.with_file_name(&g.file);
    let mut temp = None;
    let path = if !downloaded {
        local
    } else {
        let remote = app
            .remote
            .as_ref()
            .ok_or_else(|| anyhow!("remote backup without BACKUP_S3_URL"))?;
        let dest = app
            .local
            .dir()
            .join(format!(".{}.download-{}.tmp", g.file, std::process::id()));
        let fetched = remote.download_name(&g.file, &dest).await;
        temp = Some(RemoveOnDrop(dest.clone()));
        fetched?;
        dest
    };
    let sql = {
        let (path, sha) = (path.clone(), g.sha256.clone());
        let decrypt = Decrypt::new(manifest, app.settings.backup().age_identity_file.as_deref());
        run_blocking(move || -> anyhow::Result<Vec<u8>> {
            crate::archive::check_sha256(&path, &sha)?;
            let file = std::fs::File::open(&path)
                .with_context(|| format!("opening {}", path.display()))?;
            let file = decrypt.reader(file)?;
            let mut out = Vec::new();
            std::io::Read::read_to_end(
                &mut std::io::Read::take(
                    zstd::stream::read::Decoder::new(file)?,
                    MAX_GLOBALS_SQL_BYTES + 1,
                ),
                &mut out,
            )
            .with_context(|| format!("decompressing {}", path.display()))?;
            if out.len() as u64 > MAX_GLOBALS_SQL_BYTES {
                bail!(
                    "{} decompresses to more than 64 MiB; refusing",
                    path.display()
                );
            }
            Ok(out)
        })
        .await?
    };
    drop(temp);
    let (roles, spaces) = existing_globals(target).await?;
    let (script, report) = filter_globals(&String::from_utf8_lossy(&sql), &roles, &spaces);
    tracing::info!(
        created = report.roles_created.len(),
        skipped = report.roles_skipped.len(),
        "applying cluster globals"
    );
    let psql = crate::restore::psql_beside(&app.settings.pg_restore_path);
    let t = LibpqTarget::new(target)?;
    let killer = killer.clone();
    run_blocking(move || {
        run_psql_script(&psql, &t, script.as_bytes(), &killer).map_err(anyhow::Error::from)
    })
    .await
    .context("applying the cluster globals")?;
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

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
}

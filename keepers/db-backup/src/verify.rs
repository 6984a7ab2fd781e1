//! Checking an archive: `list` (checksum, full decompression, `pg_restore --list`) or `restore`
//! (checksum, restore into a scratch database, every table's row count against the manifest,
//! scratch database dropped whatever happened).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use keeper_runtime::secret::SecretUrl;
use sqlx::AssertSqlSafe;

use crate::archive::{self, ArchiveError, RestoreTo};
use crate::config::VerifyMode;
use crate::dump::Killer;
use crate::libpq::LibpqTarget;
use crate::manifest::{Manifest, RowDiff, Verification};
use crate::pg::{self, PgError};

/// Why a verification could not be carried out or did not pass.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    /// Reading, checksum or `pg_restore` failed.
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    /// The scratch server could not be used.
    #[error(transparent)]
    Pg(#[from] PgError),
    /// Restored row counts differ from the manifest.
    #[error("row counts differ from the manifest: {summary}")]
    Counts {
        /// The first differences, readable.
        summary: String,
        /// Every difference.
        diff: Vec<RowDiff>,
        /// Tables compared.
        tables: usize,
    },
    /// Nothing to verify against.
    #[error("{0}")]
    Setup(String),
}

/// Tools and places verification uses.
pub struct Verifier<'a> {
    /// `pg_restore` to run.
    pub pg_restore: &'a Path,
    /// Server for scratch databases (`BACKUP_VERIFY_DATABASE_URL`).
    pub scratch_server: Option<&'a SecretUrl>,
    /// Stops a running `pg_restore`.
    pub killer: &'a Killer,
    /// Identity for encrypted archives (`BACKUP_AGE_IDENTITY_FILE`, `--identity`).
    pub identity: Option<&'a Path>,
}

/// A verification that did not pass: why, and the record to keep of it.
#[derive(Debug)]
pub struct Failed {
    /// Why.
    pub error: VerifyError,
    /// `ok: false`, with duration and (for row count differences) the per-table diff.
    pub record: Verification,
}

/// What a passing check found.
struct Passed {
    detail: String,
    /// `restore`: tables compared.
    tables: Option<usize>,
}

impl Verifier<'_> {
    /// Verifies the archive at `path` against `manifest`, timing it; `Ok` carries the passing
    /// verification, `Err` the error and the failed one.
    pub async fn verify(
        &self,
        mode: VerifyMode,
        path: &Path,
        manifest: &Manifest,
    ) -> Result<Verification, Failed> {
        let started = std::time::Instant::now();
        let result = self.check(mode, path, manifest).await;
        let duration_seconds = Some(started.elapsed().as_secs_f64());
        let restore = mode == VerifyMode::Restore;
        match result {
            Ok(p) => Ok(Verification {
                mode,
                ok: true,
                at: chrono::Utc::now(),
                detail: p.detail,
                duration_seconds,
                tables_checked: p.tables,
                row_diff: restore.then(Vec::new),
            }),
            Err(error) => {
                let (tables_checked, row_diff) = match &error {
                    VerifyError::Counts { diff, tables, .. } => (Some(*tables), Some(diff.clone())),
                    _ => (None, None),
                };
                let record = Verification {
                    mode,
                    ok: false,
                    at: chrono::Utc::now(),
                    detail: error.to_string(),
                    duration_seconds,
                    tables_checked,
                    row_diff,
                };
                Err(Failed { error, record })
            }
        }
    }

    async fn check(
        &self,
        mode: VerifyMode,
        path: &Path,
        manifest: &Manifest,
    ) -> Result<Passed, VerifyError> {
        let size = run_blocking({
            let (p, sha) = (path.to_path_buf(), manifest.sha256.clone());
            move || archive::check_sha256(&p, &sha)
        })
        .await?;
        if size != manifest.size_bytes {
            return Err(VerifyError::Setup(format!(
                "{} has {size} bytes, the manifest says {}",
                path.display(),
                manifest.size_bytes
            )));
        }
        let decrypt = archive::Decrypt::new(Some(manifest), self.identity);
        let detail = match mode {
            VerifyMode::None => "checksum matches".to_owned(),
            VerifyMode::List if decrypt.encrypted_for.is_some() && decrypt.identity.is_none() => {
                // The daemon may hold only the public keys: it can vouch for the bytes it
                // wrote, not read them back.
                "checksum matches; encrypted, contents not checked (no BACKUP_AGE_IDENTITY_FILE)"
                    .to_owned()
            }
            VerifyMode::List => {
                let entries = self.restore_blocking(path, &decrypt, None).await?;
                if entries == 0 {
                    return Err(VerifyError::Setup(format!(
                        "{}: pg_restore --list shows an empty table of contents",
                        path.display()
                    )));
                }
                format!("checksum matches; archive decompresses; {entries} TOC entries")
            }
            VerifyMode::Restore => return self.scratch_restore(path, manifest, &decrypt).await,
        };
        Ok(Passed {
            detail,
            tables: None,
        })
    }

    async fn restore_blocking(
        &self,
        path: &Path,
        decrypt: &archive::Decrypt,
        target: Option<LibpqTarget>,
    ) -> Result<usize, ArchiveError> {
        let tool = self.pg_restore.to_path_buf();
        let path: PathBuf = path.to_path_buf();
        let killer = self.killer.clone();
        let decrypt = decrypt.clone();
        run_blocking(move || {
            let to = match &target {
                None => RestoreTo::List,
                Some(t) => RestoreTo::Database {
                    target: t,
                    no_owner: true,
                },
            };
            archive::pg_restore(&tool, (&path, &decrypt), to, &killer)
        })
        .await
    }

    async fn scratch_restore(
        &self,
        path: &Path,
        manifest: &Manifest,
        decrypt: &archive::Decrypt,
    ) -> Result<Passed, VerifyError> {
        let server = self.scratch_server.ok_or_else(|| {
            VerifyError::Setup(
                "verify mode restore needs BACKUP_VERIFY_DATABASE_URL (a server where the job may CREATE DATABASE)"
                    .into(),
            )
        })?;
        let scratch = format!(
            "db_backup_verify_{}_{}",
            std::process::id(),
            chrono::Utc::now().timestamp_millis()
        );
        let mut admin = pg::connect(server).await?;
        let create = format!("CREATE DATABASE {}", pg::quote_ident(&scratch));
        sqlx::raw_sql(AssertSqlSafe(create))
            .execute(&mut admin)
            .await
            .map_err(|e| PgError::Sql {
                what: "creating the scratch database",
                target: server.redacted(),
                reason: pg::scrub(&e.to_string(), server),
            })?;
        let scratch_url = pg::with_database(server, &scratch);
        let result = self
            .restore_and_count(path, manifest, decrypt, &scratch_url)
            .await;
        // Whatever happened, the scratch database goes.
        let drop_sql = format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            pg::quote_ident(&scratch)
        );
        if let Err(e) = sqlx::raw_sql(AssertSqlSafe(drop_sql))
            .execute(&mut admin)
            .await
        {
            tracing::error!(database = %scratch, error = %pg::scrub(&e.to_string(), server), "cannot drop the scratch database; drop it by hand");
        }
        let _ = sqlx::Connection::close(admin).await;
        result
    }

    async fn restore_and_count(
        &self,
        path: &Path,
        manifest: &Manifest,
        decrypt: &archive::Decrypt,
        scratch_url: &SecretUrl,
    ) -> Result<Passed, VerifyError> {
        self.restore_blocking(
            path,
            decrypt,
            Some(LibpqTarget::new(scratch_url).map_err(PgError::from)?),
        )
        .await?;
        let mut conn = pg::connect(scratch_url).await?;
        let counts = pg::row_counts(&mut conn, scratch_url).await;
        let _ = sqlx::Connection::close(conn).await;
        let counts = counts?;
        compare_counts(&manifest.row_counts, &counts)?;
        let rows: i64 = counts.values().sum();
        Ok(Passed {
            detail: format!(
                "checksum matches; restored into a scratch database; {} tables, {rows} rows, counts equal to the manifest",
                counts.len()
            ),
            tables: Some(counts.len()),
        })
    }
}

/// Every table whose count differs between the manifest (`expected`) and a restore.
pub fn row_diff(expected: &BTreeMap<String, i64>, actual: &BTreeMap<String, i64>) -> Vec<RowDiff> {
    let mut diff: Vec<RowDiff> = expected
        .iter()
        .filter(|(t, n)| actual.get(*t) != Some(*n))
        .map(|(t, n)| RowDiff {
            table: t.clone(),
            manifest_rows: Some(*n),
            restored_rows: actual.get(t).copied(),
        })
        .collect();
    diff.extend(
        actual
            .iter()
            .filter(|(t, _)| !expected.contains_key(*t))
            .map(|(t, n)| RowDiff {
                table: t.clone(),
                manifest_rows: None,
                restored_rows: Some(*n),
            }),
    );
    diff
}

/// Fails with a readable list of differences (and all of them) unless both maps are equal.
pub fn compare_counts(
    expected: &BTreeMap<String, i64>,
    actual: &BTreeMap<String, i64>,
) -> Result<(), VerifyError> {
    let diff = row_diff(expected, actual);
    if diff.is_empty() {
        return Ok(());
    }
    let mut lines: Vec<String> = diff
        .iter()
        .take(10)
        .map(|d| match (d.manifest_rows, d.restored_rows) {
            (Some(n), Some(m)) => format!("{}: {m} rows, expected {n}", d.table),
            (Some(_), None) => format!("{}: missing", d.table),
            _ => format!("{}: not in the manifest", d.table),
        })
        .collect();
    if diff.len() > 10 {
        lines.push(format!("and {} more", diff.len() - 10));
    }
    Err(VerifyError::Counts {
        summary: lines.join("; "),
        tables: expected.len().max(actual.len()),
        diff,
    })
}

/// Runs blocking work on the blocking pool; a panic there becomes an I/O error, not a crash.
pub async fn run_blocking<T, E>(f: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, E>
where
    T: Send + 'static,
    E: From<ArchiveError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => r,
        Err(e) => Err(E::from(ArchiveError::Io {
            path: PathBuf::from("(worker thread)"),
            source: std::io::Error::other(e.to_string()),
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn count_differences_are_listed() {
        let m = |pairs: &[(&str, i64)]| -> BTreeMap<String, i64> {
            pairs.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect()
        };
        assert!(compare_counts(&m(&[("a", 1)]), &m(&[("a", 1)])).is_ok());
        let e = compare_counts(&m(&[("a", 1), ("b", 2)]), &m(&[("a", 3), ("c", 0)])).unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("a: 3 rows, expected 1")
                && s.contains("b: missing")
                && s.contains("c: not in the manifest"),
            "{s}"
        );
    }
}

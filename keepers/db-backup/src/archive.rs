//! Reading a backup back: the checksum pass, and decompressing into `pg_restore`.
//!
//! Both are streaming and blocking (run them on a blocking thread). A restore only starts after
//! the checksum pass has matched, so not one byte of a corrupt archive reaches the target.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;

use sha2::{Digest, Sha256};

use crate::child::{self, Running};
use crate::dump::{DumpError, Killer, describe_status};
use crate::libpq::LibpqTarget;

const READ_BUF: usize = 1 << 20;

/// Why reading a backup failed.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// The file's digest is not the recorded one.
    #[error("checksum mismatch for {}: expected {expected}, file has {actual}", path.display())]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// From the manifest/sidecar.
        expected: String,
        /// Computed.
        actual: String,
    },
    /// The file could not be read.
    #[error("reading {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The archive does not decompress (truncated or not zstd).
    #[error("decompressing {}: {source}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// zstd's complaint.
        source: io::Error,
    },
    /// `pg_restore` failed.
    #[error(transparent)]
    Tool(#[from] DumpError),
    /// The archive is encrypted and cannot be decrypted with what was given.
    #[error(transparent)]
    Crypt(#[from] crate::crypt::CryptError),
}

/// How to read an archive that may be age-encrypted.
#[derive(Debug, Clone, Default)]
pub struct Decrypt {
    /// The recipients' fingerprints when the archive is encrypted (from its manifest).
    pub encrypted_for: Option<Vec<String>>,
    /// The identity file to decrypt with.
    pub identity: Option<PathBuf>,
}

impl Decrypt {
    /// For the archive `manifest` describes, with `identity`.
    pub fn new(manifest: Option<&crate::manifest::Manifest>, identity: Option<&Path>) -> Self {
        Self {
            encrypted_for: manifest.and_then(|m| m.encrypted_for().map(<[String]>::to_vec)),
            identity: identity.map(Path::to_path_buf),
        }
    }

    /// Also treats the archive as encrypted when its name says so (`….age`) though there is no
    /// manifest to name the recipients (a loose file restored with its sidecar).
    pub fn or_by_name(mut self, path: &Path) -> Self {
        let named = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(crate::manifest::AGE_SUFFIX));
        if named && self.encrypted_for.is_none() {
            self.encrypted_for = Some(vec!["(recipients unknown: no manifest)".into()]);
        }
        self
    }

    /// `input` decrypted if needed.
    pub fn reader<'a, R: Read + 'a>(&self, input: R) -> Result<Box<dyn Read + 'a>, ArchiveError> {
        Ok(crate::crypt::reader(
            input,
            self.encrypted_for.as_deref(),
            self.identity.as_deref(),
        )?)
    }
}

/// Hex SHA-256 and size of a file, streamed.
pub fn sha256_file(path: &Path) -> Result<(String, u64), ArchiveError> {
    let io_err = |source| ArchiveError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = File::open(path).map_err(io_err)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; READ_BUF];
    let mut n_total = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err(e)),
        };
        h.update(&buf[..n]);
        n_total += n as u64;
    }
    Ok((hex::encode(h.finalize()), n_total))
}

/// Fails unless the file's digest is `expected`.
pub fn check_sha256(path: &Path, expected: &str) -> Result<u64, ArchiveError> {
    let (actual, size) = sha256_file(path)?;
    if !actual.eq_ignore_ascii_case(expected) {
        return Err(ArchiveError::Mismatch {
            path: path.to_path_buf(),
            expected: expected.to_owned(),
            actual,
        });
    }
    Ok(size)
}

/// What to run on the decompressed archive.
pub enum RestoreTo<'a> {
    /// `pg_restore --list`: reads the table of contents; returns the number of entries.
    List,
    /// `pg_restore` into a database.
    Database {
        /// Where.
        target: &'a LibpqTarget,
        /// Skip ownership (scratch restores, where the roles may not exist).
        no_owner: bool,
    },
}

/// Decompresses `path` into `pg_restore` (stdin) and returns the number of table-of-contents
/// entries it printed (`--list`; 0 for a restore).
/// The whole archive is always decompressed, so a truncated or corrupt tail is noticed even when
/// `pg_restore --list` stops reading after the table of contents.
pub fn pg_restore(
    pg_restore: &Path,
    (path, decrypt): (&Path, &Decrypt),
    to: RestoreTo<'_>,
    killer: &Killer,
) -> Result<usize, ArchiveError> {
    let tool = pg_restore.display().to_string();
    let mut cmd = child::command(pg_restore);
    match &to {
        RestoreTo::List => {
            cmd.arg("--list");
        }
        RestoreTo::Database { target, no_owner } => {
            cmd.args(["--exit-on-error", "--single-transaction"]);
            if *no_owner {
                cmd.args(["--no-owner", "--no-privileges"]);
            }
            target.apply(&mut cmd);
        }
    }
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = Running::spawn(&mut cmd).map_err(|source| DumpError::Spawn {
        tool: tool.clone(),
        source,
    })?;
    let stdin = child.child_mut().stdin.take();
    let stdout = child.child_mut().stdout.take();
    let stderr = child.child_mut().stderr.take();
    // stdout is only ever the table of contents: counted line by line, never held whole.
    let out_thread = std::thread::spawn(move || {
        let Some(o) = stdout else { return 0usize };
        io::BufRead::split(io::BufReader::new(o), b'\n')
            .map_while(Result::ok)
            .filter(|l| !l.starts_with(b";") && !l.trim_ascii().is_empty())
            .count()
    });
    let err_thread = crate::dump::stderr_tail(stderr);
    if let Err(reason) = killer.register_child(child.handle()) {
        drop(child);
        return Err(DumpError::Stopped(reason).into());
    }

    let fed = feed(path, decrypt, stdin);
    if fed.is_err() {
        child.kill();
    }
    let status = child.wait();
    let entries = out_thread.join().unwrap_or_default();
    let stderr_tail = err_thread.and_then(|h| h.join().ok()).unwrap_or_default();
    fed?;
    match status {
        Ok(s) if s.success() => Ok(entries),
        Ok(s) => Err(DumpError::Tool {
            tool,
            status: describe_status(s),
            stderr: stderr_tail,
        }
        .into()),
        Err(source) => Err(DumpError::Spawn { tool, source }.into()),
    }
}

/// A restore that commits only after a check ran inside its transaction.
pub struct CheckedRestore<'a> {
    /// `pg_restore`, which turns the archive into SQL.
    pub pg_restore: &'a Path,
    /// `psql`, which runs that SQL in one transaction.
    pub psql: &'a Path,
    /// Where.
    pub target: &'a LibpqTarget,
    /// `--no-owner --no-privileges`.
    pub no_owner: bool,
    /// `--clean --if-exists`: drop the archive's objects first.
    pub clean: bool,
    /// SQL run after the restore, before `COMMIT`; an error in it rolls everything back.
    pub check_sql: Option<String>,
}

/// Decompresses `path` into `pg_restore -f -`, whose SQL goes straight into
/// `psql --single-transaction -v ON_ERROR_STOP=1`, followed by the check: nothing is committed
/// unless every statement and the check succeed. (`pg_restore --single-transaction` commits on
/// its own, before anyone could look at the result.)
pub fn restore_checked(
    r: &CheckedRestore<'_>,
    (path, decrypt): (&Path, &Decrypt),
    killer: &Killer,
) -> Result<(), ArchiveError> {
    let mut dump = child::command(r.pg_restore);
    dump.args(["--file=-"]);
    if r.no_owner {
        dump.args(["--no-owner", "--no-privileges"]);
    }
    if r.clean {
        dump.args(["--clean", "--if-exists"]);
    }
    dump.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let restore_tool = r.pg_restore.display().to_string();
    let mut restore = Running::spawn(&mut dump).map_err(|source| DumpError::Spawn {
        tool: restore_tool.clone(),
        source,
    })?;
    if let Err(reason) = killer.register_child(restore.handle()) {
        return Err(DumpError::Stopped(reason).into());
    }
    let sql = restore.child_mut().stdout.take();
    let restore_err = crate::dump::stderr_tail(restore.child_mut().stderr.take());
    let stdin = restore.child_mut().stdin.take();

    let psql_tool = r.psql.display().to_string();
    let mut run = child::command(r.psql);
    run.args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "--single-transaction"]);
    r.target.apply(&mut run);
    run.arg("--file=-");
    if let Some(check) = &r.check_sql {
        run.arg(format!("--command={check}"));
    }
    run.stdin(sql.map(Stdio::from).unwrap_or_else(Stdio::null))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut psql = Running::spawn(&mut run).map_err(|source| DumpError::Spawn {
        tool: psql_tool.clone(),
        source,
    })?;
    if let Err(reason) = killer.register_child(psql.handle()) {
        return Err(DumpError::Stopped(reason).into());
    }
    let psql_err = crate::dump::stderr_tail(psql.child_mut().stderr.take());
    // `run` (and its copy of pg_restore's stdout) must go, or psql never sees end of input.
    drop(run);

    let fed = feed(path, decrypt, stdin);
    if fed.is_err() {
        restore.kill();
        psql.kill();
    }
    let restore_status = restore.wait();
    let psql_status = psql.wait();
    let restore_err = restore_err.and_then(|h| h.join().ok()).unwrap_or_default();
    let psql_err = psql_err.and_then(|h| h.join().ok()).unwrap_or_default();
    if let Some(reason) = killer.reason() {
        return Err(DumpError::Stopped(reason).into());
    }
    fed?;
    let failed =
        |tool: String, status: io::Result<std::process::ExitStatus>, stderr: String| match status {
            Ok(s) if s.success() => None,
            Ok(s) => Some(DumpError::Tool {
                tool,
                status: describe_status(s),
                stderr,
            }),
            Err(source) => Some(DumpError::Spawn { tool, source }),
        };
    // psql's complaint (the failing statement, the check's message) is the one that matters;
    // pg_restore usually only failed because psql stopped reading.
    if let Some(e) = failed(psql_tool, psql_status, psql_err) {
        return Err(e.into());
    }
    if let Some(e) = failed(restore_tool, restore_status, restore_err) {
        return Err(e.into());
    }
    Ok(())
}

/// Decompresses the file into `stdin`; once the reader has closed its end (EPIPE), the rest is
/// still decompressed into nothing so corruption anywhere is found.
fn feed(
    path: &Path,
    decrypt: &Decrypt,
    stdin: Option<std::process::ChildStdin>,
) -> Result<(), ArchiveError> {
    let file = File::open(path).map_err(|source| ArchiveError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let plain = decrypt.reader(file)?;
    let mut dec =
        zstd::stream::read::Decoder::new(plain).map_err(|source| ArchiveError::Corrupt {
            path: path.to_path_buf(),
            source,
        })?;
    let mut sink: Option<std::process::ChildStdin> = stdin;
    let mut buf = vec![0u8; READ_BUF];
    loop {
        let n = match dec.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(ArchiveError::Corrupt {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        if let Some(s) = sink.as_mut()
            && let Err(e) = s.write_all(&buf[..n])
        {
            if e.kind() == io::ErrorKind::BrokenPipe {
                // The reader is done (`--list`) or died; its exit status decides which.
                sink = None;
            } else {
                return Err(ArchiveError::Io {
                    path: path.to_path_buf(),
                    source: e,
                });
            }
        }
    }
    // Dropping stdin sends EOF.
    drop(sink);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_mismatch_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, b"hello").unwrap();
        let good = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
        assert_eq!(check_sha256(&p, good).unwrap(), 5);
        let e = check_sha256(&p, &"0".repeat(64)).unwrap_err();
        assert!(matches!(e, ArchiveError::Mismatch { .. }), "{e}");
    }
}

//! The one streaming pass: `pg_dump` stdout → zstd (worker threads) → SHA-256 → temp file.
//!
//! Memory is bounded by a fixed read buffer and zstd's job buffers (set by level and worker
//! count), never by the database size. Runs on a blocking thread; [`Killer`] lets the async side
//! stop `pg_dump` (shutdown, timeout) so the pass ends with an error instead of hanging.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use sha2::{Digest, Sha256};

use crate::child::{self, GroupHandle, Running};
use crate::crypt::{Recipients, Sink, parse_recipients};
use crate::libpq::LibpqTarget;

/// Size of each read from `pg_dump`'s pipe.
const READ_BUF: usize = 1 << 20;
/// zstd job size: bounds the per-worker buffers (default would be 4× the window).
const ZSTD_JOB_SIZE: u32 = 4 << 20;
/// How much of a tool's stderr is kept for the error message.
const STDERR_KEEP: usize = 4096;

/// Why the dump pass failed.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// A file operation failed (disk full shows up here).
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// The step.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The tool could not start.
    #[error("cannot start {tool}: {source}")]
    Spawn {
        /// Path of the tool.
        tool: String,
        /// The OS error.
        source: io::Error,
    },
    /// The tool ran and failed.
    #[error("{tool} failed ({status}): {stderr}")]
    Tool {
        /// Path of the tool.
        tool: String,
        /// How it ended.
        status: String,
        /// The end of what it printed on stderr.
        stderr: String,
    },
    /// `pg_dump` gave up queueing for a table lock that another session holds.
    #[error(
        "pg_dump could not lock table {table} within {seconds} s (BACKUP_LOCK_WAIT_TIMEOUT): another session holds a conflicting lock (an ALTER, TRUNCATE, VACUUM FULL or explicit LOCK); nothing was written"
    )]
    LockTimeout {
        /// The table, as pg_dump names it (`schema.table`).
        table: String,
        /// The limit that ran out.
        seconds: u64,
    },
    /// Compression failed.
    #[error("zstd: {0}")]
    Zstd(io::Error),
    /// Stopped on request (shutdown).
    #[error("dump stopped: {0}")]
    Stopped(String),
}

/// Lets another thread (or task) stop a run: kills the running child and remembers why, and
/// wakes async steps waiting in [`Killer::cancelled`].
#[derive(Clone)]
pub struct Killer {
    inner: Arc<Mutex<KillerState>>,
    signal: tokio::sync::watch::Sender<bool>,
}

impl Default for Killer {
    fn default() -> Self {
        Self {
            inner: Arc::default(),
            signal: tokio::sync::watch::Sender::new(false),
        }
    }
}

#[derive(Default)]
struct KillerState {
    children: Vec<GroupHandle>,
    reason: Option<String>,
}

impl Killer {
    /// Kills the child's process group now, or as soon as it starts.
    pub fn kill(&self, reason: &str) {
        let mut st = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if st.reason.is_none() {
            st.reason = Some(reason.to_owned());
        }
        for child in &st.children {
            child.kill();
        }
        drop(st);
        self.signal.send_replace(true);
    }

    /// Resolves once [`Killer::kill`] was called (at once if it already was).
    pub async fn cancelled(&self) {
        let mut rx = self.signal.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|k| *k).await;
    }

    pub(crate) fn register_child(&self, child: GroupHandle) -> Result<(), String> {
        let mut st = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = &st.reason {
            child.kill();
            return Err(r.clone());
        }
        st.children.retain(GroupHandle::is_live);
        st.children.push(child);
        Ok(())
    }

    /// Why the run was stopped, if it was.
    pub fn reason(&self) -> Option<String> {
        self.inner
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .reason
            .clone()
    }
}

/// A writer that hashes and counts what passes through it.
pub struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    bytes: u64,
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            bytes: 0,
        }
    }

    /// The inner writer, the hex digest and the byte count.
    pub fn finish(self) -> (W, String, u64) {
        (self.inner, hex::encode(self.hasher.finalize()), self.bytes)
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// What the pass produced.
#[derive(Debug, Clone)]
pub struct DumpOutput {
    /// Bytes written to the file.
    pub size: u64,
    /// Bytes `pg_dump` produced.
    pub dump_bytes: u64,
    /// Hex SHA-256 of the file.
    pub sha256: String,
}

/// How to run the dump.
pub struct DumpSpec {
    /// `pg_dump` to run.
    pub pg_dump: PathBuf,
    /// Where it connects.
    pub target: LibpqTarget,
    /// Exported snapshot to import.
    pub snapshot: String,
    /// zstd level.
    pub level: i32,
    /// zstd workers.
    pub threads: u32,
    /// `--lock-wait-timeout`: how long pg_dump may queue for a table lock.
    pub lock_wait_timeout_seconds: u64,
    /// The server checks that pg_dump is still connected while it runs a query
    /// (PostgreSQL 14+): a backend whose pg_dump was killed while it queued for a lock would
    /// otherwise stay in that queue, and everyone behind it, until the lock wait ends.
    pub check_client_connection: bool,
    /// `BACKUP_AGE_RECIPIENTS` (public keys); empty: not encrypted.
    pub age_recipients: Vec<String>,
}

/// Collects the tail of a child's stderr on a thread.
pub(crate) fn stderr_tail(stream: Option<std::process::ChildStderr>) -> Option<JoinHandle<String>> {
    let mut stream = stream?;
    Some(std::thread::spawn(move || {
        let mut keep: Vec<u8> = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            keep.extend_from_slice(&buf[..n]);
            if keep.len() > 2 * STDERR_KEEP {
                keep.drain(..keep.len() - STDERR_KEEP);
            }
        }
        let start = keep.len().saturating_sub(STDERR_KEEP);
        String::from_utf8_lossy(&keep[start..]).trim().to_owned()
    }))
}

/// Describes an exit status (`exit status 1`, `signal 9`).
pub fn describe_status(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit status {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => status.to_string(),
    }
}

/// Runs `pg_dump` into `tmp` (created new; the caller removes it on error), fsyncs it, and
/// returns size and digest. Blocking.
pub fn dump_to_file(spec: &DumpSpec, tmp: &Path, killer: &Killer) -> Result<DumpOutput, DumpError> {
    let mut cmd = child::command(&spec.pg_dump);
    cmd.args(["--format=custom", "--compress=0"])
        .arg(format!("--snapshot={}", spec.snapshot))
        .arg(format!(
            "--lock-wait-timeout={}s",
            spec.lock_wait_timeout_seconds
        ));
    spec.target.apply(&mut cmd);
    if spec.check_client_connection {
        let mut options = std::env::var_os("PGOPTIONS").unwrap_or_default();
        options.push(" -c client_connection_check_interval=2000");
        cmd.env("PGOPTIONS", options);
    }
    let tool = spec.pg_dump.display().to_string();
    let recipients =
        parse_recipients(&spec.age_recipients).map_err(|e| DumpError::Stopped(e.to_string()))?;
    match produce(
        cmd,
        tool,
        tmp,
        (spec.level, spec.threads),
        &recipients,
        killer,
    ) {
        Err(DumpError::Tool { stderr, .. }) if stderr.contains("lock timeout") => {
            Err(DumpError::LockTimeout {
                table: locked_table(&stderr).unwrap_or_else(|| "(not named by pg_dump)".into()),
                seconds: spec.lock_wait_timeout_seconds,
            })
        }
        other => other,
    }
}

/// How to take the cluster globals.
pub struct GlobalsSpec {
    /// `pg_dumpall` to run.
    pub pg_dumpall: PathBuf,
    /// Where it connects.
    pub target: LibpqTarget,
    /// Include role password hashes (needs a superuser: they are read from `pg_authid`).
    pub role_passwords: bool,
    /// zstd level.
    pub level: i32,
    /// `BACKUP_AGE_RECIPIENTS` (public keys); empty: not encrypted.
    pub age_recipients: Vec<String>,
}

/// Runs `pg_dumpall --globals-only` into `tmp` through zstd and SHA-256. Blocking.
pub fn globals_to_file(
    spec: &GlobalsSpec,
    tmp: &Path,
    killer: &Killer,
) -> Result<DumpOutput, DumpError> {
    let mut cmd = child::command(&spec.pg_dumpall);
    cmd.arg("--globals-only");
    if !spec.role_passwords {
        cmd.arg("--no-role-passwords");
    }
    spec.target.apply(&mut cmd);
    let tool = spec.pg_dumpall.display().to_string();
    let recipients =
        parse_recipients(&spec.age_recipients).map_err(|e| DumpError::Stopped(e.to_string()))?;
    produce(cmd, tool, tmp, (spec.level, 0), &recipients, killer)
}

/// Runs `cmd`, streaming its stdout through zstd and SHA-256 into `tmp` (created new; the
/// caller removes it on error), fsyncs, and returns size and digest.
fn produce(
    mut cmd: std::process::Command,
    tool: String,
    tmp: &Path,
    (level, threads): (i32, u32),
    recipients: &Recipients,
    killer: &Killer,
) -> Result<DumpOutput, DumpError> {
    let io_err = |what: &'static str| {
        let path = tmp.to_path_buf();
        move |source| DumpError::Io { what, path, source }
    };
    let file = File::options()
        .write(true)
        .create_new(true)
        .open(tmp)
        .map_err(io_err("creating"))?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = Running::spawn(&mut cmd).map_err(|source| DumpError::Spawn {
        tool: tool.clone(),
        source,
    })?;
    let stdout = child.child_mut().stdout.take();
    let stderr = stderr_tail(child.child_mut().stderr.take());
    if let Err(reason) = killer.register_child(child.handle()) {
        let _ = child.wait();
        return Err(DumpError::Stopped(reason));
    }

    let pumped = match stdout {
        Some(out) => compress(out, file, level, threads, recipients, tmp),
        None => Err(DumpError::Stopped(format!("{tool} has no stdout"))),
    };
    if pumped.is_err() {
        child.kill();
    }
    let status = child.wait();
    let stderr = stderr.and_then(|h| h.join().ok()).unwrap_or_default();
    if let Some(reason) = killer.reason() {
        return Err(DumpError::Stopped(reason));
    }
    // Our side failing (a write error: disk full) is the cause; the tool was killed for it.
    let out = pumped?;
    match status {
        Ok(s) if s.success() => Ok(out),
        Ok(s) => Err(DumpError::Tool {
            tool,
            status: describe_status(s),
            stderr,
        }),
        Err(source) => Err(DumpError::Spawn { tool, source }),
    }
}

/// The table in pg_dump's `Query was: LOCK TABLE schema.t IN ACCESS SHARE MODE` detail line.
fn locked_table(stderr: &str) -> Option<String> {
    let after = &stderr[stderr.rfind("LOCK TABLE ")? + "LOCK TABLE ".len()..];
    let end = after.find(" IN ")?;
    Some(after[..end].trim().to_owned())
}

/// Reads `input` to its end through zstd and SHA-256 into `file`, then fsyncs.
fn compress(
    mut input: impl Read,
    file: File,
    level: i32,
    threads: u32,
    recipients: &Recipients,
    path: &Path,
) -> Result<DumpOutput, DumpError> {
    let io_err = |what: &'static str| {
        let path = path.to_path_buf();
        move |source| DumpError::Io { what, path, source }
    };
    // zstd → age (when recipients are set) → SHA-256 → file: the digest covers what is stored.
    let sink = Sink::new(HashingWriter::new(file), recipients)
        .map_err(|e| DumpError::Stopped(e.to_string()))?;
    let mut enc = zstd::stream::write::Encoder::new(sink, level).map_err(DumpError::Zstd)?;
    enc.include_checksum(true).map_err(DumpError::Zstd)?;
    if threads > 0 {
        enc.multithread(threads).map_err(DumpError::Zstd)?;
        enc.set_parameter(zstd::zstd_safe::CParameter::JobSize(ZSTD_JOB_SIZE))
            .map_err(DumpError::Zstd)?;
    }
    let mut buf = vec![0u8; READ_BUF];
    let mut dump_bytes = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_err("reading pg_dump output for")(e)),
        };
        dump_bytes += n as u64;
        enc.write_all(&buf[..n]).map_err(io_err("writing"))?;
    }
    let sink = enc.finish().map_err(io_err("finishing"))?;
    let hashing = sink.finish().map_err(io_err("finishing encryption of"))?;
    let (file, sha256, size) = hashing.finish();
    file.sync_all().map_err(io_err("syncing"))?;
    Ok(DumpOutput {
        size,
        dump_bytes,
        sha256,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_locked_table_is_read_from_pg_dump_stderr() {
        let e = "pg_dump: error: query failed: ERROR:  canceling statement due to lock timeout\n\
                 pg_dump: detail: Query was: LOCK TABLE \"My Schema\".t IN ACCESS SHARE MODE";
        assert_eq!(locked_table(e).as_deref(), Some("\"My Schema\".t"));
        assert_eq!(locked_table("pg_dump: error: connection failed"), None);
    }

    #[test]
    fn compress_round_trips_and_hashes_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.zst");
        let data: Vec<u8> = (0..3_000_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        let file = File::create(&path).unwrap();
        let none = crate::crypt::parse_recipients(&[]).unwrap();
        let out = compress(&data[..], file, 3, 2, &none, &path).unwrap();
        let on_disk = std::fs::read(&path).unwrap();
        assert_eq!(out.size, on_disk.len() as u64);
        assert_eq!(out.dump_bytes, data.len() as u64);
        assert_eq!(out.sha256, hex::encode(Sha256::digest(&on_disk)));
        assert_eq!(zstd::decode_all(&on_disk[..]).unwrap(), data);
    }
}

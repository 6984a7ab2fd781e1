//! Driving the `runner_probe` binary (a real process running the shared `Runner`) from tests:
//! follow its stdout event lines, keep its stderr logs, signal it, wait for its exit.

use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// A command for the probe at `bin` (pass `env!("CARGO_BIN_EXE_runner_probe")`), with a clean
/// environment: JSON logs at `info` on stderr, nothing inherited but `PATH`.
pub fn command(bin: &str) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env_clear();
    if let Ok(path) = std::env::var("PATH") {
        cmd.env("PATH", path);
    }
    cmd.env("RUST_LOG", "info").env("LOG_FORMAT", "json");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// A running probe.
pub struct Probe {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
}

impl Probe {
    /// Spawns `cmd` (built with [`command`]).
    pub fn spawn(mut cmd: Command) -> Probe {
        let mut child = cmd.spawn().expect("spawn runner_probe");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr_pipe = child.stderr.take().expect("piped stderr");
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let sink = stderr.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr_pipe.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Probe {
            child,
            lines,
            seen: Vec::new(),
            stderr,
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("probe still running")
    }

    /// Waits for the next stdout line starting with `prefix` (earlier lines are kept in
    /// [`Probe::seen`]); panics with everything seen so far after `timeout`.
    pub async fn line(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.lines.recv()).await {
                Ok(Some(line)) => {
                    self.seen.push(line.clone());
                    if line.starts_with(prefix) {
                        return line;
                    }
                }
                Ok(None) | Err(_) => panic!(
                    "no stdout line starting with {prefix:?} within {timeout:?}; stdout so far: {:?}\nstderr: {}",
                    self.seen,
                    self.stderr()
                ),
            }
        }
    }

    /// Every stdout line read so far (call [`Probe::drain`] first to read the rest).
    pub fn seen(&self) -> &[String] {
        &self.seen
    }

    /// Reads the remaining stdout lines (after the process exited).
    pub async fn drain(&mut self) {
        while let Ok(Some(line)) =
            tokio::time::timeout(Duration::from_secs(2), self.lines.recv()).await
        {
            self.seen.push(line);
        }
    }

    /// stderr so far (the JSON log lines).
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// The JSON log events on stderr whose `message` is `message`.
    pub fn log_events(&self, message: &str) -> Vec<serde_json::Value> {
        self.stderr()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["message"] == message)
            .collect()
    }

    /// Sends a signal (`TERM`, `INT`, `KILL`) with kill(1).
    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill")
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for the exit, panicking after `timeout` (the process is killed on drop).
    pub async fn wait(&mut self, timeout: Duration) -> ExitStatus {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => status.expect("wait for runner_probe"),
            Err(_) => panic!(
                "runner_probe did not exit within {timeout:?}; stdout: {:?}\nstderr: {}",
                self.seen,
                self.stderr()
            ),
        }
    }
}

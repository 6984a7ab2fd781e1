//! Running the real keeper binaries as child processes.

use std::path::PathBuf;
use std::process::{Command, Output};

/// Path of a workspace binary (`scripts/test.sh` builds them before the tests run).
pub fn bin_path(name: &str) -> PathBuf {
    // A test executable lives in target/<profile>/deps/, binaries one level up; a benchmark
    // binary next to them.
    let exe = std::env::current_exe().expect("test executable path");
    let parent = exe.parent().expect("executable dir");
    let dir = if parent.ends_with("deps") {
        parent.parent().expect("target profile dir")
    } else {
        parent
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} not built: run `cargo build --workspace --bins` (scripts/test.sh does)",
        path.display()
    );
    path
}

/// A command for a keeper binary with a clean environment: only PATH and HOME are inherited,
/// so a developer's own `DATABASE_URL` or `KEEPER_MNEMONIC` never leaks into a test.
pub fn keeper(name: &str) -> Command {
    let mut cmd = Command::new(bin_path(name));
    cmd.env_clear();
    for var in ["PATH", "HOME"] {
        if let Ok(v) = std::env::var(var) {
            cmd.env(var, v);
        }
    }
    cmd.env("LOG_FORMAT", "json").env("RUST_LOG", "warn");
    cmd
}

/// Like [`keeper`], for tokio: only PATH and HOME inherited, killed when dropped (a failed test
/// leaves no keeper behind). The caller adds the environment and arguments.
pub fn keeper_command(name: &str) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(bin_path(name));
    cmd.env_clear();
    for var in ["PATH", "HOME"] {
        if let Ok(v) = std::env::var(var) {
            cmd.env(var, v);
        }
    }
    cmd.kill_on_drop(true);
    cmd
}

/// Starts `cmd` as a daemon with stdout discarded and stderr (its logs) in `<tmp>/<tag>.log`,
/// kept for post-mortems.
pub fn spawn_logged(mut cmd: tokio::process::Command, tag: &str) -> tokio::process::Child {
    let log = std::env::temp_dir().join(format!("{tag}.log"));
    let file = std::fs::File::create(&log).expect("log file");
    eprintln!("keeper log: {}", log.display());
    cmd.stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::from(file))
        .spawn()
        .expect("spawn the keeper")
}

/// Scrapes `/metrics` of the ops server at `addr` (empty when it does not answer).
pub async fn scrape_metrics(addr: &str) -> String {
    let url = format!("http://{addr}/metrics");
    match reqwest::get(&url).await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

/// stdout and stderr of a finished process, as text.
pub fn texts(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A loopback TCP port nothing listens on right now (for a child's `METRICS_ADDR`).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Sends SIGTERM to `child` and returns its exit code, which must come within 40 s.
pub async fn sigterm(child: &mut tokio::process::Child) -> Option<i32> {
    let pid = child.id().expect("running child");
    let status = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    tokio::time::timeout(std::time::Duration::from_secs(40), child.wait())
        .await
        .expect("exited within the grace period")
        .expect("wait")
        .code()
}

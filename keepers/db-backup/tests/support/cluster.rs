//! A throwaway PostgreSQL cluster of the test's own (`initdb` + `postgres` from PATH) with
//! password authentication: the shared test server trusts every local connection, so it cannot
//! tell a right password from a wrong one, and it already has roles a "fresh cluster" must not.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Password of the cluster's `postgres` superuser.
pub const ADMIN_PASSWORD: &str = "admin+pw&%@:/?# x";

/// A running cluster, stopped and deleted on drop.
pub struct Cluster {
    _dir: tempfile::TempDir,
    server: Child,
    /// TCP port on 127.0.0.1.
    pub port: u16,
}

/// `cmd` run as the `postgres` user when we are root (initdb and postgres refuse root).
fn as_owner(program: &str) -> Command {
    if rustix::process::getuid().is_root() {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--clear-groups",
            "--",
            program,
        ]);
        c
    } else {
        Command::new(program)
    }
}

fn owner_ids() -> Option<(u32, u32)> {
    let id = |flag: &str| -> Option<u32> {
        let out = Command::new("id").args([flag, "postgres"]).output().ok()?;
        String::from_utf8_lossy(&out.stdout).trim().parse().ok()
    };
    Some((id("-u")?, id("-g")?))
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().expect("local addr").port()
}

impl Cluster {
    /// initdb with scram-sha-256 for every connection, then start the server.
    pub fn start() -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        if rustix::process::getuid().is_root() {
            let (uid, gid) = owner_ids().expect("a postgres user to run the test cluster as");
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).expect("chown");
        }
        let data: PathBuf = dir.path().join("data");
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, ADMIN_PASSWORD).expect("write pwfile");
        if rustix::process::getuid().is_root()
            && let Some((uid, gid)) = owner_ids()
        {
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid)).expect("chown");
        }
        let out = as_owner("initdb")
            .arg("-D")
            .arg(&data)
            .args([
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                "-E",
                "UTF8",
                "--no-sync",
                "--locale=C",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()
            .expect("run initdb");
        assert!(
            out.status.success(),
            "initdb: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = free_port();
        let server = as_owner("postgres")
            .arg("-D")
            .arg(&data)
            .arg("-p")
            .arg(port.to_string())
            .arg("-k")
            .arg(dir.path())
            .args([
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "fsync=off",
                "-c",
                "max_connections=40",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start postgres");
        let c = Cluster {
            _dir: dir,
            server,
            port,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = Command::new("pg_isready")
                .args(["-q", "-h", "127.0.0.1", "-p", &port.to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "test cluster did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    /// URL of `database` as `user` with `password`, every reserved character percent-encoded.
    pub fn url(&self, user: &str, password: &str, database: &str) -> String {
        let enc = |s: &str| {
            percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
        };
        format!(
            "postgres://{}:{}@127.0.0.1:{}/{}",
            enc(user),
            enc(password),
            self.port,
            database
        )
    }

    /// The superuser's URL for `database`.
    pub fn admin_url(&self, database: &str) -> String {
        self.url("postgres", ADMIN_PASSWORD, database)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // SIGINT: fast shutdown. The server runs as another user, so signal it with `kill`.
        let _ = Command::new("kill")
            .args(["-INT", &self.server.id().to_string()])
            .status();
        let _ = self.server.wait();
    }
}

/// Pids of running processes whose command line contains every needle.
pub fn processes_with(needles: &[&str]) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|raw| {
                let cmd = String::from_utf8_lossy(&raw).replace('\0', " ");
                needles.iter().all(|n| cmd.contains(n))
            }) && alive(*pid)
        })
        .collect()
}

/// Running (not gone, not a zombie waiting to be reaped).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

/// A shell script at `dir/name` that records its environment and arguments in `dir/name.env`
/// and `dir/name.argv`, then execs `real`.
pub fn recording_wrapper(dir: &Path, name: &str, real: &Path) -> PathBuf {
    let path = dir.join(name);
    let script = format!(
        "#!/bin/sh\nenv > '{d}/{name}.env'\nprintf '%s\\n' \"$@\" > '{d}/{name}.argv'\nexec '{real}' \"$@\"\n",
        d = dir.display(),
        real = real.display()
    );
    std::fs::write(&path, script).expect("write wrapper");
    let mut perm = std::fs::metadata(&path).expect("stat").permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
    std::fs::set_permissions(&path, perm).expect("chmod");
    path
}

/// Absolute path of a program on PATH.
pub fn which(program: &str) -> PathBuf {
    let out = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .output()
        .expect("sh");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

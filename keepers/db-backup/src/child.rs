//! Starting PostgreSQL's client tools so that nothing leaks into them and nothing outlives us.
//!
//! - **Environment**: cleared, then only libpq's `PG*` variables, `PATH`, `LC_ALL` and `TZ` are
//!   passed on. The job's own environment holds `DATABASE_URL`, S3 keys and webhook URLs that a
//!   child has no use for.
//! - **Process group**: every child leads its own group and is killed with the group (timeout,
//!   SIGTERM, a dropped run), so a helper it started goes too.
//! - **Parent death**: on Linux the child arms `PR_SET_PDEATHSIG` = SIGKILL between `fork` and
//!   `exec` (in [`arm_parent_death_signal`], one of the workspace's two audited `unsafe` sites). A
//!   db-backup killed with SIGKILL by a bare supervisor (no cgroup to clean up) thus takes its
//!   `pg_dump` along instead of leaving it holding a snapshot and locks. The signal is tied to the
//!   *thread* that spawned the child, so children are always spawned by the thread that also
//!   waits for them.

use std::io;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::sync::{Arc, Mutex};

use rustix::process::{Pid, Signal};

/// True for variables a libpq tool may see: libpq's `PG[A-Z]…` (`PGHOST`, `PGSSLROOTCERT`, …;
/// not the job's `PG_DUMP_PATH`), `PATH`, `LC_ALL`, `TZ`.
pub fn passed_on(name: &str) -> bool {
    matches!(name, "PATH" | "LC_ALL" | "TZ")
        || (name.len() > 2
            && name.starts_with("PG")
            && name.as_bytes()[2].is_ascii_uppercase()
            && name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'))
}

/// A command for `program` with the cleared environment, its own process group and (on Linux)
/// the parent-death signal.
pub fn command(program: &Path) -> Command {
    let mut cmd = Command::new(program);
    cmd.env_clear();
    for (k, v) in std::env::vars_os() {
        if k.to_str().is_some_and(passed_on) {
            cmd.env(k, v);
        }
    }
    cmd.process_group(0);
    #[cfg(target_os = "linux")]
    arm_parent_death_signal(&mut cmd);
    cmd
}

/// Makes the child receive SIGKILL when the thread that spawns it exits; a child whose parent
/// is already gone by then exits at once instead of running a tool nobody waits for.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn arm_parent_death_signal(cmd: &mut Command) {
    // Taken here, in the parent: inside the hook `std::process::id` would be the child's.
    let parent = rustix::process::getpid();
    // SAFETY: the hook runs in the forked child before `exec`, where only async-signal-safe
    // work is allowed: it makes two raw system calls through rustix (`prctl`, `getppid`),
    // allocates nothing, takes no lock and touches no state shared with the parent. Returning
    // an error makes the child exit before `exec` and `spawn` report that error.
    unsafe {
        cmd.pre_exec(move || {
            rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
            // The parent may have died before the signal was armed: then we were re-parented.
            if rustix::process::getppid() != Some(parent) {
                // An errno, not a message: allocating is not allowed here.
                return Err(rustix::io::Errno::SRCH.into());
            }
            Ok(())
        });
    }
}

/// Lets another thread kill a running child's process group.
#[derive(Clone, Default)]
pub struct GroupHandle {
    /// The group id while the leader is unreaped: a zombie keeps its pid, so no other process
    /// can be signalled by mistake.
    live: Arc<Mutex<Option<Pid>>>,
}

impl GroupHandle {
    /// Whether the leader is still unreaped.
    pub fn is_live(&self) -> bool {
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_some()
    }

    /// SIGKILLs the whole group, if it still runs.
    pub fn kill(&self) {
        if let Some(pid) = *self.live.lock().unwrap_or_else(|p| p.into_inner()) {
            let _ = rustix::process::kill_process_group(pid, Signal::KILL);
        }
    }
}

/// A started child leading its own process group; dropped unreaped, it kills the group.
pub struct Running {
    child: Child,
    handle: GroupHandle,
}

impl Running {
    /// Spawns `cmd` (built by [`command`]).
    pub fn spawn(cmd: &mut Command) -> io::Result<Self> {
        let child = cmd.spawn()?;
        let pid = Pid::from_child(&child);
        Ok(Self {
            child,
            handle: GroupHandle {
                live: Arc::new(Mutex::new(Some(pid))),
            },
        })
    }

    /// The child, to take its pipes.
    pub fn child_mut(&mut self) -> &mut Child {
        &mut self.child
    }

    /// A handle that kills the group from elsewhere.
    pub fn handle(&self) -> GroupHandle {
        self.handle.clone()
    }

    /// Kills the group now.
    pub fn kill(&self) {
        self.handle.kill();
    }

    /// Waits for the child to exit, then reaps it.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        let pid = Pid::from_child(&self.child);
        // Wait without reaping first: until the handle forgets the pid, a kill from another
        // thread must still hit this group and not a process that reused the number.
        loop {
            match rustix::process::waitid(
                rustix::process::WaitId::Pid(pid),
                rustix::process::WaitIdOptions::EXITED | rustix::process::WaitIdOptions::NOWAIT,
            ) {
                Ok(_) => break,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        // Whatever else is left in the group (a helper the tool started) goes with the leader.
        self.handle.kill();
        *self.handle.live.lock().unwrap_or_else(|p| p.into_inner()) = None;
        self.child.wait()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let live = self
            .handle
            .live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(pid) = live {
            let _ = rustix::process::kill_process_group(pid, Signal::KILL);
            let _ = self.child.wait();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_libpq_and_locale_variables_pass() {
        for ok in [
            "PGHOST",
            "PGSSLROOTCERT",
            "PGPASSWORD",
            "PATH",
            "LC_ALL",
            "TZ",
        ] {
            assert!(passed_on(ok), "{ok}");
        }
        for no in [
            "DATABASE_URL",
            "AWS_SECRET_ACCESS_KEY",
            "PG_DUMP_PATH",
            "PG",
            "PGx",
            "BACKUP_DIR",
            "HOME",
            "LANG",
        ] {
            assert!(!passed_on(no), "{no}");
        }
    }

    #[test]
    fn children_see_a_cleared_environment_and_lead_their_group() {
        let mut cmd = command(Path::new("sh"));
        cmd.args(["-c", "env; echo pgid=$(cut -d' ' -f5 /proc/$$/stat) pid=$$"])
            .stdout(std::process::Stdio::piped());
        let mut run = Running::spawn(&mut cmd).unwrap();
        let mut out = String::new();
        io::Read::read_to_string(&mut run.child_mut().stdout.take().unwrap(), &mut out).unwrap();
        assert!(run.wait().unwrap().success());
        for line in out
            .lines()
            .filter(|l| l.contains('=') && !l.starts_with("pgid="))
        {
            let name = line.split('=').next().unwrap();
            // sh itself sets PWD, SHLVL and `_`.
            assert!(
                passed_on(name) || matches!(name, "PWD" | "SHLVL" | "_" | "OLDPWD"),
                "{name} leaked into the child"
            );
        }
        let last = out.lines().last().unwrap();
        let (pgid, pid) = last.split_once(' ').unwrap();
        assert_eq!(
            pgid.trim_start_matches("pgid="),
            pid.trim_start_matches("pid=")
        );
    }

    #[test]
    fn dropping_a_running_child_kills_its_group() {
        let mut cmd = command(Path::new("sh"));
        // The grandchild would outlive a plain kill of `sh`.
        cmd.args(["-c", "sleep 300 & echo $!; wait"])
            .stdout(std::process::Stdio::piped());
        let mut run = Running::spawn(&mut cmd).unwrap();
        let mut line = String::new();
        let mut out = io::BufReader::new(run.child_mut().stdout.take().unwrap());
        io::BufRead::read_line(&mut out, &mut line).unwrap();
        let grandchild: i32 = line.trim().parse().unwrap();
        drop(run);
        let gone = (0..50).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(20));
            !Path::new(&format!("/proc/{grandchild}")).exists()
                || std::fs::read_to_string(format!("/proc/{grandchild}/stat"))
                    .is_ok_and(|s| s.contains(") Z "))
        });
        assert!(gone, "grandchild {grandchild} survived the drop");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn a_child_dies_with_the_thread_that_started_it() {
        let pid = std::thread::spawn(|| {
            let mut cmd = command(Path::new("sleep"));
            cmd.arg("300");
            // Neither waited for nor killed: only the parent-death signal can end it.
            cmd.spawn().unwrap().id()
        })
        .join()
        .unwrap();
        let gone = (0..100).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(20));
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .map_or(true, |s| s.contains(") Z "))
        });
        assert!(gone, "child {pid} outlived the thread that spawned it");
    }
}

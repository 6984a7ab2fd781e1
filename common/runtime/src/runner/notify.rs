//! systemd notifications (`sd_notify`): READY, WATCHDOG, STATUS, STOPPING.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sd_notify::NotifyState;

/// Longest STATUS line sent; systemctl shows one line anyway.
const STATUS_MAX: usize = 200;

/// Sends notifications when started by systemd (`NOTIFY_SOCKET` set); otherwise does nothing.
#[derive(Debug)]
pub(crate) struct Notifier {
    enabled: bool,
    watchdog: Option<Duration>,
    warned: AtomicBool,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID` from the environment.
    pub(crate) fn from_env() -> Self {
        Self {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
            watchdog: sd_notify::watchdog_enabled().filter(|d| !d.is_zero()),
            warned: AtomicBool::new(false),
        }
    }

    /// How often to ping the watchdog between ticks: half its timeout, as systemd recommends.
    pub(crate) fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog.map(|d| d / 2)
    }

    fn send(&self, states: &[NotifyState<'_>]) {
        if !self.enabled {
            return;
        }
        if let Err(e) = sd_notify::notify(states)
            && !self.warned.swap(true, Ordering::Relaxed)
        {
            // Once is enough: a missing socket will not come back by itself.
            tracing::warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)");
        }
    }

    pub(crate) fn ready(&self, status: &str) {
        self.send(&[
            NotifyState::Ready,
            NotifyState::Status(&status_line(status)),
        ]);
    }

    pub(crate) fn watchdog(&self) {
        if self.watchdog.is_some() {
            self.send(&[NotifyState::Watchdog]);
        }
    }

    pub(crate) fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(&status_line(status))]);
    }

    pub(crate) fn stopping(&self, status: &str) {
        self.send(&[
            NotifyState::Stopping,
            NotifyState::Status(&status_line(status)),
        ]);
    }
}

/// One line (the protocol is newline-separated), at most [`STATUS_MAX`] bytes.
pub(crate) fn status_line(s: &str) -> String {
    let mut line: String = s
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if line.len() > STATUS_MAX {
        let mut cut = STATUS_MAX - 3;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
        line.push_str("...");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_one_bounded_line() {
        assert_eq!(status_line("a\nb"), "a b");
        let long = "é".repeat(300);
        let l = status_line(&long);
        assert!(l.len() <= STATUS_MAX && l.ends_with("..."));
    }
}

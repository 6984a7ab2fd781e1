//! Process-wide stop request: SIGTERM/SIGINT (or a test) asks the loop to drain and exit.

use std::io;

use tokio::sync::watch;

/// How far the stop has gone; only ever increases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    Running,
    /// First signal: take no new tick, let the in-flight cycle finish within the grace period.
    Draining,
    /// Second signal: cut the in-flight cycle now.
    Forced,
}

/// A cloneable stop switch shared by the runner, the ops server and the cycles.
///
/// The first trigger starts a graceful drain; a second one (an impatient operator pressing
/// Ctrl-C again) asks for an immediate stop.
#[derive(Debug, Clone)]
pub struct Shutdown {
    tx: watch::Sender<Stage>,
}

impl Default for Shutdown {
    fn default() -> Self {
        Self::new()
    }
}

impl Shutdown {
    /// A switch that has not been triggered.
    pub fn new() -> Self {
        Self {
            tx: watch::Sender::new(Stage::Running),
        }
    }

    /// Requests a stop: the first call starts draining, any later call forces it.
    pub fn trigger(&self) {
        self.tx.send_modify(|s| {
            *s = match *s {
                Stage::Running => Stage::Draining,
                _ => Stage::Forced,
            }
        });
    }

    /// True once a stop was requested.
    pub fn is_triggered(&self) -> bool {
        *self.tx.borrow() >= Stage::Draining
    }

    /// True once a second stop request asked to cut the in-flight work.
    pub fn is_forced(&self) -> bool {
        *self.tx.borrow() == Stage::Forced
    }

    /// Resolves when a stop is requested (at once if it already was).
    pub async fn wait(&self) {
        self.wait_stage(Stage::Draining).await;
    }

    /// Resolves when an immediate stop is requested.
    pub async fn wait_forced(&self) {
        self.wait_stage(Stage::Forced).await;
    }

    async fn wait_stage(&self, stage: Stage) {
        let mut rx = self.tx.subscribe();
        // The sender lives in `self`, so the channel cannot close while we wait.
        let _ = rx.wait_for(|s| *s >= stage).await;
    }

    /// Spawns a task that triggers this switch on SIGTERM and SIGINT; call inside a Tokio runtime.
    pub fn install_signal_handlers(&self) -> io::Result<()> {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let this = self.clone();
        tokio::spawn(async move {
            loop {
                let name = tokio::select! {
                    s = term.recv() => s.map(|()| "SIGTERM"),
                    s = int.recv() => s.map(|()| "SIGINT"),
                };
                let Some(name) = name else { break };
                if this.is_triggered() {
                    tracing::warn!(
                        signal = name,
                        "second stop signal: cutting the in-flight cycle"
                    );
                } else {
                    tracing::info!(
                        signal = name,
                        "stop signal: no new ticks, letting the in-flight cycle finish"
                    );
                }
                this.trigger();
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stages_only_advance() {
        let s = Shutdown::new();
        assert!(!s.is_triggered());
        let waiter = tokio::spawn({
            let s = s.clone();
            async move { s.wait().await }
        });
        s.trigger();
        waiter.await.unwrap();
        assert!(s.is_triggered() && !s.is_forced());
        s.trigger();
        assert!(s.is_forced());
        s.wait_forced().await;
        s.trigger();
        assert!(s.is_forced());
    }
}

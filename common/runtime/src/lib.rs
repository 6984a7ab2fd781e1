//! What every keeper process needs, whatever it keeps: configuration and secrets, the HTTP
//! client and retries, the runner (interval or cron), alerts, the PostgreSQL store, telemetry
//! and the command-line pieces that mean the same in every binary.
//!
//! One module per concern; the TON and price-source crates and the keeper crates build on this
//! one, never the other way round.

pub mod alert;
pub mod cli;
pub mod config;
pub mod http;
pub mod migrations;
pub mod retry;
pub mod runner;
pub mod schedule;
pub mod secret;
pub mod shutdown;
pub mod store;
pub mod tasks;
pub mod telemetry;

/// Turns core dumps off for this process, soft and hard limit (a dump would hold the wallet key
/// and passwords); call first in `main`. Where the limit cannot be changed (a seccomp filter
/// such as the systemd units', which set `LimitCORE=0` themselves) it stays as it was.
pub fn disable_core_dumps() {
    use rustix::process::{Resource, Rlimit, setrlimit};
    let off = Rlimit {
        current: Some(0),
        maximum: Some(0),
    };
    // Lowering a limit needs no privilege; a refusal only comes from a sandbox that has
    // already set it, so there is nothing to report.
    let _ = setrlimit(Resource::Core, off);
}

/// Wipes the secret variables of `bindings` (and `extra`) from the process environment once
/// settings are loaded, so children and `/proc/<pid>/environ` never see them; call it while the
/// process still has one thread. A failure is reported on stderr and the process goes on.
pub fn scrub_secret_env(bindings: &[config::EnvBinding], extra: &[&str]) {
    if let Err(e) = config::scrub_secret_env(bindings, extra) {
        eprintln!(
            "warning: secrets given as environment variables stay in /proc/<pid>/environ: {e}"
        );
    }
}

/// Installs the process-wide TLS crypto provider (ring); call once at the start of `main`.
pub fn install_crypto_provider() {
    // Err means another provider is already installed, which is fine.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

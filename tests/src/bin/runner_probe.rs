//! A real process driving `keeper_runtime::runner::Runner` with a scripted fake cycle, so tests
//! can signal it, watch its sd_notify datagrams and probe its ops server.
//!
//! Configuration (environment):
//! - `PROBE_CYCLE`: comma-separated steps, one per tick, the last one repeating:
//!   `ok`, `fail`, `skip`, `fatal`, `sleep:MS` (sleeps, ignores shutdown), `drain:MS` (sleeps
//!   but returns as soon as shutdown is requested), `hang` (never returns, ignores shutdown),
//!   `block:MS` (blocks its thread: a stuck loop).
//! - `PROBE_INTERVAL_MS`, `PROBE_TIMEOUT_MS`, `PROBE_GRACE_MS`, `PROBE_STALE_INTERVALS`.
//! - `PROBE_OPS_ADDR`: serve the ops endpoints there (port 0 allowed); the bound address is
//!   printed as `ops <addr>`.
//! - `PROBE_ALERT_WEBHOOK`: deliver alerts to this generic webhook.
//! - `PROBE_READY`: comma-separated readiness checks, marked ready after the first cycle.
//! - `PROBE_TASK`: a supervised side task: `panic:N` panics on its first N starts and is
//!   restarted (then runs until the stop); `end:MS` returns after MS milliseconds and stops the
//!   process (exit code 1). Each start prints `task start K`.
//! - `LOG_FORMAT`, `RUST_LOG`, `OTEL_EXPORTER_OTLP_ENDPOINT`: as for every keeper.
//!
//! Arguments: `--once` runs one cycle and exits with its code.
//!
//! stdout gets one line per event (`start N`, `end N`), flushed at once, for the tests to follow.

use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use keeper_runtime::alert::Alerter;
use keeper_runtime::config::{
    AlertSettings, COMMON_ENV, EnvBinding, Layers, ProcessEnv, TelemetrySettings,
};
use keeper_runtime::runner::{Cycle, CycleContext, CycleError, Runner, Shutdown, Timing};
use keeper_runtime::secret::Secret;
use keeper_runtime::tasks::{OnEarlyExit, Supervisor};
use keeper_runtime::telemetry::{Health, Metrics, init_tracing, serve_ops};
use serde::Serialize;

const KEEPER: &str = "runner-probe";

#[derive(Debug, Clone)]
enum Step {
    Ok,
    Fail,
    Skip,
    Fatal,
    Sleep(Duration),
    Drain(Duration),
    Hang,
    Block(Duration),
}

fn parse_steps(spec: &str) -> Result<Vec<Step>, String> {
    spec.split(',')
        .map(|s| {
            let (name, arg) = s.trim().split_once(':').unwrap_or((s.trim(), ""));
            let ms = || {
                arg.parse::<u64>()
                    .map(Duration::from_millis)
                    .map_err(|_| format!("PROBE_CYCLE: `{s}` needs milliseconds"))
            };
            Ok(match name {
                "ok" => Step::Ok,
                "fail" => Step::Fail,
                "skip" => Step::Skip,
                "fatal" => Step::Fatal,
                "sleep" => Step::Sleep(ms()?),
                "drain" => Step::Drain(ms()?),
                "hang" => Step::Hang,
                "block" => Step::Block(ms()?),
                other => return Err(format!("PROBE_CYCLE: unknown step `{other}`")),
            })
        })
        .collect()
}

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[derive(Serialize)]
struct Report {
    tick: u64,
    step: String,
}

impl keeper_runtime::runner::CycleReport for Report {
    fn summary(&self) -> String {
        format!("probe step {} done", self.step)
    }
}

struct Probe {
    steps: Vec<Step>,
    health: Health,
    ready: Vec<String>,
}

impl Cycle for Probe {
    type Report = Report;

    async fn run(&mut self, ctx: &CycleContext) -> Result<Report, CycleError> {
        let idx = usize::try_from(ctx.tick - 1).unwrap_or(usize::MAX);
        let step = self.steps[idx.min(self.steps.len() - 1)].clone();
        say(&format!("start {}", ctx.tick));
        let result = match &step {
            Step::Ok => Ok(()),
            Step::Fail => Err(CycleError::failed("probe: scripted failure")),
            Step::Skip => Err(CycleError::skipped("probe: scripted skip")),
            Step::Fatal => Err(CycleError::fatal("probe: scripted fatal error")),
            Step::Sleep(d) => {
                tokio::time::sleep(*d).await;
                Ok(())
            }
            Step::Drain(d) => {
                tokio::select! {
                    () = tokio::time::sleep(*d) => {}
                    () = ctx.shutdown.wait() => say(&format!("draining {}", ctx.tick)),
                }
                Ok(())
            }
            Step::Hang => std::future::pending().await,
            Step::Block(d) => {
                std::thread::sleep(*d);
                Ok(())
            }
        };
        say(&format!("end {}", ctx.tick));
        for check in &self.ready {
            self.health.mark_ready(check);
        }
        self.health.set_published("probe_tick", ctx.tick);
        self.health
            .set_lock_holder(Some(format!("probe-{}", std::process::id())));
        result.map(|()| Report {
            tick: ctx.tick,
            step: format!("{step:?}"),
        })
    }
}

/// Starts the `PROBE_TASK` side task under `tasks`.
fn side_task(tasks: &mut Supervisor, spec: &str, shutdown: &Shutdown) -> Result<(), String> {
    let (kind, arg) = spec.split_once(':').unwrap_or((spec, ""));
    let n: u64 = arg
        .parse()
        .map_err(|_| format!("PROBE_TASK: `{spec}` needs a number"))?;
    let starts = Arc::new(AtomicU32::new(0));
    let shutdown = shutdown.clone();
    match kind {
        "panic" => tasks.spawn(
            "probe-side-task",
            OnEarlyExit::Restart {
                min_delay: Duration::from_millis(50),
                max_delay: Duration::from_millis(200),
            },
            move || {
                let (starts, shutdown) = (starts.clone(), shutdown.clone());
                async move {
                    let k = starts.fetch_add(1, Ordering::SeqCst) + 1;
                    say(&format!("task start {k}"));
                    if u64::from(k) <= n {
                        panic!("scripted side-task panic {k}");
                    }
                    shutdown.wait().await;
                }
            },
        ),
        "end" => tasks.spawn("probe-side-task", OnEarlyExit::StopProcess, move || {
            let starts = starts.clone();
            async move {
                let k = starts.fetch_add(1, Ordering::SeqCst) + 1;
                say(&format!("task start {k}"));
                tokio::time::sleep(Duration::from_millis(n)).await;
            }
        }),
        other => return Err(format!("PROBE_TASK: unknown kind `{other}`")),
    }
    Ok(())
}

fn env_ms(name: &str, default: u64) -> Result<Duration, String> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .map(Duration::from_millis)
            .map_err(|_| format!("{name}: not a number of milliseconds: {v}")),
        Err(_) => Ok(Duration::from_millis(default)),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    match run().await {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("runner_probe: {e}");
            std::process::exit(2);
        }
    }
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
struct ProbeSettings {
    telemetry: TelemetrySettings,
}

async fn run() -> Result<i32, String> {
    // The real loader, so LOG_FORMAT and OTEL_EXPORTER_OTLP_ENDPOINT behave as in a keeper.
    let bindings: Vec<EnvBinding> = COMMON_ENV
        .iter()
        .filter(|b| b.path.starts_with("telemetry."))
        .copied()
        .collect();
    let settings: ProbeSettings = Layers {
        defaults: "",
        file: None,
        env: &ProcessEnv,
        bindings: &bindings,
        flags: Vec::new(),
    }
    .load()
    .map_err(|e| e.to_string())?;
    settings.telemetry.validate().map_err(|e| e.to_string())?;
    let _guard = init_tracing(&settings.telemetry, KEEPER).map_err(|e| e.to_string())?;
    let steps = parse_steps(&std::env::var("PROBE_CYCLE").unwrap_or_else(|_| "ok".into()))?;
    let interval = env_ms("PROBE_INTERVAL_MS", 200)?;
    let timing = Timing {
        interval,
        cycle_timeout: env_ms("PROBE_TIMEOUT_MS", interval.as_millis() as u64)?,
        shutdown_grace: env_ms("PROBE_GRACE_MS", 2_000)?,
        stale_intervals: std::env::var("PROBE_STALE_INTERVALS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(3),
    };
    let ready: Vec<String> = std::env::var("PROBE_READY")
        .map(|v| v.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    let required: Vec<&str> = ready.iter().map(String::as_str).collect();

    let metrics = Arc::new(Metrics::new(KEEPER));
    let health = Health::new(KEEPER, interval, &required);
    let shutdown = Shutdown::new();
    shutdown
        .install_signal_handlers()
        .map_err(|e| format!("signal handlers: {e}"))?;
    let alerter = match std::env::var("PROBE_ALERT_WEBHOOK") {
        Ok(url) => Alerter::start(
            &AlertSettings {
                webhook_url: Some(Secret::shared(url)),
                ..AlertSettings::default()
            },
            KEEPER,
            metrics.clone(),
        ),
        Err(_) => Alerter::disabled(),
    };
    let ops = match std::env::var("PROBE_OPS_ADDR") {
        Ok(addr) => {
            let addr = addr
                .parse()
                .map_err(|_| format!("PROBE_OPS_ADDR: not a socket address: {addr}"))?;
            let server = serve_ops(addr, metrics.clone(), health.clone(), shutdown.clone())
                .await
                .map_err(|e| e.to_string())?;
            say(&format!("ops {}", server.local_addr()));
            Some(server)
        }
        Err(_) => None,
    };

    let grace = timing.shutdown_grace;
    let mut tasks = Supervisor::new(shutdown.clone());
    if let Ok(spec) = std::env::var("PROBE_TASK") {
        side_task(&mut tasks, &spec, &shutdown)?;
    }

    let mut runner = Runner::new(
        KEEPER,
        timing,
        metrics,
        health.clone(),
        alerter,
        shutdown.clone(),
    );
    let mut probe = Probe {
        steps,
        health,
        ready,
    };
    let mut code = if std::env::args().any(|a| a == "--once") {
        runner.run_once(&mut probe).await.exit_code()
    } else {
        runner.run_forever(&mut probe).await
    };
    if let Some(ops) = ops {
        // The server stops with the switch; after `--once` or a fatal error nobody pulled it.
        shutdown.trigger();
        ops.stopped().await;
    }
    if !shutdown.is_triggered() {
        shutdown.trigger();
    }
    let late = tasks.join(grace).await;
    if !late.is_empty() {
        say(&format!("late {}", late.join(",")));
    }
    if tasks.failure().is_some() {
        code = 1;
    }
    say(&format!("exit {code}"));
    Ok(code)
}

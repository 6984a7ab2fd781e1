//! The shared runner: cadence without overlap, skipped ticks, timeouts, `--once` exit codes,
//! graceful and forced stops of a real process, sd_notify on a real socket, staleness alerts.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keeper_runtime::alert::Alerter;
use keeper_runtime::config::AlertSettings;
use keeper_runtime::runner::{
    Cycle, CycleContext, CycleError, ErrorKind, KEEPER_STALE, Outcome, Runner, Shutdown, Timing,
};
use keeper_runtime::secret::Secret;
use keeper_runtime::telemetry::{Health, Metrics};
use keeper_tests::probe::{self, Probe};
use keeper_tests::sink::Sink;

const PROBE: &str = env!("CARGO_BIN_EXE_runner_probe");

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn timing(interval: u64, timeout: u64, grace: u64) -> Timing {
    Timing {
        interval: ms(interval),
        cycle_timeout: ms(timeout),
        shutdown_grace: ms(grace),
        stale_intervals: 3,
    }
}

fn runner(keeper: &str, timing: Timing, alerter: Alerter) -> (Runner, Arc<Metrics>, Shutdown) {
    let metrics = Arc::new(Metrics::new(keeper));
    let shutdown = Shutdown::new();
    let health = Health::new(keeper, timing.interval, &[]);
    let r = Runner::new(
        keeper,
        timing,
        metrics.clone(),
        health,
        alerter,
        shutdown.clone(),
    );
    (r, metrics, shutdown)
}

/// Sleeps a scripted time per tick, records when it ran, stops the loop after `stop_after` ticks.
struct Scripted {
    sleeps: Vec<Duration>,
    fail_until: u64,
    stop_after: u64,
    ran: Arc<Mutex<Vec<(u64, Instant, Instant)>>>,
    alerter: Option<Alerter>,
    firing_seen: Arc<Mutex<Vec<(u64, bool)>>>,
}

impl Scripted {
    fn new(sleeps: &[u64], stop_after: u64) -> Self {
        Self {
            sleeps: sleeps.iter().map(|&n| ms(n)).collect(),
            fail_until: 0,
            stop_after,
            ran: Arc::default(),
            alerter: None,
            firing_seen: Arc::default(),
        }
    }
}

impl Cycle for Scripted {
    type Report = String;

    async fn run(&mut self, ctx: &CycleContext) -> Result<String, CycleError> {
        let start = Instant::now();
        if let Some(a) = &self.alerter {
            self.firing_seen
                .lock()
                .unwrap()
                .push((ctx.tick, a.is_firing(KEEPER_STALE)));
        }
        let i = (ctx.tick as usize - 1).min(self.sleeps.len() - 1);
        tokio::time::sleep(self.sleeps[i]).await;
        self.ran
            .lock()
            .unwrap()
            .push((ctx.tick, start, Instant::now()));
        if ctx.tick >= self.stop_after {
            ctx.shutdown.trigger();
        }
        if ctx.tick <= self.fail_until {
            return Err(CycleError::failed(format!("tick {} failed", ctx.tick)));
        }
        Ok(format!("tick {}", ctx.tick))
    }
}

fn metric_line(text: &str, prefix: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn slow_cycle_never_overlaps_and_skipped_ticks_are_counted() {
    // 200 ms cadence; the first cycle takes 500 ms, so the ticks at 200 and 400 ms fall inside it:
    // the overdue one runs at once when it ends, the other is skipped and counted.
    let (mut r, metrics, _) = runner("slow", timing(200, 2_000, 1_000), Alerter::disabled());
    let mut cycle = Scripted::new(&[500, 10], 4);
    let ran = cycle.ran.clone();
    let code = tokio::time::timeout(Duration::from_secs(10), r.run_forever(&mut cycle))
        .await
        .expect("loop stops after the cycle triggers shutdown");
    assert_eq!(code, 0);

    let ran = ran.lock().unwrap().clone();
    assert_eq!(ran.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 2, 3, 4]);
    for pair in ran.windows(2) {
        assert!(
            pair[1].1 >= pair[0].2,
            "cycle {} started before cycle {} ended",
            pair[1].0,
            pair[0].0
        );
    }
    // Cadence stays aligned to the start: the third cycle runs on the 600 ms tick, not 200 ms
    // after the late second one.
    let t0 = ran[0].1;
    assert!(
        ran[2].1 - t0 >= ms(580),
        "third cycle at {:?}",
        ran[2].1 - t0
    );

    let text = metrics.render();
    assert_eq!(
        metric_line(&text, "keeper_ticks_skipped_total{keeper=\"slow\"}"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        metric_line(
            &text,
            "keeper_cycles_total{keeper=\"slow\",outcome=\"success\"}"
        ),
        Some(4.0)
    );
    assert!(
        metric_line(
            &text,
            "keeper_last_success_timestamp_seconds{keeper=\"slow\"}"
        )
        .unwrap()
            > 1.7e9
    );
}

struct Hang;

impl Cycle for Hang {
    type Report = ();

    async fn run(&mut self, _ctx: &CycleContext) -> Result<(), CycleError> {
        std::future::pending().await
    }
}

#[tokio::test]
async fn cycle_is_cut_at_its_timeout_and_the_loop_goes_on() {
    let (mut r, metrics, shutdown) =
        runner("timeout", timing(100, 150, 1_000), Alerter::disabled());
    let started = Instant::now();
    let run = r.run_once(&mut Hang).await;
    assert_eq!(run.outcome, Outcome::Timeout);
    assert_eq!(run.exit_code(), 1);
    assert!(run.duration >= ms(150) && started.elapsed() < Duration::from_secs(3));
    let msg = run.result.unwrap_err().to_string();
    assert!(
        msg.contains("timed out") && msg.contains("CYCLE_TIMEOUT"),
        "{msg}"
    );

    // In the loop a hung cycle costs one timeout, then ticking continues.
    struct HangThenStop;
    impl Cycle for HangThenStop {
        type Report = ();
        async fn run(&mut self, ctx: &CycleContext) -> Result<(), CycleError> {
            if ctx.tick == 2 {
                std::future::pending::<()>().await;
            }
            if ctx.tick == 4 {
                ctx.shutdown.trigger();
            }
            Ok(())
        }
    }
    let code = tokio::time::timeout(Duration::from_secs(10), r.run_forever(&mut HangThenStop))
        .await
        .unwrap();
    assert_eq!(code, 0);
    assert!(shutdown.is_triggered());
    let text = metrics.render();
    assert_eq!(
        metric_line(
            &text,
            "keeper_cycles_total{keeper=\"timeout\",outcome=\"timeout\"}"
        ),
        Some(2.0),
        "{text}"
    );
    // Tick numbers continue after `run_once`: tick 2 hung, ticks 3 and 4 succeeded.
    assert_eq!(
        metric_line(
            &text,
            "keeper_cycles_total{keeper=\"timeout\",outcome=\"success\"}"
        ),
        Some(2.0)
    );
}

#[tokio::test]
async fn fatal_error_stops_the_loop_with_exit_1() {
    struct Fatal;
    impl Cycle for Fatal {
        type Report = ();
        async fn run(&mut self, _: &CycleContext) -> Result<(), CycleError> {
            Err(CycleError::fatal("oracle address holds no oracle"))
        }
    }
    let (mut r, _, _) = runner("fatal", timing(50, 50, 50), Alerter::disabled());
    let code = tokio::time::timeout(Duration::from_secs(5), r.run_forever(&mut Fatal))
        .await
        .unwrap();
    assert_eq!(code, 1);
    let run = r.run_once(&mut Fatal).await;
    assert_eq!(run.result.unwrap_err().kind(), ErrorKind::Fatal);
}

#[tokio::test]
async fn staleness_alert_fires_then_resolves_through_a_real_webhook() {
    let sink = Sink::start().await;
    let alert_settings = AlertSettings {
        webhook_url: Some(Secret::shared(sink.url_for("/hook"))),
        ..AlertSettings::default()
    };
    let metrics = Arc::new(Metrics::new("stale"));
    let alerter = Alerter::start(&alert_settings, "stale", metrics.clone());
    let t = Timing {
        stale_intervals: 2,
        ..timing(100, 500, 500)
    };
    let shutdown = Shutdown::new();
    let mut r = Runner::new(
        "stale",
        t,
        metrics,
        Health::new("stale", t.interval, &[]),
        alerter.clone(),
        shutdown,
    );
    // Fails ticks 1..=5 (stale once 200 ms pass without success), succeeds from tick 6.
    let mut cycle = Scripted::new(&[5], 8);
    cycle.fail_until = 5;
    cycle.alerter = Some(alerter.clone());
    let seen = cycle.firing_seen.clone();
    let code = tokio::time::timeout(Duration::from_secs(10), r.run_forever(&mut cycle))
        .await
        .unwrap();
    assert_eq!(code, 0);

    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[0], (1, false), "{seen:?}");
    assert!(
        seen.iter().any(|&(tick, firing)| firing && tick <= 6),
        "keeper_stale never fired during the failing ticks: {seen:?}"
    );
    assert!(!alerter.is_firing(KEEPER_STALE), "{seen:?}");

    let got = sink.wait_for(2, Duration::from_secs(5)).await;
    let bodies: Vec<serde_json::Value> = got.iter().map(|r| r.json().unwrap()).collect();
    assert_eq!(bodies[0]["key"], KEEPER_STALE, "{bodies:?}");
    assert_eq!(bodies[0]["status"], "firing");
    assert!(
        bodies[0].to_string().contains("no successful cycle"),
        "{bodies:?}"
    );
    assert_eq!(bodies[1]["key"], KEEPER_STALE);
    assert_eq!(bodies[1]["status"], "resolved");
}

fn probe_cmd(cycle: &str, interval: u64, timeout: u64, grace: u64) -> tokio::process::Command {
    let mut cmd = probe::command(PROBE);
    cmd.env("PROBE_CYCLE", cycle)
        .env("PROBE_INTERVAL_MS", interval.to_string())
        .env("PROBE_TIMEOUT_MS", timeout.to_string())
        .env("PROBE_GRACE_MS", grace.to_string());
    cmd
}

#[tokio::test]
async fn once_exit_codes_of_a_real_process() {
    let cases = [
        ("ok", 0, "success"),
        ("skip", 0, "skipped"),
        ("fail", 1, "failure"),
        ("fatal", 1, "failure"),
        ("hang", 1, "timeout"),
    ];
    let mut runs = tokio::task::JoinSet::new();
    for (cycle, code, outcome) in cases {
        runs.spawn(async move {
            let mut cmd = probe_cmd(cycle, 60_000, 300, 1_000);
            cmd.arg("--once");
            let mut p = Probe::spawn(cmd);
            let status = p.wait(Duration::from_secs(20)).await;
            p.drain().await;
            assert_eq!(status.code(), Some(code), "{cycle}: {:?}", p.seen());
            assert_eq!(
                p.seen().iter().filter(|l| l.starts_with("start")).count(),
                1,
                "{cycle}: --once runs exactly one cycle: {:?}",
                p.seen()
            );
            let events = p.log_events("cycle finished");
            assert_eq!(events.len(), 1, "{cycle}: {}", p.stderr());
            assert_eq!(events[0]["outcome"], outcome, "{cycle}: {}", events[0]);
            assert!(events[0]["duration_ms"].is_u64(), "{}", events[0]);
        });
    }
    while let Some(done) = runs.join_next().await {
        // Re-raise an assertion failure from the task with its message.
        if let Err(e) = done {
            std::panic::resume_unwind(e.into_panic());
        }
    }
}

#[tokio::test]
async fn sigterm_during_a_cycle_lets_it_finish_and_exits_0() {
    // The cycle would take 30 s but watches the shutdown switch; the grace period is 5 s.
    let mut p = Probe::spawn(probe_cmd("drain:30000", 200, 60_000, 5_000));
    p.line("start 1", Duration::from_secs(10)).await;
    let signalled = Instant::now();
    p.signal("TERM");
    let status = p.wait(Duration::from_secs(10)).await;
    let took = signalled.elapsed();
    p.drain().await;
    assert_eq!(status.code(), Some(0), "stdout {:?}", p.seen());
    assert!(
        took < Duration::from_secs(5),
        "took {took:?}, beyond the grace period"
    );
    assert!(p.seen().iter().any(|l| l == "draining 1"), "{:?}", p.seen());
    assert!(p.seen().iter().any(|l| l == "end 1"), "{:?}", p.seen());
    assert!(
        !p.seen().iter().any(|l| l == "start 2"),
        "a tick started after SIGTERM: {:?}",
        p.seen()
    );
    let events = p.log_events("cycle finished");
    assert_eq!(events.len(), 1, "{}", p.stderr());
    assert_eq!(events[0]["outcome"], "success");
}

#[tokio::test]
async fn sigint_with_a_cycle_that_ignores_shutdown_is_cut_at_the_grace_bound() {
    let mut p = Probe::spawn(probe_cmd("hang", 200, 60_000, 800));
    p.line("start 1", Duration::from_secs(10)).await;
    let signalled = Instant::now();
    p.signal("INT");
    let status = p.wait(Duration::from_secs(10)).await;
    let took = signalled.elapsed();
    p.drain().await;
    assert_eq!(status.code(), Some(0));
    assert!(
        took >= ms(750),
        "cut after {took:?}, before the 800 ms grace"
    );
    assert!(took < Duration::from_secs(4), "took {took:?}");
    assert!(!p.seen().iter().any(|l| l.starts_with("end")));
    let events = p.log_events("cycle finished");
    assert_eq!(events.len(), 1, "{}", p.stderr());
    assert_eq!(events[0]["outcome"], "cancelled");
}

#[tokio::test]
async fn a_second_signal_cuts_the_cycle_at_once() {
    let mut p = Probe::spawn(probe_cmd("hang", 200, 600_000, 600_000));
    p.line("start 1", Duration::from_secs(10)).await;
    p.signal("TERM");
    tokio::time::sleep(ms(300)).await;
    let signalled = Instant::now();
    p.signal("TERM");
    let status = p.wait(Duration::from_secs(10)).await;
    let took = signalled.elapsed();
    // The exit can come before the last stderr lines were read: read them all first.
    p.drain().await;
    assert_eq!(status.code(), Some(0));
    assert!(took < Duration::from_secs(3), "took {took:?}");
    let events = p.log_events("cycle finished");
    assert_eq!(events.len(), 1, "{}", p.stderr());
    assert_eq!(events[0]["outcome"], "cancelled");
}

/// Collects datagrams from a bound NOTIFY_SOCKET until `until` matches one, or `timeout`.
async fn collect_notify(
    sock: &tokio::net::UnixDatagram,
    got: &mut Vec<String>,
    until: impl Fn(&str) -> bool,
    timeout: Duration,
) {
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, sock.recv(&mut buf)).await {
            Ok(Ok(n)) => {
                let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
                let done = until(&msg);
                got.push(msg);
                if done {
                    return;
                }
            }
            Ok(Err(e)) => panic!("recv on NOTIFY_SOCKET: {e}"),
            Err(_) => panic!("no matching sd_notify message within {timeout:?}; got {got:?}"),
        }
    }
}

#[tokio::test]
async fn sd_notify_messages_arrive_on_a_real_notify_socket() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify.sock");
    let sock = tokio::net::UnixDatagram::bind(&path).unwrap();

    // WatchdogSec=0.3 s: pings every 150 ms, also during the 700 ms first cycle.
    let mut cmd = probe_cmd("sleep:700,ok", 1_000, 5_000, 2_000);
    cmd.env("NOTIFY_SOCKET", &path)
        .env("WATCHDOG_USEC", "300000");
    let mut p = Probe::spawn(cmd);
    let mut got = Vec::new();
    collect_notify(
        &sock,
        &mut got,
        |m| m.contains("STATUS=tick 1 "),
        Duration::from_secs(10),
    )
    .await;
    assert!(
        got[0].lines().any(|l| l == "READY=1"),
        "first message must be READY=1: {got:?}"
    );
    let pings = got.iter().filter(|m| m.trim() == "WATCHDOG=1").count();
    assert!(
        pings >= 3,
        "expected watchdog pings during the 700 ms cycle: {got:?}"
    );
    let status = got.last().unwrap();
    assert!(
        status.contains("STATUS=tick 1 success: probe step Sleep(700ms) done"),
        "{status:?}"
    );
    p.line("end 1", Duration::from_secs(5)).await;

    p.signal("TERM");
    collect_notify(
        &sock,
        &mut got,
        |m| m.lines().any(|l| l == "STOPPING=1"),
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(p.wait(Duration::from_secs(10)).await.code(), Some(0));

    // Without WATCHDOG_USEC there are no pings, but READY and STATUS still arrive.
    let path2 = dir.path().join("notify2.sock");
    let sock2 = tokio::net::UnixDatagram::bind(&path2).unwrap();
    let mut cmd = probe_cmd("sleep:400,ok", 200, 5_000, 2_000);
    cmd.env("NOTIFY_SOCKET", &path2);
    let mut p = Probe::spawn(cmd);
    let mut got2 = Vec::new();
    collect_notify(
        &sock2,
        &mut got2,
        |m| m.contains("STATUS=tick 3 "),
        Duration::from_secs(10),
    )
    .await;
    assert!(got2[0].contains("READY=1"), "{got2:?}");
    assert!(
        !got2.iter().any(|m| m.contains("WATCHDOG=1")),
        "watchdog pings without WATCHDOG_USEC: {got2:?}"
    );
    p.signal("TERM");
    assert_eq!(p.wait(Duration::from_secs(10)).await.code(), Some(0));
}

/// Fetches one URL through `ctx.retry` with a fast policy; reports how it went.
struct FetchWithRetry {
    url: String,
}

impl Cycle for FetchWithRetry {
    type Report = String;

    async fn run(&mut self, ctx: &CycleContext) -> Result<String, CycleError> {
        keeper_runtime::install_crypto_provider();
        let client = keeper_runtime::http::client(Duration::from_secs(2));
        let policy = keeper_runtime::retry::backoff(4, ms(20), ms(100));
        let body = ctx
            .retry("sink", policy, || {
                keeper_runtime::http::send("sink", client.get(&self.url), Duration::from_secs(2))
            })
            .await
            .map_err(|e| CycleError::failed(e.to_string()))?;
        Ok(String::from_utf8_lossy(&body).into_owned())
    }
}

#[tokio::test]
async fn cycle_retries_transient_http_errors_within_its_deadline() {
    use keeper_tests::sink::Reply;
    let sink = Sink::start().await;
    let (mut r, _, _) = runner("retry", timing(60_000, 800, 1_000), Alerter::disabled());
    let mut cycle = FetchWithRetry {
        url: sink.url_for("/price"),
    };

    // Two 503s, then the default 200: three requests, success.
    sink.set_default(Reply::text(200, "1.0001"));
    sink.enqueue(Reply::status(503), 2);
    let run = r.run_once(&mut cycle).await;
    assert_eq!(run.result.unwrap(), "1.0001");
    assert_eq!(sink.count(), 3);

    // A 400 is not transient: one request, the cycle fails with the upstream's answer.
    sink.clear();
    sink.enqueue(Reply::text(400, "{\"error\":\"bad asset\"}"), 1);
    let run = r.run_once(&mut cycle).await;
    assert_eq!(run.exit_code(), 1);
    assert!(run.result.unwrap_err().message().contains("HTTP 400"));
    assert_eq!(sink.count(), 1);

    // A 429 asking for 5 s would outlive the 800 ms cycle: give up at once, well before the
    // timeout, with the rate-limit error rather than a timeout.
    sink.clear();
    sink.enqueue(Reply::status(429).header("retry-after", "5"), 1);
    let started = Instant::now();
    let run = r.run_once(&mut cycle).await;
    assert_eq!(run.outcome, Outcome::Failure);
    assert!(
        run.result.unwrap_err().message().contains("rate limited"),
        "expected the 429 to surface"
    );
    assert_eq!(sink.count(), 1);
    assert!(started.elapsed() < ms(700));
}

#[test]
fn runner_future_is_send() {
    fn assert_send<T: Send>(_: &T) {}
    let (mut r, _, _) = runner("send", timing(1_000, 1_000, 1_000), Alerter::disabled());
    let mut cycle = Scripted::new(&[1], 1);
    let fut = r.run_forever(&mut cycle);
    // Keepers spawn the loop on the runtime, which needs a Send future.
    assert_send(&fut);
}

#[tokio::test]
async fn a_supervised_task_that_panics_is_logged_and_restarted() {
    let mut cmd = probe_cmd("ok", 200, 1_000, 2_000);
    cmd.env("PROBE_TASK", "panic:2");
    let mut p = Probe::spawn(cmd);
    p.line("task start 3", Duration::from_secs(20)).await;
    let restarts = p.log_events("supervised task stopped early: restarting it");
    assert_eq!(restarts.len(), 2, "{}", p.stderr());
    assert_eq!(restarts[0]["task"], "probe-side-task", "{}", restarts[0]);
    assert_eq!(
        restarts[0]["reason"], "panicked: scripted side-task panic 1",
        "{}",
        restarts[0]
    );
    // Still serving its cycles, and a stop is clean.
    p.line("end", Duration::from_secs(10)).await;
    p.signal("TERM");
    let status = p.wait(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0), "{}", p.stderr());
}

#[tokio::test]
async fn a_critical_task_that_ends_stops_the_process_with_exit_code_1() {
    let mut cmd = probe_cmd("ok", 200, 1_000, 2_000);
    cmd.env("PROBE_TASK", "end:300");
    let mut p = Probe::spawn(cmd);
    p.line("task start 1", Duration::from_secs(20)).await;
    let status = p.wait(Duration::from_secs(20)).await;
    p.drain().await;
    assert_eq!(status.code(), Some(1), "{:?}\n{}", p.seen(), p.stderr());
    let stops = p.log_events("supervised task stopped early: stopping the process");
    assert_eq!(stops.len(), 1, "{}", p.stderr());
    assert_eq!(stops[0]["task"], "probe-side-task", "{}", stops[0]);
    assert_eq!(stops[0]["reason"], "returned", "{}", stops[0]);
    assert!(
        !p.seen().iter().any(|l| l.starts_with("task start 2")),
        "a stopping task is not restarted: {:?}",
        p.seen()
    );
}

#[tokio::test]
async fn the_stop_waits_for_supervised_tasks_within_the_grace_period() {
    // The side task runs (after one restart) until the stop and ends with it.
    let mut cmd = probe_cmd("ok", 200, 1_000, 2_000);
    cmd.env("PROBE_TASK", "panic:1");
    let mut p = Probe::spawn(cmd);
    p.line("task start 2", Duration::from_secs(20)).await;
    let began = Instant::now();
    p.signal("TERM");
    let status = p.wait(Duration::from_secs(20)).await;
    p.drain().await;
    assert_eq!(status.code(), Some(0), "{}", p.stderr());
    assert!(
        began.elapsed() < Duration::from_secs(2),
        "{:?}",
        began.elapsed()
    );
    assert!(
        !p.seen().iter().any(|l| l.starts_with("late")),
        "every task stopped in time: {:?}",
        p.seen()
    );
}

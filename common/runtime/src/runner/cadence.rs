//! When a cycle is due: a fixed interval, or a cron schedule with a heartbeat.

use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::Runner;
use super::{CRON_HEARTBEAT, cron};
use crate::telemetry::metrics::labels;

/// What says a cycle is due: a fixed interval, or a cron schedule.
pub(super) enum Ticker {
    Interval(Interval),
    Cron(cron::CronTicker, String),
}

impl Runner {
    pub(super) fn ticker(&self) -> Ticker {
        if let Some(schedule) = &self.cron {
            let (metrics, keeper) = (self.metrics.clone(), self.keeper.clone());
            let ticker = cron::CronTicker::start(schedule.clone(), move || {
                metrics
                    .ticks_skipped
                    .get_or_create(&labels([("keeper", &keeper)]))
                    .inc();
                tracing::warn!(keeper = %keeper, "a cycle is due while one is still waiting: skipped");
            });
            return Ticker::Cron(ticker, schedule.to_string());
        }
        let mut interval = tokio::time::interval(self.timing.interval);
        interval.set_missed_tick_behavior(MissedTickBehavior::Skip);
        Ticker::Interval(interval)
    }
}

impl Ticker {
    /// Waits until a cycle is due; how many ticks were missed meanwhile (`None`: no more).
    pub(super) async fn due(&mut self) -> Option<u64> {
        match self {
            Self::Interval(i) => {
                let scheduled = i.tick().await;
                let late = Instant::now().saturating_duration_since(scheduled);
                Some((late.as_nanos() / i.period().as_nanos()) as u64)
            }
            Self::Cron(c, _) => c.due().await.map(|()| 0),
        }
    }

    /// Liveness between cycles: only a cron schedule needs one (an interval ticks often).
    pub(super) fn heartbeat(&self) -> Option<Interval> {
        match self {
            Self::Interval(_) => None,
            Self::Cron(..) => Some(tokio::time::interval_at(
                Instant::now() + CRON_HEARTBEAT,
                CRON_HEARTBEAT,
            )),
        }
    }

    pub(super) fn describe(&self) -> String {
        match self {
            Self::Interval(i) => format!("ticking every {} s", i.period().as_secs_f64()),
            Self::Cron(_, schedule) => format!("on schedule {schedule}"),
        }
    }

    pub(super) fn stop(self) {
        match self {
            Self::Interval(_) => {}
            Self::Cron(c, _) => c.stop(),
        }
    }
}

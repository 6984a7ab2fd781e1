//! Cron schedules, parsed in one place: the runner's cron cadence, the backup schedule's
//! validation and staleness period, and the restore drills all read a [`Schedule`].

use std::fmt;
use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds};

/// Firings looked at to find a schedule's period: enough to see the longer gap of an irregular
/// schedule such as `0 0 2,14 * * *`.
const PERIOD_SAMPLES: usize = 8;

/// A cron expression that does not parse.
#[derive(Debug, thiserror::Error)]
#[error("cron schedule {schedule:?}: {reason}")]
pub struct CronError {
    /// The expression as given.
    pub schedule: String,
    /// What the parser said.
    pub reason: String,
}

/// A cron schedule in UTC: six fields, seconds first (a five-field expression fires at second
/// 0); when both a day of month and a day of week are given, a day must match both.
#[derive(Debug, Clone)]
pub struct Schedule {
    expr: String,
    cron: Cron,
}

impl Schedule {
    /// Parses `expr` (five or six fields).
    pub fn parse(expr: &str) -> Result<Self, CronError> {
        let trimmed = expr.trim();
        let six = if trimmed.split_whitespace().count() == 5 {
            format!("0 {trimmed}")
        } else {
            trimmed.to_owned()
        };
        let cron = CronParser::builder()
            .seconds(Seconds::Required)
            .dom_and_dow(true)
            .build()
            .parse(&six)
            .map_err(|e| CronError {
                schedule: expr.to_owned(),
                reason: e.to_string(),
            })?;
        Ok(Self { expr: six, cron })
    }

    /// The six-field expression.
    pub fn as_str(&self) -> &str {
        &self.expr
    }

    /// The first firing strictly after `after`, if the schedule fires again.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.find_next_occurrence(&after, false).ok()
    }

    /// The longest gap between consecutive firings over the next few occurrences (`None` for a
    /// schedule that does not fire twice): for staleness, an irregular schedule counts its
    /// longer gap.
    pub fn period(&self) -> Option<Duration> {
        let mut t = self.next_after(Utc::now())?;
        let mut longest = chrono::TimeDelta::zero();
        for _ in 0..PERIOD_SAMPLES {
            let next = self.next_after(t)?;
            longest = longest.max(next - t);
            t = next;
        }
        longest.to_std().ok().filter(|d| !d.is_zero())
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.expr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_fields_fire_at_second_zero_and_six_stay_as_given() {
        assert_eq!(
            Schedule::parse(" */5 * * * * ").unwrap().as_str(),
            "0 */5 * * * *"
        );
        assert_eq!(
            Schedule::parse("0 0 */6 * * *").unwrap().as_str(),
            "0 0 */6 * * *"
        );
        let e = Schedule::parse("every day").unwrap_err();
        assert_eq!(e.schedule, "every day");
    }

    #[test]
    fn next_firing_and_period_follow_the_expression() {
        // Gaps of 6 h and 18 h: staleness counts the longer one.
        let s = Schedule::parse("0 0 2,8 * * *").unwrap();
        let t = DateTime::parse_from_rfc3339("2025-01-01T03:00:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(
            s.next_after(t).unwrap().to_rfc3339(),
            "2025-01-01T08:00:00+00:00"
        );
        assert_eq!(s.period(), Some(Duration::from_secs(18 * 3600)));
        assert_eq!(
            Schedule::parse("0 0 0 1 1 * 2020")
                .ok()
                .and_then(|s| s.period()),
            None
        );
    }
}

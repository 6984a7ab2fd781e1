//! GFS retention: which backups to keep and which to delete.
//!
//! Buckets are calendar days, ISO weeks and months (UTC). As in restic's `--keep-daily` and
//! friends, "the last N days" means the last N days *that have a backup*, so a job that stopped
//! for a fortnight does not find its history pruned away on restart. The newest backup and the
//! newest verified backup are always kept.

use std::collections::BTreeMap;

use chrono::Datelike;
use serde::Serialize;

use crate::manifest::BackupId;

/// How many of each bucket to keep.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The N newest backups, whatever their dates.
    pub last: u32,
    /// Newest backup of each of the last N days that have one.
    pub daily: u32,
    /// Newest backup of each of the last N ISO weeks that have one.
    pub weekly: u32,
    /// Newest backup of each of the last N months that have one.
    pub monthly: u32,
}

/// Why a backup is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// The newest backup of all.
    Newest,
    /// The newest backup whose verification passed.
    NewestVerified,
    /// One of the `last` newest.
    Last,
    /// A daily keeper.
    Daily,
    /// A weekly keeper.
    Weekly,
    /// A monthly keeper.
    Monthly,
}

/// The decision for one set of backups.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Plan {
    /// Kept backups and why, newest first.
    pub keep: Vec<(BackupId, Vec<Reason>)>,
    /// Backups to delete, newest first.
    pub delete: Vec<BackupId>,
}

/// Maps a backup to its calendar bucket (year and day, week or month).
type BucketOf = fn(&BackupId) -> (i32, u32);

/// Decides over `backups` (identity and whether verified), which may be in any order.
pub fn plan(backups: &[(BackupId, bool)], policy: Policy) -> Plan {
    let mut sorted: Vec<&(BackupId, bool)> = backups.iter().collect();
    sorted.sort_by(|a, b| b.0.cmp(&a.0));
    sorted.dedup_by(|a, b| a.0 == b.0);
    let mut reasons: BTreeMap<&BackupId, Vec<Reason>> = BTreeMap::new();
    if let Some((id, _)) = sorted.first() {
        reasons.entry(id).or_default().push(Reason::Newest);
    }
    if let Some((id, _)) = sorted.iter().find(|(_, verified)| *verified) {
        reasons.entry(id).or_default().push(Reason::NewestVerified);
    }
    for (id, _) in sorted.iter().take(policy.last as usize) {
        reasons.entry(id).or_default().push(Reason::Last);
    }
    let buckets: [(Reason, u32, BucketOf); 3] = [
        (Reason::Daily, policy.daily, |id| {
            (id.at.year(), id.at.ordinal())
        }),
        (Reason::Weekly, policy.weekly, |id| {
            let w = id.at.iso_week();
            (w.year(), w.week())
        }),
        (Reason::Monthly, policy.monthly, |id| {
            (id.at.year(), id.at.month())
        }),
    ];
    for (reason, count, bucket_of) in buckets {
        let mut left = count;
        let mut last = None;
        for (id, _) in &sorted {
            if left == 0 {
                break;
            }
            let b = bucket_of(id);
            if last != Some(b) {
                last = Some(b);
                reasons.entry(id).or_default().push(reason);
                left -= 1;
            }
        }
    }
    let mut out = Plan::default();
    for (id, _) in sorted {
        match reasons.remove(id) {
            Some(mut r) => {
                r.sort();
                out.keep.push((id.clone(), r));
            }
            None => out.delete.push(id.clone()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Duration, TimeZone, Utc};

    fn id(at: DateTime<Utc>) -> BackupId {
        BackupId::new("app", at)
    }

    const GFS: Policy = Policy {
        last: 0,
        daily: 7,
        weekly: 4,
        monthly: 6,
    };

    #[test]
    fn a_year_of_six_hourly_backups_keeps_the_gfs_set() {
        // 2026-01-01 00:00 to 2026-12-31 18:00, every 6 h.
        let start = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let all: Vec<(BackupId, bool)> = (0..365 * 4)
            .map(|i| (id(start + Duration::hours(6 * i)), false))
            .collect();
        let p = plan(&all, GFS);
        assert_eq!(p.keep.len() + p.delete.len(), all.len());
        let kept: Vec<String> = p.keep.iter().map(|(i, _)| i.base()).collect();
        // Daily: the 18:00 backup of Dec 25..31. Weekly: Sundays' last backups of ISO weeks 53
        // (Dec 28 – Jan 3 2027 is week 53 of 2026; its newest here is Dec 31), 52, 51, 50.
        // Monthly: the last backup of Dec, Nov, Oct, Sep, Aug, Jul.
        let expect = [
            "app-20261231T180000Z", // newest, daily, weekly, monthly
            "app-20261230T180000Z",
            "app-20261229T180000Z",
            "app-20261228T180000Z",
            "app-20261227T180000Z", // daily + weekly (Sunday of week 52)
            "app-20261226T180000Z",
            "app-20261225T180000Z",
            "app-20261220T180000Z", // week 51
            "app-20261213T180000Z", // week 50
            "app-20261130T180000Z", // November
            "app-20261031T180000Z",
            "app-20260930T180000Z",
            "app-20260831T180000Z",
            "app-20260731T180000Z",
        ];
        assert_eq!(kept, expect);
        assert_eq!(
            p.keep[0].1,
            vec![
                Reason::Newest,
                Reason::Daily,
                Reason::Weekly,
                Reason::Monthly
            ]
        );
    }

    #[test]
    fn newest_verified_survives_and_gaps_do_not_prune_history() {
        let t = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
        // Verified only long ago; ten unverified backups on the same day since.
        let mut all = vec![(id(t - Duration::days(400)), true)];
        all.extend((0..10).map(|i| (id(t + Duration::minutes(i)), false)));
        let p = plan(
            &all,
            Policy {
                last: 0,
                daily: 1,
                weekly: 0,
                monthly: 0,
            },
        );
        let kept: Vec<&BackupId> = p.keep.iter().map(|(i, _)| i).collect();
        assert_eq!(kept, vec![&all[10].0, &all[0].0]);
        assert_eq!(p.keep[1].1, vec![Reason::NewestVerified]);
        assert_eq!(p.delete.len(), 9);

        // A 30-day gap: the seven daily keepers reach back across it.
        let before: Vec<(BackupId, bool)> = (0..5)
            .map(|d| (id(t - Duration::days(40 + d)), false))
            .collect();
        let after: Vec<(BackupId, bool)> =
            (0..3).map(|d| (id(t + Duration::days(d)), false)).collect();
        let all: Vec<_> = before.iter().chain(&after).cloned().collect();
        let p = plan(
            &all,
            Policy {
                last: 0,
                daily: 7,
                weekly: 0,
                monthly: 0,
            },
        );
        assert_eq!(p.keep.len(), 7);
        assert_eq!(p.delete, vec![all[4].0.clone()]);
    }

    #[test]
    fn empty_and_single() {
        assert_eq!(plan(&[], GFS), Plan::default());
        let one = [(id(Utc::now()), false)];
        let p = plan(
            &one,
            Policy {
                last: 0,
                daily: 0,
                weekly: 0,
                monthly: 1,
            },
        );
        assert_eq!(p.delete.len(), 0);
    }

    #[test]
    fn keep_last_keeps_the_newest_whatever_the_day() {
        let t = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
        let day: Vec<(BackupId, bool)> = (0..4)
            .map(|h| (id(t + Duration::hours(6 * h)), false))
            .collect();
        let p = plan(&day, Policy { last: 3, ..GFS });
        assert_eq!(p.delete, vec![day[0].0.clone()]);
        assert_eq!(p.keep[2].1, vec![Reason::Last]);
        assert_eq!(plan(&day, GFS).delete.len(), 3);
    }
}

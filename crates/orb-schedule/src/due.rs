//! What a scheduler does when it wakes, or restarts after downtime: [`due`] compares the stored
//! `next_fire_at` of one schedule with now and says whether to fire, how many firings were
//! missed and what to store as the new `next_fire_at`.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::next::Compiled;
use crate::{MissedPolicy, Spec};

/// The most missed firings [`due`] counts; past it, [`Due::missed`] says "at least this many".
/// Keeps the count of a per-second cron expression after a long downtime to bounded work.
pub const MISSED_CAP: u64 = 10_000;

/// What to do with one schedule now. See [`due`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// Submit the schedule's command now: a firing is on time, or firings were missed and the
    /// policy is [`MissedPolicy::RunOnce`]. Never means more than one submission.
    pub fire_now: bool,
    /// Firings that fell due but were not on time, up to [`MISSED_CAP`]: dropped under
    /// [`MissedPolicy::Skip`], folded into the one `fire_now` under [`MissedPolicy::RunOnce`].
    /// For the log and metrics.
    pub missed: u64,
    /// The new `next_fire_at` to store: the first firing strictly after now, or `None` when the
    /// schedule is finished (a fired or missed [`Spec::At`]) and can be removed.
    pub next: Option<DateTime<Utc>>,
}

/// Decides what a scheduler does with one schedule at `now`, given the `next_fire_at` it stored.
///
/// The scheduler persists, per schedule, the [`Spec`], the [`MissedPolicy`] and `next_fire_at`
/// (at creation: [`crate::next_after`]`(spec, created_at)`). On each wake-up, and for every
/// schedule on restart, it calls this and stores [`Due::next`]; nothing else needs storing,
/// and a crash between firing and storing can at worst fire once more.
///
/// The firings in `next_fire_at..=now` are due. The latest of them is **on time** if it is no
/// older than `grace` (the scheduler's own lateness: a tick, a busy store; a minute is a fair
/// default) and fires whatever the policy. The others are **missed**: dropped under
/// [`MissedPolicy::Skip`], or, under [`MissedPolicy::RunOnce`], covered by a single firing now.
/// So a daily 09:00 job whose server was down from 08:00 to 10:00 is skipped, or run once at
/// 10:00; one whose server was down from 08:00 to 09:00:20 runs at 09:00:20 either way.
///
/// Missed firings are counted by arithmetic for [`Spec::Every`] and by at most
/// [`MISSED_CAP`] look-ups for a cron expression. An invalid `spec` (see [`Spec::validate`])
/// never fires and returns `next: None`.
pub fn due(spec: &Spec, policy: MissedPolicy, next_fire_at: DateTime<Utc>, now: DateTime<Utc>, grace: Duration) -> Due {
    let Some(schedule) = Compiled::new(spec) else {
        return Due { fire_now: false, missed: 0, next: None };
    };
    if now < next_fire_at {
        return Due { fire_now: false, missed: 0, next: Some(next_fire_at) };
    }
    // Firings at or after this are on time; a grace too large to subtract covers everything.
    let on_time_from = TimeDelta::from_std(grace)
        .ok()
        .and_then(|grace| now.checked_sub_signed(grace))
        .map_or(next_fire_at, |start| start.max(next_fire_at));
    let on_time = schedule.first_at_or_after(on_time_from).is_some_and(|t| t <= now);
    let missed = schedule.count(next_fire_at, now, MISSED_CAP + 1).saturating_sub(u64::from(on_time)).min(MISSED_CAP);
    Due { fire_now: on_time || (policy == MissedPolicy::RunOnce && missed > 0), missed, next: schedule.next_after(now) }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{parse_cron, parse_every};
    use chrono::TimeZone;

    const GRACE: Duration = Duration::from_secs(60);

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    fn both(spec: &Spec, next_fire_at: DateTime<Utc>, now: DateTime<Utc>) -> (Due, Due) {
        (
            due(spec, MissedPolicy::Skip, next_fire_at, now, GRACE),
            due(spec, MissedPolicy::RunOnce, next_fire_at, now, GRACE),
        )
    }

    #[test]
    fn not_yet_due_keeps_next_fire_at() {
        let spec = parse_every("5m", utc(2026, 1, 1, 0, 0, 0)).unwrap();
        let next = utc(2026, 1, 1, 0, 5, 0);
        let (skip, run_once) = both(&spec, next, utc(2026, 1, 1, 0, 4, 59));
        let idle = Due { fire_now: false, missed: 0, next: Some(next) };
        assert_eq!((skip, run_once), (idle, idle));
    }

    #[test]
    fn on_time_fires_under_both_policies() {
        let spec = parse_every("5m", utc(2026, 1, 1, 0, 0, 0)).unwrap();
        let next = utc(2026, 1, 1, 0, 5, 0);
        let late = next + TimeDelta::milliseconds(30);
        let expected = Due { fire_now: true, missed: 0, next: Some(utc(2026, 1, 1, 0, 10, 0)) };
        assert_eq!(both(&spec, next, late), (expected, expected));
    }

    #[test]
    fn every_after_downtime_counts_missed_by_arithmetic() {
        let spec = parse_every("1s", utc(2026, 1, 1, 0, 0, 0)).unwrap();
        let next_fire_at = utc(2026, 1, 1, 0, 0, 1);
        // Down for a day: 86_400 firings were due; the last one (now) is on time.
        let now = utc(2026, 1, 2, 0, 0, 0);
        let (skip, run_once) = both(&spec, next_fire_at, now);
        let expected = Due { fire_now: true, missed: MISSED_CAP, next: Some(now + TimeDelta::seconds(1)) };
        assert_eq!((skip, run_once), (expected, expected));

        // Hourly, down from 00:30 to 03:10: 01:00, 02:00, 03:00 missed, none on time.
        let spec = parse_every("1h", utc(2026, 1, 1, 0, 0, 0)).unwrap();
        let (skip, run_once) = both(&spec, utc(2026, 1, 1, 1, 0, 0), utc(2026, 1, 1, 3, 10, 0));
        let next = Some(utc(2026, 1, 1, 4, 0, 0));
        assert_eq!(skip, Due { fire_now: false, missed: 3, next });
        assert_eq!(run_once, Due { fire_now: true, missed: 3, next });
    }

    #[test]
    fn cron_after_downtime() {
        // Daily 09:00 Berlin (08:00Z in winter); down from the 10th 08:00Z to the 12th 10:00Z.
        let spec = parse_cron("0 9 * * *", "Europe/Berlin").unwrap();
        let (skip, run_once) = both(&spec, utc(2026, 1, 10, 8, 0, 0), utc(2026, 1, 12, 10, 0, 0));
        let next = Some(utc(2026, 1, 13, 8, 0, 0));
        assert_eq!(skip, Due { fire_now: false, missed: 3, next });
        assert_eq!(run_once, Due { fire_now: true, missed: 3, next });

        // Back within grace of the latest firing: it is on time, the earlier ones are missed.
        let (skip, run_once) = both(&spec, utc(2026, 1, 10, 8, 0, 0), utc(2026, 1, 12, 8, 0, 20));
        let expected = Due { fire_now: true, missed: 2, next };
        assert_eq!((skip, run_once), (expected, expected));
    }

    #[test]
    fn cron_missed_count_is_capped() {
        let spec = parse_cron("* * * * * *", "UTC").unwrap();
        let from = utc(2026, 1, 1, 0, 0, 0);
        let d = due(&spec, MissedPolicy::Skip, from, from + TimeDelta::days(1), GRACE);
        assert_eq!(d.missed, MISSED_CAP);
        assert!(d.fire_now);
    }

    #[test]
    fn at_missed_is_dropped_or_run_once_and_then_finished() {
        let at = utc(2026, 1, 1, 9, 0, 0);
        let spec = Spec::At { at };
        let (skip, run_once) = both(&spec, at, utc(2026, 1, 1, 12, 0, 0));
        assert_eq!(skip, Due { fire_now: false, missed: 1, next: None });
        assert_eq!(run_once, Due { fire_now: true, missed: 1, next: None });
        // On time: fires, and is finished.
        let (skip, _) = both(&spec, at, at + TimeDelta::seconds(1));
        assert_eq!(skip, Due { fire_now: true, missed: 0, next: None });
    }

    #[test]
    fn invalid_spec_never_fires_and_finishes() {
        let spec = Spec::Cron { expr: "61 * * * *".into(), tz: "UTC".into() };
        let now = utc(2026, 1, 1, 0, 0, 0);
        assert_eq!(due(&spec, MissedPolicy::RunOnce, now, now, GRACE), Due { fire_now: false, missed: 0, next: None });
    }
}

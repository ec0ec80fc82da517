//! When a [`Spec`] fires: [`next_after`] and [`preview`] (for `orb schedule preview`), over a
//! crate-internal [`Compiled`] form that parses a cron expression once for a run of look-ups.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::cron::CronSchedule;
use crate::{MAX_EVERY, MIN_EVERY, Spec};

/// The most firing times [`preview`] returns, whatever count it is asked for.
pub const MAX_PREVIEW: usize = 1000;

/// The first firing of `spec` strictly after `after`; `None` when there is none (an
/// [`Spec::At`] at or before `after`, a cron expression with no match before the year 5000) or
/// when `spec` is invalid (see [`Spec::validate`]).
///
/// [`Spec::Every`] is pure arithmetic on the anchored grid `anchor + k·every`, so it never
/// drifts; before the anchor, the next firing is the anchor itself.
///
/// [`Spec::Cron`] matches the wall clock in its zone, to the second (croner 4). Where daylight
/// saving time moves the clock:
///
/// - **Spring forward** (Berlin 02:00→03:00): a job whose second, minute and hour are single
///   values (`30 2 * * *`) fires once, at the first instant after the gap (03:00), as in Vixie
///   cron. Any other job (`*/30 * * * *`, `0 * * * *`, `30 2,14 * * *`) skips the wall-clock
///   times that do not exist that day.
/// - **Fall back** (Berlin 03:00→02:00): a job whose second, minute or hour field starts with
///   `*` (`*/30 * * * *`, `0 * * * *`) runs on elapsed time and fires in both passes of the
///   repeated hour. Any other job (`30 2 * * *`, `30 2,14 * * *`) fires once, on the first
///   pass, as in Vixie cron.
pub fn next_after(spec: &Spec, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    Compiled::new(spec)?.next_after(after)
}

/// The next `count` firings of `spec` strictly after `from`, in order, capped at
/// [`MAX_PREVIEW`]; fewer when the schedule ends (a one-shot [`Spec::At`]), none when `spec`
/// is invalid.
pub fn preview(spec: &Spec, from: DateTime<Utc>, count: usize) -> Vec<DateTime<Utc>> {
    let Some(schedule) = Compiled::new(spec) else {
        return Vec::new();
    };
    std::iter::successors(schedule.next_after(from), |t| schedule.next_after(*t)).take(count.min(MAX_PREVIEW)).collect()
}

/// A [`Spec`] ready to evaluate many times.
pub(crate) enum Compiled {
    At(DateTime<Utc>),
    Every {
        /// Milliseconds, in `MIN_EVERY..=MAX_EVERY`, so products with step counts stay small.
        every_ms: i64,
        anchor: DateTime<Utc>,
    },
    Cron(Box<CronSchedule>),
}

impl Compiled {
    /// `None` for a spec that [`Spec::validate`] refuses (other than one that never fires).
    pub(crate) fn new(spec: &Spec) -> Option<Self> {
        Some(match spec {
            Spec::At { at } => Self::At(*at),
            Spec::Every { every_ms, anchor } => {
                let every = Duration::from_millis(*every_ms);
                if !(MIN_EVERY..=MAX_EVERY).contains(&every) {
                    return None;
                }
                Self::Every { every_ms: i64::try_from(*every_ms).ok()?, anchor: *anchor }
            }
            Spec::Cron { expr, tz } => Self::Cron(Box::new(CronSchedule::compile(expr, tz).ok()?)),
        })
    }

    /// The first firing strictly after `after`.
    pub(crate) fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Self::At(at) => (*at > after).then_some(*at),
            Self::Every { every_ms, anchor } => {
                if after < *anchor {
                    return Some(*anchor);
                }
                // Whole milliseconds since the anchor, rounded down: the firings are whole
                // milliseconds apart, so this finds the last one at or before `after`.
                let steps = (after - *anchor).num_milliseconds() / every_ms + 1;
                anchor.checked_add_signed(TimeDelta::try_milliseconds(steps.checked_mul(*every_ms)?)?)
            }
            Self::Cron(cron) => cron.next_after(after),
        }
    }

    /// The first firing at or after `t`.
    pub(crate) fn first_at_or_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.next_after(t.checked_sub_signed(TimeDelta::nanoseconds(1))?)
    }

    /// How many firings fall in `from..=to`, counting no further than `cap`. Arithmetic for
    /// [`Spec::Every`]; at most `cap` look-ups for a cron expression.
    pub(crate) fn count(&self, from: DateTime<Utc>, to: DateTime<Utc>, cap: u64) -> u64 {
        let Some(first) = self.first_at_or_after(from).filter(|first| *first <= to) else {
            return 0;
        };
        match self {
            Self::Every { every_ms, .. } => {
                let later = (to - first).num_milliseconds() / every_ms;
                u64::try_from(later).map_or(cap, |later| later.saturating_add(1).min(cap))
            }
            Self::At(_) | Self::Cron(_) => {
                let mut count = 0;
                let mut next = Some(first);
                while let Some(t) = next
                    && t <= to
                    && count < cap
                {
                    count += 1;
                    next = self.next_after(t);
                }
                count
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{parse_cron, parse_every};
    use chrono::TimeZone;
    use proptest::prelude::*;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    fn cron(expr: &str, tz: &str) -> Spec {
        parse_cron(expr, tz).unwrap()
    }

    // === at / every ===

    #[test]
    fn at_fires_once_then_never() {
        let t = utc(2026, 12, 7, 17, 0, 0);
        let spec = Spec::At { at: t };
        assert_eq!(next_after(&spec, t - TimeDelta::seconds(1)), Some(t));
        assert_eq!(next_after(&spec, t), None);
        assert_eq!(preview(&spec, utc(2026, 1, 1, 0, 0, 0), 5), vec![t]);
    }

    #[test]
    fn every_is_anchored_and_does_not_drift() {
        let anchor = utc(2026, 1, 1, 0, 0, 0);
        let spec = parse_every("1s", anchor).unwrap();
        assert_eq!(next_after(&spec, anchor), Some(utc(2026, 1, 1, 0, 0, 1)));
        // Asked late, it still lands on the grid.
        let late = anchor + TimeDelta::milliseconds(2_700);
        assert_eq!(next_after(&spec, late), Some(utc(2026, 1, 1, 0, 0, 3)));
        // Before the anchor, the anchor is next.
        assert_eq!(next_after(&spec, anchor - TimeDelta::days(1)), Some(anchor));

        let spec = parse_every("90m", anchor).unwrap();
        assert_eq!(
            preview(&spec, utc(2026, 3, 1, 0, 10, 0), 3),
            vec![utc(2026, 3, 1, 1, 30, 0), utc(2026, 3, 1, 3, 0, 0), utc(2026, 3, 1, 4, 30, 0)]
        );
    }

    #[test]
    fn invalid_specs_never_fire() {
        let anchor = utc(2026, 1, 1, 0, 0, 0);
        let zero = Spec::Every { every_ms: 0, anchor };
        assert_eq!(next_after(&zero, anchor), None);
        let bad = Spec::Cron { expr: "nonsense".into(), tz: "UTC".into() };
        assert!(preview(&bad, anchor, 3).is_empty());
    }

    #[test]
    fn preview_is_capped() {
        let spec = cron("* * * * * *", "UTC");
        assert_eq!(preview(&spec, utc(2026, 1, 1, 0, 0, 0), 5000).len(), MAX_PREVIEW);
    }

    // === cron edge cases (UTC) ===

    fn next_n(spec: &Spec, from: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        preview(spec, from, n)
    }

    #[test]
    fn cron_steps_ranges_and_lists() {
        let from = utc(2026, 1, 1, 0, 7, 0);
        assert_eq!(
            next_n(&cron("*/15 * * * *", "UTC"), from, 3),
            vec![utc(2026, 1, 1, 0, 15, 0), utc(2026, 1, 1, 0, 30, 0), utc(2026, 1, 1, 0, 45, 0)]
        );
        // 2026-01-01 is a Thursday; weekdays 09:00-10:00 on the hour.
        assert_eq!(
            next_n(&cron("0 9-10 * * MON-FRI", "UTC"), from, 4),
            vec![
                utc(2026, 1, 1, 9, 0, 0),
                utc(2026, 1, 1, 10, 0, 0),
                utc(2026, 1, 2, 9, 0, 0),
                utc(2026, 1, 2, 10, 0, 0)
            ]
        );
        assert_eq!(
            next_n(&cron("0 8,20 1,15 * *", "UTC"), from, 3),
            vec![utc(2026, 1, 1, 8, 0, 0), utc(2026, 1, 1, 20, 0, 0), utc(2026, 1, 15, 8, 0, 0)]
        );
    }

    #[test]
    fn cron_six_fields_have_seconds() {
        assert_eq!(
            next_n(&cron("*/20 * * * * *", "UTC"), utc(2026, 1, 1, 0, 0, 5), 3),
            vec![utc(2026, 1, 1, 0, 0, 20), utc(2026, 1, 1, 0, 0, 40), utc(2026, 1, 1, 0, 1, 0)]
        );
    }

    #[test]
    fn cron_next_is_strictly_after_even_mid_second() {
        let spec = cron("* * * * * *", "UTC");
        let t = utc(2026, 1, 1, 0, 0, 0);
        assert_eq!(next_after(&spec, t), Some(utc(2026, 1, 1, 0, 0, 1)));
        assert_eq!(next_after(&spec, t + TimeDelta::milliseconds(500)), Some(utc(2026, 1, 1, 0, 0, 1)));
    }

    #[test]
    fn cron_last_day_of_month() {
        assert_eq!(
            next_n(&cron("0 0 L * *", "UTC"), utc(2028, 1, 15, 0, 0, 0), 3),
            vec![utc(2028, 1, 31, 0, 0, 0), utc(2028, 2, 29, 0, 0, 0), utc(2028, 3, 31, 0, 0, 0)]
        );
    }

    #[test]
    fn cron_feb_29_waits_for_a_leap_year() {
        assert_eq!(
            next_n(&cron("0 0 29 2 *", "UTC"), utc(2026, 1, 1, 0, 0, 0), 2),
            vec![utc(2028, 2, 29, 0, 0, 0), utc(2032, 2, 29, 0, 0, 0)]
        );
    }

    #[test]
    fn cron_day_of_month_or_day_of_week_like_vixie() {
        // The 13th, or any Friday. February 2026: Fridays 6, 13, 20, 27; the 13th is one.
        assert_eq!(
            next_n(&cron("0 0 13 * 5", "UTC"), utc(2026, 2, 1, 0, 0, 0), 5),
            vec![
                utc(2026, 2, 6, 0, 0, 0),
                utc(2026, 2, 13, 0, 0, 0),
                utc(2026, 2, 20, 0, 0, 0),
                utc(2026, 2, 27, 0, 0, 0),
                utc(2026, 3, 6, 0, 0, 0)
            ]
        );
        // A `*` day-of-month leaves day-of-week alone in charge.
        assert_eq!(next_n(&cron("0 0 * * 5", "UTC"), utc(2026, 2, 1, 0, 0, 0), 1), vec![utc(2026, 2, 6, 0, 0, 0)]);
    }

    // === cron across DST ===

    #[test]
    fn berlin_spring_forward() {
        // 2026-03-29: 02:00 CET (01:00Z) jumps to 03:00 CEST.
        let from = utc(2026, 3, 28, 20, 0, 0);
        // Fixed time in the gap: once, at 03:00 CEST, then 02:30 CEST on later days.
        assert_eq!(
            next_n(&cron("30 2 * * *", "Europe/Berlin"), from, 2),
            vec![utc(2026, 3, 29, 1, 0, 0), utc(2026, 3, 30, 0, 30, 0)]
        );
        // Interval: 01:30 CET, then straight to 03:00 CEST.
        assert_eq!(
            next_n(&cron("*/30 * * * *", "Europe/Berlin"), utc(2026, 3, 29, 0, 15, 0), 3),
            vec![utc(2026, 3, 29, 0, 30, 0), utc(2026, 3, 29, 1, 0, 0), utc(2026, 3, 29, 1, 30, 0)]
        );
        // A list is not a single value: its 02:30 is skipped that day.
        assert_eq!(
            next_n(&cron("30 2,14 * * *", "Europe/Berlin"), from, 2),
            vec![utc(2026, 3, 29, 12, 30, 0), utc(2026, 3, 30, 0, 30, 0)]
        );
    }

    #[test]
    fn berlin_fall_back() {
        // 2026-10-25: 03:00 CEST (01:00Z) falls back to 02:00 CET; 02:00-03:00 happens twice.
        let from = utc(2026, 10, 24, 20, 0, 0);
        // Fixed time: once, on the first pass (02:30 CEST), then 02:30 CET next day.
        assert_eq!(
            next_n(&cron("30 2 * * *", "Europe/Berlin"), from, 2),
            vec![utc(2026, 10, 25, 0, 30, 0), utc(2026, 10, 26, 1, 30, 0)]
        );
        // A list fires once too.
        assert_eq!(
            next_n(&cron("30 2,14 * * *", "Europe/Berlin"), from, 2),
            vec![utc(2026, 10, 25, 0, 30, 0), utc(2026, 10, 25, 13, 30, 0)]
        );
        // Interval: both passes of the repeated hour.
        assert_eq!(
            next_n(&cron("*/30 * * * *", "Europe/Berlin"), utc(2026, 10, 24, 23, 45, 0), 5),
            vec![
                utc(2026, 10, 25, 0, 0, 0),
                utc(2026, 10, 25, 0, 30, 0),
                utc(2026, 10, 25, 1, 0, 0),
                utc(2026, 10, 25, 1, 30, 0),
                utc(2026, 10, 25, 2, 0, 0)
            ]
        );
    }

    #[test]
    fn new_york_spring_forward() {
        // 2026-03-08: 02:00 EST (07:00Z) jumps to 03:00 EDT.
        assert_eq!(
            next_n(&cron("30 2 * * *", "America/New_York"), utc(2026, 3, 7, 0, 0, 0), 3),
            vec![utc(2026, 3, 7, 7, 30, 0), utc(2026, 3, 8, 7, 0, 0), utc(2026, 3, 9, 6, 30, 0)]
        );
    }

    #[test]
    fn new_york_fall_back() {
        // 2026-11-01: 02:00 EDT (06:00Z) falls back to 01:00 EST; 01:00-02:00 happens twice.
        let from = utc(2026, 10, 31, 12, 0, 0);
        assert_eq!(
            next_n(&cron("30 1 * * *", "America/New_York"), from, 2),
            vec![utc(2026, 11, 1, 5, 30, 0), utc(2026, 11, 2, 6, 30, 0)]
        );
        assert_eq!(
            next_n(&cron("0,30 1 * * *", "America/New_York"), from, 3),
            vec![utc(2026, 11, 1, 5, 0, 0), utc(2026, 11, 1, 5, 30, 0), utc(2026, 11, 2, 6, 0, 0)]
        );
        // Hourly runs on elapsed time: 01:00 EDT and 01:00 EST both fire.
        assert_eq!(
            next_n(&cron("0 * * * *", "America/New_York"), utc(2026, 11, 1, 4, 30, 0), 3),
            vec![utc(2026, 11, 1, 5, 0, 0), utc(2026, 11, 1, 6, 0, 0), utc(2026, 11, 1, 7, 0, 0)]
        );
    }

    // === count (for `due`) ===

    #[test]
    fn count_is_inclusive_and_capped() {
        let anchor = utc(2026, 1, 1, 0, 0, 0);
        let every = Compiled::new(&parse_every("1s", anchor).unwrap()).unwrap();
        let to = anchor + TimeDelta::seconds(10);
        assert_eq!(every.count(anchor, to, 100), 11);
        assert_eq!(every.count(anchor, to, 5), 5);
        assert_eq!(every.count(to, anchor, 100), 0);
        let year = anchor + TimeDelta::days(365);
        assert_eq!(every.count(anchor, year, u64::MAX), 365 * 86_400 + 1);

        let minutely = Compiled::new(&cron("* * * * *", "UTC")).unwrap();
        assert_eq!(minutely.count(anchor, anchor + TimeDelta::minutes(10), 100), 11);
        assert_eq!(minutely.count(anchor, year, 50), 50);
    }

    // === properties ===

    fn any_spec() -> impl Strategy<Value = Spec> {
        let anchor = (0i64..4_000_000_000).prop_map(|s| DateTime::from_timestamp(s, 0).unwrap());
        prop_oneof![
            (1_000u64..=90_000_000, anchor).prop_map(|(every_ms, anchor)| Spec::Every { every_ms, anchor }),
            (
                prop::sample::select(vec![
                    "*/15 * * * *",
                    "30 2 * * *",
                    "30 2,14 * * *",
                    "0 * * * *",
                    "*/7 * * * * *",
                    "0 0 29 2 *",
                    "0 0 13 * 5",
                    "0 9 * * MON-FRI",
                ]),
                prop::sample::select(vec!["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe"]),
            )
                .prop_map(|(expr, tz)| cron(expr, tz)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn next_after_is_strictly_later(spec in any_spec(), secs in 0i64..4_000_000_000, nanos in 0u32..1_000_000_000) {
            let after = DateTime::from_timestamp(secs, nanos).unwrap();
            if let Some(next) = next_after(&spec, after) {
                prop_assert!(next > after);
                prop_assert_eq!(next_after(&spec, next - TimeDelta::nanoseconds(1)), Some(next));
            }
        }

        #[test]
        fn preview_is_strictly_increasing(spec in any_spec(), secs in 0i64..4_000_000_000) {
            let from = DateTime::from_timestamp(secs, 0).unwrap();
            let times = preview(&spec, from, 50);
            prop_assert_eq!(times.len(), 50);
            prop_assert!(times[0] > from);
            prop_assert!(times.windows(2).all(|w| w[0] < w[1]), "{:?}", times);
        }
    }
}

//! From what a user typed (`--at`, `--in`, `--every`, `--cron`, `--tz`) to a checked [`Spec`].
//! Every function is pure: the current time and the local zone are parameters, so the CLI and
//! the server decide what "now" and "local" are.

use std::time::Duration;

use chrono::offset::LocalResult;
use chrono::{DateTime, NaiveDateTime, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;

use crate::cron::CronSchedule;
use crate::spec::every_ms_checked;
use crate::{ScheduleError, Spec};

/// Local time forms [`parse_time`] accepts besides RFC 3339.
const LOCAL_FORMATS: [&str; 4] = ["%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"];

/// An IANA time zone by name (`Europe/Berlin`, `America/New_York`, `UTC`), as `--tz` takes it.
/// Names are case-sensitive, as in the IANA database.
///
/// # Errors
///
/// [`ScheduleError::UnknownZone`] naming `name`.
pub fn parse_zone(name: &str) -> Result<Tz, ScheduleError> {
    name.parse().map_err(|_| ScheduleError::UnknownZone(name.to_owned()))
}

/// `--cron EXPR [--tz ZONE]`: a 5-field crontab expression (minute hour day-of-month month
/// day-of-week), 6 fields with seconds first, or `@yearly`/`@annually`/`@monthly`/`@weekly`/
/// `@daily`/`@hourly`. Fields accept what croner accepts (lists, ranges, `*/n` steps, names,
/// `L`, `W`, `#`); when both day fields are restricted a day matching either fires (Vixie
/// cron's OR). A year field (7 fields) is refused. The stored expression has its whitespace
/// collapsed; `tz` is stored as the zone's canonical name.
///
/// # Errors
///
/// [`ScheduleError::UnknownZone`]; [`ScheduleError::CronField`] naming the field at fault,
/// e.g. "cron field 2 (hour) `25`: number out of bounds; allowed 0-23 and * , - /";
/// [`ScheduleError::Cron`] for a wrong field count, an unknown nickname, an expression longer
/// than [`crate::MAX_CRON_LEN`] bytes (after collapsing whitespace), or one that never fires.
pub fn parse_cron(expr: &str, tz: &str) -> Result<Spec, ScheduleError> {
    let zone = parse_zone(tz)?;
    let expr = expr.split_whitespace().collect::<Vec<_>>().join(" ");
    CronSchedule::parse(&expr, tz)?;
    Ok(Spec::Cron { expr, tz: zone.name().to_owned() })
}

/// `--every DUR`: a humantime duration (`1s`, `90s`, `5m`, `1h 30m`, `2days`) from 1 s to
/// 365 days, in whole milliseconds, firing at `anchor + k·every` (see [`Spec::Every`]).
///
/// # Errors
///
/// [`ScheduleError::ZeroInterval`]; [`ScheduleError::InvalidDuration`] for text humantime cannot
/// read, or an interval under [`crate::MIN_EVERY`], over [`crate::MAX_EVERY`] or with a
/// sub-millisecond part.
pub fn parse_every(text: &str, anchor: DateTime<Utc>) -> Result<Spec, ScheduleError> {
    let every_ms = every_ms_checked(duration(text)?, text)?;
    Ok(Spec::Every { every_ms, anchor })
}

/// `--in DUR`: once, a humantime duration after `now`.
///
/// # Errors
///
/// [`ScheduleError::ZeroInterval`]; [`ScheduleError::InvalidDuration`] for unreadable text or
/// a time past what a date can hold.
pub fn parse_in(text: &str, now: DateTime<Utc>) -> Result<Spec, ScheduleError> {
    let delay = duration(text)?;
    if delay.is_zero() {
        return Err(ScheduleError::ZeroInterval(text.to_owned()));
    }
    let at = TimeDelta::from_std(delay).ok().and_then(|delay| now.checked_add_signed(delay)).ok_or_else(|| {
        ScheduleError::InvalidDuration { value: text.to_owned(), reason: "too far in the future".to_owned() }
    })?;
    Ok(Spec::At { at })
}

/// `--at TIME`: once, at a time [`parse_time`] reads (RFC 3339, or a local time in `zone`: the
/// `--tz` zone, or the machine's zone, e.g. `&chrono::Local`, without it), which must be after
/// `now`.
///
/// # Errors
///
/// [`ScheduleError::InvalidTime`] as for [`parse_time`]; [`ScheduleError::InThePast`] when the
/// time is not after `now`.
pub fn parse_at<Z: TimeZone>(text: &str, zone: &Z, now: DateTime<Utc>) -> Result<Spec, ScheduleError> {
    let at = parse_time(text, zone)?;
    if at <= now {
        return Err(ScheduleError::InThePast { value: text.trim().to_owned(), at, now });
    }
    Ok(Spec::At { at })
}

/// A point in time, past or future, as `--at` and `orb schedule preview --from` take it: RFC 3339
/// (`2026-12-07T18:00:00+01:00`, `…Z`), or a local time `YYYY-MM-DD HH:MM[:SS]` (or with `T`)
/// read in `zone`. An RFC 3339 time carries its own offset and ignores `zone`.
///
/// On a DST change, a local time in the skipped hour (spring forward) is refused; one in the
/// repeated hour (fall back) means its earlier instant, the one on the clock before the change.
///
/// # Errors
///
/// [`ScheduleError::InvalidTime`] for unreadable text or a local time that does not exist in
/// `zone`.
pub fn parse_time<Z: TimeZone>(text: &str, zone: &Z) -> Result<DateTime<Utc>, ScheduleError> {
    let value = text.trim();
    let invalid = |reason: &str| ScheduleError::InvalidTime { value: value.to_owned(), reason: reason.to_owned() };
    if let Ok(at) = DateTime::parse_from_rfc3339(value) {
        return Ok(at.to_utc());
    }
    let local =
        LOCAL_FORMATS.iter().find_map(|format| NaiveDateTime::parse_from_str(value, format).ok()).ok_or_else(|| {
            invalid("expected RFC 3339 (2026-12-07T18:00:00+01:00) or a local time YYYY-MM-DD HH:MM[:SS]")
        })?;
    match zone.from_local_datetime(&local) {
        LocalResult::Single(at) | LocalResult::Ambiguous(at, _) => Ok(at.to_utc()),
        LocalResult::None => {
            Err(invalid("does not exist in this time zone (the clock skips it for daylight saving time)"))
        }
    }
}

/// A humantime duration, trimmed. Zero is returned, not refused: the callers say why it is wrong.
fn duration(text: &str) -> Result<Duration, ScheduleError> {
    humantime::parse_duration(text.trim())
        .map_err(|e| ScheduleError::InvalidDuration { value: text.to_owned(), reason: e.to_string() })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).unwrap()
    }

    fn zone(name: &str) -> Tz {
        parse_zone(name).unwrap()
    }

    fn at(spec: Spec) -> DateTime<Utc> {
        match spec {
            Spec::At { at } => at,
            other => panic!("expected At, got {other:?}"),
        }
    }

    fn now() -> DateTime<Utc> {
        utc(2026, 6, 1, 12, 0, 0)
    }

    // === zones ===

    #[test]
    fn known_zones_parse_and_unknown_is_named() {
        assert_eq!(zone("UTC"), Tz::UTC);
        assert_eq!(zone("Europe/Berlin"), Tz::Europe__Berlin);
        let err = parse_zone("Mars/Olympus").unwrap_err();
        assert_eq!(err.code(), "unknown_zone");
        assert!(err.to_string().contains("`Mars/Olympus`"), "{err}");
    }

    // === cron ===

    #[test]
    fn cron_accepts_five_and_six_fields_and_nicknames() {
        for expr in [
            "*/15 * * * *",
            "0 9-17 * * MON-FRI",
            "0,30 8,20 1,15 * *",
            "*/10 * * * * *",
            "0 0 L * *",
            "0 0 * * 5#2",
            "@daily",
        ] {
            parse_cron(expr, "UTC").unwrap_or_else(|e| panic!("{expr}: {e}"));
        }
    }

    #[test]
    fn cron_is_stored_with_collapsed_whitespace_and_canonical_zone() {
        assert_eq!(
            parse_cron("  0  9 * *   1-5 ", "America/New_York").unwrap(),
            Spec::Cron { expr: "0 9 * * 1-5".into(), tz: "America/New_York".into() }
        );
    }

    #[test]
    fn cron_field_errors_name_position_field_and_value() {
        let cases = [
            ("0 25 * * *", 2, "hour", "25"),
            ("0 0 32 * *", 3, "day of month", "32"),
            ("0 0 * 13 *", 4, "month", "13"),
            ("0 0 * * FOO", 5, "day of week", "FOO"),
            ("5-1 * * * *", 1, "minute", "5-1"),
            ("0/10 * * * *", 1, "minute", "0/10"),
            ("60 * * * * *", 1, "second", "60"),
            ("0 60 * * * *", 2, "minute", "60"),
        ];
        for (expr, position, name, value) in cases {
            match parse_cron(expr, "UTC").unwrap_err() {
                ScheduleError::CronField { position: p, name: n, value: v, reason } => {
                    assert_eq!((p, n, v.as_str()), (position, name, value), "{expr}");
                    assert!(reason.contains("allowed"), "{expr}: {reason}");
                }
                other => panic!("{expr}: expected a field error, got {other:?}"),
            }
        }
        let err = parse_cron("0 25 * * *", "UTC").unwrap_err();
        assert_eq!(err.code(), "invalid_cron");
        assert_eq!(err.to_string(), "cron field 2 (hour) `25`: number out of bounds; allowed 0-23 and * , - /");
    }

    #[test]
    fn cron_with_wrong_field_count_or_nickname_is_refused_whole() {
        for expr in ["", "* * * *", "0 0 0 1 1 * 2027", "@fortnightly"] {
            let err = parse_cron(expr, "UTC").unwrap_err();
            assert!(matches!(err, ScheduleError::Cron { .. }), "{expr}: {err:?}");
            assert_eq!(err.code(), "invalid_cron");
        }
        let err = parse_cron("0 0 0 1 1 * 2027", "UTC").unwrap_err();
        assert!(err.to_string().contains("7 fields"), "{err}");
    }

    #[test]
    fn cron_that_never_fires_is_refused() {
        let err = parse_cron("0 0 30 2 *", "UTC").unwrap_err();
        assert_eq!(err.to_string(), "cron `0 0 30 2 *`: never fires");
    }

    #[test]
    fn cron_in_unknown_zone_is_refused() {
        let err = parse_cron("* * * * *", "Mars/Olympus").unwrap_err();
        assert_eq!(err.code(), "unknown_zone");
    }

    // === every / in ===

    #[test]
    fn every_accepts_one_second_up_to_a_year() {
        let anchor = now();
        assert_eq!(parse_every("1s", anchor).unwrap(), Spec::Every { every_ms: 1000, anchor });
        assert_eq!(parse_every("1h 30m", anchor).unwrap(), Spec::Every { every_ms: 5_400_000, anchor });
        assert!(parse_every("365days", anchor).is_ok());
        assert!(parse_every("1500ms", anchor).is_ok());
    }

    #[test]
    fn every_refuses_zero_sub_second_too_long_and_garbage() {
        let anchor = now();
        let code = |text| parse_every(text, anchor).unwrap_err().code();
        assert_eq!(code("0s"), "zero_interval");
        assert_eq!(code("0"), "zero_interval");
        assert_eq!(code("500ms"), "invalid_duration");
        assert_eq!(code("366days"), "invalid_duration");
        assert_eq!(code("1s 1us"), "invalid_duration");
        assert_eq!(code("often"), "invalid_duration");
        let err = parse_every("500ms", anchor).unwrap_err();
        assert!(err.to_string().starts_with("duration `500ms`: shorter"), "{err}");
    }

    #[test]
    fn in_is_a_duration_after_now() {
        assert_eq!(at(parse_in("90m", now()).unwrap()), utc(2026, 6, 1, 13, 30, 0));
        assert_eq!(parse_in("0s", now()).unwrap_err().code(), "zero_interval");
        assert_eq!(parse_in("soon", now()).unwrap_err().code(), "invalid_duration");
    }

    // === at ===

    #[test]
    fn at_reads_rfc3339_with_its_own_offset() {
        let berlin = zone("Europe/Berlin");
        assert_eq!(at(parse_at("2026-12-07T18:00:00+01:00", &berlin, now()).unwrap()), utc(2026, 12, 7, 17, 0, 0));
        assert_eq!(at(parse_at("2026-12-07T18:00:00Z", &berlin, now()).unwrap()), utc(2026, 12, 7, 18, 0, 0));
    }

    #[test]
    fn at_reads_local_times_in_the_given_zone() {
        let berlin = zone("Europe/Berlin");
        for text in ["2026-12-07 18:00", "2026-12-07T18:00", "2026-12-07 18:00:00", " 2026-12-07T18:00:00 "] {
            assert_eq!(at(parse_at(text, &berlin, now()).unwrap()), utc(2026, 12, 7, 17, 0, 0), "{text}");
        }
        // Summer time: UTC+2.
        assert_eq!(at(parse_at("2026-07-01 18:00", &berlin, now()).unwrap()), utc(2026, 7, 1, 16, 0, 0));
        assert_eq!(
            at(parse_at("2026-07-01 18:00", &zone("America/New_York"), now()).unwrap()),
            utc(2026, 7, 1, 22, 0, 0)
        );
    }

    #[test]
    fn at_in_the_spring_forward_gap_is_refused() {
        // Berlin skips 02:00-03:00 on 2027-03-28.
        let err = parse_at("2027-03-28 02:30", &zone("Europe/Berlin"), now()).unwrap_err();
        assert_eq!(err.code(), "invalid_time");
        assert!(err.to_string().starts_with("time `2027-03-28 02:30`: does not exist"), "{err}");
    }

    #[test]
    fn at_in_the_fall_back_overlap_takes_the_earlier_instant() {
        // New York repeats 01:00-02:00 on 2026-11-01: 01:30 EDT (05:30Z), then 01:30 EST (06:30Z).
        assert_eq!(
            at(parse_at("2026-11-01 01:30", &zone("America/New_York"), now()).unwrap()),
            utc(2026, 11, 1, 5, 30, 0)
        );
    }

    #[test]
    fn at_not_after_now_is_in_the_past() {
        let err = parse_at("2026-06-01T12:00:00Z", &Utc, now()).unwrap_err();
        assert_eq!(err.code(), "in_the_past");
        let err = parse_at("2020-01-01 00:00", &Utc, now()).unwrap_err();
        assert_eq!(err.code(), "in_the_past");
    }

    #[test]
    fn time_may_be_in_the_past_and_reads_like_at() {
        let berlin = zone("Europe/Berlin");
        assert_eq!(parse_time("2020-01-01 00:00", &berlin).unwrap(), utc(2019, 12, 31, 23, 0, 0));
        assert_eq!(parse_time(" 2020-01-01T00:00:00Z ", &berlin).unwrap(), utc(2020, 1, 1, 0, 0, 0));
        assert_eq!(parse_time("2027-03-28 02:30", &berlin).unwrap_err().code(), "invalid_time");
        assert_eq!(parse_time("2026-12-07", &berlin).unwrap_err().code(), "invalid_time");
    }

    #[test]
    fn at_garbage_and_impossible_dates_are_invalid() {
        for text in ["tomorrow", "2026-02-30 10:00", "2026-12-07", "18:00"] {
            let err = parse_at(text, &Utc, now()).unwrap_err();
            assert_eq!(err.code(), "invalid_time", "{text}");
            assert!(err.to_string().contains(&format!("`{text}`")), "{err}");
        }
    }
}

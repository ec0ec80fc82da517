//! Cron expressions through croner: [`CronSchedule`] parses one (naming the field at fault when
//! it is wrong) and finds its firings in an IANA zone, with the DST rules documented on
//! [`crate::next_after`]. Crate-internal: callers go through `parse_cron` and the `Spec` functions.

use chrono::offset::LocalResult;
use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::errors::CronError;
use croner::parser::{CronParser, Seconds, Year};

use crate::{ScheduleError, parse_zone};

/// A cron field: its name and what it accepts, for error messages.
struct Field {
    name: &'static str,
    allowed: &'static str,
    /// The largest value the field takes: a step beyond it (`*/61` minutes) is refused.
    max: u32,
}

/// The six fields of a 6-field expression; a 5-field one starts at `minute`.
const FIELDS: [Field; 6] = [
    Field { name: "second", allowed: "0-59 and * , - /", max: 59 },
    Field { name: "minute", allowed: "0-59 and * , - /", max: 59 },
    Field { name: "hour", allowed: "0-23 and * , - /", max: 23 },
    Field { name: "day of month", allowed: "1-31 and * , - / ? L W", max: 31 },
    Field { name: "month", allowed: "1-12 or JAN-DEC and * , - /", max: 12 },
    Field { name: "day of week", allowed: "0-7 or SUN-SAT (0 and 7 are Sunday) and * , - / ? L #", max: 7 },
];

/// Longest cron expression accepted, in bytes (as given in a [`crate::Spec`]; [`crate::parse_cron`]
/// collapses whitespace first). One that lists every value of all six fields (months and weekdays
/// by name) is 561 bytes; the bound keeps what croner parses, and what an error echoes, small.
pub const MAX_CRON_LEN: usize = 1024;

/// Bytes of an over-long expression its error echoes.
const ECHOED: usize = 64;

/// The one parser configuration orb accepts: seconds optional, no year field, and croner's
/// default OR of day-of-month and day-of-week when both are restricted (as Vixie cron does).
fn parser() -> CronParser {
    CronParser::builder().seconds(Seconds::Optional).year(Year::Disallowed).build()
}

/// A parsed cron expression in its zone.
#[derive(Debug)]
pub(crate) struct CronSchedule {
    cron: Cron,
    tz: Tz,
    /// Whether a second, minute or hour field starts with `*` (`*`, `*/15`): such a job runs
    /// on wall-clock times, so it fires again in an hour the clock repeats. Any other job fires
    /// once per wall-clock time, as in Vixie cron.
    wildcard_time: bool,
}

impl CronSchedule {
    /// Parses `expr` in zone `tz` and checks that it fires at all (`0 0 30 2 *` never does).
    /// The check searches up to croner's year limit, a few milliseconds: use it where a
    /// schedule is accepted, and [`CronSchedule::compile`] where it is evaluated.
    pub(crate) fn parse(expr: &str, tz: &str) -> Result<Self, ScheduleError> {
        let schedule = Self::compile(expr, tz)?;
        let epoch = DateTime::UNIX_EPOCH.with_timezone(&schedule.tz);
        if schedule.cron.find_next_occurrence(&epoch, true).is_err() {
            return Err(ScheduleError::Cron { expr: expr.to_owned(), reason: "never fires".to_owned() });
        }
        Ok(schedule)
    }

    /// Parses `expr` in zone `tz`, without checking that it ever fires.
    pub(crate) fn compile(expr: &str, tz: &str) -> Result<Self, ScheduleError> {
        if expr.len() > MAX_CRON_LEN {
            let mut cut = ECHOED;
            while !expr.is_char_boundary(cut) {
                cut -= 1;
            }
            return Err(ScheduleError::Cron {
                expr: format!("{}…", &expr[..cut]),
                reason: format!("{} bytes long, more than {MAX_CRON_LEN}", expr.len()),
            });
        }
        let tz = parse_zone(tz)?;
        let whole = |reason: String| ScheduleError::Cron { expr: expr.to_owned(), reason };
        let fields: Vec<&str> = expr.split_whitespace().collect();
        let cron = match fields.len() {
            5 | 6 => {
                let names = &FIELDS[6 - fields.len()..];
                // croner reads a field of commas alone as a list of no values: an expression that
                // never fires, which its search proves only by stepping to the year 5000 one
                // second or minute at a time (tens of seconds of CPU). Refused up front.
                if let Some(i) = fields.iter().position(|f| f.split(',').all(str::is_empty)) {
                    return Err(ScheduleError::CronField {
                        position: i + 1,
                        name: names[i].name,
                        value: fields[i].to_owned(),
                        reason: format!("a list of no values; allowed {}", names[i].allowed),
                    });
                }
                if let Some(e) = step_beyond_range(&fields, names) {
                    return Err(e);
                }
                parser().parse(expr).map_err(|e| locate(&fields, names).unwrap_or_else(|| whole(describe(&e))))?
            }
            1 if fields[0].starts_with('@') => parser().parse(expr).map_err(|_| {
                whole("unknown nickname: expected @yearly, @annually, @monthly, @weekly, @daily or @hourly".to_owned())
            })?,
            n => {
                return Err(whole(format!(
                    "{n} fields: expected 5 (minute hour day-of-month month day-of-week) or 6 (second first)"
                )));
            }
        };
        // croner keeps the pattern with nicknames expanded, so this sees `@hourly` as `0 * * * *`.
        let parts: Vec<&str> = cron.as_str().split_whitespace().collect();
        let time_of_day = &parts[..parts.len().saturating_sub(3)];
        let wildcard_time = time_of_day.iter().any(|f| f.starts_with('*'));
        Ok(Self { cron, tz, wildcard_time })
    }

    /// The first firing strictly after `after`, or `None` when there is none before croner's
    /// year limit (5000).
    pub(crate) fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut from = after.with_timezone(&self.tz);
        loop {
            let next = self.cron.find_next_occurrence(&from, false).ok()?;
            // croner fires a single-valued time (`30 1 * * *`) once in a repeated hour, but a
            // list or range (`30 1,13 * * *`) on both passes; orb fires the latter once too.
            if self.wildcard_time || !self.is_second_pass(&next) {
                return Some(next.to_utc());
            }
            from = next;
        }
    }

    /// Whether `t` is the later of two instants with the same wall-clock time (fall-back).
    fn is_second_pass(&self, t: &DateTime<Tz>) -> bool {
        matches!(
            self.tz.from_local_datetime(&t.naive_local()),
            LocalResult::Ambiguous(_, later) if later == *t
        )
    }
}

/// The first field with a step larger than the field's largest value (`*/61` minutes, `0/24`
/// hours), which croner accepts but which can only ever mean the step's start: most likely a
/// slip, so it is refused naming the field. Steps that are not numbers are croner's to refuse.
fn step_beyond_range(fields: &[&str], names: &[Field]) -> Option<ScheduleError> {
    fields.iter().zip(names).enumerate().find_map(|(i, (field, name))| {
        let step = field
            .split(',')
            .filter_map(|item| item.split_once('/'))
            .find_map(|(_, step)| step.parse::<u64>().ok().filter(|s| *s > u64::from(name.max)).map(|s| (step, s)))?;
        Some(ScheduleError::CronField {
            position: i + 1,
            name: name.name,
            value: (*field).to_owned(),
            reason: format!(
                "step {} is beyond the field's range (at most {}); allowed {}",
                step.1, name.max, name.allowed
            ),
        })
    })
}

/// Finds the first field that croner refuses on its own (the others set to `*`), so the error
/// can name it. `None` when no single field is at fault.
fn locate(fields: &[&str], names: &[Field]) -> Option<ScheduleError> {
    (0..fields.len()).find_map(|i| {
        let probe: Vec<&str> = (0..fields.len()).map(|j| if j == i { fields[i] } else { "*" }).collect();
        let err = parser().parse(&probe.join(" ")).err()?;
        Some(ScheduleError::CronField {
            position: i + 1,
            name: names[i].name,
            value: fields[i].to_owned(),
            reason: format!("{}; allowed {}", describe(&err), names[i].allowed),
        })
    })
}

/// croner's message, in orb's style: lowercase, no trailing period.
fn describe(err: &CronError) -> String {
    let text = match err {
        CronError::ComponentError(m) | CronError::InvalidPattern(m) => m.clone(),
        CronError::IllegalCharacters(m) => m.trim_start_matches("CronPattern contains ").to_owned(),
        other => other.to_string(),
    };
    let text = text.trim_end_matches('.');
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| first.to_lowercase().chain(chars).collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_time_is_a_star_in_second_minute_or_hour() {
        for (expr, wildcard) in [
            ("*/30 * * * *", true),
            ("0 * * * *", true),
            ("@hourly", true),
            ("*/5 30 2 * * *", true),
            ("30 2 * * *", false),
            ("30 2,14 * * *", false),
            ("0 1-3 * * *", false),
            ("@daily", false),
        ] {
            assert_eq!(CronSchedule::compile(expr, "UTC").unwrap().wildcard_time, wildcard, "{expr}");
        }
    }

    #[test]
    fn second_pass_is_the_later_instant_of_a_repeated_wall_time() {
        let schedule = CronSchedule::compile("30 1 * * *", "America/New_York").unwrap();
        // 2026-11-01 01:30 happens at 05:30Z (EDT) and again at 06:30Z (EST).
        let first = DateTime::parse_from_rfc3339("2026-11-01T05:30:00Z").unwrap().with_timezone(&schedule.tz);
        let second = DateTime::parse_from_rfc3339("2026-11-01T06:30:00Z").unwrap().with_timezone(&schedule.tz);
        assert!(!schedule.is_second_pass(&first));
        assert!(schedule.is_second_pass(&second));
    }

    #[test]
    fn expressions_longer_than_the_limit_are_refused_with_a_short_echo() {
        // Every value of every field listed: the longest sensible expression.
        let all = |from: u32, to: u32| (from..=to).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
        let months = "JAN,FEB,MAR,APR,MAY,JUN,JUL,AUG,SEP,OCT,NOV,DEC";
        let days = "SUN,MON,TUE,WED,THU,FRI,SAT";
        let long_ok = format!("{} {} {} {} {months} {days}", all(0, 59), all(0, 59), all(0, 23), all(1, 31));
        assert_eq!(long_ok.len(), 561);
        assert!(CronSchedule::parse(&long_ok, "UTC").is_ok());

        let over = format!("0 0 * * {}", "1,".repeat(MAX_CRON_LEN / 2) + "1");
        assert!(over.len() > MAX_CRON_LEN);
        for result in [CronSchedule::parse(&over, "UTC"), CronSchedule::compile(&over, "UTC")] {
            let err = result.unwrap_err();
            assert_eq!(err.code(), "invalid_cron");
            let text = err.to_string();
            assert!(text.contains(&format!("{} bytes long, more than {MAX_CRON_LEN}", over.len())), "{text}");
            assert!(text.len() < 150, "the expression is echoed only in part: {text}");
        }
        // The cut never splits a character (byte 64 falls inside an `é` here).
        let wide = format!("a{}", "é".repeat(MAX_CRON_LEN));
        let text = CronSchedule::compile(&wide, "UTC").unwrap_err().to_string();
        assert!(text.starts_with(&format!("cron `a{}…`", "é".repeat(31))), "{text}");
    }

    /// Found by the `cron` fuzz target: a field of commas alone made croner search to the year
    /// 5000 a second at a time (`, * * * * *` took tens of seconds to be refused as never firing).
    #[test]
    fn a_field_of_commas_alone_is_refused_at_once() {
        for (expr, position, name) in [
            (", * * * * *", 1, "second"),
            (",, 0 * 4 * 3", 1, "second"),
            ("0 , * * *", 2, "hour"),
            ("0 0 * * ,", 5, "day of week"),
            ("0 0 , * *", 3, "day of month"),
        ] {
            let started = std::time::Instant::now();
            let err = CronSchedule::compile(expr, "America/New_York").unwrap_err();
            assert!(started.elapsed() < std::time::Duration::from_millis(100), "{expr}: {:?}", started.elapsed());
            match &err {
                ScheduleError::CronField { position: p, name: n, reason, .. } => {
                    assert_eq!((*p, *n), (position, name), "{expr}");
                    assert!(reason.starts_with("a list of no values"), "{expr}: {reason}");
                }
                other => panic!("{expr}: {other:?}"),
            }
            assert!(CronSchedule::parse(expr, "UTC").is_err());
        }
        // Empty items beside real ones are croner's business, as before: they fire.
        for expr in ["3, * * * *", ",3 * * * *", "0 0 1,,2 * *"] {
            assert!(CronSchedule::parse(expr, "UTC").is_ok(), "{expr}");
        }
    }

    #[test]
    fn a_step_beyond_the_fields_range_is_refused_naming_field_and_value() {
        for (expr, position, name, value) in [
            ("*/61 * * * *", 1, "minute", "*/61"),
            ("0 0/24 * * *", 2, "hour", "0/24"),
            ("30 */60 * * * *", 2, "minute", "*/60"),
            ("0 0 1,*/32 * *", 3, "day of month", "1,*/32"),
            ("0 0 * */13 *", 4, "month", "*/13"),
            ("0 0 * * 1-5/8", 5, "day of week", "1-5/8"),
        ] {
            match CronSchedule::parse(expr, "UTC").unwrap_err() {
                ScheduleError::CronField { position: p, name: n, value: v, reason } => {
                    assert_eq!((p, n, v.as_str()), (position, name, value), "{expr}");
                    assert!(reason.starts_with("step ") && reason.contains("beyond the field's range"), "{reason}");
                }
                other => panic!("{expr}: {other:?}"),
            }
        }
        let err = CronSchedule::parse("*/61 * * * *", "UTC").unwrap_err();
        assert_eq!(err.code(), "invalid_cron");
        assert_eq!(
            err.to_string(),
            "cron field 1 (minute) `*/61`: step 61 is beyond the field's range (at most 59); allowed 0-59 and * , - /"
        );
        // Steps up to the largest value are fine.
        for expr in ["*/59 * * * *", "0 */23 * * *", "0 0 */31 * *", "0 0 1 */12 *", "0 0 * * */7", "*/15 * * * *"] {
            assert!(CronSchedule::parse(expr, "UTC").is_ok(), "{expr}");
        }
    }

    #[test]
    fn errors_read_in_orb_style() {
        let err = CronSchedule::compile("0 0 * * FOO", "UTC").unwrap_err();
        assert_eq!(
            err.to_string(),
            "cron field 5 (day of week) `FOO`: illegal character 'F' in part 'FOO'; \
             allowed 0-7 or SUN-SAT (0 and 7 are Sunday) and * , - / ? L #"
        );
        let err = CronSchedule::compile("@fortnightly", "UTC").unwrap_err();
        assert!(err.to_string().starts_with("cron `@fortnightly`: unknown nickname"), "{err}");
    }
}

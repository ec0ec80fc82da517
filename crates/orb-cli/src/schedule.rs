//! `orb schedule`: recurring schedules. `preview` reads `--cron`/`--every`, `--tz` and `--from`
//! with orb-schedule, asks it for the next firing times and prints them; it runs on this machine
//! alone, contacting no server and storing nothing.

use chrono::{DateTime, Local, Offset, SecondsFormat, SubsecRound, TimeZone, Utc};
use orb_schedule::{ScheduleError, Spec, Tz};

use crate::cli::{RepeatArgs, ScheduleCommand, SchedulePreviewArgs};
use crate::exit::{self, Failure};

/// `orb schedule ...`.
pub fn run(cmd: ScheduleCommand) -> Result<u8, Failure> {
    match cmd {
        ScheduleCommand::Preview(args) => preview(&args),
    }
}

/// `orb schedule preview`: one line per firing, or one JSON array with `--json`.
fn preview(args: &SchedulePreviewArgs) -> Result<u8, Failure> {
    let (zone, times) = plan(args, Utc::now(), local_zone)?;
    if args.json {
        outln!("{}", json(&times));
    } else {
        for t in &times {
            outln!("{}", human(t, zone));
        }
    }
    Ok(exit::OK)
}

/// The zone times are shown in, and the firings `args` asks for. `now` stands in for `--from`
/// when it is absent (to the second, so `--every` firings are whole seconds); `local` gives the
/// zone when `--tz` is absent. Pure apart from calling `local`, for the tests below.
///
/// # Errors
/// A usage failure (exit 2) `CODE: MESSAGE` from [`ScheduleError`]: an unknown zone, an invalid
/// cron expression (naming the field at fault), a bad or out-of-range interval, an unreadable
/// `--from`.
fn plan(
    args: &SchedulePreviewArgs,
    now: DateTime<Utc>,
    local: impl FnOnce() -> Tz,
) -> Result<(Tz, Vec<DateTime<Utc>>), Failure> {
    let zone = match &args.tz {
        Some(name) => orb_schedule::parse_zone(name).map_err(usage)?,
        None => local(),
    };
    let from = match &args.from {
        Some(text) => orb_schedule::parse_time(text, &zone).map_err(usage)?,
        None => now.trunc_subsecs(0),
    };
    let spec = spec(&args.repeat, zone, from).map_err(usage)?;
    Ok((zone, orb_schedule::preview(&spec, from, args.count)))
}

/// The schedule `--cron` (in `zone`) or `--every` (anchored at `from`, so its firings are
/// `from + every`, `from + 2·every`, ...) describes. Clap's group guarantees exactly one is given.
fn spec(repeat: &RepeatArgs, zone: Tz, from: DateTime<Utc>) -> Result<Spec, ScheduleError> {
    match (&repeat.cron, &repeat.every) {
        (Some(expr), _) => orb_schedule::parse_cron(expr, zone.name()),
        (None, Some(every)) => orb_schedule::parse_every(every, from),
        (None, None) => unreachable!("clap requires one of --cron and --every"),
    }
}

/// A refused schedule as the CLI reports it: `error: CODE: MESSAGE`, exit 2, as a server's
/// refusal shows its code (`error: job_not_found: ...`).
fn usage(e: ScheduleError) -> Failure {
    Failure::usage(format!("{}: {e}", e.code()))
}

/// This machine's zone by its IANA name: `$TZ` (which `chrono::Local` follows; a leading `:` is
/// dropped), else the system setting (`/etc/localtime` on Linux); UTC when neither names a zone
/// chrono-tz knows. Warns on stderr when the zone chosen disagrees with the machine's offset now
/// (a POSIX `TZ` rule such as `CET-1CEST`), since the times shown would then not be local.
fn local_zone() -> Tz {
    let named = |name: &str| orb_schedule::parse_zone(name.trim_start_matches(':')).ok();
    let zone = std::env::var("TZ")
        .ok()
        .and_then(|tz| named(&tz))
        .or_else(|| iana_time_zone::get_timezone().ok().and_then(|tz| named(&tz)))
        .unwrap_or(Tz::UTC);
    let now = Utc::now();
    if zone.offset_from_utc_datetime(&now.naive_utc()).fix() != Local.offset_from_utc_datetime(&now.naive_utc()).fix() {
        eprintln!("warning: this machine's time zone has no IANA name; times are in {}: pass --tz ZONE", zone.name());
    }
    zone
}

/// `2026-03-29T03:00:00+02:00  (2026-03-29T01:00:00Z)`: the time in `zone` with its offset, then
/// in UTC. A fraction of a second is shown only when there is one.
fn human(t: &DateTime<Utc>, zone: Tz) -> String {
    format!("{}  ({})", t.with_timezone(&zone).to_rfc3339_opts(SecondsFormat::AutoSi, false), rfc3339_utc(t))
}

/// `["2026-03-29T01:00:00Z", ...]` on one line.
fn json(times: &[DateTime<Utc>]) -> String {
    let times: Vec<String> = times.iter().map(rfc3339_utc).collect();
    serde_json::Value::from(times).to_string()
}

/// RFC 3339 in UTC with `Z`, as orb-schedule's messages write instants.
fn rfc3339_utc(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::cli::{Cli, Command};
    use clap::Parser;

    fn args(line: &[&str]) -> SchedulePreviewArgs {
        let cli = Cli::try_parse_from(["orb", "schedule", "preview"].iter().chain(line)).unwrap();
        match cli.command {
            Command::Schedule(ScheduleCommand::Preview(a)) => a,
            other => panic!("parsed as {other:?}"),
        }
    }

    fn utc(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    fn now() -> DateTime<Utc> {
        utc("2026-06-01T12:00:00.750Z")
    }

    /// `plan` with the machine's zone fixed to `local`.
    fn plan_in(line: &[&str], local: Tz) -> Result<(Tz, Vec<DateTime<Utc>>), Failure> {
        plan(&args(line), now(), || local)
    }

    #[test]
    fn every_is_anchored_at_from_and_now_is_taken_to_the_second() {
        let (_, times) = plan_in(&["--every", "90m", "--count", "2"], Tz::UTC).unwrap();
        assert_eq!(times, [utc("2026-06-01T13:30:00Z"), utc("2026-06-01T15:00:00Z")]);
        let (_, times) = plan_in(&["--every", "1h", "--from", "2020-01-01 00:30", "--count", "1"], Tz::UTC).unwrap();
        assert_eq!(times, [utc("2020-01-01T01:30:00Z")], "--from may be in the past");
    }

    #[test]
    fn the_zone_is_tz_else_the_machines() {
        let cron = ["--cron", "0 9 * * *", "--from", "2026-06-01 00:00", "--count", "1"];
        let (zone, times) = plan_in(&cron, Tz::Europe__Berlin).unwrap();
        assert_eq!(zone, Tz::Europe__Berlin);
        assert_eq!(times, [utc("2026-06-01T07:00:00Z")], "cron and local --from both in Berlin time");
        let with_tz: Vec<&str> = cron.iter().copied().chain(["--tz", "America/New_York"]).collect();
        let (zone, times) =
            plan(&args(&with_tz), now(), || panic!("--tz given: no need for the machine's zone")).unwrap();
        assert_eq!(zone, Tz::America__New_York);
        assert_eq!(times, [utc("2026-06-01T13:00:00Z")]);
    }

    #[test]
    fn refusals_are_usage_errors_with_the_schedule_error_code() {
        for (line, start) in [
            (&["--cron", "0 25 * * *"][..], "invalid_cron: cron field 2 (hour) `25`"),
            (&["--cron", "* * * * *", "--tz", "Mars/Olympus"], "unknown_zone: unknown time zone `Mars/Olympus`"),
            (&["--every", "0s"], "zero_interval: duration `0s` is zero"),
            (&["--every", "500ms"], "invalid_duration: duration `500ms`: shorter"),
            (&["--every", "1m", "--from", "tomorrow"], "invalid_time: time `tomorrow`"),
        ] {
            let failure = plan_in(line, Tz::UTC).unwrap_err();
            assert_eq!(failure.code, exit::USAGE, "{line:?}");
            assert!(failure.message.starts_with(start), "{line:?}: {}", failure.message);
        }
    }

    #[test]
    fn count_is_one_to_the_preview_maximum() {
        for bad in ["0", "1001", "many"] {
            let err = Cli::try_parse_from(["orb", "schedule", "preview", "--every", "1m", "--count", bad]).unwrap_err();
            assert!(err.to_string().contains("1000"), "{bad}: {err}");
        }
        assert_eq!(args(&["--every", "1m", "--count", "1000"]).count, orb_schedule::MAX_PREVIEW);
        assert_eq!(args(&["--every", "1m"]).count, 10);
    }

    #[test]
    fn cron_and_every_are_exclusive_and_one_is_required() {
        let parse = |line: &[&str]| Cli::try_parse_from(["orb", "schedule", "preview"].iter().chain(line));
        assert!(parse(&["--cron", "@daily", "--every", "1h"]).is_err());
        assert!(parse(&["--tz", "UTC"]).is_err());
    }

    #[test]
    fn human_lines_show_the_zone_then_utc_and_json_is_utc() {
        let t = utc("2026-03-29T01:00:00Z");
        assert_eq!(human(&t, Tz::Europe__Berlin), "2026-03-29T03:00:00+02:00  (2026-03-29T01:00:00Z)");
        assert_eq!(human(&t, Tz::UTC), "2026-03-29T01:00:00+00:00  (2026-03-29T01:00:00Z)");
        let half = utc("2026-03-29T01:00:00.5Z");
        assert_eq!(json(&[t, half]), r#"["2026-03-29T01:00:00Z","2026-03-29T01:00:00.500Z"]"#);
        assert_eq!(json(&[]), "[]");
    }
}

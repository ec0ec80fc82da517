//! `orb schedule` and `orb send --at/--in/--every/--cron`: stored schedules. `orb send` turns its
//! scheduling flags into a spec with orb-schedule (bad input is a usage error, nothing sent) and
//! stores it with `$orb.schedules.create`; `list`, `show`, `pause`, `resume` and `rm` call the
//! other `$orb.schedules.*` commands. `preview` reads `--cron`/`--every`, `--tz` and `--from`,
//! asks orb-schedule for the next firing times and prints them; it contacts no server.

use std::time::Duration;

use chrono::{DateTime, Datelike, Local, Offset, SecondsFormat, SubsecRound, TimeZone, Utc};
use orb_client::Client;
use orb_proto::message::commands;
use orb_proto::schedule::{MissedPolicy, ScheduleCreate, ScheduleInfo, ScheduleRef};
use orb_schedule::{ScheduleError, Spec, Tz};
use serde_json::value::RawValue;

use crate::cli::{RepeatArgs, ScheduleCommand, ScheduleIdArgs, SchedulePreviewArgs, SendArgs};
use crate::connect;
use crate::exit::{self, Failure};
use crate::output::{self, Format, OutputArgs};
use crate::render;

/// How long the server gets to answer.
const ANSWER: Duration = Duration::from_secs(15);

/// `orb schedule ...`.
pub async fn run(cmd: ScheduleCommand) -> Result<u8, Failure> {
    match cmd {
        ScheduleCommand::Preview(args) => preview(&args),
        ScheduleCommand::List(args) => {
            let client = connect::operator(&args.connect).await?;
            let all = client.call_json::<_, Vec<ScheduleInfo>>(commands::SCHEDULES_LIST, &(), ANSWER).await;
            client.close().await;
            print_list(&all?, &args.output)
        }
        ScheduleCommand::Show(a) => one(&a, commands::SCHEDULES_SHOW, None).await,
        ScheduleCommand::Pause(a) => one(&a, commands::SCHEDULES_PAUSE, Some("paused")).await,
        ScheduleCommand::Resume(a) => one(&a, commands::SCHEDULES_RESUME, Some("resumed")).await,
        ScheduleCommand::Rm(a) => one(&a, commands::SCHEDULES_REMOVE, Some("removed")).await,
    }
}

/// The spec `orb send`'s scheduling flags describe, `None` without them (the job runs now).
///
/// # Errors
/// A usage failure `CODE: MESSAGE` (an unknown zone, a time in the past, a bad cron expression
/// or interval, an unknown `--missed`), or `--tz` with `--in` or `--every`, which count elapsed
/// time in no zone.
pub fn send_spec(args: &SendArgs, now: DateTime<Utc>) -> Result<Option<(Spec, MissedPolicy)>, Failure> {
    let when = &args.when;
    if args.tz.is_some() && (when.in_.is_some() || when.every.is_some()) {
        return Err(Failure::usage(
            "--tz applies to --at and --cron: --in and --every count elapsed time, which no zone changes",
        ));
    }
    let zone = || match &args.tz {
        Some(name) => orb_schedule::parse_zone(name),
        None => Ok(local_zone()),
    };
    let spec = match (&when.at, &when.in_, &when.every, &when.cron) {
        (Some(at), ..) => orb_schedule::parse_at(at, &zone().map_err(usage)?, now),
        (_, Some(after), ..) => orb_schedule::parse_in(after, now),
        (_, _, Some(every), _) => orb_schedule::parse_every(every, now),
        (_, _, _, Some(expr)) => orb_schedule::parse_cron(expr, zone().map_err(usage)?.name()),
        (None, None, None, None) => return Ok(None),
    }
    .map_err(usage)?;
    let missed = match &args.missed {
        Some(text) => text.parse().map_err(usage)?,
        None => MissedPolicy::default(),
    };
    Ok(Some((spec, missed)))
}

/// `orb send ... --at/--in/--every/--cron`: stores the schedule; prints its id (or the schedule
/// with `--json`), and when it fires first.
pub async fn create(
    client: &Client,
    args: &SendArgs,
    body: &bytes::Bytes,
    (spec, missed): (Spec, MissedPolicy),
    rollout: orb_proto::rollout::Rollout,
) -> Result<u8, Failure> {
    let args_json = (body.as_ref() != b"null")
        .then(|| RawValue::from_string(String::from_utf8_lossy(body).into_owned()))
        .transpose()
        .map_err(|e| Failure::usage(format!("bad_args: {e}")))?;
    let create = ScheduleCreate {
        target: args.target.clone(),
        command: args.command.clone(),
        args: args_json,
        deadline_ms: Some(u64::try_from(args.wait.as_millis()).unwrap_or(u64::MAX)),
        ttl_ms: args.ttl.map(|t| u64::try_from(t.as_millis()).unwrap_or(u64::MAX)),
        rollout,
        spec,
        missed,
        on_agent: args.on_agent,
    };
    let s: ScheduleInfo = client.call_json(commands::SCHEDULES_CREATE, &create, ANSWER).await?;
    match args.output.format() {
        format @ (Format::Json | Format::Yaml) => output::print_structured(&s, format)?,
        Format::Name => outln!("{}", s.id),
        Format::Table | Format::Wide => {
            outln!("{}", s.id);
            let short = crate::jobs::short_id(&s.id, 13);
            if s.on_agent {
                eprintln!(
                    "schedule stored: {} on '{}', run by each matching device on its own clock; its runs: orb jobs --schedule {short}",
                    s.command, s.target
                );
            } else {
                eprintln!(
                    "schedule stored: {} on '{}', first at {} (orb schedule show {short})",
                    s.command,
                    s.target,
                    s.next_fire_at.as_deref().unwrap_or("-"),
                );
            }
        }
    }
    Ok(exit::OK)
}

/// `show`, `pause`, `resume`, `rm`: one schedule by id or prefix.
async fn one(a: &ScheduleIdArgs, command: &str, done: Option<&str>) -> Result<u8, Failure> {
    let client = connect::operator(&a.connect).await?;
    let answer = client.call_json::<_, ScheduleInfo>(command, &ScheduleRef { id: a.id.clone() }, ANSWER).await;
    client.close().await;
    let s = answer?;
    // A one-shot resumed after its time under `skip` ends instead (the answer says why).
    let resumed = (command == commands::SCHEDULES_RESUME).then(|| resumed(&s, Utc::now()));
    match a.output.format() {
        format @ (Format::Json | Format::Yaml) => output::print_structured(&s, format)?,
        Format::Name => outln!("{}", s.id),
        Format::Table | Format::Wide => match (&resumed, done) {
            (Some((line, _)), _) => outln!("{line}"),
            (None, Some(done)) => outln!("schedule {} {done}", s.id),
            (None, None) => print_one(&s),
        },
    }
    Ok(match resumed {
        Some((_, false)) => exit::FAILED,
        _ => exit::OK,
    })
}

/// What `orb schedule resume` says of the schedule the server answered at `now`, and whether it
/// goes on (false: a one-shot past its time under `skip`, ended and removed).
fn resumed(s: &ScheduleInfo, now: DateTime<Utc>) -> (String, bool) {
    let id = &s.id;
    let next = s.next_fire_at.as_deref();
    match (next, &s.last_error) {
        _ if s.on_agent => (format!("schedule {id} resumed: the devices run it again"), true),
        (None, Some(why)) => (format!("schedule {id} not resumed: {why}"), false),
        (Some(t), _) if DateTime::parse_from_rfc3339(t).is_ok_and(|t| t <= now) => {
            (format!("schedule {id} resumed: its time, {t}, passed while it was paused; it fires now"), true)
        }
        (Some(t), _) => (format!("schedule {id} resumed, next at {t}"), true),
        (None, None) => (format!("schedule {id} resumed"), true),
    }
}

fn print_one(s: &ScheduleInfo) {
    let dash = |v: Option<&str>| v.unwrap_or("-").to_owned();
    outln!("schedule {}", s.id);
    match &s.args {
        Some(a) => outln!("  command    {} {}", s.command, a.get()),
        None => outln!("  command    {}", s.command),
    }
    outln!("  selector   {}", s.target);
    outln!("  when       {}", s.spec.as_ref().map_or_else(|| "unreadable".to_owned(), describe));
    outln!("  missed     {}", s.missed);
    if s.on_agent {
        outln!("  runs on    each matching device, by its own clock (also while disconnected)");
    }
    outln!("  deadline   {} ms", s.deadline_ms);
    outln!("  ttl        {}", s.ttl_ms.map_or_else(|| "-".to_owned(), |t| format!("{t} ms")));
    outln!("  rollout    {}", crate::rollout::describe(&s.rollout.unwrap_or_default()));
    if s.on_agent {
        // The devices fire it and count their own runs; the server stores each run as a job.
        outln!("  runs       on the devices: see orb jobs --schedule {}", crate::jobs::short_id(&s.id, 13));
    } else {
        outln!("  next       {}", dash(s.next_fire_at.as_deref()));
        outln!("  last       {}", dash(s.last_fired_at.as_deref()));
        outln!("  fired      {}", s.fired);
    }
    outln!("  paused     {}", dash(s.paused_at.as_deref()));
    outln!("  created    {} by {}", s.created_at, s.created_by);
    if let Some(e) = &s.last_error {
        outln!("  last error {e}");
    }
}

fn print_list(all: &[ScheduleInfo], out: &OutputArgs) -> Result<u8, Failure> {
    let format = out.format();
    match format {
        Format::Json | Format::Yaml => output::print_structured(&all, format)?,
        Format::Name => all.iter().for_each(|s| outln!("{}", s.id)),
        Format::Table | Format::Wide if all.is_empty() => eprintln!("no schedules stored"),
        Format::Table | Format::Wide => {
            let header = ["ID", "NEXT", "FIRED", "WHEN", "COMMAND", "SELECTOR"];
            // The list holds every schedule, so these short ids are unique among all of them.
            let len = if format == Format::Wide {
                usize::MAX
            } else {
                crate::jobs::prefix_len(&all.iter().map(|s| s.id.as_str()).collect::<Vec<_>>())
            };
            let rows = all
                .iter()
                .map(|s| {
                    let next = match (&s.paused_at, &s.next_fire_at) {
                        (Some(_), _) => "paused".to_owned(),
                        (None, _) if s.on_agent => "on each device".to_owned(),
                        (None, Some(t)) => t.clone(),
                        (None, None) => "-".to_owned(),
                    };
                    let id = crate::jobs::short_id(&s.id, len).to_owned();
                    let when = s.spec.as_ref().map_or_else(|| "unreadable".to_owned(), describe);
                    // The devices count their own runs: `orb jobs --schedule ID` lists them.
                    let fired = if s.on_agent { "-".to_owned() } else { s.fired.to_string() };
                    vec![id, next, fired, when, s.command.clone(), s.target.clone()]
                })
                .collect();
            outln!("{}", render::table(&header, rows, !out.no_headers, |_, _| None));
        }
    }
    Ok(exit::OK)
}

/// A spec as people write it: `at 2026-...`, `every 90s`, `cron '0 2 * * *' Europe/Berlin`.
fn describe(spec: &Spec) -> String {
    match spec {
        Spec::At { at } => format!("at {}", at.to_rfc3339_opts(SecondsFormat::Secs, true)),
        Spec::Every { every_ms, .. } => {
            format!("every {}", humantime::format_duration(Duration::from_millis(*every_ms)))
        }
        Spec::Cron { expr, tz } => format!("cron '{expr}' {tz}"),
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

/// This machine's zone by its IANA name ([`choose_zone`] over `$TZ`, the system setting and
/// `chrono::Local`), with its warning on stderr when local time has no IANA name.
fn local_zone() -> Tz {
    let tz = std::env::var("TZ").ok();
    let system = iana_time_zone::get_timezone().ok();
    let local = |t: DateTime<Utc>| Local.offset_from_utc_datetime(&t.naive_utc()).fix();
    let (zone, warning) = choose_zone(tz.as_deref(), system.as_deref(), local, Utc::now().year());
    if let Some(w) = warning {
        eprintln!("warning: {w}");
    }
    zone
}

/// The zone local times are read and shown in: `$TZ` (`tz`; a leading `:` dropped, empty is
/// UTC) when it names an IANA zone, else the system's zone (`system`, `/etc/localtime` on
/// Linux), else UTC. A warning comes with it when that may not be this machine's local time:
/// `$TZ` is set but names no IANA zone (a POSIX rule such as `CET-1CEST`, which chrono-tz cannot
/// evaluate), or the zone's offsets in January and in July of `year` differ from those local
/// time (`local`) has then. Pure, for the tests below.
fn choose_zone(
    tz: Option<&str>,
    system: Option<&str>,
    local: impl Fn(DateTime<Utc>) -> chrono::FixedOffset,
    year: i32,
) -> (Tz, Option<String>) {
    let named = |name: &str| orb_schedule::parse_zone(name.trim_start_matches(':')).ok();
    let instants: Vec<DateTime<Utc>> =
        [1, 7].iter().filter_map(|&month| Utc.with_ymd_and_hms(year, month, 15, 12, 0, 0).single()).collect();
    let agrees = |zone: Tz| instants.iter().all(|t| zone.offset_from_utc_datetime(&t.naive_utc()).fix() == local(*t));
    let pass = "pass --tz ZONE (an IANA name such as Europe/Berlin)";
    match tz.map(|t| t.trim_start_matches(':')) {
        Some("") => (Tz::UTC, None),
        Some(t) => match named(t) {
            Some(zone) => (zone, None),
            None => {
                let zone = system.and_then(named).filter(|z| agrees(*z)).unwrap_or(Tz::UTC);
                let why = format!("TZ={t} is not an IANA time zone name; times are read and shown in {}", zone.name());
                (zone, Some(format!("{why}: {pass}")))
            }
        },
        None => {
            let zone = system.and_then(named).unwrap_or(Tz::UTC);
            let warning = (!agrees(zone))
                .then(|| format!("this machine's time zone has no IANA name; times are in {}: {pass}", zone.name()));
            (zone, warning)
        }
    }
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
    fn resume_says_when_it_fires_and_why_a_one_shot_past_its_time_does_not() {
        let info = |next: Option<&str>, error: Option<&str>| ScheduleInfo {
            id: "01a2".to_owned(),
            target: "*".to_owned(),
            command: "ping".to_owned(),
            args: None,
            deadline_ms: 1000,
            ttl_ms: None,
            rollout: None,
            spec: None,
            missed: "skip".to_owned(),
            on_agent: false,
            created_by: "admin".to_owned(),
            created_at: "2026-06-01T11:00:00Z".to_owned(),
            paused_at: None,
            next_fire_at: next.map(str::to_owned),
            last_fired_at: None,
            fired: 0,
            last_error: error.map(str::to_owned),
        };
        let ahead = info(Some("2026-06-01T13:00:00Z"), None);
        assert_eq!(resumed(&ahead, now()), ("schedule 01a2 resumed, next at 2026-06-01T13:00:00Z".to_owned(), true));
        let (line, goes_on) = resumed(&info(Some("2026-06-01T11:59:00Z"), None), now());
        assert!(goes_on && line.ends_with("passed while it was paused; it fires now"), "{line}");
        let ended = info(None, Some("it will not fire: its time, ... ; it was removed"));
        let (line, goes_on) = resumed(&ended, now());
        assert!(!goes_on && line.starts_with("schedule 01a2 not resumed: it will not fire"), "{line}");
    }

    #[test]
    fn the_machines_zone_is_named_or_comes_with_a_warning() {
        let berlin = |t: DateTime<Utc>| Tz::Europe__Berlin.offset_from_utc_datetime(&t.naive_utc()).fix();
        let utc = |_: DateTime<Utc>| chrono::FixedOffset::east_opt(0).unwrap();
        let choose =
            |tz, system, local: &dyn Fn(DateTime<Utc>) -> chrono::FixedOffset| choose_zone(tz, system, local, 2026);
        // $TZ naming an IANA zone wins, with or without the leading colon; empty is UTC.
        assert_eq!(choose(Some("America/New_York"), Some("Europe/Berlin"), &berlin), (Tz::America__New_York, None));
        assert_eq!(choose(Some(":Europe/Berlin"), None, &utc), (Tz::Europe__Berlin, None));
        assert_eq!(choose(Some(""), Some("Europe/Berlin"), &berlin), (Tz::UTC, None));
        // A POSIX rule: the system's zone when it keeps the same offsets, else UTC; warned either way.
        let (zone, warning) = choose(Some("CET-1CEST"), Some("Europe/Berlin"), &berlin);
        assert_eq!(zone, Tz::Europe__Berlin);
        assert!(warning.unwrap().starts_with(
            "TZ=CET-1CEST is not an IANA time zone name; times are read and shown in Europe/Berlin: pass --tz"
        ));
        // chrono may not read the rule either (local time then looks like UTC): still warned.
        let (zone, warning) = choose(Some("CET-1CEST"), Some("Etc/UTC"), &utc);
        assert_eq!(zone, Tz::Etc__UTC);
        assert!(warning.unwrap().contains("shown in Etc/UTC"));
        let (zone, warning) = choose(Some("CET-1CEST"), None, &berlin);
        assert_eq!(zone, Tz::UTC);
        assert!(warning.is_some());
        // No $TZ: the system's zone, warned when local time disagrees with it in winter or summer.
        assert_eq!(choose(None, Some("Europe/Berlin"), &berlin), (Tz::Europe__Berlin, None));
        assert_eq!(choose(None, None, &utc), (Tz::UTC, None));
        let (zone, warning) = choose(None, None, &berlin);
        assert_eq!(zone, Tz::UTC);
        assert!(warning.unwrap().starts_with("this machine's time zone has no IANA name; times are in UTC"));
        let london = |t: DateTime<Utc>| Tz::Europe__London.offset_from_utc_datetime(&t.naive_utc()).fix();
        assert!(choose(None, Some("UTC"), &london).1.is_some(), "equal in winter, not in summer");
    }

    #[test]
    fn a_spec_is_described_to_the_second() {
        let at = Spec::At { at: utc("2026-12-07T21:52:48.608356486Z") };
        assert_eq!(describe(&at), "at 2026-12-07T21:52:48Z");
        assert_eq!(describe(&Spec::Every { every_ms: 5_400_000, anchor: now() }), "every 1h 30m");
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

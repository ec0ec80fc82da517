//! End-to-end tests of `orb schedule preview`: the real binary, no server, exact firing times
//! across a DST change, both output formats, and the refusals (exit 2, `error: CODE: ...`).
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::Output;

use common::{orb_cmd, stderr, stdout};

/// `orb schedule preview ARGS` in `cwd`, with the machine's zone pinned to UTC unless the
/// arguments give `--tz`.
fn preview(cwd: &Path, args: &[&str]) -> Output {
    orb_cmd(cwd).args(["schedule", "preview"]).args(args).env("TZ", "UTC").output().unwrap()
}

/// Runs a preview that must succeed; its stdout parsed as the `--json` array of strings.
fn preview_json(args: &[&str]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let out = preview(dir.path(), &[args, &["--json"]].concat());
    assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
    serde_json::from_str(&stdout(&out))
        .unwrap_or_else(|e| panic!("{args:?}: not one JSON array ({e}):\n{}", stdout(&out)))
}

/// Asserts a refused preview: exit 2, nothing on stdout, and `want` in the error.
fn assert_refused(args: &[&str], want: &str) {
    let dir = tempfile::tempdir().unwrap();
    let out = preview(dir.path(), args);
    assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    assert!(stdout(&out).is_empty(), "{args:?} printed: {}", stdout(&out));
    assert!(stderr(&out).contains(want), "{args:?}: {want:?} not in: {}", stderr(&out));
}

#[test]
fn cron_preview_in_berlin_follows_the_spring_forward_change() {
    // 2026-03-29: Berlin's clock jumps from 02:00 CET (01:00Z) to 03:00 CEST.
    // Hourly: 01:00 CET, then 03:00 CEST; 02:00 does not exist that night.
    assert_eq!(
        preview_json(&[
            "--cron",
            "0 * * * *",
            "--tz",
            "Europe/Berlin",
            "--from",
            "2026-03-28T23:30:00Z",
            "--count",
            "4"
        ]),
        ["2026-03-29T00:00:00Z", "2026-03-29T01:00:00Z", "2026-03-29T02:00:00Z", "2026-03-29T03:00:00Z"]
    );
    // A fixed 02:30 fires once when the clock resumes (03:00 CEST), then 02:30 CEST; `--from`
    // is a local time read in the --tz zone (12:00 CET = 11:00Z).
    assert_eq!(
        preview_json(&["--cron", "30 2 * * *", "--tz", "Europe/Berlin", "--from", "2026-03-28 12:00", "--count", "3"]),
        ["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z", "2026-03-31T00:30:00Z"]
    );
}

#[test]
fn every_preview_is_anchored_at_from() {
    assert_eq!(
        preview_json(&["--every", "90m", "--from", "2026-06-01T08:00:00Z", "--count", "3"]),
        ["2026-06-01T09:30:00Z", "2026-06-01T11:00:00Z", "2026-06-01T12:30:00Z"]
    );
}

#[test]
fn human_output_shows_the_zone_time_then_utc_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = preview(
        dir.path(),
        &["--cron", "30 2 * * *", "--tz", "Europe/Berlin", "--from", "2026-03-28 12:00", "--count", "2"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "2026-03-29T03:00:00+02:00  (2026-03-29T01:00:00Z)\n2026-03-30T02:30:00+02:00  (2026-03-30T00:30:00Z)\n"
    );
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
    // No server was needed, and nothing was written: no data folder, no client configuration.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0, "files appeared in the working folder");
}

#[test]
fn without_tz_cron_runs_in_the_machines_zone() {
    let dir = tempfile::tempdir().unwrap();
    let out = orb_cmd(dir.path())
        .args(["schedule", "preview", "--cron", "0 9 * * *", "--from", "2026-01-10 12:00", "--count", "1"])
        .env("TZ", "America/New_York")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "2026-01-11T09:00:00-05:00  (2026-01-11T14:00:00Z)\n");
    // Ten firings by default.
    assert_eq!(preview_json(&["--every", "1h"]).len(), 10);
}

/// A POSIX `TZ` rule (no IANA name) is not silently read as UTC: the preview warns, naming the
/// zone it used and `--tz`; an IANA `TZ` gets no warning.
#[test]
fn a_posix_tz_rule_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let run = |tz: &str| {
        orb_cmd(dir.path())
            .args(["schedule", "preview", "--cron", "0 9 * * *", "--from", "2026-01-10 12:00", "--count", "1"])
            .env("TZ", tz)
            .output()
            .unwrap()
    };
    let out = run("CET-1CEST");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let warning = stderr(&out);
    assert!(warning.starts_with("warning: TZ=CET-1CEST is not an IANA time zone name"), "{warning}");
    assert!(warning.contains("pass --tz ZONE"), "{warning}");
    let out = run(":Europe/Berlin");
    assert_eq!(stdout(&out), "2026-01-11T09:00:00+01:00  (2026-01-11T08:00:00Z)\n");
    assert!(stderr(&out).is_empty(), "{}", stderr(&out));
}

#[test]
fn an_invalid_cron_expression_is_refused_naming_the_field() {
    assert_refused(
        &["--cron", "0 25 * * *"],
        "error: invalid_cron: cron field 2 (hour) `25`: number out of bounds; allowed 0-23",
    );
    assert_refused(&["--cron", "0 0 * * FOO"], "error: invalid_cron: cron field 5 (day of week) `FOO`");
    assert_refused(&["--cron", "0 0 30 2 *"], "error: invalid_cron: cron `0 0 30 2 *`: never fires");
    assert_refused(&["--cron", "*/61 * * * *"], "error: invalid_cron: cron field 1 (minute) `*/61`: step 61 is beyond");
}

#[test]
fn an_unknown_zone_is_refused() {
    assert_refused(
        &["--cron", "0 9 * * *", "--tz", "Mars/Olympus"],
        "error: unknown_zone: unknown time zone `Mars/Olympus`",
    );
}

#[test]
fn a_zero_or_sub_second_interval_is_refused() {
    assert_refused(&["--every", "0s"], "error: zero_interval: duration `0s` is zero");
    assert_refused(&["--every", "500ms"], "error: invalid_duration: duration `500ms`: shorter than the minimum");
    assert_refused(&["--every", "366days"], "error: invalid_duration: duration `366days`: longer than the maximum");
}

#[test]
fn a_count_over_the_maximum_is_refused_naming_it() {
    assert_refused(&["--every", "1m", "--count", "1001"], "1000");
    assert_refused(&["--every", "1m", "--count", "0"], "1000");
    assert_eq!(preview_json(&["--every", "1s", "--count", "1000"]).len(), 1000);
}

#[test]
fn exactly_one_of_cron_and_every_is_required() {
    assert_refused(&["--cron", "@daily", "--every", "1h"], "cannot be used with");
    assert_refused(&[], "--cron <EXPR>|--every <DURATION>");
    assert_refused(&["--every", "1h", "--from", "tomorrow"], "error: invalid_time: time `tomorrow`");
}

/// A schedule made with `orb send --in` fires once across a crash between its firing's commit
/// and its dispatch: the server aborts there (the test-only crash point), and the restarted
/// server dispatches that firing's job, once; its command is held (`--ttl`) for the device,
/// which answers it when it is back.
#[test]
fn a_firing_runs_once_across_a_crash_between_its_commit_and_its_dispatch() {
    use common::{ADMIN, Proc, STARTUP, Server, agent_cmd, free_port, poll_until, serve_cmd};
    use serde_json::Value;

    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let mut crashing = serve_cmd(dir.path(), &listen);
    crashing.env("ORB_TEST_CRASH_AFTER_FIRING", "1");
    let mut server = Server::spawn(dir, crashing);
    let _agent = Proc::spawn("orb agent sch-1", agent_cmd(server.cwd(), &server.tcp, "sch-1"));
    server.wait_connected(&["sch-1"]);

    let out =
        server.client("send").args(["sch-1", "echo", "once", "--in", "1s", "--ttl", "1m", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let created: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let id = created["id"].as_str().unwrap().to_owned();
    assert_eq!(created["fired"], 0);

    let status = server.proc.wait_exit(STARTUP);
    assert!(!status.success(), "the crash point aborts the server: {status:?}");
    let Server { dir, proc, .. } = server;
    drop(proc);
    let mut restart = serve_cmd(dir.path(), &listen);
    // What was due before a start waits for the devices connected before it (sch-1), at most
    // scheduler.restart_grace: ten minutes here, so the firing below proves it did not wait.
    restart.env("ORB_SCHEDULER__RESTART_GRACE", "10m");
    let server = Server::spawn(dir, restart);

    // The firing is dispatched after the restart: one job for the schedule, answered once.
    let json = |sub: &[&str]| -> Value {
        let out = orb_cmd(server.cwd())
            .args(sub)
            .args(["--server", &server.tcp, "--token", ADMIN, "--json"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{sub:?}: {}", stderr(&out));
        serde_json::from_str(&stdout(&out)).unwrap()
    };
    let requester = format!("schedule:{id}");
    let mut job = String::new();
    poll_until("the fired job is done", || {
        let jobs = json(&["jobs"]);
        let fired: Vec<&Value> =
            jobs.as_array().unwrap().iter().filter(|j| j["requester"] == requester.as_str()).collect();
        assert!(fired.len() <= 1, "fired once: {jobs}");
        match fired.first() {
            Some(j) if j["state"] == "done" => {
                job = j["id"].as_str().unwrap().to_owned();
                true
            }
            _ => false,
        }
    });
    let detail = json(&["jobs", "show", &job]);
    let results = detail["results"].as_array().unwrap();
    assert_eq!(results.len(), 1, "{detail}");
    assert_eq!((results[0]["device"].as_str(), results[0]["status"].as_str()), (Some("sch-1"), Some("ok")), "{detail}");
    assert_eq!(results[0]["result"], "once");
    let by_schedule = json(&["jobs", "--schedule", &id]);
    assert_eq!(by_schedule.as_array().unwrap().len(), 1, "{by_schedule}");
    assert_eq!(by_schedule[0]["id"], job.as_str());
    // The schedule is gone (its firing deleted it): a prefix still finds it by its jobs, and a
    // mistyped one is an error, not an empty list.
    assert_eq!(json(&["jobs", "--schedule", &id[..13].to_uppercase()]), by_schedule);
    let out = orb_cmd(server.cwd())
        .args(["jobs", "--schedule", "ffffffff-0000", "--server", &server.tcp, "--token", ADMIN])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("schedule_not_found"), "{}", stderr(&out));
    // An --in schedule fires once, and is deleted by that firing.
    let out = orb_cmd(server.cwd())
        .args(["schedule", "show", &id, "--server", &server.tcp, "--token", ADMIN])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("schedule_not_found"), "{}", stderr(&out));
}

/// `orb send`'s scheduling flags are checked before anything is sent: bad input exits 2 with the
/// code and the value at fault, without contacting the server (none listens here).
#[test]
fn send_scheduling_flags_are_checked_before_anything_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let send = |args: &[&str]| {
        orb_cmd(dir.path())
            .args(["send", "--server", "tcp://127.0.0.1:9", "--token", "x", "web-1", "ping"])
            .args(args)
            .env("TZ", "UTC")
            .output()
            .unwrap()
    };
    for (args, want) in [
        (&["--at", "2020-01-01 10:00"][..], "in_the_past"),
        (&["--cron", "0 25 * * *"][..], "invalid_cron: cron field 2 (hour)"),
        (&["--cron", "@daily", "--tz", "Mars/Olympus"][..], "unknown_zone"),
        (&["--every", "0s"][..], "zero_interval"),
        (&["--in", "soon"][..], "invalid_duration"),
        (&["--every", "1m", "--missed", "always"][..], "invalid_policy"),
        // A zone means nothing to elapsed time: refused, whether or not it exists.
        (&["--every", "1h", "--tz", "Mars/Olympus"][..], "--tz applies to --at and --cron"),
        (&["--in", "10m", "--tz", "Europe/Berlin"][..], "--tz applies to --at and --cron"),
        (&["--at", "2030-01-01 10:00", "--tz", "Mars/Olympus"][..], "unknown_zone"),
    ] {
        let out = send(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).is_empty());
    }
    // Flags that make no sense together are usage errors too.
    for args in [
        &["--at", "2030-01-01 10:00", "--every", "1m"][..],
        &["--every", "1m", "--async"],
        &["--tz", "UTC"],
        // A schedule run on the agents: it needs a when, and takes no TTL or rollout.
        &["--on-agent"],
        &["--every", "1m", "--on-agent", "--ttl", "1h"],
        &["--every", "1m", "--on-agent", "--batch", "10%"],
        // It repeats: a one-shot would reach a device only if it were connected in time.
        &["--at", "2030-01-01 10:00", "--on-agent"],
        &["--in", "1h", "--on-agent"],
    ] {
        assert_eq!(send(args).status.code(), Some(2), "{args:?}");
    }
}

/// What `orb schedule show` and `list` print is true: an agent-local schedule's runs are on the
/// devices (no server-side `fired 0`), and a one-shot's time is shown to the second.
#[test]
fn show_and_list_tell_where_a_schedule_runs_and_when_to_the_second() {
    use common::{ADMIN, Server, free_port, serve_cmd};

    let dir = tempfile::tempdir().unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let cmd = serve_cmd(dir.path(), &listen);
    let server = Server::spawn(dir, cmd);
    let stored = |args: &[&str]| {
        let out = server.client("send").args(["tag:kind=sensor", "ping"]).args(args).args(["-o", "name"]).output();
        let out = out.unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        stdout(&out).trim().to_owned()
    };
    let schedule = |args: &[&str]| {
        let out = orb_cmd(server.cwd())
            .arg("schedule")
            .args(args)
            .args(["--server", &server.tcp, "--token", ADMIN])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", stderr(&out));
        stdout(&out)
    };

    let local = stored(&["--every", "30s", "--on-agent"]);
    let shown = schedule(&["show", &local]);
    assert!(shown.contains("  runs       on the devices: see orb jobs --schedule "), "{shown}");
    assert!(!shown.contains("fired") && !shown.contains("  last "), "{shown}");

    stored(&["--in", "1h"]);
    let listed = schedule(&["list", "--no-headers"]);
    let when = listed.lines().find_map(|l| l.split("  ").map(str::trim).find(|c| c.starts_with("at "))).unwrap();
    assert_eq!(when.len(), "at 2026-12-07T21:52:48Z".len(), "to the second: {listed}");
}

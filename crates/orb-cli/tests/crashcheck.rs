//! The crash checker (issue 11) at the size CI runs: `orb serve` and three agents as processes,
//! 5 SIGKILL cycles, 2,000 commands with a TTL and 2,000 outbox events; 0 lost, 0 executed
//! twice, 0 reordered, 0 unexpected. The kill schedule's seed is printed (stderr) and
//! `ORB_CRASH_SEED` replays it.
#![allow(clippy::unwrap_used)]

mod common;

use common::{json_lines, orb_cmd, stderr};

#[test]
fn nothing_acknowledged_is_lost_or_run_twice_across_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = orb_cmd(dir.path());
    // Bounded: about 20 s of kills and work, at most 3 min to settle.
    cmd.args(["crashcheck", "--json"]).timeout(std::time::Duration::from_secs(540));
    // The test's environment is cleared of ORB_ variables: a seed to replay is passed on.
    if let Ok(seed) = std::env::var("ORB_CRASH_SEED") {
        cmd.args(["--seed", &seed]);
    }
    let out = cmd.output().unwrap();
    let log = stderr(&out);
    eprintln!("{log}");
    let v = json_lines(&out).pop().unwrap_or_else(|| panic!("no report; stderr: {log}"));
    let r = &v["report"];
    assert_eq!(v["passed"], true, "{r:#}");
    assert!(out.status.success());
    for anomaly in [
        "lost",
        "executed_twice",
        "reordered",
        "unexpected",
        "commands_refused",
        "events_lost",
        "events_duplicated",
        "events_reordered",
        "events_unexpected",
    ] {
        assert_eq!(r[anomaly], 0, "{anomaly}: {r:#}");
    }
    assert_eq!(v["plan"]["cycles"], 5);
    assert_eq!(v["plan"]["agents"], 3);
    // The kills happened, and the work really went through: 667 commands and events per agent.
    assert!(v["kills"]["server"].as_u64().unwrap() + v["kills"]["agents"].as_u64().unwrap() >= 5, "{v:#}");
    let acked = r["commands_acknowledged"].as_u64().unwrap();
    assert!(acked + r["commands_unsure"].as_u64().unwrap() == 2001, "{r:#}");
    assert!(acked >= 1900, "most submits are acknowledged: {r:#}");
    assert_eq!(r["events_sent"].as_u64().unwrap() + r["events_unsure"].as_u64().unwrap(), 2001, "{r:#}");
}

#[test]
fn a_bad_seed_or_size_is_a_usage_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = orb_cmd(dir.path()).args(["crashcheck"]).env("ORB_CRASH_SEED", "soon").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(&out));
    assert!(stderr(&out).contains("ORB_CRASH_SEED"), "{}", stderr(&out));
    let out = orb_cmd(dir.path()).args(["crashcheck", "--agents", "1", "--events", "20000"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(&out));
    // A folder holding an earlier run's logs would be judged as this run's.
    std::fs::write(dir.path().join("executed.log"), "1\n").unwrap();
    let out = orb_cmd(dir.path()).arg("crashcheck").arg("--dir").arg(dir.path()).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(&out));
    assert!(stderr(&out).contains("not empty"), "{}", stderr(&out));
}

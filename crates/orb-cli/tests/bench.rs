//! `orb bench` as a user runs it: a child server, a swarm process, small workloads, the JSON
//! summary line, and the side-by-side comparison with the NATS server at `ORB_TEST_NATS_URL`
//! (skipped with a message when unset, a failure under `CI=true`). No timing is asserted.
#![allow(clippy::unwrap_used)]

mod common;

use common::{json_lines, orb_cmd, stderr};

fn last_json(out: &std::process::Output) -> serde_json::Value {
    json_lines(out).pop().unwrap_or_else(|| panic!("no JSON line; stderr: {}", stderr(out)))
}

#[test]
fn fanout_runs_against_its_own_server_and_reports_json() {
    let dir = tempfile::tempdir().unwrap();
    let out =
        orb_cmd(dir.path()).args(["bench", "fanout", "--agents", "20", "--trials", "2", "--json"]).output().unwrap();
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let v = last_json(&out);
    assert_eq!(v["scenario"], "fanout");
    assert_eq!(v["agents"], 20);
    assert_eq!(v["server"], "child process");
    assert_eq!(v["orb"]["errors"], 0);
    assert!(v["orb"]["last_ms"]["median"].as_f64().unwrap() > 0.0);
    assert!(v["ratio"].is_null(), "no peer was asked for");
}

#[test]
fn tls_runs_the_server_requester_and_agents_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    // A child server: the agents (a swarm process) and the requester trust the run's CA.
    let out = orb_cmd(dir.path())
        .args(["bench", "fanout", "--agents", "10", "--trials", "1", "--tls", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert_eq!(last_json(&out)["orb"]["errors"], 0);
    // Embedded, and the idle probe agent too.
    let out = orb_cmd(dir.path())
        .args(["bench", "rr", "--count", "100", "--trials", "1", "--embedded", "--tls", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert!(last_json(&out)["orb"]["per_second"]["median"].as_f64().unwrap() > 0.0);
    let out = orb_cmd(dir.path()).args(["bench", "idle", "--connections", "10", "--tls", "--json"]).output().unwrap();
    assert!(out.status.success(), "stderr: {}", stderr(&out));
}

#[test]
fn rr_and_idle_and_storm_run_with_small_workloads() {
    let dir = tempfile::tempdir().unwrap();
    let rr = orb_cmd(dir.path())
        .args(["bench", "rr", "--inflight", "4", "--count", "200", "--trials", "1", "--embedded", "--json"])
        .args(["--codec", "msgpack"])
        .output()
        .unwrap();
    assert!(rr.status.success(), "stderr: {}", stderr(&rr));
    let v = last_json(&rr);
    assert_eq!(v["codec"], "msgpack");
    assert!(v["orb"]["per_second"]["median"].as_f64().unwrap() > 0.0);

    let idle = orb_cmd(dir.path()).args(["bench", "idle", "--connections", "50", "--json"]).output().unwrap();
    assert!(idle.status.success(), "stderr: {}", stderr(&idle));
    let v = last_json(&idle);
    assert!(v["result"]["agent_rss_mib"].as_f64().unwrap() > 0.0);

    let storm =
        orb_cmd(dir.path()).args(["bench", "storm", "--agents", "20", "--trials", "1", "--json"]).output().unwrap();
    assert!(storm.status.success(), "stderr: {}", stderr(&storm));
    assert_eq!(last_json(&storm)["scenario"], "storm");
}

#[test]
fn pubsub_delivers_every_message_to_every_subscriber_and_reports_json() {
    let dir = tempfile::tempdir().unwrap();
    // 600 messages: three bursts, the last one short, so the window is waited on.
    let out = orb_cmd(dir.path())
        .args(["bench", "pubsub", "--subscribers", "5", "--messages", "600", "--probes", "5", "--trials", "1"])
        .args(["--codec", "msgpack", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let v = last_json(&out);
    assert_eq!(v["scenario"], "pubsub");
    assert_eq!(v["subscribers"], 5);
    assert_eq!(v["messages"], 600);
    assert_eq!(v["server"], "child process");
    assert!(v["orb"]["deliveries_per_second"]["median"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["orb"]["p50_us"]["median"].as_f64().unwrap() > 0.0, "{v}");
    assert!(v["orb"]["server_cpu_us_per_delivery"].is_number(), "{v}");
    assert!(v["ratio"].is_null(), "no peer was asked for");

    let embedded = orb_cmd(dir.path())
        .args(["bench", "pubsub", "--subscribers", "3", "--messages", "10", "--probes", "2", "--trials", "1"])
        .args(["--embedded", "--json"])
        .output()
        .unwrap();
    assert!(embedded.status.success(), "stderr: {}", stderr(&embedded));
    let v = last_json(&embedded);
    assert_eq!(v["server"], "embedded");
    assert!(v["orb"]["server_cpu_us_per_delivery"].is_null(), "the server shares this process: {v}");
}

#[test]
fn bad_bench_options_are_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = orb_cmd(dir.path()).args(["bench", "fanout", "--codec", "xml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(&out));
    let out = orb_cmd(dir.path()).args(["bench", "storm", "--embedded"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(&out));
}

#[test]
fn fanout_rr_and_pubsub_compare_with_nats() {
    let Ok(nats) = std::env::var("ORB_TEST_NATS_URL") else {
        assert!(std::env::var("CI").is_err(), "ORB_TEST_NATS_URL must be set under CI");
        eprintln!("skipped: ORB_TEST_NATS_URL is not set");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &["fanout", "--agents", "20", "--trials", "2"][..],
        &["rr", "--inflight", "2", "--count", "200", "--trials", "1"],
        &["pubsub", "--subscribers", "5", "--messages", "600", "--probes", "5", "--trials", "1"],
    ] {
        let out = orb_cmd(dir.path())
            .arg("bench")
            .args(args)
            .args(["--vs", "nats", "--json"])
            .env("ORB_BENCH_NATS_URL", &nats)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        let v = last_json(&out);
        assert!(v["ratio"].as_f64().unwrap() > 0.0, "{v}");
        assert!(v["nats"].is_object());
    }
}

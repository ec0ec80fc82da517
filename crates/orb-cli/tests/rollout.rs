//! `orb send`'s rollout flags from the binary: bad values exit 2 before anything is sent, a
//! batched job prints each batch as it starts and is stored with its rollout, and a schedule keeps
//! its rollout for every firing.
#![allow(clippy::unwrap_used)]

mod common;

use common::{ADMIN, Server, orb_cmd, poll_until, stderr, stdout};
use serde_json::Value;

#[test]
fn rollout_flags_are_checked_before_anything_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let send = |args: &[&str]| {
        orb_cmd(dir.path())
            .args(["send", "--server", "tcp://127.0.0.1:9", "--token", "x", "web-*", "ping"])
            .args(args)
            .output()
            .unwrap()
    };
    for (args, want) in [
        (&["--batch", "0"][..], "a batch of 0 runs nothing"),
        (&["--batch", "0%"][..], "a batch of 0% runs nothing"),
        (&["--batch", "150%"][..], "above 100%"),
        (&["--batch", "ten"][..], "expected a count (25) or a percentage"),
        (&["--batch", "5", "--abort-on-failure", "120%"][..], "0% to 100%"),
        (&["--splay", "2days"][..], "bad_rollout: --splay 2days is longer than 1day"),
        (&["--abort-on-failure", "5%"][..], "--batch"),
        (&["--batch-wait", "10s"][..], "--batch"),
    ] {
        let out = send(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{args:?}: {}", stderr(&out));
        assert!(stdout(&out).is_empty());
    }
}

#[test]
fn a_batched_send_shows_its_batches_and_a_schedule_keeps_its_rollout() {
    let server = Server::start();
    let _agents: Vec<_> = ["r-1", "r-2", "r-3"].iter().map(|id| server.agent(id, &[])).collect();
    server.wait_connected(&["r-1", "r-2", "r-3"]);

    let out = server.client("send").args(["r-*", "ping", "--batch", "1", "--batch-wait", "10ms"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    for n in 1..=3 {
        assert!(err.contains(&format!("batch {n}/3 started: 1 target(s)")), "{err}");
    }
    assert!(stdout(&out).contains("3 of 3 targets answered ok"), "{}", stdout(&out));

    let json = |sub: &[&str]| -> Value {
        let out = orb_cmd(server.cwd()).args(sub).args(["--server", &server.tcp, "--token", ADMIN, "--json"]).output();
        let out = out.unwrap();
        assert_eq!(out.status.code(), Some(0), "{sub:?}: {}", stderr(&out));
        serde_json::from_str(&stdout(&out)).unwrap()
    };
    let jobs = json(&["jobs"]);
    let job = jobs[0]["id"].as_str().unwrap().to_owned();
    let shown = json(&["jobs", "show", &job]);
    assert_eq!(shown["job"]["rollout"], serde_json::json!({"batch": "1", "batch_wait_ms": 10}), "{shown}");
    let human = server.client("jobs").args(["show", &job]).output().unwrap();
    assert!(stdout(&human).contains("rollout    batches of 1, 10ms apart"), "{}", stdout(&human));

    // A schedule stores its rollout; its firing's job runs with it.
    let out = server.client("send").args(["r-*", "ping", "--in", "1s", "--batch", "50%", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let created: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(created["rollout"], serde_json::json!({"batch": "50%"}), "{created}");
    let id = created["id"].as_str().unwrap().to_owned();
    let mut fired = Value::Null;
    poll_until("the firing's job is done", || {
        fired = json(&["jobs", "--schedule", &id]);
        fired.as_array().unwrap().first().is_some_and(|j| j["state"] == "done")
    });
    assert_eq!(fired[0]["rollout"], serde_json::json!({"batch": "50%"}), "{fired}");
    assert_eq!(fired[0]["summary"]["ok"], 3, "{fired}");
}

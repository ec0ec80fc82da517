//! `orb pub` and `orb sub` from the binary: a subscriber prints what is published on matching
//! topics, one JSON object per line with `--json`, and stops after `--count`; bad topics exit 2
//! before anything is sent.
#![allow(clippy::unwrap_used)]

mod common;

use common::{ADMIN, Proc, STARTUP, Server, orb, orb_cmd, stderr};
use serde_json::Value;

#[test]
fn a_subscriber_prints_what_is_published_and_stops_after_count() {
    let server = Server::start();
    let mut cmd = orb(server.cwd());
    cmd.args(["sub", "telemetry.>", "--json", "--count", "2", "--server", &server.tcp, "--token", ADMIN]);
    let (mut sub, lines) = Proc::with_stdout("orb sub", cmd);
    sub.wait_for_line(STARTUP, |l| l.contains("subscribed to telemetry.>"));

    for (topic, body) in
        [("telemetry.gw-1.temp", r#"{"c":21.5}"#), ("other.topic", "1"), ("telemetry.gw-2.temp", "hot")]
    {
        let out = server.client("pub").args([topic, body]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let first: Value = serde_json::from_str(&lines.next(STARTUP).unwrap()).unwrap();
    assert_eq!(first["topic"], "telemetry.gw-1.temp");
    assert_eq!(first["body"], serde_json::json!({"c": 21.5}));
    assert_eq!(first["retained"], false);
    let second: Value = serde_json::from_str(&lines.next(STARTUP).unwrap()).unwrap();
    assert_eq!((second["topic"].as_str(), second["body"].as_str()), (Some("telemetry.gw-2.temp"), Some("hot")));
    assert!(sub.wait_exit(STARTUP).success(), "exits 0 after --count");

    // Nothing to wait for: the timeout ends it, with 1 when a count was not reached.
    let out = server.client("sub").args(["nothing.>", "--count", "1", "--timeout", "300ms"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("0 of 1 messages"), "{}", stderr(&out));
}

#[test]
fn bad_topics_exit_2_before_anything_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["pub", "a..b", "1"][..], &["pub", "a.*", "1"], &["sub", "a.>.b"], &["sub", ""]] {
        let out =
            orb_cmd(dir.path()).args(args).args(["--server", "tcp://127.0.0.1:9", "--token", "x"]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("bad_topic"), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn tail_shows_a_device_coming_and_going() {
    let server = Server::start();
    let mut cmd = orb(server.cwd());
    cmd.args(["tail", "--count", "2", "--server", &server.tcp, "--token", ADMIN]);
    let (mut tail, lines) = Proc::with_stdout("orb tail", cmd);
    tail.wait_for_line(STARTUP, |l| l.contains("subscribed to $orb.>"));
    let agent = server.agent("tl-1", &[]);
    let online = lines.next(STARTUP).unwrap();
    assert!(online.ends_with("tl-1 online"), "{online}");
    drop(agent); // SIGKILL: no bye
    let offline = lines.next(STARTUP).unwrap();
    assert!(offline.contains("tl-1 offline ("), "{offline}");
    assert!(tail.wait_exit(STARTUP).success());
}

#[test]
fn retained_messages_come_first_count_and_survive_a_restart() {
    let server = Server::start();
    for (topic, body) in [("config.gw-1.rate", "30"), ("config.gw-2.rate", "60"), ("config.gw-3.rate", "90")] {
        let out = server.client("pub").args([topic, body, "--retain"]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
        assert!(stderr(&out).contains("(retained)"), "{}", stderr(&out));
    }
    let out = server.client("pub").args(["config.gw-3.rate", "null", "--retain"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "a null body clears: {}", stderr(&out));

    // Acknowledged means stored: a kill -9 loses none of it.
    let server = server.restart();
    // Two retained, in topic order, then one live: --count 3 counts them all.
    let mut cmd = orb(server.cwd());
    cmd.args(["sub", "config.>", "--json", "--count", "3", "--server", &server.tcp, "--token", ADMIN]);
    let (mut sub, lines) = Proc::with_stdout("orb sub", cmd);
    let first: Value = serde_json::from_str(&lines.next(STARTUP).unwrap()).unwrap();
    let second: Value = serde_json::from_str(&lines.next(STARTUP).unwrap()).unwrap();
    assert_eq!((first["topic"].as_str(), first["body"].as_i64()), (Some("config.gw-1.rate"), Some(30)), "{first}");
    assert_eq!(second["topic"], "config.gw-2.rate");
    assert_eq!((first["retained"].as_bool(), second["retained"].as_bool()), (Some(true), Some(true)));
    let out = server.client("pub").args(["config.gw-4.rate", "5"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let live: Value = serde_json::from_str(&lines.next(STARTUP).unwrap()).unwrap();
    assert_eq!((live["topic"].as_str(), live["retained"].as_bool()), (Some("config.gw-4.rate"), Some(false)));
    assert!(sub.wait_exit(STARTUP).success(), "exits 0 after --count");
}

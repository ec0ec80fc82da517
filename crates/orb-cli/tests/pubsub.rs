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
fn a_bad_body_or_output_format_exits_2_before_anything_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        orb_cmd(dir.path()).args(args).args(["--server", "tcp://127.0.0.1:9", "--token", "x"]).output().unwrap()
    };
    let out = run(&["pub", "x", "[1,2"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("BODY is not valid JSON"), "{}", stderr(&out));
    // orb sub and orb tail print text or JSON lines; other formats are refused, not ignored.
    for args in [
        &["sub", "x", "-o", "yaml"][..],
        &["sub", "x", "-o", "wide"],
        &["tail", "-o", "name"],
        &["tail", "-o", "table"],
    ] {
        let out = run(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("possible values: text, json"), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn server_topics_exit_2_before_anything_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["pub", "$orb", "1", "--retain"][..], &["pub", "$foo.x", "1"], &["pub", "$orb.presence.x", "1"]] {
        let out =
            orb_cmd(dir.path()).args(args).args(["--server", "tcp://127.0.0.1:9", "--token", "x"]).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("topics starting with $"), "{args:?}: {}", stderr(&out));
    }
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
    cmd.args(["tail", "--count", "4", "--server", &server.tcp, "--token", ADMIN]);
    let (mut tail, lines) = Proc::with_stdout("orb tail", cmd);
    tail.wait_for_line(STARTUP, |l| l.contains("subscribed to $orb.>"));
    let agent = server.agent("tl-1", &[]);
    let online = lines.next(STARTUP).unwrap();
    assert!(online.ends_with("tl-1 online"), "{online}");
    // A job's progress in words too: its target's outcome, then its end.
    let out = server.client("send").args(["tl-1", "ping", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let job = common::json_lines(&out).last().unwrap()["job"].as_str().unwrap().to_owned();
    let target = lines.next(STARTUP).unwrap();
    assert!(target.contains(&format!("  job {job}: tl-1 ok (")), "{target}");
    let ended = lines.next(STARTUP).unwrap();
    assert!(ended.ends_with(&format!("  job {job}: ended, 1 ok")), "{ended}");
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
    assert!(stderr(&out).contains("cleared the retained message of config.gw-3.rate"), "{}", stderr(&out));

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
    // A negative number is a body, not a flag.
    let out = server.client("pub").args(["config.gw-4.rate", "-1.5"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let live: Value = serde_json::from_str(&lines.next(STARTUP).unwrap()).unwrap();
    assert_eq!((live["topic"].as_str(), live["retained"].as_bool()), (Some("config.gw-4.rate"), Some(false)));
    assert_eq!(live["body"], -1.5);
    assert!(sub.wait_exit(STARTUP).success(), "exits 0 after --count");

    // As text, a retained message says so.
    let out = server.client("sub").args(["config.gw-1.rate", "--count", "1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(common::stdout(&out), "config.gw-1.rate  30  (retained)\n");
}

/// The next line of `orb tail --json` or `orb sub --json`, parsed.
fn next_json(lines: &common::StdoutLines) -> Value {
    let line = lines.next(STARTUP).expect("a line before the end of the output");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

/// The next presence event of `id` in `orb tail --json`: its status and reason (`None` online).
fn next_presence(tail: &common::StdoutLines, id: &str) -> (String, Option<String>) {
    for _ in 0..100 {
        let event = next_json(tail);
        if event["topic"] == format!("$orb.presence.{id}") {
            let body = &event["body"];
            return (body["status"].as_str().unwrap().to_owned(), body["reason"].as_str().map(str::to_owned));
        }
    }
    panic!("no presence event of {id} in 100 lines");
}

#[test]
fn an_agent_killed_leaves_its_will_and_one_stopped_does_not() {
    let server = Server::start();
    let follow = |args: &[&str], what: &str| {
        let mut cmd = orb(server.cwd());
        cmd.args(args).args(["--json", "--server", &server.tcp, "--token", ADMIN]);
        let (mut p, lines) = Proc::with_stdout(what, cmd);
        p.wait_for_line(STARTUP, |l| l.starts_with("subscribed to"));
        (p, lines)
    };
    let (_sub, wills) = follow(&["sub", "status.>"], "orb sub");
    let (_tail, tail) = follow(&["tail"], "orb tail");

    // The flag, with the default body; kill -9: the server publishes it, presence says how.
    let mut agent = server.agent_with("wl-1", |c| {
        c.args(["--will-topic", "status.{id}"]);
    });
    assert_eq!(next_presence(&tail, "wl-1"), ("online".to_owned(), None));
    // Its credential saved (it enrolled on this first connection): the next runs connect with it.
    agent.wait_for_line(STARTUP, |l| l.contains("agent connected"));
    drop(agent); // SIGKILL: no bye
    let will = next_json(&wills);
    assert_eq!((will["topic"].as_str(), will["from"].as_str()), (Some("status.wl-1"), Some("wl-1")), "{will}");
    assert_eq!(will["body"], serde_json::json!({"id": "wl-1", "status": "lost"}));
    assert_eq!(next_presence(&tail, "wl-1"), ("offline".to_owned(), Some("connection_lost".to_owned())));

    // The same from the environment (the [agent] keys), with a body of its own.
    let with_env = |c: &mut std::process::Command| {
        c.envs([("ORB_AGENT__WILL_TOPIC", "status.{id}"), ("ORB_AGENT__WILL_BODY", r#"{"custom": 1}"#)]);
    };
    let agent = server.agent_with("wl-1", with_env);
    assert_eq!(next_presence(&tail, "wl-1").0, "online");
    common::send_signal(agent.pid(), "KILL");
    assert_eq!(next_json(&wills)["body"], serde_json::json!({"custom": 1}));
    assert_eq!(next_presence(&tail, "wl-1").1.as_deref(), Some("connection_lost"));

    // SIGTERM: the agent says goodbye, so no will; presence says peer_closed.
    let mut agent = server.agent_with("wl-1", with_env);
    assert_eq!(next_presence(&tail, "wl-1").0, "online");
    common::send_signal(agent.pid(), "TERM");
    assert!(agent.wait_exit(STARTUP).success(), "SIGTERM: exit 0");
    assert_eq!(next_presence(&tail, "wl-1").1.as_deref(), Some("peer_closed"));
    // Had a will been published, it would have been queued for the subscriber before the
    // presence event was: the next message it gets is the marker published after.
    let out = server.client("pub").args(["status.marker", "1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(next_json(&wills)["topic"], "status.marker", "no will after a normal stop");
}

#[test]
fn a_will_the_agent_cannot_resolve_or_check_is_a_configuration_error() {
    let dir = tempfile::tempdir().unwrap();
    for (args, says) in [
        (&["--will-topic", "$orb.x"][..], "'agent.will_topic'"),
        (&["--will-body", "1"], "needs 'agent.will_topic'"),
        (&["--will-topic", "s", "--will-body", "[1,"], "'agent.will_body' is not valid JSON"),
    ] {
        let out = orb_cmd(dir.path())
            .args(["agent", "--server", "tcp://127.0.0.1:9", "--token", "x", "--id", "a-1"])
            .args(args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(78), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
    // Without --id the server assigns the id at enrollment: a will naming it cannot be built.
    let out = orb_cmd(dir.path())
        .args(["agent", "--server", "tcp://127.0.0.1:9", "--token", "x", "--will-topic", "status.{id}"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(stderr(&out).contains("give --id"), "{}", stderr(&out));
}

#[test]
fn a_subscriber_that_falls_behind_says_what_was_dropped_where_and_exits_1() {
    const FLOOD: usize = 20_000;
    let server = Server::start();
    let mut cmd = orb(server.cwd());
    cmd.args(["sub", "flood.>", "--json", "--server", &server.tcp, "--token", ADMIN]);
    // Nobody reads its output yet: its writes block, its inbox fills, then messages are dropped.
    let (mut sub, stdout) = Proc::with_unread_stdout("orb sub", cmd);
    sub.wait_for_line(STARTUP, |l| l.contains("subscribed to flood.>"));
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let op = runtime.block_on(async {
        let url: orb_client::ServerUrl = server.tcp.parse().unwrap();
        let config = orb_client::ClientConfig::operator(url, Some(ADMIN.to_owned()));
        orb_client::Client::connect(config, orb_client::Handlers::new()).await.unwrap()
    });
    let publish = |topic: String| {
        let body = bytes::Bytes::from_static(b"1");
        runtime.block_on(op.publish(&topic, body, STARTUP)).unwrap();
    };
    for n in 0..FLOOD {
        publish(format!("flood.{n}"));
    }

    // Now read. Once it printed more lines than its pipe holds (at most a few hundred), it took
    // as many out of its inbox: a message published then gets in, after the gap.
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(std::io::BufReader::new(stdout)) {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let next = || -> Value { serde_json::from_str(&lines.recv_timeout(STARTUP).unwrap()).unwrap() };
    let mut printed = 0;
    for _ in 0..5000 {
        assert!(next()["topic"].as_str().unwrap().starts_with("flood."));
        printed += 1;
    }
    publish("flood.end".to_owned());
    let mut before = Value::Null;
    let dropped = loop {
        let line = next();
        if line["topic"] == "flood.end" {
            break before["dropped"].as_u64().unwrap_or_else(|| panic!("no gap line before the end: {before}"));
        }
        if line.get("topic").is_some() {
            printed += 1;
        }
        before = line;
    };
    assert!(dropped > 0, "the flood overflowed the inbox");
    assert_eq!(printed + dropped as usize, FLOOD, "every message printed or counted as dropped");

    // The connection ends (the server is gone): exit 1, saying how many were dropped.
    drop(server);
    assert_eq!(sub.wait_exit(STARTUP).code(), Some(1));
    let err = sub.stderr();
    assert!(err.contains(&format!("warning: {dropped} message(s) dropped here")), "{err}");
    assert!(err.contains(&format!("{dropped} message(s) dropped: this reader fell behind")), "{err}");
}

#[test]
fn a_subscriber_whose_server_stops_says_why() {
    let server = Server::start();
    let mut cmd = orb(server.cwd());
    cmd.args(["sub", "x.>", "--server", &server.tcp, "--token", ADMIN]);
    let (mut sub, _lines) = Proc::with_stdout("orb sub", cmd);
    sub.wait_for_line(STARTUP, |l| l.contains("subscribed to x.>"));
    common::send_signal(server.proc.pid(), "TERM");
    assert_eq!(sub.wait_exit(STARTUP).code(), Some(1));
    let err = sub.stderr();
    assert!(err.contains("error: closed by the server: server_shutdown (the server is stopping)"), "{err}");
}

#[test]
fn a_retained_will_is_there_for_later_subscribers_until_the_agent_is_back() {
    let server = Server::start_with(|cmd, _| {
        cmd.env("ORB_ACL__AGENT_RETAIN", r#"["status.>"]"#);
    });
    let (_tail, tail) = {
        let mut cmd = orb(server.cwd());
        cmd.args(["tail", "--json", "--server", &server.tcp, "--token", ADMIN]);
        let (mut p, lines) = Proc::with_stdout("orb tail", cmd);
        p.wait_for_line(STARTUP, |l| l.starts_with("subscribed to"));
        (p, lines)
    };
    let retained_will = |c: &mut std::process::Command| {
        c.args(["--will-topic", "status.{id}", "--will-retain"]);
    };
    let mut agent = server.agent_with("wr-1", retained_will);
    assert_eq!(next_presence(&tail, "wr-1").0, "online");
    agent.wait_for_line(STARTUP, |l| l.contains("agent connected"));
    drop(agent); // SIGKILL
    assert_eq!(next_presence(&tail, "wr-1").1.as_deref(), Some("connection_lost"));

    // A subscriber that comes later gets it, retained; it then sees the agent clear it on its return.
    let mut cmd = orb(server.cwd());
    cmd.args(["sub", "status.>", "--json", "--server", &server.tcp, "--token", ADMIN]);
    let (_sub, lines) = Proc::with_stdout("orb sub", cmd);
    let will = next_json(&lines);
    assert_eq!((will["topic"].as_str(), will["retained"].as_bool()), (Some("status.wr-1"), Some(true)), "{will}");
    assert_eq!(will["body"], serde_json::json!({"id": "wr-1", "status": "lost"}));
    let _agent = server.agent_with("wr-1", retained_will);
    let cleared = next_json(&lines);
    assert_eq!((cleared["topic"].as_str(), &cleared["body"]), (Some("status.wr-1"), &Value::Null), "{cleared}");
    // Nothing retained any more: a new subscriber's first message is one published after it.
    let mut cmd = orb(server.cwd());
    cmd.args(["sub", "status.>", "--json", "--count", "1", "--server", &server.tcp, "--token", ADMIN]);
    let (mut fresh, lines) = Proc::with_stdout("orb sub (fresh)", cmd);
    fresh.wait_for_line(STARTUP, |l| l.starts_with("subscribed to"));
    let out = server.client("pub").args(["status.marker", "1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(next_json(&lines)["topic"], "status.marker");
}

#[test]
fn a_retained_will_the_server_does_not_allow_is_refused_and_retried() {
    let server = Server::start();
    let mut agent = server.agent_with("wr-2", |c| {
        c.args(["--will-topic", "status.{id}", "--will-retain"]);
    });
    // acl.agent_retain allows nothing by default: the hello is refused, the agent says why.
    agent.wait_for_line(STARTUP, |l| l.contains("cannot connect") && l.contains("acl.agent_retain"));
}

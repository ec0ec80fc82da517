//! `orb devices messages ID`: what a device sent from its durable outbox, stored once per message
//! id, listed oldest first in the `-o` formats. The device here speaks the wire protocol by hand
//! (length-prefixed JSON over TCP), so the test shows exactly what an agent in another language
//! sends.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::{AGENT, Server, stderr, stdout};
use serde_json::{Value, json};

/// A hand-framed connection.
struct Raw(TcpStream);

impl Raw {
    fn connect(url: &str) -> Raw {
        let stream = TcpStream::connect(url.trim_start_matches("tcp://")).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Raw(stream)
    }

    fn send(&mut self, v: &Value) {
        let body = serde_json::to_vec(v).unwrap();
        self.0.write_all(&u32::try_from(body.len()).unwrap().to_be_bytes()).unwrap();
        self.0.write_all(&body).unwrap();
    }

    fn read(&mut self) -> Value {
        let mut len = [0u8; 4];
        self.0.read_exact(&mut len).unwrap();
        let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
        self.0.read_exact(&mut body).unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    /// The reply to `id`, skipping anything else (pings).
    fn reply(&mut self, id: &str) -> Value {
        for _ in 0..100 {
            let v = self.read();
            if v["kind"] == "reply" && v["re"] == id {
                return v;
            }
        }
        panic!("no reply to {id}");
    }
}

#[test]
fn messages_a_device_sent_are_listed_once_each_oldest_first() {
    let server = Server::start();
    let mut dev = Raw::connect(&server.tcp);
    dev.send(&json!({"kind": "hello", "body": {"version": 1, "role": "agent", "token": AGENT, "id": "gw-1", "enroll": true}}));
    assert_eq!(dev.read()["kind"], "welcome");
    let message = |id: &str, msg: &str, n: u64| json!({"kind": "cmd", "id": id, "cmd": "reading", "msg": msg, "at_ms": 1_764_979_200_000_u64 + n, "body": {"n": n}});
    dev.send(&message("1", "m-1", 1));
    assert_eq!(dev.reply("1")["body"], json!({"stored": true}));
    dev.send(&message("2", "m-2", 2));
    assert_eq!(dev.reply("2")["body"], json!({"stored": true}));
    // The ack was lost, say: the device sends m-2 again.
    dev.send(&message("3", "m-2", 2));
    assert_eq!(dev.reply("3")["body"], json!({"duplicate": true}));

    let out = server.client("devices").args(["messages", "gw-1", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let listed: Vec<Value> = serde_json::from_str(&stdout(&out)).unwrap();
    let shown: Vec<(&str, &Value, &str)> =
        listed.iter().map(|m| (m["msg"].as_str().unwrap(), &m["body"], m["sent_at"].as_str().unwrap())).collect();
    assert_eq!(
        shown,
        [("m-1", &json!({"n": 1}), "2025-12-06T00:00:00.001Z"), ("m-2", &json!({"n": 2}), "2025-12-06T00:00:00.002Z")]
    );

    let out = server.client("devices").args(["messages", "gw-1", "--limit", "1"]).output().unwrap();
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "a header and the newest one: {text}");
    assert!(lines[0].starts_with("SENT") && lines[0].contains("COMMAND") && lines[0].contains("BODY"), "{text}");
    assert!(lines[1].contains("reading") && lines[1].ends_with(r#"{"n":2}"#), "{text}");

    let out = server.client("devices").args(["messages", "nobody"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("nobody"), "{}", stderr(&out));
}

#[test]
fn telemetry_taken_offline_is_published_when_stored_and_never_replaces_a_later_sample() {
    let server = Server::start();
    let mut dev = Raw::connect(&server.tcp);
    dev.send(&json!({"kind": "hello", "body": {"version": 1, "role": "agent", "token": AGENT, "id": "gw-2", "enroll": true}}));
    assert_eq!(dev.read()["kind"], "welcome");
    let at = 1_764_979_200_000_u64;
    let sample = |id: &str, n: u64, body: Value| json!({"kind": "cmd", "id": id, "cmd": "$orb.telemetry", "msg": format!("t-{n}"), "at_ms": at + n, "body": body});
    dev.send(&sample("1", 10, json!({"cpus": 10})));
    assert_eq!(dev.reply("1")["body"], json!({"stored": true}));
    // An older sample arriving later is published but is not the latest.
    dev.send(&sample("2", 5, json!({"cpus": 5})));
    assert_eq!(dev.reply("2")["body"], json!({"stored": true}));
    // The body must be the sample object.
    dev.send(&sample("3", 20, json!([1])));
    assert_eq!(dev.reply("3")["error"]["code"], "bad_body");

    let out = server.client("devices").args(["show", "gw-2", "--json"]).output().unwrap();
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["telemetry"]["value"], json!({"cpus": 10}), "{shown}");
    assert_eq!(shown["telemetry"]["at"], "2025-12-06T00:00:00.010Z", "taken at, not received at: {shown}");
    let out = server.client("devices").args(["messages", "gw-2", "--json"]).output().unwrap();
    let listed: Vec<Value> = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(listed.iter().map(|m| m["msg"].as_str().unwrap()).collect::<Vec<_>>(), ["t-10", "t-5"]);
}

#[test]
fn an_agent_keeps_telemetry_in_its_outbox_while_its_server_is_down() {
    let listen = format!("127.0.0.1:{}", common::free_port());
    let dir = tempfile::tempdir().unwrap();
    let cmd = common::serve_cmd(dir.path(), &listen);
    let server = Server::spawn(dir, cmd);
    let config = server.cwd().join("tel.toml");
    std::fs::write(&config, "[telemetry]\ninterval = \"100ms\"\n").unwrap();
    let mut agent = server.agent_with("tel-2", |c| {
        c.arg("--config").arg(&config).env("ORB_LOG", "orb=debug,orb_client=info");
    });
    server.wait_connected(&["tel-2"]);

    let Server { mut proc, dir, .. } = server;
    common::send_signal(proc.pid(), "KILL");
    proc.wait_exit(common::EVENT);
    drop(proc);
    agent.wait_for_line(common::EVENT, |l| l.contains("connection lost; reconnecting"));
    for _ in 0..3 {
        agent.wait_for_line(common::EVENT, |l| l.contains("telemetry sample kept in the outbox"));
    }

    let cmd = common::serve_cmd(dir.path(), &listen);
    let server = Server::spawn(dir, cmd);
    server.wait_connected(&["tel-2"]);
    common::poll_until("three offline samples stored", || {
        let out = server.client("devices").args(["messages", "tel-2", "--json"]).output().unwrap();
        let listed: Vec<Value> = serde_json::from_str(&stdout(&out)).unwrap_or_default();
        listed.iter().filter(|m| m["command"] == "$orb.telemetry").count() >= 3
    });
    let out = server.client("devices").args(["messages", "tel-2", "--json"]).output().unwrap();
    let listed: Vec<Value> = serde_json::from_str(&stdout(&out)).unwrap();
    let sent: Vec<&str> = listed.iter().map(|m| m["sent_at"].as_str().unwrap()).collect();
    let mut sorted = sent.clone();
    sorted.sort_unstable();
    assert_eq!(sent, sorted, "stored in the order taken, with the time taken");
    assert!(listed[0]["body"]["memory"].is_object(), "{}", listed[0]);
}

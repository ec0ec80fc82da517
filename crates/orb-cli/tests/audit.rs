//! `orb audit` end to end: a send and a device tag by the admin are listed by `orb audit --json`
//! (one array, newest first) with who and where from; `--since` a duration or a time filters,
//! `--limit` limits, and a bad `--since` is a usage error.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Server, json_lines, stderr, stdout};
use serde_json::Value;

fn audit(server: &Server, args: &[&str]) -> Vec<Value> {
    let out = server.client("audit").args(args).arg("--json").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "audit {args:?}: {}", stderr(&out));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "one JSON array: {}", stdout(&out));
    lines[0].as_array().unwrap().clone()
}

#[test]
fn audit_lists_what_operators_changed() {
    let server = Server::start();
    let _agent = server.agent("web-1", &[]);
    server.wait_connected(&["web-1"]);
    let out = server.client("send").args(["web-1", "ping"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = server.client("devices").args(["tag", "web-1", "env=prod"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    let all = audit(&server, &[]);
    let actions: Vec<(&str, &str, &str)> = all
        .iter()
        .map(|e| (e["action"].as_str().unwrap(), e["target"].as_str().unwrap(), e["outcome"].as_str().unwrap()))
        .collect();
    assert_eq!(actions, [("device.tag", "web-1", "ok"), ("job.submit", "web-1", "ok")], "newest first: {all:?}");
    for e in &all {
        assert_eq!(e["role"], "admin-token", "{e}");
        assert!(e["source"].as_str().unwrap().starts_with("tcp 127.0.0.1:"), "{e}");
        assert!(chrono::DateTime::parse_from_rfc3339(e["at"].as_str().unwrap()).is_ok(), "{e}");
    }
    assert_eq!(all[1]["detail"]["command"], "ping");

    assert_eq!(audit(&server, &["--since", "1h"]).len(), 2);
    assert!(audit(&server, &["--since", "2999-01-01T00:00:00Z"]).is_empty());
    assert_eq!(audit(&server, &["--limit", "1"])[0]["action"], "device.tag");
    let out = server.client("audit").args(["--since", "soon"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "a usage error: {}", stderr(&out));

    // The table: one line per entry under a header.
    let out = server.client("audit").output().unwrap();
    let text = stdout(&out);
    assert!(text.lines().next().unwrap().starts_with("TIME"), "{text}");
    assert_eq!(text.lines().count(), 3, "{text}");
}

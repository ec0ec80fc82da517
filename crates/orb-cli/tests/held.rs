//! `orb send --ttl` end to end: a target that is not connected is reported `queued`; when its
//! agent starts, the held command runs there and `orb jobs wait` shows the stored result.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Server, json_lines, stderr, stdout};

#[test]
fn a_command_sent_with_a_ttl_waits_for_its_device_and_jobs_wait_follows_it() {
    let server = Server::start();
    let agent = server.agent("web-1", &[]);
    server.wait_connected(&["web-1"]);
    drop(agent);
    server.wait_disconnected("web-1");

    let out =
        server.client("send").args(["web-1", "echo", "later", "--ttl", "1m", "--wait", "300ms"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "not every target is ok yet: {}", stderr(&out));
    let text = stdout(&out);
    assert!(text.lines().any(|l| l.starts_with("web-1") && l.contains("queued")), "{text}");
    assert!(text.contains("1 queued"), "{text}");
    let job = text.lines().last().unwrap().split_whitespace().nth(1).unwrap().trim_end_matches(':').to_owned();

    let shown = stdout(&server.client("devices").args(["show", "web-1"]).output().unwrap());
    assert!(shown.contains("held commands") && shown.contains(&job) && shown.contains("waiting"), "{shown}");

    let _agent = server.agent("web-1", &[]);
    let out = server.client("jobs").args(["wait", &job, "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{} {}", stdout(&out), stderr(&out));
    let lines = json_lines(&out);
    let last = &lines[lines.len() - 2];
    assert_eq!((last["device"].as_str(), last["status"].as_str()), (Some("web-1"), Some("ok")), "{lines:?}");
    assert_eq!(last["result"], "later");
}

//! End-to-end tests of the help `orb` gives for the usual mistakes, and of `orb send --online`:
//! a client on the wrong port (TCP to the HTTP port, WebSocket to the TCP port) is told which
//! address to use and exits 69; a command no target declares is refused with the nearest
//! declared name before anything is sent; `role=web` suggests `tag:role=web`; a selector the
//! shell expanded into file names suggests quoting; `--online` skips devices that are not
//! connected and says how many, `--one` runs on exactly one; a handler that outlives the deadline and a target that never
//! answers are both `timeout`.
#![allow(clippy::unwrap_used)]

mod common;

use common::{ADMIN, BIN, Server, json_lines, send_signal, stderr, stdout};
use serde_json::Value;

/// `HOST:PORT` of a `tcp://` or `ws://` URL.
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").unwrap().1;
    rest.split('/').next().unwrap()
}

#[test]
fn tcp_to_the_http_port_and_websocket_to_the_tcp_port_say_which_address_to_use_and_exit_69() {
    let server = Server::start();
    let (tcp, http) = (authority(&server.tcp).to_owned(), authority(&server.ws).to_owned());

    let out = server.client_at("devices", &format!("tcp://{http}")).output().unwrap();
    assert_eq!(out.status.code(), Some(69), "stderr: {}", stderr(&out));
    let want = format!("this is orb's HTTP port; use ws://{http}/v1/ws, or tcp:// on the agent port (7700 by default)");
    assert!(stderr(&out).contains(&want), "stderr: {}", stderr(&out));
    assert!(!stderr(&out).contains("frame larger"), "stderr: {}", stderr(&out));

    let out = server.client_at("send", &format!("ws://{tcp}/v1/ws")).args(["*", "ping"]).output().unwrap();
    assert_eq!(out.status.code(), Some(69), "stderr: {}", stderr(&out));
    let want = format!("this is orb's TCP port; use tcp://{tcp} (WebSocket is on the HTTP port, /v1/ws)");
    assert!(stderr(&out).contains(&want), "stderr: {}", stderr(&out));

    // The right addresses still work.
    for url in [&server.tcp, &server.ws] {
        let out = server.client_at("devices", url).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{url}: {}", stderr(&out));
    }
}

#[test]
fn a_command_no_target_declares_gets_did_you_mean_and_nothing_is_sent() {
    let server = Server::start();
    let _agent = server.agent("web-1", &[]);
    server.wait_connected(&["web-1"]);
    let out = server.client("send").args(["web-1", "pnig"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(&out));
    assert!(
        stderr(&out).contains("no target declares command 'pnig'; did you mean 'ping'?"),
        "stderr: {}",
        stderr(&out)
    );
    assert_eq!(stdout(&out), "", "no job, no results");
    let out = server.client("jobs").arg("--json").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let jobs: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(jobs, serde_json::json!([]), "nothing was started");
}

#[test]
fn selector_mistakes_get_a_hint_and_exit_2() {
    let server = Server::start();
    let out = server.client("send").args(["role=web", "ping"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(&out));
    assert!(stderr(&out).contains("did you mean 'tag:role=web'?"), "stderr: {}", stderr(&out));

    // An unquoted `*` in the server's folder, expanded by a real shell into its file names.
    std::fs::write(server.cwd().join("notes.txt"), "").unwrap();
    let line = format!("{BIN} send --server {} --token {ADMIN} * ping", server.tcp);
    let out = std::process::Command::new("sh").arg("-c").arg(&line).current_dir(server.cwd()).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(&out));
    assert!(stderr(&out).contains("the shell expanded '*' into file names"), "stderr: {}", stderr(&out));
    assert!(stderr(&out).contains("quote the selector: orb send '*'"), "stderr: {}", stderr(&out));
    let out = server.client("devices").arg("notes.txt").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(&out));
    assert!(stderr(&out).contains("quote the selector: orb devices '*'"), "stderr: {}", stderr(&out));
}

#[test]
fn send_online_skips_a_registered_device_that_is_not_connected_and_says_so() {
    let server = Server::start();
    let _agent = server.agent("web-1", &[]);
    server.wait_connected(&["web-1"]);
    let out = server.client("devices").args(["add", "web-2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));

    // Without --online the registered device fails every '*'.
    let out = server.client("send").args(["*", "ping"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "stdout: {}", stdout(&out));

    let out = server.client("send").args(["*", "ping", "--online"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("1 of 1 targets answered ok (1 ok), 1 skipped (not connected)"), "{text}");
    assert!(!text.contains("web-2"), "{text}");

    let out = server.client("send").args(["*", "ping", "--online", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["device"], "web-1");
    assert_eq!(lines[1]["skipped"], 1, "{}", lines[1]);
    let job = lines[1]["job"].as_str().unwrap().to_owned();

    // `orb jobs show` tells the same.
    let out = server.client("jobs").args(["show", &job, "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let shown: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(shown["job"]["skipped"], 1, "{shown}");

    // --dry-run --online lists the devices --online would target.
    let out = server.client("send").args(["*", "ping", "--online", "--dry-run"]).output().unwrap();
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(0), "web-1\n"), "{}", stderr(&out));
    let out = server.client("send").args(["*", "ping", "--dry-run"]).output().unwrap();
    assert_eq!(stdout(&out), "web-1\nweb-2\n");

    let out = server.client("send").args(["web-2", "ping", "--online"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    assert!(
        stderr(&out).contains("no connected device matches 'web-2': 1 matched device is offline"),
        "stderr: {}",
        stderr(&out)
    );
}

#[test]
fn a_handler_past_the_deadline_and_a_target_that_never_answers_are_both_timeout() {
    let server = Server::start();
    let _slow = server.agent("slow-1", &[]);
    let frozen = server.agent("frozen-1", &[]);
    server.wait_connected(&["slow-1", "frozen-1"]);
    send_signal(frozen.pid(), "STOP");
    let thaw = Thaw(frozen.pid());

    let out =
        server.client("send").args(["slow-1,frozen-1", "sleep", "5000", "--wait", "1s", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    let lines = json_lines(&out);
    for device in ["slow-1", "frozen-1"] {
        let r = lines.iter().find(|l| l["device"] == device).unwrap_or_else(|| panic!("{device}: {lines:?}"));
        assert_eq!(r["status"], "timeout", "{r}");
        assert_eq!(r["error"]["code"], "timeout", "{r}");
    }
    assert_eq!(lines.last().unwrap()["summary"]["timeout"], 2);
    assert_eq!(lines.last().unwrap()["summary"]["error"], 0);

    // The human table says `timeout` for both, never `error`.
    let out = server.client("send").args(["slow-1,frozen-1", "sleep", "5000", "--wait", "1s"]).output().unwrap();
    drop(thaw);
    let text = stdout(&out);
    assert!(text.contains("0 of 2 targets answered ok (2 timeout)"), "{text}");
    assert!(!text.contains("error"), "{text}");
}

/// Sends `SIGCONT` to a stopped process when dropped, so a failing test never leaves a frozen
/// child behind.
struct Thaw(u32);

impl Drop for Thaw {
    fn drop(&mut self) {
        send_signal(self.0, "CONT");
    }
}

#[test]
fn send_one_runs_on_exactly_one_matching_device() {
    let server = Server::start();
    let (_w1, _w2) = (server.agent("w-1", &[]), server.agent("w-2", &[]));
    server.wait_connected(&["w-1", "w-2"]);
    let out = server.client("send").args(["w-*", "ping", "--one", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2, "one result and the summary: {lines:?}");
    assert!(lines[0]["device"].as_str().unwrap().starts_with("w-"), "{}", lines[0]);
    assert_eq!(lines[0]["status"], "ok");
    // It takes no TTL or batches: refused before anything is sent.
    let out = server.client("send").args(["w-*", "ping", "--one", "--ttl", "1m"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(&out));
}

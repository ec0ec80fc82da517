//! End-to-end lifecycle tests of the `orb` binary: server crashes and restarts, agents started
//! before their server, failover to a backup server, heartbeat timeouts with a frozen agent,
//! graceful drains (`orb signal QUIT`, agent SIGTERM), log reopening (SIGHUP, `LOG_ROTATE`),
//! live configuration reloads, `--trace`, and the per-address connection limit.
//!
//! Everything is synchronised on events (stderr lines, process exits) or on bounded polls of
//! `orb devices --json`, `orb signal PING` or a file where no event exists; no test asserts a
//! timing. (SIGTERM on a server without jobs is covered in `agent.rs`.)
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use common::{
    Background, EVENT, Proc, Server, agent_cmd, free_port, json_lines, poll_until, send_signal, serve_cmd, stderr,
    stdout,
};
use serde_json::{Value, json};

/// Agent logging that also shows every frame the agent receives (`dir="in" kind="cmd" ...`), so
/// a test can wait for the moment a command reached the agent.
const AGENT_FRAME_LOG: &str = "info,orb_io::transport=trace";

fn agent_connected(l: &str) -> bool {
    l.contains("agent connected")
}

/// Matches the agent's trace line for a received `cmd` named `name`.
fn received_cmd(name: &str) -> impl Fn(&str) -> bool {
    let cmd = format!("cmd=\"{name}\"");
    move |l: &str| l.contains("frame") && l.contains("dir=\"in\"") && l.contains("kind=\"cmd\"") && l.contains(&cmd)
}

/// The exit status, with the signal spelled out, for messages.
fn describe(status: ExitStatus) -> String {
    format!("code {:?}, signal {:?}", status.code(), status.signal())
}

/// Parses the one JSON line `orb signal` prints.
fn signal_answer(out: &std::process::Output) -> Value {
    assert_eq!(out.status.code(), Some(0), "orb signal failed: {}", stderr(out));
    serde_json::from_str(stdout(out).trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {}", stdout(out)))
}

/// Polls `orb signal PING` until it reports `n` jobs in flight (no event exists for that).
fn wait_jobs_in_flight(server: &Server, n: u64) {
    poll_until(&format!("server reports {n} job(s) in flight"), || {
        signal_answer(&server.signal("PING"))["jobs_in_flight"] == n
    });
}

/// `connected_since` of every listed device, by id.
fn connected_since(server: &Server) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = server
        .devices()
        .iter()
        .map(|d| (d["id"].as_str().unwrap().to_owned(), d["connected_since"].as_str().unwrap().to_owned()))
        .collect();
    v.sort();
    v
}

/// Runs `orb send TARGET ping --json` and returns its exit code and stderr.
fn ping(server: &Server, target: &str) -> (Option<i32>, String) {
    let out = server.client("send").args([target, "ping", "--json"]).output().unwrap();
    (out.status.code(), format!("stdout: {}\nstderr: {}", stdout(&out), stderr(&out)))
}

/// Sends `SIGCONT` to a stopped process when dropped, so a failing test never leaves a frozen
/// child behind. Declared after the process guard, it is dropped (and thaws) before the kill.
struct Thaw(u32);

impl Drop for Thaw {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill").args(["-CONT", &self.0.to_string()]).status();
    }
}

#[test]
fn the_agent_reconnects_after_the_server_is_killed_mid_job_and_restarted() {
    let listen = format!("127.0.0.1:{}", free_port());
    let dir = tempfile::tempdir().unwrap();
    let cmd = serve_cmd(dir.path(), &listen);
    let mut server = Server::spawn(dir, cmd);
    let mut agent = server.agent_with("web-1", |c| {
        c.env("ORB_LOG", AGENT_FRAME_LOG);
    });
    agent.wait_for_line(EVENT, agent_connected);
    server.wait_connected(&["web-1"]);

    let send = Background::start("orb send sleep", {
        let mut c = server.client("send");
        c.args(["*", "sleep", "3000", "--wait", "10s", "--json"]);
        c
    });
    agent.wait_for_line(EVENT, received_cmd("sleep"));

    send_signal(server.proc.pid(), "KILL");
    let status = server.proc.wait_exit(EVENT);
    assert_eq!(status.signal(), Some(9), "{}", describe(status));
    // The requester loses its server: no result, a failure exit.
    let out = send.wait();
    assert!(!out.status.success(), "send survived its server: {}", stdout(&out));
    agent.wait_for_line(EVENT, |l| l.contains("connection lost; reconnecting"));

    // Same port, same data folder.
    let Server { proc, dir, .. } = server;
    drop(proc);
    let cmd = serve_cmd(dir.path(), &listen);
    let server = Server::spawn(dir, cmd);
    agent.wait_for_line(EVENT, agent_connected);
    server.wait_connected(&["web-1"]);

    let out = server.client("send").args(["*", "ping", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(json_lines(&out)[0]["result"], json!({"pong": true}), "{}", stdout(&out));
}

#[test]
fn an_agent_started_before_its_server_connects_once_the_server_is_up() {
    let listen = format!("127.0.0.1:{}", free_port());
    let dir = tempfile::tempdir().unwrap();
    let mut agent = Proc::spawn("orb agent web-1", agent_cmd(dir.path(), &format!("tcp://{listen}"), "web-1"));
    // It tried and failed at least once: nothing listens yet.
    agent.wait_for_line(EVENT, |l| l.contains("cannot connect"));

    let cmd = serve_cmd(dir.path(), &listen);
    let server = Server::spawn(dir, cmd);
    agent.wait_for_line(EVENT, agent_connected);
    server.wait_connected(&["web-1"]);
    let (code, out) = ping(&server, "*");
    assert_eq!(code, Some(0), "{out}");
}

#[test]
fn an_agent_fails_over_from_a_dead_server_to_the_next_one() {
    let server = Server::start();
    let dead = format!("tcp://127.0.0.1:{}", free_port());
    let urls = format!("{dead},{}", server.tcp);
    let mut agent = Proc::spawn("orb agent web-1", agent_cmd(server.cwd(), &urls, "web-1"));
    let line = agent.wait_for_line(EVENT, agent_connected);
    assert!(line.contains(&server.tcp), "connected to the live server: {line}");
    server.wait_connected(&["web-1"]);
    let listed = server.devices();
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0]["id"], "web-1");
}

#[test]
fn a_frozen_agent_is_dropped_by_heartbeat_and_reconnects_when_it_thaws() {
    let mut server = Server::start_with(|c, _| {
        c.env("ORB_LIMITS__HEARTBEAT", "1s").env("ORB_LIMITS__HEARTBEAT_TIMEOUT", "2s");
    });
    let mut agent = server.agent_with("web-1", |_| {});
    agent.wait_for_line(EVENT, agent_connected);
    server.wait_connected(&["web-1"]);

    send_signal(agent.pid(), "STOP");
    let thaw = Thaw(agent.pid());
    let line = server.proc.wait_for_line(EVENT, |l| l.contains("session closed") && l.contains("heartbeat_timeout"));
    assert!(line.contains("web-1"), "the agent's session timed out: {line}");
    server.wait_disconnected("web-1");

    drop(thaw); // SIGCONT
    agent.wait_for_line(EVENT, agent_connected);
    server.wait_connected(&["web-1"]);
    let (code, out) = ping(&server, "web-1");
    assert_eq!(code, Some(0), "{out}");
}

#[test]
fn quit_drains_the_running_job_then_the_server_exits_zero() {
    let mut server = Server::start();
    let _agent = server.agent("web-1", &[]);
    server.wait_connected(&["web-1"]);

    let send = Background::start("orb send sleep", {
        let mut c = server.client("send");
        c.args(["*", "sleep", "1500", "--wait", "10s", "--json"]);
        c
    });
    wait_jobs_in_flight(&server, 1);

    let answer = signal_answer(&server.signal("QUIT"));
    assert_eq!(answer, json!({"stopping": true}));

    let out = send.wait();
    assert_eq!(out.status.code(), Some(0), "the job in flight finished: {}", stderr(&out));
    let lines = json_lines(&out);
    assert_eq!(lines[0]["status"], "ok", "{}", stdout(&out));
    assert_eq!(lines[0]["result"], json!({"slept_ms": 1500}), "{}", stdout(&out));

    let status = server.proc.wait_exit(EVENT);
    assert_eq!(status.code(), Some(0), "{}; stderr: {}", describe(status), server.proc.stderr());
}

#[test]
fn sigterm_lets_the_agent_finish_its_running_command() {
    let server = Server::start();
    let mut agent = server.agent_with("web-1", |c| {
        c.env("ORB_LOG", AGENT_FRAME_LOG);
    });
    server.wait_connected(&["web-1"]);

    let send = Background::start("orb send sleep", {
        let mut c = server.client("send");
        c.args(["*", "sleep", "1500", "--wait", "10s", "--json"]);
        c
    });
    agent.wait_for_line(EVENT, received_cmd("sleep"));
    send_signal(agent.pid(), "TERM");

    let out = send.wait();
    assert_eq!(out.status.code(), Some(0), "stdout: {}\nstderr: {}", stdout(&out), stderr(&out));
    let lines = json_lines(&out);
    assert_eq!(lines[0]["status"], "ok", "{}", stdout(&out));
    assert_eq!(lines[0]["result"], json!({"slept_ms": 1500}), "{}", stdout(&out));

    let status = agent.wait_exit(EVENT);
    assert_eq!(status.code(), Some(0), "{}; stderr: {}", describe(status), agent.stderr());
}

#[test]
fn sighup_and_log_rotate_reopen_the_log_file() {
    let server = Server::start_with(|c, dir| {
        // Debug level, so that every connection writes lines to the log.
        c.env("ORB_LOG", "debug").arg("--log-file").arg(dir.join("orb.log"));
    });
    let log = server.cwd().join("orb.log");
    let read = |p: &std::path::Path| std::fs::read_to_string(p).unwrap_or_default();
    assert!(read(&log).contains("orb server listening"), "log file: {}", read(&log));

    // logrotate without copytruncate: move the file away, then SIGHUP.
    let first = server.cwd().join("orb.log.1");
    std::fs::rename(&log, &first).unwrap();
    send_signal(server.proc.pid(), "HUP");
    poll_until("orb.log reopened after SIGHUP", || log.exists());
    // SIGHUP also reloaded the configuration; that was logged before the reopen.
    assert!(read(&first).contains("configuration reloaded"), "rotated file: {}", read(&first));

    let _agent = server.agent("web-1", &[]);
    server.wait_connected(&["web-1"]);
    poll_until("the new orb.log receives lines", || read(&log).contains("web-1"));
    assert!(!read(&first).contains("web-1"), "lines after the reopen went to the moved file");

    // The same through the admin message.
    let second = server.cwd().join("orb.log.2");
    std::fs::rename(&log, &second).unwrap();
    let answer = signal_answer(&server.signal("LOG_ROTATE"));
    assert_eq!(answer, json!({"reopened": true}));
    assert!(log.exists(), "LOG_ROTATE answers after reopening");
    let _ = server.devices();
    poll_until("orb.log receives lines after LOG_ROTATE", || read(&log).contains("session"));
    assert!(read(&second).contains("web-1"), "moved file: {}", read(&second));

    // Nothing of this went to stderr (only the banner is printed there).
    assert!(!server.proc.stderr().contains("configuration reloaded"), "{}", server.proc.stderr());
}

#[test]
fn reload_applies_a_changed_configuration_file_without_dropping_connections() {
    let server = Server::start_with(|c, dir| {
        std::fs::write(dir.join("orb.toml"), "[groups]\nweb = \"web-*\"\n").unwrap();
        c.arg("--config").arg(dir.join("orb.toml"));
    });
    let config = server.cwd().join("orb.toml");
    let _agents = [server.agent("web-1", &[]), server.agent("db-1", &[])];
    server.wait_connected(&["web-1", "db-1"]);
    let before = connected_since(&server);

    let (code, out) = ping(&server, "group:web");
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = ping(&server, "group:db");
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("unknown_group"), "{out}");

    std::fs::write(&config, "[groups]\ndb = \"db-*\"\n").unwrap();
    let answer = signal_answer(&server.signal("RELOAD"));
    assert_eq!(answer, json!({"reloaded": true, "restart_required": []}));

    let (code, out) = ping(&server, "group:db");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("db-1") && !out.contains("web-1"), "{out}");
    let (code, out) = ping(&server, "group:web");
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("unknown_group"), "{out}");
    assert_eq!(connected_since(&server), before, "connections stayed up across the reload");

    // A setting that needs a restart is named in the answer and the log, and keeps its value.
    std::fs::write(&config, "[groups]\ndb = \"db-*\"\n[store]\nurl = \"sqlite:elsewhere.db\"\n").unwrap();
    let answer = signal_answer(&server.signal("RELOAD"));
    assert_eq!(answer, json!({"reloaded": true, "restart_required": ["store.url"]}));
    poll_until("the log names the setting", || server.proc.stderr().contains("store.url"));
    std::fs::write(&config, "[groups]\ndb = \"db-*\"\n").unwrap();
    assert_eq!(signal_answer(&server.signal("RELOAD"))["restart_required"], json!([]));

    // An invalid file is refused with its problems and changes nothing.
    std::fs::write(&config, "[groups]\nweb = \"web-*\"\n[limits]\nnope = 1\n").unwrap();
    let out = server.signal("RELOAD");
    assert_ne!(out.status.code(), Some(0), "stdout: {}", stdout(&out));
    assert!(stderr(&out).contains("limits.nope"), "stderr: {}", stderr(&out));
    let (code, out) = ping(&server, "group:db");
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = ping(&server, "group:web");
    assert_eq!(code, Some(2), "the refused file's group must not apply: {out}");
    assert_eq!(connected_since(&server), before);
}

#[test]
fn signal_ping_answers_and_unknown_messages_are_usage_errors() {
    let server = Server::start();
    let _agent = server.agent("web-1", &[]);
    server.wait_connected(&["web-1"]);

    let answer = signal_answer(&server.signal("PING"));
    assert_eq!(answer["pong"], true, "{answer}");
    assert_eq!(answer["agents"], 1, "{answer}");
    assert_eq!(answer["jobs_in_flight"], 0, "{answer}");

    let out = server.signal("BOGUS");
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(&out));
    assert!(stderr(&out).contains("BOGUS"), "stderr: {}", stderr(&out));
}

#[test]
fn trace_logs_every_incoming_frame() {
    let mut server = Server::start_with(|c, _| {
        c.arg("--trace");
    });
    let _agent = server.agent("web-1", &[]);
    server.wait_connected(&["web-1"]);
    let (code, out) = ping(&server, "web-1");
    assert_eq!(code, Some(0), "{out}");

    // The operator's job arrives as a traced frame...
    let line = server.proc.wait_for_line(EVENT, |l| l.contains(" frame") && l.contains("cmd=\"ping\""));
    assert!(line.contains("dir=\"in\"") && line.contains("kind=\"cmd\""), "{line}");
    // ... and so does the agent's reply.
    let line = server.proc.wait_for_line(EVENT, |l| l.contains(" frame") && l.contains("kind=\"reply\""));
    assert!(line.contains("dir=\"in\"") && line.contains("web-1"), "{line}");
}

#[test]
fn the_per_address_connection_limit_refuses_a_second_agent() {
    let mut server = Server::start_with(|c, _| {
        c.env("ORB_LIMITS__MAX_CONNECTIONS_PER_IP", "1");
    });
    // With one connection per address, `orb devices` itself would be refused: wait on stderr.
    let mut first = server.agent_with("web-1", |_| {});
    first.wait_for_line(EVENT, agent_connected);

    let mut second = server.agent_with("web-2", |_| {});
    let line = second.wait_for_line(EVENT, |l| l.contains("cannot connect"));
    assert!(line.contains("too_many_connections"), "{line}");
    let line = server.proc.wait_for_line(EVENT, |l| l.contains("session closed"));
    assert!(line.contains("reason=connection_limit"), "{line}");
    assert!(!first.stderr().contains("connection lost"), "the first agent kept its connection: {}", first.stderr());
}

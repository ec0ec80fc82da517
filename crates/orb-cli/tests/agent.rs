//! End-to-end tests of `orb agent` (data folder lock, stop on SIGTERM, refused token) and of
//! local token discovery through `./orb-data`.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;

use common::{Proc, STARTUP, Server, json_lines, orb, orb_cmd, stderr, stdout};
use serde_json::json;

#[test]
fn a_second_agent_on_the_same_data_folder_is_refused() {
    let server = Server::start();
    let _first = server.agent("web-1", &[]);
    server.wait_connected(&["web-1"]);

    let out = orb_cmd(server.cwd())
        .args(["agent", "--server", &server.tcp, "--token", common::AGENT])
        .args(["--id", "web-2", "--data"])
        .arg(server.agent_data("web-1"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "second agent must not start");
    assert!(stderr(&out).contains("another agent"), "stderr: {}", stderr(&out));
    // The first agent is unaffected.
    server.wait_connected(&["web-1"]);
}

#[test]
fn an_agent_stops_cleanly_on_sigterm() {
    let server = Server::start();
    let mut agent = server.agent("web-1", &[]);
    server.wait_connected(&["web-1"]);

    let kill = std::process::Command::new("kill").args(["-TERM", &agent.pid().to_string()]).status().unwrap();
    assert!(kill.success());
    let status = agent.wait_exit(STARTUP);
    assert!(status.success(), "exit {status:?} (signal {:?}); stderr: {}", status.signal(), agent.stderr());

    // The lock is released with the process: a new agent can use the same folder.
    let _again = server.agent("web-1", &[]);
    server.wait_connected(&["web-1"]);
}

#[test]
fn the_server_stops_cleanly_on_sigterm_with_agents_connected() {
    let mut server = Server::start();
    let _agent = server.agent("web-1", &[]);
    server.wait_connected(&["web-1"]);

    let kill = std::process::Command::new("kill").args(["-TERM", &server.proc.pid().to_string()]).status().unwrap();
    assert!(kill.success());
    let status = server.proc.wait_exit(STARTUP);
    assert!(status.success(), "exit {status:?} (signal {:?}); stderr: {}", status.signal(), server.proc.stderr());
}

#[test]
fn an_agent_with_a_wrong_token_retries_until_it_gives_up_with_77() {
    let server = Server::start();
    let out = orb_cmd(server.cwd())
        .args(["agent", "--server", &server.tcp, "--token", "wrong-token-for-agents", "--give-up-after", "1s"])
        .args(["--id", "web-1", "--data"])
        .arg(server.agent_data("web-1"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(77), "stderr: {}", stderr(&out));
    assert!(stderr(&out).contains("auth_failed"), "stderr: {}", stderr(&out));
}

#[test]
fn local_commands_find_the_tokens_in_orb_data() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = orb(dir.path());
    serve.arg("serve").args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"]).args(["--data", "orb-data"]);
    let server = Server::spawn(dir, serve);
    let cwd = server.cwd();

    // Both tokens were generated, private to the user.
    for file in ["admin.token", "agent.token"] {
        let meta = std::fs::metadata(cwd.join("orb-data").join(file)).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600, "{file}");
        let token = std::fs::read_to_string(cwd.join("orb-data").join(file)).unwrap();
        assert!(token.trim().len() >= 32, "{file}: {token:?}");
    }

    // No token flags anywhere: the agent reads agent.token, the operator admin.token.
    let mut agent = orb(cwd);
    agent.args(["agent", "--server", &server.tcp, "--id", "web-1"]);
    let _agent = Proc::spawn("orb agent web-1", agent);
    common::wait_connected(cwd, &server.tcp, None, &["web-1"]);
    assert!(
        cwd.join("orb-agent").join("web-1").join("agent.lock").exists(),
        "default agent data folder is ./orb-agent/ID"
    );

    let out = orb_cmd(cwd).args(["send", "--server", &server.tcp, "*", "ping"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains(r#"{"pong":true}"#), "{text}");
    assert!(text.contains("1 of 1 targets answered ok"), "{text}");

    let out = orb_cmd(cwd).args(["send", "--server", &server.tcp, "*", "ping", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2, "{}", stdout(&out));
    assert_eq!(lines[0]["device"], "web-1");
    assert_eq!(lines[0]["result"], json!({"pong": true}));

    // Elsewhere (no ./orb-data) there is no token to find: refused with a hint.
    let elsewhere = tempfile::tempdir().unwrap();
    let out = orb_cmd(elsewhere.path()).args(["send", "--server", &server.tcp, "*", "ping"]).output().unwrap();
    assert_eq!(out.status.code(), Some(77), "stderr: {}", stderr(&out));
    assert!(stderr(&out).contains("no token given"), "{}", stderr(&out));
}

#[test]
fn standalone_writes_telemetry_lines_without_a_server() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("solo.toml");
    std::fs::write(&config, "[telemetry]\ninterval = \"100ms\"\nmetrics = [\"memory\"]\n").unwrap();
    let standalone = |extra: &[&str]| {
        let mut cmd = orb(dir.path());
        cmd.args(["agent", "--standalone", "--id", "solo-1", "--config"]).arg(&config);
        cmd.arg("--data").arg(dir.path().join("data")).args(extra);
        cmd
    };
    let (mut proc, lines) = Proc::with_stdout("orb agent --standalone", standalone(&[]));
    for _ in 0..2 {
        let line: serde_json::Value = serde_json::from_str(&lines.next(STARTUP).unwrap()).unwrap();
        assert_eq!(line["topic"], "telemetry.solo-1.sys", "{line}");
        assert!(line["at"].as_str().unwrap().ends_with('Z'), "{line}");
        let body = &line["body"];
        assert!(body["memory"].is_object() && body.get("cpus").is_none() && body["hostname"].is_string(), "{line}");
    }
    common::send_signal(proc.pid(), "TERM");
    assert_eq!(proc.wait_exit(STARTUP).code(), Some(0), "{}", proc.stderr());

    // To a file, appended.
    let file = dir.path().join("telemetry.jsonl");
    let mut proc = Proc::spawn("orb agent --standalone --telemetry-file", {
        let mut c = standalone(&["--telemetry-file"]);
        c.arg(&file);
        c
    });
    common::poll_until("two lines in the telemetry file", || {
        std::fs::read_to_string(&file).is_ok_and(|t| t.lines().count() >= 2)
    });
    common::send_signal(proc.pid(), "TERM");
    assert_eq!(proc.wait_exit(STARTUP).code(), Some(0), "{}", proc.stderr());
    for line in std::fs::read_to_string(&file).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["topic"], "telemetry.solo-1.sys");
    }

    // Telemetry off leaves nothing to do: a configuration error.
    std::fs::write(&config, "[telemetry]\ninterval = \"off\"\n").unwrap();
    let out = orb_cmd(dir.path())
        .args(["agent", "--standalone", "--id", "solo-1", "--config"])
        .arg(&config)
        .arg("--data")
        .arg(dir.path().join("data"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(stderr(&out).contains("--standalone would have nothing to do"), "{}", stderr(&out));
    // --telemetry-file needs --standalone.
    let out = orb_cmd(dir.path()).args(["agent", "--telemetry-file", "x.jsonl"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}

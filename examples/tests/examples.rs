//! The examples run as their users would run them: the custom agent against a real server,
//! answering its two commands (and keeping its device secret for the next run); the relay agent
//! sending commands to other devices where `[[acl.peers]]` allows it, and refused where not; the
//! conversation's server and client as two processes, in both start orders, the client's side of
//! the script printed in order and both exiting cleanly.
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use orb_proto::ErrorCode;
use orb_server::config::{AclConfig, PeerRuleConfig, ServerConfig};
use orb_testkit::{TestServer, Transport, WAIT, basic_handlers};
use serde_json::{Value, json};

/// Waits for `child` to exit (at most 60 s): its exit status and standard output.
fn finish(mut child: Child, what: &str) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{what} did not exit within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    (status, out)
}

/// Kills `child` when dropped (a failing test leaves no process behind).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn the_custom_agent_answers_its_two_commands_and_keeps_its_secret() {
    let server = TestServer::start_with(|cfg| cfg.acl.token_devices = false, |b| b).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("agent.token");
    std::fs::write(&token, "test-agent-token-0123456789\n").unwrap();
    let secret = dir.path().join("thermo-1.secret");
    let start = |with_token: bool| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_custom-agent"));
        cmd.args(["--server", &format!("tcp://{}", server.server.tcp_addr()), "--id", "thermo-1"])
            .arg("--secret-file")
            .arg(&secret)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if with_token {
            cmd.arg("--token-file").arg(&token);
        }
        Killed(cmd.spawn().unwrap())
    };
    let agent = start(true);
    server.wait_for_agents(1).await;
    let op = server.operator(Transport::Tcp).await;
    let ask = |cmd: &'static str, args: &'static str| {
        let op = op.clone();
        async move { op.request("thermo-1", cmd, Bytes::from_static(args.as_bytes()), WAIT).await }
    };
    let set: Value = serde_json::from_slice(&ask("thermostat.set", r#"{"celsius": 21.5}"#).await.unwrap()).unwrap();
    assert_eq!(set, json!({"celsius": 21.5, "was": 20.0}));
    let read: Value = serde_json::from_slice(&ask("thermostat.read", "null").await.unwrap()).unwrap();
    assert_eq!(read, json!({"celsius": 21.5}));
    // Its schema is checked before the handler runs: the path at fault and what is wrong.
    let e = ask("thermostat.set", r#"{"celsius": 99}"#).await.err().unwrap();
    assert_eq!(e.code(), Some(&ErrorCode::InvalidArgs), "{e}");
    assert!(e.to_string().contains("thermostat.set: /celsius: 99 is greater than the maximum of"), "{e}");
    let e = ask("thermostat.set", r#"{"celsius": "hot"}"#).await.err().unwrap();
    assert!(e.to_string().contains(r#"/celsius: "hot" is not of type "number""#), "{e}");
    let read: Value = serde_json::from_slice(&ask("thermostat.read", "null").await.unwrap()).unwrap();
    assert_eq!(read, json!({"celsius": 21.5}), "refused arguments changed nothing");
    assert!(std::fs::read_to_string(&secret).unwrap().trim().len() == 64, "the device secret is kept");

    // Restarted without the agent token: it connects as the same device with its secret.
    drop(agent);
    server.wait_until_gone("thermo-1").await;
    let _agent = start(false);
    server.wait_for_agents(1).await;
    let read: Value = serde_json::from_slice(&ask("thermostat.read", "null").await.unwrap()).unwrap();
    assert_eq!(read, json!({"celsius": 20.0}), "a new process starts from its default");
}

#[tokio::test]
async fn the_relay_agent_reaches_other_devices_only_where_acl_peers_allows() {
    let rule = PeerRuleConfig { from: "relay-1".into(), to: "w-*".into(), commands: vec!["echo".into()] };
    let server = TestServer::start_with(|cfg| cfg.acl.peers = vec![rule], |b| b).await;
    let _w1 = server.agent(Transport::Tcp, "w-1", &[], basic_handlers()).await;
    let _w2 = server.agent(Transport::Ws, "w-2", &[], basic_handlers()).await;
    let _db = server.agent(Transport::Tcp, "db-1", &[], basic_handlers()).await;
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("agent.token");
    std::fs::write(&token, "test-agent-token-0123456789\n").unwrap();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_relay-agent"));
    cmd.args(["--server", &format!("tcp://{}", server.server.tcp_addr()), "--id", "relay-1"])
        .arg("--token-file")
        .arg(&token)
        .arg("--secret-file")
        .arg(dir.path().join("relay-1.secret"))
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let _relay = Killed(cmd.spawn().unwrap());
    server.wait_for_agents(4).await;
    let op = server.operator(Transport::Tcp).await;
    let relay = |args: Value| {
        let op = op.clone();
        async move {
            let answer = op.request("relay-1", "relay", Bytes::from(args.to_string()), WAIT).await?;
            Ok::<Value, orb_client::ClientError>(serde_json::from_slice(&answer).unwrap())
        }
    };

    // Every device matches `*`; the rule reaches the workers only, and their replies come back.
    let out = relay(json!({"target": "*", "command": "echo", "args": {"n": 7}})).await.unwrap();
    let mut devices: Vec<&str> =
        out["results"].as_array().unwrap().iter().map(|r| r["device"].as_str().unwrap()).collect();
    devices.sort_unstable();
    assert_eq!(devices, ["w-1", "w-2"], "{out}");
    for r in out["results"].as_array().unwrap() {
        assert_eq!((&r["status"], &r["result"]), (&json!("ok"), &json!({"n": 7})), "{out}");
    }
    assert_eq!(out["summary"]["ok"], 2, "{out}");
    // "Any one of": exactly one worker runs it.
    let out = relay(json!({"target": "w-*", "command": "echo", "args": 1, "one": true})).await.unwrap();
    assert_eq!(out["results"].as_array().unwrap().len(), 1, "{out}");

    // A command the rule does not list, a device it does not reach: the server refuses, and the
    // relay answers that refusal.
    for (args, says) in [
        (json!({"target": "w-1", "command": "ping"}), "acl.peers"),
        (json!({"target": "db-1", "command": "echo"}), "no device matching 'db-1'"),
    ] {
        let e = relay(args.clone()).await.err().unwrap();
        assert_eq!(e.code(), Some(&ErrorCode::Forbidden), "{args}: {e}");
        assert!(e.to_string().contains(says), "{args}: {e}");
    }
    // Deny by default: without the rule nothing is relayed.
    let cfg = ServerConfig { acl: AclConfig::default(), ..ServerConfig::for_tests(server.data.path().to_path_buf()) };
    server.server.reload(cfg).unwrap();
    let e = relay(json!({"target": "w-*", "command": "echo"})).await.err().unwrap();
    assert_eq!(e.code(), Some(&ErrorCode::Forbidden), "{e}");
    assert!(e.to_string().contains("acl.peers"), "{e}");
}

/// A port free now on 127.0.0.1 (the client must know it before the server starts).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn conversation(port: u16, client_first: bool) {
    let server_cmd = || {
        Command::new(env!("CARGO_BIN_EXE_conversation-server"))
            .args(["--listen", &format!("127.0.0.1:{port}"), "--conversations", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    };
    let client_cmd = || {
        Command::new(env!("CARGO_BIN_EXE_conversation-client"))
            .args(["--server", &format!("tcp://127.0.0.1:{port}"), "--give-up-after", "30s"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap()
    };
    let (server, client) = if client_first {
        let client = client_cmd();
        (server_cmd(), client)
    } else {
        let server = server_cmd();
        // The client starts once the server accepts connections.
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the conversation server never listened");
            std::thread::sleep(Duration::from_millis(20));
        }
        (server, client_cmd())
    };
    let (status, said) = finish(client, "conversation-client");
    assert!(status.success(), "the client failed: {said}");
    // The script's lines, without the link's own ("connected as", "no server yet").
    let script: Vec<&str> = said
        .lines()
        .filter(|l| !l.starts_with("client: connected") && !l.starts_with("client: no server yet"))
        .collect();
    assert_eq!(
        script,
        [
            "server: HI",
            "client: DAD",
            "server: CLIMB",
            "client: TOP",
            "server: WHO",
            "client: MOM",
            "server: BYE",
            "client: quit",
        ],
        "{said}"
    );
    let (status, heard) = finish(server, "conversation-server");
    assert!(status.success(), "the server failed: {heard}");
    assert!(heard.contains("-> server: quit"), "{heard}");
}

#[test]
fn the_conversation_runs_with_the_server_started_first() {
    conversation(free_port(), false);
}

#[test]
fn the_conversation_runs_with_the_client_started_first() {
    conversation(free_port(), true);
}

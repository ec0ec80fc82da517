//! The examples run as their users would run them: the custom agent against a real server,
//! answering its two commands (and keeping its device secret for the next run); the
//! conversation's server and client as two processes, in both start orders, the client's side of
//! the script printed in order and both exiting cleanly.
#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use orb_proto::ErrorCode;
use orb_testkit::{TestServer, Transport, WAIT};
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

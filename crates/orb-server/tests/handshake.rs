//! The handshake and framing, spoken by hand over raw TCP (u32 big-endian length + JSON) and raw
//! WebSocket: every refusal is one `error` frame with its code, then the server closes. Also the
//! same refusals through `Client::connect`, and framing rules on an established session.
#![allow(clippy::unwrap_used)]

use futures_util::{SinkExt, StreamExt};
use orb_client::{Client, ClientConfig, ClientError, Handlers};
use orb_proto::ErrorCode;
use orb_testkit::{TestServer, Transport, basic_handlers, hello_json, within};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

const AGENT_TOKEN: &str = "test-agent-token-0123456789";
const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// Sends `first` as the first frame and returns the code of the `error` the server answers
/// with, after checking that the server then closes the connection.
async fn refusal_of(server: &TestServer, first: &[u8]) -> String {
    let mut raw = server.raw_tcp().await;
    raw.send_frame(first).await.unwrap();
    let code = raw.expect_error().await;
    raw.expect_closed().await;
    code
}

async fn refusal_of_hello(server: &TestServer, hello: Value) -> String {
    refusal_of(server, hello.to_string().as_bytes()).await
}

/// After refusals, the server still serves a well-behaved client.
async fn still_serves(server: &TestServer) {
    let agent = server.agent(Transport::Tcp, "after-1", &[], basic_handlers()).await;
    assert_eq!(agent.welcome().id, "after-1");
}

#[tokio::test]
async fn garbage_first_frame_is_bad_frame_then_close() {
    let server = TestServer::start().await;
    assert_eq!(refusal_of(&server, b"\xff\xfe garbage {{{").await, "bad_frame");
    assert_eq!(refusal_of(&server, b"[1,2,3]").await, "bad_frame");
    assert_eq!(refusal_of(&server, br#"{"id":"1"}"#).await, "bad_frame");
    assert_eq!(refusal_of(&server, br#"{"kind":7}"#).await, "bad_frame");
    assert_eq!(refusal_of(&server, br#"{"kind":"hello","kind":"hello"}"#).await, "bad_frame");
    still_serves(&server).await;
}

#[tokio::test]
async fn zero_length_first_frame_is_bad_frame() {
    let server = TestServer::start().await;
    assert_eq!(refusal_of(&server, b"").await, "bad_frame");
}

#[tokio::test]
async fn first_frame_that_is_not_hello_is_handshake_required() {
    let server = TestServer::start().await;
    for first in [
        json!({"kind": "ping", "id": "1"}),
        json!({"kind": "cmd", "id": "1", "cmd": "$orb.devices.list"}),
        json!({"kind": "nonsense"}),
    ] {
        let code = refusal_of(&server, first.to_string().as_bytes()).await;
        assert_eq!(code, "handshake_required", "{first}");
    }
    still_serves(&server).await;
}

#[tokio::test]
async fn oversized_frame_header_is_frame_too_large_then_close() {
    let server = TestServer::start().await;
    let mut raw = server.raw_tcp().await;
    // Only the header: 64 MiB announced. The server must answer from the header alone.
    raw.write_raw(&(64u32 << 20).to_be_bytes()).await.unwrap();
    assert_eq!(raw.expect_error().await, "frame_too_large");
    raw.expect_closed().await;

    // One byte over the announced limit is also refused.
    let mut raw = server.raw_tcp().await;
    let over = u32::try_from(orb_proto::DEFAULT_MAX_FRAME + 1).unwrap();
    raw.write_raw(&over.to_be_bytes()).await.unwrap();
    assert_eq!(raw.expect_error().await, "frame_too_large");
    raw.expect_closed().await;
    still_serves(&server).await;
}

#[tokio::test]
async fn oversized_frame_on_an_established_session_is_frame_too_large_then_close() {
    let server = TestServer::start().await;
    let mut raw = server.raw_agent("big-1").await;
    raw.write_raw(&u32::MAX.to_be_bytes()).await.unwrap();
    assert_eq!(raw.expect_error().await, "frame_too_large");
    raw.expect_closed().await;
}

#[tokio::test]
async fn bad_frame_on_an_established_session_is_bad_frame_then_close() {
    let server = TestServer::start().await;
    let mut raw = server.raw_agent("bad-1").await;
    raw.send_frame(br#"{"kind":"cmd","deadline_ms":"10"}"#).await.unwrap();
    assert_eq!(raw.expect_error().await, "bad_frame");
    raw.expect_closed().await;
    // Its registration went with it.
    server.wait_for_agents(0).await;
}

#[tokio::test]
async fn wrong_or_missing_token_is_auth_failed() {
    let server = TestServer::start().await;
    let code = refusal_of_hello(&server, hello_json("agent", "wrong", Some("web-1"))).await;
    assert_eq!(code, "auth_failed");
    let code = refusal_of_hello(&server, hello_json("operator", "wrong", None)).await;
    assert_eq!(code, "auth_failed");
    let no_token = json!({"kind": "hello", "body": {"version": 1, "role": "agent", "id": "web-1"}});
    assert_eq!(refusal_of_hello(&server, no_token).await, "auth_failed");
    server.wait_for_agents(0).await;
    still_serves(&server).await;
}

#[tokio::test]
async fn wrong_token_through_the_client_is_refused_with_auth_failed() {
    let server = TestServer::start().await;
    for transport in [Transport::Tcp, Transport::Ws] {
        let cfg = ClientConfig::agent(server.url(transport), Some("wrong".into()), "web-1");
        let err = within("the refusal", Client::connect(cfg, Handlers::new())).await.err().expect("refused");
        match &err {
            ClientError::Refused(e) => assert_eq!(e.code, ErrorCode::AuthFailed, "{e}"),
            other => panic!("{transport:?}: expected Refused, got {other}"),
        }
        assert_eq!(err.code(), Some(&ErrorCode::AuthFailed));
    }
}

#[tokio::test]
async fn agent_without_a_valid_id_is_bad_id() {
    let server = TestServer::start().await;
    let code = refusal_of_hello(&server, hello_json("agent", AGENT_TOKEN, None)).await;
    assert_eq!(code, "bad_id");
    let long = "a".repeat(65);
    for bad in ["web.1", "", "-web", "and", "not", "web 1", "wéb", long.as_str()] {
        let code = refusal_of_hello(&server, hello_json("agent", AGENT_TOKEN, Some(bad))).await;
        assert_eq!(code, "bad_id", "{bad:?}");
    }
    let cfg = ClientConfig::agent(server.url(Transport::Ws), Some(AGENT_TOKEN.into()), "web.1");
    let err = Client::connect(cfg, Handlers::new()).await.err().unwrap();
    assert_eq!(err.code(), Some(&ErrorCode::BadId), "{err}");
    server.wait_for_agents(0).await;
    still_serves(&server).await;
}

#[tokio::test]
async fn unsupported_protocol_version_is_refused() {
    let server = TestServer::start().await;
    for version in [0, 2, 99] {
        let mut hello = hello_json("agent", AGENT_TOKEN, Some("web-1"));
        hello["body"]["version"] = json!(version);
        assert_eq!(refusal_of_hello(&server, hello).await, "unsupported_version", "version {version}");
    }
}

#[tokio::test]
async fn operator_with_the_agent_token_is_forbidden() {
    let server = TestServer::start().await;
    let code = refusal_of_hello(&server, hello_json("operator", AGENT_TOKEN, None)).await;
    assert_eq!(code, "forbidden");
    let cfg = ClientConfig::operator(server.url(Transport::Tcp), Some(AGENT_TOKEN.into()));
    let err = Client::connect(cfg, Handlers::new()).await.err().unwrap();
    assert!(matches!(&err, ClientError::Refused(e) if e.code == ErrorCode::Forbidden), "{err}");
}

#[tokio::test]
async fn malformed_hello_body_is_bad_request() {
    let server = TestServer::start().await;
    for hello in [
        json!({"kind": "hello"}),
        json!({"kind": "hello", "body": {"role": "agent", "token": AGENT_TOKEN, "id": "x-1"}}),
        json!({"kind": "hello", "body": {"version": 1, "role": "king", "token": ADMIN_TOKEN}}),
        json!({"kind": "hello", "body": {"version": 1, "role": "agent", "token": AGENT_TOKEN, "id": "x-1", "tags": {"a": 1}}}),
    ] {
        assert_eq!(refusal_of_hello(&server, hello.clone()).await, "bad_request", "{hello}");
    }
}

#[tokio::test]
async fn good_hello_gets_a_welcome_with_the_servers_limits() {
    let server = TestServer::start().await;
    let mut raw = server.raw_tcp().await;
    raw.send_json(&hello_json("agent", ADMIN_TOKEN, Some("web-1"))).await.unwrap();
    let welcome = raw.read_json().await.unwrap();
    assert_eq!(welcome["kind"], "welcome", "{welcome}");
    let body = &welcome["body"];
    assert_eq!(body["version"], 1);
    assert_eq!(body["id"], "web-1");
    assert_eq!(body["max_frame"], orb_proto::DEFAULT_MAX_FRAME as u64);
    assert_eq!(body["heartbeat_ms"], 15000);
    assert_eq!(body["heartbeat_timeout_ms"], 45000);
    assert!(body["session"].is_u64());
    assert!(body["server"].as_str().unwrap().starts_with("orb/"));
    server.wait_for_agents(1).await;

    // An operator's id in hello is ignored; it is named op-<session>.
    let mut raw = server.raw_tcp().await;
    raw.send_json(&hello_json("operator", ADMIN_TOKEN, Some("web-2"))).await.unwrap();
    let welcome = raw.read_json().await.unwrap();
    let session = welcome["body"]["session"].as_u64().unwrap();
    assert_eq!(welcome["body"]["id"], format!("op-{session}"));
    server.wait_for_agents(1).await;
}

#[tokio::test]
async fn unknown_and_server_only_kinds_are_refused_and_the_session_stays_open() {
    let server = TestServer::start().await;
    let mut raw = server.raw_agent("dev-1").await;
    for (kind, code) in [("config", "bad_request"), ("future_kind", "unsupported")] {
        raw.send_json(&json!({"kind": kind, "id": format!("x-{kind}"), "topic": "a.b"})).await.unwrap();
        let f = raw.read_json().await.unwrap();
        assert_eq!(f["kind"], "error", "{f}");
        assert_eq!(f["re"], format!("x-{kind}"));
        assert_eq!(f["error"]["code"], code, "{f}");
    }
    raw.send_json(&json!({"kind": "ping", "id": "hb-1"})).await.unwrap();
    let pong = raw.read_json().await.unwrap();
    assert_eq!(pong, json!({"kind": "pong", "re": "hb-1"}));
}

#[tokio::test]
async fn two_frames_in_one_write_are_both_read() {
    let server = TestServer::start().await;
    let mut raw = server.raw_tcp().await;
    let mut bytes = Vec::new();
    for frame in [hello_json("operator", ADMIN_TOKEN, None), json!({"kind": "ping", "id": "p-1"})] {
        let payload = frame.to_string();
        bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        bytes.extend_from_slice(payload.as_bytes());
    }
    // Split in odd places: the second write ends inside the first frame's payload.
    raw.write_raw(&bytes[..2]).await.unwrap();
    raw.write_raw(&bytes[2..9]).await.unwrap();
    raw.write_raw(&bytes[9..]).await.unwrap();
    assert_eq!(raw.read_json().await.unwrap()["kind"], "welcome");
    assert_eq!(raw.read_json().await.unwrap(), json!({"kind": "pong", "re": "p-1"}));
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn raw_ws(server: &TestServer) -> Ws {
    let url = format!("ws://{}/v1/ws", server.server.http_addr());
    let (ws, _) = within("a websocket connect", tokio_tungstenite::connect_async(url)).await.unwrap();
    ws
}

/// The next data message as JSON; `None` when the server closed.
async fn ws_read(ws: &mut Ws) -> Option<Value> {
    loop {
        match within("a websocket message", ws.next()).await {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return None,
            Some(Ok(Message::Binary(b))) => return Some(serde_json::from_slice(&b).unwrap()),
            Some(Ok(Message::Text(t))) => return Some(serde_json::from_str(&t).unwrap()),
            Some(Ok(_)) => {}
        }
    }
}

async fn ws_refusal(ws: &mut Ws) -> String {
    let f = ws_read(ws).await.expect("an error frame");
    assert_eq!(f["kind"], "error", "{f}");
    assert!(ws_read(ws).await.is_none(), "the server closes after a refusal");
    f["error"]["code"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn websocket_wrong_token_is_auth_failed_then_close() {
    let server = TestServer::start().await;
    let mut ws = raw_ws(&server).await;
    let hello = hello_json("agent", "wrong", Some("web-1")).to_string();
    ws.send(Message::Binary(hello.into())).await.unwrap();
    assert_eq!(ws_refusal(&mut ws).await, "auth_failed");
}

#[tokio::test]
async fn websocket_garbage_and_not_hello_are_refused() {
    let server = TestServer::start().await;
    let mut ws = raw_ws(&server).await;
    ws.send(Message::Binary(b"\x00\x01 nope".to_vec().into())).await.unwrap();
    assert_eq!(ws_refusal(&mut ws).await, "bad_frame");

    let mut ws = raw_ws(&server).await;
    ws.send(Message::Text(r#"{"kind":"ping","id":"1"}"#.into())).await.unwrap();
    assert_eq!(ws_refusal(&mut ws).await, "handshake_required");
}

#[tokio::test]
async fn websocket_accepts_hello_and_commands_as_text_messages() {
    let server = TestServer::start().await;
    let mut ws = raw_ws(&server).await;
    let hello = hello_json("operator", ADMIN_TOKEN, None).to_string();
    ws.send(Message::Text(hello.into())).await.unwrap();
    let welcome = ws_read(&mut ws).await.unwrap();
    assert_eq!(welcome["kind"], "welcome", "{welcome}");
    let cmd = json!({"kind": "cmd", "id": "7", "cmd": "$orb.server.info"}).to_string();
    ws.send(Message::Text(cmd.into())).await.unwrap();
    let reply = ws_read(&mut ws).await.unwrap();
    assert_eq!(reply["kind"], "reply", "{reply}");
    assert_eq!(reply["re"], "7");
    assert_eq!(reply["body"]["operators"], 1);
}

#[tokio::test]
async fn websocket_message_above_max_frame_is_frame_too_large() {
    let server = TestServer::start_with(|cfg| cfg.limits.max_frame = 4096, |b| b).await;
    let mut ws = raw_ws(&server).await;
    let mut hello = hello_json("agent", AGENT_TOKEN, Some("web-1"));
    hello["body"]["agent"] = json!("x".repeat(8192));
    ws.send(Message::Binary(hello.to_string().into())).await.unwrap();
    assert_eq!(ws_refusal(&mut ws).await, "frame_too_large");
    server.wait_for_agents(0).await;
}

/// By default (`acl.token_devices = false`) the shared agent token alone connects no device: a
/// new one must enroll, and a device registered without a secret cannot be taken over by anyone
/// holding the token; the enrolled device connects with its secret.
#[tokio::test]
async fn the_shared_token_alone_takes_over_no_device_by_default() {
    let server = TestServer::start_with(|cfg| cfg.acl.token_devices = false, |b| b).await;
    let token = server.server.agent_token().expose().to_owned();
    let mut raw = server.raw_tcp().await;
    raw.send_json(&hello_json("agent", &token, Some("cam-1"))).await.unwrap();
    assert_eq!(raw.expect_error().await, "forbidden");

    let mut raw = server.raw_tcp().await;
    let mut enroll = hello_json("agent", &token, Some("cam-1"));
    enroll["body"]["enroll"] = Value::Bool(true);
    raw.send_json(&enroll).await.unwrap();
    let welcome = raw.read_json().await.unwrap();
    assert_eq!(welcome["kind"], "welcome", "{welcome}");
    assert!(welcome["body"]["secret"].is_string(), "{welcome}");
    drop(raw);
    server.wait_until_gone("cam-1").await;

    // With the token, enrolling again or not: refused, the device keeps its secret.
    for hello in [enroll.clone(), hello_json("agent", &token, Some("cam-1"))] {
        let mut raw = server.raw_tcp().await;
        raw.send_json(&hello).await.unwrap();
        assert_eq!(raw.expect_error().await, "id_taken");
    }
}

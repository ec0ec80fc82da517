//! The points where a client written from `docs/protocol.md` alone needed the document and the
//! server to agree (section 3 of the hardening issue), each pinned by a test: `elapsed_ms` of
//! offline targets, `from` on relayed replies, a device giving up at its deadline, frames a
//! client may not send, `deadline_ms: 0`, a reused request id, what agents may send, handshake
//! close reasons, and WebSocket close codes.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use futures_util::{SinkExt, StreamExt};
use orb_client::JobRequest;
use orb_proto::message::{ServerInfo, commands};
use orb_testkit::{RawTcp, TestServer, Transport, WAIT, basic_handlers, call, hello_json, within};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message;

/// A hand-framed operator session, welcomed.
async fn raw_operator(server: &TestServer) -> RawTcp {
    let mut raw = server.raw_tcp().await;
    raw.send_json(&hello_json("operator", server.server.admin_token().expose(), None)).await.unwrap();
    assert_eq!(raw.read_json().await.unwrap()["kind"], "welcome");
    raw
}

/// The next frame that is not a ping from the server.
async fn next(raw: &mut RawTcp) -> Value {
    loop {
        let f = raw.read_json().await.expect("a frame");
        if f["kind"] != "ping" {
            return f;
        }
    }
}

#[tokio::test]
async fn an_offline_target_has_no_elapsed_ms_and_a_relayed_reply_names_its_device() {
    let server = TestServer::start().await;
    let _gone = server.agent(Transport::Tcp, "gone-1", &[], basic_handlers()).await;
    _gone.close().await;
    let _up = server.agent(Transport::Tcp, "up-1", &[], basic_handlers()).await;
    server.wait_for_agents(1).await;
    let mut op = raw_operator(&server).await;
    op.send_json(&json!({"kind": "cmd", "id": "1", "cmd": "ping", "target": "gone-1"})).await.unwrap();
    assert_eq!(next(&mut op).await["kind"], "ack");
    let ev = next(&mut op).await;
    assert_eq!((ev["kind"].as_str(), ev["status"].as_str()), (Some("event"), Some("offline")), "{ev}");
    assert!(ev.get("elapsed_ms").is_none(), "nothing was delivered, so nothing was timed: {ev}");
    assert_eq!(ev["error"]["code"], "device_offline");
    assert_eq!(next(&mut op).await["kind"], "reply");

    op.send_json(&json!({"kind": "cmd", "id": "2", "cmd": "echo", "to": "up-1", "body": {"x": 1}})).await.unwrap();
    let reply = next(&mut op).await;
    assert_eq!(reply, json!({"kind": "reply", "re": "2", "from": "up-1", "body": {"x": 1}}));
}

#[tokio::test]
async fn a_device_that_gives_up_at_its_deadline_is_a_timeout_not_an_error() {
    let server = TestServer::start().await;
    let mut device = server.raw_agent("slow-1").await;
    let op = server.operator(Transport::Tcp).await;
    let job = op
        .submit(JobRequest::new("slow-1", "work").args(bytes::Bytes::from_static(b"null")).deadline(WAIT))
        .await
        .unwrap();
    let cmd = loop {
        let f = device.read_json().await.unwrap();
        if f["kind"] == "cmd" {
            break f;
        }
    };
    device
        .send_json(&json!({"kind": "reply", "re": cmd["id"], "error": {"code": "timeout", "message": "gave up"}}))
        .await
        .unwrap();
    let out = orb_testkit::finish_job(job).await;
    let r = out.result("slow-1");
    assert_eq!(r.status, orb_proto::Status::Timeout, "{r:?}");
    assert_eq!(r.error.as_ref().unwrap().message, "gave up");
}

#[tokio::test]
async fn frames_a_client_may_not_send_are_answered_and_the_session_stays_open() {
    let server = TestServer::start().await;
    let mut op = raw_operator(&server).await;
    for kind in ["hello", "welcome", "ack", "event", "cancel"] {
        op.send_json(&json!({"kind": kind, "id": format!("x-{kind}")})).await.unwrap();
        let f = next(&mut op).await;
        assert_eq!(f["kind"], "error", "{kind}: {f}");
        assert_eq!(f["re"], format!("x-{kind}"));
        assert_eq!(f["error"]["code"], "bad_request");
    }
    // An error frame is never answered (two peers could otherwise loop).
    op.send_json(&json!({"kind": "error", "id": "e", "error": {"code": "bad_frame", "message": "x"}})).await.unwrap();
    // A cmd without an id cannot be answered with `re`: an error frame without it.
    op.send_json(&json!({"kind": "cmd", "cmd": "$orb.server.info"})).await.unwrap();
    let f = next(&mut op).await;
    assert_eq!((f["kind"].as_str(), f["error"]["code"].as_str()), (Some("error"), Some("bad_request")), "{f}");
    assert!(f.get("re").is_none());
    op.send_json(&json!({"kind": "ping", "id": "still-there"})).await.unwrap();
    assert_eq!(next(&mut op).await, json!({"kind": "pong", "re": "still-there"}));
}

#[tokio::test]
async fn deadline_ms_zero_means_the_default_and_a_reused_id_gets_both_answers() {
    let server = TestServer::start().await;
    let _a = server.agent(Transport::Tcp, "a-1", &[], basic_handlers()).await;
    let mut op = raw_operator(&server).await;
    op.send_json(&json!({"kind": "cmd", "id": "j", "cmd": "ping", "target": "a-1", "deadline_ms": 0})).await.unwrap();
    let ack = next(&mut op).await;
    assert_eq!(ack["body"]["deadline_ms"], 10_000, "the default job deadline: {ack}");
    for _ in 0..2 {
        next(&mut op).await;
    }
    // Ids must be unique among a client's open requests; the server does not check, and a reused
    // one gets every answer, which the client can then not tell apart.
    for _ in 0..2 {
        op.send_json(&json!({"kind": "cmd", "id": "same", "cmd": "echo", "to": "a-1", "body": 1})).await.unwrap();
    }
    for _ in 0..2 {
        let f = next(&mut op).await;
        assert_eq!((f["kind"].as_str(), f["re"].as_str()), (Some("reply"), Some("same")), "{f}");
    }
}

#[tokio::test]
async fn agents_may_call_the_servers_handlers_but_not_devices_jobs_or_queries() {
    let server =
        TestServer::start_with(|_| {}, |b| b.handler("report", |_c: orb_client::Context| async { Ok(json!("noted")) }))
            .await;
    let _other = server.agent(Transport::Tcp, "b-1", &[], basic_handlers()).await;
    let agent = server.agent(Transport::Tcp, "a-1", &[], basic_handlers()).await;
    let noted: Value = call(&agent, "report", json!(null)).await;
    assert_eq!(noted, "noted");
    for refused in [
        agent.request("b-1", "ping", bytes::Bytes::from_static(b"null"), WAIT).await.err().unwrap(),
        agent
            .submit(JobRequest::new("*", "ping").args(bytes::Bytes::from_static(b"null")).deadline(WAIT))
            .await
            .err()
            .unwrap(),
        agent.call_json::<_, Value>(commands::DEVICES_LIST, &json!(null), WAIT).await.err().unwrap(),
    ] {
        assert_eq!(refused.code().map(|c| c.as_str().to_owned()).as_deref(), Some("forbidden"), "{refused}");
    }
}

#[tokio::test]
async fn handshake_refusals_are_counted_under_their_close_reasons() {
    let server = TestServer::start().await;
    let token = server.server.agent_token().expose().to_owned();
    for hello in [
        hello_json("agent", "wrong-token", Some("x-1")),
        hello_json("agent", &token, Some("bad.id")),
        json!({"kind": "ping"}),
    ] {
        let mut raw = server.raw_tcp().await;
        raw.send_json(&hello).await.unwrap();
        raw.expect_error().await;
        raw.expect_closed().await;
    }
    let op = server.operator(Transport::Tcp).await;
    let info: ServerInfo = call(&op, commands::SERVER_INFO, json!(null)).await;
    let closed: BTreeMap<String, u64> = info.closed;
    assert_eq!(closed["auth_failed"], 1, "{closed:?}");
    assert_eq!(closed["protocol_violation"], 2, "bad_id and handshake_required: {closed:?}");
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws(server: &TestServer) -> Ws {
    let url = format!("ws://{}/v1/ws", server.server.http_addr());
    within("a websocket", tokio_tungstenite::connect_async(url)).await.unwrap().0
}

/// Reads to the close frame; returns its status code.
async fn close_code(ws: &mut Ws) -> u16 {
    for _ in 0..100 {
        match within("a message", ws.next()).await {
            Some(Ok(Message::Close(Some(frame)))) => return frame.code.into(),
            Some(Ok(_)) => {}
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
    panic!("no close frame");
}

#[tokio::test]
async fn websocket_sessions_close_with_a_code_that_says_why() {
    let server = TestServer::start().await;
    let mut refused = ws(&server).await;
    refused.send(Message::text(hello_json("agent", "wrong", Some("w-1")).to_string())).await.unwrap();
    assert_eq!(close_code(&mut refused).await, 1008, "refused credentials: policy violation");

    let mut garbage = ws(&server).await;
    garbage.send(Message::text("{not json")).await.unwrap();
    assert_eq!(close_code(&mut garbage).await, 1002, "a bad frame: protocol error");

    let mut agent = ws(&server).await;
    let hello = hello_json("agent", server.server.agent_token().expose(), Some("w-2"));
    agent.send(Message::text(hello.to_string())).await.unwrap();
    assert!(matches!(within("the welcome", agent.next()).await, Some(Ok(Message::Binary(_)))));
    within("the drain", server.server.drain(std::time::Duration::from_millis(100))).await;
    assert_eq!(close_code(&mut agent).await, 1001, "the server is going away");
}

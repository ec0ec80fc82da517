//! Plain requests to one device (form 2), commands to the server (form 1: application handlers
//! and the reserved `$orb.` queries), and what agents may and may not do.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use orb_client::{Client, ClientError, Context, JobRequest};
use orb_proto::ErrorCode;
use orb_proto::message::{DeviceInfo, Resolved, ServerInfo};
use orb_testkit::{TestServer, Transport, WAIT, basic_handlers, within};
use serde_json::{Value, json};

const NULL: Bytes = Bytes::from_static(b"null");

fn remote_code(r: Result<Bytes, ClientError>) -> ErrorCode {
    match r {
        Err(ClientError::Remote(e)) => e.code,
        Err(e) => panic!("expected a remote error, got {e}"),
        Ok(b) => panic!("expected an error, got {}", String::from_utf8_lossy(&b)),
    }
}

fn as_json(b: &Bytes) -> Value {
    serde_json::from_slice(b).unwrap()
}

#[tokio::test]
async fn request_to_a_device_returns_its_result() {
    let server = TestServer::start().await;
    let _tcp = server.agent(Transport::Tcp, "dev-1", &[], basic_handlers()).await;
    let _ws = server.agent(Transport::Ws, "dev-2", &[], basic_handlers()).await;
    for op_transport in [Transport::Tcp, Transport::Ws] {
        let op = server.operator(op_transport).await;
        for dev in ["dev-1", "dev-2"] {
            let args = Bytes::from_static(br#"{"msg":"hi","n":[1,2]}"#);
            let res = within("a reply", op.request(dev, "echo", args, WAIT)).await.unwrap();
            assert_eq!(as_json(&res), json!({"msg": "hi", "n": [1, 2]}), "{dev}");
            let res = within("a reply", op.request(dev, "ping", NULL, WAIT)).await.unwrap();
            assert_eq!(as_json(&res), json!({"pong": true}));
        }
    }
}

#[tokio::test]
async fn request_reaches_the_device_with_the_requesters_name() {
    let server = TestServer::start().await;
    let handlers = basic_handlers().on("who", |c: Context| async move {
        Ok(json!({"from": c.from, "job": c.job, "deadline_ms": c.deadline.as_millis() as u64}))
    });
    let _a = server.agent(Transport::Tcp, "dev-1", &[], handlers).await;
    let op = server.operator(Transport::Tcp).await;
    let res = op.request("dev-1", "who", NULL, Duration::from_millis(4000)).await.unwrap();
    let v = as_json(&res);
    assert_eq!(v["from"], json!(op.welcome().id));
    assert_eq!(v["job"], Value::Null, "a plain request is not a job");
    assert_eq!(v["deadline_ms"], 4000);
}

#[tokio::test]
async fn request_errors_from_the_device_are_relayed() {
    let server = TestServer::start().await;
    let _a = server.agent(Transport::Ws, "dev-1", &[], basic_handlers()).await;
    let op = server.operator(Transport::Tcp).await;
    let r = op.request("dev-1", "reboot", NULL, WAIT).await;
    assert_eq!(remote_code(r), ErrorCode::UnknownCommand);
}

#[tokio::test]
async fn arguments_that_are_not_json_fail_locally_and_keep_the_connection() {
    let server = TestServer::start().await;
    let _a = server.agent(Transport::Tcp, "dev-1", &[], basic_handlers()).await;
    let op = server.operator(Transport::Tcp).await;
    let bad = Bytes::from_static(b"[1,");
    let r = op.request("dev-1", "echo", bad.clone(), WAIT).await;
    assert!(matches!(r, Err(ClientError::Protocol(_))), "{r:?}");
    let r = op.call("$orb.server.info", bad.clone(), WAIT).await;
    assert!(matches!(r, Err(ClientError::Protocol(_))), "{r:?}");
    let r = op.submit(JobRequest::new("dev-1", "echo").args(bad).deadline(WAIT)).await;
    assert!(matches!(r, Err(ClientError::Protocol(_))), "{:?}", r.err());
    // Nothing invalid reached the server, so the connection is still open and usable.
    assert!(!op.is_closed());
    let res = op.request("dev-1", "echo", Bytes::from_static(b" [1] "), WAIT).await.unwrap();
    assert_eq!(as_json(&res), json!([1]));
}

#[tokio::test]
async fn request_to_an_unknown_device_is_device_offline() {
    let server = TestServer::start().await;
    let op = server.operator(Transport::Tcp).await;
    let r = op.request("ghost-1", "ping", NULL, WAIT).await;
    assert_eq!(remote_code(r), ErrorCode::DeviceOffline);
    // Operator sessions are not devices.
    let other = server.operator(Transport::Ws).await;
    let r = op.request(&other.welcome().id, "ping", NULL, WAIT).await;
    assert_eq!(remote_code(r), ErrorCode::DeviceOffline);
}

#[tokio::test]
async fn request_to_a_device_that_went_away_is_device_offline() {
    let server = TestServer::start().await;
    let agent = server.agent(Transport::Tcp, "dev-1", &[], basic_handlers()).await;
    let op = server.operator(Transport::Tcp).await;
    op.request("dev-1", "ping", NULL, WAIT).await.unwrap();
    agent.close().await;
    within("the agent to close", agent.closed()).await;
    server.wait_for_agents(0).await;
    let r = op.request("dev-1", "ping", NULL, WAIT).await;
    assert_eq!(remote_code(r), ErrorCode::DeviceOffline);
}

#[tokio::test]
async fn request_to_a_device_that_never_answers_times_out_at_the_client() {
    let server = TestServer::start().await;
    // A hand-written agent that reads commands and never answers them.
    let mut mute = server.raw_agent("mute-1").await;
    let op = server.operator(Transport::Tcp).await;
    let r = within("the client-side timeout", op.request("mute-1", "ping", NULL, Duration::from_millis(300))).await;
    assert!(matches!(r, Err(ClientError::Timeout(300))), "{r:?}");
    // The command did reach the device, with the request's deadline.
    let cmd = mute.read_json().await.unwrap();
    assert_eq!(cmd["kind"], "cmd");
    assert_eq!(cmd["cmd"], "ping");
    assert_eq!(cmd["deadline_ms"], 300);
    assert_eq!(cmd["from"], json!(op.welcome().id));
    assert!(cmd.get("job").is_none());
    // The connection is still usable after a timeout.
    let res = op.call("$orb.server.info", NULL, WAIT).await.unwrap();
    assert_eq!(as_json(&res)["agents"], 1);
}

#[tokio::test]
async fn late_reply_after_a_request_timed_out_is_ignored() {
    let server = TestServer::start().await;
    let mut slow = server.raw_agent("slow-1").await;
    let op = server.operator(Transport::Tcp).await;
    let r = op.request("slow-1", "ping", NULL, Duration::from_millis(200)).await;
    assert!(matches!(r, Err(ClientError::Timeout(_))), "{r:?}");
    // The device answers late; nothing breaks and the next request gets its own answer.
    let cmd = slow.read_json().await.unwrap();
    let late = json!({"kind": "reply", "re": cmd["id"], "body": "late"});
    slow.send_json(&late).await.unwrap();
    let next = op.request("slow-1", "ping", NULL, WAIT);
    let answer = async {
        let cmd = slow.read_json().await.unwrap();
        assert_ne!(cmd["id"], late["re"], "server ids are not reused");
        let reply = json!({"kind": "reply", "re": cmd["id"], "body": {"fresh": true}});
        slow.send_json(&reply).await.unwrap();
    };
    let (res, ()) = within("the second request", async { tokio::join!(next, answer) }).await;
    assert_eq!(as_json(&res.unwrap()), json!({"fresh": true}));
}

/// A server with an application handler `time.now`, answering with a fixed time and the caller.
async fn server_with_time_handler() -> TestServer {
    TestServer::start_with(
        |_| {},
        |b| b.handler("time.now", |c: Context| async move { Ok(json!({"unix": 1_700_000_000, "from": c.from})) }),
    )
    .await
}

#[tokio::test]
async fn agent_calls_a_server_handler_and_gets_its_result() {
    let server = server_with_time_handler().await;
    for (t, id) in [(Transport::Tcp, "dev-1"), (Transport::Ws, "dev-2")] {
        let agent = server.agent(t, id, &[], basic_handlers()).await;
        let v: Value = within("a reply", agent.call_json("time.now", &json!(null), WAIT)).await.unwrap();
        assert_eq!(v, json!({"unix": 1_700_000_000, "from": id}));
    }
    // Operators may call it too.
    let op = server.operator(Transport::Tcp).await;
    let v: Value = op.call_json("time.now", &json!({}), WAIT).await.unwrap();
    assert_eq!(v["from"], json!(op.welcome().id));
}

#[tokio::test]
async fn agent_calling_an_unknown_server_command_gets_unknown_command() {
    let server = server_with_time_handler().await;
    let agent = server.agent(Transport::Tcp, "dev-1", &[], basic_handlers()).await;
    let r = agent.call("time.later", NULL, WAIT).await;
    assert_eq!(remote_code(r), ErrorCode::UnknownCommand);
    // Unknown reserved names are unknown for operators too.
    let op = server.operator(Transport::Tcp).await;
    let r = op.call("$orb.nope", NULL, WAIT).await;
    assert_eq!(remote_code(r), ErrorCode::UnknownCommand);
}

#[tokio::test]
async fn server_handler_that_panics_reports_handler_panicked_and_keeps_serving() {
    let server = TestServer::start_with(
        |_| {},
        |b| {
            b.handler("explode", |_c: Context| async move {
                if true {
                    panic!("server handler blew up");
                }
                Ok(json!(null))
            })
            .handler("fine", |_c: Context| async move { Ok(json!("fine")) })
        },
    )
    .await;
    let agent = server.agent(Transport::Tcp, "dev-1", &[], basic_handlers()).await;
    let r = agent.call("explode", NULL, WAIT).await;
    assert_eq!(remote_code(r), ErrorCode::HandlerPanicked);
    let v: Value = agent.call_json("fine", &json!(null), WAIT).await.unwrap();
    assert_eq!(v, json!("fine"));
}

#[tokio::test]
async fn agent_may_not_use_operator_commands_jobs_or_requests() {
    let server = server_with_time_handler().await;
    let agent = server.agent(Transport::Ws, "dev-1", &[], basic_handlers()).await;
    let _other = server.agent(Transport::Tcp, "dev-2", &[], basic_handlers()).await;
    for cmd in ["$orb.devices.list", "$orb.selector.resolve", "$orb.server.info"] {
        let r = agent.call(cmd, NULL, WAIT).await;
        assert_eq!(remote_code(r), ErrorCode::Forbidden, "{cmd}");
    }
    match agent.submit(JobRequest::new("*", "ping").args(NULL).deadline(WAIT)).await {
        Err(ClientError::Remote(e)) => assert_eq!(e.code, ErrorCode::Forbidden, "{e}"),
        Err(e) => panic!("expected forbidden, got {e}"),
        Ok(_) => panic!("an agent submitted a job"),
    }
    let r = agent.request("dev-2", "ping", NULL, WAIT).await;
    assert_eq!(remote_code(r), ErrorCode::Forbidden);
    // The agent's session survived all of it.
    let v: Value = agent.call_json("time.now", &json!(null), WAIT).await.unwrap();
    assert_eq!(v["from"], "dev-1");
}

async fn devices(op: &Client, args: Value) -> Vec<DeviceInfo> {
    within("the device list", op.call_json("$orb.devices.list", &args, WAIT)).await.unwrap()
}

#[tokio::test]
async fn devices_list_shows_connected_agents_with_tags_transport_and_address() {
    let server = TestServer::start().await;
    let _a = server.agent(Transport::Tcp, "web-1", &[("role", "web"), ("region", "eu")], basic_handlers()).await;
    let _b = server.agent(Transport::Ws, "db-1", &[("role", "db")], basic_handlers()).await;
    let op = server.operator(Transport::Tcp).await;

    let all = devices(&op, json!(null)).await;
    let ids: Vec<&str> = all.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["db-1", "web-1"], "sorted by id, operators not listed");
    let web = &all[1];
    assert!(web.connected);
    assert_eq!(web.tags.get("role").map(String::as_str), Some("web"));
    assert_eq!(web.tags.get("region").map(String::as_str), Some("eu"));
    assert_eq!(web.transport.as_deref(), Some("tcp"));
    assert_eq!(all[0].transport.as_deref(), Some("ws"));
    assert_eq!(web.commands, ["echo", "ping"]);
    assert!(web.agent_version.as_deref().unwrap().starts_with("orb-client/"));
    for d in &all {
        let addr: SocketAddr = d.remote_addr.as_deref().unwrap().parse().unwrap();
        assert!(addr.ip().is_loopback(), "{addr}");
        assert_ne!(addr.port(), 0);
        let since = d.connected_since.as_deref().unwrap();
        chrono::DateTime::parse_from_rfc3339(since).unwrap();
        assert!(since.ends_with('Z'), "{since} is UTC");
    }

    let webs = devices(&op, json!({"selector": "tag:role=web"})).await;
    assert_eq!(webs.len(), 1);
    assert_eq!(webs[0].id, "web-1");
    assert!(devices(&op, json!({"selector": "cam-*"})).await.is_empty());
    assert_eq!(devices(&op, json!({})).await.len(), 2);

    let r = op.call("$orb.devices.list", Bytes::from_static(br#"{"selector":"web-1 and"}"#), WAIT).await;
    assert_eq!(remote_code(r), ErrorCode::BadSelector);
    let r = op.call("$orb.devices.list", Bytes::from_static(b"[1]"), WAIT).await;
    assert_eq!(remote_code(r), ErrorCode::BadArgs);
}

#[tokio::test]
async fn selector_resolve_returns_matches_without_sending_anything() {
    let server = TestServer::start_with(
        |cfg| {
            cfg.groups.insert("webs".into(), "web-*".into());
        },
        |b| b,
    )
    .await;
    let calls = Arc::new(AtomicUsize::new(0));
    let mut agents = Vec::new();
    for id in ["web-1", "web-2", "db-1"] {
        let calls = Arc::clone(&calls);
        let handlers = basic_handlers().on("count", move |_c: Context| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move { Ok(json!(null)) }
        });
        agents.push(server.agent(Transport::Tcp, id, &[], handlers).await);
    }
    let op = server.operator(Transport::Ws).await;
    let resolve = |selector: &str| {
        let op = op.clone();
        let args = json!({"selector": selector});
        async move { within("the resolution", op.call_json::<_, Resolved>("$orb.selector.resolve", &args, WAIT)).await }
    };
    let r = resolve("web-1,db-*").await.unwrap();
    assert_eq!(r.selector, "web-1,db-*");
    assert_eq!(r.devices, ["db-1", "web-1"]);
    let r = resolve("group:webs  and   not web-2").await.unwrap();
    assert_eq!(r.selector, "group:webs and not web-2", "canonical, groups kept");
    assert_eq!(r.devices, ["web-1"]);
    let r = resolve("cam-*").await.unwrap();
    assert!(r.devices.is_empty(), "no match is an empty list, not an error");
    let e = resolve("group:nope").await.unwrap_err();
    assert_eq!(e.code(), Some(&ErrorCode::UnknownGroup));
    let e = resolve("web-1 and").await.unwrap_err();
    assert_eq!(e.code(), Some(&ErrorCode::BadSelector));

    // Frames on a connection are ordered: after a round trip to each agent, anything the
    // resolutions had sent would have arrived first.
    for id in ["web-1", "web-2", "db-1"] {
        op.request(id, "ping", NULL, WAIT).await.unwrap();
    }
    assert_eq!(calls.load(Ordering::SeqCst), 0);
    let info: ServerInfo = op.call_json("$orb.server.info", &json!(null), WAIT).await.unwrap();
    assert_eq!(info.jobs_in_flight, 0);
    assert_eq!((info.agents, info.operators), (3, 1));
    assert_eq!(info.version, 1);
}

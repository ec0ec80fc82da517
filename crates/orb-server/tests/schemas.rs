//! JSON Schemas of command arguments, end to end over real sockets: an `orb-client` agent
//! declares one with `Handlers::on_with_schema`; a job with good arguments runs the handler,
//! one with bad arguments ends `error` `invalid_args` naming the path and the handler never
//! runs; the server keeps the schemas with the declared commands (`$orb.devices.show`, and the
//! device list when asked); a hello with a bad schema is refused with `bad_request`.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use orb_client::{Context, Handlers, JobRequest};
use orb_proto::message::{DeviceInfo, DevicesQuery, commands};
use orb_proto::registry::DeviceDetail;
use orb_proto::{ErrorCode, Status};
use orb_testkit::{TestServer, Transport, WAIT, basic_handlers, finish_job, hello_json};
use serde_json::{Value, json};

const AGENT_TOKEN: &str = "test-agent-token-0123456789";

fn threshold_schema() -> Value {
    json!({
        "type": "object",
        "properties": {"threshold": {"type": "number"}},
        "required": ["threshold"],
        "additionalProperties": false
    })
}

/// `ping`, `echo`, and `set` with a schema, counting the calls of `set`'s handler.
fn counted_set(calls: &Arc<AtomicUsize>) -> Handlers {
    let calls = Arc::clone(calls);
    basic_handlers()
        .on_with_schema("set", threshold_schema(), move |c: Context| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move { c.args::<Value>() }
        })
        .unwrap()
}

#[tokio::test]
async fn arguments_are_checked_against_the_declared_schema_before_the_handler_runs() {
    let server = TestServer::start().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let _agent = server.agent(Transport::Tcp, "therm-1", &[], counted_set(&calls)).await;
    let op = server.operator(Transport::Tcp).await;
    let run = |args: &'static str| {
        let op = op.clone();
        async move {
            let job = JobRequest::new("therm-1", "set").args(Bytes::from_static(args.as_bytes())).deadline(WAIT);
            finish_job(op.submit(job).await.unwrap()).await
        }
    };

    let out = run(r#"{"threshold": 21.5}"#).await;
    assert_eq!(out.result("therm-1").status, Status::Ok, "{:?}", out.result("therm-1"));
    assert_eq!(calls.load(Ordering::SeqCst), 1);

    for (args, says) in [
        (r#"{"threshold": "hot"}"#, r#"set: /threshold: "hot" is not of type "number""#),
        (
            r#"{"threshold": 1, "unit": "c"}"#,
            "set: (root): Additional properties are not allowed ('unit' was unexpected)",
        ),
        ("null", r#"set: (root): null is not of type "object""#),
    ] {
        let out = run(args).await;
        let r = out.result("therm-1");
        assert_eq!(r.status, Status::Error, "{args}: {r:?}");
        let e = r.error.as_ref().unwrap();
        assert_eq!(e.code, ErrorCode::InvalidArgs, "{args}: {e:?}");
        assert_eq!(e.message, says, "{args}");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the handler never ran for refused arguments");

    // A command without a schema still takes anything.
    let out = finish_job(
        op.submit(JobRequest::new("therm-1", "echo").args(Bytes::from_static(b"[1]")).deadline(WAIT)).await.unwrap(),
    )
    .await;
    assert_eq!(out.result("therm-1").status, Status::Ok);
}

#[tokio::test]
async fn the_server_keeps_declared_schemas_with_the_commands() {
    let server = TestServer::start().await;
    let calls = Arc::new(AtomicUsize::new(0));
    let _agent = server.agent(Transport::Ws, "therm-1", &[], counted_set(&calls)).await;
    let _plain = server.agent(Transport::Tcp, "plain-1", &[], basic_handlers()).await;
    let op = server.operator(Transport::Tcp).await;

    let shown: DeviceDetail = op.call_json(commands::DEVICES_SHOW, &json!({"id": "therm-1"}), WAIT).await.unwrap();
    assert_eq!(shown.commands, ["echo", "ping", "set"]);
    assert_eq!(shown.schemas.len(), 1);
    assert_eq!(shown.schemas["set"], threshold_schema());

    let list = |schemas: bool| {
        let op = op.clone();
        async move {
            let q = DevicesQuery { selector: None, connected: false, schemas };
            let devices: Vec<DeviceInfo> = op.call_json(commands::DEVICES_LIST, &q, WAIT).await.unwrap();
            devices
        }
    };
    let without = list(false).await;
    assert!(without.iter().all(|d| d.schemas.is_empty()), "left out unless asked: {without:?}");
    let with = list(true).await;
    let therm = with.iter().find(|d| d.id == "therm-1").unwrap();
    assert_eq!(therm.schemas["set"], threshold_schema());
    assert!(with.iter().find(|d| d.id == "plain-1").unwrap().schemas.is_empty());
}

/// Sends `hello` as the first frame over raw TCP; returns the `error` frame's code and message
/// after checking that the server closes the connection.
async fn refused(server: &TestServer, hello: Value) -> (String, String) {
    let mut raw = server.raw_tcp().await;
    raw.send_frame(hello.to_string().as_bytes()).await.unwrap();
    let f = raw.read_json().await.expect("an error frame before the close");
    assert_eq!(f["kind"], "error", "{f}");
    raw.expect_closed().await;
    (f["error"]["code"].as_str().unwrap().to_owned(), f["error"]["message"].as_str().unwrap().to_owned())
}

fn hello_with(commands: &[&str], schemas: Value) -> Value {
    let mut h = hello_json("agent", AGENT_TOKEN, Some("sch-1"));
    h["body"]["commands"] = json!(commands);
    h["body"]["schemas"] = schemas;
    h
}

#[tokio::test]
async fn a_hello_with_a_bad_schema_is_refused_naming_the_command() {
    let server = TestServer::start().await;
    let cases = [
        (
            hello_with(&["ping"], json!({"reboot": {}})),
            "hello schema for 'reboot': the command is not among the declared commands",
        ),
        (hello_with(&["set"], json!({"set": {"type": 3}})), "hello schema for 'set' is not a valid JSON Schema: "),
        (hello_with(&["set"], json!({"set": [1]})), "hello schema for 'set' is not a JSON object or boolean"),
        (
            hello_with(&["set"], json!({"set": {"$ref": "http://127.0.0.1:9/s.json"}})),
            "hello schema for 'set' is not a valid JSON Schema",
        ),
        (
            hello_with(
                &["set"],
                json!({"set": {"description": "x".repeat(orb_proto::message::MAX_HELLO_SCHEMA_BYTES)}}),
            ),
            "hello schemas are",
        ),
    ];
    for (hello, says) in cases {
        let (code, message) = refused(&server, hello).await;
        assert_eq!(code, "bad_request", "{message}");
        assert!(message.starts_with(says), "{message:?} does not start with {says:?}");
    }
    // Nothing was registered by the refused hellos, and a good one is welcome.
    let op = server.operator(Transport::Tcp).await;
    let e = op.call_json::<_, DeviceDetail>(commands::DEVICES_SHOW, &json!({"id": "sch-1"}), WAIT).await.unwrap_err();
    assert_eq!(e.code(), Some(&ErrorCode::DeviceNotFound), "{e}");
    let mut raw = server.raw_tcp().await;
    raw.send_frame(hello_with(&["set"], json!({"set": threshold_schema()})).to_string().as_bytes()).await.unwrap();
    let f = raw.read_json().await.unwrap();
    assert_eq!(f["kind"], "welcome", "{f}");
}

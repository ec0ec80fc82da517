//! The MessagePack envelope codec, negotiated in `hello`: JSON and MessagePack peers on one server
//! exchange jobs, requests, server commands and goodbyes, with bodies arriving byte for byte either
//! way; the handshake itself stays JSON; a client that asks for nothing, or for a codec the server
//! lacks, gets JSON (and the v1 welcome).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use orb_client::{Client, ClientError, Codec, Context, Handlers, JobRequest};
use orb_proto::{Envelope, ErrorCode, Kind, Status};
use orb_testkit::{RawTcp, TestServer, Transport, WAIT, basic_handlers, finish_job, hello_json, within};
use serde_json::{Value, json};

/// `ping`/`echo`, plus `whoami` (the command as the agent saw it, without its own id), `raw`
/// (the exact argument bytes received) and `refuse` (always an error).
fn handlers() -> Handlers {
    basic_handlers()
        .on("refuse", |_c: Context| async move { Err(orb_proto::ErrorBody::new(ErrorCode::Forbidden, "never")) })
        .on("whoami", |c: Context| async move {
            Ok(json!({"args": String::from_utf8_lossy(&c.args), "job": c.job, "from": c.from}))
        })
        .on("raw", |c: Context| async move { Ok(json!({"raw": String::from_utf8_lossy(&c.args)})) })
}

async fn agent(server: &TestServer, transport: Transport, id: &str, codec: Codec) -> Client {
    let mut cfg = server.agent_config(transport, id);
    cfg.codec = codec;
    let c = within("an agent's handshake", Client::connect(cfg, handlers())).await.expect("agent connects");
    assert_eq!(c.codec(), codec, "{id}");
    assert_eq!(c.welcome().codec, codec.as_str(), "{id}: welcome.codec names the codec in use");
    c
}

async fn operator(server: &TestServer, transport: Transport, codec: Codec) -> Client {
    let mut cfg = server.operator_config(transport);
    cfg.codec = codec;
    let c = within("an operator's handshake", Client::connect(cfg, Handlers::new())).await.expect("operator connects");
    assert_eq!(c.codec(), codec);
    c
}

/// Odd spacing, key order, number spelling and non-ASCII text: what must survive every hop.
const ARGS: &str = r#"{ "z" : 1.50,"a":[1 ,2],  "s":"é\u00e9" }"#;

#[tokio::test]
async fn msgpack_and_json_agents_in_one_job_answer_identically() {
    let server = TestServer::start().await;
    let _mp_tcp = agent(&server, Transport::Tcp, "mp-1", Codec::MsgPack).await;
    let _mp_ws = agent(&server, Transport::Ws, "mp-2", Codec::MsgPack).await;
    let _js_tcp = agent(&server, Transport::Tcp, "js-1", Codec::Json).await;
    let _js_ws = agent(&server, Transport::Ws, "js-2", Codec::Json).await;
    server.wait_for_agents(4).await;
    let all = ["js-1", "js-2", "mp-1", "mp-2"];

    for op_codec in [Codec::Json, Codec::MsgPack] {
        let op = operator(&server, Transport::Tcp, op_codec).await;
        let job = within(
            "the ack",
            op.submit(JobRequest::new("mp-*,js-*", "whoami").args(Bytes::from_static(ARGS.as_bytes())).deadline(WAIT)),
        )
        .await
        .unwrap();
        assert_eq!(job.accepted.targets, all);
        let job_id = job.id().to_owned();
        let out = finish_job(job).await;
        assert_eq!(out.count(Status::Ok), 4, "{op_codec}: {:?}", out.results);
        let expected = json!({"args": ARGS, "job": job_id, "from": op.welcome().id});
        for id in all {
            assert_eq!(out.ok_json(id), expected, "{op_codec} operator, agent {id}");
        }
        // The results themselves are byte-identical whichever codec carried them.
        let raw = |id: &str| out.result(id).result.as_ref().unwrap().get().to_owned();
        assert!(all.iter().all(|id| raw(id) == raw("js-1")), "{:?}", out.results);
    }
}

#[tokio::test]
async fn a_msgpack_operator_runs_a_job_on_json_agents() {
    let server = TestServer::start().await;
    let mut agents = Vec::new();
    for i in 1..=3 {
        let transport = if i == 2 { Transport::Ws } else { Transport::Tcp };
        agents.push(agent(&server, transport, &format!("web-{i}"), Codec::Json).await);
    }
    server.wait_for_agents(3).await;
    for transport in [Transport::Tcp, Transport::Ws] {
        let op = operator(&server, transport, Codec::MsgPack).await;
        let job = op
            .submit(JobRequest::new("web-*", "raw").args(Bytes::from_static(ARGS.as_bytes())).deadline(WAIT))
            .await
            .unwrap();
        let out = finish_job(job).await;
        assert_eq!(out.count(Status::Ok), 3);
        for i in 1..=3 {
            assert_eq!(out.ok_json(&format!("web-{i}")), json!({"raw": ARGS}));
        }
        // Per-target errors and a timeout reach a MsgPack requester too.
        let job = op
            .submit(JobRequest::new("web-1", "refuse").args(Bytes::from_static(b"null")).deadline(WAIT))
            .await
            .unwrap();
        assert_eq!(finish_job(job).await.error_code("web-1"), "forbidden");
    }
}

#[tokio::test]
async fn plain_requests_cross_codecs_both_ways() {
    let server = TestServer::start().await;
    let _js = agent(&server, Transport::Tcp, "js-1", Codec::Json).await;
    let _mp = agent(&server, Transport::Ws, "mp-1", Codec::MsgPack).await;
    for (op_codec, device) in [(Codec::MsgPack, "js-1"), (Codec::Json, "mp-1"), (Codec::MsgPack, "mp-1")] {
        let op = operator(&server, Transport::Tcp, op_codec).await;
        let what = format!("{op_codec} operator to {device}");
        let res = within("a reply", op.request(device, "raw", Bytes::from_static(ARGS.as_bytes()), WAIT)).await;
        let res: Value = serde_json::from_slice(&res.unwrap()).unwrap();
        assert_eq!(res, json!({"raw": ARGS}), "{what}");
        let res = op.request(device, "echo", Bytes::from_static(b"[1, {\"b\": null}]"), WAIT).await.unwrap();
        assert_eq!(&res[..], b"[1,{\"b\":null}]", "{what}: the agent's result, as it encoded it");
        match op.request(device, "reboot", Bytes::from_static(b"null"), WAIT).await {
            Err(ClientError::Remote(e)) => assert_eq!(e.code, ErrorCode::UnknownCommand, "{what}"),
            other => panic!("{what}: expected unknown_command, got {other:?}"),
        }
        // Errors the server makes up itself are encoded for the requester as well.
        match op.request("nobody", "ping", Bytes::from_static(b"null"), WAIT).await {
            Err(ClientError::Remote(e)) => assert_eq!(e.code, ErrorCode::DeviceOffline, "{what}"),
            other => panic!("{what}: expected device_offline, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn server_commands_and_queries_answer_in_msgpack() {
    let server =
        TestServer::start_with(|_| {}, |b| b.handler("time.now", |_c: Context| async { Ok(json!({"unix": 7})) })).await;
    let mp = agent(&server, Transport::Tcp, "mp-1", Codec::MsgPack).await;
    let op = operator(&server, Transport::Ws, Codec::MsgPack).await;
    let res = op.call("time.now", Bytes::from_static(b"null"), WAIT).await.unwrap();
    assert_eq!(&res[..], br#"{"unix":7}"#);
    let info: Value = op.call_json("$orb.server.info", &Value::Null, WAIT).await.unwrap();
    assert_eq!(info["agents"], 1);
    let listed: Value = op.call_json("$orb.devices.list", &json!({"selector": "mp-*"}), WAIT).await.unwrap();
    assert_eq!(listed[0]["id"], "mp-1");
    // An agent calling the server: the handler's reply comes back in its codec.
    let res = mp.call("time.now", Bytes::from_static(b"null"), WAIT).await.unwrap();
    assert_eq!(&res[..], br#"{"unix":7}"#);
}

#[tokio::test]
async fn the_server_says_goodbye_in_the_sessions_codec() {
    let server = TestServer::start().await;
    let mp = agent(&server, Transport::Tcp, "mp-1", Codec::MsgPack).await;
    let js = agent(&server, Transport::Tcp, "js-1", Codec::Json).await;
    server.wait_for_agents(2).await;
    within("the shutdown", server.server.shutdown()).await;
    for c in [&mp, &js] {
        // The bye was decoded (reason and hint read from its body), not rejected as a bad frame.
        assert_eq!(within("the close", c.closed()).await, "server_shutdown", "{}", c.codec());
        assert_eq!(c.reconnect_hint(), Some(Duration::from_millis(1000)), "{}", c.codec());
    }
}

/// A hand-framed client: JSON hello offering `codecs` (absent when `None`); returns the welcome.
async fn raw_hello(server: &TestServer, id: &str, codecs: Option<&[&str]>) -> (RawTcp, Value) {
    let mut raw = server.raw_tcp().await;
    let mut hello = hello_json("agent", server.server.agent_token().expose(), Some(id));
    if let Some(c) = codecs {
        hello["body"]["codecs"] = json!(c);
    }
    raw.send_json(&hello).await.unwrap();
    let welcome = raw.read_json().await.expect("a JSON welcome");
    assert_eq!(welcome["kind"], "welcome", "{welcome}");
    (raw, welcome)
}

async fn read_msgpack(raw: &mut RawTcp) -> Envelope {
    let f = raw.read_frame().await.unwrap().expect("a frame");
    Codec::MsgPack.decode(&Bytes::from(f)).expect("a MessagePack envelope")
}

fn msgpack_ping(id: &str) -> Bytes {
    let mut ping = Envelope::new(Kind::Ping);
    ping.id = Some(id.into());
    Codec::MsgPack.encode(&ping)
}

#[tokio::test]
async fn a_client_that_asks_for_no_codec_or_an_unknown_one_gets_json() {
    let server = TestServer::start().await;
    // No `codecs` (a v1 client): the welcome has no `codec` field at all, and frames stay JSON.
    let (mut raw, welcome) = raw_hello(&server, "old-1", None).await;
    assert!(welcome["body"].get("codec").is_none(), "v1 welcome unchanged: {welcome}");
    raw.send_json(&json!({"kind": "ping", "id": "p1"})).await.unwrap();
    assert_eq!(raw.read_json().await.unwrap(), json!({"kind": "pong", "re": "p1"}));

    // Only codecs this server does not speak: JSON, and the welcome says so.
    let (mut raw, welcome) = raw_hello(&server, "new-1", Some(&["cbor", "zstd+msgpack"])).await;
    assert_eq!(welcome["body"]["codec"], "json", "{welcome}");
    raw.send_json(&json!({"kind": "ping", "id": "p2"})).await.unwrap();
    assert_eq!(raw.read_json().await.unwrap(), json!({"kind": "pong", "re": "p2"}));

    // The first codec listed that the server speaks wins, in the client's order.
    let (_raw, welcome) = raw_hello(&server, "new-2", Some(&["json", "msgpack"])).await;
    assert_eq!(welcome["body"]["codec"], "json");
    let (_raw, welcome) = raw_hello(&server, "new-3", Some(&["cbor", "msgpack", "json"])).await;
    assert_eq!(welcome["body"]["codec"], "msgpack");

    // Through the client library: the default config asks for JSON.
    let c = Client::connect(server.agent_config(Transport::Ws, "lib-1"), handlers()).await.unwrap();
    assert_eq!((c.codec(), c.welcome().codec.as_str()), (Codec::Json, "json"));
}

#[tokio::test]
async fn after_a_msgpack_welcome_every_frame_is_msgpack_and_json_is_a_bad_frame() {
    let server = TestServer::start().await;
    let (mut raw, welcome) = raw_hello(&server, "mp-raw", Some(&["msgpack", "json"])).await;
    assert_eq!(welcome["body"]["codec"], "msgpack", "{welcome}");
    raw.send_frame(&msgpack_ping("p1")).await.unwrap();
    let pong = read_msgpack(&mut raw).await;
    assert_eq!((pong.kind, pong.re.as_deref()), (Kind::Pong, Some("p1")));

    // A request to this agent arrives as MessagePack with the body as a bin of the JSON bytes.
    let op = operator(&server, Transport::Tcp, Codec::Json).await;
    let request =
        tokio::spawn(async move { op.request("mp-raw", "echo", Bytes::from_static(ARGS.as_bytes()), WAIT).await });
    let cmd = read_msgpack(&mut raw).await;
    assert_eq!(cmd.kind, Kind::Cmd);
    assert_eq!(cmd.body.as_deref(), Some(ARGS.as_bytes()), "body relayed byte for byte");
    let reply = Envelope::reply_ok(cmd.id.unwrap(), Bytes::from_static(b"{\"echoed\" : true}"));
    raw.send_frame(&Codec::MsgPack.encode(&reply)).await.unwrap();
    let res = within("the relayed reply", request).await.unwrap().unwrap();
    assert_eq!(&res[..], b"{\"echoed\" : true}", "the MessagePack agent's body reaches the JSON operator verbatim");

    // A kind only the server sends is refused in MessagePack, and the session stays open.
    let mut config = Envelope::new(Kind::Config);
    config.id = Some("s1".into());
    raw.send_frame(&Codec::MsgPack.encode(&config)).await.unwrap();
    let e = read_msgpack(&mut raw).await;
    assert_eq!((e.kind, e.re.as_deref()), (Kind::Error, Some("s1")));
    assert_eq!(e.error.unwrap().code, ErrorCode::BadRequest);

    // A body that is not JSON would corrupt a JSON peer's frame: refused as a bad frame.
    let mut f = Codec::MsgPack.encode(&reply).to_vec();
    let at = f.len() - 3;
    f[at] = b'{';
    raw.send_frame(&f).await.unwrap();
    let e = read_msgpack(&mut raw).await;
    assert_eq!(e.error.unwrap().code, ErrorCode::BadFrame);
    raw.expect_closed().await;

    // A JSON frame on a MessagePack session is a bad frame too; the refusal is MessagePack.
    let (mut raw, _) = raw_hello(&server, "mp-raw-2", Some(&["msgpack"])).await;
    raw.send_json(&json!({"kind": "ping", "id": "p2"})).await.unwrap();
    let e = read_msgpack(&mut raw).await;
    assert_eq!((e.kind, e.error.map(|e| e.code)), (Kind::Error, Some(ErrorCode::BadFrame)));
    raw.expect_closed().await;
    server.wait_for_agents(0).await;
}

#[tokio::test]
async fn the_hello_is_json_even_when_msgpack_is_wanted() {
    let server = TestServer::start().await;
    let mut raw = server.raw_tcp().await;
    let mut hello = Envelope::new(Kind::Hello);
    hello.body = Some(Bytes::from(
        serde_json::to_vec(&json!({"version": 1, "role": "agent", "token": server.server.agent_token().expose(),
            "id": "early-1", "codecs": ["msgpack"]}))
        .unwrap(),
    ));
    raw.send_frame(&Codec::MsgPack.encode(&hello)).await.unwrap();
    assert_eq!(raw.expect_error().await, "bad_frame", "handshake refusals are JSON");
    raw.expect_closed().await;
}

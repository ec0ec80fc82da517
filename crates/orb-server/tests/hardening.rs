//! Faults a hostile test and a read of the code found, each with the test that failed before its
//! fix: bodies that poison the history, HTTP connections that never finish, pipelined bursts cut
//! off as slow consumers, memory bounded in frames but not bytes, commands left queued for a
//! closed session, forwarded frames above the frame limit, unbounded hellos and enrollments,
//! error messages echoing megabytes, and a health check that said too much.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use orb_client::{ClientError, Context, Handlers, JobRequest};
use orb_proto::Status;
use orb_proto::history::{JobDetail, JobInfo};
use orb_proto::message::commands;
use orb_testkit::{RawTcp, TestServer, Transport, WAIT, basic_handlers, call, finish_job, hello_json, within};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const NULL: Bytes = Bytes::from_static(b"null");

/// Reads the next `cmd` a hand-driven agent receives; returns its id.
async fn next_cmd_id(raw: &mut RawTcp) -> String {
    for _ in 0..100 {
        let f = raw.read_json().await.expect("a frame");
        if f["kind"] == "cmd" {
            return f["id"].as_str().unwrap().to_owned();
        }
    }
    panic!("no command arrived");
}

#[tokio::test]
async fn results_that_break_the_body_limits_are_refused_and_the_history_stays_readable() {
    let server = TestServer::start().await;
    let mut raw = server.raw_agent("poison-1").await;
    let op = server.operator(Transport::Tcp).await;
    let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let lone_surrogate = r#"{"s":"\ud800"}"#.to_owned();
    let mut jobs = Vec::new();
    for body in [deep, lone_surrogate] {
        let job = within("ack", op.submit(JobRequest::new("poison-1", "x").args(NULL).deadline(WAIT))).await.unwrap();
        let re = next_cmd_id(&mut raw).await;
        raw.send_frame(format!(r#"{{"kind":"reply","re":"{re}","body":{body}}}"#).as_bytes()).await.unwrap();
        let out = finish_job(job).await;
        assert_eq!(out.result("poison-1").status, Status::Error);
        assert_eq!(out.error_code("poison-1"), "bad_body");
        jobs.push(out.accepted.job);
    }
    for id in &jobs {
        let d: JobDetail = call(&op, commands::JOBS_SHOW, json!({"id": id})).await;
        assert_eq!(d.results[0].error.as_ref().unwrap().code.as_str(), "bad_body");
    }
    let list: Vec<JobInfo> = call(&op, commands::JOBS_LIST, json!({})).await;
    assert_eq!(list.len(), 2);
    // The session that sent them is still up.
    raw.send_json(&json!({"kind": "ping", "id": "p"})).await.unwrap();
    for _ in 0..10 {
        if raw.read_json().await.unwrap()["kind"] == "pong" {
            return;
        }
    }
    panic!("no pong");
}

#[tokio::test]
async fn arguments_that_break_the_body_limits_are_refused_before_anything_is_sent() {
    let server = TestServer::start().await;
    let _a = server.agent(Transport::Tcp, "a-1", &[], basic_handlers()).await;
    let op = server.operator(Transport::Tcp).await;
    let deep = Bytes::from(format!("{}{}", "[".repeat(100), "]".repeat(100)));
    match within("the refusal", op.submit(JobRequest::new("a-1", "echo").args(deep.clone()).deadline(WAIT))).await {
        Err(ClientError::Remote(e)) => assert_eq!(e.code.as_str(), "bad_body"),
        other => panic!("expected bad_body, got {:?}", other.map(|j| j.accepted.clone())),
    }
    match within("the refusal", op.request("a-1", "echo", deep, WAIT)).await {
        Err(ClientError::Remote(e)) => assert_eq!(e.code.as_str(), "bad_body"),
        other => panic!("expected bad_body, got {other:?}"),
    }
    let list: Vec<JobInfo> = call(&op, commands::JOBS_LIST, json!({})).await;
    assert!(list.is_empty(), "nothing was stored");
}

/// Reads until the server closes the connection; panics if it does not within [`WAIT`].
async fn closed_by_server(s: &mut TcpStream) {
    let mut buf = [0u8; 4096];
    for _ in 0..1000 {
        match within("the server to close the connection", s.read(&mut buf)).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
    panic!("the server kept sending");
}

#[tokio::test]
async fn http_connections_that_never_finish_a_request_are_timed_out_and_count_against_the_limits() {
    let server = TestServer::start_with(
        |c| {
            c.limits.handshake_timeout = Duration::from_millis(300);
            c.limits.max_connections_per_ip = 3;
        },
        |b| b,
    )
    .await;
    let http = server.server.http_addr();
    let mut silent = TcpStream::connect(http).await.unwrap();
    let mut half = TcpStream::connect(http).await.unwrap();
    half.write_all(b"GET /healthz HTTP/1.1\r\nHost: orb\r\n").await.unwrap();
    let mut idle = TcpStream::connect(http).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: orb\r\n\r\n").await.unwrap();
    let mut response = [0u8; 512];
    let n = within("a response", idle.read(&mut response)).await.unwrap();
    assert!(response[..n].starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&response[..n]));

    // The three hold the address's places: the agent port refuses a fourth connection.
    let mut refused = server.raw_tcp().await;
    assert_eq!(refused.expect_error().await, "too_many_connections");
    // And the HTTP port answers a fourth with 503.
    let mut over = TcpStream::connect(http).await.unwrap();
    let n = within("a refusal", over.read(&mut response)).await.unwrap();
    assert!(response[..n].starts_with(b"HTTP/1.1 503"), "{}", String::from_utf8_lossy(&response[..n]));

    // None of them finishes a request in time: each is closed.
    for s in [&mut silent, &mut half, &mut idle] {
        closed_by_server(s).await;
    }
    // Their places are free again (released as each connection ends).
    for attempt in 0..100 {
        let mut raw = server.raw_tcp().await;
        raw.send_json(&hello_json("agent", server.server.agent_token().expose(), Some("late-1"))).await.unwrap();
        let answer = raw.read_json().await.unwrap();
        if answer["kind"] == "welcome" {
            return;
        }
        assert_eq!(answer["error"]["code"], "too_many_connections", "{answer}");
        assert!(attempt < 99, "the places were never released");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_client_that_pipelines_a_burst_while_reading_gets_every_answer() {
    const BURST: usize = 3000;
    let server = TestServer::start_with(
        |c| c.limits.outbound_queue = 16,
        |b| b.handler("double", |c: Context| async move { Ok(json!(c.args::<u64>()? * 2)) }),
    )
    .await;
    let mut raw = server.raw_tcp().await;
    raw.send_json(&hello_json("operator", server.server.admin_token().expose(), None)).await.unwrap();
    assert_eq!(raw.read_json().await.unwrap()["kind"], "welcome");
    let mut burst = Vec::new();
    for i in 0..BURST {
        let f = json!({"kind": "cmd", "id": i.to_string(), "cmd": "double", "body": i}).to_string();
        burst.extend_from_slice(&u32::try_from(f.len()).unwrap().to_be_bytes());
        burst.extend_from_slice(f.as_bytes());
    }
    raw.write_raw(&burst).await.unwrap();
    let mut answered = vec![false; BURST];
    for _ in 0..BURST {
        let f = raw.read_json().await.expect("an answer, not a close");
        assert_eq!(f["kind"], "reply", "{f}");
        let i: usize = f["re"].as_str().unwrap().parse().unwrap();
        assert_eq!(f["body"], json!(i * 2));
        assert!(!answered[i], "answered twice: {i}");
        answered[i] = true;
    }
    assert!(answered.iter().all(|a| *a));
}

#[tokio::test]
async fn a_device_that_stops_reading_is_closed_once_its_queue_holds_the_byte_limit() {
    let server = TestServer::start_with(
        |c| {
            c.limits.outbound_queue_bytes = 256 * 1024;
            c.limits.max_frame = 128 * 1024;
        },
        |b| b,
    )
    .await;
    // Connected with a 4 KiB receive buffer, and never reads.
    let mut stopped = server.raw_agent("stopped-1").await;
    let op = server.operator(Transport::Tcp).await;
    let body = Bytes::from(format!("\"{}\"", "x".repeat(100 * 1024)));
    let mut offline = 0;
    for _ in 0..40 {
        match within("the request", op.request("stopped-1", "echo", body.clone(), Duration::from_millis(50))).await {
            Err(ClientError::Remote(e)) if e.code.as_str() == "device_offline" => {
                offline += 1;
                break;
            }
            Err(ClientError::Remote(e)) => assert_eq!(e.code.as_str(), "timeout"),
            Err(ClientError::Timeout(_)) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(offline, 1, "the device was closed long before 40 × 100 KiB were queued");
    let mut last = Value::Null;
    while let Ok(Some(f)) = stopped.read_frame().await {
        last = serde_json::from_slice(&f).unwrap_or(Value::Null);
    }
    assert_eq!(last["body"]["reason"], "slow_consumer", "the last frame says why: {last}");
}

#[tokio::test]
async fn a_requester_that_does_not_read_a_big_job_gets_lagged_and_the_results_are_stored() {
    const AGENTS: usize = 40;
    let server = TestServer::start_with(
        |c| {
            c.limits.job_buffer_bytes = 64 * 1024;
            c.limits.outbound_queue = 4;
        },
        |b| b,
    )
    .await;
    let big = Handlers::new().on("big", |_c: Context| async move { Ok(json!("y".repeat(200 * 1024))) });
    let mut agents = Vec::new();
    for i in 0..AGENTS {
        agents.push(server.agent(Transport::Tcp, &format!("big-{i}"), &[], big.clone()).await);
    }
    // A hand-driven operator with a 4 KiB receive buffer that reads nothing until the job ends.
    let mut op = RawTcp::connect_small_buffer(server.server.tcp_addr()).await;
    op.send_json(&hello_json("operator", server.server.admin_token().expose(), None)).await.unwrap();
    assert_eq!(op.read_json().await.unwrap()["kind"], "welcome");
    op.send_json(&json!({"kind": "cmd", "id": "j", "cmd": "big", "target": "big-*", "deadline_ms": 10_000}))
        .await
        .unwrap();
    // The results are megabytes: read them as the CLI does, accepting large answers.
    let mut cfg = server.operator_config(Transport::Tcp);
    cfg.max_frame = 64 * 1024 * 1024;
    let reader = orb_client::Client::connect(cfg, Handlers::new()).await.unwrap();
    let list: Vec<JobInfo> = call(&reader, commands::JOBS_LIST, json!({})).await;
    let job = list[0].id.clone();
    for _ in 0..500 {
        let d: JobDetail = call(&reader, commands::JOBS_SHOW, json!({"id": job})).await;
        if d.results.len() == AGENTS {
            assert!(d.results.iter().all(|r| r.status == Status::Ok), "every result is stored");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Now it reads: some events, then the reply that says it lagged.
    let mut events = 0;
    loop {
        let f = op.read_json().await.expect("frames, then the end of the job");
        match f["kind"].as_str().unwrap() {
            "ack" => {}
            "event" => events += 1,
            "reply" => {
                assert_eq!(f["error"]["code"], "lagged", "{f}");
                assert_eq!(f["job"], job.as_str());
                break;
            }
            other => panic!("unexpected {other}: {f}"),
        }
    }
    assert!(events < AGENTS, "the stream was cut: {events} events");
}

#[tokio::test]
async fn jobs_in_flight_per_requester_are_limited() {
    let server = TestServer::start_with(|c| c.limits.max_inflight_jobs = 2, |b| b).await;
    let hang = Handlers::new().on("hang", |_c: Context| std::future::pending());
    let _a = server.agent(Transport::Tcp, "h-1", &[], hang).await;
    let op = server.operator(Transport::Tcp).await;
    let _j1 = op.submit(JobRequest::new("h-1", "hang").args(NULL).deadline(WAIT)).await.unwrap();
    let _j2 = op.submit(JobRequest::new("h-1", "hang").args(NULL).deadline(WAIT)).await.unwrap();
    match op.submit(JobRequest::new("h-1", "hang").args(NULL).deadline(WAIT)).await {
        Err(ClientError::Remote(e)) => assert_eq!(e.code.as_str(), "too_many_jobs"),
        other => panic!("expected too_many_jobs, got {:?}", other.map(|j| j.accepted.clone())),
    }
    // Another requester has its own quota.
    let other = server.operator(Transport::Tcp).await;
    assert!(other.submit(JobRequest::new("h-1", "hang").args(NULL).deadline(WAIT)).await.is_ok());
}

#[tokio::test]
async fn a_second_server_on_the_same_sqlite_database_does_not_start_nor_end_the_first_ones_jobs() {
    let first = TestServer::start().await;
    let hang = Handlers::new().on("hang", |_c: Context| std::future::pending());
    let _a = first.agent(Transport::Tcp, "h-1", &[], hang).await;
    let op = first.operator(Transport::Tcp).await;
    let job = op.submit(JobRequest::new("h-1", "hang").args(NULL).deadline(WAIT)).await.unwrap();
    let db = first.data.path().join("orb.db");
    let other = tempfile::tempdir().unwrap();
    let mut cfg = orb_server::ServerConfig::for_tests(other.path().to_path_buf());
    cfg.store.url = Some(format!("sqlite:{}", db.display()));
    let err = orb_server::ServerBuilder::new(cfg).start().await.err().expect("refused");
    assert!(err.to_string().contains("another orb server"), "{err}");
    let d: JobDetail = call(&op, commands::JOBS_SHOW, json!({"id": job.id()})).await;
    assert_eq!(d.job.state, orb_proto::history::JobPhase::Running, "the first server's job runs on");
}

#[tokio::test]
async fn servers_sharing_a_postgres_store_end_only_their_own_nodes_jobs_at_start() {
    let Some(db) = orb_store::testkit::TempPostgres::create().await else {
        eprintln!("skipped: {} is not set", orb_store::testkit::POSTGRES_URL_VAR);
        return;
    };
    let orb_store::StoreUrl::Postgres(url) = db.url() else { panic!("a postgres url") };
    let first = TestServer::start_with(|c| c.store.url = Some(url.clone()), |b| b).await;
    let hang = Handlers::new().on("hang", |_c: Context| std::future::pending());
    let _a = first.agent(Transport::Tcp, "h-1", &[], hang).await;
    let op = first.operator(Transport::Tcp).await;
    let job = op.submit(JobRequest::new("h-1", "hang").args(NULL).deadline(WAIT)).await.unwrap();
    // A second server (its own data folder, so its own node id) on the same database.
    let second = TestServer::start_with(|c| c.store.url = Some(url.clone()), |b| b).await;
    let d: JobDetail = call(&op, commands::JOBS_SHOW, json!({"id": job.id()})).await;
    assert_eq!(d.job.state, orb_proto::history::JobPhase::Running, "the first server's job runs on");
    // The second refuses to cancel a job another node runs.
    let op2 = second.operator(Transport::Tcp).await;
    let code = orb_testkit::refused(&op2, commands::JOBS_CANCEL, json!({"id": job.id()})).await;
    assert_eq!(code.as_str(), "wrong_node");
    second.server.drain(Duration::from_millis(100)).await;
    first.server.drain(Duration::from_millis(100)).await;
    db.drop_db().await;
}

#[tokio::test]
async fn a_command_still_queued_when_its_device_disconnects_is_offline_at_once() {
    let server = TestServer::start_with(
        |c| {
            c.limits.max_frame = 512 * 1024;
            c.limits.outbound_queue_bytes = 64 * 1024 * 1024;
        },
        |b| b,
    )
    .await;
    // A device with a 4 KiB receive buffer that never reads: the server's writes to it stall.
    let stalled = server.raw_agent("stall-1").await;
    // A hand-driven operator, so its frames reach the server in this order: requests that fill
    // the device's socket buffers and queue, then the job, whose command queues behind them.
    let mut op = server.operator_stalling("stall-1").await;
    op.send_json(&json!({"kind": "cmd", "id": "job", "cmd": "ping", "target": "stall-1", "deadline_ms": 60_000}))
        .await
        .unwrap();
    let started = tokio::time::Instant::now();
    let mut acked = false;
    for _ in 0..100 {
        let f = op.read_json().await.expect("a frame");
        if f["kind"] == "ack" {
            acked = true;
            break;
        }
    }
    assert!(acked, "the job was accepted");
    drop(stalled);
    let event = loop {
        let f = op.read_json().await.expect("the job's event");
        if f["kind"] == "event" {
            break f;
        }
    };
    assert_eq!(event["status"], "offline", "{event}");
    assert!(event.get("elapsed_ms").is_none(), "nothing was delivered, nothing timed: {event}");
    assert!(started.elapsed() < Duration::from_secs(30), "not at the deadline");
}

#[tokio::test]
async fn a_forwarded_frame_above_the_frame_limit_is_refused_up_front() {
    const MAX: usize = 64 * 1024;
    let server = TestServer::start_with(|c| c.limits.max_frame = MAX, |b| b).await;
    let mut device = server.raw_agent("f-1").await;
    let op = server.operator(Transport::Tcp).await;
    // Arguments that fit the operator's frame (about 75 bytes more) but not the command the
    // server would forward (about 105 bytes more: its id, `from`, ...).
    let args = Bytes::from(format!("\"{}\"", "x".repeat(MAX - 92)));
    match within("the refusal", op.request("f-1", "echo", args.clone(), WAIT)).await {
        Err(ClientError::Remote(e)) => assert_eq!(e.code.as_str(), "frame_too_large"),
        other => panic!("expected frame_too_large, got {other:?}"),
    }
    match within("the refusal", op.submit(JobRequest::new("f-1", "echo").args(args).deadline(WAIT))).await {
        Err(ClientError::Remote(e)) => assert_eq!(e.code.as_str(), "frame_too_large"),
        other => panic!("expected frame_too_large, got {:?}", other.map(|j| j.accepted.clone())),
    }
    // A result that fits the device's frame but not the event that would carry it to the
    // requester (with the job id, the device, the status) is refused, the same in the event, the
    // summary and the history.
    let job = within("ack", op.submit(JobRequest::new("f-1", "big").args(NULL).deadline(WAIT))).await.unwrap();
    let re = next_cmd_id(&mut device).await;
    let result = format!("\"{}\"", "y".repeat(MAX - 100));
    device.send_frame(format!(r#"{{"kind":"reply","re":"{re}","body":{result}}}"#).as_bytes()).await.unwrap();
    let out = finish_job(job).await;
    assert_eq!(out.error_code("f-1"), "frame_too_large");
    // And the same for a plain request's reply.
    let request = tokio::spawn({
        let op = op.clone();
        async move { op.request("f-1", "echo", NULL, WAIT).await }
    });
    let re = next_cmd_id(&mut device).await;
    device.send_frame(format!(r#"{{"kind":"reply","re":"{re}","body":{result}}}"#).as_bytes()).await.unwrap();
    match within("the relayed answer", request).await.unwrap() {
        Err(ClientError::Remote(e)) => assert_eq!(e.code.as_str(), "frame_too_large"),
        other => panic!("expected frame_too_large, got {other:?}"),
    }
    // Both sessions are still up.
    assert!(op.call_json::<_, Value>(commands::SERVER_INFO, &json!(null), WAIT).await.is_ok());
    device.send_json(&json!({"kind": "ping", "id": "p"})).await.unwrap();
}

#[tokio::test]
async fn a_hello_is_held_to_the_limits_and_bad_input_is_echoed_only_in_part() {
    let server = TestServer::start().await;
    let token = server.server.agent_token().expose().to_owned();
    let refusal = |hello: Value| {
        let addr = server.server.tcp_addr();
        async move {
            let mut raw = RawTcp::connect(addr).await;
            raw.send_json(&hello).await.unwrap();
            let f = raw.read_json().await.unwrap();
            assert_eq!(f["kind"], "error", "{f}");
            raw.expect_closed().await;
            (f["error"]["code"].as_str().unwrap().to_owned(), f["error"]["message"].as_str().unwrap().to_owned())
        }
    };
    let many: serde_json::Map<String, Value> = (0..20_000).map(|i| (format!("t{i}"), json!("v"))).collect();
    let (code, _) = refusal(
        json!({"kind": "hello", "body": {"version": 1, "role": "agent", "token": token, "id": "t-1", "tags": many}}),
    )
    .await;
    assert_eq!(code, "bad_request");
    let (code, msg) = refusal(
        json!({"kind": "hello", "body": {"version": 1, "role": "agent", "token": token, "id": "t-1", "tags": {"ro le": "x"}}}),
    )
    .await;
    assert_eq!(code, "bad_request", "{msg}");
    let commands: Vec<String> = (0..1000).map(|i| format!("c{i}")).collect();
    let (code, _) = refusal(
        json!({"kind": "hello", "body": {"version": 1, "role": "agent", "token": token, "id": "t-1", "commands": commands}}),
    )
    .await;
    assert_eq!(code, "bad_request");
    let huge_id = "x".repeat(512 * 1024);
    let (code, msg) = refusal(hello_json("agent", &token, Some(&huge_id))).await;
    assert_eq!(code, "bad_id");
    assert!(msg.len() < 300, "the message echoes a prefix only: {} bytes", msg.len());
    // None of them was registered.
    let op = server.operator(Transport::Tcp).await;
    let devices: Vec<Value> = call(&op, commands::DEVICES_LIST, json!({})).await;
    assert!(devices.is_empty(), "{devices:?}");
}

#[tokio::test]
async fn new_enrollments_per_address_are_rate_limited_but_known_devices_connect() {
    let server = TestServer::start_with(|c| c.limits.enrollments_per_ip = 3, |b| b).await;
    let _known = server.agent(Transport::Tcp, "known-1", &[], basic_handlers()).await;
    let mut refused = 0;
    for i in 0..6 {
        let cfg = server.agent_config(Transport::Tcp, &format!("new-{i}"));
        match orb_client::Client::connect(cfg, Handlers::new()).await {
            Ok(_) => {}
            Err(ClientError::Refused(e)) => {
                assert_eq!(e.code.as_str(), "rate_limited", "{e}");
                refused += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(refused >= 3, "at most 3 new ids a second from one address: {refused} refused");
    // A device that holds its secret is no enrollment: it connects whatever the rate.
    let again = server.agent(Transport::Tcp, "known-1", &[], basic_handlers()).await;
    assert_eq!(again.welcome().id, "known-1");
}

#[tokio::test]
async fn health_says_only_up_or_draining_and_readiness_turns_false_while_draining() {
    let server = TestServer::start_with(|_| {}, |b| b).await;
    let hang = Handlers::new().on("hang", |_c: Context| std::future::pending());
    let _a = server.agent(Transport::Tcp, "h-1", &[], hang).await;
    let get = |path: &'static str| {
        let addr = server.server.http_addr();
        async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: orb\r\nConnection: close\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut text = String::new();
            within("a response", s.read_to_string(&mut text)).await.unwrap();
            let (head, body) = text.split_once("\r\n\r\n").unwrap();
            (head.split(' ').nth(1).unwrap().to_owned(), serde_json::from_str::<Value>(body).unwrap())
        }
    };
    for path in ["/healthz", "/v1/health"] {
        assert_eq!(get(path).await, ("200".to_owned(), json!({"status": "ok"})), "nothing more for anyone");
    }
    assert_eq!(get("/readyz").await.0, "200");
    let op = server.operator(Transport::Tcp).await;
    let _job = op.submit(JobRequest::new("h-1", "hang").args(NULL).deadline(WAIT)).await.unwrap();
    server.server.broker().start_draining();
    assert_eq!(get("/healthz").await, ("200".to_owned(), json!({"status": "draining"})));
    let (status, body) = get("/readyz").await;
    assert_eq!((status.as_str(), &body["ready"]), ("503", &json!(false)));
}

#[tokio::test]
async fn a_reload_that_changes_a_setting_needing_a_restart_says_so() {
    let server = TestServer::start().await;
    let mut cfg = orb_server::ServerConfig::for_tests(server.data.path().to_path_buf());
    cfg.limits.heartbeat = Duration::from_secs(20);
    assert!(server.server.reload(cfg.clone()).unwrap().restart_required.is_empty(), "limits apply live");
    cfg.listen = "127.0.0.1:7999".parse().unwrap();
    cfg.store.url = Some("sqlite:/tmp/elsewhere.db".into());
    assert_eq!(server.server.reload(cfg).unwrap().restart_required, vec!["server.listen", "store.url"]);
}

//! Jobs end to end: a real server, real agents and a real operator over TCP and WebSocket on
//! 127.0.0.1. Fan-out to every matching agent, result streaming, summaries, selectors, per-target
//! errors (unknown command, handler errors, panics) and deadlines.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use orb_client::{ClientError, Context, Handlers, JobRequest};
use orb_proto::{ErrorBody, ErrorCode, Status};
use orb_testkit::{TestServer, Transport, WAIT, basic_handlers, finish_job, within};
use serde_json::json;

/// Handlers that answer `whoami` with the agent's id and a fixed payload, and `raw` with the
/// exact argument bytes they received.
fn identity_handlers(id: &str) -> Handlers {
    let me = id.to_owned();
    basic_handlers()
        .on("whoami", move |c: Context| {
            let me = me.clone();
            async move { Ok(json!({"id": me, "job": c.job, "from": c.from, "n": 42})) }
        })
        .on("raw", |c: Context| async move { Ok(json!({"raw": String::from_utf8_lossy(&c.args)})) })
}

/// Five web agents and one db agent (transport chosen per agent), an operator on `op_transport`;
/// a job to `web-*` reaches exactly the five web agents, each result is `ok` with that agent's
/// JSON, and the summary counts five `ok` and zero of everything else.
async fn job_reaches_every_matching_agent(agent_transport: impl Fn(usize) -> Transport, op_transport: Transport) {
    let server = TestServer::start().await;
    let mut agents = Vec::new();
    for i in 1..=5 {
        let id = format!("web-{i}");
        let t = agent_transport(i);
        agents.push(server.agent(t, &id, &[("role", "web")], identity_handlers(&id)).await);
    }
    agents.push(server.agent(agent_transport(0), "db-1", &[("role", "db")], identity_handlers("db-1")).await);
    server.wait_for_agents(6).await;
    let op = server.operator(op_transport).await;
    let op_name = op.welcome().id.clone();

    let job = within(
        "the ack",
        op.submit(JobRequest::new("web-*", "whoami").args(Bytes::from_static(b"null")).deadline(WAIT)),
    )
    .await
    .unwrap();
    let expected: Vec<String> = (1..=5).map(|i| format!("web-{i}")).collect();
    assert_eq!(job.accepted.targets, expected, "targets are sorted by id");
    assert_eq!(job.accepted.deadline_ms, WAIT.as_millis() as u64);
    let job_id = job.id().to_owned();
    let out = finish_job(job).await;

    assert_eq!(out.devices(), expected);
    for id in &expected {
        let r = out.result(id);
        assert_eq!(r.status, Status::Ok);
        assert!(r.error.is_none(), "{r:?}");
        assert!(r.elapsed_ms.is_some(), "an answered target has elapsed_ms");
        assert_eq!(out.ok_json(id), json!({"id": id, "job": job_id, "from": op_name, "n": 42}));
    }
    assert_eq!(out.count(Status::Ok), 5);
    for s in Status::ALL.into_iter().filter(|s| *s != Status::Ok) {
        assert_eq!(out.count(s), 0, "{s}");
    }
    assert_eq!(out.summary.summary.len(), Status::ALL.len());
}

#[tokio::test]
async fn job_over_tcp_reaches_every_matching_agent() {
    job_reaches_every_matching_agent(|_| Transport::Tcp, Transport::Tcp).await;
}

#[tokio::test]
async fn job_over_websocket_reaches_every_matching_agent() {
    job_reaches_every_matching_agent(|_| Transport::Ws, Transport::Ws).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_over_mixed_transports_reaches_every_matching_agent() {
    let alternate = |i: usize| {
        if i.is_multiple_of(2) { Transport::Ws } else { Transport::Tcp }
    };
    job_reaches_every_matching_agent(alternate, Transport::Tcp).await;
    job_reaches_every_matching_agent(alternate, Transport::Ws).await;
}

#[tokio::test]
async fn job_arguments_reach_agents_byte_for_byte() {
    let server = TestServer::start().await;
    let _a = server.agent(Transport::Tcp, "a-1", &[], identity_handlers("a-1")).await;
    let _b = server.agent(Transport::Ws, "a-2", &[], identity_handlers("a-2")).await;
    let op = server.operator(Transport::Tcp).await;
    // Odd spacing, key order and number spelling must survive the trip through the server.
    let args = r#"{ "z" : 1.50,"a":[1 ,2],  "s":"é\u00e9" }"#;
    let job = op
        .submit(JobRequest::new("a-1,a-2", "raw").args(Bytes::from_static(args.as_bytes())).deadline(WAIT))
        .await
        .unwrap();
    let out = finish_job(job).await;
    for id in ["a-1", "a-2"] {
        assert_eq!(out.ok_json(id), json!({"raw": args}), "{id}");
    }
}

/// Agents `web-1..3` (role web), `db-1` (role db) and `cam-1` (role cam), each recording every
/// command it runs; a server with group `webs` = `tag:role=web` and `datastores` = `db-*`.
struct Fleet {
    server: TestServer,
    _agents: Vec<orb_client::Client>,
    op: orb_client::Client,
    log: Arc<Mutex<Vec<(String, String)>>>,
}

const FLEET: [(&str, &str); 5] =
    [("web-1", "web"), ("web-2", "web"), ("web-3", "web"), ("db-1", "db"), ("cam-1", "cam")];

impl Fleet {
    async fn start() -> Fleet {
        let server = TestServer::start_with(
            |cfg| {
                cfg.groups.insert("webs".into(), "tag:role=web".into());
                cfg.groups.insert("datastores".into(), "db-*".into());
            },
            |b| b,
        )
        .await;
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut agents = Vec::new();
        for (i, (id, role)) in FLEET.iter().enumerate() {
            let (me, log) = ((*id).to_owned(), Arc::clone(&log));
            let handlers = basic_handlers().on("record", move |c: Context| {
                log.lock().unwrap().push((me.clone(), c.job.clone().unwrap_or_default()));
                async move { Ok(json!("recorded")) }
            });
            let t = if i.is_multiple_of(2) { Transport::Tcp } else { Transport::Ws };
            agents.push(server.agent(t, id, &[("role", role)], handlers).await);
        }
        server.wait_for_agents(FLEET.len() as u64).await;
        let op = server.operator(Transport::Tcp).await;
        Fleet { server, _agents: agents, op, log }
    }

    /// Runs `record` on `selector` and returns the devices that reported results.
    async fn run(&self, selector: &str) -> Vec<String> {
        let job = within(
            "the ack",
            self.op.submit(JobRequest::new(selector, "record").args(Bytes::from_static(b"null")).deadline(WAIT)),
        )
        .await
        .unwrap_or_else(|e| panic!("{selector}: {e}"));
        let out = finish_job(job).await;
        assert_eq!(out.count(Status::Ok) as usize, out.results.len(), "{selector}");
        assert_eq!(out.devices(), {
            let mut t = out.accepted.targets.clone();
            t.sort();
            t
        });
        out.devices()
    }

    /// The error code of submitting a job to `selector`.
    async fn refused(&self, selector: &str) -> ErrorBody {
        match within(
            "the refusal",
            self.op.submit(JobRequest::new(selector, "record").args(Bytes::from_static(b"null")).deadline(WAIT)),
        )
        .await
        {
            Err(ClientError::Remote(e)) => e,
            Err(e) => panic!("{selector}: expected a remote error, got {e}"),
            Ok(job) => panic!("{selector}: accepted with targets {:?}", job.accepted.targets),
        }
    }

    /// Which agents ran `record`, per job id. A round trip to every agent first makes sure any
    /// command sent to it earlier has reached its handler (frames on a connection are ordered).
    async fn invocations(&self) -> BTreeMap<String, Vec<String>> {
        for (id, _) in FLEET {
            within("a ping", self.op.request(id, "ping", Bytes::from_static(b"null"), WAIT)).await.unwrap();
        }
        let mut by_job: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (dev, job) in self.log.lock().unwrap().iter() {
            by_job.entry(job.clone()).or_default().push(dev.clone());
        }
        for v in by_job.values_mut() {
            v.sort();
        }
        by_job
    }
}

fn ids(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| (*s).to_owned()).collect();
    v.sort();
    v
}

#[tokio::test]
async fn job_to_selector_reaches_only_matching_agents() {
    let fleet = Fleet::start().await;
    let cases: [(&str, &[&str]); 9] = [
        ("*", &["web-1", "web-2", "web-3", "db-1", "cam-1"]),
        ("web-*", &["web-1", "web-2", "web-3"]),
        ("web-?,db-1", &["web-1", "web-2", "web-3", "db-1"]),
        ("web-1,cam-1", &["web-1", "cam-1"]),
        ("web-2,nothing-here", &["web-2"]),
        ("tag:role=web and not web-3", &["web-1", "web-2"]),
        ("tag:role=db or tag:role=cam", &["db-1", "cam-1"]),
        ("group:webs", &["web-1", "web-2", "web-3"]),
        ("(group:webs or group:datastores) and not web-1", &["web-2", "web-3", "db-1"]),
    ];
    let mut jobs = Vec::new();
    for (selector, expected) in cases {
        let got = fleet.run(selector).await;
        assert_eq!(got, ids(expected), "selector {selector}");
        jobs.push(expected);
    }
    // Every agent ran each job it was a target of, and no agent ran a job it was not.
    let by_job = fleet.invocations().await;
    assert_eq!(by_job.len(), jobs.len());
    let mut ran: Vec<Vec<String>> = by_job.into_values().collect();
    let mut want: Vec<Vec<String>> = jobs.iter().map(|e| ids(e)).collect();
    ran.sort();
    want.sort();
    assert_eq!(ran, want);
}

#[tokio::test]
async fn job_to_selector_matching_nothing_is_no_match() {
    let fleet = Fleet::start().await;
    for selector in ["cam-9", "zzz-*", "tag:role=nope", "web-1 and db-1"] {
        let e = fleet.refused(selector).await;
        assert_eq!(e.code, ErrorCode::NoMatch, "{selector}: {e}");
    }
    // Nothing was sent to anyone.
    assert!(fleet.invocations().await.is_empty());
}

#[tokio::test]
async fn job_with_selector_syntax_error_is_bad_selector_with_position() {
    let fleet = Fleet::start().await;
    let e = fleet.refused("tag:role=web and").await;
    assert_eq!(e.code, ErrorCode::BadSelector, "{e}");
    assert!(e.message.contains("position 16"), "{e}");
    let e = fleet.refused("web-1,,web-2").await;
    assert_eq!(e.code, ErrorCode::BadSelector, "{e}");
    assert!(e.message.contains("position 6"), "{e}");
    for bad in ["(web-1", "web.1", "not", "web-1 web-2", ""] {
        let e = fleet.refused(bad).await;
        assert_eq!(e.code, ErrorCode::BadSelector, "{bad:?}: {e}");
        assert!(e.message.contains("position"), "{bad:?}: {e}");
    }
    assert!(fleet.invocations().await.is_empty());
}

#[tokio::test]
async fn job_to_unconfigured_group_is_unknown_group() {
    let fleet = Fleet::start().await;
    for selector in ["group:nope", "web-1 or group:nope"] {
        let e = fleet.refused(selector).await;
        assert_eq!(e.code, ErrorCode::UnknownGroup, "{selector}: {e}");
    }
    assert!(fleet.invocations().await.is_empty());
    // The configured group still works on the same connection.
    assert_eq!(fleet.run("group:datastores").await, ids(&["db-1"]));
    drop(fleet.server);
}

#[tokio::test]
async fn job_whose_command_no_target_declares_is_refused_before_anything_is_sent() {
    let server = TestServer::start().await;
    let _a = server.agent(Transport::Tcp, "dev-1", &[], basic_handlers()).await;
    let _b = server.agent(Transport::Ws, "dev-2", &[], basic_handlers()).await;
    let op = server.operator(Transport::Tcp).await;
    let refused = |r: Result<orb_client::Job, ClientError>| match r {
        Err(ClientError::Remote(e)) => e,
        Err(e) => panic!("expected a refusal, got {e}"),
        Ok(job) => panic!("expected a refusal, job {} was accepted", job.id()),
    };
    let e = refused(op.submit(JobRequest::new("dev-*", "pnig").deadline(WAIT)).await);
    assert_eq!(e.code, ErrorCode::UnknownCommand);
    assert_eq!(e.message, "no target declares command 'pnig'; did you mean 'ping'?");
    let e = refused(op.submit(JobRequest::new("dev-1", "reboot").deadline(WAIT)).await);
    assert_eq!((e.code, e.message.as_str()), (ErrorCode::UnknownCommand, "no target declares command 'reboot'"));
    // A pre-registered device that never connected has declared nothing yet: it changes nothing.
    let _: serde_json::Value = op.call_json("$orb.devices.add", &json!({"id": "dev-3"}), WAIT).await.unwrap();
    let e = refused(op.submit(JobRequest::new("dev-*", "pnig").deadline(WAIT)).await);
    assert_eq!(e.message, "no target declares command 'pnig'; did you mean 'ping'?");
    // A command name longer than any device may declare is a bad request (no suggestion is
    // searched for it); so is one sent as a plain request.
    let long = "p".repeat(orb_proto::message::MAX_COMMAND_NAME + 1);
    let e = refused(op.submit(JobRequest::new("dev-*", &long).deadline(WAIT)).await);
    assert_eq!(e.code, ErrorCode::BadRequest, "{}", e.message);
    assert!(e.message.contains("longer than 128 bytes"), "{}", e.message);
    match op.request("dev-1", &long, Bytes::from_static(b"null"), WAIT).await {
        Err(ClientError::Remote(e)) => assert_eq!(e.code, ErrorCode::BadRequest),
        other => panic!("expected bad_request, got {other:?}"),
    }
    // The job list holds none: nothing was started.
    let jobs: Vec<serde_json::Value> = op.call_json("$orb.jobs.list", &json!({}), WAIT).await.unwrap();
    assert!(jobs.is_empty(), "{jobs:?}");
}

#[tokio::test]
async fn a_device_that_reconnects_declaring_a_new_command_is_sent_it() {
    let server = TestServer::start().await;
    let first = server.agent(Transport::Tcp, "dev-1", &[], basic_handlers()).await;
    let op = server.operator(Transport::Tcp).await;
    match op.submit(JobRequest::new("dev-1", "reboot").deadline(WAIT)).await {
        Err(ClientError::Remote(e)) => assert_eq!(e.code, ErrorCode::UnknownCommand),
        other => panic!("expected unknown_command, got {:?}", other.map(|j| j.accepted.clone())),
    }
    first.close().await;
    within("the old session's end", first.closed()).await;
    let handlers = basic_handlers().on("reboot", |_c: Context| async move { Ok(json!("rebooting")) });
    let _second = server.agent(Transport::Ws, "dev-1", &[], handlers).await;
    let out = finish_job(op.submit(JobRequest::new("dev-1", "reboot").deadline(WAIT)).await.unwrap()).await;
    assert_eq!(out.ok_json("dev-1"), json!("rebooting"));
}

#[tokio::test]
async fn unknown_command_comes_from_targets_that_declare_nothing_and_from_the_server_for_the_rest() {
    let server = TestServer::start().await;
    // No handlers: the hello declares no commands, so the server cannot know what it handles.
    let _a = server.agent(Transport::Tcp, "dev-1", &[], Handlers::new()).await;
    let _b = server.agent(Transport::Ws, "dev-2", &[], basic_handlers()).await;
    let op = server.operator(Transport::Tcp).await;
    let job =
        op.submit(JobRequest::new("dev-*", "reboot").args(Bytes::from_static(b"null")).deadline(WAIT)).await.unwrap();
    let out = finish_job(job).await;
    for id in ["dev-1", "dev-2"] {
        assert_eq!(out.result(id).status, Status::Error);
        assert_eq!(out.error_code(id), "unknown_command");
        assert!(out.result(id).result.is_none());
    }
    assert_eq!(out.count(Status::Error), 2);
    assert_eq!(out.count(Status::Ok), 0);
    // dev-1 declared nothing: it was sent the command and answered. dev-2 declares commands, not
    // this one: the server decided, and nothing reached it.
    assert!(out.result("dev-1").elapsed_ms.is_some(), "{:?}", out.result("dev-1"));
    let dev2 = out.result("dev-2");
    assert!(dev2.elapsed_ms.is_none(), "{dev2:?}");
    assert!(dev2.error.as_ref().unwrap().message.contains("does not declare 'reboot'"), "{dev2:?}");
}

/// Handlers that fail on purpose: `fail` with a handler-chosen code, `bad` with `bad_args`,
/// `boom` by panicking.
fn failing_handlers() -> Handlers {
    basic_handlers()
        .on("fail", |_c: Context| async move {
            Err(ErrorBody::new(ErrorCode::Other("disk_full".into()), "no space left on /var"))
        })
        .on("bad", |c: Context| async move {
            let n: u32 = c.args()?;
            Ok(json!(n))
        })
        .on("boom", |_c: Context| async move {
            if true {
                panic!("kaboom");
            }
            Ok(json!(null))
        })
}

#[tokio::test]
async fn job_whose_handler_fails_reports_the_handlers_error_code() {
    let server = TestServer::start().await;
    let _a = server.agent(Transport::Tcp, "dev-1", &[], failing_handlers()).await;
    let op = server.operator(Transport::Tcp).await;

    let out = finish_job(
        op.submit(JobRequest::new("dev-1", "fail").args(Bytes::from_static(b"null")).deadline(WAIT)).await.unwrap(),
    )
    .await;
    assert_eq!(out.result("dev-1").status, Status::Error);
    assert_eq!(out.error_code("dev-1"), "disk_full");
    let msg = &out.result("dev-1").error.as_ref().unwrap().message;
    assert_eq!(msg, "no space left on /var");

    let out = finish_job(
        op.submit(JobRequest::new("dev-1", "bad").args(Bytes::from_static(br#""seven""#)).deadline(WAIT))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(out.error_code("dev-1"), "bad_args");
    assert_eq!(out.count(Status::Error), 1);
}

#[tokio::test]
async fn job_whose_handler_panics_reports_handler_panicked_and_the_agent_survives() {
    let server = TestServer::start().await;
    let agent = server.agent(Transport::Ws, "dev-1", &[], failing_handlers()).await;
    let op = server.operator(Transport::Tcp).await;

    let out = finish_job(
        op.submit(JobRequest::new("dev-1", "boom").args(Bytes::from_static(b"null")).deadline(WAIT)).await.unwrap(),
    )
    .await;
    assert_eq!(out.result("dev-1").status, Status::Error);
    assert_eq!(out.error_code("dev-1"), "handler_panicked");
    assert!(!agent.is_closed());

    // The same session answers the next job.
    let out = finish_job(
        op.submit(JobRequest::new("dev-1", "ping").args(Bytes::from_static(b"null")).deadline(WAIT)).await.unwrap(),
    )
    .await;
    assert_eq!(out.ok_json("dev-1"), json!({"pong": true}));
}

#[tokio::test]
async fn job_target_that_never_answers_times_out_while_a_fast_one_is_ok() {
    let server = TestServer::start().await;
    let hang = basic_handlers().on("work", |_c: Context| async move {
        std::future::pending::<()>().await;
        Ok(json!(null))
    });
    let fast = basic_handlers().on("work", |_c: Context| async move { Ok(json!("done")) });
    let _slow = server.agent(Transport::Tcp, "slow-1", &[], hang).await;
    let _fast = server.agent(Transport::Ws, "fast-1", &[], fast).await;
    let op = server.operator(Transport::Tcp).await;

    let deadline = Duration::from_millis(500);
    let job = op
        .submit(JobRequest::new("slow-1,fast-1", "work").args(Bytes::from_static(b"null")).deadline(deadline))
        .await
        .unwrap();
    assert_eq!(job.accepted.deadline_ms, 500);
    let out = finish_job(job).await;
    assert_eq!(out.ok_json("fast-1"), json!("done"));
    let slow = out.result("slow-1");
    assert_eq!(slow.status, Status::Timeout, "{slow:?}");
    assert!(slow.result.is_none());
    assert!(slow.elapsed_ms.is_none(), "no answer, so no elapsed time");
    assert_eq!(out.count(Status::Ok), 1);
    assert_eq!(out.count(Status::Timeout), 1);
    assert_eq!(out.count(Status::Error), 0);
    // The timed-out result arrives after the fast one: results stream as they become known.
    assert_eq!(out.results[0].device, "fast-1");
}

#[tokio::test]
async fn job_deadline_above_the_servers_maximum_is_limited_to_it() {
    let server = TestServer::start_with(|cfg| cfg.limits.max_deadline = Duration::from_secs(2), |b| b).await;
    let _a = server.agent(Transport::Tcp, "dev-1", &[], basic_handlers()).await;
    let op = server.operator(Transport::Tcp).await;
    // A deadline above the server's maximum is limited to it.
    let job = op
        .submit(JobRequest::new("dev-1", "ping").args(Bytes::from_static(b"null")).deadline(Duration::from_secs(3600)))
        .await
        .unwrap();
    assert_eq!(job.accepted.deadline_ms, 2000);
    let out = finish_job(job).await;
    assert_eq!(out.count(Status::Ok), 1);
}

#[tokio::test]
async fn operator_runs_many_jobs_concurrently() {
    let server = TestServer::start().await;
    let mut agents = Vec::new();
    for i in 0..4usize {
        let t = if i.is_multiple_of(2) { Transport::Tcp } else { Transport::Ws };
        agents.push(server.agent(t, &format!("n-{i}"), &[], basic_handlers()).await);
    }
    let op = server.operator(Transport::Ws).await;
    let mut jobs = Vec::new();
    for i in 0..20 {
        let args = Bytes::from(json!({"i": i}).to_string());
        jobs.push(op.submit(JobRequest::new("n-*", "echo").args(args).deadline(WAIT)).await.unwrap());
    }
    let mut ids = std::collections::HashSet::new();
    for (i, job) in jobs.into_iter().enumerate() {
        assert!(ids.insert(job.id().to_owned()), "job ids are unique");
        let out = finish_job(job).await;
        assert_eq!(out.count(Status::Ok), 4);
        for r in &out.results {
            assert_eq!(out.ok_json(&r.device), json!({"i": i}));
        }
    }
}

//! Operator tokens and roles (issue 15): the admin makes tokens (shown once, kept hashed); a
//! `viewer` reads and changes nothing; an `operator` sends only the commands its
//! `[[acl.operators]]` rules allow, only to the devices they reach by operator-set tags (a
//! device's own tags widen nothing), and never touches the registry or the tokens; a revoked
//! token is refused at its session's next command and at its next hello; the same roles hold
//! over the HTTP API. Targets outside an operator's rules end `denied`; commands held for
//! offline devices and staged batches are judged again when they leave: a token revoked or a
//! rule changed since the job was sent makes them `denied`, and nothing runs.
#![allow(clippy::unwrap_used)]

use orb_client::{Client, ClientConfig, ClientError, Handlers, JobRequest, JobUpdate};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use orb_client::Context;
use orb_proto::history::JobPhase;
use orb_proto::message::commands;
use orb_proto::rollout::{BatchSize, Rollout};
use orb_proto::{ErrorCode, Status};
use orb_server::config::OperatorRuleConfig;
use orb_testkit::{TestServer, Transport, WAIT, basic_handlers, call, finish_job, refused, stored_until, within};
use serde_json::{Value, json};

async fn server() -> TestServer {
    TestServer::start_with(
        |cfg| {
            cfg.acl.operators = vec![OperatorRuleConfig {
                tokens: vec![],
                to: "tag:env=staging".into(),
                commands: vec!["ping".into(), "echo".into()],
            }]
        },
        |b| b,
    )
    .await
}

async fn token(admin: &Client, name: &str, role: &str) -> String {
    let made: Value = call(admin, commands::TOKENS_ADD, json!({"name": name, "role": role})).await;
    assert_eq!((made["name"].as_str(), made["role"].as_str()), (Some(name), Some(role)));
    made["token"].as_str().unwrap().to_owned()
}

async fn connect(server: &TestServer, token: &str) -> Result<Client, ClientError> {
    Client::connect(ClientConfig::operator(server.url(Transport::Tcp), Some(token.to_owned())), Handlers::new()).await
}

#[tokio::test]
async fn roles_limit_what_a_token_may_do_and_revocation_ends_it() {
    let server = server().await;
    let admin = server.operator(Transport::Tcp).await;
    // web-1 is staging by an operator's tag; web-2 only says so itself.
    let _w1 = server.agent(Transport::Tcp, "web-1", &[], basic_handlers()).await;
    let _w2 = server.agent(Transport::Tcp, "web-2", &[("env", "staging")], basic_handlers()).await;
    let _: Value = call(&admin, commands::DEVICES_TAG, json!({"id": "web-1", "set": {"env": "staging"}})).await;

    let ci = token(&admin, "ci", "operator").await;
    let wall = token(&admin, "wall", "viewer").await;
    assert_eq!(
        refused(&admin, commands::TOKENS_ADD, json!({"name": "ci", "role": "viewer"})).await,
        ErrorCode::IdTaken
    );
    let listed: Value = call(&admin, commands::TOKENS_LIST, Value::Null).await;
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert!(!listed.to_string().contains(&ci), "the list never shows a token");

    // The viewer reads and nothing more.
    let viewer = connect(&server, &wall).await.unwrap();
    let devices: Value = call(&viewer, commands::DEVICES_LIST, Value::Null).await;
    assert_eq!(devices.as_array().unwrap().len(), 2);
    let e = viewer.submit(JobRequest::new("*", "ping").deadline(WAIT)).await.err().unwrap();
    assert_eq!(e.code(), Some(&ErrorCode::Forbidden), "{e}");
    assert_eq!(refused(&viewer, commands::TOKENS_LIST, Value::Null).await, ErrorCode::Forbidden);

    // The operator: its rule's commands, on the devices operator tags put in staging.
    let op = connect(&server, &ci).await.unwrap();
    let job = finish_job(op.submit(JobRequest::new("*", "ping").deadline(WAIT)).await.unwrap()).await;
    assert_eq!(job.devices(), ["web-1", "web-2"]);
    assert_eq!(job.result("web-1").status, Status::Ok);
    assert_eq!(job.result("web-2").status, Status::Denied, "web-2's own tag widens nothing");
    assert_eq!(job.error_code("web-2"), "forbidden");
    let e = op.submit(JobRequest::new("web-1", "sleep").deadline(WAIT)).await.err().unwrap();
    assert_eq!(e.code(), Some(&ErrorCode::Forbidden), "{e}");
    let e = op.submit(JobRequest::new("web-2", "ping").deadline(WAIT)).await.err().unwrap();
    assert_eq!(e.code(), Some(&ErrorCode::Forbidden), "{e}");
    assert_eq!(refused(&op, commands::DEVICES_ADD, json!({"id": "x-1"})).await, ErrorCode::Forbidden);
    // A schedule fires later on whatever its selector matches then: only a rule on "*" covers it.
    let daily = json!({"target": "web-1", "command": "ping", "spec": {"kind": "cron", "expr": "@daily", "tz": "UTC"}});
    assert_eq!(refused(&op, commands::SCHEDULES_CREATE, daily).await, ErrorCode::Forbidden);
    assert_eq!(refused(&op, commands::TOKENS_ADD, json!({"name": "me", "role": "admin"})).await, ErrorCode::Forbidden);
    let history: Value = call(&op, commands::JOBS_LIST, Value::Null).await;
    assert_eq!(history[0]["requester"], "ci", "the history names the token");

    // Revoked: the open session is refused at its next command, a new hello at once.
    let _: Value = call(&admin, commands::TOKENS_REVOKE, json!({"name": "ci"})).await;
    let e = op.submit(JobRequest::new("web-1", "ping").deadline(WAIT)).await.err().unwrap();
    assert_eq!(e.code(), Some(&ErrorCode::Forbidden), "{e}");
    assert!(e.to_string().contains("revoked"), "{e}");
    let e = connect(&server, &ci).await.err().unwrap();
    assert_eq!(e.code(), Some(&ErrorCode::AuthFailed), "{e}");
    assert_eq!(refused(&admin, commands::TOKENS_REVOKE, json!({"name": "nobody"})).await, ErrorCode::NotFound);
    // An operator token never connects a device.
    let mut cfg = server.agent_config(Transport::Tcp, "cam-1");
    cfg.token = Some(wall.clone());
    assert_eq!(Client::connect(cfg, Handlers::new()).await.err().unwrap().code(), Some(&ErrorCode::Forbidden));
}

#[tokio::test]
async fn the_api_holds_tokens_to_their_roles() {
    let server = server().await;
    let admin = server.operator(Transport::Tcp).await;
    let _w1 = server.agent(Transport::Tcp, "web-1", &[], basic_handlers()).await;
    let wall = token(&admin, "wall", "viewer").await;
    let base = format!("http://{}", server.server.http_addr());
    let http = reqwest::Client::builder().timeout(WAIT).build().unwrap();
    let resp = http.get(format!("{base}/v1/devices")).bearer_auth(&wall).send().await.unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    let resp = http
        .post(format!("{base}/v1/jobs"))
        .bearer_auth(&wall)
        .json(&json!({"target": "*", "command": "ping"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::FORBIDDEN);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["code"], "forbidden", "{body}");
    let _: Value = call(&admin, commands::TOKENS_REVOKE, json!({"name": "wall"})).await;
    let resp = http.get(format!("{base}/v1/devices")).bearer_auth(&wall).send().await.unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::UNAUTHORIZED);
}

/// An agent whose `echo` handler counts its runs.
async fn counting_agent(server: &TestServer, id: &str) -> (orb_client::Client, Arc<AtomicU64>) {
    let runs = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&runs);
    let handlers = basic_handlers().on("echo", move |c: Context| {
        let seen = Arc::clone(&seen);
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
            serde_json::from_slice::<Value>(&c.args)
                .map_err(|e| orb_proto::ErrorBody::new(ErrorCode::BadArgs, e.to_string()))
        }
    });
    (server.agent(Transport::Tcp, id, &[], handlers).await, runs)
}

fn echo(target: &str) -> JobRequest {
    JobRequest::new(target, "echo").args(bytes::Bytes::from_static(b"\"hi\"")).deadline(Duration::from_secs(5))
}

#[tokio::test]
async fn held_commands_are_judged_again_when_delivered() {
    let server = server().await;
    server.known_but_offline("web-1").await;
    let admin = server.operator(Transport::Tcp).await;
    let _: Value = call(&admin, commands::DEVICES_TAG, json!({"id": "web-1", "set": {"env": "staging"}})).await;
    let ci = connect(&server, &token(&admin, "ci", "operator").await).await.unwrap();
    let cd = connect(&server, &token(&admin, "cd", "operator").await).await.unwrap();
    // Three commands held for the offline device: by a token about to be revoked, by one whose
    // rule is about to change, and by the admin.
    let mut held = Vec::new();
    for client in [&ci, &cd, &admin] {
        let job = within("the ack", client.submit(echo("web-1").ttl(Duration::from_secs(60)))).await.unwrap();
        let id = job.id().to_owned();
        assert_eq!(finish_job(job).await.result("web-1").status, Status::Queued);
        held.push(id);
    }
    let _: Value = call(&admin, commands::TOKENS_REVOKE, json!({"name": "ci"})).await;
    let mut cfg = orb_server::ServerConfig::for_tests(server.data.path().to_path_buf());
    cfg.acl.operators =
        vec![OperatorRuleConfig { tokens: vec![], to: "tag:env=prod".into(), commands: vec!["echo".into()] }];
    server.server.reload(cfg).unwrap();

    // The device connects: only the admin's command runs; the others end `denied`.
    let (_agent, runs) = counting_agent(&server, "web-1").await;
    let done = |job: &str| {
        let job = job.to_owned();
        let admin = &admin;
        async move { stored_until(admin, &job, |d| d.job.state == JobPhase::Done).await }
    };
    let revoked = done(&held[0]).await;
    assert_eq!(revoked.results[0].status, Status::Denied, "{revoked:?}");
    let why = revoked.results[0].error.as_ref().unwrap();
    assert_eq!(why.code, ErrorCode::Forbidden);
    assert!(why.message.contains("revoked"), "{why:?}");
    let moved = done(&held[1]).await;
    assert_eq!(moved.results[0].status, Status::Denied, "{moved:?}");
    assert_eq!(done(&held[2]).await.results[0].status, Status::Ok);
    assert_eq!(runs.load(Ordering::SeqCst), 1, "nothing denied ran");
}

#[tokio::test]
async fn a_staged_batch_is_judged_again_when_its_turn_comes() {
    let server = server().await;
    let admin = server.operator(Transport::Tcp).await;
    // web-1 answers only once the test lets it: the token is revoked while its batch runs.
    let (release, released) = tokio::sync::watch::channel(false);
    let handlers = basic_handlers().on("echo", move |_c: Context| {
        let mut released = released.clone();
        async move {
            let _ = released.wait_for(|r| *r).await;
            Ok(json!("done"))
        }
    });
    let _w1 = server.agent(Transport::Tcp, "web-1", &[], handlers).await;
    let (_w2, runs) = counting_agent(&server, "web-2").await;
    for id in ["web-1", "web-2"] {
        let _: Value = call(&admin, commands::DEVICES_TAG, json!({"id": id, "set": {"env": "staging"}})).await;
    }
    let ci = connect(&server, &token(&admin, "ci", "operator").await).await.unwrap();
    let rollout = Rollout { batch: Some(BatchSize::Count(1)), ..Rollout::default() };
    let mut job = within("the ack", ci.submit(echo("web-*").rollout(rollout))).await.unwrap();
    let started = within("the first batch", job.next()).await;
    assert!(matches!(started, Some(JobUpdate::Batch(ref b)) if b.batch == 1), "{started:?}");
    let _: Value = call(&admin, commands::TOKENS_REVOKE, json!({"name": "ci"})).await;
    release.send(true).unwrap();
    let mut results = std::collections::BTreeMap::new();
    for _ in 0..4 {
        match within("a job update", job.next()).await {
            Some(JobUpdate::Result(r)) => {
                results.insert(r.device.clone(), r);
            }
            Some(JobUpdate::Batch(_) | JobUpdate::Progress { .. }) => {}
            Some(JobUpdate::Done(_)) | None => break,
        }
    }
    assert_eq!(results["web-1"].status, Status::Ok, "its batch had started");
    assert_eq!(results["web-2"].status, Status::Denied, "{results:?}");
    assert_eq!(runs.load(Ordering::SeqCst), 0, "nothing ran on web-2");
}

#[tokio::test]
async fn a_revoked_tokens_schedule_fires_nothing() {
    let server = TestServer::start_with(
        |cfg| {
            cfg.acl.operators =
                vec![OperatorRuleConfig { tokens: vec![], to: "*".into(), commands: vec!["echo".into()] }]
        },
        |b| b,
    )
    .await;
    let admin = server.operator(Transport::Tcp).await;
    let (_agent, runs) = counting_agent(&server, "web-1").await;
    let ci = connect(&server, &token(&admin, "ci", "operator").await).await.unwrap();
    // Its first firing comes two seconds after it is made: the token is revoked before.
    let spec = json!({"kind": "every", "every_ms": 2000, "anchor": chrono::Utc::now().to_rfc3339()});
    let create = json!({"target": "web-1", "command": "echo", "args": "hi", "spec": spec});
    let made: orb_proto::schedule::ScheduleInfo = call(&ci, commands::SCHEDULES_CREATE, create).await;
    let _: Value = call(&admin, commands::TOKENS_REVOKE, json!({"name": "ci"})).await;
    let show = json!({"id": made.id});
    let mut last_error = None;
    for _ in 0..500 {
        let s: orb_proto::schedule::ScheduleInfo = call(&admin, commands::SCHEDULES_SHOW, show.clone()).await;
        if s.last_error.is_some() {
            last_error = s.last_error;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let last_error = last_error.expect("the firing records why it did not start");
    assert!(last_error.starts_with("forbidden") && last_error.contains("revoked"), "{last_error}");
    assert_eq!(runs.load(Ordering::SeqCst), 0, "nothing ran");
}

#[tokio::test]
async fn an_expired_token_admits_nothing_more() {
    let server = server().await;
    let admin = server.operator(Transport::Tcp).await;
    let made: Value =
        call(&admin, commands::TOKENS_ADD, json!({"name": "brief", "role": "viewer", "expires_in_ms": 300})).await;
    assert!(made["expires_at"].is_string(), "{made}");
    let brief = made["token"].as_str().unwrap().to_owned();
    let viewer = connect(&server, &brief).await.unwrap();
    let _: Value = call(&viewer, commands::DEVICES_LIST, Value::Null).await;
    // Its session is refused from the first command after the expiry (polled: real time passes).
    let mut refusal = None;
    for _ in 0..500 {
        match viewer.call(commands::DEVICES_LIST, bytes::Bytes::from_static(b"null"), WAIT).await {
            Ok(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => {
                refusal = Some(e);
                break;
            }
        }
    }
    let e = refusal.expect("refused once expired");
    assert_eq!(e.code(), Some(&ErrorCode::Forbidden), "{e}");
    assert!(e.to_string().contains("expired"), "{e}");
    assert_eq!(connect(&server, &brief).await.err().unwrap().code(), Some(&ErrorCode::AuthFailed));
    let listed: Value = call(&admin, commands::TOKENS_LIST, Value::Null).await;
    assert_eq!(listed[0]["expires_at"], made["expires_at"]);
    for bad in [json!(0), json!(u64::MAX)] {
        let add = json!({"name": "never", "role": "viewer", "expires_in_ms": bad});
        assert_eq!(refused(&admin, commands::TOKENS_ADD, add).await, ErrorCode::BadRequest, "{bad}");
    }
}

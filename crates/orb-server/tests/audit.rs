//! The audit log (issue 15): over real sockets, an operator token's job, a refused job, the admin's
//! schedule and token changes, a job cancel over the API and a configuration reload are each
//! listed by `$orb.audit.list` and `GET /v1/audit` with who, role, where from and what, newest
//! first, filtered by `since`; reads and the server's own jobs are not recorded, and only the
//! admin may read the log.
#![allow(clippy::unwrap_used)]

use orb_client::{Client, ClientConfig, Handlers, JobRequest};
use orb_proto::ErrorCode;
use orb_proto::audit::AuditInfo;
use orb_proto::message::Select;
use orb_proto::message::commands;
use orb_server::config::OperatorRuleConfig;
use orb_server::identity::{Identity, Requester};
use orb_server::jobs::{JobEvent, JobSpec};
use orb_testkit::{TestServer, Transport, WAIT, basic_handlers, call, finish_job, refused};
use serde_json::{Value, json};

async fn token(admin: &Client, name: &str, role: &str) -> String {
    let made: Value = call(admin, commands::TOKENS_ADD, json!({"name": name, "role": role})).await;
    made["token"].as_str().unwrap().to_owned()
}

async fn connect(server: &TestServer, token: &str) -> Client {
    let cfg = ClientConfig::operator(server.url(Transport::Tcp), Some(token.to_owned()));
    Client::connect(cfg, Handlers::new()).await.unwrap()
}

/// `entries` oldest first, as `action target outcome` lines (easier to compare).
fn lines(entries: &[AuditInfo]) -> Vec<String> {
    entries.iter().rev().map(|e| format!("{} {} {}", e.action, e.target, e.outcome)).collect()
}

#[tokio::test]
async fn operator_actions_are_listed_with_who_when_and_from_where() {
    let server = TestServer::start_with(
        |cfg| {
            cfg.acl.operators =
                vec![OperatorRuleConfig { tokens: vec![], to: "*".into(), commands: vec!["ping".into()] }]
        },
        |b| b,
    )
    .await;
    let admin = server.operator(Transport::Tcp).await;
    let _w1 = server.agent(Transport::Tcp, "web-1", &[], basic_handlers()).await;
    let ci = token(&admin, "ci", "operator").await;

    // The operator token: a job it may send, one it may not; reads are not recorded.
    let op = connect(&server, &ci).await;
    let job = finish_job(op.submit(JobRequest::new("web-1", "ping").deadline(WAIT)).await.unwrap()).await;
    assert_eq!(job.devices(), ["web-1"]);
    let e = op.submit(JobRequest::new("web-1", "sleep").deadline(WAIT)).await.err().unwrap();
    assert_eq!(e.code(), Some(&ErrorCode::Forbidden), "{e}");
    assert_eq!(refused(&op, commands::DEVICES_REVOKE, json!({"id": "web-1"})).await, ErrorCode::Forbidden);
    let _: Value = call(&op, commands::JOBS_LIST, Value::Null).await;

    // The admin: a schedule created and removed, a token revoked.
    let spec = json!({"kind": "cron", "expr": "@daily", "tz": "UTC"});
    let made: Value =
        call(&admin, commands::SCHEDULES_CREATE, json!({"target": "*", "command": "ping", "spec": spec})).await;
    let schedule = made["id"].as_str().unwrap().to_owned();
    let _: Value = call(&admin, commands::SCHEDULES_REMOVE, json!({"id": schedule})).await;
    let _: Value = call(&admin, commands::TOKENS_REVOKE, json!({"name": "ci"})).await;
    // Unknown things are plain errors, not audited refusals.
    assert_eq!(refused(&admin, commands::TOKENS_REVOKE, json!({"name": "nobody"})).await, ErrorCode::NotFound);
    // A plain request to one device is recorded when refused (here: the token is revoked), not
    // when sent (programs call at a high rate; their jobs are recorded).
    admin.request("web-1", "ping", bytes::Bytes::from_static(b"null"), WAIT).await.unwrap();
    let e = op.request("web-1", "ping", bytes::Bytes::from_static(b"null"), WAIT).await.err().unwrap();
    assert_eq!(e.code(), Some(&ErrorCode::Forbidden), "{e}");
    // What the server itself starts (as the scheduler's firings do) comes from no client: not recorded.
    let spec = JobSpec {
        command: "ping".into(),
        target: "web-1".into(),
        args: None,
        deadline: Some(WAIT),
        select: Select::All,
        ttl: None,
        firing: None,
        rollout: Default::default(),
    };
    let internal = Requester::new(Identity::admin("in-process"));
    let mut handle = server.server.broker().submit(&internal, spec).unwrap();
    while !matches!(handle.events.next().await, Some(JobEvent::Ended(_)) | None) {}

    let full: Vec<AuditInfo> = call(&admin, commands::AUDIT_LIST, Value::Null).await;
    let all = &full;
    let job_id = job.summary.job.clone();
    assert_eq!(
        lines(all),
        [
            "token.add ci ok".to_owned(),
            "job.submit web-1 ok".into(),
            "job.submit web-1 forbidden".into(),
            "device.revoke  forbidden".into(),
            "schedule.create * ok".into(),
            format!("schedule.remove {schedule} ok"),
            "token.revoke ci ok".into(),
            "request.send web-1 forbidden".into(),
        ]
    );
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    let all = &full[1..];
    let sent = &all[5];
    assert_eq!((sent.actor.as_str(), sent.role.as_str()), ("ci", "operator"));
    assert!(sent.source.starts_with("tcp 127.0.0.1:"), "{}", sent.source);
    let detail: Value = serde_json::from_str(sent.detail.as_ref().unwrap().get()).unwrap();
    assert_eq!(detail, json!({"command": "ping", "job": job_id}));
    let refusal: Value = serde_json::from_str(all[4].detail.as_ref().unwrap().get()).unwrap();
    assert_eq!(refusal["command"], "sleep");
    assert!(refusal["message"].as_str().unwrap().contains("ci"), "{refusal}");
    let revoke_try: Value = serde_json::from_str(all[3].detail.as_ref().unwrap().get()).unwrap();
    assert!(revoke_try["args"].as_str().unwrap().contains("web-1"), "{revoke_try}");
    let by_admin = &all[0];
    assert_eq!(by_admin.role, "admin-token");
    assert!(by_admin.actor.starts_with("op-"), "the admin session's name: {}", by_admin.actor);
    let created: Value = serde_json::from_str(all[2].detail.as_ref().unwrap().get()).unwrap();
    assert_eq!(created["schedule"], schedule.as_str());

    // `since` and `limit`.
    let newest: Vec<AuditInfo> = call(&admin, commands::AUDIT_LIST, json!({"limit": 2})).await;
    assert_eq!(lines(&newest), ["token.revoke ci ok", "request.send web-1 forbidden"]);
    let later: Vec<AuditInfo> = call(&admin, commands::AUDIT_LIST, json!({"since": "2999-01-01T00:00:00Z"})).await;
    assert!(later.is_empty());
    let since: Vec<AuditInfo> = call(&admin, commands::AUDIT_LIST, json!({"since": full[0].at})).await;
    assert!(since.iter().any(|e| e.id == full[0].id) && since.len() <= full.len(), "since is inclusive");
    assert_eq!(refused(&admin, commands::AUDIT_LIST, json!({"since": "yesterday"})).await, ErrorCode::BadArgs);

    // Only the admin reads it.
    let wall = token(&admin, "wall", "viewer").await;
    let viewer = connect(&server, &wall).await;
    assert_eq!(refused(&viewer, commands::AUDIT_LIST, Value::Null).await, ErrorCode::Forbidden);
    assert_eq!(refused(&viewer, commands::SIGNAL, json!({"message": "ping"})).await, ErrorCode::Forbidden);
    assert_eq!(refused(&viewer, commands::SIGNAL, json!({"message": "QUIT"})).await, ErrorCode::Forbidden);
    let boss = token(&admin, "boss", "admin").await;
    let admin2 = connect(&server, &boss).await;
    let read: Vec<AuditInfo> = call(&admin2, commands::AUDIT_LIST, json!({"limit": 2})).await;
    assert_eq!(
        lines(&read),
        ["server.signal  forbidden", "token.add boss ok"],
        "an admin token reads it; a refused read or PING is no entry, a refused QUIT is"
    );
    assert_eq!((read[1].actor.as_str(), read[1].role.as_str()), ("wall", "viewer"));
}

#[tokio::test]
async fn the_api_and_reloads_are_recorded_and_the_api_lists_them() {
    let server = TestServer::start().await;
    let admin = server.operator(Transport::Tcp).await;
    let handlers = basic_handlers().on("wait", |c: orb_client::Context| async move {
        c.cancel.cancelled().await;
        Ok(Value::Null)
    });
    let _w1 = server.agent(Transport::Tcp, "web-1", &[], handlers).await;
    let wall = token(&admin, "wall", "viewer").await;
    let base = format!("http://{}", server.server.http_addr());
    let http = reqwest::Client::builder().timeout(WAIT).build().unwrap();
    let admin_token = server.server.admin_token().expose().to_owned();

    // A job over the API, cancelled over the API; a viewer's refused cancel.
    let resp = http
        .post(format!("{base}/v1/jobs"))
        .bearer_auth(&admin_token)
        .json(&json!({"target": "web-1", "command": "wait"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::ACCEPTED);
    let job = resp.json::<Value>().await.unwrap()["job"].as_str().unwrap().to_owned();
    let resp = http.delete(format!("{base}/v1/jobs/{job}")).bearer_auth(&wall).send().await.unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::FORBIDDEN);
    let resp = http.delete(format!("{base}/v1/jobs/{job}")).bearer_auth(&admin_token).send().await.unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::OK);

    // A reload, as the host.
    let cfg = orb_server::ServerConfig::for_tests(server.data.path().to_path_buf());
    server.server.reload(cfg).unwrap();

    let resp = http.get(format!("{base}/v1/audit")).bearer_auth(&admin_token).send().await.unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    let all: Vec<AuditInfo> = resp.json().await.unwrap();
    assert_eq!(
        lines(&all),
        [
            "token.add wall ok".to_owned(),
            "job.submit web-1 ok".into(),
            format!("job.cancel {job} forbidden"),
            format!("job.cancel {job} ok"),
            "config.reload config ok".into(),
        ]
    );
    let (submitted, refused_cancel, reload) = (&all[3], &all[2], &all[0]);
    assert_eq!((submitted.actor.as_str(), submitted.role.as_str()), ("http", "admin-token"));
    assert!(submitted.source.starts_with("http 127.0.0.1:"), "{}", submitted.source);
    assert_eq!((refused_cancel.actor.as_str(), refused_cancel.role.as_str()), ("wall", "viewer"));
    assert_eq!((reload.actor.as_str(), reload.role.as_str(), reload.source.as_str()), ("server", "host", "reload"));

    // The query: since (inclusive, RFC 3339), limit; bad values are 400; a viewer is 403.
    let get =
        |query: &str, token: &str| http.get(format!("{base}/v1/audit?{query}")).bearer_auth(token.to_owned()).send();
    let resp = get("limit=1", &admin_token).await.unwrap();
    assert_eq!(lines(&resp.json::<Vec<AuditInfo>>().await.unwrap()), ["config.reload config ok"]);
    let resp = get("since=2999-01-01T00:00:00Z", &admin_token).await.unwrap();
    assert!(resp.json::<Vec<AuditInfo>>().await.unwrap().is_empty());
    for bad in ["since=soon", "limit=0", "limit=1001"] {
        assert_eq!(get(bad, &admin_token).await.unwrap().status(), reqwest::StatusCode::BAD_REQUEST, "{bad}");
    }
    assert_eq!(get("", &wall).await.unwrap().status(), reqwest::StatusCode::FORBIDDEN);
}

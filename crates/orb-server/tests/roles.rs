//! Operator tokens and roles (issue 15): the admin makes tokens (shown once, kept hashed); a
//! `viewer` reads and changes nothing; an `operator` sends only the commands its
//! `[[acl.operators]]` rules allow, only to the devices they reach by operator-set tags (a
//! device's own tags widen nothing), and never touches the registry or the tokens; a revoked
//! token is refused at its session's next command and at its next hello; the same roles hold
//! over the HTTP API.
#![allow(clippy::unwrap_used)]

use orb_client::{Client, ClientConfig, ClientError, Handlers, JobRequest};
use orb_proto::ErrorCode;
use orb_proto::message::commands;
use orb_server::config::OperatorRuleConfig;
use orb_testkit::{TestServer, Transport, WAIT, basic_handlers, call, finish_job, refused};
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
    assert_eq!(job.devices(), ["web-1"], "web-2's own tag widens nothing");
    let e = op.submit(JobRequest::new("web-1", "sleep").deadline(WAIT)).await.err().unwrap();
    assert_eq!(e.code(), Some(&ErrorCode::Forbidden), "{e}");
    let e = op.submit(JobRequest::new("web-2", "ping").deadline(WAIT)).await.err().unwrap();
    assert_eq!(e.code(), Some(&ErrorCode::Forbidden), "{e}");
    assert_eq!(refused(&op, commands::DEVICES_ADD, json!({"id": "x-1"})).await, ErrorCode::Forbidden);
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

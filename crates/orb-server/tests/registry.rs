//! The device registry end to end: enrollment (with and without an id), welcome back across
//! server restarts, no impersonation, revocation and removal closing live sessions, operator tags
//! with sources, selectors over known (offline) devices, inventory with live connection
//! statistics, and bad input that changes nothing.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use orb_client::{Client, ClientConfig, ClientError, Handlers, JobRequest};
use orb_proto::message::{DeviceInfo, DevicesQuery, commands};
use orb_proto::registry::{DeviceCredential, DeviceDetail, DevicesSummary};
use orb_proto::{ErrorCode, Status};
use orb_testkit::{TestServer, Transport, WAIT, basic_handlers, call, finish_job, refused, within};
use serde_json::{Value, json};

fn enrolling(server: &TestServer, id: Option<&str>) -> ClientConfig {
    let mut cfg = server.agent_config(Transport::Tcp, "unused");
    cfg.id = id.map(str::to_owned);
    cfg
}

fn with_secret(server: &TestServer, id: &str, secret: &str) -> ClientConfig {
    let mut cfg = server.agent_config(Transport::Tcp, id);
    cfg.token = None;
    cfg.secret = Some(secret.to_owned());
    cfg
}

async fn refusal(cfg: ClientConfig) -> ErrorCode {
    match Client::connect(cfg, Handlers::new()).await {
        Err(ClientError::Refused(e)) => e.code,
        Ok(c) => panic!("connected as {} but should have been refused", c.welcome().id),
        Err(e) => panic!("unexpected error {e}"),
    }
}

#[tokio::test]
async fn an_agent_without_an_id_enrolls_and_is_welcomed_back_across_a_server_restart() {
    let server = TestServer::start().await;
    let first = Client::connect(enrolling(&server, None), basic_handlers()).await.unwrap();
    let id = first.welcome().id.clone();
    let secret = first.welcome().secret.clone().expect("a secret is issued at enrollment");
    assert!(id.starts_with("dev-"), "{id}");
    assert!(!first.welcome().known, "a new device is not known yet");
    let first_seen = first.welcome().first_seen.clone().unwrap();
    first.close().await;

    let again = Client::connect(with_secret(&server, &id, &secret), basic_handlers()).await.unwrap();
    assert_eq!(again.welcome().id, id);
    assert!(again.welcome().known);
    assert_eq!(again.welcome().first_seen.as_ref(), Some(&first_seen));
    assert_eq!(again.welcome().secret, None, "a secret is issued once");
    again.close().await;

    let server = server.restart(|_| {}).await;
    let back = Client::connect(with_secret(&server, &id, &secret), basic_handlers()).await.unwrap();
    assert!(back.welcome().known, "the registry survived the restart");
    assert_eq!(back.welcome().first_seen.as_ref(), Some(&first_seen));
    let op = server.operator(Transport::Tcp).await;
    let out = finish_job(
        within("ack", op.submit(JobRequest::new(&id, "ping").args(bytes::Bytes::from_static(b"null")).deadline(WAIT)))
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(out.result(&id).status, Status::Ok);
}

#[tokio::test]
async fn an_enrolled_id_cannot_be_taken_with_the_agent_token_or_a_wrong_secret() {
    let server = TestServer::start().await;
    let cam = server.agent(Transport::Tcp, "cam-1", &[], basic_handlers()).await;
    let secret = server.secret_of("cam-1").unwrap();

    assert_eq!(refusal(enrolling(&server, Some("cam-1"))).await, ErrorCode::IdTaken);
    let mut legacy = enrolling(&server, Some("cam-1"));
    legacy.enroll = false;
    assert_eq!(refusal(legacy).await, ErrorCode::IdTaken, "not even as a v1 agent");
    let mut admin = enrolling(&server, Some("cam-1"));
    admin.token = Some(server.server.admin_token().expose().to_owned());
    assert_eq!(refusal(admin).await, ErrorCode::IdTaken, "not even with the admin token");
    assert_eq!(refusal(with_secret(&server, "cam-1", &"0".repeat(64))).await, ErrorCode::AuthFailed);
    let _other = server.agent(Transport::Tcp, "cam-2", &[], basic_handlers()).await;
    assert_eq!(refusal(with_secret(&server, "cam-2", &secret)).await, ErrorCode::AuthFailed, "secrets are per id");
    assert_eq!(refusal(with_secret(&server, "cam-9", &secret)).await, ErrorCode::AuthFailed, "unknown id: no hint");

    // The impostors did not disturb the real session; its own secret may replace it.
    let op = server.operator(Transport::Tcp).await;
    let info: DeviceDetail = call(&op, commands::DEVICES_SHOW, json!({"id": "cam-1"})).await;
    assert!(info.connected);
    assert_eq!(info.credential, "secret");
    let replacement = Client::connect(with_secret(&server, "cam-1", &secret), basic_handlers()).await.unwrap();
    within("the old session closes", cam.closed()).await;
    replacement.close().await;
}

#[tokio::test]
async fn a_v1_agent_without_enroll_keeps_using_the_token_and_can_upgrade_later() {
    let server = TestServer::start().await;
    let mut legacy = enrolling(&server, Some("old-1"));
    legacy.enroll = false;
    let c = Client::connect(legacy.clone(), Handlers::new()).await.unwrap();
    assert_eq!(c.welcome().secret, None);
    c.close().await;
    let c = Client::connect(legacy, Handlers::new()).await.unwrap();
    assert!(c.welcome().known);
    c.close().await;
    // Upgraded: now it enrolls, gets a secret, and the token alone no longer connects as it.
    let c = Client::connect(enrolling(&server, Some("old-1")), Handlers::new()).await.unwrap();
    assert!(c.welcome().secret.is_some());
    c.close().await;
    assert_eq!(refusal(enrolling(&server, Some("old-1"))).await, ErrorCode::IdTaken);
}

#[tokio::test]
async fn a_pre_registered_device_connects_with_its_credential_and_revoke_closes_it_for_good() {
    let server = TestServer::start().await;
    let op = server.operator(Transport::Tcp).await;
    let cred: DeviceCredential = call(&op, commands::DEVICES_ADD, json!({"id": "gw-7", "tags": {"site": "lab"}})).await;
    assert_eq!(cred.id, "gw-7");
    assert_eq!(refused(&op, commands::DEVICES_ADD, json!({"id": "gw-7"})).await, ErrorCode::DeviceExists);

    let gw = Client::connect(with_secret(&server, "gw-7", &cred.secret), basic_handlers()).await.unwrap();
    assert!(!gw.welcome().known, "added but never connected before");
    let d: DeviceDetail = call(&op, commands::DEVICES_SHOW, json!({"id": "gw-7"})).await;
    assert_eq!(d.operator_tags["site"], "lab");

    let revoked: DeviceDetail = call(&op, commands::DEVICES_REVOKE, json!({"id": "gw-7"})).await;
    assert!(revoked.revoked);
    assert_eq!(revoked.credential, "none");
    let reason = within("the revoked session closes", gw.closed()).await;
    assert!(reason.contains("revoked"), "{reason}");
    // The secret alone learns nothing (auth_failed); the agent token holder is told why.
    assert_eq!(refusal(with_secret(&server, "gw-7", &cred.secret)).await, ErrorCode::AuthFailed);
    assert_eq!(refusal(enrolling(&server, Some("gw-7"))).await, ErrorCode::Revoked);

    // Still revoked after a restart.
    let server = server.restart(|_| {}).await;
    assert_eq!(refusal(with_secret(&server, "gw-7", &cred.secret)).await, ErrorCode::AuthFailed);
    assert_eq!(refusal(enrolling(&server, Some("gw-7"))).await, ErrorCode::Revoked);
    let op = server.operator(Transport::Tcp).await;
    let s: DevicesSummary = call(&op, commands::DEVICES_SUMMARY, Value::Null).await;
    assert_eq!(s, DevicesSummary { known: 1, connected: 0, revoked: 1 });
}

#[tokio::test]
async fn removing_a_device_closes_its_session_and_lets_the_id_enroll_again() {
    let server = TestServer::start().await;
    let a = server.agent(Transport::Ws, "tmp-1", &[], Handlers::new()).await;
    let op = server.operator(Transport::Tcp).await;
    let _: Value = call(&op, commands::DEVICES_REMOVE, json!({"id": "tmp-1"})).await;
    let reason = within("the removed session closes", a.closed()).await;
    assert!(reason.contains("removed"), "{reason}");
    assert_eq!(refused(&op, commands::DEVICES_SHOW, json!({"id": "tmp-1"})).await, ErrorCode::DeviceNotFound);
    let again = Client::connect(enrolling(&server, Some("tmp-1")), Handlers::new()).await.unwrap();
    assert!(again.welcome().secret.is_some());
}

#[tokio::test]
async fn operator_tags_win_persist_and_select_offline_devices() {
    let server = TestServer::start().await;
    let a = server.agent(Transport::Tcp, "s-1", &[("role", "sensor"), ("floor", "2")], Handlers::new()).await;
    let op = server.operator(Transport::Tcp).await;
    let d: DeviceDetail =
        call(&op, commands::DEVICES_TAG, json!({"id": "s-1", "set": {"floor": "3", "owner": "ops"}})).await;
    assert_eq!(
        d.tags,
        BTreeMap::from([
            ("floor".into(), "3".into()),
            ("owner".into(), "ops".into()),
            ("role".into(), "sensor".into())
        ])
    );
    assert_eq!(d.reported_tags["floor"], "2", "the agent's own report is kept");
    assert_eq!(d.operator_tags["floor"], "3");
    let d: DeviceDetail = call(&op, commands::DEVICES_TAG, json!({"id": "s-1", "remove": ["owner"]})).await;
    assert!(!d.tags.contains_key("owner"));
    a.close().await;

    let server = server.restart(|_| {}).await;
    let op = server.operator(Transport::Tcp).await;
    // Nobody is connected, yet the selector matches the stored tags: the target is offline.
    let job = within(
        "ack",
        op.submit(JobRequest::new("tag:floor=3", "ping").args(bytes::Bytes::from_static(b"null")).deadline(WAIT)),
    )
    .await
    .unwrap();
    assert_eq!(job.accepted.targets, ["s-1"]);
    let out = finish_job(job).await;
    assert_eq!(out.result("s-1").status, Status::Offline);
    assert_eq!(out.error_code("s-1"), "device_offline");
    let none =
        op.submit(JobRequest::new("tag:floor=2", "ping").args(bytes::Bytes::from_static(b"null")).deadline(WAIT)).await;
    assert!(matches!(none, Err(ClientError::Remote(e)) if e.code == ErrorCode::NoMatch), "operator tags win");
}

#[tokio::test]
async fn inventory_lists_known_devices_and_shows_live_connection_statistics() {
    let server = TestServer::start().await;
    let on = server.agent(Transport::Ws, "on-1", &[("role", "web")], basic_handlers()).await;
    let off = server.agent(Transport::Tcp, "off-1", &[], Handlers::new()).await;
    off.close().await;
    let op = server.operator(Transport::Tcp).await;
    let _ = finish_job(
        within(
            "ack",
            op.submit(JobRequest::new("on-1", "ping").args(bytes::Bytes::from_static(b"null")).deadline(WAIT)),
        )
        .await
        .unwrap(),
    )
    .await;
    // Wait (bounded) for the closed session to be unregistered.
    server.wait_for_agents(1).await;

    let all: Vec<DeviceInfo> = call(&op, commands::DEVICES_LIST, json!({})).await;
    let ids: Vec<(&str, bool)> = all.iter().map(|d| (d.id.as_str(), d.connected)).collect();
    assert_eq!(ids, [("off-1", false), ("on-1", true)]);
    let q = DevicesQuery { selector: None, connected: true, schemas: false };
    let live: Vec<DeviceInfo> = call(&op, commands::DEVICES_LIST, serde_json::to_value(q).unwrap()).await;
    assert_eq!(live.len(), 1);
    let s: DevicesSummary = call(&op, commands::DEVICES_SUMMARY, Value::Null).await;
    assert_eq!((s.known, s.connected), (2, 1));

    let d: DeviceDetail = call(&op, commands::DEVICES_SHOW, json!({"id": "on-1"})).await;
    assert_eq!(d.connections, 1);
    assert_eq!(d.reported_tags["role"], "web");
    assert!(d.commands.contains(&"ping".to_owned()));
    assert!(d.agent_version.as_deref().unwrap().starts_with("orb-client/"));
    assert!(d.user_agent.is_some(), "the WebSocket handshake's user agent or the agent software");
    let c = d.connection.expect("live connection stats");
    assert_eq!(c.id, on.welcome().session);
    assert_eq!(c.transport, "ws");
    assert!(c.received_messages >= 2, "hello and the ping's reply: {c:?}");
    assert!(c.sent_messages >= 2, "welcome and the ping command: {c:?}");
    assert!(c.received_bytes > 0 && c.sent_bytes > 0);
    assert!(c.last_received.is_some() && c.last_sent.is_some());

    let gone: DeviceDetail = call(&op, commands::DEVICES_SHOW, json!({"id": "off-1"})).await;
    assert!(!gone.connected && gone.connection.is_none());
    assert!(gone.last_seen.is_some() && gone.first_seen.is_some());
    assert_eq!(gone.last_remote_addr.as_deref().map(|a| a.starts_with("127.0.0.1:")), Some(true));
}

#[tokio::test]
async fn a_quick_reconnection_counts_as_a_flap() {
    let server = TestServer::start().await;
    for _ in 0..3 {
        let a = server.agent(Transport::Tcp, "flappy", &[], Handlers::new()).await;
        a.close().await;
        server.wait_for_agents(0).await;
    }
    let op = server.operator(Transport::Tcp).await;
    let d: DeviceDetail = call(&op, commands::DEVICES_SHOW, json!({"id": "flappy"})).await;
    assert_eq!(d.connections, 3);
    assert_eq!(d.flaps, 2, "the second and third connections followed a disconnection within a minute");
}

#[tokio::test]
async fn bad_registry_requests_are_refused_and_change_nothing() {
    let server = TestServer::start().await;
    let op = server.operator(Transport::Tcp).await;
    let _: DeviceCredential = call(&op, commands::DEVICES_ADD, json!({"id": "x-1"})).await;
    for (cmd, args, code) in [
        (commands::DEVICES_SHOW, json!({"id": "nope"}), ErrorCode::DeviceNotFound),
        (commands::DEVICES_REVOKE, json!({"id": "nope"}), ErrorCode::DeviceNotFound),
        (commands::DEVICES_REMOVE, json!({"id": "nope"}), ErrorCode::DeviceNotFound),
        (commands::DEVICES_TAG, json!({"id": "nope", "set": {"a": "b"}}), ErrorCode::DeviceNotFound),
        (commands::DEVICES_ADD, json!({"id": "x-1"}), ErrorCode::DeviceExists),
        (commands::DEVICES_ADD, json!({"id": "bad id!"}), ErrorCode::BadId),
        (commands::DEVICES_ADD, json!({"id": "$orb"}), ErrorCode::BadId),
        (commands::DEVICES_TAG, json!({"id": "x-1", "set": {"a=b": "c"}}), ErrorCode::BadArgs),
        (commands::DEVICES_SHOW, json!({"name": "x-1"}), ErrorCode::BadArgs),
    ] {
        assert_eq!(refused(&op, cmd, args.clone()).await, code, "{cmd} {args}");
    }
    let s: DevicesSummary = call(&op, commands::DEVICES_SUMMARY, Value::Null).await;
    assert_eq!(s, DevicesSummary { known: 1, connected: 0, revoked: 0 });
    let d: DeviceDetail = call(&op, commands::DEVICES_SHOW, json!({"id": "x-1"})).await;
    assert!(d.operator_tags.is_empty() && d.credential == "secret");

    // Registry commands are for operators only.
    let agent = server.agent(Transport::Tcp, "a-1", &[], Handlers::new()).await;
    assert_eq!(refused(&agent, commands::DEVICES_ADD, json!({"id": "y-1"})).await, ErrorCode::Forbidden);
}

#[tokio::test]
async fn a_malformed_store_url_stops_the_server_from_starting() {
    let data = tempfile::tempdir().unwrap();
    let mut cfg = orb_server::ServerConfig::for_tests(data.path().to_path_buf());
    cfg.store.url = Some("mysql://db/orb".into());
    let err = orb_server::ServerBuilder::new(cfg).start().await.err().expect("refused");
    assert!(err.to_string().contains("bad store url"), "{err}");
    assert!(!data.path().join("orb.db").exists(), "nothing was created");
}

#[tokio::test]
async fn a_revocation_racing_a_tag_change_stays_revoked() {
    let server = TestServer::start().await;
    let op = server.operator(Transport::Tcp).await;
    let op2 = server.operator(Transport::Tcp).await;
    for i in 0..20 {
        let id = format!("race-{i}");
        let cred: DeviceCredential = call(&op, commands::DEVICES_ADD, json!({ "id": id })).await;
        let (_, _): (DeviceDetail, DeviceDetail) = tokio::join!(
            call(&op, commands::DEVICES_REVOKE, json!({ "id": id })),
            call(&op2, commands::DEVICES_TAG, json!({ "id": id, "set": {"n": i.to_string()} })),
        );
        assert_eq!(refusal(with_secret(&server, &id, &cred.secret)).await, ErrorCode::AuthFailed, "{id}");
        let d: DeviceDetail = call(&op, commands::DEVICES_SHOW, json!({ "id": id })).await;
        assert!(d.revoked && d.operator_tags["n"] == i.to_string(), "{d:?}");
    }
}

#[tokio::test]
async fn a_second_server_on_the_same_data_folder_is_refused_and_changes_nothing() {
    let server = TestServer::start().await;
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let started = std::sync::Mutex::new(Some(started_tx));
    let handlers = Handlers::new().on("hang", move |_c: orb_client::Context| {
        if let Some(tx) = started.lock().unwrap().take() {
            let _ = tx.send(());
        }
        std::future::pending::<Result<Value, orb_proto::ErrorBody>>()
    });
    let _a = server.agent(Transport::Tcp, "busy-1", &[], handlers).await;
    let op = server.operator(Transport::Tcp).await;
    let job = within(
        "ack",
        op.submit(JobRequest::new("busy-1", "hang").args(bytes::Bytes::from_static(b"null")).deadline(WAIT)),
    )
    .await
    .unwrap();
    within("the handler starts", started_rx).await.unwrap();

    let cfg = orb_server::ServerConfig::for_tests(server.data.path().to_path_buf());
    let err = orb_server::ServerBuilder::new(cfg).start().await.err().expect("refused");
    assert!(matches!(err, orb_server::ServerError::DataDirLocked { .. }), "{err}");
    // The first server's job was not ended by the second one's start.
    server.server.store().flush().await.unwrap();
    let d: orb_proto::history::JobDetail = call(&op, commands::JOBS_SHOW, json!({ "id": job.id() })).await;
    assert_eq!(d.job.state, orb_proto::history::JobPhase::Running);
    assert_eq!(d.pending, ["busy-1"]);
}

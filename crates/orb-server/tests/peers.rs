//! Device-to-device commands and the agents' pub/sub allow-lists (issue 13, `[acl]`): an agent
//! may send a command (a job or a plain request) to other devices only where an `[acl.peers]`
//! rule allows it, matched on operator-set tags (never the tags a device reports); the job runs
//! with the same machinery and the results come back to the agent. Publish and subscribe
//! allow-lists (with `{id}`) bind agents, not operators, and a last will must be publishable.
//! A reload changes all of it at once, for connections already open.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use bytes::Bytes;
use orb_client::{ClientError, JobRequest};
use orb_proto::{ErrorCode, Status};
use orb_server::config::{AclConfig, PeerRuleConfig, ServerConfig};
use orb_testkit::{TestServer, Transport, WAIT, basic_handlers, finish_job};

fn refused<T>(r: Result<T, ClientError>) -> orb_proto::ErrorBody {
    match r {
        Err(ClientError::Remote(e)) => e,
        Err(other) => panic!("not refused by the server: {other:?}"),
        Ok(_) => panic!("not refused at all"),
    }
}

fn controllers_to_workers() -> AclConfig {
    AclConfig {
        peers: vec![PeerRuleConfig {
            from: "tag:role=controller".into(),
            to: "w-*".into(),
            commands: vec!["echo".into(), "sys.*".into()],
        }],
        ..AclConfig::default()
    }
}

async fn tag(server: &TestServer, id: &str, key: &str, value: &str) {
    let set = BTreeMap::from([(key.to_owned(), value.to_owned())]);
    server.server.broker().registry().set_operator_tags(id, &set, &[]).await.unwrap();
}

fn reloaded(server: &TestServer, acl: AclConfig) {
    let cfg = ServerConfig { acl, ..ServerConfig::for_tests(server.data.path().to_path_buf()) };
    server.server.reload(cfg).unwrap();
}

#[tokio::test]
async fn device_to_device_commands_are_denied_by_default() {
    let server = TestServer::start().await;
    let ctl = server.agent(Transport::Tcp, "ctl-1", &[], basic_handlers()).await;
    let _w = server.agent(Transport::Tcp, "w-1", &[], basic_handlers()).await;
    let e = refused(ctl.submit(JobRequest::new("w-1", "echo")).await);
    assert_eq!(e.code, ErrorCode::Forbidden);
    assert!(e.message.contains("acl.peers"), "{}", e.message);
    let e = refused(ctl.request("w-1", "echo", Bytes::from_static(b"1"), WAIT).await);
    assert_eq!(e.code, ErrorCode::Forbidden);
}

#[tokio::test]
async fn an_allowed_agent_runs_a_job_on_the_devices_its_rule_reaches() {
    let server = TestServer::start_with(|cfg| cfg.acl = controllers_to_workers(), |b| b).await;
    // The device claims the role itself: that counts for nothing.
    let ctl = server.agent(Transport::Tcp, "ctl-1", &[("role", "controller")], basic_handlers()).await;
    let _w1 = server.agent(Transport::Tcp, "w-1", &[], basic_handlers()).await;
    let _w2 = server.agent(Transport::Ws, "w-2", &[], basic_handlers()).await;
    let _cam = server.agent(Transport::Tcp, "cam-1", &[], basic_handlers()).await;
    assert_eq!(refused(ctl.submit(JobRequest::new("*", "echo")).await).code, ErrorCode::Forbidden);

    tag(&server, "ctl-1", "role", "controller").await;
    // Every device matches `*`; only the workers are reached (not cam-1, not itself).
    let job = ctl.submit(JobRequest::new("*", "echo").args(Bytes::from_static(br#"{"n":7}"#))).await.unwrap();
    let out = finish_job(job).await;
    assert_eq!(out.devices(), ["w-1", "w-2"]);
    assert_eq!(out.ok_json("w-2"), serde_json::json!({"n": 7}));
    assert_eq!(out.count(Status::Ok), 2);
    // A plain request to an allowed device; one outside the rule, or a command it does not
    // list, is refused and nothing runs.
    let reply = ctl.request("w-1", "echo", Bytes::from_static(b"[\"a\",\"b\"]"), WAIT).await.unwrap();
    assert_eq!(&reply[..], b"[\"a\",\"b\"]");
    assert_eq!(refused(ctl.request("cam-1", "echo", Bytes::from_static(b"1"), WAIT).await).code, ErrorCode::Forbidden);
    let e = refused(ctl.submit(JobRequest::new("cam-*", "echo")).await);
    assert!(e.message.contains("no device matching 'cam-*'"), "{}", e.message);
    assert_eq!(refused(ctl.submit(JobRequest::new("w-1", "ping")).await).code, ErrorCode::Forbidden);
    // The workers may not answer back in kind: rules are one-way.
    let w1 = server.agent(Transport::Tcp, "w-9", &[], basic_handlers()).await;
    assert_eq!(refused(w1.submit(JobRequest::new("ctl-1", "echo")).await).code, ErrorCode::Forbidden);
    // Schedules stay an operator's business.
    let e = refused(ctl.call("$orb.schedules.list", Bytes::from_static(b"{}"), WAIT).await);
    assert_eq!(e.code, ErrorCode::Forbidden);

    // A reload that drops the rule takes effect at once for the open connection.
    reloaded(&server, AclConfig::default());
    assert_eq!(refused(ctl.submit(JobRequest::new("w-1", "echo")).await).code, ErrorCode::Forbidden);
}

#[tokio::test]
async fn agents_publish_and_subscribe_where_the_allow_lists_say() {
    let acl = AclConfig {
        agent_publish: vec!["telemetry.{id}.>".into()],
        agent_subscribe: vec!["commands.{id}.>".into(), "broadcast.>".into()],
        ..AclConfig::default()
    };
    let server = TestServer::start_with(|cfg| cfg.acl = acl.clone(), |b| b).await;
    let gw = server.agent(Transport::Tcp, "gw-1", &[], basic_handlers()).await;
    let op = server.operator(Transport::Tcp).await;
    let body = || Bytes::from_static(b"1");
    gw.publish("telemetry.gw-1.cpu", body(), WAIT).await.unwrap();
    // Retaining is server-wide state: not an agent's unless acl.agent_retain says so.
    let e = refused(gw.publish_retained("telemetry.gw-1.cpu", body(), WAIT).await);
    assert!(e.message.contains("acl.agent_retain"), "{}", e.message);
    let e = refused(gw.publish("telemetry.gw-2.cpu", body(), WAIT).await);
    assert_eq!(e.code, ErrorCode::Forbidden);
    assert!(e.message.contains("acl.agent_publish"), "{}", e.message);
    gw.subscribe("commands.gw-1.>", WAIT).await.unwrap();
    gw.subscribe("broadcast.*", WAIT).await.unwrap();
    assert_eq!(refused(gw.subscribe("commands.>", WAIT).await).code, ErrorCode::Forbidden);
    // Operators are not bound by the agents' lists.
    op.publish("anything.at.all", body(), WAIT).await.unwrap();
    op.subscribe(">", WAIT).await.unwrap();

    // A last will on a topic the agent may not publish on is refused at the hello.
    let mut cfg = server.agent_config(Transport::Tcp, "gw-2");
    cfg.will = Some(orb_proto::message::Will { topic: "status.gw-2".into(), body: None, retain: false });
    match orb_client::Client::connect(cfg, basic_handlers()).await {
        Err(ClientError::Refused(e)) => assert_eq!(e.code, ErrorCode::Forbidden, "{}", e.message),
        Err(other) => panic!("not refused by the server: {other:?}"),
        Ok(_) => panic!("a will it may not publish was accepted"),
    }

    // Reloaded with the defaults (any topic outside `$orb.`), the open connection may publish.
    reloaded(&server, AclConfig::default());
    gw.publish("telemetry.gw-2.cpu", body(), WAIT).await.unwrap();
    gw.subscribe(">", WAIT).await.unwrap();
}

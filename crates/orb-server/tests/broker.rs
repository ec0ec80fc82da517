//! The broker's one door without any session: a job submitted in-process yields typed events, a
//! request's reply reaches an in-process sink, and the `$orb.` services answer typed values, so
//! the HTTP API, the scheduler and durable queues can be adapters with no session to fake.
#![allow(clippy::unwrap_used)]

use std::sync::Mutex;

use bytes::Bytes;
use orb_client::Context;
use orb_proto::message::{DevicesQuery, Select};
use orb_proto::{ErrorCode, Status};
use orb_server::broker::{CallSpec, RequestSpec};
use orb_server::identity::{Identity, Requester};
use orb_server::jobs::{JobEvent, JobSpec};
use orb_server::router::correlation::{Reply, ReplySink};
use orb_testkit::{TestServer, Transport, WAIT, basic_handlers, within};
use serde_json::json;
use tokio::sync::oneshot;

fn admin() -> Requester {
    Requester::new(Identity::admin("in-process"))
}

#[tokio::test]
async fn a_job_submitted_through_the_broker_yields_typed_events_with_no_session() {
    let server = TestServer::start().await;
    let handlers = basic_handlers().on("whoami", |c: Context| async move { Ok(json!({"from": c.from})) });
    let _a = server.agent(Transport::Tcp, "b-1", &[], handlers.clone()).await;
    let _b = server.agent(Transport::Ws, "b-2", &[], handlers).await;
    let broker = server.server.broker();
    let spec = JobSpec {
        command: "whoami".into(),
        target: "b-*".into(),
        args: None,
        deadline: Some(WAIT),
        select: Select::All,
        ttl: None,
        firing: None,
        rollout: Default::default(),
    };
    let mut handle = broker.submit(&admin(), spec).unwrap();
    assert_eq!(handle.accepted.targets, vec!["b-1", "b-2"]);
    let mut settled = Vec::new();
    let summary = loop {
        match within("a job event", handle.events.next()).await.expect("the stream ends with the summary") {
            JobEvent::Settled(s) => settled.push(s),
            JobEvent::Ended(summary) => break summary,
            JobEvent::Lagged { .. } | JobEvent::Batch(_) => panic!("nothing is slow or batched here"),
        }
    };
    assert_eq!(within("the end of the stream", handle.events.next()).await, None);
    settled.sort_by(|a, b| a.device.cmp(&b.device));
    assert_eq!(settled.len(), 2);
    for s in &settled {
        assert_eq!(s.status, Status::Ok);
        let v: serde_json::Value = serde_json::from_slice(s.result.as_ref().unwrap()).unwrap();
        assert_eq!(v, json!({"from": "in-process"}), "the requester's name reaches the device as `from`");
        assert!(s.elapsed_ms.is_some());
    }
    assert_eq!(summary.summary[&Status::Ok], 2);
}

struct Once(Mutex<Option<oneshot::Sender<Reply>>>);

impl ReplySink for Once {
    fn complete(self: Box<Self>, reply: Reply) {
        if let Some(tx) = self.0.lock().unwrap().take() {
            let _ = tx.send(reply);
        }
    }

    fn is_gone(&self) -> bool {
        self.0.lock().unwrap().as_ref().is_none_or(|tx| tx.is_closed())
    }
}

fn sink() -> (Box<dyn ReplySink>, oneshot::Receiver<Reply>) {
    let (tx, rx) = oneshot::channel();
    (Box::new(Once(Mutex::new(Some(tx)))), rx)
}

#[tokio::test]
async fn requests_and_calls_through_the_broker_are_answered_to_in_process_sinks() {
    let server = TestServer::start_with(
        |_| {},
        |b| b.handler("sum", |c: Context| async move { Ok(json!(c.args::<Vec<i64>>()?.iter().sum::<i64>())) }),
    )
    .await;
    let _a = server.agent(Transport::Tcp, "r-1", &[], basic_handlers()).await;
    let broker = server.server.broker();

    let (reply_to, reply) = sink();
    let spec = RequestSpec {
        to: "r-1".into(),
        command: "echo".into(),
        args: Some(Bytes::from_static(br#"{"x":1}"#)),
        deadline: None,
    };
    broker.request(&admin(), spec, reply_to);
    let reply = within("the reply", reply).await.unwrap();
    assert_eq!(reply.from.unwrap().as_str(), "r-1");
    assert_eq!(reply.answer.unwrap(), Bytes::from_static(br#"{"x":1}"#));

    let (reply_to, reply) = sink();
    let offline = RequestSpec { to: "nobody".into(), command: "echo".into(), args: None, deadline: None };
    broker.request(&admin(), offline, reply_to);
    let refused = within("the refusal", reply).await.unwrap();
    assert_eq!(refused.answer.unwrap_err().code, ErrorCode::DeviceOffline);

    let call = CallSpec { command: "sum".into(), args: Some(Bytes::from_static(b"[1,2,3]")), deadline: None };
    assert_eq!(broker.call(&admin(), call).await.unwrap(), Bytes::from_static(b"6"));

    // The typed services answer typed values: what `$orb.devices.list` sends on the wire.
    let devices = broker.devices_list(&admin(), &DevicesQuery::default()).await.unwrap();
    assert_eq!(devices.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), vec!["r-1"]);
    let info = broker.server_info(&admin()).unwrap();
    assert_eq!(info.agents, 1);

    // The one policy applies to every adapter alike: a device identity may not submit jobs.
    let device = Requester::new(Identity::device(orb_proto::DeviceId::new("r-1").unwrap()));
    let spec = JobSpec {
        command: "ping".into(),
        target: "*".into(),
        args: None,
        deadline: None,
        select: Select::All,
        ttl: None,
        firing: None,
        rollout: Default::default(),
    };
    assert_eq!(broker.submit(&device, spec).err().unwrap().code, ErrorCode::Forbidden);
    assert_eq!(broker.devices_list(&device, &DevicesQuery::default()).await.unwrap_err().code, ErrorCode::Forbidden);
}

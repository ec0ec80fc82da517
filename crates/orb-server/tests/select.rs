//! A job's target selection mode (`select`): `online` targets only the matched devices connected
//! now and counts the others as skipped (in the ack and in the stored job); `all` (the default)
//! targets every known device; an `online` job that finds every matched device offline is
//! `no_match`; a mode the server does not know is `bad_request` naming it.
#![allow(clippy::unwrap_used)]

use orb_client::{ClientError, Job, JobRequest, Select};
use orb_proto::history::JobPhase;
use orb_proto::message::commands;
use orb_proto::registry::DeviceCredential;
use orb_proto::{ErrorCode, Status};
use orb_testkit::{TestServer, Transport, WAIT, basic_handlers, call, finish_job, hello_json, within};
use serde_json::{Value, json};

/// A server with `on-1` connected and `off-1` registered by an operator but never connected.
async fn fleet() -> (TestServer, orb_client::Client, orb_client::Client) {
    let server = TestServer::start().await;
    let agent = server.agent(Transport::Tcp, "on-1", &[], basic_handlers()).await;
    let op = server.operator(Transport::Ws).await;
    let _: DeviceCredential = call(&op, commands::DEVICES_ADD, json!({"id": "off-1"})).await;
    (server, agent, op)
}

fn refusal(r: Result<Job, ClientError>) -> orb_proto::ErrorBody {
    match r {
        Err(ClientError::Remote(e)) => e,
        Err(e) => panic!("expected a refusal, got {e}"),
        Ok(job) => panic!("expected a refusal, job {} was accepted", job.id()),
    }
}

#[tokio::test]
async fn an_online_job_skips_a_pre_registered_offline_device_counts_it_and_stores_the_count() {
    let (_server, _agent, op) = fleet().await;

    let job =
        within("the ack", op.submit(JobRequest::new("*", "ping").deadline(WAIT).select(Select::Online))).await.unwrap();
    assert_eq!(job.accepted.targets, ["on-1"]);
    assert_eq!(job.accepted.skipped, 1);
    let id = job.id().to_owned();
    let out = finish_job(job).await;
    assert_eq!(out.devices(), ["on-1"], "a skipped device gets no event");
    assert_eq!(out.count(Status::Ok), 1);
    assert_eq!(out.summary.summary.values().sum::<u64>(), 1, "the summary counts targets only");

    // Stored with the job: `$orb.jobs.show` and `$orb.jobs.list` say how many were skipped.
    let shown = orb_testkit::stored_until(&op, &id, |d| {
        d.job.state != JobPhase::Running && d.pending.is_empty() && !d.results.is_empty()
    })
    .await;
    assert_eq!((shown.job.targets, shown.job.skipped), (1, 1));
    let listed: Vec<Value> = call(&op, commands::JOBS_LIST, json!({})).await;
    assert_eq!(listed[0]["skipped"], 1, "{listed:?}");

    // The default targets every known device: the offline one ends as `offline`.
    let job = op.submit(JobRequest::new("*", "ping").deadline(WAIT)).await.unwrap();
    assert_eq!((job.accepted.targets.clone(), job.accepted.skipped), (vec!["off-1".to_owned(), "on-1".to_owned()], 0));
    let out = finish_job(job).await;
    assert_eq!((out.count(Status::Ok), out.count(Status::Offline)), (1, 1));
}

#[tokio::test]
async fn an_online_job_whose_matched_devices_are_all_offline_is_no_match_saying_so() {
    let (server, _agent, op) = fleet().await;
    let _: DeviceCredential = call(&op, commands::DEVICES_ADD, json!({"id": "off-2"})).await;
    let e = refusal(op.submit(JobRequest::new("off-*", "ping").deadline(WAIT).select(Select::Online)).await);
    assert_eq!(e.code, ErrorCode::NoMatch);
    assert_eq!(e.message, "no connected device matches 'off-*': 2 matched devices are offline");
    let e = refusal(op.submit(JobRequest::new("off-1", "ping").deadline(WAIT).select(Select::Online)).await);
    assert_eq!(e.message, "no connected device matches 'off-1': 1 matched device is offline");
    // A selector matching nothing at all says that, as before.
    let e = refusal(op.submit(JobRequest::new("nope-*", "ping").deadline(WAIT).select(Select::Online)).await);
    assert_eq!((e.code, e.message.as_str()), (ErrorCode::NoMatch, "no known device matches 'nope-*'"));
    drop(server);
}

/// The next frame that is not a ping from the server.
async fn next(raw: &mut orb_testkit::RawTcp) -> Value {
    within("an answer", async {
        loop {
            let f = raw.read_json().await.expect("a frame");
            if f["kind"] != "ping" {
                return f;
            }
        }
    })
    .await
}

#[tokio::test]
async fn a_select_the_server_does_not_know_is_bad_request_naming_it() {
    let (server, _agent, _op) = fleet().await;
    let mut raw = server.raw_tcp().await;
    raw.send_json(&hello_json("operator", server.server.admin_token().expose(), None)).await.unwrap();
    assert_eq!(raw.read_json().await.unwrap()["kind"], "welcome");
    raw.send_json(&json!({"kind": "cmd", "id": "1", "cmd": "ping", "target": "*", "select": "any"})).await.unwrap();
    let r = next(&mut raw).await;
    assert_eq!((r["kind"].as_str(), r["re"].as_str()), (Some("reply"), Some("1")), "{r}");
    assert_eq!(r["error"]["code"], "bad_request");
    assert_eq!(r["error"]["message"], "unknown select 'any': expected 'all', 'online' or 'one'");
    raw.send_json(&json!({"kind": "cmd", "id": "2", "cmd": "ping", "to": "on-1", "select": "online"})).await.unwrap();
    let r = next(&mut raw).await;
    assert_eq!((r["re"].as_str(), r["error"]["code"].as_str()), (Some("2"), Some("bad_request")), "{r}");
    // `select` spelled out as `all` is the default; the ack body carries `skipped`.
    raw.send_json(&json!({"kind": "cmd", "id": "3", "cmd": "ping", "target": "on-1", "select": "all"})).await.unwrap();
    let r = next(&mut raw).await;
    assert_eq!(r["kind"], "ack", "{r}");
    assert_eq!(r["body"]["skipped"], 0, "{r}");
}

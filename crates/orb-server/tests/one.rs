//! "Any one of" (`select: one`, issue 13): a job runs on exactly one matching connected device,
//! the one with the fewest such commands in flight; when that device disconnects before
//! answering, the command goes to another and the result comes from there (the stored job names
//! it); with nobody left the target ends `offline`. `one` takes no TTL or rollout.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::time::Duration;

use orb_client::{ClientError, JobRequest, JobUpdate, Select};
use orb_proto::history::{JobDetail, JobPhase};
use orb_proto::message::commands;
use orb_proto::{ErrorCode, Status};
use orb_testkit::{TestServer, Transport, WAIT, basic_handlers, call, finish_job, within};
use serde_json::json;
use tokio::sync::{Semaphore, mpsc};

fn one(target: &str, command: &str) -> JobRequest {
    JobRequest::new(target, command).deadline(WAIT).select(Select::One)
}

/// Reads a job to its end: its one result and the summary.
async fn result_of(mut job: orb_client::Job) -> orb_proto::message::TargetResult {
    let mut result = None;
    for _ in 0..3 {
        match within("a job update", job.next()).await.expect("the job's stream is open") {
            JobUpdate::Result(r) => result = Some(r),
            JobUpdate::Done(summary) => {
                assert_eq!(summary.summary.values().sum::<u64>(), 1, "one target: {summary:?}");
                return result.expect("a result before the summary");
            }
            JobUpdate::Batch(b) => panic!("no batches here: {b:?}"),
            JobUpdate::Progress { device, .. } => panic!("progress from {device}: not asked"),
        }
    }
    panic!("more updates than one target has")
}

#[tokio::test]
async fn exactly_one_device_runs_it_and_busy_ones_are_passed_over() {
    let server = TestServer::start().await;
    // Each worker holds every `work` command until the test lets one finish.
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let gate = std::sync::Arc::new(Semaphore::new(0));
    let mut workers = Vec::new();
    for id in ["w-1", "w-2", "w-3"] {
        let (started_tx, gate) = (started_tx.clone(), std::sync::Arc::clone(&gate));
        let handlers = basic_handlers().on("work", move |_c: orb_client::Context| {
            let (started_tx, gate) = (started_tx.clone(), std::sync::Arc::clone(&gate));
            async move {
                let _ = started_tx.send(id);
                gate.acquire().await.expect("the gate stays open").forget();
                Ok(json!({ "by": id }))
            }
        });
        workers.push(server.agent(Transport::Tcp, id, &[], handlers).await);
    }
    let _other = server.agent(Transport::Tcp, "cam-1", &[], basic_handlers()).await;
    let op = server.operator(Transport::Tcp).await;

    let job = within("the ack", op.submit(one("w-*", "ping"))).await.unwrap();
    assert_eq!(job.accepted.targets.len(), 1, "{:?}", job.accepted);
    assert_eq!(job.accepted.skipped, 0, "all matching devices are connected");
    let out = finish_job(job).await;
    assert_eq!(out.count(Status::Ok), 1);
    assert!(out.results[0].device.starts_with("w-"));

    // Three commands at once go to three different devices: each has fewer in flight.
    let mut jobs = Vec::new();
    for _ in 0..3 {
        jobs.push(within("the ack", op.submit(one("w-*", "work"))).await.unwrap());
    }
    let mut busy = BTreeSet::new();
    for _ in 0..3 {
        busy.insert(within("a worker starts", started.recv()).await.unwrap());
    }
    assert_eq!(busy.len(), 3, "each worker got one: {busy:?}");
    gate.add_permits(3);
    let mut by = BTreeSet::new();
    for job in jobs {
        let r = result_of(job).await;
        assert_eq!(r.status, Status::Ok, "{r:?}");
        by.insert(r.device);
    }
    assert_eq!(by.len(), 3);

    // Refused: one takes no TTL or batches; nothing connected is no_match.
    let refused = |r: Result<orb_client::Job, ClientError>| match r {
        Err(ClientError::Remote(e)) => e.code,
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("accepted"),
    };
    assert_eq!(refused(op.submit(one("w-*", "ping").ttl(Duration::from_secs(60))).await), ErrorCode::BadRequest);
    drop(workers);
}

#[tokio::test]
async fn a_device_that_disconnects_mid_command_hands_it_to_another() {
    let server = TestServer::start().await;
    // `w-1` takes the command and vanishes; `w-2` answers. On a fresh server the first of equals
    // is the first by id.
    let mut w1 = server.raw_agent("w-1").await;
    let _w2 = server.agent(Transport::Tcp, "w-2", &[], basic_handlers()).await;
    let op = server.operator(Transport::Tcp).await;
    let mut progress = op.subscribe("$orb.job.>", WAIT).await.unwrap();

    let job =
        within("the ack", op.submit(one("w-*", "echo").args(bytes::Bytes::from_static(b"\"hi\"")))).await.unwrap();
    assert_eq!(job.accepted.targets, ["w-1"]);
    let id = job.id().to_owned();
    let cmd = within("the command at w-1", async {
        loop {
            let f = w1.read_json().await.expect("w-1 is connected");
            if f["kind"] == "cmd" {
                return f;
            }
        }
    })
    .await;
    assert_eq!(cmd["cmd"], "echo");
    drop(w1); // gone without a bye or an answer

    let r = result_of(job).await;
    assert_eq!((r.device.as_str(), r.status), ("w-2", Status::Ok), "{r:?}");
    let moved = within("the move on $orb.job", async {
        loop {
            let m = progress.next().await.expect("subscribed");
            let v: serde_json::Value = serde_json::from_slice(&m.body).unwrap();
            if v.get("moved").is_some() {
                return v;
            }
        }
    })
    .await;
    assert_eq!(moved["moved"]["from"], "w-1");
    assert_eq!(moved["moved"]["to"], "w-2");
    // Gone without a `bye`: told as presence tells it.
    assert_eq!(moved["moved"]["reason"], "connection_lost", "{moved}");

    // The history names the device that ran it.
    let mut shown: Option<JobDetail> = None;
    for _ in 0..200 {
        let d: JobDetail = call(&op, commands::JOBS_SHOW, json!({ "id": id })).await;
        if d.job.state != JobPhase::Running && !d.results.is_empty() {
            shown = Some(d);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let shown = shown.expect("the job is stored as done");
    assert_eq!(shown.results.len(), 1, "{:?}", shown.results);
    assert_eq!(shown.results[0].device, "w-2");
}

#[tokio::test]
async fn a_move_says_why_the_device_left_as_presence_does() {
    let server = TestServer::start().await;
    let op = server.operator(Transport::Tcp).await;
    let mut events = op.subscribe("$orb.>", WAIT).await.unwrap();
    // `w-0` takes the command and says goodbye without answering; `w-2` answers.
    let mut w0 = server.raw_agent("w-0").await;
    let _w2 = server.agent(Transport::Tcp, "w-2", &[], basic_handlers()).await;
    let job = within("the ack", op.submit(one("w-*", "echo"))).await.unwrap();
    assert_eq!(job.accepted.targets, ["w-0"]);
    within("the command at w-0", async { while w0.read_json().await.expect("w-0 is connected")["kind"] != "cmd" {} })
        .await;
    w0.send_json(&json!({"kind": "bye", "body": {"reason": "peer_closed"}})).await.unwrap();
    assert_eq!(result_of(job).await.device, "w-2");
    let (mut moved, mut offline) = (None, None);
    within("the move and the presence event", async {
        while moved.is_none() || offline.is_none() {
            let m = events.next().await.expect("subscribed");
            let v: serde_json::Value = serde_json::from_slice(&m.body).unwrap();
            if v.get("moved").is_some() {
                moved = Some(v["moved"]["reason"].clone());
            } else if m.topic == "$orb.presence.w-0" && v["status"] == "offline" {
                offline = Some(v["reason"].clone());
            }
        }
    })
    .await;
    assert_eq!((moved.unwrap(), offline.unwrap()), (json!("peer_closed"), json!("peer_closed")));
}

#[tokio::test]
async fn only_a_device_that_declares_the_command_is_picked() {
    let server = TestServer::start().await;
    let work = basic_handlers().on("work", |_c: orb_client::Context| async { Ok(json!("done")) });
    let _w1 = server.agent(Transport::Tcp, "w-1", &[], work).await;
    let _w2 = server.agent(Transport::Tcp, "w-2", &[], basic_handlers()).await;
    let op = server.operator(Transport::Tcp).await;
    for _ in 0..4 {
        let r = result_of(within("the ack", op.submit(one("w-*", "work"))).await.unwrap()).await;
        assert_eq!((r.device.as_str(), r.status), ("w-1", Status::Ok), "{r:?}");
    }
}

#[tokio::test]
async fn with_nobody_left_the_target_is_offline() {
    let server = TestServer::start().await;
    let mut w1 = server.raw_agent("w-1").await;
    let op = server.operator(Transport::Tcp).await;
    let job = within("the ack", op.submit(one("w-1", "ping"))).await.unwrap();
    within("the command at w-1", async { while w1.read_json().await.expect("connected")["kind"] != "cmd" {} }).await;
    drop(w1);
    let r = result_of(job).await;
    assert_eq!((r.device.as_str(), r.status), ("w-1", Status::Offline), "{r:?}");
}

//! Bounded outbound queues: a peer that stops reading is disconnected as a slow consumer without
//! disturbing anyone else, while a requester reading a large job's results is flow-controlled
//! instead of disconnected.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use orb_client::{Context, JobRequest, JobUpdate};
use orb_proto::Status;
use orb_proto::message::DeviceInfo;
use orb_testkit::{TestServer, Transport, WAIT, basic_handlers, finish_job, within};
use serde_json::json;

const NULL: Bytes = Bytes::from_static(b"null");

/// Connected devices.
async fn device_ids(op: &orb_client::Client) -> Vec<String> {
    let q = json!({"connected": true});
    let list: Vec<DeviceInfo> = within("the device list", op.call_json("$orb.devices.list", &q, WAIT)).await.unwrap();
    list.into_iter().map(|d| d.id).collect()
}

#[tokio::test]
async fn agent_that_stops_reading_is_disconnected_as_slow_consumer_and_others_keep_working() {
    let server = TestServer::start_with(
        |cfg| {
            cfg.limits.outbound_queue = 4;
            // Long enough that the test reads the goodbye before the server gives up on it.
            cfg.limits.close_linger = Duration::from_secs(30);
        },
        |b| b,
    )
    .await;
    // Handshake done, then it never reads (until the end of the test).
    let mut stuck = server.raw_agent("stuck-1").await;
    let _fast = server
        .agent(
            Transport::Tcp,
            "fast-1",
            &[],
            basic_handlers().on("load", |c: Context| async move { Ok(json!(c.args.len())) }),
        )
        .await;
    let op = server.operator(Transport::Tcp).await;

    // Large commands fill the socket buffers quickly; a bounded number of them must do it.
    let body = Bytes::from(format!("\"{}\"", "x".repeat(256 * 1024)));
    let mut jobs = Vec::new();
    let mut disconnected = false;
    for _ in 0..200 {
        let mut job = within(
            "the ack",
            op.submit(JobRequest::new("stuck-1,fast-1", "load").args(body.clone()).deadline(Duration::from_secs(5))),
        )
        .await
        .unwrap();
        // Wait for the fast agent's answer before sending more, so only the stuck one falls behind.
        let mut early = Vec::new();
        loop {
            match within("a result", job.next()).await {
                Some(JobUpdate::Result(r)) if r.device == "fast-1" => {
                    assert_eq!(r.status, Status::Ok, "{r:?}");
                    break;
                }
                Some(JobUpdate::Result(r)) => early.push(r),
                other => panic!("unexpected update {other:?}"),
            }
        }
        if let Some(r) = early.first() {
            assert_eq!(r.device, "stuck-1");
            assert_eq!(r.status, Status::Error, "{r:?}");
            let code = r.error.as_ref().unwrap().code.as_str().to_owned();
            assert_eq!(code, "slow_consumer", "{r:?}");
            disconnected = true;
        }
        jobs.push(job);
        if disconnected || !device_ids(&op).await.contains(&"stuck-1".to_owned()) {
            disconnected = true;
            break;
        }
    }
    assert!(disconnected, "the stuck agent was never disconnected");

    // Every earlier job still ends: the stuck agent as a timeout, the last one already reported.
    for mut job in jobs {
        let mut done = false;
        for _ in 0..3 {
            match within("a job update", job.next()).await {
                Some(JobUpdate::Result(r)) => {
                    assert_eq!(r.device, "stuck-1");
                    assert_eq!(r.status, Status::Timeout, "{r:?}");
                }
                Some(JobUpdate::Done(s)) => {
                    assert_eq!(s.summary[&Status::Ok], 1, "{s:?}");
                    done = true;
                    break;
                }
                Some(JobUpdate::Batch(b)) => panic!("not a batched job: {b:?}"),
                Some(JobUpdate::Progress { device, .. }) => panic!("progress from {device}: not asked"),
                None => break,
            }
        }
        assert!(done, "every job ends with a summary");
    }

    // The connection to the stuck agent carried whole frames only, ending with the goodbye.
    let mut last = None;
    for _ in 0..10_000 {
        match stuck.read_frame().await {
            Ok(Some(f)) => last = Some(f),
            Ok(None) => break,
            Err(e) => panic!("the stream ended inside a frame: {e}"),
        }
    }
    let last: serde_json::Value = serde_json::from_slice(&last.unwrap()).unwrap();
    assert_eq!(last["kind"], "bye", "{last}");
    assert_eq!(last["body"]["reason"], "slow_consumer");
    // Its session has ended, so it is no longer connected.
    assert_eq!(device_ids(&op).await, ["fast-1"]);

    // The fast agent is still served; the stuck one, known but gone, is reported offline.
    let out =
        finish_job(op.submit(JobRequest::new("stuck-1,fast-1", "load").args(NULL).deadline(WAIT)).await.unwrap()).await;
    assert_eq!(out.accepted.targets, ["fast-1", "stuck-1"]);
    assert_eq!(out.ok_json("fast-1"), json!(4));
    assert_eq!(out.result("stuck-1").status, Status::Offline);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_job_results_are_flow_controlled_not_a_slow_consumer() {
    const AGENTS: usize = 300;
    let server = TestServer::start_with(|cfg| cfg.limits.outbound_queue = 16, |b| b).await;
    let mut agents = Vec::with_capacity(AGENTS);
    for i in 0..AGENTS {
        let t = if i.is_multiple_of(3) { Transport::Ws } else { Transport::Tcp };
        let id = format!("node-{i:03}");
        let me = id.clone();
        let handlers = basic_handlers().on("who", move |_c: Context| {
            let me = me.clone();
            async move { Ok(json!({"id": me, "pad": "y".repeat(512)})) }
        });
        agents.push(server.agent(t, &id, &[("fleet", "big")], handlers).await);
    }
    server.wait_for_agents(AGENTS as u64).await;
    let op = server.operator(Transport::Tcp).await;

    for round in 0..2 {
        let job = within(
            "the ack",
            op.submit(JobRequest::new("tag:fleet=big", "who").args(NULL).deadline(Duration::from_secs(30))),
        )
        .await
        .unwrap();
        assert_eq!(job.accepted.targets.len(), AGENTS);
        let out = finish_job(job).await;
        assert_eq!(out.count(Status::Ok) as usize, AGENTS, "round {round}");
        for r in &out.results {
            assert_eq!(out.ok_json(&r.device)["id"], json!(r.device));
        }
        assert!(!op.is_closed(), "the requester was not disconnected");
    }
    // Two jobs at once, their results interleaved on one connection. Each is read from the
    // moment it is accepted: the client applies a job's back-pressure to the whole connection,
    // so an unread job with more results than its buffer would hold up everything behind it.
    let first = op.submit(JobRequest::new("*", "who").args(NULL).deadline(Duration::from_secs(30))).await.unwrap();
    let first = tokio::spawn(finish_job(first));
    let second = op.submit(JobRequest::new("*", "who").args(NULL).deadline(Duration::from_secs(30))).await.unwrap();
    let b = finish_job(second).await;
    let a = within("the first job", first).await.unwrap();
    assert_eq!(a.count(Status::Ok) as usize, AGENTS);
    assert_eq!(b.count(Status::Ok) as usize, AGENTS);
    assert!(!op.is_closed());
    assert_eq!(device_ids(&op).await.len(), AGENTS);
    assert!(agents.iter().all(|a| !a.is_closed()));
}

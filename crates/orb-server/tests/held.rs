//! Jobs sent with a TTL: a target that is not connected gets its command held (committed before
//! the job is acknowledged) and reported `queued`; the command is delivered when the device
//! connects — also after a server restart — and its outcome stored; a full queue refuses with
//! `queue_full`; a TTL that passes first makes it `expired`.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use orb_client::{Context, Handlers, JobRequest};
use orb_proto::history::JobPhase;
use orb_proto::message::{DeviceInfo, commands};
use orb_proto::registry::DeviceDetail;
use orb_proto::{ErrorCode, Status};
use orb_testkit::{TestServer, Transport, WAIT, basic_handlers, call, finish_job, stored_until, within};
use serde_json::json;

fn echo(hi: &str) -> JobRequest {
    JobRequest::new("dev-1", "echo").args(Bytes::from(format!("\"{hi}\""))).deadline(Duration::from_millis(300))
}

#[tokio::test]
async fn a_held_command_is_delivered_when_its_device_connects_and_its_result_stored() {
    let server = TestServer::start().await;
    server.known_but_offline("dev-1").await;
    let op = server.operator(Transport::Tcp).await;

    let job = within("the ack", op.submit(echo("hi").ttl(Duration::from_secs(60)))).await.unwrap();
    let id = job.id().to_owned();
    let out = finish_job(job).await;
    assert_eq!(out.result("dev-1").status, Status::Queued, "{:?}", out.results);
    assert_eq!(out.summary.summary[&Status::Queued], 1);
    // Stored: still running, the target queued.
    let d = stored_until(&op, &id, |d| !d.results.is_empty()).await;
    assert_eq!((d.job.state, d.results[0].status), (JobPhase::Running, Status::Queued));
    // The inventory says what is held for the device.
    let shown: DeviceDetail = call(&op, commands::DEVICES_SHOW, json!({"id": "dev-1"})).await;
    assert_eq!(shown.held.len(), 1);
    assert_eq!((shown.delivery.queued, shown.delivery.delivered), (1, 0), "{:?}", shown.delivery);
    assert_eq!(
        (shown.held[0].job.as_str(), shown.held[0].command.as_str(), shown.held[0].attempts),
        (id.as_str(), "echo", 0)
    );
    let listed: Vec<DeviceInfo> = call(&op, commands::DEVICES_LIST, json!({})).await;
    assert_eq!(listed.iter().find(|d| d.id == "dev-1").map(|d| d.held), Some(1));

    // The device connects: the command is delivered (attempt 1) and its answer stored.
    let attempts = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&attempts);
    let handlers = basic_handlers().on("echo", move |c: Context| {
        let seen = Arc::clone(&seen);
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
            serde_json::from_slice::<serde_json::Value>(&c.args)
                .map_err(|e| orb_proto::ErrorBody::new(ErrorCode::BadArgs, e.to_string()))
        }
    });
    let agent = server.agent(Transport::Tcp, "dev-1", &[], handlers).await;
    let d = stored_until(&op, &id, |d| d.job.state == JobPhase::Done).await;
    assert_eq!(d.results[0].status, Status::Ok, "{d:?}");
    assert_eq!(d.results[0].result.as_ref().map(|r| r.get()), Some(r#""hi""#));
    assert!(d.job.finished_at.is_some());
    assert_eq!(attempts.load(Ordering::SeqCst), 1, "run exactly once");
    let shown: DeviceDetail = call(&op, commands::DEVICES_SHOW, json!({"id": "dev-1"})).await;
    assert!(shown.held.is_empty(), "{:?}", shown.held);
    let c = shown.delivery;
    assert_eq!((c.queued, c.in_flight, c.delivered, c.acknowledged), (0, 0, 1, 1), "{c:?}");

    // The counts are kept in memory for a few seconds; a graceful stop writes them.
    drop(agent);
    op.close().await;
    let server = server.restart(|_| {}).await;
    let op = server.operator(Transport::Tcp).await;
    let shown: DeviceDetail = call(&op, commands::DEVICES_SHOW, json!({"id": "dev-1"})).await;
    assert_eq!((shown.delivery.delivered, shown.delivery.acknowledged), (1, 1), "{:?}", shown.delivery);
}

#[tokio::test]
async fn held_commands_survive_a_restart_and_are_delivered_in_order() {
    let server = TestServer::start().await;
    server.known_but_offline("dev-1").await;
    let op = server.operator(Transport::Tcp).await;
    let mut ids = Vec::new();
    for word in ["one", "two", "three"] {
        let job = within("the ack", op.submit(echo(word).ttl(Duration::from_secs(60)))).await.unwrap();
        ids.push(job.id().to_owned());
        finish_job(job).await;
    }
    op.close().await;
    let server = server.restart(|_| {}).await;
    let op = server.operator(Transport::Tcp).await;

    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&order);
    let handlers = Handlers::new().on("echo", move |c: Context| {
        let seen = Arc::clone(&seen);
        async move {
            let word: String = c.args()?;
            seen.lock().unwrap().push(word.clone());
            Ok(json!(word))
        }
    });
    let _agent = server.agent(Transport::Tcp, "dev-1", &[], handlers).await;
    for (id, word) in ids.iter().zip(["one", "two", "three"]) {
        let d = stored_until(&op, id, |d| d.job.state == JobPhase::Done).await;
        assert_eq!(d.results[0].result.as_ref().map(|r| r.get().to_owned()), Some(format!("\"{word}\"")));
    }
    assert_eq!(*order.lock().unwrap(), ["one", "two", "three"], "delivered oldest first, each once");
}

#[tokio::test]
async fn a_full_queue_refuses_with_queue_full_and_a_passed_ttl_expires() {
    let server = TestServer::start_with(|cfg| cfg.limits.max_queued_per_device = 1, |b| b).await;
    server.known_but_offline("dev-1").await;
    let op = server.operator(Transport::Tcp).await;

    let first = within("the ack", op.submit(echo("a").ttl(Duration::from_millis(300)))).await.unwrap();
    let first_id = first.id().to_owned();
    assert_eq!(finish_job(first).await.result("dev-1").status, Status::Queued);
    let second = within("the ack", op.submit(echo("b").ttl(Duration::from_secs(60)))).await.unwrap();
    let out = finish_job(second).await;
    assert_eq!(out.result("dev-1").status, Status::Error);
    assert_eq!(out.error_code("dev-1"), "queue_full");

    // The first one's TTL passes before the device connects: expired, the job done.
    let d = stored_until(&op, &first_id, |d| d.job.state == JobPhase::Done).await;
    assert_eq!(d.results[0].status, Status::Expired, "{d:?}");
    assert_eq!(d.results[0].error.as_ref().map(|e| e.code.clone()), Some(ErrorCode::Expired));
    // Expired ones are never delivered.
    let ran = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&ran);
    let handlers = Handlers::new().on("echo", move |_c: Context| {
        let seen = Arc::clone(&seen);
        async move {
            seen.fetch_add(1, Ordering::SeqCst);
            Ok(json!(null))
        }
    });
    let _agent = server.agent(Transport::Tcp, "dev-1", &[], handlers).await;
    let again = within("a job", op.submit(JobRequest::new("dev-1", "echo").deadline(WAIT))).await.unwrap();
    finish_job(again).await;
    assert_eq!(ran.load(Ordering::SeqCst), 1, "only the new job ran");
}

#[tokio::test]
async fn a_held_command_whose_device_leaves_before_answering_ends_interrupted_and_never_runs_twice() {
    let server = TestServer::start().await;
    server.known_but_offline("dev-1").await;
    let op = server.operator(Transport::Tcp).await;
    let job = within("the ack", op.submit(echo("once").ttl(Duration::from_secs(60)))).await.unwrap();
    let id = job.id().to_owned();
    finish_job(job).await;

    // The device gets it (attempt 1), starts it, and goes away without answering.
    let received = Arc::new(tokio::sync::Notify::new());
    let runs = Arc::new(AtomicU64::new(0));
    let (got, count) = (Arc::clone(&received), Arc::clone(&runs));
    let handlers = Handlers::new().on("echo", move |_c: Context| {
        let (got, count) = (Arc::clone(&got), Arc::clone(&count));
        async move {
            count.fetch_add(1, Ordering::SeqCst);
            got.notify_one();
            std::future::pending::<()>().await;
            Ok(json!(null))
        }
    });
    let agent = server.agent(Transport::Tcp, "dev-1", &[], handlers).await;
    within("the delivery", received.notified()).await;
    agent.close().await;

    // Back again: the command is not sent a second time; it ends `interrupted`.
    let (count, again) = (Arc::clone(&runs), Arc::clone(&runs));
    let handlers = Handlers::new().on("echo", move |_c: Context| {
        let count = Arc::clone(&count);
        async move {
            count.fetch_add(1, Ordering::SeqCst);
            Ok(json!(null))
        }
    });
    let _agent = server.agent(Transport::Tcp, "dev-1", &[], handlers).await;
    let d = stored_until(&op, &id, |d| d.job.state == JobPhase::Done).await;
    assert_eq!(d.results[0].status, Status::Error, "{d:?}");
    assert_eq!(d.results[0].error.as_ref().map(|e| e.code.clone()), Some(ErrorCode::Interrupted));
    assert_eq!(again.load(Ordering::SeqCst), 1, "run once, never again");
}

#[tokio::test]
async fn a_command_still_queued_when_its_device_disconnects_is_held_with_a_ttl() {
    let server = TestServer::start_with(
        |c| {
            c.limits.max_frame = 512 * 1024;
            c.limits.outbound_queue_bytes = 64 * 1024 * 1024;
        },
        |b| b,
    )
    .await;
    // A device with a small receive buffer that never reads: the server's writes to it stall.
    let stalled = server.raw_agent("stall-1").await;
    // Requests that fill its socket buffers and queue, then the job (with a TTL), whose command
    // queues behind them; the device goes away with it still queued.
    let mut op = server.operator_stalling("stall-1").await;
    let job = json!({"kind": "cmd", "id": "job", "cmd": "ping", "target": "stall-1", "deadline_ms": 60_000, "ttl_ms": 600_000});
    op.send_json(&job).await.unwrap();
    let mut job_id = None;
    for _ in 0..100 {
        let f = op.read_json().await.expect("a frame");
        if f["kind"] == "ack" {
            job_id = f["job"].as_str().map(str::to_owned);
            break;
        }
    }
    let job_id = job_id.expect("the job was accepted");
    drop(stalled);
    let event = loop {
        let f = op.read_json().await.expect("the job's event");
        if f["kind"] == "event" {
            break f;
        }
    };
    assert_eq!(event["status"], "queued", "held, not offline: {event}");
    let op = server.operator(Transport::Tcp).await;
    let shown: DeviceDetail = call(&op, commands::DEVICES_SHOW, json!({"id": "stall-1"})).await;
    assert_eq!(shown.held.iter().map(|h| h.job.as_str()).collect::<Vec<_>>(), [job_id.as_str()]);
}

#[tokio::test]
async fn a_ttl_job_to_a_connected_device_goes_through_its_queue_and_answers_live() {
    let server = TestServer::start().await;
    let order = Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = Arc::clone(&order);
    let handlers = Handlers::new().on("echo", move |c: Context| {
        let seen = Arc::clone(&seen);
        async move {
            let word: String = c.args()?;
            seen.lock().unwrap().push(word.clone());
            Ok(json!(word))
        }
    });
    let _agent = server.agent(Transport::Tcp, "dev-1", &[], handlers).await;
    let op = server.operator(Transport::Tcp).await;
    let jobs = ["one", "two", "three"].map(|w| {
        let op = op.clone();
        async move {
            let job = op.submit(echo(w).deadline(Duration::from_secs(5)).ttl(Duration::from_secs(60))).await.unwrap();
            let id = job.id().to_owned();
            (id, finish_job(job).await)
        }
    });
    let mut ids = Vec::new();
    for job in jobs {
        let (id, out) = within("the job", job).await;
        assert_eq!(out.result("dev-1").status, Status::Ok, "answered live: {:?}", out.results);
        ids.push(id);
    }
    assert_eq!(*order.lock().unwrap(), ["one", "two", "three"], "in order of submission");
    for id in &ids {
        let d = stored_until(&op, id, |d| d.results.first().is_some_and(|r| r.status == Status::Ok)).await;
        assert!(d.results[0].result.is_some());
    }
    let shown: DeviceDetail = call(&op, commands::DEVICES_SHOW, json!({"id": "dev-1"})).await;
    assert!(shown.held.is_empty(), "nothing left held: {:?}", shown.held);
}

#[tokio::test]
async fn a_held_command_its_device_does_not_declare_when_it_connects_is_not_sent() {
    let server = TestServer::start().await;
    server.known_but_offline("dev-1").await;
    let handlers = basic_handlers().on("step", |_c: Context| async move { Ok(json!("stepped")) });
    let _two = server.agent(Transport::Tcp, "dev-2", &[], handlers).await;
    let op = server.operator(Transport::Tcp).await;
    let request = JobRequest::new("dev-*", "step").deadline(WAIT).ttl(Duration::from_secs(60));
    let job = within("the ack", op.submit(request)).await.unwrap();
    let id = job.id().to_owned();
    let out = finish_job(job).await;
    assert_eq!((out.result("dev-1").status, out.result("dev-2").status), (Status::Queued, Status::Ok));
    // dev-1 comes back still without `step`: the server settles its held command, sends nothing.
    let _one = server.agent(Transport::Tcp, "dev-1", &[], basic_handlers()).await;
    let d = stored_until(&op, &id, |d| d.job.state == JobPhase::Done).await;
    let one = d.results.iter().find(|r| r.device == "dev-1").unwrap();
    assert_eq!(one.status, Status::Error, "{d:?}");
    let e = one.error.as_ref().unwrap();
    assert_eq!(e.code, ErrorCode::UnknownCommand);
    assert!(e.message.contains("does not declare 'step'"), "{e:?}");
}

/// A handler for `echo` that waits for `go` before it answers with its argument.
fn gated_echo(go: &Arc<tokio::sync::Notify>, started: &Arc<tokio::sync::Notify>) -> Handlers {
    let (go, started) = (Arc::clone(go), Arc::clone(started));
    Handlers::new().on("echo", move |c: Context| {
        let (go, started) = (Arc::clone(&go), Arc::clone(&started));
        async move {
            let word: String = c.args()?;
            started.notify_one();
            if word == "first" {
                go.notified().await;
            }
            Ok(json!(word))
        }
    })
}

#[tokio::test]
async fn a_command_held_behind_one_its_job_handed_over_follows_it_once_that_one_settles() {
    let server = TestServer::start().await;
    let (go, started) = (Arc::new(tokio::sync::Notify::new()), Arc::new(tokio::sync::Notify::new()));
    let _agent = server.agent(Transport::Tcp, "dev-1", &[], gated_echo(&go, &started)).await;
    let op = server.operator(Transport::Tcp).await;
    // The first job hands its command over and waits for the answer; the second is held
    // behind it (the device is reserved) and reported `queued` at its deadline.
    let first = within("the ack", op.submit(echo("first").deadline(WAIT).ttl(Duration::from_secs(60)))).await.unwrap();
    let first_id = first.id().to_owned();
    within("the first delivery", started.notified()).await;
    let second = within("the ack", op.submit(echo("second").ttl(Duration::from_secs(60)))).await.unwrap();
    let second_id = second.id().to_owned();
    let out = finish_job(second).await;
    assert_eq!(out.result("dev-1").status, Status::Queued, "{:?}", out.results);
    go.notify_one();
    assert_eq!(finish_job(first).await.result("dev-1").status, Status::Ok);
    // Once the first settled, the device's delivery loop takes over the second.
    let d = stored_until(&op, &second_id, |d| d.job.state == JobPhase::Done).await;
    assert_eq!(d.results[0].status, Status::Ok, "{d:?}");
    let d = stored_until(&op, &first_id, |d| d.job.state == JobPhase::Done).await;
    assert_eq!(d.results[0].result.as_ref().map(|r| r.get()), Some(r#""first""#));
    let shown: DeviceDetail = call(&op, commands::DEVICES_SHOW, json!({"id": "dev-1"})).await;
    assert!(shown.held.is_empty(), "{:?}", shown.held);
    let c = shown.delivery;
    assert_eq!((c.delivered, c.acknowledged), (2, 2), "{c:?}");
}

#[tokio::test]
async fn a_handed_over_command_unanswered_at_the_deadline_times_out_and_is_no_longer_held() {
    let server = TestServer::start().await;
    let (go, started) = (Arc::new(tokio::sync::Notify::new()), Arc::new(tokio::sync::Notify::new()));
    let _agent = server.agent(Transport::Tcp, "dev-1", &[], gated_echo(&go, &started)).await;
    let op = server.operator(Transport::Tcp).await;
    let job = within("the ack", op.submit(echo("first").ttl(Duration::from_secs(60)))).await.unwrap();
    let id = job.id().to_owned();
    let out = finish_job(job).await;
    assert_eq!(out.result("dev-1").status, Status::Timeout, "{:?}", out.results);
    let d = stored_until(&op, &id, |d| d.job.state == JobPhase::Done).await;
    assert_eq!(d.results[0].status, Status::Timeout, "{d:?}");
    let shown: DeviceDetail = call(&op, commands::DEVICES_SHOW, json!({"id": "dev-1"})).await;
    assert!(shown.held.is_empty(), "{:?}", shown.held);
    // The device is free for the next job, handed over at once.
    go.notify_one();
    let next = within("the ack", op.submit(echo("next").ttl(Duration::from_secs(60)))).await.unwrap();
    assert_eq!(finish_job(next).await.result("dev-1").status, Status::Ok);
}

#[tokio::test]
async fn a_handed_over_command_whose_device_leaves_is_queued_at_once_and_cancelling_ends_it() {
    let server = TestServer::start().await;
    let (go, started) = (Arc::new(tokio::sync::Notify::new()), Arc::new(tokio::sync::Notify::new()));
    let agent = server.agent(Transport::Tcp, "dev-1", &[], gated_echo(&go, &started)).await;
    let op = server.operator(Transport::Tcp).await;
    let job = within("the ack", op.submit(echo("first").deadline(WAIT).ttl(Duration::from_secs(60)))).await.unwrap();
    let id = job.id().to_owned();
    within("the delivery", started.notified()).await;
    agent.close().await;
    // Told `queued` when the session ends, long before the deadline.
    let out = finish_job(job).await;
    assert_eq!(out.result("dev-1").status, Status::Queued, "{:?}", out.results);
    let shown: DeviceDetail = call(&op, commands::DEVICES_SHOW, json!({"id": "dev-1"})).await;
    assert_eq!(shown.held.iter().map(|h| (h.job.as_str(), h.attempts)).collect::<Vec<_>>(), [(id.as_str(), 1)]);

    // Cancelling a job whose handed-over command is unanswered ends it `cancelled`.
    let (go, started) = (Arc::new(tokio::sync::Notify::new()), Arc::new(tokio::sync::Notify::new()));
    let _agent = server.agent(Transport::Tcp, "dev-2", &[], gated_echo(&go, &started)).await;
    let request = JobRequest::new("dev-2", "echo").args(Bytes::from("\"first\"")).deadline(WAIT);
    let job = within("the ack", op.submit(request.ttl(Duration::from_secs(60)))).await.unwrap();
    let id = job.id().to_owned();
    within("the delivery", started.notified()).await;
    let _: serde_json::Value = call(&op, commands::JOBS_CANCEL, json!({"id": id})).await;
    assert_eq!(finish_job(job).await.result("dev-2").status, Status::Cancelled);
    let d = stored_until(&op, &id, |d| d.job.state != JobPhase::Running).await;
    assert_eq!(d.results[0].status, Status::Cancelled, "{d:?}");
    let shown: DeviceDetail = call(&op, commands::DEVICES_SHOW, json!({"id": "dev-2"})).await;
    assert!(shown.held.is_empty(), "{:?}", shown.held);
}

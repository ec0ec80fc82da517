//! The job history end to end: every job and per-target result is stored (offline targets,
//! results that arrive after the requester left or after the deadline), listed newest first,
//! shown by id or unique prefix with the same per-target objects a live job streams, cancelled
//! (pending targets and the agents' handlers), pruned by retention, and kept across restarts.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use orb_client::{Client, Context, Handlers, JobRequest};
use orb_proto::history::{JobCancelled, JobDetail, JobInfo, JobPhase};
use orb_proto::message::commands;
use orb_proto::{ErrorCode, Status};
use orb_testkit::{TestServer, Transport, WAIT, basic_handlers, call, finish_job, refused, stored_until, within};
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

const NULL: Bytes = Bytes::from_static(b"null");

async fn show(op: &Client, id: &str) -> JobDetail {
    call(op, commands::JOBS_SHOW, json!({ "id": id })).await
}

#[tokio::test]
async fn a_job_and_its_results_are_stored_as_the_requester_saw_them_and_survive_a_restart() {
    let server = TestServer::start().await;
    let _a = server.agent(Transport::Tcp, "web-1", &[("role", "web")], basic_handlers()).await;
    let gone = server.agent(Transport::Tcp, "web-2", &[("role", "web")], basic_handlers()).await;
    gone.close().await;
    server.wait_for_agents(1).await;
    let op = server.operator(Transport::Tcp).await;
    let job = within(
        "ack",
        op.submit(JobRequest::new("tag:role=web", "echo").args(Bytes::from_static(br#"{"x":1}"#)).deadline(WAIT)),
    )
    .await
    .unwrap();
    let id = job.id().to_owned();
    let live = finish_job(job).await;
    assert_eq!(live.result("web-2").status, Status::Offline);

    let d = show(&op, &id).await;
    assert_eq!(d.job.id, id);
    assert_eq!(d.job.command, "echo");
    assert_eq!(d.job.selector, "tag:role=web");
    assert_eq!(d.job.args.as_ref().map(|a| a.get()), Some(r#"{"x":1}"#));
    assert_eq!(d.job.requester, op.welcome().id);
    assert_eq!(d.job.state, JobPhase::Done);
    assert_eq!(d.job.targets, 2);
    assert!(d.job.finished_at.is_some());
    assert!(d.pending.is_empty());
    // The same per-target objects `orb send --json` prints for the live job.
    let stored: Vec<Value> = d.results.iter().map(|r| serde_json::to_value(r).unwrap()).collect();
    let mut streamed: Vec<Value> = live.results.iter().map(|r| serde_json::to_value(r).unwrap()).collect();
    streamed.sort_by_key(|v| v["device"].as_str().unwrap().to_owned());
    assert_eq!(stored, streamed);

    let server = server.restart(|_| {}).await;
    let op = server.operator(Transport::Tcp).await;
    let list: Vec<JobInfo> = call(&op, commands::JOBS_LIST, json!({})).await;
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].summary[&Status::Ok], 1);
    assert_eq!(list[0].summary[&Status::Offline], 1);
    let again = show(&op, &id[..8]).await;
    assert_eq!(serde_json::to_value(&again.results).unwrap(), json!(stored), "by unique prefix, after a restart");
}

#[tokio::test]
async fn results_arriving_after_the_requester_left_or_after_the_deadline_are_stored() {
    let server = TestServer::start().await;
    let (release_tx, release_rx) = mpsc::unbounded_channel::<()>();
    let release_rx = std::sync::Arc::new(tokio::sync::Mutex::new(release_rx));
    let handlers = Handlers::new().on("wait", move |_c: Context| {
        let rx = std::sync::Arc::clone(&release_rx);
        async move {
            rx.lock().await.recv().await;
            Ok(json!("done"))
        }
    });
    let _agent = server.agent(Transport::Tcp, "slow-1", &[], handlers).await;

    // The requester leaves at once; the job runs on and its result is stored.
    let op = server.operator(Transport::Tcp).await;
    let job = within("ack", op.submit(JobRequest::new("slow-1", "wait").args(NULL).deadline(WAIT))).await.unwrap();
    let left = job.id().to_owned();
    drop(job);
    op.close().await;
    release_tx.send(()).unwrap();
    let op = server.operator(Transport::Tcp).await;
    let d = stored_until(&op, &left, |d| d.job.state == JobPhase::Done).await;
    assert_eq!(d.results[0].status, Status::Ok);
    assert!(d.results[0].late.is_none());
}

#[tokio::test]
async fn an_answer_after_the_deadline_is_stored_beside_the_timeout_the_requester_was_told() {
    let server = TestServer::start().await;
    // A hand-driven agent, so it can answer whenever the test says (a library agent enforces
    // the deadline itself and would answer `timeout`).
    let mut raw = server.raw_agent("late-1").await;
    let op = server.operator(Transport::Tcp).await;
    let job =
        within("ack", op.submit(JobRequest::new("late-1", "work").args(NULL).deadline(Duration::from_millis(100))))
            .await
            .unwrap();
    let id = job.id().to_owned();
    let cmd: Value = serde_json::from_slice(&within("the command", raw.read_frame()).await.unwrap().unwrap()).unwrap();
    assert_eq!(cmd["job"], id.as_str());
    let re = cmd["id"].as_str().unwrap().to_owned();
    let out = finish_job(job).await;
    assert_eq!(out.result("late-1").status, Status::Timeout);
    let d = stored_until(&op, &id, |d| d.job.state == JobPhase::Done).await;
    assert_eq!(d.results[0].status, Status::Timeout);

    raw.send_json(&json!({"kind": "reply", "re": re, "body": {"answer": 42}})).await.unwrap();
    let d = stored_until(&op, &id, |d| d.results.first().is_some_and(|r| r.late.is_some())).await;
    let r = &d.results[0];
    assert_eq!(r.status, Status::Timeout, "what the requester was told stays");
    assert_eq!(d.job.summary[&Status::Timeout], 1, "the summary is not rewritten");
    let late = r.late.as_ref().unwrap();
    assert_eq!(late.status, Status::Ok);
    assert_eq!(late.result.as_ref().unwrap().get(), r#"{"answer":42}"#);

    // A second answer, or one from a device that was not a target, changes nothing.
    raw.send_json(&json!({"kind": "reply", "re": re, "error": {"code": "handler_error", "message": "x"}}))
        .await
        .unwrap();
    let mut other = server.raw_agent("other-1").await;
    other
        .send_json(&json!({"kind": "reply", "re": re, "error": {"code": "handler_error", "message": "x"}}))
        .await
        .unwrap();
    // A flush orders these after the writes above; then the result is unchanged.
    let _ = finish_job(
        within("ack", op.submit(JobRequest::new("late-1", "work").args(NULL).deadline(Duration::from_millis(1))))
            .await
            .unwrap(),
    )
    .await;
    server.server.store().flush().await.unwrap();
    let again = show(&op, &id).await;
    assert_eq!(serde_json::to_value(&again.results).unwrap(), serde_json::to_value(&d.results).unwrap());
}

#[tokio::test]
async fn cancel_ends_pending_targets_and_stops_the_agents_handlers() {
    let server = TestServer::start().await;
    let (stopped_tx, mut stopped_rx) = mpsc::unbounded_channel::<String>();
    /// Reports when the handler's future is dropped: the agent stops a cancelled command.
    struct Stopped(mpsc::UnboundedSender<String>, &'static str);
    impl Drop for Stopped {
        fn drop(&mut self) {
            let _ = self.0.send(self.1.to_owned());
        }
    }
    let hang = move |id: &'static str| {
        let stopped = stopped_tx.clone();
        basic_handlers().on("hang", move |_c: Context| {
            let guard = Stopped(stopped.clone(), id);
            async move {
                let _guard = guard;
                std::future::pending::<Result<Value, orb_proto::ErrorBody>>().await
            }
        })
    };
    let _a = server.agent(Transport::Tcp, "h-1", &[], hang("h-1")).await;
    let _b = server.agent(Transport::Ws, "h-2", &[], hang("h-2")).await;
    let op = server.operator(Transport::Tcp).await;
    let job = within("ack", op.submit(JobRequest::new("h-*", "hang").args(NULL).deadline(WAIT))).await.unwrap();
    let id = job.id().to_owned();

    let other = server.operator(Transport::Tcp).await;
    let c: JobCancelled = call(&other, commands::JOBS_CANCEL, json!({ "id": id })).await;
    assert_eq!(c.job, id);
    assert_eq!(c.cancelled, ["h-1", "h-2"]);
    let out = finish_job(job).await;
    assert_eq!(out.count(Status::Cancelled), 2);
    assert_eq!(out.error_code("h-1"), "cancelled");
    let mut stopped = vec![within("a handler stops", stopped_rx.recv()).await.unwrap()];
    stopped.push(within("a handler stops", stopped_rx.recv()).await.unwrap());
    stopped.sort();
    assert_eq!(stopped, ["h-1", "h-2"], "both agents stopped their handler");

    let d = stored_until(&other, &id, |d| d.job.state == JobPhase::Cancelled).await;
    assert!(d.results.iter().all(|r| r.status == Status::Cancelled));
    assert_eq!(refused(&other, commands::JOBS_CANCEL, json!({ "id": id })).await, ErrorCode::JobFinished);
}

#[tokio::test]
async fn unknown_and_ambiguous_job_ids_are_refused() {
    let server = TestServer::start().await;
    let _a = server.agent(Transport::Tcp, "p-1", &[], basic_handlers()).await;
    let op = server.operator(Transport::Tcp).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let out = finish_job(
            within("ack", op.submit(JobRequest::new("p-1", "ping").args(NULL).deadline(WAIT))).await.unwrap(),
        )
        .await;
        ids.push(out.accepted.job);
    }
    // UUID v7 ids made within the same millisecond share their first characters.
    let common = ids[0].chars().zip(ids[1].chars()).take_while(|(a, b)| a == b).count();
    assert!(common >= 1, "{ids:?}");
    assert_eq!(refused(&op, commands::JOBS_SHOW, json!({"id": &ids[0][..common]})).await, ErrorCode::AmbiguousId);
    assert_eq!(refused(&op, commands::JOBS_SHOW, json!({"id": "ffffffff"})).await, ErrorCode::JobNotFound);
    assert_eq!(refused(&op, commands::JOBS_CANCEL, json!({"id": "ffffffff"})).await, ErrorCode::JobNotFound);
    assert_eq!(refused(&op, commands::JOBS_SHOW, json!({})).await, ErrorCode::BadArgs);
    let list: Vec<JobInfo> = call(&op, commands::JOBS_LIST, json!({"limit": 2})).await;
    assert_eq!(list.iter().map(|j| j.id.clone()).collect::<Vec<_>>(), [ids[2].clone(), ids[1].clone()]);
}

#[tokio::test]
async fn retention_keeps_the_newest_jobs_and_drops_old_ones() {
    let server = TestServer::start_with(|c| c.store.job_retention_count = 2, |b| b).await;
    let _a = server.agent(Transport::Tcp, "r-1", &[], basic_handlers()).await;
    let op = server.operator(Transport::Tcp).await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(
            finish_job(
                within("ack", op.submit(JobRequest::new("r-1", "ping").args(NULL).deadline(WAIT))).await.unwrap(),
            )
            .await
            .accepted
            .job,
        );
    }
    server.server.store().flush().await.unwrap();
    server.server.enforce_retention().await;
    let list: Vec<JobInfo> = call(&op, commands::JOBS_LIST, json!({})).await;
    assert_eq!(list.iter().map(|j| j.id.clone()).collect::<Vec<_>>(), [ids[3].clone(), ids[2].clone()]);

    // An age limit of zero keeps nothing; the background task enforces it at start.
    let server = server.restart(|c| c.store.job_retention = Duration::ZERO).await;
    let op = server.operator(Transport::Tcp).await;
    let mut left = usize::MAX;
    for _ in 0..200 {
        left = call::<Vec<JobInfo>>(&op, commands::JOBS_LIST, json!({})).await.len();
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(left, 0);
}

#[tokio::test]
async fn a_job_still_running_at_shutdown_is_stored_with_its_pending_targets_timed_out() {
    let server = TestServer::start().await;
    let (entered_tx, entered_rx) = oneshot::channel::<()>();
    let entered = std::sync::Mutex::new(Some(entered_tx));
    let handlers = Handlers::new().on("forever", move |_c: Context| {
        if let Some(tx) = entered.lock().unwrap().take() {
            let _ = tx.send(());
        }
        std::future::pending::<Result<Value, orb_proto::ErrorBody>>()
    });
    let _a = server.agent(Transport::Tcp, "f-1", &[], handlers).await;
    let op = server.operator(Transport::Tcp).await;
    let job =
        within("ack", op.submit(JobRequest::new("f-1", "forever").args(NULL).deadline(Duration::from_secs(3600))))
            .await
            .unwrap();
    let id = job.id().to_owned();
    within("the handler starts", entered_rx).await.unwrap();
    drop(job);
    let server = server.restart(|_| {}).await;
    let op = server.operator(Transport::Tcp).await;
    let d = show(&op, &id).await;
    assert_eq!(d.job.state, JobPhase::Done);
    assert_eq!(d.results[0].status, Status::Timeout);
    assert!(d.results[0].error.as_ref().unwrap().message.contains("server stopped"), "{:?}", d.results[0]);
}

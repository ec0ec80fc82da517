//! Staged rollouts over the wire (decision 0015): a batched job runs one batch at a time, each
//! starting only after every target of the one before has an outcome, and tells its requester
//! as each batch starts; an abort threshold cancels the targets not started; a held (TTL) target
//! does not hold a batch up; a splayed job reaches every target; bad rollout options are refused
//! with nothing run. The timetable itself (splay offsets, batch waits) is unit-tested with
//! paused time in `jobs/stages.rs`.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use orb_client::{Client, Context, JobRequest};
use orb_proto::history::{JobDetail, JobInfo, JobPhase};
use orb_proto::message::{BatchStarted, commands};
use orb_proto::rollout::{BatchSize, Rollout};
use orb_proto::{ErrorBody, ErrorCode, Status};
use orb_testkit::{TestServer, Transport, basic_handlers, call, finish_job, stored_until, within};
use serde_json::json;

/// What ran where, in order: `(device, "start" | "end")`.
type Log = Arc<Mutex<Vec<(String, &'static str)>>>;

/// Connects agents `ids`; their `step` logs its start and end, and fails on the devices in
/// `failing`.
async fn agents(server: &TestServer, ids: &[&str], log: &Log, failing: &[&str]) -> Vec<Client> {
    let mut out = Vec::new();
    for id in ids {
        let (log, me, fails) = (Arc::clone(log), (*id).to_owned(), failing.contains(id));
        let handlers = basic_handlers().on("step", move |_c: Context| {
            let (log, me) = (Arc::clone(&log), me.clone());
            async move {
                log.lock().unwrap().push((me.clone(), "start"));
                // A batch-mate running at the same time gets the chance to start in between.
                tokio::task::yield_now().await;
                log.lock().unwrap().push((me, "end"));
                if fails {
                    return Err(ErrorBody::new(ErrorCode::HandlerError, "step failed"));
                }
                Ok(json!("stepped"))
            }
        });
        out.push(server.agent(Transport::Tcp, id, &[], handlers).await);
    }
    out
}

/// Where a device's start and end come in the log (`None` when it never ran).
fn ran_at(log: &Log, device: &str) -> Option<(usize, usize)> {
    let log = log.lock().unwrap();
    let at = |what: &str| log.iter().position(|(d, w)| d == device && *w == what);
    Some((at("start")?, at("end")?))
}

fn step(target: &str, rollout: Rollout) -> JobRequest {
    JobRequest::new(target, "step").args(Bytes::from_static(b"{}")).deadline(Duration::from_secs(10)).rollout(rollout)
}

fn batches(sizes: &[u32]) -> Vec<BatchStarted> {
    let n = sizes.len() as u32;
    sizes.iter().zip(1..).map(|(t, b)| BatchStarted { batch: b, batches: n, targets: *t }).collect()
}

#[tokio::test]
async fn a_batched_job_runs_one_batch_after_the_other_and_says_so() {
    let server = TestServer::start().await;
    let log: Log = Arc::default();
    let ids = ["r-1", "r-2", "r-3", "r-4", "r-5"];
    let _agents = agents(&server, &ids, &log, &[]).await;
    let op = server.operator(Transport::Tcp).await;

    let rollout = Rollout { batch: Some(BatchSize::Count(2)), ..Rollout::default() };
    let outcome = finish_job(within("the ack", op.submit(step("r-*", rollout))).await.unwrap()).await;
    assert_eq!(outcome.count(Status::Ok), 5, "{:?}", outcome.results);
    assert_eq!(outcome.batches, batches(&[2, 2, 1]));
    assert!(outcome.summary.aborted.is_none());
    // Batches are the targets in id order; each starts after every target before it ended.
    let batch_of = [["r-1", "r-2"].as_slice(), &["r-3", "r-4"], &["r-5"]];
    for pair in batch_of.windows(2) {
        let last_end = pair[0].iter().map(|d| ran_at(&log, d).unwrap().1).max().unwrap();
        let first_start = pair[1].iter().map(|d| ran_at(&log, d).unwrap().0).min().unwrap();
        assert!(last_end < first_start, "{pair:?} overlapped: {:?}", log.lock().unwrap());
    }

    // A percentage of the targets: 40% of 5 is 2 per batch. The stored job keeps its rollout.
    let rollout = Rollout { batch: Some(BatchSize::Percent(40)), ..Rollout::default() };
    let outcome = finish_job(op.submit(step("r-*", rollout)).await.unwrap()).await;
    assert_eq!(outcome.batches, batches(&[2, 2, 1]));
    let d: JobDetail = stored_until(&op, &outcome.accepted.job, |d| d.job.state == JobPhase::Done).await;
    assert_eq!(d.job.rollout, Some(rollout));
}

#[tokio::test]
async fn failures_above_the_threshold_cancel_the_batches_not_started() {
    let server = TestServer::start().await;
    let log: Log = Arc::default();
    let ids = ["a-1", "a-2", "a-3", "a-4", "a-5", "a-6"];
    let _agents = agents(&server, &ids, &log, &["a-3"]).await;
    let op = server.operator(Transport::Tcp).await;

    // 1 failure in the first 4 targets that ran is 25%, above 20%: the third batch never starts.
    let rollout = Rollout { batch: Some(BatchSize::Count(2)), abort_on_failure_pct: Some(20), ..Rollout::default() };
    let outcome = finish_job(op.submit(step("a-*", rollout)).await.unwrap()).await;
    assert_eq!(outcome.batches, &batches(&[2, 2, 2])[..2]);
    assert_eq!((outcome.count(Status::Ok), outcome.count(Status::Error)), (3, 1));
    assert_eq!(outcome.result("a-5").status, Status::Cancelled);
    assert_eq!(outcome.result("a-6").status, Status::Cancelled);
    assert!(ran_at(&log, "a-5").is_none() && ran_at(&log, "a-6").is_none(), "never sent");
    let why = outcome.summary.aborted.clone().expect("the summary says why it stopped");
    assert!(why.contains("1 of 4") && why.contains("20%"), "{why}");
    let d: JobDetail = stored_until(&op, &outcome.accepted.job, |d| d.job.state == JobPhase::Done).await;
    assert_eq!(d.job.summary[&Status::Cancelled], 2, "stored as told");
    // Nobody cancelled the job: each target not started says why, live and in the history.
    let not_started =
        "not started: the rollout was aborted: 1 of 4 targets that ran failed (25.0%), above the 20% allowed";
    let stored = d.results.iter().find(|r| r.device == "a-5").expect("a-5 stored");
    for error in [outcome.result("a-5").error.as_ref(), stored.error.as_ref()] {
        let e = error.expect("an error says why");
        assert_eq!((&e.code, e.message.as_str()), (&ErrorCode::Cancelled, not_started));
    }

    // At the threshold it goes on: 1 of 4 is not more than 25%.
    let rollout = Rollout { batch: Some(BatchSize::Count(2)), abort_on_failure_pct: Some(25), ..Rollout::default() };
    let outcome = finish_job(op.submit(step("a-*", rollout)).await.unwrap()).await;
    assert_eq!((outcome.count(Status::Ok), outcome.count(Status::Error), outcome.batches.len()), (5, 1, 3));
}

#[tokio::test]
async fn a_held_target_does_not_hold_its_batch_up_and_a_splay_reaches_everyone() {
    let server = TestServer::start().await;
    server.known_but_offline("q-1").await;
    let log: Log = Arc::default();
    let _agents = agents(&server, &["q-2", "q-3"], &log, &[]).await;
    let op = server.operator(Transport::Tcp).await;

    let rollout = Rollout { batch: Some(BatchSize::Count(1)), batch_wait_ms: Some(10), ..Rollout::default() };
    let job = op.submit(step("q-*", rollout).ttl(Duration::from_secs(3600))).await.unwrap();
    let outcome = finish_job(job).await;
    assert_eq!(outcome.result("q-1").status, Status::Queued, "held for when it connects");
    assert_eq!((outcome.count(Status::Ok), outcome.batches.len()), (2, 3));

    let rollout = Rollout { splay_ms: Some(200), ..Rollout::default() };
    let outcome = finish_job(op.submit(step("q-2,q-3", rollout)).await.unwrap()).await;
    assert_eq!(outcome.count(Status::Ok), 2);
    assert!(outcome.batches.is_empty(), "a splay alone has no batches");
}

#[tokio::test]
async fn bad_rollouts_are_refused_and_nothing_runs() {
    let server = TestServer::start().await;
    let log: Log = Arc::default();
    let _agents = agents(&server, &["b-1"], &log, &[]).await;
    let op = server.operator(Transport::Tcp).await;
    let day = 24 * 3600 * 1000;
    let cases = [
        (Rollout { abort_on_failure_pct: Some(5), ..Rollout::default() }, "needs a batch size"),
        (Rollout { batch_wait_ms: Some(5), ..Rollout::default() }, "needs a batch size"),
        (Rollout { splay_ms: Some(day + 1), ..Rollout::default() }, "longer than a day"),
        (Rollout { batch: Some(BatchSize::Count(0)), ..Rollout::default() }, "batch of 0"),
    ];
    for (rollout, says) in cases {
        let e = match op.submit(step("b-1", rollout)).await {
            Err(orb_client::ClientError::Remote(e)) => e,
            other => panic!("{rollout:?} was not refused: {:?}", other.map(|j| j.accepted.clone())),
        };
        assert_eq!(e.code, ErrorCode::BadRollout, "{rollout:?}");
        assert!(e.message.contains(says), "{rollout:?}: {}", e.message);
    }
    // Also when a frame spells it out by hand: a percentage above 100.
    let mut raw = server.raw_tcp().await;
    raw.send_json(&orb_testkit::hello_json("operator", server.server.admin_token().expose(), None)).await.unwrap();
    let _welcome = raw.read_json().await;
    raw.send_json(&json!({"kind": "cmd", "id": "1", "cmd": "step", "target": "b-1", "batch": "150%"})).await.unwrap();
    let answer = raw.read_json().await.expect("an answer");
    assert_eq!(answer["error"]["code"], "bad_rollout", "{answer}");
    assert!(ran_at(&log, "b-1").is_none(), "nothing ran");
    let jobs: Vec<JobInfo> = call(&op, commands::JOBS_LIST, json!({})).await;
    assert!(jobs.is_empty(), "nothing stored: {jobs:?}");
}

#[tokio::test]
async fn a_target_past_its_own_deadline_times_out_and_its_late_answer_is_kept() {
    let server = TestServer::start().await;
    let slow = basic_handlers().on("step", |_c: Context| async {
        // Slower than the 300 ms deadline: the device gives up at its own deadline, which runs
        // from when the command reached it, so its `timeout` answer comes just after the
        // server's (the case a late answer racing its own `timeout` record must survive).
        tokio::time::sleep(Duration::from_secs(5)).await;
        Ok(json!("too late"))
    });
    let _slow = server.agent(Transport::Tcp, "l-1", &[], slow).await;
    let log: Log = Arc::default();
    let _fast = agents(&server, &["l-2"], &log, &[]).await;
    let op = server.operator(Transport::Tcp).await;

    let rollout = Rollout { batch: Some(BatchSize::Count(1)), ..Rollout::default() };
    let request = step("l-*", rollout).deadline(Duration::from_millis(300));
    let outcome = finish_job(op.submit(request).await.unwrap()).await;
    assert_eq!(outcome.result("l-1").status, Status::Timeout, "its own deadline, from its dispatch");
    assert_eq!(outcome.result("l-2").status, Status::Ok, "the next batch started after the timeout");
    let d: JobDetail =
        stored_until(&op, &outcome.accepted.job, |d| d.results.iter().any(|r| r.device == "l-1" && r.late.is_some()))
            .await;
    let late = d.results.iter().find(|r| r.device == "l-1").and_then(|r| r.late.clone()).unwrap();
    assert_eq!(
        (late.status, late.error.map(|e| e.code)),
        (Status::Timeout, Some(ErrorCode::Timeout)),
        "the device's own"
    );
}

#[tokio::test]
async fn cancelling_a_rollout_cancels_the_targets_not_started() {
    let server = TestServer::start().await;
    let (started_tx, mut started) = tokio::sync::mpsc::unbounded_channel();
    let started_tx = Arc::new(started_tx);
    let blocking = basic_handlers().on("step", move |c: Context| {
        let started_tx = Arc::clone(&started_tx);
        async move {
            let _ = started_tx.send(());
            // Runs until the job is cancelled.
            c.cancel.cancelled().await;
            Ok(json!("stopped"))
        }
    });
    let _first = server.agent(Transport::Tcp, "c-1", &[], blocking).await;
    let log: Log = Arc::default();
    let _rest = agents(&server, &["c-2", "c-3"], &log, &[]).await;
    let op = server.operator(Transport::Tcp).await;

    let rollout = Rollout { batch: Some(BatchSize::Count(1)), ..Rollout::default() };
    let job = op.submit(step("c-*", rollout)).await.unwrap();
    let id = job.accepted.job.clone();
    within("the first batch's command", started.recv()).await.unwrap();
    let cancelled: serde_json::Value = call(&op, commands::JOBS_CANCEL, json!({ "id": id })).await;
    let mut ids: Vec<String> = serde_json::from_value(cancelled["cancelled"].clone()).unwrap();
    ids.sort();
    assert_eq!(ids, ["c-1", "c-2", "c-3"], "the running target and those not started");
    let outcome = finish_job(job).await;
    assert_eq!(outcome.count(Status::Cancelled), 3);
    assert_eq!(outcome.batches.len(), 1, "no batch started after the cancel");
    assert!(ran_at(&log, "c-2").is_none() && ran_at(&log, "c-3").is_none(), "never sent");
}

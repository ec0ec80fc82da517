//! Conformance cases for the job history: creation, settling (late results), ending, listing
//! with summaries, lookup by prefix, cancel, recovery, pruning and a 10,000-target job. Run per
//! backend by `conformance_tests!`.

use std::collections::BTreeMap;

use orb_proto::history::JobPhase;
use orb_proto::{ErrorBody, ErrorCode, Status};

use super::devices::{NODE, job};
use super::{Harness, exec, raw, t};
use crate::{JobEnd, LateAnswer, NewJob, NewTarget, Record, Recorder, StoreError, TargetOutcome};

fn pending(device: &str) -> NewTarget {
    NewTarget { device: device.to_owned(), status: None, error: None }
}

fn offline(device: &str) -> NewTarget {
    let error = ErrorBody::new(ErrorCode::DeviceOffline, format!("device {device} is not connected"));
    NewTarget { device: device.to_owned(), status: Some(Status::Offline), error: Some(error) }
}

fn outcome(job: &str, device: &str, status: Status, late: bool) -> TargetOutcome {
    let (result, error) = match status {
        Status::Ok => (Some(format!(r#"{{"from":"{device}"}}"#)), None),
        other => (None, Some(ErrorBody::new(ErrorCode::HandlerError, format!("{other} from {device}")))),
    };
    TargetOutcome {
        job: job.to_owned(),
        device: device.to_owned(),
        status,
        result,
        error,
        elapsed_ms: Some(15),
        at: t(500),
        late,
    }
}

fn end(job: &str, at: i64, state: JobPhase, pending_become: Option<(Status, ErrorBody)>) -> Record {
    Record::JobEnded(JobEnd { job: job.to_owned(), at: t(at), state, pending_become })
}

async fn create(rec: &Recorder, id: &str, at: i64, targets: Vec<NewTarget>) {
    rec.record(Record::JobCreated(NewJob { targets, ..job(id, at) })).await;
}

fn summary(pairs: &[(Status, u64)]) -> BTreeMap<Status, u64> {
    pairs.iter().copied().collect()
}

/// A job that left out devices that were not connected keeps their count, through a restart,
/// and listings show it too.
pub async fn job_skipped_count_is_kept(h: &Harness) {
    let s = h.store();
    let rec = s.recorder();
    rec.record(Record::JobCreated(NewJob { targets: vec![pending("a")], skipped: 3, ..job("job-skip", 0) })).await;
    rec.record(Record::JobCreated(NewJob { targets: vec![pending("b")], ..job("job-noskip", 1) })).await;
    s.flush().await.unwrap();
    let s = h.reopen().await;
    let (record, _) = s.job("job-skip").await.unwrap();
    assert_eq!(record, crate::JobRecord { targets: 1, skipped: 3, ..stored("job-skip", 0) });
    assert_eq!(s.job("job-noskip").await.unwrap().0.skipped, 0);
    let listed = s.jobs(10).await.unwrap();
    let skipped: Vec<(&str, u64)> = listed.iter().map(|j| (j.id.as_str(), j.skipped)).collect();
    assert_eq!(skipped, [("job-noskip", 0), ("job-skip", 3)]);
}

/// Pending and offline targets, settled in time and late: a late answer is kept beside a
/// `timeout` (which stays, with its error and in the summary), and ignored after `ok`, `error`
/// or `offline`.
pub async fn job_created_and_settled(h: &Harness) {
    let s = h.store();
    let rec = s.recorder();
    let j = "job-settle";
    create(&rec, j, 0, vec![pending("a"), pending("b"), offline("c"), pending("d"), pending("e")]).await;
    s.flush().await.unwrap();
    let (record, targets) = s.job(j).await.unwrap();
    assert_eq!(record, crate::JobRecord { targets: 5, summary: summary(&[(Status::Offline, 1)]), ..stored(j, 0) });
    let devices: Vec<_> = targets.iter().map(|t| t.device.as_str()).collect();
    assert_eq!(devices, ["a", "b", "c", "d", "e"]);
    assert_eq!(
        targets[0],
        crate::TargetRecord {
            device: "a".into(),
            status: None,
            result: None,
            error: None,
            elapsed_ms: None,
            late: None
        }
    );
    assert_eq!(targets[2].status, Some(Status::Offline));
    assert_eq!(targets[2].error.as_ref().map(|e| e.code.clone()), Some(ErrorCode::DeviceOffline));

    rec.record(Record::TargetsSettled(vec![outcome(j, "a", Status::Ok, false)])).await;
    rec.record(Record::TargetsSettled(vec![outcome(j, "b", Status::Error, false)])).await;
    rec.record(Record::TargetsSettled(vec![outcome(j, "a", Status::Error, false)])).await; // settled already
    let timeout = ErrorBody::new(ErrorCode::Timeout, "no answer before the deadline");
    rec.record(end(j, 1_000, JobPhase::Done, Some((Status::Timeout, timeout.clone())))).await;
    rec.record(Record::TargetsSettled(vec![outcome(j, "d", Status::Ok, true)])).await; // beside the timeout
    rec.record(Record::TargetsSettled(vec![outcome(j, "a", Status::Error, true)])).await; // never over ok
    rec.record(Record::TargetsSettled(vec![outcome(j, "b", Status::Ok, true)])).await; // never over error
    rec.record(Record::TargetsSettled(vec![outcome(j, "c", Status::Ok, true)])).await; // never over offline
    s.flush().await.unwrap();

    let (record, targets) = s.job(j).await.unwrap();
    assert_eq!((record.state, record.finished_at), (JobPhase::Done, Some(t(1_000))));
    let want = summary(&[(Status::Ok, 1), (Status::Error, 1), (Status::Offline, 1), (Status::Timeout, 2)]);
    assert_eq!(record.summary, want);
    let a = &targets[0];
    assert_eq!(
        (a.status, a.result.as_deref(), a.elapsed_ms, &a.late),
        (Some(Status::Ok), Some(r#"{"from":"a"}"#), Some(15), &None)
    );
    assert_eq!(targets[1].status, Some(Status::Error));
    assert_eq!(targets[1].error.as_ref().map(|e| e.message.as_str()), Some("error from b"));
    assert_eq!(targets[1].late, None);
    assert_eq!((targets[2].status, &targets[2].late), (Some(Status::Offline), &None));
    let d = &targets[3];
    assert_eq!((d.status, d.error.as_ref(), d.result.as_deref()), (Some(Status::Timeout), Some(&timeout), None));
    let late = LateAnswer { status: Status::Ok, result: Some(r#"{"from":"d"}"#.into()), error: None, at: t(500) };
    assert_eq!(d.late, Some(late));
    let e = &targets[4];
    assert_eq!((e.status, e.error.as_ref(), &e.late), (Some(Status::Timeout), Some(&timeout), &None));
    assert_eq!(s.jobs(10).await.unwrap()[0].summary, want, "the list and the detail agree");
}

/// `JobEnded` gives still-pending targets the status it names, and without one leaves them.
pub async fn job_ended_settles_pending(h: &Harness) {
    let s = h.store();
    let rec = s.recorder();
    create(&rec, "job-c", 0, vec![pending("a"), pending("b")]).await;
    create(&rec, "job-n", 1, vec![pending("a")]).await;
    rec.record(Record::TargetsSettled(vec![outcome("job-c", "a", Status::Ok, false)])).await;
    let cancelled = ErrorBody::new(ErrorCode::Cancelled, "the job was cancelled");
    rec.record(end("job-c", 50, JobPhase::Cancelled, Some((Status::Cancelled, cancelled.clone())))).await;
    rec.record(end("job-n", 60, JobPhase::Done, None)).await;
    rec.record(Record::TargetsSettled(vec![outcome("job-c", "b", Status::Ok, true)])).await; // never over cancelled
    s.flush().await.unwrap();

    let (record, targets) = s.job("job-c").await.unwrap();
    assert_eq!((record.state, record.finished_at), (JobPhase::Cancelled, Some(t(50))));
    assert_eq!(targets[0].status, Some(Status::Ok));
    assert_eq!(
        (targets[1].status, targets[1].error.as_ref(), &targets[1].late),
        (Some(Status::Cancelled), Some(&cancelled), &None)
    );
    let (record, targets) = s.job("job-n").await.unwrap();
    assert_eq!((record.state, targets[0].status), (JobPhase::Done, None));
    assert!(record.summary.is_empty());
}

/// `jobs` lists newest first (ties by id, descending), honours the limit and summarises.
pub async fn jobs_ordering_limit_summary(h: &Harness) {
    let s = h.store();
    let rec = s.recorder();
    assert!(s.jobs(10).await.unwrap().is_empty());
    create(&rec, "job-1", 1_000, vec![pending("a"), offline("b")]).await;
    create(&rec, "job-2", 2_000, vec![offline("a"), offline("b"), pending("c")]).await;
    create(&rec, "job-3a", 3_000, vec![pending("a")]).await;
    create(&rec, "job-3b", 3_000, vec![]).await;
    create(&rec, "job-4", 4_000, vec![pending("a")]).await;
    rec.record(Record::TargetsSettled(vec![outcome("job-4", "a", Status::Ok, false)])).await;
    s.flush().await.unwrap();

    let ids = |jobs: &[crate::JobRecord]| jobs.iter().map(|j| j.id.clone()).collect::<Vec<_>>();
    let all = s.jobs(100).await.unwrap();
    assert_eq!(ids(&all), ["job-4", "job-3b", "job-3a", "job-2", "job-1"]);
    assert_eq!(ids(&s.jobs(3).await.unwrap()), ["job-4", "job-3b", "job-3a"]);
    assert!(s.jobs(0).await.unwrap().is_empty());
    assert_eq!(all[0].summary, summary(&[(Status::Ok, 1)]));
    assert!(all[1].summary.is_empty() && all[2].summary.is_empty());
    assert_eq!((all[3].targets, &all[3].summary), (3, &summary(&[(Status::Offline, 2)])));
    assert_eq!(all[4].summary, summary(&[(Status::Offline, 1)]));
    assert_eq!(
        all[4],
        crate::JobRecord { targets: 2, summary: summary(&[(Status::Offline, 1)]), ..stored("job-1", 1_000) }
    );
}

/// `job` by full id, unique prefix; ambiguous and unknown prefixes; wildcards are literal.
pub async fn job_by_id_or_prefix(h: &Harness) {
    let s = h.store();
    let rec = s.recorder();
    let ids = [
        "0198aaaa-0000-7000-8000-000000000001",
        "0198aaaa-0000-7000-8000-000000000002",
        "0198bbbb-0000-7000-8000-000000000003",
    ];
    for (i, id) in ids.iter().enumerate() {
        create(&rec, id, i64::try_from(i).unwrap(), vec![pending("a")]).await;
    }
    create(&rec, "0198aaaa", 10, vec![]).await; // a full id that is also a prefix of others
    s.flush().await.unwrap();

    assert_eq!(s.job(ids[0]).await.unwrap().0.id, ids[0]);
    assert_eq!(s.job("0198aaaa").await.unwrap().0.id, "0198aaaa", "an exact id wins over prefixes");
    assert_eq!(s.job("0198b").await.unwrap().0.id, ids[2]);
    let (record, targets) = s.job("0198aaaa-0000-7000-8000-000000000002").await.unwrap();
    assert_eq!((record.id.as_str(), targets.len()), (ids[1], 1));
    let ambiguous = s.job("0198aaaa-").await;
    let text = ambiguous.as_ref().map(|_| String::new()).unwrap_or_else(ToString::to_string);
    match ambiguous {
        Err(StoreError::Ambiguous { prefix, count, candidates }) => {
            assert_eq!((prefix.as_str(), count), ("0198aaaa-", 2));
            assert_eq!(candidates, vec![ids[0].to_owned(), ids[1].to_owned()]);
            assert!(text.contains(ids[0]) && text.contains(ids[1]), "the message lists the candidates: {text}");
        }
        other => panic!("expected ambiguous, got {other:?}"),
    }
    assert!(matches!(s.job("0198").await, Err(StoreError::Ambiguous { count: 4, .. })));
    for unknown in ["ffff", "0198_", "%", "0198aaaa-0000-7000-8000-0000000000019", ""] {
        assert!(matches!(s.job(unknown).await, Err(StoreError::NotFound(_))), "{unknown:?}");
    }
}

/// `cancel_job`: a running job's pending targets are cancelled; a finished job is left alone;
/// an unknown (or merely prefixed) id is `NotFound`.
pub async fn cancel_job_by_state(h: &Harness) {
    let s = h.store();
    let rec = s.recorder();
    create(&rec, "job-run", 0, vec![pending("b"), pending("a"), pending("c"), offline("d")]).await;
    rec.record(Record::TargetsSettled(vec![outcome("job-run", "c", Status::Ok, false)])).await;
    create(&rec, "job-done", 1, vec![pending("a")]).await;
    rec.record(end("job-done", 5, JobPhase::Done, None)).await;
    s.flush().await.unwrap();

    assert_eq!(s.cancel_job("job-run", t(100)).await.unwrap(), ["a", "b"]);
    let (record, targets) = s.job("job-run").await.unwrap();
    assert_eq!((record.state, record.finished_at), (JobPhase::Cancelled, Some(t(100))));
    for target in &targets[..2] {
        assert_eq!(target.status, Some(Status::Cancelled));
        let error = target.error.as_ref().unwrap();
        assert_eq!((error.code.as_str(), error.message.as_str()), ("cancelled", "the job was cancelled"));
    }
    assert_eq!(targets[2].status, Some(Status::Ok));
    assert_eq!(targets[3].status, Some(Status::Offline));
    assert!(s.cancel_job("job-run", t(200)).await.unwrap().is_empty(), "not running any more");
    assert_eq!(s.job("job-run").await.unwrap().0.finished_at, Some(t(100)));

    let before = s.job("job-done").await.unwrap();
    assert!(s.cancel_job("job-done", t(100)).await.unwrap().is_empty());
    assert_eq!(s.job("job-done").await.unwrap(), before);
    assert!(matches!(s.cancel_job("job-ghost", t(1)).await, Err(StoreError::NotFound(_))));
    assert!(matches!(s.cancel_job("job-d", t(1)).await, Err(StoreError::NotFound(_))), "full ids only");
}

/// `recover_jobs` ends every running job of its node: pending targets time out with the message.
pub async fn recover_jobs_ends_running(h: &Harness) {
    let s = h.store();
    let rec = s.recorder();
    create(&rec, "job-r1", 0, vec![pending("a"), pending("b")]).await;
    rec.record(Record::TargetsSettled(vec![outcome("job-r1", "a", Status::Ok, false)])).await;
    create(&rec, "job-r2", 1, vec![pending("a")]).await;
    create(&rec, "job-f", 2, vec![pending("a")]).await;
    rec.record(end("job-f", 3, JobPhase::Done, None)).await;
    s.flush().await.unwrap();
    let finished = s.job("job-f").await.unwrap();

    assert_eq!(s.recover_jobs(NODE, t(1_000), "the server restarted").await.unwrap(), 2);
    let (record, targets) = s.job("job-r1").await.unwrap();
    assert_eq!((record.state, record.finished_at), (JobPhase::Done, Some(t(1_000))));
    assert_eq!(targets[0].status, Some(Status::Ok));
    assert_eq!(targets[1].status, Some(Status::Timeout));
    assert_eq!(targets[1].error, Some(ErrorBody::new(ErrorCode::Timeout, "the server restarted")));
    assert_eq!(s.job("job-r2").await.unwrap().0.summary, summary(&[(Status::Timeout, 1)]));
    assert_eq!(s.job("job-f").await.unwrap(), finished, "a finished job is not touched");
    assert_eq!(s.recover_jobs(NODE, t(2_000), "again").await.unwrap(), 0);
}

/// Several servers share one database: `recover_jobs` as node `a` ends the running jobs of `a`
/// and those stored without a node (before jobs had one), never the running jobs of node `b`.
pub async fn recover_jobs_ends_only_its_nodes_jobs(h: &Harness) {
    let s = h.store();
    let rec = s.recorder();
    let on = |node: &str, id: &str, at: i64| NewJob {
        node: node.to_owned(),
        targets: vec![pending("x"), pending("y")],
        ..job(id, at)
    };
    rec.record(Record::JobCreated(on("a", "job-a1", 0))).await;
    rec.record(Record::JobCreated(on("a", "job-a2", 1))).await;
    rec.record(Record::JobCreated(on("b", "job-b1", 2))).await;
    rec.record(Record::TargetsSettled(vec![outcome("job-b1", "x", Status::Ok, false)])).await;
    rec.record(Record::JobCreated(on("b", "job-b-done", 3))).await;
    rec.record(end("job-b-done", 4, JobPhase::Done, None)).await;
    s.flush().await.unwrap();
    let mut conn = raw(h).await;
    old_style_job(&mut conn, "job-legacy", 5).await;
    sqlx::Connection::close(conn).await.unwrap();
    let nodes: Vec<_> = s.jobs(10).await.unwrap().into_iter().map(|j| (j.id, j.node)).collect();
    let node = |n: &str| Some(n.to_owned());
    assert_eq!(
        nodes,
        [
            ("job-legacy".to_owned(), None),
            ("job-b-done".to_owned(), node("b")),
            ("job-b1".to_owned(), node("b")),
            ("job-a2".to_owned(), node("a")),
            ("job-a1".to_owned(), node("a")),
        ]
    );
    let b_done = s.job("job-b-done").await.unwrap();

    assert_eq!(s.recover_jobs("a", t(1_000), "node a restarted").await.unwrap(), 3, "a1, a2 and the legacy job");
    for id in ["job-a1", "job-a2"] {
        let (record, targets) = s.job(id).await.unwrap();
        assert_eq!((record.state, record.finished_at), (JobPhase::Done, Some(t(1_000))), "{id}");
        assert_eq!(record.summary, summary(&[(Status::Timeout, 2)]), "{id}");
        assert_eq!(targets[0].error, Some(ErrorBody::new(ErrorCode::Timeout, "node a restarted")));
    }
    let (record, _) = s.job("job-legacy").await.unwrap();
    assert_eq!(
        (record.state, record.summary),
        (JobPhase::Done, summary(&[(Status::Timeout, 3), (Status::Offline, 1)]))
    );
    let (record, targets) = s.job("job-b1").await.unwrap();
    assert_eq!((record.state, record.finished_at), (JobPhase::Running, None), "node b's job runs on");
    assert_eq!((targets[0].status, targets[1].status), (Some(Status::Ok), None));
    assert_eq!(s.job("job-b-done").await.unwrap(), b_done);
    assert_eq!(s.recover_jobs("a", t(2_000), "again").await.unwrap(), 0);

    // Node b's own restart ends its job; its answers so far stay.
    assert_eq!(s.recover_jobs("b", t(3_000), "node b restarted").await.unwrap(), 1);
    let (record, targets) = s.job("job-b1").await.unwrap();
    assert_eq!((record.state, record.summary), (JobPhase::Done, summary(&[(Status::Ok, 1), (Status::Timeout, 1)])));
    assert_eq!(targets[1].error, Some(ErrorBody::new(ErrorCode::Timeout, "node b restarted")));
}

/// `prune_jobs` by age, then by count; targets go with their jobs. (Finished jobs: running
/// ones are never pruned, see `prune_never_deletes_running_jobs`.)
pub async fn prune_jobs_by_age_and_count(h: &Harness) {
    let s = h.store();
    let rec = s.recorder();
    for i in 1..=6 {
        create(&rec, &format!("job-{i}"), i * 1_000, vec![pending("a"), pending("b")]).await;
        rec.record(end(&format!("job-{i}"), i * 1_000 + 1, JobPhase::Done, None)).await;
    }
    s.flush().await.unwrap();
    assert_eq!(s.prune_jobs(t(3_000), 100).await.unwrap(), 2);
    let left = |jobs: Vec<crate::JobRecord>| jobs.into_iter().map(|j| j.id).collect::<Vec<_>>();
    assert_eq!(left(s.jobs(10).await.unwrap()), ["job-6", "job-5", "job-4", "job-3"]);
    assert!(matches!(s.job("job-1").await, Err(StoreError::NotFound(_))));
    assert_eq!(s.prune_jobs(t(0), 2).await.unwrap(), 2);
    assert_eq!(left(s.jobs(10).await.unwrap()), ["job-6", "job-5"]);
    assert_eq!(s.prune_jobs(t(0), 2).await.unwrap(), 0);

    // Recreating a pruned id works only if its targets went with it (their key would clash).
    create(&rec, "job-1", 7_000, vec![pending("a"), pending("b")]).await;
    rec.record(end("job-1", 7_001, JobPhase::Done, None)).await;
    s.flush().await.unwrap();
    let (record, targets) = s.job("job-1").await.unwrap();
    assert_eq!((record.created_at, targets.len()), (t(7_000), 2));
    assert_eq!(s.prune_jobs(t(0), 0).await.unwrap(), 3);
    assert!(s.jobs(10).await.unwrap().is_empty());
}

/// Pruning never deletes a running job, by age or by count (its later outcomes and end would
/// fail the foreign key); count-based retention keeps the newest `keep` among all jobs.
pub async fn prune_never_deletes_running_jobs(h: &Harness) {
    let s = h.store();
    let rec = s.recorder();
    for i in 1..=6 {
        create(&rec, &format!("job-{i}"), i * 1_000, vec![pending("a")]).await;
        if i != 1 && i != 4 {
            rec.record(end(&format!("job-{i}"), i * 1_000 + 10, JobPhase::Done, None)).await;
        }
    }
    s.flush().await.unwrap();
    let left = |jobs: Vec<crate::JobRecord>| jobs.into_iter().map(|j| j.id).collect::<Vec<_>>();
    assert_eq!(s.prune_jobs(t(3_500), 100).await.unwrap(), 2, "job-2 and job-3, not the running job-1");
    assert_eq!(left(s.jobs(10).await.unwrap()), ["job-6", "job-5", "job-4", "job-1"]);
    // The newest 2 of all jobs are job-6 and job-5; job-4 and job-1 are beyond but running.
    assert_eq!(s.prune_jobs(t(0), 2).await.unwrap(), 0);
    assert_eq!(s.prune_jobs(t(0), 1).await.unwrap(), 1, "job-5");
    assert_eq!(left(s.jobs(10).await.unwrap()), ["job-6", "job-4", "job-1"]);

    // The running job goes on: its outcome and end are stored.
    rec.record(Record::TargetsSettled(vec![outcome("job-1", "a", Status::Ok, false)])).await;
    rec.record(end("job-1", 9_000, JobPhase::Done, None)).await;
    s.flush().await.unwrap();
    let (record, targets) = s.job("job-1").await.unwrap();
    assert_eq!((record.state, targets[0].status), (JobPhase::Done, Some(Status::Ok)));
    assert_eq!(s.prune_jobs(t(100_000), 0).await.unwrap(), 2, "job-6 and job-1 once it ended");
    assert_eq!(left(s.jobs(10).await.unwrap()), ["job-4"]);
}

/// A prune larger than one step (10,000 jobs, or about 50,000 targets) goes on step by step
/// until done, targets with their jobs, running jobs kept.
pub async fn prune_jobs_in_chunks(h: &Harness) {
    let s = h.store();
    let rec = s.recorder();
    let big_targets = || (0..1_000).map(|d| pending(&format!("d{d:04}"))).collect::<Vec<_>>();
    for i in 0..60 {
        let id = format!("big-{i:02}");
        create(&rec, &id, i, big_targets()).await;
        if i != 30 {
            rec.record(end(&id, 100_000, JobPhase::Done, None)).await;
        }
    }
    for i in 0..10_000 {
        let id = format!("small-{i:05}");
        create(&rec, &id, 1_000 + i, vec![]).await;
        rec.record(end(&id, 100_000, JobPhase::Done, None)).await;
    }
    s.flush().await.unwrap();

    assert_eq!(s.prune_jobs(t(0), 20).await.unwrap(), 10_060 - 20 - 1);
    let listed = s.jobs(100).await.unwrap();
    assert_eq!(listed.len(), 21);
    assert_eq!(listed[0].id, "small-09999");
    assert_eq!(listed[19].id, "small-09980");
    assert_eq!((listed[20].id.as_str(), listed[20].targets), ("big-30", 1_000), "running, kept");
    assert_eq!(s.job("big-30").await.unwrap().1.len(), 1_000);
    assert!(matches!(s.job("big-00").await, Err(StoreError::NotFound(_))));
    // Recreating a pruned id works only if its targets went with it (their key would clash).
    create(&rec, "big-59", 200_000, vec![pending("d0001")]).await;
    s.flush().await.unwrap();
    assert_eq!(s.job("big-59").await.unwrap().1.len(), 1);
}

/// One settle record with outcomes for an unknown job (pruned, or its creation lost) among
/// others: the unknown ones are skipped, the others stored.
pub async fn settled_outcomes_for_unknown_jobs_are_skipped(h: &Harness) {
    let s = h.store();
    let rec = s.recorder();
    create(&rec, "job-known", 0, vec![pending("a"), pending("b")]).await;
    rec.record(Record::TargetsSettled(vec![
        outcome("job-known", "a", Status::Ok, false),
        outcome("job-ghost", "a", Status::Ok, false),
        outcome("job-known", "b", Status::Error, false),
        outcome("job-known", "c", Status::Ok, false), // a target the creation did not write
    ]))
    .await;
    let added = s.add_device(crate::testkit::new_device("after")).await;
    s.flush().await.unwrap();
    assert!(added.is_ok(), "{added:?}");
    let (record, targets) = s.job("job-known").await.unwrap();
    let statuses: Vec<_> = targets.iter().map(|t| (t.device.as_str(), t.status)).collect();
    assert_eq!(statuses, [("a", Some(Status::Ok)), ("b", Some(Status::Error)), ("c", Some(Status::Ok))]);
    assert_eq!(record.summary, summary(&[(Status::Ok, 2), (Status::Error, 1)]));
    assert!(matches!(s.job("job-ghost").await, Err(StoreError::NotFound(_))));
}

/// Prefixes match the same on both backends: job ids are lowercase, so an uppercase prefix (or
/// full id) finds them; the match is by characters, wildcards literal.
pub async fn job_prefix_ignores_case(h: &Harness) {
    let s = h.store();
    let rec = s.recorder();
    let ids = ["0198abcd-0000-7000-8000-00000000000a", "0198abcd-0000-7000-8000-00000000000b", "0198abce-1"];
    for (i, id) in ids.iter().enumerate() {
        create(&rec, id, i64::try_from(i).unwrap(), vec![]).await;
    }
    create(&rec, "job-a_b", 5, vec![]).await;
    s.flush().await.unwrap();

    assert_eq!(s.job("0198ABCE").await.unwrap().0.id, ids[2]);
    assert_eq!(s.job("0198ABCD-0000-7000-8000-00000000000A").await.unwrap().0.id, ids[0]);
    assert_eq!(s.job("0198abcd-0000-7000-8000-00000000000B").await.unwrap().0.id, ids[1]);
    assert!(matches!(s.job("0198ABCD").await, Err(StoreError::Ambiguous { count: 2, .. })));
    assert!(matches!(s.job("0198AB").await, Err(StoreError::Ambiguous { count: 3, .. })));
    assert_eq!(s.job("JOB-A_").await.unwrap().0.id, "job-a_b");
    for unknown in ["0198abcd-0000-7000-8000-00000000000c", "job-a%", "job-ab", "0198abcf", "0198abcd\u{10FFFF}"] {
        assert!(matches!(s.job(unknown).await, Err(StoreError::NotFound(_))), "{unknown:?}");
    }
}

/// A 10,000-target job is stored, listed and settled in full.
pub async fn big_job_round_trip(h: &Harness) {
    let s = h.store();
    let rec = s.recorder();
    let targets: Vec<_> = (0..10_000)
        .map(|i| if i % 10 == 0 { offline(&format!("d{i:05}")) } else { pending(&format!("d{i:05}")) })
        .collect();
    create(&rec, "job-big", 0, targets).await;
    s.flush().await.unwrap();
    let (record, targets) = s.job("job-big").await.unwrap();
    assert_eq!((record.targets, targets.len()), (10_000, 10_000));
    assert_eq!(record.summary, summary(&[(Status::Offline, 1_000)]));
    assert!(targets.windows(2).all(|w| w[0].device < w[1].device));
    assert_eq!(targets[9_999].device, "d09999");

    // Odd targets answer: one record with 5,000 outcomes, written in bulk.
    let answers = (1..10_000)
        .filter(|i| i % 2 == 1)
        .map(|i| outcome("job-big", &format!("d{i:05}"), Status::Ok, false))
        .collect();
    rec.record(Record::TargetsSettled(answers)).await;
    rec.record(end(
        "job-big",
        9_000,
        JobPhase::Done,
        Some((Status::Timeout, ErrorBody::new(ErrorCode::Timeout, "late"))),
    ))
    .await;
    s.flush().await.unwrap();
    let listed = s.jobs(1).await.unwrap();
    assert_eq!(listed[0].summary, summary(&[(Status::Ok, 5_000), (Status::Offline, 1_000), (Status::Timeout, 4_000)]));
}

/// A late answer never rewrites what the requester was told: it is kept beside a `timeout`
/// (the first one only; a second is ignored), survives a restart, and leaves the status, the
/// error and both summaries alone. A device that gave up at its own deadline answers late with
/// `timeout`, which is kept like any other answer.
pub async fn late_answers_are_kept_beside_the_timeout(h: &Harness) {
    let s = h.store();
    let rec = s.recorder();
    let j = "job-late";
    create(&rec, j, 0, vec![pending("a"), pending("b"), pending("c")]).await;
    let timeout = ErrorBody::new(ErrorCode::Timeout, "no answer within 30000 ms");
    rec.record(end(j, 30_000, JobPhase::Done, Some((Status::Timeout, timeout.clone())))).await;
    s.flush().await.unwrap();
    let told = s.job(j).await.unwrap();
    assert_eq!(told.0.summary, summary(&[(Status::Timeout, 3)]));

    let first = TargetOutcome { at: t(31_000), ..outcome(j, "a", Status::Error, true) };
    let second = TargetOutcome { at: t(32_000), ..outcome(j, "a", Status::Ok, true) };
    let gave_up = TargetOutcome { at: t(33_000), ..outcome(j, "b", Status::Timeout, true) };
    rec.record(Record::TargetsSettled(vec![first.clone(), second])).await;
    rec.record(Record::TargetsSettled(vec![gave_up.clone()])).await;
    s.flush().await.unwrap();
    let check = |(record, targets): (crate::JobRecord, Vec<crate::TargetRecord>)| {
        assert_eq!(record, told.0, "the job and its summary are what the requester was told");
        for (target, before) in targets.iter().zip(&told.1) {
            let without_late = crate::TargetRecord { late: None, ..target.clone() };
            assert_eq!(&without_late, before, "status, result and error stay");
        }
        let late = |o: &TargetOutcome| LateAnswer {
            status: o.status,
            result: o.result.clone(),
            error: o.error.clone(),
            at: o.at,
        };
        assert_eq!(targets[0].late, Some(late(&first)), "the first late answer wins");
        assert_eq!(targets[1].late, Some(late(&gave_up)));
        assert_eq!(targets[2].late, None);
    };
    check(s.job(j).await.unwrap());
    assert_eq!(s.jobs(1).await.unwrap()[0].summary, told.0.summary);
    let s = h.reopen().await;
    check(s.job(j).await.unwrap());
}

/// An error's data is kept verbatim with its code and message, for an outcome in time and for a
/// late answer, through a restart; an error without data reads back without.
pub async fn error_data_is_kept_in_time_and_late(h: &Harness) {
    let s = h.store();
    let rec = s.recorder();
    let j = "job-data";
    create(&rec, j, 0, vec![pending("a"), pending("b"), pending("c")]).await;
    let data = |text: &str| serde_json::value::RawValue::from_string(text.to_owned()).unwrap();
    let failed = ErrorBody::new(ErrorCode::ExitStatus, "exited with status 3")
        .with_data(data(r#"{"exit_code": 3, "stderr": "no\u00e9\n"}"#));
    let on_time = TargetOutcome { error: Some(failed.clone()), ..outcome(j, "a", Status::Error, false) };
    rec.record(Record::TargetsSettled(vec![on_time, outcome(j, "b", Status::Error, false)])).await;
    let timeout = ErrorBody::new(ErrorCode::Timeout, "no answer within 30000 ms");
    rec.record(end(j, 30_000, JobPhase::Done, Some((Status::Timeout, timeout.clone())))).await;
    let late_error = ErrorBody::new(ErrorCode::Other("custom".into()), "late").with_data(data("[1,null]"));
    let late = TargetOutcome { at: t(31_000), error: Some(late_error.clone()), ..outcome(j, "c", Status::Error, true) };
    rec.record(Record::TargetsSettled(vec![late])).await;
    s.flush().await.unwrap();
    let check = |targets: Vec<crate::TargetRecord>| {
        assert_eq!(targets[0].error.as_ref(), Some(&failed));
        assert_eq!(
            targets[0].error.as_ref().and_then(ErrorBody::data_json),
            Some(r#"{"exit_code": 3, "stderr": "no\u00e9\n"}"#)
        );
        assert_eq!(targets[1].error.as_ref().map(|e| e.data.is_none()), Some(true));
        assert_eq!((targets[2].status, targets[2].error.as_ref()), (Some(Status::Timeout), Some(&timeout)));
        assert_eq!(targets[2].late.as_ref().and_then(|l| l.error.as_ref()), Some(&late_error));
    };
    check(s.job(j).await.unwrap().1);
    let s = h.reopen().await;
    check(s.job(j).await.unwrap().1);
}

/// Rows a version before late answers were kept beside the timeout wrote with `late` set (the
/// late answer in place of the timeout) read as stored: their status is the late answer's and
/// counts in the summary, and the same answer is their late answer, at its `answered_at`. They
/// take no further late answer.
pub async fn late_rows_written_over_a_timeout_stay_readable(h: &Harness) {
    let s = h.store();
    let rec = s.recorder();
    create(&rec, "job-old-late", 0, vec![pending("a"), pending("b"), pending("c")]).await;
    let timeout = ErrorBody::new(ErrorCode::Timeout, "no answer within 30000 ms");
    rec.record(end("job-old-late", 30_000, JobPhase::Done, Some((Status::Timeout, timeout.clone())))).await;
    s.flush().await.unwrap();
    let mut conn = raw(h).await;
    // What the old code wrote for a late `ok` to `a` and a late `timeout` from `b`.
    let answered = crate::rows::ms(t(31_000));
    exec(
        &mut conn,
        &format!(
            "UPDATE job_targets SET status = 'ok', result = '{{\"up\":1}}', error_code = NULL, \
             error_message = NULL, elapsed_ms = 31000, answered_at = {answered}, late = TRUE \
             WHERE job_id = 'job-old-late' AND device_id = 'a'"
        ),
    )
    .await;
    exec(
        &mut conn,
        &format!(
            "UPDATE job_targets SET error_message = 'the device gave up', answered_at = {answered}, late = TRUE \
             WHERE job_id = 'job-old-late' AND device_id = 'b'"
        ),
    )
    .await;
    sqlx::Connection::close(conn).await.unwrap();

    let (record, targets) = s.job("job-old-late").await.unwrap();
    assert_eq!(record.summary, summary(&[(Status::Ok, 1), (Status::Timeout, 2)]));
    assert_eq!(s.jobs(1).await.unwrap()[0].summary, record.summary);
    let a = &targets[0];
    assert_eq!((a.status, a.result.as_deref(), a.elapsed_ms), (Some(Status::Ok), Some(r#"{"up":1}"#), Some(31_000)));
    let late_a = LateAnswer { status: Status::Ok, result: Some(r#"{"up":1}"#.into()), error: None, at: t(31_000) };
    assert_eq!(a.late, Some(late_a));
    let gave_up = ErrorBody::new(ErrorCode::Timeout, "the device gave up");
    let late_b = LateAnswer { status: Status::Timeout, result: None, error: Some(gave_up), at: t(31_000) };
    assert_eq!(targets[1].late, Some(late_b.clone()));
    assert_eq!(targets[2].late, None);

    // `b` holds its late answer already (its status is timeout again, its flag says so).
    rec.record(Record::TargetsSettled(vec![outcome("job-old-late", "b", Status::Ok, true)])).await;
    rec.record(Record::TargetsSettled(vec![outcome("job-old-late", "c", Status::Ok, true)])).await;
    s.flush().await.unwrap();
    let (_, targets) = s.job("job-old-late").await.unwrap();
    assert_eq!(targets[1].late, Some(late_b));
    assert_eq!(targets[2].late.as_ref().map(|l| (l.status, l.at)), Some((Status::Ok, t(500))));
}

/// The `job_targets` rows of `job`, counted under the store.
async fn target_rows(conn: &mut sqlx::AnyConnection, job: &str) -> i64 {
    let row = sqlx::query("SELECT COUNT(*) AS n FROM job_targets WHERE job_id = $1").bind(job).fetch_one(conn);
    sqlx::Row::get(&row.await.unwrap(), "n")
}

/// Inserts a running job the way the store wrote them before target lists: no list, one row
/// per target, a NULL status while pending (`c` is offline).
async fn old_style_job(conn: &mut sqlx::AnyConnection, id: &str, at: i64) {
    let created = crate::rows::ms(t(at));
    exec(
        conn,
        &format!(
            "INSERT INTO jobs (id, requester, selector, command, args, created_at, deadline_at, state, target_count) \
             VALUES ('{id}', 'cli-1', 'all', 'uptime', NULL, {created}, {}, 'running', 4)",
            created + 30_000
        ),
    )
    .await;
    exec(
        conn,
        &format!(
            "INSERT INTO job_targets (job_id, device_id, status, error_code, error_message) VALUES \
             ('{id}', 'b', NULL, NULL, NULL), ('{id}', 'a', NULL, NULL, NULL), \
             ('{id}', 'c', 'offline', 'device_offline', 'device c is not connected'), ('{id}', 'd', NULL, NULL, NULL)"
        ),
    )
    .await;
}

/// Jobs stored before target lists (a row per target, NULL while pending) still read as
/// pending, settle, end, cancel and recover as documented.
pub async fn jobs_stored_with_pending_rows_still_work(h: &Harness) {
    let s = h.store();
    let rec = s.recorder();
    let mut conn = raw(h).await;
    for (i, id) in ["old-end", "old-cancel", "old-recover"].into_iter().enumerate() {
        old_style_job(&mut conn, id, i64::try_from(i).unwrap()).await;
    }

    let (record, targets) = s.job("old-end").await.unwrap();
    assert_eq!((record.targets, record.summary.clone()), (4, summary(&[(Status::Offline, 1)])));
    let statuses: Vec<_> = targets.iter().map(|t| (t.device.as_str(), t.status)).collect();
    assert_eq!(statuses, [("a", None), ("b", None), ("c", Some(Status::Offline)), ("d", None)]);
    assert_eq!(s.jobs(10).await.unwrap()[2].summary, summary(&[(Status::Offline, 1)]));

    rec.record(Record::TargetsSettled(vec![outcome("old-end", "a", Status::Ok, false)])).await;
    rec.record(Record::TargetsSettled(vec![outcome("old-end", "d", Status::Ok, true)])).await; // pending: ignored
    let timeout = ErrorBody::new(ErrorCode::Timeout, "no answer before the deadline");
    rec.record(end("old-end", 1_000, JobPhase::Done, Some((Status::Timeout, timeout.clone())))).await;
    s.flush().await.unwrap();
    let (record, targets) = s.job("old-end").await.unwrap();
    assert_eq!(record.state, JobPhase::Done);
    assert_eq!(record.summary, summary(&[(Status::Ok, 1), (Status::Offline, 1), (Status::Timeout, 2)]));
    assert_eq!((targets[1].status, targets[1].error.as_ref()), (Some(Status::Timeout), Some(&timeout)));
    assert_eq!((targets[3].status, &targets[3].late), (Some(Status::Timeout), &None));
    rec.record(Record::TargetsSettled(vec![outcome("old-end", "d", Status::Ok, true)])).await; // now beside it
    s.flush().await.unwrap();
    let (after, targets) = s.job("old-end").await.unwrap();
    assert_eq!((after.summary, targets[3].status), (record.summary, Some(Status::Timeout)));
    assert_eq!(targets[3].late.as_ref().map(|l| l.status), Some(Status::Ok));
    assert_eq!(target_rows(&mut conn, "old-end").await, 4);

    rec.record(Record::TargetsSettled(vec![outcome("old-cancel", "d", Status::Error, false)])).await;
    s.flush().await.unwrap();
    assert_eq!(s.cancel_job("old-cancel", t(100)).await.unwrap(), ["a", "b"]);
    let (record, _) = s.job("old-cancel").await.unwrap();
    assert_eq!(record.state, JobPhase::Cancelled);
    assert_eq!(record.summary, summary(&[(Status::Cancelled, 2), (Status::Offline, 1), (Status::Error, 1)]));

    assert_eq!(s.recover_jobs(NODE, t(2_000), "the server restarted").await.unwrap(), 1);
    let (record, _) = s.job("old-recover").await.unwrap();
    assert_eq!(
        (record.state, record.summary),
        (JobPhase::Done, summary(&[(Status::Timeout, 3), (Status::Offline, 1)]))
    );
    assert_eq!(s.prune_jobs(t(100_000), 0).await.unwrap(), 3);
    assert_eq!(target_rows(&mut conn, "old-recover").await, 0);
    sqlx::Connection::close(conn).await.unwrap();
}

/// A job's pending targets are stored once, in its list: rows are written only as targets get
/// a status. A 10,000-target job that all times out gets its 10,000 rows when it ends; a late
/// answer to a target still pending (no row: its end not yet stored) writes none.
pub async fn pending_targets_get_rows_when_settled(h: &Harness) {
    let s = h.store();
    let rec = s.recorder();
    let mut conn = raw(h).await;
    let targets: Vec<_> = (0..10_000).map(|i| pending(&format!("d{i:05}"))).collect();
    create(&rec, "job-silent", 0, targets).await;
    create(&rec, "job-mixed", 1, vec![pending("a"), offline("b"), pending("c"), pending("d")]).await;
    s.flush().await.unwrap();
    assert_eq!(target_rows(&mut conn, "job-silent").await, 0);
    assert_eq!(target_rows(&mut conn, "job-mixed").await, 1);
    let (record, targets) = s.job("job-silent").await.unwrap();
    assert_eq!((record.targets, targets.len()), (10_000, 10_000));
    assert!(record.summary.is_empty() && targets.iter().all(|t| t.status.is_none() && t.late.is_none()));

    let timeout = ErrorBody::new(ErrorCode::Timeout, "no answer before the deadline");
    rec.record(end("job-silent", 30_000, JobPhase::Done, Some((Status::Timeout, timeout.clone())))).await;
    rec.record(Record::TargetsSettled(vec![outcome("job-mixed", "c", Status::Ok, true)])).await; // still pending
    rec.record(Record::TargetsSettled(vec![outcome("job-mixed", "zz", Status::Ok, true)])).await; // not a target
    rec.record(Record::TargetsSettled(vec![outcome("job-mixed", "b", Status::Ok, true)])).await; // never over offline
    s.flush().await.unwrap();
    assert_eq!(target_rows(&mut conn, "job-silent").await, 10_000);
    let (record, targets) = s.job("job-silent").await.unwrap();
    assert_eq!(record.summary, summary(&[(Status::Timeout, 10_000)]));
    assert!(targets.iter().all(|t| t.error.as_ref() == Some(&timeout)));
    assert_eq!(s.jobs(10).await.unwrap()[1].summary, summary(&[(Status::Timeout, 10_000)]));

    let (_, targets) = s.job("job-mixed").await.unwrap();
    let statuses: Vec<_> = targets.iter().map(|t| (t.device.as_str(), t.status, t.late.is_some())).collect();
    assert_eq!(
        statuses,
        [("a", None, false), ("b", Some(Status::Offline), false), ("c", None, false), ("d", None, false)]
    );
    assert_eq!(target_rows(&mut conn, "job-mixed").await, 1, "no row for an ignored late answer");
    assert_eq!(s.cancel_job("job-mixed", t(5_000)).await.unwrap(), ["a", "c", "d"]);
    assert_eq!(target_rows(&mut conn, "job-mixed").await, 4);
    sqlx::Connection::close(conn).await.unwrap();
}

/// How `job(id, at)` reads back before any target settles.
fn stored(id: &str, at: i64) -> crate::JobRecord {
    let new = job(id, at);
    crate::JobRecord {
        id: new.id,
        node: Some(new.node),
        requester: new.requester,
        selector: new.selector,
        command: new.command,
        args: new.args,
        created_at: new.created_at,
        deadline_at: new.deadline_at,
        finished_at: None,
        state: JobPhase::Running,
        targets: 0,
        skipped: new.skipped,
        rollout: new.rollout,
        summary: BTreeMap::new(),
    }
}

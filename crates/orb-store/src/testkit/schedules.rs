//! Conformance cases for stored schedules (decision 0014): limits, lookup by prefix, pause and
//! resume, and a firing stored exactly once (a compare-and-set on the next firing time, its job
//! in the same commit, dispatched once, left alone by recovery). Run per backend by
//! `conformance_tests!`.

use orb_proto::history::JobPhase;

use super::devices::{NODE, job};
use super::{Harness, new_device, t};
use crate::{FiredJob, Firing, NewJob, NewSchedule, NewTarget, Record, ScheduleCreated, ScheduleLimits, StoreError};

/// A rollout as the server stores it (the store does not read it).
const ROLLOUT: &str = r#"{"batch":"10%","abort_on_failure_pct":5}"#;

const ROOMY: ScheduleLimits = ScheduleLimits { max_schedules: 100, max_bytes: 1 << 16 };

fn schedule(id: &str, next_ms: i64) -> NewSchedule {
    NewSchedule {
        id: id.to_owned(),
        spec: r#"{"kind":"every","every_ms":1000,"anchor":"2026-01-01T00:00:00Z"}"#.to_owned(),
        missed: "skip".to_owned(),
        selector: "tag:site=lab".to_owned(),
        command: "uptime".to_owned(),
        args: Some(r#"{"v":1}"#.to_owned()),
        wait_ms: 5_000,
        ttl_ms: Some(60_000),
        rollout: Some(ROLLOUT.to_owned()),
        on_agent: false,
        created_by: "op-1".to_owned(),
        credential: Some("token:ops".to_owned()),
        created_at: t(0),
        next_fire_at: Some(t(next_ms)),
    }
}

fn firing(id: &str, expected: i64, next: Option<i64>, job_id: Option<&str>) -> Firing {
    Firing {
        schedule: id.to_owned(),
        expected: t(expected),
        next: next.map(t),
        job: job_id.map(|j| NewJob {
            schedule: Some(id.to_owned()),
            rollout: Some(ROLLOUT.to_owned()),
            ..job(j, expected)
        }),
        ttl_ms: Some(60_000),
        at: t(expected),
    }
}

/// Schedules are stored within their limits, read back whole (by id or unique prefix), and
/// survive a restart.
pub async fn schedules_are_stored_within_limits(h: &Harness) {
    let s = h.store();
    let two = ScheduleLimits { max_schedules: 2, ..ROOMY };
    assert_eq!(s.create_schedule(schedule("sch-a1", 1_000), two).await.unwrap(), ScheduleCreated::Created);
    assert_eq!(s.create_schedule(schedule("sch-b2", 2_000), two).await.unwrap(), ScheduleCreated::Created);
    let full = s.create_schedule(schedule("sch-c3", 3_000), two).await.unwrap();
    assert!(matches!(&full, ScheduleCreated::Full(why) if why.contains("2 schedules")), "{full:?}");
    let small = ScheduleLimits { max_bytes: 10, ..ROOMY };
    let big = s.create_schedule(schedule("sch-c3", 3_000), small).await.unwrap();
    assert!(matches!(&big, ScheduleCreated::Full(why) if why.contains("bytes")), "{big:?}");
    assert!(matches!(s.create_schedule(schedule("sch-a1", 1_000), ROOMY).await, Err(StoreError::Conflict(_))));

    let all = s.schedules().await.unwrap();
    let ids: Vec<&str> = all.iter().map(|r| r.schedule.id.as_str()).collect();
    assert_eq!(ids, ["sch-a1", "sch-b2"]);
    assert_eq!(all[0].schedule, NewSchedule { args: None, ..schedule("sch-a1", 1_000) }, "listed without args");
    assert_eq!(s.schedule("sch-a1").await.unwrap().schedule, schedule("sch-a1", 1_000), "stored as given");
    assert_eq!((all[0].paused_at, all[0].last_fired_at, all[0].fired, &all[0].last_error), (None, None, 0, &None));
    assert_eq!(s.schedule("SCH-B").await.unwrap().schedule.id, "sch-b2", "a unique prefix, any case");
    assert!(matches!(s.schedule("sch-").await, Err(StoreError::Ambiguous { count: 2, .. })));
    assert!(matches!(s.schedule("nope").await, Err(StoreError::NotFound(_))));
    assert!(matches!(s.schedule("").await, Err(StoreError::NotFound(_))));

    let s = h.reopen().await;
    assert_eq!(s.schedules().await.unwrap().len(), 2);
    assert!(s.remove_schedule("sch-a1").await.unwrap());
    assert!(!s.remove_schedule("sch-a1").await.unwrap(), "removed once");
    assert_eq!(s.create_schedule(schedule("sch-c3", 3_000), two).await.unwrap(), ScheduleCreated::Created);
}

/// A firing moves the next firing time on only from the time it was read with, and stores its
/// job in the same commit, awaiting dispatch: a second attempt (another node, a repeated
/// wake-up) stores nothing. Recovery leaves the fired job for the scheduler, which dispatches it
/// once; the job's creation record completes it. The schedule's jobs are listed by it.
pub async fn a_firing_is_stored_once(h: &Harness) {
    let s = h.store();
    s.add_device(new_device("a")).await.unwrap();
    s.create_schedule(schedule("sch-1", 1_000), ROOMY).await.unwrap();
    assert!(s.advance_schedule(firing("sch-1", 1_000, Some(2_000), Some("job-f1"))).await.unwrap());
    assert!(!s.advance_schedule(firing("sch-1", 1_000, Some(2_000), Some("job-f1b"))).await.unwrap(), "once");
    let r = s.schedule("sch-1").await.unwrap();
    assert_eq!((r.schedule.next_fire_at, r.last_fired_at, r.fired), (Some(t(2_000)), Some(t(1_000)), 1));
    assert!(matches!(s.job("job-f1b").await, Err(StoreError::NotFound(_))));

    // Stored running, awaiting dispatch; a restart's recovery leaves it to the scheduler.
    let (record, targets) = s.job("job-f1").await.unwrap();
    assert_eq!((record.state, record.targets, targets.len()), (JobPhase::Running, 0, 0));
    assert_eq!(record.rollout.as_deref(), Some(ROLLOUT), "the firing's rollout is the job's");
    let fired = FiredJob {
        job: "job-f1".to_owned(),
        schedule: "sch-1".to_owned(),
        selector: "all".to_owned(),
        command: "uptime".to_owned(),
        args: Some(r#"{"v":true}"#.to_owned()),
        wait_ms: 30_000,
        ttl_ms: Some(60_000),
        rollout: Some(ROLLOUT.to_owned()),
        credential: Some("token:ops".to_owned()),
    };
    assert_eq!(s.undispatched_firings(NODE).await.unwrap(), [fired], "with what it runs");
    assert!(s.undispatched_firings("node-b").await.unwrap().is_empty(), "another node's are not ours");
    assert_eq!(s.recover_jobs(NODE, t(1_500), "restarted").await.unwrap(), 0);
    assert_eq!(s.job("job-f1").await.unwrap().0.state, JobPhase::Running);

    assert!(s.dispatch_firing("job-f1").await.unwrap());
    assert!(!s.dispatch_firing("job-f1").await.unwrap(), "dispatched once");
    assert!(s.undispatched_firings(NODE).await.unwrap().is_empty());
    let target = NewTarget { device: "a".to_owned(), status: None, error: None };
    let created = NewJob {
        targets: vec![target],
        schedule: Some("sch-1".to_owned()),
        rollout: Some(ROLLOUT.to_owned()),
        ..job("job-f1", 1_000)
    };
    s.recorder().record(Record::JobCreated(created)).await;
    s.flush().await.unwrap();
    let (record, targets) = s.job("job-f1").await.unwrap();
    assert_eq!((record.targets, targets[0].device.as_str()), (1, "a"), "the creation record completes it");
    assert_eq!(s.recover_jobs(NODE, t(3_000), "restarted").await.unwrap(), 1, "dispatched: recovered as any job");

    // A missed firing skipped: the time moves on, nothing fires.
    assert!(s.advance_schedule(firing("sch-1", 2_000, Some(3_000), None)).await.unwrap());
    let r = s.schedule("sch-1").await.unwrap();
    assert_eq!((r.schedule.next_fire_at, r.fired), (Some(t(3_000)), 1));
    // Due schedules, earliest first; the earliest next firing.
    s.create_schedule(schedule("sch-later", 9_000), ROOMY).await.unwrap();
    let due: Vec<String> = s.due_schedules(t(3_000), 10).await.unwrap().into_iter().map(|r| r.schedule.id).collect();
    assert_eq!(due, ["sch-1"]);
    assert_eq!(s.next_firing().await.unwrap(), Some(t(3_000)));
    // The last firing: the schedule is deleted with it (its jobs stay).
    assert!(s.advance_schedule(firing("sch-1", 3_000, None, Some("job-f3"))).await.unwrap());
    assert!(matches!(s.schedule("sch-1").await, Err(StoreError::NotFound(_))));
    assert_eq!(s.next_firing().await.unwrap(), Some(t(9_000)));
    assert!(!s.advance_schedule(firing("gone", 3_000, None, Some("job-x"))).await.unwrap());

    // A fired job cancelled before its dispatch is never dispatched.
    s.dispatch_firing("job-f3").await.unwrap();
    assert!(s.advance_schedule(firing("sch-later", 9_000, Some(10_000), Some("job-c"))).await.unwrap());
    s.cancel_job("job-c", t(9_500)).await.unwrap();
    assert!(!s.dispatch_firing("job-c").await.unwrap(), "cancelled: not dispatched");
    assert!(s.undispatched_firings(NODE).await.unwrap().is_empty());

    // The jobs a schedule fired, newest first; other jobs are not among them.
    s.recorder().record(Record::JobCreated(job("job-plain", 2_500))).await;
    s.flush().await.unwrap();
    let fired: Vec<String> = s.schedule_jobs("sch-1", 10).await.unwrap().into_iter().map(|j| j.id).collect();
    assert_eq!(fired, ["job-f3", "job-f1"]);
    assert_eq!(s.schedule_jobs("sch-1", 1).await.unwrap().len(), 1);
    assert!(s.schedule_jobs("nope", 10).await.unwrap().is_empty());
    assert_eq!(s.jobs(10).await.unwrap().len(), 4, "the plain list has them all");
    // The schedules jobs were fired by, by id prefix (any case): sch-1 is gone, its jobs name it.
    assert_eq!(s.job_schedules("SCH-1", 10).await.unwrap(), ["sch-1"]);
    assert_eq!(s.job_schedules("sch-", 10).await.unwrap(), ["sch-1", "sch-later"]);
    assert_eq!(s.job_schedules("sch-", 1).await.unwrap(), ["sch-1"]);
    assert!(s.job_schedules("nope", 10).await.unwrap().is_empty());
    assert!(s.job_schedules("", 10).await.unwrap().is_empty());
}

/// A paused schedule does not fire; resuming sets its next firing time. Errors are recorded and
/// cleared.
pub async fn a_paused_schedule_does_not_fire(h: &Harness) {
    let s = h.store();
    s.create_schedule(schedule("sch-p", 1_000), ROOMY).await.unwrap();
    assert!(s.pause_schedule("sch-p", Some(t(500)), Some(t(1_000))).await.unwrap());
    assert!(!s.pause_schedule("sch-p", Some(t(600)), Some(t(1_000))).await.unwrap(), "paused already");
    assert!(s.due_schedules(t(5_000), 10).await.unwrap().is_empty(), "a paused schedule is not due");
    assert_eq!(s.next_firing().await.unwrap(), None);
    assert!(!s.advance_schedule(firing("sch-p", 1_000, Some(2_000), Some("job-p1"))).await.unwrap());
    assert_eq!(s.schedule("sch-p").await.unwrap().paused_at, Some(t(500)));
    assert!(s.pause_schedule("sch-p", None, Some(t(5_000))).await.unwrap());
    assert!(!s.pause_schedule("sch-p", None, Some(t(7_000))).await.unwrap(), "active already");
    let r = s.schedule("sch-p").await.unwrap();
    assert_eq!((r.paused_at, r.schedule.next_fire_at), (None, Some(t(5_000))));
    assert!(s.advance_schedule(firing("sch-p", 5_000, Some(6_000), Some("job-p2"))).await.unwrap());
    assert!(!s.pause_schedule("nope", None, None).await.unwrap());

    s.schedule_error("sch-p", Some("no_match: no known device matches".to_owned())).await.unwrap();
    assert_eq!(s.schedule("sch-p").await.unwrap().last_error.as_deref(), Some("no_match: no known device matches"));
    s.schedule_error("sch-p", None).await.unwrap();
    assert_eq!(s.schedule("sch-p").await.unwrap().last_error, None);
}

/// An agent-local schedule is stored without a next firing (the server never fires it), listed
/// with its arguments among the active agent-local schedules, and left out while paused.
pub async fn agent_schedules_are_listed_while_active(h: &Harness) {
    let s = h.store();
    let local = NewSchedule { on_agent: true, next_fire_at: None, ..schedule("sch-local", 1_000) };
    s.create_schedule(local.clone(), ROOMY).await.unwrap();
    s.create_schedule(schedule("sch-server", 1_000), ROOMY).await.unwrap();
    let listed = s.agent_schedules().await.unwrap();
    assert_eq!(listed.iter().map(|r| &r.schedule).collect::<Vec<_>>(), [&local], "with its args, on_agent kept");
    assert_eq!(s.next_firing().await.unwrap(), Some(t(1_000)), "only the server's schedule fires");
    assert_eq!(s.due_schedules(t(5_000), 10).await.unwrap().len(), 1);
    assert!(s.pause_schedule("sch-local", Some(t(500)), None).await.unwrap());
    assert!(s.agent_schedules().await.unwrap().is_empty(), "paused: not run by devices");
}

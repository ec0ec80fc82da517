//! Stored schedules over the wire (`$orb.schedules.*`): a schedule fires once through the
//! broker's one door (its job in the history, linked to it), bad input is refused with nothing
//! stored, the count is bounded, pause, resume and remove do what they say, and a firing due
//! at a restart waits for the devices that were connected.

use std::sync::Arc;

use chrono::Utc;
use orb_client::Context;
use orb_proto::ErrorCode;
use orb_proto::history::{JobDetail, JobInfo, JobPhase};
use orb_proto::message::commands;
use orb_proto::schedule::ScheduleInfo;
use orb_testkit::{TestServer, Transport, basic_handlers, call, refused, stored_until, within};
use serde_json::json;
use tokio::sync::mpsc;

#[tokio::test]
async fn a_schedule_fires_once_through_the_one_door_and_its_job_is_linked() {
    let server = TestServer::start().await;
    let (ran_tx, mut ran) = mpsc::unbounded_channel();
    let ran_tx = Arc::new(ran_tx);
    let handlers = basic_handlers().on("stamp", move |c: Context| {
        let ran_tx = Arc::clone(&ran_tx);
        async move {
            let _ = ran_tx.send(c.job.clone());
            Ok(json!("stamped"))
        }
    });
    let _agent = server.agent(Transport::Tcp, "s-1", &[], handlers).await;
    let op = server.operator(Transport::Tcp).await;

    let at = (Utc::now() + chrono::Duration::milliseconds(300)).to_rfc3339();
    let spec = json!({"kind": "at", "at": at});
    let created: ScheduleInfo = call(
        &op,
        commands::SCHEDULES_CREATE,
        json!({"target": "s-*", "command": "stamp", "deadline_ms": 5000, "spec": spec}),
    )
    .await;
    assert_eq!((created.fired, created.missed.as_str(), created.target.as_str()), (0, "skip", "s-*"));
    assert!(created.next_fire_at.is_some());

    // It fires: the device runs the command once, as part of a job linked to the schedule.
    let job = within("the firing", ran.recv()).await.expect("the handler ran").expect("a job id");
    let d: JobDetail = stored_until(&op, &job, |d| d.job.state == JobPhase::Done).await;
    assert_eq!(d.results[0].device, "s-1");
    assert_eq!(d.job.requester, format!("schedule:{}", created.id));
    // A one-shot schedule is deleted by its firing; its job stays linked to it.
    let gone = refused(&op, commands::SCHEDULES_SHOW, json!({"id": &created.id})).await;
    assert_eq!(gone, ErrorCode::ScheduleNotFound);
    let listed: Vec<JobInfo> = call(&op, commands::JOBS_LIST, json!({})).await;
    assert_eq!(listed.iter().filter(|j| j.requester == d.job.requester).count(), 1, "fired once");
    let fired: Vec<JobInfo> = call(&op, commands::JOBS_LIST, json!({"schedule": created.id})).await;
    assert_eq!(fired.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(), [job.as_str()], "its jobs, by schedule");
    assert!(ran.try_recv().is_err(), "ran once");
    // The schedule is gone, but its jobs name it: a unique prefix finds them, an unknown one is
    // refused rather than answered with nothing.
    let by_prefix: Vec<JobInfo> = call(&op, commands::JOBS_LIST, json!({"schedule": &created.id[..13]})).await;
    assert_eq!(by_prefix.len(), 1);
    let unknown = json!({"schedule": "ffffffff-0000"});
    assert_eq!(refused(&op, commands::JOBS_LIST, unknown).await, ErrorCode::ScheduleNotFound);

    // A prefix two schedules share (ids made together share their timestamp) is ambiguous.
    let every = json!({"kind": "every", "every_ms": 3_600_000, "anchor": Utc::now().to_rfc3339()});
    let create = json!({"target": "s-*", "command": "stamp", "spec": every});
    let a: ScheduleInfo = call(&op, commands::SCHEDULES_CREATE, create.clone()).await;
    let b: ScheduleInfo = call(&op, commands::SCHEDULES_CREATE, create).await;
    let common = a.id.chars().zip(b.id.chars()).take_while(|(x, y)| x == y).count();
    let both = json!({"schedule": &a.id[..common]});
    assert_eq!(refused(&op, commands::JOBS_LIST, both).await, ErrorCode::AmbiguousId);
    let none: Vec<JobInfo> = call(&op, commands::JOBS_LIST, json!({"schedule": a.id})).await;
    assert!(none.is_empty(), "a stored schedule that has not fired has no jobs: {none:?}");
}

#[tokio::test]
async fn bad_schedules_are_refused_and_nothing_is_stored() {
    let server = TestServer::start_with(|cfg| cfg.limits.max_schedules = 1, |b| b).await;
    let op = server.operator(Transport::Tcp).await;
    let create = |spec: serde_json::Value| json!({"target": "*", "command": "ping", "spec": spec});
    let past = (Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let cases = [
        (json!({"kind": "at", "at": past}), ErrorCode::BadSchedule),
        (json!({"kind": "cron", "expr": "0 25 * * *", "tz": "UTC"}), ErrorCode::BadSchedule),
        (json!({"kind": "cron", "expr": "0 2 * * *", "tz": "Mars/Olympus"}), ErrorCode::BadSchedule),
        (json!({"kind": "every", "every_ms": 0, "anchor": Utc::now().to_rfc3339()}), ErrorCode::BadSchedule),
    ];
    for (spec, code) in cases {
        assert_eq!(refused(&op, commands::SCHEDULES_CREATE, create(spec.clone())).await, code, "{spec}");
    }
    let bad_selector =
        json!({"target": "tag:", "command": "ping", "spec": {"kind": "cron", "expr": "@daily", "tz": "UTC"}});
    assert_eq!(refused(&op, commands::SCHEDULES_CREATE, bad_selector).await, ErrorCode::BadSelector);
    assert!(call::<Vec<ScheduleInfo>>(&op, commands::SCHEDULES_LIST, json!(null)).await.is_empty(), "nothing stored");

    let daily = create(json!({"kind": "cron", "expr": "0 2 * * *", "tz": "Europe/Berlin"}));
    let _: ScheduleInfo = call(&op, commands::SCHEDULES_CREATE, daily.clone()).await;
    assert_eq!(refused(&op, commands::SCHEDULES_CREATE, daily).await, ErrorCode::TooManySchedules);
}

#[tokio::test]
async fn pause_resume_and_remove() {
    let server = TestServer::start().await;
    let op = server.operator(Transport::Tcp).await;
    let spec = json!({"kind": "every", "every_ms": 3_600_000, "anchor": Utc::now().to_rfc3339()});
    let s: ScheduleInfo = call(
        &op,
        commands::SCHEDULES_CREATE,
        json!({"target": "*", "command": "ping", "spec": spec, "missed": "run-once"}),
    )
    .await;
    assert_eq!(s.missed, "run-once");
    let id = json!({"id": s.id});
    let paused: ScheduleInfo = call(&op, commands::SCHEDULES_PAUSE, id.clone()).await;
    assert!(paused.paused_at.is_some() && paused.next_fire_at.is_none(), "{paused:?}");
    let resumed: ScheduleInfo = call(&op, commands::SCHEDULES_RESUME, id.clone()).await;
    assert!(resumed.paused_at.is_none() && resumed.next_fire_at.is_some(), "{resumed:?}");
    let removed: ScheduleInfo = call(&op, commands::SCHEDULES_REMOVE, id.clone()).await;
    assert_eq!(removed.id, s.id);
    assert_eq!(refused(&op, commands::SCHEDULES_SHOW, id.clone()).await, ErrorCode::ScheduleNotFound);
    assert_eq!(refused(&op, commands::SCHEDULES_REMOVE, id).await, ErrorCode::ScheduleNotFound);
}

/// Handlers answering `stamp` with the job id they ran for, sent on `ran`.
fn stamping(ran: &mpsc::UnboundedSender<Option<String>>) -> orb_client::Handlers {
    let ran = Arc::new(ran.clone());
    basic_handlers().on("stamp", move |c: Context| {
        let ran = Arc::clone(&ran);
        async move {
            let _ = ran.send(c.job.clone());
            Ok(json!("stamped"))
        }
    })
}

/// A firing that fell due while the server was down waits, after the restart, for the device
/// that was connected when it stopped, and fires as soon as it is back: long before
/// `scheduler.restart_grace` (ten minutes here) is over.
#[tokio::test]
async fn a_firing_due_at_a_restart_fires_once_the_devices_connected_before_are_back() {
    let server = TestServer::start().await;
    let (ran_tx, mut ran) = mpsc::unbounded_channel();
    let agent = server.agent(Transport::Tcp, "back-1", &[], stamping(&ran_tx)).await;
    let op = server.operator(Transport::Tcp).await;
    let at = Utc::now() + chrono::Duration::seconds(2);
    let spec = json!({"kind": "at", "at": at.to_rfc3339()});
    let created: ScheduleInfo = call(
        &op,
        commands::SCHEDULES_CREATE,
        json!({"target": "back-1", "command": "stamp", "deadline_ms": 5000, "spec": spec}),
    )
    .await;
    op.close().await;

    // Stopped (gracefully, with back-1 connected) until the firing's time has passed.
    let down = (at - Utc::now()).to_std().unwrap_or_default() + std::time::Duration::from_millis(300);
    let (server, ()) =
        server.restart_after(tokio::time::sleep(down), |c| c.restart_grace = std::time::Duration::from_secs(600)).await;
    drop(agent);
    let op = server.operator(Transport::Tcp).await;
    let waiting: ScheduleInfo = call(&op, commands::SCHEDULES_SHOW, json!({"id": &created.id})).await;
    assert_eq!(waiting.fired, 0, "nothing fired while back-1 is away: {waiting:?}");
    assert!(ran.try_recv().is_err());

    let _agent = server.agent(Transport::Tcp, "back-1", &[], stamping(&ran_tx)).await;
    let job = within("the firing once back-1 is back", ran.recv()).await.expect("the handler ran").expect("a job");
    let d: JobDetail = stored_until(&op, &job, |d| d.job.state == JobPhase::Done).await;
    assert_eq!((d.results[0].device.as_str(), d.results[0].status), ("back-1", orb_proto::Status::Ok));
    assert_eq!(d.job.requester, format!("schedule:{}", created.id));
}

/// A one-shot paused until its time passed is not left lingering when resumed: its time is no
/// more than a minute past, on time under either missed policy, so it fires at once (longer
/// pauses: `scheduler.rs`'s test with an injected clock).
#[tokio::test]
async fn a_one_shot_paused_past_its_time_fires_when_resumed() {
    let server = TestServer::start().await;
    let (ran_tx, mut ran) = mpsc::unbounded_channel();
    let _agent = server.agent(Transport::Tcp, "r-1", &[], stamping(&ran_tx)).await;
    let op = server.operator(Transport::Tcp).await;
    let at = Utc::now() + chrono::Duration::seconds(1);
    let spec = json!({"kind": "at", "at": at.to_rfc3339()});
    let created: ScheduleInfo =
        call(&op, commands::SCHEDULES_CREATE, json!({"target": "r-1", "command": "stamp", "spec": spec})).await;
    let id = json!({"id": &created.id});
    let _: ScheduleInfo = call(&op, commands::SCHEDULES_PAUSE, id.clone()).await;
    tokio::time::sleep((at - Utc::now()).to_std().unwrap_or_default() + std::time::Duration::from_millis(200)).await;
    assert!(ran.try_recv().is_err(), "paused: it did not fire");

    let resumed: ScheduleInfo = call(&op, commands::SCHEDULES_RESUME, id).await;
    let next = resumed.next_fire_at.as_deref().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    assert!(next.is_some_and(|t| t <= Utc::now()) && resumed.last_error.is_none(), "due at its own time: {resumed:?}");
    let job = within("the resumed firing", ran.recv()).await.expect("the handler ran").expect("a job");
    let d: JobDetail = stored_until(&op, &job, |d| d.job.state == JobPhase::Done).await;
    assert_eq!(d.job.requester, format!("schedule:{}", created.id));
}

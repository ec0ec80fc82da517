//! The scheduler (decision 0014): fires stored schedules through the broker's one door, as an
//! operator's job would be submitted. At start it dispatches the firings a crash left
//! undispatched; then it sleeps until the earliest next firing (at most a minute, and woken at
//! once when a schedule changes), and at each wake-up asks `orb_schedule::due` what each due
//! schedule does: fire now (its job stored with the schedule's next firing time in one commit,
//! then marked dispatched, then submitted) or skip what was missed. A firing is stored once even
//! when two nodes or two wake-ups race (the store compares the next firing time it was read
//! with); a job is dispatched once (marked before any command is sent).

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use orb_proto::message::{Role, Select};
use orb_store::{Firing, JobEnd, NewJob, Record, ScheduleRecord};
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::broker::services::schedules::{missed_of, spec_of};
use crate::identity::{Identity, Requester};
use crate::jobs::{FiringRef, JobSpec};

/// A firing this late is on time for either missed-firing policy.
const GRACE: Duration = Duration::from_secs(60);
/// The longest sleep between wake-ups (a changed clock is noticed within it).
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// A wake-up after the store failed.
const RETRY: Duration = Duration::from_secs(1);
/// Test-only crash point: with this variable set to `1`, the process aborts right after a
/// firing's commit, before its dispatch (the restart must dispatch it, once).
pub const CRASH_AFTER_FIRING_VAR: &str = "ORB_TEST_CRASH_AFTER_FIRING";

/// Runs the scheduler until `shutdown`.
pub(crate) async fn run(broker: Broker, shutdown: CancellationToken) {
    recover(&broker).await;
    loop {
        let wait = tick(&broker, Utc::now()).await;
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = broker.schedules_changed() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Dispatches this node's fired jobs that a crash left awaiting dispatch.
async fn recover(broker: &Broker) {
    let store = broker.registry().store();
    let firings = match store.undispatched_firings(broker.node().as_str()).await {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read firings awaiting dispatch");
            return;
        }
    };
    for (job, schedule) in firings {
        match store.schedule(&schedule).await {
            Ok(s) => {
                tracing::info!(job, schedule, "dispatching a firing stored before the last stop");
                dispatch(broker, &job, &s).await;
            }
            Err(e) => {
                tracing::warn!(job, schedule, error = %e, "a fired job's schedule is gone; the job ends");
                end_job(broker, &job).await;
            }
        }
    }
}

/// Fires every due schedule; answers how long to sleep.
async fn tick(broker: &Broker, now: DateTime<Utc>) -> Duration {
    let schedules = match broker.registry().store().schedules().await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read schedules");
            return RETRY;
        }
    };
    let mut earliest: Option<DateTime<Utc>> = None;
    for s in schedules {
        // A stopping server fires nothing (its job would be refused); the next start does,
        // following the schedule's missed-firing policy.
        if broker.is_draining() {
            return RETRY;
        }
        let Some(mut next) = s.schedule.next_fire_at.filter(|_| s.paused_at.is_none()) else { continue };
        if next <= now {
            match fire(broker, &s, next, now).await {
                Some(after) => next = after,
                None => continue,
            }
        }
        earliest = Some(earliest.map_or(next, |e| e.min(next)));
    }
    earliest.map_or(MAX_SLEEP, |e| (e - now).to_std().unwrap_or(Duration::ZERO).min(MAX_SLEEP))
}

/// Fires (or skips) schedule `s`, due at `expected`; answers its next firing time, `None` when
/// it fires no more or was moved by someone else (the next wake-up reads it again).
async fn fire(
    broker: &Broker,
    s: &ScheduleRecord,
    expected: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Option<DateTime<Utc>> {
    let store = broker.registry().store();
    let id = &s.schedule.id;
    let spec = spec_of(s);
    let policy = missed_of(s);
    let due = match &spec {
        Some(spec) => orb_schedule::due(spec, policy, expected, now, GRACE),
        // Unreadable: it never fires; its next firing time is cleared.
        None => orb_schedule::Due { fire_now: false, missed: 0, next: None },
    };
    let job = due.fire_now.then(|| NewJob {
        id: uuid::Uuid::now_v7().to_string(),
        node: broker.node().to_string(),
        requester: requester_name(id),
        selector: s.schedule.selector.clone(),
        command: s.schedule.command.clone(),
        args: s.schedule.args.clone(),
        created_at: now,
        deadline_at: now + chrono::Duration::milliseconds(i64::try_from(s.schedule.wait_ms).unwrap_or(i64::MAX)),
        targets: Vec::new(),
        skipped: 0,
        schedule: Some(id.clone()),
    });
    let job_id = job.as_ref().map(|j| j.id.clone());
    let firing = Firing { schedule: id.clone(), expected, next: due.next, job, at: now };
    match store.advance_schedule(firing).await {
        Ok(true) => {}
        Ok(false) => return None,
        Err(e) => {
            tracing::warn!(schedule = id, error = %e, "cannot store a schedule's firing");
            return None;
        }
    }
    if due.missed > 0 {
        tracing::info!(
            schedule = id,
            missed = due.missed,
            policy = policy.as_str(),
            "firings missed while no server ran"
        );
    }
    if let Some(job) = job_id {
        if std::env::var(CRASH_AFTER_FIRING_VAR).as_deref() == Ok("1") {
            tracing::error!(schedule = id, job, "{CRASH_AFTER_FIRING_VAR}: aborting after the firing's commit");
            std::process::abort();
        }
        dispatch(broker, &job, s).await;
    }
    due.next
}

/// Dispatches fired job `job` of schedule `s`: marked dispatched (once), then submitted through
/// the broker's one door. A refusal (nothing matches, ...) ends the job and is kept as the
/// schedule's last error.
async fn dispatch(broker: &Broker, job: &str, s: &ScheduleRecord) {
    let store = broker.registry().store();
    let id = &s.schedule.id;
    match store.dispatch_firing(job).await {
        Ok(true) => {}
        Ok(false) => return,
        Err(e) => {
            tracing::warn!(schedule = id, job, error = %e, "cannot mark a fired job dispatched; it is dispatched at the next start");
            return;
        }
    }
    let spec = JobSpec {
        command: s.schedule.command.clone(),
        target: s.schedule.selector.clone(),
        args: s.schedule.args.clone().map(Bytes::from),
        deadline: Some(Duration::from_millis(s.schedule.wait_ms)),
        select: Select::All,
        ttl: s.schedule.ttl_ms.map(Duration::from_millis),
        firing: Some(FiringRef { job: job.to_owned(), schedule: id.clone() }),
    };
    let who = Requester::new(Identity { name: requester_name(id), role: Role::Operator, device: None, admin: true });
    let error = match broker.submit(&who, spec) {
        // Nobody reads its events: the job runs to its end and its results are stored.
        Ok(_handle) => None,
        Err(e) => {
            tracing::info!(schedule = id, job, code = %e.code, "a schedule's firing did not start: {}", e.message);
            end_job(broker, job).await;
            Some(format!("{}: {}", e.code, e.message))
        }
    };
    if (error.is_some() || s.last_error.is_some())
        && let Err(e) = store.schedule_error(id, error).await
    {
        tracing::warn!(schedule = id, error = %e, "cannot record a schedule's last error");
    }
}

/// Ends a fired job that did not start (no targets).
async fn end_job(broker: &Broker, job: &str) {
    let end =
        JobEnd { job: job.to_owned(), at: Utc::now(), state: orb_proto::history::JobPhase::Done, pending_become: None };
    broker.registry().recorder().record(Record::JobEnded(end)).await;
}

/// The requester name a schedule's jobs show in the history.
fn requester_name(schedule: &str) -> String {
    format!("schedule:{schedule}")
}

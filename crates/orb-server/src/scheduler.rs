//! The scheduler (decision 0014): fires stored schedules through the broker's one door, as an
//! operator's job would be submitted. It sleeps until the earliest next firing (at most a
//! minute, and woken at once when a schedule changes); at each wake-up it dispatches the firings
//! left undispatched (a crash between a firing's commit and its dispatch), then asks
//! `orb_schedule::due` what each due schedule does: fire now (its job stored with the schedule's
//! next firing time in one commit, then marked dispatched, then submitted) or skip what was
//! missed. After a start, what was due before it waits until the devices that were connected
//! when the previous server stopped are back (at most `scheduler.restart_grace`), so it reaches
//! them. A firing is stored once even
//! when two nodes or two wake-ups race (the store compares the next firing time it was read
//! with); a job is dispatched once (marked before any command is sent).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use orb_proto::history::JobPhase;
use orb_proto::message::Select;
use orb_proto::rollout::Rollout;
use orb_proto::{ErrorBody, ErrorCode};
use orb_store::{FiredJob, Firing, JobEnd, NewJob, Record, ScheduleRecord};
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::broker::services::schedules::{missed_of, spec_of};
use crate::identity::{Identity, Requester};
use crate::jobs::{FiringRef, JobSpec};

/// A firing this late is on time for either missed-firing policy.
pub(crate) const GRACE: Duration = Duration::from_secs(60);
/// The longest sleep between wake-ups (a changed clock is noticed within it).
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// A wake-up after the store failed.
const RETRY: Duration = Duration::from_secs(1);
/// Due schedules fired per wake-up at most (the next wake-up follows at once).
const BATCH: u32 = 256;
/// Test-only crash point (debug builds only): with this variable set to `1`, the process aborts
/// right after a firing's commit, before its dispatch (the restart must dispatch it, once).
pub const CRASH_AFTER_FIRING_VAR: &str = "ORB_TEST_CRASH_AFTER_FIRING";

/// The scheduler's state across wake-ups.
struct Scheduler {
    broker: Broker,
    /// After a start: firings that were due before it wait for the devices to come back.
    restart: Restart,
    /// One requester per schedule: its running jobs count against `limits.max_inflight_jobs`
    /// like an operator's (a firing beyond is refused `too_many_jobs`, kept as its last error).
    requesters: HashMap<String, Requester>,
}

/// After a start, firings that were due before it (missed, or left undispatched by a crash)
/// wait, so they reach the devices connected before the restart: until every device that was
/// connected when the previous server stopped is connected again, or `scheduler.restart_grace`
/// passed, whichever comes first. What falls due after the start fires on time.
struct Restart {
    started: DateTime<Utc>,
    /// The end of the grace.
    until: DateTime<Utc>,
    /// Devices connected at the previous stop and not seen back yet, sorted; checked from the
    /// end, one at a time, so each check costs only what came back since the last.
    awaited: Vec<String>,
    over: bool,
}

impl Restart {
    fn new(started: DateTime<Utc>, grace: Duration, awaited: Vec<String>) -> Restart {
        let grace = chrono::Duration::from_std(grace).unwrap_or(chrono::Duration::zero());
        let until = started.checked_add_signed(grace).unwrap_or(started);
        Restart { started, until, awaited, over: false }
    }

    /// Whether firings due before the start still wait at `now`: no more once the grace has
    /// passed or every awaited device is connected (`connected` says which are); it never
    /// starts again.
    fn waiting(&mut self, now: DateTime<Utc>, connected: impl Fn(&str) -> bool) -> bool {
        if self.over {
            return false;
        }
        while self.awaited.last().is_some_and(|id| connected(id)) {
            self.awaited.pop();
        }
        if self.awaited.is_empty() {
            tracing::debug!("the devices connected before the restart are back; firings due before it go ahead");
        } else if now >= self.until {
            tracing::info!(
                missing = self.awaited.len(),
                "scheduler.restart_grace is over; firings due before the restart go ahead without devices not back"
            );
        } else {
            return true;
        }
        self.over = true;
        self.awaited = Vec::new();
        false
    }
}

/// Runs the scheduler until `shutdown`; after the start, firings due before it wait up to
/// `restart_grace` for the devices that were connected ([`Restart`]).
pub(crate) async fn run(broker: Broker, restart_grace: Duration, shutdown: CancellationToken) {
    let awaited = broker.registry().take_connected_at_stop();
    let restart = Restart::new(Utc::now(), restart_grace, awaited);
    let mut scheduler = Scheduler { broker, restart, requesters: HashMap::new() };
    let sessions = Arc::clone(scheduler.broker.sessions());
    loop {
        let wait = scheduler.tick(Utc::now()).await;
        let sleep = tokio::time::sleep(wait);
        tokio::pin!(sleep);
        // While firings wait for devices to come back, each device that connects may end the
        // wait (then they fire at once); bounded by the sleep, which ends with the grace.
        loop {
            let registered = sessions.registered();
            tokio::pin!(registered);
            registered.as_mut().enable();
            let waiting = !scheduler.restart.over;
            if waiting && !scheduler.restart.waiting(Utc::now(), |id| sessions.is_connected(id)) {
                break;
            }
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = scheduler.broker.schedules_changed() => break,
                () = &mut sleep => break,
                () = &mut registered, if waiting => {}
            }
        }
    }
}

impl Scheduler {
    /// Dispatches what a crash left undispatched, fires every due schedule, and answers how
    /// long to sleep.
    async fn tick(&mut self, now: DateTime<Utc>) -> Duration {
        // A stopping server fires nothing (its job would be refused); the next start does,
        // following each schedule's missed-firing policy.
        if self.broker.is_draining() {
            return RETRY;
        }
        let sessions = Arc::clone(self.broker.sessions());
        let waiting = self.restart.waiting(now, |id| sessions.is_connected(id));
        let (started, until) = (self.restart.started, self.restart.until);
        if !waiting && let Err(e) = self.undispatched().await {
            tracing::warn!(error = %e, "cannot read firings awaiting dispatch");
            return RETRY;
        }
        let store = Arc::clone(self.broker.registry().store());
        let due = match store.due_schedules(now, BATCH).await {
            Ok(due) => due,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read due schedules");
                return RETRY;
            }
        };
        let full = due.len() == BATCH as usize;
        let mut stuck = false;
        for s in due {
            let Some(expected) = s.schedule.next_fire_at else { continue };
            if waiting && expected < started {
                continue;
            }
            if self.broker.is_draining() {
                return RETRY;
            }
            stuck |= !self.fire(&s, expected, now).await;
        }
        // A schedule that did not move on (the store failed, another node moved it) is read
        // again a little later, never in a tight loop.
        if stuck {
            return RETRY;
        }
        if full && !waiting {
            return Duration::ZERO;
        }
        let next = match store.next_firing().await {
            Ok(next) => next,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the next firing time");
                return RETRY;
            }
        };
        // While waiting for devices to reconnect, what was due before the start (and the
        // firings awaiting dispatch) waits until the grace ends (or the devices are back: the
        // run loop wakes then); what falls due after the start fires on time.
        let next = match (next, waiting) {
            (Some(t), true) if t < started => Some(until),
            (Some(t), true) => Some(t.min(until)),
            (None, true) => Some(until),
            (next, false) => next,
        };
        let wait = next.map_or(MAX_SLEEP, |t| (t - now).to_std().unwrap_or(Duration::ZERO));
        wait.min(MAX_SLEEP)
    }

    /// Dispatches this node's fired jobs still awaiting dispatch (a crash between a firing's
    /// commit and its dispatch, or a dispatch whose store write failed).
    async fn undispatched(&mut self) -> Result<(), orb_store::StoreError> {
        let store = Arc::clone(self.broker.registry().store());
        for fired in store.undispatched_firings(self.broker.node().as_str()).await? {
            tracing::info!(job = fired.job, schedule = fired.schedule, "dispatching a firing not dispatched yet");
            let template = Template::of_fired(&fired);
            self.dispatch(&fired.job, &template).await;
        }
        Ok(())
    }

    /// Fires (or skips) schedule `s`, due at `expected`; false when it did not move on.
    async fn fire(&mut self, s: &ScheduleRecord, expected: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        let store = Arc::clone(self.broker.registry().store());
        let id = &s.schedule.id;
        let Some(spec) = spec_of(s) else {
            // Unreadable (damaged, or written by a newer version): paused, so it neither fires
            // nor wakes the scheduler again; an operator can fix and resume it.
            let why = "its stored spec cannot be read; paused".to_owned();
            if let Err(e) = store.pause_schedule(id, Some(now), s.schedule.next_fire_at).await {
                tracing::warn!(schedule = id, error = %e, "cannot pause an unreadable schedule");
            }
            self.record_error(id, Some(why)).await;
            return true;
        };
        let policy = missed_of(s);
        let due = orb_schedule::due(&spec, policy, expected, now, GRACE);
        let wait = chrono::Duration::milliseconds(i64::try_from(s.schedule.wait_ms).unwrap_or(i64::MAX));
        let job = due.fire_now.then(|| NewJob {
            id: uuid::Uuid::now_v7().to_string(),
            node: self.broker.node().to_string(),
            requester: requester_name(id),
            selector: s.schedule.selector.clone(),
            command: s.schedule.command.clone(),
            args: s.schedule.args.clone(),
            created_at: now,
            deadline_at: now.checked_add_signed(wait).unwrap_or(DateTime::<Utc>::MAX_UTC),
            targets: Vec::new(),
            skipped: 0,
            schedule: Some(id.clone()),
            rollout: s.schedule.rollout.clone(),
        });
        let job_id = job.as_ref().map(|j| j.id.clone());
        let firing = Firing { schedule: id.clone(), expected, next: due.next, job, ttl_ms: s.schedule.ttl_ms, at: now };
        match store.advance_schedule(firing).await {
            Ok(true) => {}
            // Moved by another node or paused meanwhile: the next wake-up reads it again.
            Ok(false) => return false,
            Err(e) => {
                tracing::warn!(schedule = id, error = %e, "cannot store a schedule's firing");
                return false;
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
            if cfg!(debug_assertions) && std::env::var(CRASH_AFTER_FIRING_VAR).as_deref() == Ok("1") {
                tracing::error!(schedule = id, job, "{CRASH_AFTER_FIRING_VAR}: aborting after the firing's commit");
                std::process::abort();
            }
            self.dispatch(&job, &Template::of(s)).await;
        }
        true
    }

    /// Dispatches fired job `job`: marked dispatched (once), then submitted through the broker's
    /// one door. A refusal (nothing matches, too many of its jobs running, ...) ends the job and
    /// is kept as the schedule's last error. A stopping server leaves it for the next start.
    async fn dispatch(&mut self, job: &str, t: &Template) {
        if self.broker.is_draining() {
            return;
        }
        let store = Arc::clone(self.broker.registry().store());
        match store.dispatch_firing(job).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => {
                tracing::warn!(schedule = t.schedule, job, error = %e, "cannot mark a fired job dispatched; tried again");
                return;
            }
        }
        let spec = |rollout| JobSpec {
            command: t.command.clone(),
            target: t.selector.clone(),
            args: t.args.clone().map(Bytes::from),
            deadline: Some(Duration::from_millis(t.wait_ms)),
            select: Select::All,
            ttl: t.ttl_ms.map(Duration::from_millis),
            firing: Some(FiringRef { job: job.to_owned(), schedule: t.schedule.clone() }),
            rollout,
        };
        let submitted = self
            .requester(&t.schedule, t.credential.as_deref())
            .and_then(|who| Rollout::from_stored(t.rollout.as_deref()).and_then(|r| self.broker.submit(&who, spec(r))));
        let error = match submitted {
            // Nobody reads its events: the job runs to its end and its results are stored.
            Ok(_handle) => None,
            Err(e) => {
                tracing::info!(schedule = t.schedule, job, code = %e.code, "a schedule's firing did not start: {}", e.message);
                let end = JobEnd { job: job.to_owned(), at: Utc::now(), state: JobPhase::Done, pending_become: None };
                self.broker.registry().recorder().record(Record::JobEnded(end)).await;
                Some(format!("{}: {}", e.code, e.message))
            }
        };
        if error.is_some() || t.had_error {
            self.record_error(&t.schedule, error).await;
        }
    }

    /// The requester schedule `schedule`'s firings submit as (one per schedule, so its jobs
    /// count against one quota).
    ///
    /// # Errors
    /// `forbidden` for a stored credential that is not understood.
    fn requester(&mut self, schedule: &str, credential: Option<&str>) -> Result<Requester, ErrorBody> {
        if let Some(who) = self.requesters.get(schedule) {
            return Ok(who.clone());
        }
        let who = Requester::new(firing_identity(schedule, credential)?);
        self.requesters.insert(schedule.to_owned(), who.clone());
        Ok(who)
    }

    async fn record_error(&self, id: &str, error: Option<String>) {
        if let Err(e) = self.broker.registry().store().schedule_error(id, error).await {
            tracing::warn!(schedule = id, error = %e, "cannot record a schedule's last error");
        }
    }
}

/// What a firing's job runs: from its schedule, or (awaiting dispatch since a crash) from the
/// job's own row.
struct Template {
    schedule: String,
    selector: String,
    command: String,
    args: Option<String>,
    wait_ms: u64,
    ttl_ms: Option<u64>,
    rollout: Option<String>,
    /// Its creator's credential, as stored.
    credential: Option<String>,
    had_error: bool,
}

impl Template {
    fn of(s: &ScheduleRecord) -> Template {
        Template {
            schedule: s.schedule.id.clone(),
            selector: s.schedule.selector.clone(),
            command: s.schedule.command.clone(),
            args: s.schedule.args.clone(),
            wait_ms: s.schedule.wait_ms,
            ttl_ms: s.schedule.ttl_ms,
            rollout: s.schedule.rollout.clone(),
            credential: s.schedule.credential.clone(),
            had_error: s.last_error.is_some(),
        }
    }

    /// From the fired job's own row (its schedule may be gone: a one-shot schedule is deleted
    /// by its last firing).
    fn of_fired(f: &FiredJob) -> Template {
        Template {
            schedule: f.schedule.clone(),
            selector: f.selector.clone(),
            command: f.command.clone(),
            args: f.args.clone(),
            wait_ms: f.wait_ms,
            ttl_ms: f.ttl_ms,
            rollout: f.rollout.clone(),
            credential: f.credential.clone(),
            had_error: false,
        }
    }
}

/// The requester name a schedule's jobs show in the history.
fn requester_name(schedule: &str) -> String {
    format!("schedule:{schedule}")
}

/// Who schedule `schedule`'s firings submit as: its creator's credential (`credential`, as
/// stored), judged by the rules in force at each firing (a revoked token fires nothing), named
/// after the schedule; the admin for a schedule stored before credentials were kept.
///
/// # Errors
/// `forbidden` for a stored credential that is not understood.
fn firing_identity(schedule: &str, credential: Option<&str>) -> Result<Identity, ErrorBody> {
    let name = requester_name(schedule);
    match credential {
        None => Ok(Identity::admin(name)),
        Some(c) => Identity::from_credential(&name, c).ok_or_else(|| {
            ErrorBody::new(
                ErrorCode::Forbidden,
                format!("the schedule's stored credential '{}' is not understood", orb_proto::excerpt(c)),
            )
        }),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    //! The scheduler driven by an injected clock: each wake-up gets the time the test chooses
    //! (`tick(now)`), so hours of firings, a server stopped for hours and a clock set back are
    //! tested in an instant, against the real store, without waiting.

    use super::*;
    use orb_proto::schedule::MissedPolicy;
    use orb_schedule::Spec;
    use orb_store::{NewSchedule, ScheduleLimits};

    fn every_10m(id: &str, t0: DateTime<Utc>, missed: MissedPolicy) -> NewSchedule {
        let spec = Spec::Every { every_ms: 600_000, anchor: t0 };
        NewSchedule {
            id: id.to_owned(),
            spec: serde_json::to_string(&spec).unwrap(),
            missed: missed.as_str().to_owned(),
            selector: "nobody-*".to_owned(),
            command: "ping".to_owned(),
            args: None,
            wait_ms: 1_000,
            ttl_ms: None,
            rollout: None,
            on_agent: false,
            created_by: "test".to_owned(),
            credential: None,
            created_at: t0,
            next_fire_at: orb_schedule::next_after(&spec, t0),
        }
    }

    /// A scheduler started at `started`, whose firings due before then wait up to `grace` for
    /// the devices `awaited`.
    fn scheduler(broker: &Broker, started: DateTime<Utc>, grace: Duration, awaited: &[&str]) -> Scheduler {
        let awaited = awaited.iter().map(|&a| a.to_owned()).collect();
        Scheduler { broker: broker.clone(), restart: Restart::new(started, grace, awaited), requesters: HashMap::new() }
    }

    #[tokio::test]
    async fn firings_follow_the_injected_clock_through_hours_a_stopped_server_and_a_clock_set_back() {
        let dir = tempfile::tempdir().unwrap();
        let server =
            crate::ServerBuilder::new(crate::ServerConfig::for_tests(dir.path().to_path_buf())).start().await.unwrap();
        let broker = server.broker().clone();
        let store = Arc::clone(broker.registry().store());
        // Years ahead of the wall clock, so the server's own scheduler never finds them due.
        let t0: DateTime<Utc> = "2031-01-01T00:00:00Z".parse().unwrap();
        let limits = ScheduleLimits { max_schedules: 10, max_bytes: 1 << 16 };
        store.create_schedule(every_10m("sch-skip", t0, MissedPolicy::Skip), limits).await.unwrap();
        store.create_schedule(every_10m("sch-once", t0, MissedPolicy::RunOnce), limits).await.unwrap();
        let fired = |id: &'static str| {
            let store = Arc::clone(&store);
            async move { store.schedule(id).await.unwrap() }
        };

        // Six hours, each wake-up when the scheduler asked for it: 36 firings each, none twice.
        let mut s = scheduler(&broker, t0, Duration::ZERO, &[]);
        let end = t0 + chrono::Duration::hours(6);
        let mut now = t0;
        let mut wakes = 0;
        while now <= end {
            let wait = s.tick(now).await;
            assert!(wait > Duration::ZERO && wait <= MAX_SLEEP, "{wait:?} at {now}");
            now += chrono::Duration::from_std(wait).unwrap();
            wakes += 1;
            assert!(wakes < 1000, "bounded");
        }
        assert_eq!(wakes, 361, "a wake-up a minute: the longest sleep");
        for id in ["sch-skip", "sch-once"] {
            let r = fired(id).await;
            assert_eq!(r.fired, 36, "{id}");
            assert_eq!(r.last_fired_at, Some(end));
            assert_eq!(r.schedule.next_fire_at, Some(end + chrono::Duration::minutes(10)));
        }
        assert_eq!(store.schedule_jobs("sch-once", 100).await.unwrap().len(), 36, "a job per firing");
        // Nothing matches: each firing's job was refused, and the schedule says why.
        assert!(fired("sch-once").await.last_error.unwrap().starts_with("no_match"));

        // Stopped for three hours, started 3 minutes past a firing time (beyond the grace): what
        // was due waits for the device connected before the stop (not back: the whole restart
        // grace), then `skip` drops it and `run-once` fires once.
        let start = end + chrono::Duration::minutes(183);
        let mut s = scheduler(&broker, start, Duration::from_secs(45), &["was-connected"]);
        assert_eq!(s.tick(start).await, Duration::from_secs(45), "waits for devices to reconnect");
        assert_eq!(s.tick(start + chrono::Duration::seconds(30)).await, Duration::from_secs(15));
        assert_eq!(fired("sch-once").await.fired, 36, "nothing fired while waiting");
        s.tick(start + chrono::Duration::seconds(45)).await;
        let (skip, once) = (fired("sch-skip").await, fired("sch-once").await);
        assert_eq!((skip.fired, once.fired), (36, 37));
        let next = end + chrono::Duration::minutes(190);
        assert_eq!((skip.schedule.next_fire_at, once.schedule.next_fire_at), (Some(next), Some(next)));

        // The clock set back an hour: nothing is due again, nothing fires twice.
        s.tick(start - chrono::Duration::hours(1)).await;
        assert_eq!((fired("sch-skip").await.fired, fired("sch-once").await.fired), (36, 37));
        server.drain(Duration::from_millis(100)).await;
    }

    #[tokio::test]
    async fn after_a_start_nothing_waits_when_no_device_was_connected() {
        let dir = tempfile::tempdir().unwrap();
        let server =
            crate::ServerBuilder::new(crate::ServerConfig::for_tests(dir.path().to_path_buf())).start().await.unwrap();
        let broker = server.broker().clone();
        let store = Arc::clone(broker.registry().store());
        let t0: DateTime<Utc> = "2032-01-01T00:00:00Z".parse().unwrap();
        let limits = ScheduleLimits { max_schedules: 10, max_bytes: 1 << 16 };
        store.create_schedule(every_10m("sch-late", t0, MissedPolicy::RunOnce), limits).await.unwrap();
        // Started an hour after its first firing: with nobody to wait for, run-once fires at once.
        let start = t0 + chrono::Duration::hours(1);
        let mut s = scheduler(&broker, start, Duration::from_secs(45), &[]);
        s.tick(start).await;
        let r = store.schedule("sch-late").await.unwrap();
        assert_eq!((r.fired, r.last_fired_at), (1, Some(start)), "fired without waiting");
        server.drain(Duration::from_millis(100)).await;
    }

    #[test]
    fn the_restart_wait_ends_when_every_awaited_device_is_back_or_the_grace_is_over() {
        let t0: DateTime<Utc> = "2030-01-01T00:00:00Z".parse().unwrap();
        let at = |s: i64| t0 + chrono::Duration::seconds(s);
        let grace = Duration::from_secs(45);
        let back = std::cell::RefCell::new(std::collections::HashSet::new());
        let connected = |id: &str| back.borrow().contains(id);

        let mut r = Restart::new(t0, grace, vec!["a".into(), "b".into(), "c".into()]);
        assert!(r.waiting(at(0), connected));
        back.borrow_mut().extend(["c", "a"]);
        assert!(r.waiting(at(5), connected), "b is not back");
        back.borrow_mut().insert("b");
        assert!(!r.waiting(at(6), connected), "all back: the wait is over before the grace");
        back.borrow_mut().clear();
        assert!(!r.waiting(at(7), connected), "and stays over");

        let mut r = Restart::new(t0, grace, vec!["gone".into()]);
        assert!(r.waiting(at(44), connected));
        assert!(!r.waiting(at(45), connected), "the grace is over");

        let mut r = Restart::new(t0, grace, Vec::new());
        assert!(!r.waiting(at(0), connected), "nobody to wait for");
    }

    /// A one-shot paused past its time and resumed: `run-once` fires it (once, then it is gone),
    /// `skip` ends it at once (removed; the answer says why). Time is injected: years ahead.
    #[tokio::test]
    async fn a_one_shot_resumed_after_its_time_fires_under_run_once_and_ends_under_skip() {
        let dir = tempfile::tempdir().unwrap();
        let server =
            crate::ServerBuilder::new(crate::ServerConfig::for_tests(dir.path().to_path_buf())).start().await.unwrap();
        let broker = server.broker().clone();
        let store = Arc::clone(broker.registry().store());
        let at: DateTime<Utc> = "2033-01-01T00:00:00Z".parse().unwrap();
        let limits = ScheduleLimits { max_schedules: 10, max_bytes: 1 << 16 };
        for (id, missed) in [("at-once", MissedPolicy::RunOnce), ("at-skip", MissedPolicy::Skip)] {
            let spec = serde_json::to_string(&Spec::At { at }).unwrap();
            let new = NewSchedule { spec, next_fire_at: Some(at), ..every_10m(id, at, missed) };
            store.create_schedule(new, limits).await.unwrap();
            assert!(store.pause_schedule(id, Some(at - chrono::Duration::minutes(5)), Some(at)).await.unwrap());
        }
        let now = at + chrono::Duration::hours(2);

        let r = broker.resume_paused(&store.schedule("at-skip").await.unwrap(), now).await.unwrap();
        assert_eq!((r.paused_at, r.schedule.next_fire_at), (None, None));
        assert!(r.last_error.unwrap().starts_with("it will not fire: its time"));
        assert!(matches!(store.schedule("at-skip").await, Err(orb_store::StoreError::NotFound(_))), "removed");

        let r = broker.resume_paused(&store.schedule("at-once").await.unwrap(), now).await.unwrap();
        assert_eq!((r.paused_at, r.schedule.next_fire_at, r.last_error), (None, Some(at), None), "due: fires now");
        let mut s = scheduler(&broker, now, Duration::ZERO, &[]);
        s.tick(now).await;
        assert!(matches!(store.schedule("at-once").await, Err(orb_store::StoreError::NotFound(_))), "fired for good");
        assert_eq!(store.schedule_jobs("at-once", 10).await.unwrap().len(), 1, "once");
        assert!(store.schedule_jobs("at-skip", 10).await.unwrap().is_empty());
        server.drain(Duration::from_millis(100)).await;
    }
}

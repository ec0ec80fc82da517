//! The schedule services (`$orb.schedules.*`, decision 0014): create a stored schedule (checked
//! as the job it fires would be, then committed), list, show, pause, resume and remove. The
//! scheduler (`crate::scheduler`) is woken after every change; it fires schedules through the
//! broker's one door.

use chrono::{DateTime, Utc};
use orb_proto::schedule::{MissedPolicy, ScheduleCreate, ScheduleInfo, ScheduleRef, Spec};
use orb_proto::{ErrorBody, ErrorCode};
use orb_store::{NewSchedule, ScheduleCreated, ScheduleLimits, ScheduleRecord, StoreError};

use super::{raw_json, rfc3339};
use crate::broker::{Action, Audited, Broker, check_args, check_command_name};
use crate::identity::Requester;
use crate::registry::store_error;

impl Broker {
    /// `$orb.schedules.create`: checks the schedule as the job it fires would be checked (policy,
    /// command name, arguments, selector syntax) and when it fires, then stores it (committed)
    /// and wakes the scheduler. Targets are resolved at each firing.
    ///
    /// # Errors
    /// `forbidden`, `bad_body`, `bad_selector`, `unknown_group`, `bad_schedule`, `bad_rollout`,
    /// `too_many_schedules`, `store_unavailable`.
    pub async fn schedule_create(&self, who: &Requester, c: ScheduleCreate) -> Result<ScheduleInfo, ErrorBody> {
        let (target, command) = (c.target.clone(), c.command.clone());
        let result: Result<ScheduleInfo, ErrorBody> = async {
            self.policy().check(&who.identity, &Action::Schedule { command: &c.command, target: &c.target })?;
            check_command_name(&c.command)?;
            crate::broker::check_not_reserved(&c.command)?;
            let args = c.args.as_ref().map(|a| bytes::Bytes::copy_from_slice(a.get().as_bytes()));
            check_args(args.as_ref())?;
            self.parse_selector(&c.target)?;
            c.rollout.check()?;
            let bad_schedule = |message: &str| ErrorBody::new(ErrorCode::BadSchedule, message);
            if c.on_agent && !c.rollout.normalized().is_default() {
                return Err(bad_schedule("a schedule run on agents has no rollout: each device runs it on its own"));
            }
            if c.on_agent && matches!(c.spec, Spec::At { .. }) {
                return Err(bad_schedule(
                    "a schedule run on agents repeats (every or cron): each device runs it from when it gets it",
                ));
            }
            if c.on_agent && c.ttl_ms.is_some() {
                return Err(bad_schedule("a schedule run on agents has no TTL: each device runs it, connected or not"));
            }
            let bad = |message: String| ErrorBody::new(ErrorCode::BadSchedule, message);
            c.spec.validate().map_err(|e| bad(format!("{}: {e}", e.code())))?;
            let now = Utc::now();
            let Some(first) = orb_schedule::next_after(&c.spec, now) else {
                return Err(bad("the schedule never fires after now (its time is in the past)".to_owned()));
            };
            let limits = self.limits();
            let wait = c.deadline_ms.map_or(limits.default_job_deadline, std::time::Duration::from_millis);
            let new = NewSchedule {
                id: uuid::Uuid::now_v7().to_string(),
                spec: serde_json::to_string(&c.spec).map_err(|e| bad(e.to_string()))?,
                missed: c.missed.as_str().to_owned(),
                selector: c.target,
                command: c.command,
                args: c.args.map(|a| a.get().to_owned()),
                wait_ms: u64::try_from(wait.min(limits.max_deadline).as_millis()).unwrap_or(u64::MAX),
                ttl_ms: c.ttl_ms.map(|t| t.min(u64::try_from(limits.max_ttl.as_millis()).unwrap_or(u64::MAX))),
                rollout: c.rollout.normalized().stored(),
                on_agent: c.on_agent,
                created_by: who.identity.name.clone(),
                credential: Some(who.identity.credential()),
                created_at: now,
                // The server never fires an agent-local schedule: each device keeps its own time.
                next_fire_at: (!c.on_agent).then_some(first),
            };
            let bounds = ScheduleLimits {
                max_schedules: limits.max_schedules as u64,
                max_bytes: limits.max_schedule_bytes as u64,
            };
            let store = self.registry().store();
            match store.create_schedule(new.clone(), bounds).await.map_err(store_error)? {
                ScheduleCreated::Created => {}
                ScheduleCreated::Full(why) => return Err(ErrorBody::new(ErrorCode::TooManySchedules, why)),
            }
            self.schedule_changed(new.on_agent);
            let record =
                ScheduleRecord { schedule: new, paused_at: None, last_fired_at: None, fired: 0, last_error: None };
            Ok(schedule_info(&record))
        }
        .await;
        self.audit(
            who,
            Audited::ScheduleCreate,
            &target,
            serde_json::json!({ "command": command, "schedule": result.as_ref().ok().map(|s| s.id.as_str()) }),
            &result,
        );
        result
    }

    /// `$orb.schedules.list`: every stored schedule, by id, without its arguments (up to
    /// `limits.max_schedule_bytes` each; `show` has them), so the answer stays small.
    ///
    /// # Errors
    /// `forbidden`, `store_unavailable`.
    pub async fn schedules_list(&self, who: &Requester) -> Result<Vec<ScheduleInfo>, ErrorBody> {
        self.policy().check(&who.identity, &Action::Query { name: "$orb.schedules.list" })?;
        let all = self.registry().store().schedules().await.map_err(store_error)?;
        Ok(all.iter().map(schedule_info).collect())
    }

    /// `$orb.schedules.show`: one schedule, by id or unique prefix.
    ///
    /// # Errors
    /// `forbidden`, `schedule_not_found`, `ambiguous_id`, `store_unavailable`.
    pub async fn schedule_show(&self, who: &Requester, r: &ScheduleRef) -> Result<ScheduleInfo, ErrorBody> {
        self.policy().check(&who.identity, &Action::Query { name: "$orb.schedules.show" })?;
        Ok(schedule_info(&self.find_schedule(r).await?))
    }

    /// `$orb.schedules.pause`: the schedule stops firing until resumed (a firing already
    /// started goes on); a paused one is answered as it is.
    ///
    /// # Errors
    /// `forbidden`, `schedule_not_found`, `ambiguous_id`, `store_unavailable`.
    pub async fn schedule_pause(&self, who: &Requester, r: &ScheduleRef) -> Result<ScheduleInfo, ErrorBody> {
        let result: Result<ScheduleInfo, ErrorBody> = async {
            self.policy().check(&who.identity, &Action::Query { name: "$orb.schedules.pause" })?;
            let s = self.find_schedule(r).await?;
            if s.paused_at.is_none() {
                self.set_paused(&s, Some(Utc::now()), s.schedule.next_fire_at).await?;
            }
            Ok(schedule_info(&self.find_schedule(r).await?))
        }
        .await;
        self.audit(
            who,
            Audited::SchedulePause,
            result.as_ref().map_or(r.id.as_str(), |s| s.id.as_str()),
            serde_json::Value::Null,
            &result,
        );
        result
    }

    /// `$orb.schedules.resume`: a paused schedule fires again, from its first firing time after
    /// now (what it missed while paused is not made up); an active one is answered as it is. A
    /// one-shot (`at`) whose time passed while it was paused follows its missed-firing policy:
    /// `run-once` (or a time no more than a minute past) fires it now; `skip` ends it: it is
    /// removed, and the answer's `last_error` says it will not fire and why.
    ///
    /// # Errors
    /// `forbidden`, `schedule_not_found`, `ambiguous_id`, `store_unavailable`.
    pub async fn schedule_resume(&self, who: &Requester, r: &ScheduleRef) -> Result<ScheduleInfo, ErrorBody> {
        let mut detail = serde_json::Value::Null;
        let result: Result<ScheduleInfo, ErrorBody> = async {
            self.policy().check(&who.identity, &Action::Query { name: "$orb.schedules.resume" })?;
            let s = self.find_schedule(r).await?;
            if s.paused_at.is_none() {
                return Ok(schedule_info(&s));
            }
            let resumed = self.resume_paused(&s, Utc::now()).await?;
            if let Some(why) = resumed.last_error.as_ref().filter(|_| resumed.schedule.next_fire_at.is_none()) {
                detail = serde_json::json!({ "ended": why });
            }
            Ok(schedule_info(&resumed))
        }
        .await;
        self.audit(
            who,
            Audited::ScheduleResume,
            result.as_ref().map_or(r.id.as_str(), |s| s.id.as_str()),
            detail,
            &result,
        );
        result
    }

    /// Resumes paused schedule `s` at `now` ([`on_resume`] says how) and answers it as it is
    /// then: as stored, or as resumed when it is gone already (a one-shot that fired at once,
    /// or one ended).
    pub(crate) async fn resume_paused(
        &self,
        s: &ScheduleRecord,
        now: DateTime<Utc>,
    ) -> Result<ScheduleRecord, ErrorBody> {
        let mut resumed = s.clone();
        resumed.paused_at = None;
        match on_resume(s, now) {
            Resume::Next(next) => {
                self.set_paused(s, None, next).await?;
                resumed.schedule.next_fire_at = next;
            }
            Resume::Ended(why) => {
                tracing::info!(schedule = s.schedule.id, "{why}");
                if !self.registry().store().remove_schedule(&s.schedule.id).await.map_err(store_error)? {
                    return Err(not_found(&s.schedule.id));
                }
                self.schedule_changed(s.schedule.on_agent);
                resumed.schedule.next_fire_at = None;
                resumed.last_error = Some(why);
                return Ok(resumed);
            }
        }
        match self.find_schedule(&ScheduleRef { id: s.schedule.id.clone() }).await {
            Ok(now) => Ok(now),
            Err(e) if e.code == ErrorCode::ScheduleNotFound => Ok(resumed),
            Err(e) => Err(e),
        }
    }

    /// `$orb.schedules.remove`: the schedule is forgotten (the jobs it fired stay in the
    /// history); answers it as it was.
    ///
    /// # Errors
    /// `forbidden`, `schedule_not_found`, `ambiguous_id`, `store_unavailable`.
    pub async fn schedule_remove(&self, who: &Requester, r: &ScheduleRef) -> Result<ScheduleInfo, ErrorBody> {
        let result: Result<ScheduleInfo, ErrorBody> = async {
            self.policy().check(&who.identity, &Action::Query { name: "$orb.schedules.remove" })?;
            let s = self.find_schedule(r).await?;
            if !self.registry().store().remove_schedule(&s.schedule.id).await.map_err(store_error)? {
                return Err(not_found(&r.id));
            }
            self.schedule_changed(s.schedule.on_agent);
            Ok(schedule_info(&s))
        }
        .await;
        self.audit(
            who,
            Audited::ScheduleRemove,
            result.as_ref().map_or(r.id.as_str(), |s| s.id.as_str()),
            serde_json::Value::Null,
            &result,
        );
        result
    }

    async fn find_schedule(&self, r: &ScheduleRef) -> Result<ScheduleRecord, ErrorBody> {
        self.registry().store().schedule(&r.id).await.map_err(|e| match e {
            StoreError::NotFound(_) => not_found(&r.id),
            StoreError::Ambiguous { prefix, count, candidates } => ErrorBody::new(
                ErrorCode::AmbiguousId,
                format!("{count} schedules start with {prefix}: {}", candidates.join(", ")),
            ),
            other => store_error(other),
        })
    }

    async fn set_paused(
        &self,
        s: &ScheduleRecord,
        paused_at: Option<DateTime<Utc>>,
        next: Option<DateTime<Utc>>,
    ) -> Result<(), ErrorBody> {
        // Unchanged when someone else paused (resumed) it meanwhile: the answer reads it again.
        if self.registry().store().pause_schedule(&s.schedule.id, paused_at, next).await.map_err(store_error)? {
            self.schedule_changed(s.schedule.on_agent);
        }
        Ok(())
    }

    /// A schedule was created, paused, resumed or removed: the scheduler wakes, or for an
    /// agent-local one, every connected device gets its set again.
    fn schedule_changed(&self, on_agent: bool) {
        if on_agent {
            self.sync_agent_schedules(None);
        } else {
            self.0.schedules_changed.notify_one();
        }
    }
}

/// What resuming a paused schedule does.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Resume {
    /// It goes on, next firing at this time (`None` for an agent-local schedule, whose devices
    /// keep their own time, and for one whose spec cannot be read).
    Next(Option<DateTime<Utc>>),
    /// A one-shot whose time passed while it was paused, missed under `skip`: it will never
    /// fire, and is removed. Why, in words.
    Ended(String),
}

/// What resuming paused schedule `s` at `now` does: a repeating schedule goes on from its first
/// firing after now; a one-shot whose time passed while it was paused is treated as a missed
/// firing ([`orb_schedule::due`] with the scheduler's grace): fired now (its next firing time
/// stays its own, so the scheduler finds it due and fires it, once) under `run-once` or when no
/// more than the grace late, else ended.
pub(crate) fn on_resume(s: &ScheduleRecord, now: DateTime<Utc>) -> Resume {
    let Some(spec) = spec_of(s) else { return Resume::Next(None) };
    if s.schedule.on_agent {
        return Resume::Next(None);
    }
    if let Some(next) = orb_schedule::next_after(&spec, now) {
        return Resume::Next(Some(next));
    }
    let Spec::At { at } = spec else { return Resume::Next(None) };
    let policy = missed_of(s);
    if orb_schedule::due(&spec, policy, at, now, crate::scheduler::GRACE).fire_now {
        return Resume::Next(Some(at));
    }
    Resume::Ended(format!(
        "it will not fire: its time, {}, passed while it was paused, and its missed policy is {policy}; it was removed",
        rfc3339(at)
    ))
}

fn not_found(id: &str) -> ErrorBody {
    ErrorBody::new(ErrorCode::ScheduleNotFound, format!("no schedule {}", orb_proto::excerpt(id)))
}

/// A stored schedule's spec, `None` (logged) when it cannot be read.
pub(crate) fn spec_of(s: &ScheduleRecord) -> Option<Spec> {
    match serde_json::from_str::<Spec>(&s.schedule.spec).map_err(|e| e.to_string()).and_then(|spec| {
        spec.validate().map_err(|e| e.to_string())?;
        Ok(spec)
    }) {
        Ok(spec) => Some(spec),
        Err(e) => {
            tracing::warn!(schedule = s.schedule.id, error = %e, "a stored schedule's spec cannot be read; it does not fire");
            None
        }
    }
}

/// A stored schedule's missed-firing policy (`skip` when it cannot be read).
pub(crate) fn missed_of(s: &ScheduleRecord) -> MissedPolicy {
    s.schedule.missed.parse().unwrap_or_default()
}

fn schedule_info(s: &ScheduleRecord) -> ScheduleInfo {
    let n = &s.schedule;
    ScheduleInfo {
        id: n.id.clone(),
        target: n.selector.clone(),
        command: n.command.clone(),
        args: n.args.as_deref().and_then(raw_json),
        deadline_ms: n.wait_ms,
        ttl_ms: n.ttl_ms,
        rollout: n.rollout.as_deref().and_then(|r| orb_proto::rollout::Rollout::from_stored(Some(r)).ok()),
        spec: serde_json::from_str(&n.spec).ok(),
        missed: n.missed.clone(),
        on_agent: n.on_agent,
        created_by: n.created_by.clone(),
        created_at: rfc3339(n.created_at),
        paused_at: s.paused_at.map(rfc3339),
        next_fire_at: if s.paused_at.is_some() { None } else { n.next_fire_at.map(rfc3339) },
        last_fired_at: s.last_fired_at.map(rfc3339),
        fired: s.fired,
        last_error: s.last_error.clone(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use orb_store::NewSchedule;

    fn paused(spec: &Spec, missed: MissedPolicy, next: Option<DateTime<Utc>>) -> ScheduleRecord {
        let t0: DateTime<Utc> = "2030-01-01T00:00:00Z".parse().unwrap();
        let schedule = NewSchedule {
            id: "sch".to_owned(),
            spec: serde_json::to_string(spec).unwrap(),
            missed: missed.as_str().to_owned(),
            selector: "*".to_owned(),
            command: "ping".to_owned(),
            args: None,
            wait_ms: 1_000,
            ttl_ms: None,
            rollout: None,
            on_agent: false,
            created_by: "test".to_owned(),
            credential: None,
            created_at: t0,
            next_fire_at: next,
        };
        ScheduleRecord { schedule, paused_at: Some(t0), last_fired_at: None, fired: 0, last_error: None }
    }

    #[test]
    fn a_one_shot_resumed_after_its_time_follows_its_missed_policy() {
        let at: DateTime<Utc> = "2030-06-01T12:00:00Z".parse().unwrap();
        let once = Spec::At { at };
        let minutes = |m: i64| at + chrono::Duration::minutes(m);
        let resume = |missed, now| on_resume(&paused(&once, missed, Some(at)), now);
        assert_eq!(resume(MissedPolicy::Skip, minutes(-5)), Resume::Next(Some(at)), "still ahead");
        // Its time passed: within the grace it is on time under either policy; beyond, run-once
        // fires it now (its own time stays its next: the scheduler finds it due) and skip ends it.
        let half = at + chrono::Duration::seconds(30);
        assert_eq!(resume(MissedPolicy::Skip, half), Resume::Next(Some(at)));
        assert_eq!(resume(MissedPolicy::RunOnce, minutes(120)), Resume::Next(Some(at)));
        match resume(MissedPolicy::Skip, minutes(120)) {
            Resume::Ended(why) => assert_eq!(
                why,
                "it will not fire: its time, 2030-06-01T12:00:00Z, passed while it was paused, and its missed \
                 policy is skip; it was removed"
            ),
            other => panic!("{other:?}"),
        }

        // A repeating schedule goes on from its first firing after now; what it missed is not made up.
        let every = Spec::Every { every_ms: 3_600_000, anchor: at };
        let r = on_resume(&paused(&every, MissedPolicy::RunOnce, Some(minutes(60))), minutes(150));
        assert_eq!(r, Resume::Next(Some(minutes(180))));
        // One run on the devices never has a next firing on the server.
        let mut local = paused(&every, MissedPolicy::Skip, None);
        local.schedule.on_agent = true;
        assert_eq!(on_resume(&local, minutes(150)), Resume::Next(None));
    }
}

//! The job history's services: recent jobs, one job's per-target results (the objects
//! `orb send --json` prints, with late answers beside the outcome the requester was told) and
//! cancel. Reads flush the store's batched records first, so a job that just ended is listed
//! with all its results. One stored value that cannot be read degrades that value, never the
//! whole answer.

use std::collections::BTreeMap;

use chrono::Utc;
use orb_proto::history::{JobCancelled, JobDetail, JobInfo, JobPhase, JobRef, JobsQuery};
use orb_proto::message::{LateAnswer, TargetResult};
use orb_proto::{ErrorBody, ErrorCode, Status};
use orb_store::{AMBIGUOUS_CANDIDATES, JobRecord, StoreError, TargetRecord};

use super::{raw_json, rfc3339};
use crate::broker::{Action, Audited, Broker};
use crate::identity::Requester;
use crate::registry::store_error;

/// Jobs listed when the query gives no limit.
const DEFAULT_LIMIT: u32 = 50;
/// The most jobs one list returns.
pub(crate) const MAX_LIMIT: u32 = 1000;

impl Broker {
    /// `$orb.jobs.list`: the most recent jobs (of one schedule, when asked: its id or a unique
    /// prefix, among the stored schedules and those the stored jobs were fired by), newest first.
    ///
    /// # Errors
    /// `forbidden`, `schedule_not_found` (no schedule, stored or named by a job, has that id or
    /// prefix), `ambiguous_id`, `store_unavailable`.
    pub async fn jobs_list(&self, who: &Requester, q: &JobsQuery) -> Result<Vec<JobInfo>, ErrorBody> {
        self.policy().check(&who.identity, &Action::Query { name: "$orb.jobs.list" })?;
        let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
        let store = self.registry().store();
        store.flush().await.map_err(store_error)?;
        let jobs = match &q.schedule {
            Some(given) => {
                let schedule = self.schedule_of_jobs(given).await?;
                store.schedule_jobs(&schedule, limit).await
            }
            None => store.jobs(limit).await,
        }
        .map_err(store_error)?;
        Ok(jobs.iter().map(job_info).collect())
    }

    /// The schedule `given` names for the job list: a stored schedule's id, else the one
    /// schedule, stored or gone (removed, or a one-shot that fired), whose id starts with it.
    async fn schedule_of_jobs(&self, given: &str) -> Result<String, ErrorBody> {
        let store = self.registry().store();
        let stored = match store.schedule(given).await {
            Ok(s) if s.schedule.id == given => return Ok(s.schedule.id),
            Ok(s) => Some(s.schedule.id),
            Err(StoreError::NotFound(_)) => None,
            Err(StoreError::Ambiguous { candidates, .. }) => return Err(ambiguous_schedule(given, candidates, false)),
            Err(e) => return Err(store_error(e)),
        };
        let most = AMBIGUOUS_CANDIDATES as u32;
        let mut ids = store.job_schedules(given, most + 1).await.map_err(store_error)?;
        let more = ids.len() > AMBIGUOUS_CANDIDATES;
        ids.truncate(AMBIGUOUS_CANDIDATES);
        ids.extend(stored);
        ids.sort_unstable();
        ids.dedup();
        match (ids.pop(), ids.is_empty()) {
            (Some(id), true) => Ok(id),
            (Some(id), false) => {
                ids.push(id);
                Err(ambiguous_schedule(given, ids, more))
            }
            (None, _) => Err(ErrorBody::new(
                ErrorCode::ScheduleNotFound,
                format!("no schedule {}, stored or named by a job", orb_proto::excerpt(given)),
            )),
        }
    }

    /// `$orb.jobs.show`: one job (id or unique prefix) with every target's result.
    ///
    /// # Errors
    /// `forbidden`, `job_not_found`, `ambiguous_id`, `store_unavailable`.
    pub async fn job_show(&self, who: &Requester, r: &JobRef) -> Result<JobDetail, ErrorBody> {
        self.policy().check(&who.identity, &Action::Query { name: "$orb.jobs.show" })?;
        let store = self.registry().store();
        store.flush().await.map_err(store_error)?;
        let (job, targets) = store.job(&r.id).await.map_err(job_error(&r.id))?;
        let mut results = Vec::new();
        let mut pending = Vec::new();
        for t in targets {
            match target_result(t) {
                Ok(r) => results.push(r),
                Err(device) => pending.push(device),
            }
        }
        Ok(JobDetail { job: job_info(&job), results, pending })
    }

    /// `$orb.jobs.cancel`: pending targets become `cancelled`; agents running the command are
    /// told to stop. A job this server runs is cancelled by its task; one no process runs (left
    /// by a previous one) is cancelled in the store.
    ///
    /// # Errors
    /// `forbidden`, `job_not_found`, `ambiguous_id`, `job_finished`, `store_unavailable`.
    pub async fn job_cancel(&self, who: &Requester, r: &JobRef) -> Result<JobCancelled, ErrorBody> {
        let result: Result<JobCancelled, ErrorBody> = async {
            self.policy().check(&who.identity, &Action::Query { name: "$orb.jobs.cancel" })?;
            let store = self.registry().store();
            store.flush().await.map_err(store_error)?;
            let (job, _) = store.job(&r.id).await.map_err(job_error(&r.id))?;
            let finished =
                |state: &str| ErrorBody::new(ErrorCode::JobFinished, format!("job {} is already {state}", job.id));
            if job.state != JobPhase::Running {
                return Err(finished(job.state.as_str()));
            }
            let cancelled = match self.jobs().cancel(&job.id) {
                Some(answer) => answer.await.map_err(|_| finished("finished"))?,
                None if job.node.as_deref().is_some_and(|n| n != self.node().as_str()) => {
                    let node = job.node.as_deref().unwrap_or_default();
                    return Err(ErrorBody::new(
                        ErrorCode::WrongNode,
                        format!("job {} runs on node {node}; cancel it there", job.id),
                    ));
                }
                None => store.cancel_job(&job.id, Utc::now()).await.map_err(job_error(&job.id))?,
            };
            Ok(JobCancelled { job: job.id, cancelled })
        }
        .await;
        self.audit(
            who,
            Audited::JobCancel,
            result.as_ref().map_or(r.id.as_str(), |c| c.job.as_str()),
            serde_json::json!({ "cancelled": result.as_ref().map_or(0, |c| c.cancelled.len()) }),
            &result,
        );
        result
    }
}

fn job_error(id: &str) -> impl FnOnce(StoreError) -> ErrorBody + '_ {
    move |e| match e {
        StoreError::NotFound(_) => {
            ErrorBody::new(ErrorCode::JobNotFound, format!("no job matches '{}'", orb_proto::excerpt(id)))
        }
        e => store_error(e),
    }
}

fn job_info(j: &JobRecord) -> JobInfo {
    let mut summary: BTreeMap<Status, u64> = Status::ALL.iter().map(|s| (*s, 0)).collect();
    summary.extend(j.summary.iter().map(|(s, n)| (*s, *n)));
    JobInfo {
        id: j.id.clone(),
        requester: j.requester.clone(),
        selector: j.selector.clone(),
        command: j.command.clone(),
        args: j.args.as_deref().and_then(raw_json),
        created_at: rfc3339(j.created_at),
        deadline_at: rfc3339(j.deadline_at),
        finished_at: j.finished_at.map(rfc3339),
        state: j.state,
        targets: j.targets,
        skipped: j.skipped,
        rollout: j.rollout.as_deref().and_then(|r| orb_proto::rollout::Rollout::from_stored(Some(r)).ok()),
        summary,
    }
}

/// A stored target as `orb send --json` prints it; `Err(device)` while it is pending.
fn target_result(t: TargetRecord) -> Result<TargetResult, String> {
    let Some(status) = t.status else { return Err(t.device) };
    Ok(TargetResult {
        device: t.device,
        status,
        result: if status == Status::Ok { t.result.as_deref().and_then(raw_json) } else { None },
        error: t.error,
        elapsed_ms: t.elapsed_ms,
        late: t.late.map(|l| LateAnswer {
            status: l.status,
            result: l.result.as_deref().and_then(raw_json),
            error: l.error,
            at: rfc3339(l.at),
        }),
    })
}

/// `ambiguous_id` for a schedule prefix matching `candidates` (and `more` beyond them).
fn ambiguous_schedule(prefix: &str, candidates: Vec<String>, more: bool) -> ErrorBody {
    let more = if more { ", ..." } else { "" };
    ErrorBody::new(
        ErrorCode::AmbiguousId,
        format!(
            "schedule id prefix '{}' matches several schedules: {}{more}; give more characters",
            orb_proto::excerpt(prefix),
            candidates.join(", ")
        ),
    )
}

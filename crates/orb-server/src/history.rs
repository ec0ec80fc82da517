//! The `$orb.jobs.*` operator commands: recent jobs, one job's per-target results (the objects
//! `orb send --json` prints) and cancel. Reads flush the store's batched recorder first, so a job
//! that just ended is listed with all its results.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::Utc;
use orb_proto::history::{JobCancelled, JobDetail, JobInfo, JobPhase, JobRef, JobsQuery};
use orb_proto::message::TargetResult;
use orb_proto::{ErrorBody, ErrorCode, Status};
use orb_store::{JobRecord, StoreError, TargetRecord};
use serde_json::value::RawValue;

use crate::builtin::to_value;
use crate::registry::store_error;
use crate::router::{Router, rfc3339};
use orb_io::handler::{Context as Request, HandlerResult};

/// Jobs listed when the query gives no limit.
const DEFAULT_LIMIT: u32 = 50;
/// The most jobs one list returns.
const MAX_LIMIT: u32 = 1000;

/// `$orb.jobs.list`: the most recent jobs, newest first.
pub async fn list(router: &Router, req: &Request) -> HandlerResult {
    let q: JobsQuery = if req.args.as_ref() == b"null" { JobsQuery::default() } else { req.args()? };
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
    let store = router.registry().store();
    store.flush().await.map_err(store_error)?;
    let jobs = store.jobs(limit).await.map_err(store_error)?;
    to_value(&jobs.iter().map(job_info).collect::<Vec<_>>())
}

/// `$orb.jobs.show`: one job (id or unique prefix) with every target's result.
pub async fn show(router: &Router, req: &Request) -> HandlerResult {
    let r: JobRef = req.args()?;
    let store = router.registry().store();
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
    to_value(&JobDetail { job: job_info(&job), results, pending })
}

/// `$orb.jobs.cancel`: pending targets become `cancelled`; agents running the command are told
/// to stop. A job this server is running is cancelled by its task; one left by a previous process
/// is cancelled in the store.
pub async fn cancel(router: &Arc<Router>, req: &Request) -> HandlerResult {
    let r: JobRef = req.args()?;
    let store = router.registry().store();
    store.flush().await.map_err(store_error)?;
    let (job, _) = store.job(&r.id).await.map_err(job_error(&r.id))?;
    if job.state != JobPhase::Running {
        let msg = format!("job {} is already {}", job.id, job.state.as_str());
        return Err(ErrorBody::new(ErrorCode::JobFinished, msg));
    }
    let cancelled = match router.running_job(&job.id) {
        Some(inbox) => match inbox.cancel().await {
            Some(devices) => devices,
            None => return Err(ErrorBody::new(ErrorCode::JobFinished, format!("job {} just finished", job.id))),
        },
        None => store.cancel_job(&job.id, Utc::now()).await.map_err(job_error(&job.id))?,
    };
    to_value(&JobCancelled { job: job.id, cancelled })
}

fn job_error(id: &str) -> impl FnOnce(StoreError) -> ErrorBody + '_ {
    move |e| match e {
        StoreError::NotFound(_) => ErrorBody::new(ErrorCode::JobNotFound, format!("no job matches '{id}'")),
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
        late: t.late,
    })
}

fn raw_json(text: &str) -> Option<Box<RawValue>> {
    RawValue::from_string(text.to_owned()).ok()
}

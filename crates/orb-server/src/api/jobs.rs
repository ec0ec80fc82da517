//! `/v1/jobs`: submit a job (`POST`, optionally waiting for its end), list and show stored jobs,
//! cancel one (`DELETE`). A job is submitted through `Broker::submit` as the wire session does;
//! one with a TTL is answered only once what it holds is committed. A caller that goes away
//! while waiting leaves the job running; its results are stored.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use orb_proto::history::{JobCancelled, JobDetail, JobInfo, JobRef, JobsQuery};
use orb_proto::message::{JobAccepted, JobSummary, Select, TargetResult};
use orb_proto::rollout::Rollout;
use orb_proto::{ErrorBody, ErrorCode};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::{IntoParams, ToSchema};

use super::Api;
use super::auth::Operator;
use super::body::Object;
use super::error::ApiError;
use super::openapi::{MAX_DURATION_TEXT, refusals};
use crate::broker::services::history::MAX_LIMIT as MAX_LIST;
use crate::jobs::{JobEvent, JobSpec};

/// The body of `POST /v1/jobs`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"target": "tag:role=web", "command": "echo", "args": {"n": 1}, "wait": "5s"}))]
pub(crate) struct NewJob {
    /// Target selector (syntax as `orb send`: `*`, ids, globs, `tag:K=V`, `group:NAME`,
    /// `and`/`or`/`not`; at most 4096 bytes).
    #[schema(min_length = 1, max_length = 4096, example = "*")]
    target: String,
    /// Command name (at most 128 bytes; not under `$orb.`).
    #[schema(max_length = 128, example = "ping")]
    command: String,
    /// Arguments (any JSON value).
    #[serde(default)]
    #[schema(value_type = Value)]
    args: Option<Box<RawValue>>,
    /// Deadline, like `"5s"`; given, the call also waits for the job's end.
    #[serde(default)]
    #[schema(example = "5s")]
    wait: Option<String>,
    /// How long the command waits for targets that are not connected, like `"1h"` (`"0s"`: not
    /// at all).
    #[serde(default)]
    #[schema(example = "1h")]
    ttl: Option<String>,
    /// `all` (default: every matched device; those not connected end `offline`), `online` (only
    /// the connected ones) or `one` (one connected device that declares the command).
    #[serde(default)]
    #[schema(pattern = "^(all|online|one)$")]
    select: Option<String>,
}

/// `POST /v1/jobs` query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct WaitQuery {
    /// Wait for the job's end, with the body's `wait` or the server's default deadline
    /// (`limits.job_deadline`).
    #[serde(default)]
    wait: bool,
}

/// `GET /v1/jobs` query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// At most this many jobs, newest first (default 50, at most 1000).
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
    /// Only the jobs this schedule fired: its id or a unique prefix, also of a schedule that is
    /// gone (removed, or a one-shot that fired) but named by its jobs.
    #[serde(default)]
    schedule: Option<String>,
}

/// What a job that was waited for ended with.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Finished {
    /// The job id.
    job: String,
    /// One object per target, as `orb send --json` prints them.
    results: Vec<TargetResult>,
    /// How many targets ended in each status: the last line of `orb send --json`.
    summary: JobSummary,
}

/// `text`, a duration of at most `max` (`key` names the limit).
fn duration(field: &str, text: &str, max: Duration, key: &str) -> Result<Duration, ApiError> {
    let bad = |why: String| ApiError(ErrorBody::new(ErrorCode::BadRequest, why));
    if text.chars().count() > MAX_DURATION_TEXT {
        return Err(bad(format!("'{field}' is longer than {MAX_DURATION_TEXT} characters")));
    }
    let d = humantime::parse_duration(text).map_err(|e| {
        bad(format!("'{field}' = \"{}\" is not a duration like 5s or 1h: {e}", orb_proto::excerpt(text)))
    })?;
    if d > max {
        let max = humantime::format_duration(max);
        return Err(bad(format!(
            "'{field}' = \"{}\" is longer than this server's {key} of {max}",
            orb_proto::excerpt(text)
        )));
    }
    Ok(d)
}

/// `POST /v1/jobs`: `202` with the accepted job, or with `wait`, `200` with its results once it
/// ended.
#[utoipa::path(
    post,
    path = "/v1/jobs",
    operation_id = "jobs_submit",
    tag = "jobs",
    security(("bearer" = [])),
    params(WaitQuery),
    request_body = NewJob,
    responses(
        (status = 200, description = "Waited for (`wait` in the body or `?wait=true`): the job ended", body = Finished),
        (status = 202, description = "Accepted; the job runs on (`GET /v1/jobs/{id}` has its results)",
         body = JobAccepted),
        SubmitRefusals,
    )
)]
pub(crate) async fn submit(
    State(api): State<Arc<Api>>,
    Operator(who): Operator,
    query: Result<Query<WaitQuery>, axum::extract::rejection::QueryRejection>,
    body: Result<Json<Object<NewJob>>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let Json(Object(body)) = body?;
    let limits = api.shared.broker.limits();
    let deadline =
        body.wait.as_deref().map(|w| duration("wait", w, limits.max_deadline, "limits.max_deadline")).transpose()?;
    let ttl = body.ttl.as_deref().map(|t| duration("ttl", t, limits.max_ttl, "limits.max_ttl")).transpose()?;
    let select = Select::from_wire(body.select.as_deref())?;
    let spec = JobSpec {
        command: body.command,
        target: body.target,
        args: body.args.map(|a| Bytes::copy_from_slice(a.get().as_bytes())),
        deadline,
        select,
        ttl,
        firing: None,
        rollout: Rollout::default(),
    };
    let handle = api.shared.broker.submit(&who, spec)?;
    if let Some(committed) = handle.committed {
        let _ = committed.await;
    }
    if !(query.wait || deadline.is_some()) {
        return Ok((StatusCode::ACCEPTED, Json(handle.accepted)).into_response());
    }
    let mut events = handle.events;
    let mut results = Vec::with_capacity(handle.accepted.targets.len());
    while let Some(event) = events.next().await {
        match event {
            JobEvent::Settled(s) => results.push(TargetResult {
                device: s.device.to_string(),
                status: s.status,
                result: s.result.and_then(|b| serde_json::from_slice(&b).ok()),
                error: s.error,
                elapsed_ms: s.elapsed_ms,
                late: None,
            }),
            JobEvent::Batch(_) => {}
            JobEvent::Ended(summary) => {
                return Ok(Json(Finished { job: summary.job.clone(), results, summary }).into_response());
            }
            JobEvent::Lagged { limit } => {
                let msg = format!(
                    "the job's results passed the {limit} bytes buffered for a caller; it runs on, GET /v1/jobs/{} has them",
                    handle.accepted.job
                );
                return Err(ApiError(ErrorBody::new(ErrorCode::Lagged, msg)));
            }
        }
    }
    Err(ApiError(ErrorBody::new(ErrorCode::ServerShutdown, "the server stopped before the job ended")))
}

/// `GET /v1/jobs?limit=N&schedule=ID`: stored jobs, newest first.
#[utoipa::path(
    get,
    path = "/v1/jobs",
    operation_id = "jobs_list",
    tag = "jobs",
    security(("bearer" = [])),
    params(ListQuery),
    responses((status = 200, description = "Stored jobs, newest first", body = Vec<JobInfo>), ListRefusals)
)]
pub(crate) async fn list(
    State(api): State<Arc<Api>>,
    Operator(who): Operator,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<JobInfo>>, ApiError> {
    let Query(q) = query?;
    if q.limit.is_some_and(|l| !(1..=MAX_LIST).contains(&l)) {
        let msg = format!("limit must be between 1 and {MAX_LIST}");
        return Err(ApiError(ErrorBody::new(ErrorCode::BadRequest, msg)));
    }
    let q = JobsQuery { limit: q.limit, schedule: q.schedule };
    Ok(Json(api.shared.broker.jobs_list(&who, &q).await?))
}

/// `GET /v1/jobs/{id}`: one job (id or unique prefix) with every target's result.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    operation_id = "jobs_show",
    tag = "jobs",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Job id or a unique prefix of it")),
    responses((status = 200, description = "The job with every target's result", body = JobDetail), ShowRefusals)
)]
pub(crate) async fn show(
    State(api): State<Arc<Api>>,
    Operator(who): Operator,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<JobDetail>, ApiError> {
    let Path(id) = path?;
    Ok(Json(api.shared.broker.job_show(&who, &JobRef { id }).await?))
}

/// `DELETE /v1/jobs/{id}`: cancels a running job; answers the targets it cancelled.
#[utoipa::path(
    delete,
    path = "/v1/jobs/{id}",
    operation_id = "jobs_cancel",
    tag = "jobs",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Job id or a unique prefix of it")),
    responses((status = 200, description = "The targets that were pending, now `cancelled`", body = JobCancelled),
              CancelRefusals)
)]
pub(crate) async fn cancel(
    State(api): State<Arc<Api>>,
    Operator(who): Operator,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<JobCancelled>, ApiError> {
    let Path(id) = path?;
    Ok(Json(api.shared.broker.job_cancel(&who, &JobRef { id }).await?))
}

refusals!(
    /// Refusals of `POST /v1/jobs`.
    SubmitRefusals, true: BadRequest, BadBody, BadSelector, UnknownGroup, NoMatch, UnknownCommand, FrameTooLarge,
    TooManyJobs, Lagged, ServerShutdown, StoreUnavailable
);

refusals!(
    /// Refusals of `GET /v1/jobs`.
    ListRefusals, true: BadRequest, AmbiguousId, ScheduleNotFound, StoreUnavailable
);

refusals!(
    /// Refusals of `GET /v1/jobs/{id}`.
    ShowRefusals, true: BadRequest, AmbiguousId, JobNotFound, StoreUnavailable
);

refusals!(
    /// Refusals of `DELETE /v1/jobs/{id}`.
    CancelRefusals, true: BadRequest, AmbiguousId, JobNotFound, JobFinished, WrongNode, StoreUnavailable
);

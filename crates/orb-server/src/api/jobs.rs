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
use orb_proto::message::{JobSummary, Select, TargetResult};
use orb_proto::rollout::Rollout;
use orb_proto::{ErrorBody, ErrorCode};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::Api;
use super::auth::Operator;
use super::error::ApiError;
use crate::jobs::{JobEvent, JobSpec};

/// The body of `POST /v1/jobs`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct NewJob {
    /// Target selector.
    target: String,
    /// Command name.
    command: String,
    /// Arguments (any JSON value).
    #[serde(default)]
    args: Option<Box<RawValue>>,
    /// Deadline, like `"5s"`; given, the call also waits for the job's end.
    #[serde(default)]
    wait: Option<String>,
    /// How long the command waits for targets that are not connected, like `"1h"`.
    #[serde(default)]
    ttl: Option<String>,
    /// `all` (default), `online` or `one`.
    #[serde(default)]
    select: Option<String>,
}

/// `?wait=true`: wait for the job's end (with the body's deadline or the server's default).
#[derive(Debug, Deserialize)]
pub(crate) struct WaitQuery {
    #[serde(default)]
    wait: bool,
}

/// What a job that was waited for ended with.
#[derive(Debug, Serialize)]
pub(crate) struct Finished {
    job: String,
    /// One object per target, as `orb send --json` prints them.
    results: Vec<TargetResult>,
    summary: JobSummary,
}

fn duration(key: &str, text: &str) -> Result<Duration, ApiError> {
    humantime::parse_duration(text).map_err(|e| {
        ApiError(ErrorBody::new(
            ErrorCode::BadRequest,
            format!("'{key}' = \"{}\" is not a duration like 5s or 1h: {e}", orb_proto::excerpt(text)),
        ))
    })
}

/// `POST /v1/jobs`: `202` with the accepted job, or with `wait`, `200` with its results once it
/// ended.
pub(crate) async fn submit(
    State(api): State<Arc<Api>>,
    Operator(who): Operator,
    query: Result<Query<WaitQuery>, axum::extract::rejection::QueryRejection>,
    body: Result<Json<NewJob>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    let Query(query) = query?;
    let Json(body) = body?;
    let deadline = body.wait.as_deref().map(|w| duration("wait", w)).transpose()?;
    let ttl = body.ttl.as_deref().map(|t| duration("ttl", t)).transpose()?;
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
pub(crate) async fn list(
    State(api): State<Arc<Api>>,
    Operator(who): Operator,
    query: Result<Query<JobsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<JobInfo>>, ApiError> {
    let Query(q) = query?;
    Ok(Json(api.shared.broker.jobs_list(&who, &q).await?))
}

/// `GET /v1/jobs/{id}`: one job (id or unique prefix) with every target's result.
pub(crate) async fn show(
    State(api): State<Arc<Api>>,
    Operator(who): Operator,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<JobDetail>, ApiError> {
    let Path(id) = path?;
    Ok(Json(api.shared.broker.job_show(&who, &JobRef { id }).await?))
}

/// `DELETE /v1/jobs/{id}`: cancels a running job; answers the targets it cancelled.
pub(crate) async fn cancel(
    State(api): State<Arc<Api>>,
    Operator(who): Operator,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<JobCancelled>, ApiError> {
    let Path(id) = path?;
    Ok(Json(api.shared.broker.job_cancel(&who, &JobRef { id }).await?))
}

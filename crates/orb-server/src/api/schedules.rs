//! `/v1/schedules`: create (the same JSON as `$orb.schedules.create`), list, show, pause, resume
//! and delete stored schedules; the same typed services as `orb schedule`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use orb_proto::rollout::Rollout;
use orb_proto::schedule::{MissedPolicy, ScheduleCreate, ScheduleInfo, ScheduleRef, Spec};
use orb_proto::{ErrorBody, ErrorCode};
use serde::Deserialize;
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::Api;
use super::auth::Operator;
use super::body::Object;
use super::error::ApiError;
use super::openapi::{millis, refusals};

/// The body of `POST /v1/schedules`: `$orb.schedules.create`'s arguments (protocol section
/// 6.2.3), unknown fields refused.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"target": "tag:role=web", "command": "ping", "spec": {"kind": "cron", "expr": "0 9 * * 1-5", "tz": "UTC"}}))]
pub(crate) struct NewSchedule {
    /// Target selector, resolved at each firing (devices that match later are included; at most
    /// 4096 bytes).
    #[schema(min_length = 1, max_length = 4096, example = "*")]
    target: String,
    /// Command name (at most 128 bytes; not under `$orb.`).
    #[schema(max_length = 128, example = "ping")]
    command: String,
    /// Arguments (any JSON value).
    #[serde(default)]
    #[schema(value_type = Value)]
    args: Option<Box<RawValue>>,
    /// Each firing's deadline in milliseconds (absent: the server's default, `limits.job_deadline`).
    #[serde(default)]
    deadline_ms: Option<u64>,
    /// Each firing's TTL for targets that are not connected, in milliseconds.
    #[serde(default)]
    ttl_ms: Option<u64>,
    /// How each firing's job reaches its targets (splay, batches); absent: all at once.
    #[serde(default)]
    #[schema(value_type = Rollout)]
    rollout: Object<Rollout>,
    /// When it fires.
    #[schema(value_type = Spec)]
    spec: Object<Spec>,
    /// What to do with firings missed while no server ran (default `skip`).
    #[serde(default)]
    missed: MissedPolicy,
    /// Run on each matching device's own clock instead of being fired by the server (default
    /// false).
    #[serde(default)]
    on_agent: bool,
}

impl From<NewSchedule> for ScheduleCreate {
    fn from(s: NewSchedule) -> ScheduleCreate {
        ScheduleCreate {
            target: s.target,
            command: s.command,
            args: s.args,
            deadline_ms: s.deadline_ms,
            ttl_ms: s.ttl_ms,
            rollout: s.rollout.0,
            spec: s.spec.0,
            missed: s.missed,
            on_agent: s.on_agent,
        }
    }
}

/// `POST /v1/schedules`: `201` with the stored schedule.
#[utoipa::path(
    post,
    path = "/v1/schedules",
    operation_id = "schedules_create",
    tag = "schedules",
    security(("bearer" = [])),
    request_body = NewSchedule,
    responses((status = 201, description = "Stored", body = ScheduleInfo), CreateRefusals)
)]
pub(crate) async fn create(
    State(api): State<Arc<Api>>,
    Operator(who): Operator,
    body: Result<Json<Object<NewSchedule>>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<ScheduleInfo>), ApiError> {
    let Json(Object(create)) = body?;
    let limits = api.shared.broker.limits();
    for (field, value, max, key) in [
        ("deadline_ms", create.deadline_ms, limits.max_deadline, "limits.max_deadline"),
        ("ttl_ms", create.ttl_ms, limits.max_ttl, "limits.max_ttl"),
    ] {
        if let Some(v) = value.filter(|v| *v > millis(max)) {
            let msg = format!("'{field}' = {v} is longer than this server's {key} of {} ms", millis(max));
            return Err(ApiError(ErrorBody::new(ErrorCode::BadRequest, msg)));
        }
    }
    Ok((StatusCode::CREATED, Json(api.shared.broker.schedule_create(&who, create.into()).await?)))
}

/// `GET /v1/schedules`.
#[utoipa::path(
    get,
    path = "/v1/schedules",
    operation_id = "schedules_list",
    tag = "schedules",
    security(("bearer" = [])),
    responses((status = 200, description = "Every stored schedule, by id (without `args`: `show` has them)",
               body = Vec<ScheduleInfo>), ListRefusals)
)]
pub(crate) async fn list(
    State(api): State<Arc<Api>>,
    Operator(who): Operator,
) -> Result<Json<Vec<ScheduleInfo>>, ApiError> {
    Ok(Json(api.shared.broker.schedules_list(&who).await?))
}

/// `GET /v1/schedules/{id}` (id or unique prefix).
#[utoipa::path(
    get,
    path = "/v1/schedules/{id}",
    operation_id = "schedules_show",
    tag = "schedules",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Schedule id or a unique prefix of it")),
    responses((status = 200, description = "The schedule", body = ScheduleInfo), OneRefusals)
)]
pub(crate) async fn show(
    State(api): State<Arc<Api>>,
    Operator(who): Operator,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<ScheduleInfo>, ApiError> {
    let Path(id) = path?;
    Ok(Json(api.shared.broker.schedule_show(&who, &ScheduleRef { id }).await?))
}

/// `POST /v1/schedules/{id}/pause`.
#[utoipa::path(
    post,
    path = "/v1/schedules/{id}/pause",
    operation_id = "schedules_pause",
    tag = "schedules",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Schedule id or a unique prefix of it")),
    responses((status = 200, description = "The schedule, paused", body = ScheduleInfo), OneRefusals)
)]
pub(crate) async fn pause(
    State(api): State<Arc<Api>>,
    Operator(who): Operator,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<ScheduleInfo>, ApiError> {
    let Path(id) = path?;
    Ok(Json(api.shared.broker.schedule_pause(&who, &ScheduleRef { id }).await?))
}

/// `POST /v1/schedules/{id}/resume`.
#[utoipa::path(
    post,
    path = "/v1/schedules/{id}/resume",
    operation_id = "schedules_resume",
    tag = "schedules",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Schedule id or a unique prefix of it")),
    responses((status = 200, description = "The schedule, active, with its next firing", body = ScheduleInfo), OneRefusals)
)]
pub(crate) async fn resume(
    State(api): State<Arc<Api>>,
    Operator(who): Operator,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<ScheduleInfo>, ApiError> {
    let Path(id) = path?;
    Ok(Json(api.shared.broker.schedule_resume(&who, &ScheduleRef { id }).await?))
}

/// `DELETE /v1/schedules/{id}`: answers the schedule as it was.
#[utoipa::path(
    delete,
    path = "/v1/schedules/{id}",
    operation_id = "schedules_remove",
    tag = "schedules",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Schedule id or a unique prefix of it")),
    responses((status = 200, description = "The schedule as it was", body = ScheduleInfo), OneRefusals)
)]
pub(crate) async fn remove(
    State(api): State<Arc<Api>>,
    Operator(who): Operator,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<ScheduleInfo>, ApiError> {
    let Path(id) = path?;
    Ok(Json(api.shared.broker.schedule_remove(&who, &ScheduleRef { id }).await?))
}

refusals!(
    /// Refusals of `POST /v1/schedules`.
    CreateRefusals, true: BadRequest, BadBody, BadSelector, UnknownGroup, BadSchedule, BadRollout, FrameTooLarge,
    TooManySchedules, StoreUnavailable
);

refusals!(
    /// Refusals of `GET /v1/schedules`.
    ListRefusals, true: StoreUnavailable
);

refusals!(
    /// Refusals of the operations on one schedule.
    OneRefusals, true: BadRequest, AmbiguousId, ScheduleNotFound, StoreUnavailable
);

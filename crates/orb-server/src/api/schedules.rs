//! `/v1/schedules`: create (the same JSON as `$orb.schedules.create`), list, show, pause, resume
//! and delete stored schedules; the same typed services as `orb schedule`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use orb_proto::schedule::{ScheduleCreate, ScheduleInfo, ScheduleRef};

use super::Api;
use super::auth::Operator;
use super::error::ApiError;

/// `POST /v1/schedules`: `201` with the stored schedule.
pub(crate) async fn create(
    State(api): State<Arc<Api>>,
    Operator(who): Operator,
    body: Result<Json<ScheduleCreate>, axum::extract::rejection::JsonRejection>,
) -> Result<(StatusCode, Json<ScheduleInfo>), ApiError> {
    let Json(create) = body?;
    Ok((StatusCode::CREATED, Json(api.shared.broker.schedule_create(&who, create).await?)))
}

/// `GET /v1/schedules`.
pub(crate) async fn list(
    State(api): State<Arc<Api>>,
    Operator(who): Operator,
) -> Result<Json<Vec<ScheduleInfo>>, ApiError> {
    Ok(Json(api.shared.broker.schedules_list(&who).await?))
}

/// `GET /v1/schedules/{id}` (id or unique prefix).
pub(crate) async fn show(
    State(api): State<Arc<Api>>,
    Operator(who): Operator,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<ScheduleInfo>, ApiError> {
    let Path(id) = path?;
    Ok(Json(api.shared.broker.schedule_show(&who, &ScheduleRef { id }).await?))
}

/// `POST /v1/schedules/{id}/pause`.
pub(crate) async fn pause(
    State(api): State<Arc<Api>>,
    Operator(who): Operator,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<ScheduleInfo>, ApiError> {
    let Path(id) = path?;
    Ok(Json(api.shared.broker.schedule_pause(&who, &ScheduleRef { id }).await?))
}

/// `POST /v1/schedules/{id}/resume`.
pub(crate) async fn resume(
    State(api): State<Arc<Api>>,
    Operator(who): Operator,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<ScheduleInfo>, ApiError> {
    let Path(id) = path?;
    Ok(Json(api.shared.broker.schedule_resume(&who, &ScheduleRef { id }).await?))
}

/// `DELETE /v1/schedules/{id}`: answers the schedule as it was.
pub(crate) async fn remove(
    State(api): State<Arc<Api>>,
    Operator(who): Operator,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<ScheduleInfo>, ApiError> {
    let Path(id) = path?;
    Ok(Json(api.shared.broker.schedule_remove(&who, &ScheduleRef { id }).await?))
}

//! `/v1/devices`: the inventory, filtered by selector, paged by id; one device with its
//! inventory and live connection statistics. The same typed services as `orb devices`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use orb_proto::message::{DeviceInfo, DevicesQuery};
use orb_proto::registry::{DeviceDetail, DeviceRef};
use orb_proto::{ErrorBody, ErrorCode};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::Api;
use super::auth::Operator;
use super::error::ApiError;
use super::openapi::refusals;

/// Devices per page when the query names no limit.
const DEFAULT_PAGE: usize = 100;
/// Devices per page at most.
pub(crate) const MAX_PAGE: usize = 1000;

/// `GET /v1/devices` query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ListQuery {
    /// Only devices this selector matches (syntax as `orb send`: `*`, ids, globs, `tag:K=V`,
    /// `group:NAME`, `and`/`or`/`not`; at most 4096 bytes).
    #[serde(default)]
    #[param(min_length = 1, max_length = 4096, example = "tag:role=web")]
    selector: Option<String>,
    /// Only connected devices.
    #[serde(default)]
    connected: bool,
    /// With each device's argument schemas (`schemas`, command name to JSON Schema); left out
    /// by default.
    #[serde(default)]
    schemas: bool,
    /// Devices whose id sorts after this one (the previous page's `next`).
    #[serde(default)]
    after: Option<String>,
    /// Devices per page (default 100, at most 1000).
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<usize>,
}

/// One page of devices.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Page {
    /// Devices, by id.
    devices: Vec<DeviceInfo>,
    /// The `after` of the next page; null on the last.
    next: Option<String>,
}

/// `GET /v1/devices?selector=S&connected=true&schemas=true&after=ID&limit=N`: devices by id.
#[utoipa::path(
    get,
    path = "/v1/devices",
    operation_id = "devices_list",
    tag = "devices",
    security(("bearer" = [])),
    params(ListQuery),
    responses((status = 200, description = "One page of devices", body = Page), ListRefusals)
)]
pub(crate) async fn list(
    State(api): State<Arc<Api>>,
    Operator(who): Operator,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Page>, ApiError> {
    let Query(q) = query?;
    let limit = q.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        let msg = format!("limit must be between 1 and {MAX_PAGE}");
        return Err(ApiError(ErrorBody::new(ErrorCode::BadRequest, msg)));
    }
    let mut all = api
        .shared
        .broker
        .devices_list(&who, &DevicesQuery { selector: q.selector, connected: q.connected, schemas: q.schemas })
        .await?;
    all.sort_by(|a, b| a.id.cmp(&b.id));
    let start = q.after.as_deref().map_or(0, |after| all.partition_point(|d| d.id.as_str() <= after));
    let rest = all.split_off(start.min(all.len()));
    let more = rest.len() > limit;
    let devices: Vec<DeviceInfo> = rest.into_iter().take(limit).collect();
    let next = if more { devices.last().map(|d| d.id.clone()) } else { None };
    Ok(Json(Page { devices, next }))
}

/// `GET /v1/devices/{id}`: inventory, tags and their source, live link statistics.
#[utoipa::path(
    get,
    path = "/v1/devices/{id}",
    operation_id = "devices_show",
    tag = "devices",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "Device id")),
    responses((status = 200, description = "The device", body = DeviceDetail), ShowRefusals)
)]
pub(crate) async fn show(
    State(api): State<Arc<Api>>,
    Operator(who): Operator,
    path: Result<Path<String>, axum::extract::rejection::PathRejection>,
) -> Result<Json<DeviceDetail>, ApiError> {
    let Path(id) = path?;
    Ok(Json(api.shared.broker.device_show(&who, &DeviceRef { id }).await?))
}

refusals!(
    /// Refusals of `GET /v1/devices`.
    ListRefusals, true: BadRequest, BadSelector, UnknownGroup, StoreUnavailable
);

refusals!(
    /// Refusals of `GET /v1/devices/{id}`.
    ShowRefusals, true: BadRequest, DeviceNotFound, StoreUnavailable
);

//! `GET /v1/audit`: the audit log (admin only), newest first, through the same service as
//! `$orb.audit.list` (`broker::services::audit`), which reads the store.

use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use orb_proto::audit::{AuditInfo, AuditQuery};
use orb_proto::{ErrorBody, ErrorCode};
use serde::Deserialize;
use utoipa::IntoParams;

use super::Api;
use super::auth::Operator;
use super::error::ApiError;
use super::openapi::refusals;
use crate::broker::services::audit::MAX_LIMIT;

/// `GET /v1/audit` query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct AuditParams {
    /// Only entries at or after this RFC 3339 time, like `2025-06-01T00:00:00Z`.
    #[serde(default)]
    #[param(example = "2025-06-01T00:00:00Z")]
    since: Option<String>,
    /// At most this many entries, newest first (default 100, at most 1000).
    #[serde(default)]
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<u32>,
}

/// `GET /v1/audit?since=TIME&limit=N`: operator actions that changed something (or were
/// refused `forbidden`), newest first.
#[utoipa::path(
    get,
    path = "/v1/audit",
    operation_id = "audit_list",
    tag = "audit",
    security(("bearer" = [])),
    params(AuditParams),
    responses((status = 200, description = "Audit log entries, newest first", body = Vec<AuditInfo>), ListRefusals)
)]
pub(crate) async fn list(
    State(api): State<Arc<Api>>,
    Operator(who): Operator,
    query: Result<Query<AuditParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<Vec<AuditInfo>>, ApiError> {
    let Query(q) = query?;
    let bad = |msg: String| ApiError(ErrorBody::new(ErrorCode::BadRequest, msg));
    if q.limit.is_some_and(|l| !(1..=MAX_LIMIT).contains(&l)) {
        return Err(bad(format!("limit must be between 1 and {MAX_LIMIT}")));
    }
    if let Some(since) = &q.since
        && let Err(e) = chrono::DateTime::parse_from_rfc3339(since)
    {
        return Err(bad(format!("since = '{}' is no RFC 3339 time: {e}", orb_proto::excerpt(since))));
    }
    let q = AuditQuery { since: q.since, limit: q.limit };
    Ok(Json(api.shared.broker.audit_list(&who, &q).await?))
}

refusals!(
    /// Refusals of `GET /v1/audit` (`forbidden` for every token but an admin's).
    ListRefusals, true: BadRequest, StoreUnavailable
);

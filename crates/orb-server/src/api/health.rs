//! Health, for anyone (no token): liveness at `/healthz` (also `/v1/health`), whether the server
//! is up and whether it is draining; readiness at `/readyz`, `200` while the server takes work
//! and `503` once it is draining.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Serialize;
use utoipa::ToSchema;
use utoipa::openapi::schema::OneOfBuilder;
use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};

use super::Api;
use super::openapi::refusals;

/// Whether the server is up.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Live {
    /// `ok`, or `draining` while the server stops.
    #[schema(pattern = "^(ok|draining)$")]
    status: &'static str,
}

/// Whether the server takes work.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Ready {
    /// True while the server takes work.
    ready: bool,
    /// `ok`, or `draining` while the server stops.
    #[schema(pattern = "^(ok|draining)$")]
    status: &'static str,
}

fn live_now(api: &Api) -> Json<Live> {
    Json(Live { status: if api.shared.broker.is_draining() { "draining" } else { "ok" } })
}

/// `GET /healthz`: liveness.
#[utoipa::path(
    get,
    path = "/healthz",
    operation_id = "healthz",
    tag = "health",
    responses((status = 200, description = "The server is up (`draining` while it stops)", body = Live), HealthRefusals)
)]
pub(crate) async fn live(State(api): State<Arc<Api>>) -> Json<Live> {
    live_now(&api)
}

/// `GET /v1/health`: liveness, as `/healthz`.
#[utoipa::path(
    get,
    path = "/v1/health",
    operation_id = "health",
    tag = "health",
    responses((status = 200, description = "The server is up (`draining` while it stops)", body = Live), HealthRefusals)
)]
pub(crate) async fn live_v1(State(api): State<Arc<Api>>) -> Json<Live> {
    live_now(&api)
}

/// `GET /readyz`: readiness.
#[utoipa::path(
    get,
    path = "/readyz",
    operation_id = "readyz",
    tag = "health",
    responses((status = 200, description = "The server takes work", body = Ready), ReadyRefusals)
)]
pub(crate) async fn ready(State(api): State<Arc<Api>>) -> (StatusCode, Json<Ready>) {
    if api.shared.broker.is_draining() {
        (StatusCode::SERVICE_UNAVAILABLE, Json(Ready { ready: false, status: "draining" }))
    } else {
        (StatusCode::OK, Json(Ready { ready: true, status: "ok" }))
    }
}

refusals!(
    /// Refusals of the liveness checks.
    HealthRefusals, false:
);

/// Refusals of the readiness check: `503` is either draining (a [`Ready`] body) or the
/// connection limit (an `ErrorBody`).
pub(crate) struct ReadyRefusals;

impl utoipa::IntoResponses for ReadyRefusals {
    fn responses() -> BTreeMap<String, RefOr<utoipa::openapi::Response>> {
        let mut responses = super::openapi::responses_for(false, &[]);
        let either = OneOfBuilder::new().item(Ref::from_schema_name("Ready")).item(Ref::from_schema_name("ErrorBody"));
        let description = "The server is draining (a `Ready` body, `ready` false), or `too_many_connections`: the \
                           server's connection limit is reached (an `ErrorBody`)";
        let content = ContentBuilder::new().schema(Some(either)).build();
        let response = ResponseBuilder::new().description(description).content("application/json", content);
        responses.insert("503".into(), RefOr::T(response.build()));
        responses
    }
}

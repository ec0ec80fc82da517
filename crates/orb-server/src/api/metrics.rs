//! `GET /metrics`: the server's metrics in the Prometheus text format (`crate::metrics`, every
//! name prefixed `orb_`). Needs the admin token like the REST API, unless `[http]
//! metrics_public` says otherwise (read on every request: a reload applies at once).

use std::sync::Arc;

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::response::{IntoResponse, Response};

use super::Api;
use super::auth::Operator;
use super::error::ApiError;
use super::openapi::refusals;

/// The content type of the Prometheus text format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// `GET /metrics`.
#[utoipa::path(
    get,
    path = "/metrics",
    operation_id = "metrics",
    tag = "server",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "Every metric in the Prometheus text format, each name prefixed `orb_` (the \
                                      bearer token is needed unless `[http] metrics_public = true`)",
         content_type = "text/plain", body = String),
        MetricsRefusals,
    )
)]
pub(crate) async fn render(State(api): State<Arc<Api>>, req: Request) -> Result<Response, ApiError> {
    let broker = &api.shared.broker;
    if !broker.metrics().is_public() {
        let (mut parts, _) = req.into_parts();
        Operator::from_request_parts(&mut parts, &api).await?;
    }
    Ok(([(CONTENT_TYPE, TEXT_FORMAT)], broker.metrics_text().await).into_response())
}

refusals!(
    /// Refusals of `GET /metrics`.
    MetricsRefusals, true:
);

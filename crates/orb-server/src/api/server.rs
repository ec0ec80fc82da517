//! `GET /v1/status` (what the server is and holds now) and `POST /v1/publish` (a publication, as
//! `orb pub` makes it, retained or not).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use bytes::Bytes;
use orb_proto::{ErrorBody, ErrorCode};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::Api;
use super::auth::Operator;
use super::body::Object;
use super::error::ApiError;
use super::openapi::refusals;

/// What the server is and holds now.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ServerStatus {
    /// Server software name and version.
    server: String,
    /// Protocol version.
    protocol: u32,
    /// This server's node id.
    node: String,
    /// RFC 3339 UTC start time.
    started_at: String,
    /// Seconds since the start.
    uptime_s: i64,
    /// Connected agent sessions (wire protocol).
    agents: u64,
    /// Connected operator sessions (wire protocol).
    operators: u64,
    /// Devices the registry knows.
    devices_known: u64,
    /// Devices connected now.
    devices_connected: u64,
    /// Jobs waiting for answers.
    jobs_in_flight: u64,
    /// Pub/sub subscriptions held.
    subscriptions: u64,
    /// Topics with a retained publication.
    retained: u64,
    /// `sqlite` or `postgres`.
    store: String,
    /// Resident memory of the server process in bytes (Linux; null elsewhere).
    rss_bytes: Option<u64>,
    /// Sessions closed since start, per reason.
    closed: std::collections::BTreeMap<String, u64>,
    /// Whether the server is draining (stopping gracefully).
    draining: bool,
    /// Frames per second by kind, read and sent, over the last 10 s.
    rates: crate::metrics::Rates,
}

/// `GET /v1/status`: version, node, uptime, sessions, devices, jobs in flight, subscriptions,
/// retained topics, store kind, resident memory, closed sessions by reason, draining.
#[utoipa::path(
    get,
    path = "/v1/status",
    operation_id = "status",
    tag = "server",
    security(("bearer" = [])),
    responses((status = 200, description = "The server now", body = ServerStatus), StatusRefusals)
)]
pub(crate) async fn status(
    State(api): State<Arc<Api>>,
    Operator(who): Operator,
) -> Result<Json<ServerStatus>, ApiError> {
    let broker = &api.shared.broker;
    let info = broker.server_info(&who)?;
    let started = chrono::DateTime::parse_from_rfc3339(&info.started_at).map(|t| t.to_utc()).unwrap_or_default();
    Ok(Json(ServerStatus {
        server: info.server,
        protocol: info.version,
        node: broker.node().to_string(),
        uptime_s: (chrono::Utc::now() - started).num_seconds(),
        started_at: info.started_at,
        agents: info.agents,
        operators: info.operators,
        devices_known: info.devices_known,
        devices_connected: info.agents,
        jobs_in_flight: info.jobs_in_flight,
        subscriptions: broker.subscriptions() as u64,
        retained: broker.retained().0 as u64,
        store: broker.registry().store().backend().to_owned(),
        rss_bytes: resident_bytes(),
        closed: info.closed,
        draining: info.draining,
        rates: broker.metrics().rates(),
    }))
}

/// The process's resident set size, from `/proc/self/statm` (pages × page size, 4 KiB assumed
/// where the kernel uses it; Linux only).
fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// The body of `POST /v1/publish`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"topic": "config.gw-1.rate", "body": 30, "retain": true}))]
pub(crate) struct NewPublication {
    /// The topic: dot-separated segments, no wildcards, not under `$orb.` (at most 256 bytes).
    #[schema(min_length = 1, max_length = 256, example = "config.gw-1.rate")]
    topic: String,
    /// Any JSON value (null when absent).
    #[serde(default)]
    #[schema(value_type = Value)]
    body: Option<Box<RawValue>>,
    /// Keep it as the topic's retained publication (a null body clears it).
    #[serde(default)]
    retain: bool,
}

/// What a publication reached.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Published {
    /// Connections it was queued for.
    delivered: u64,
    /// Retained (stored) as well.
    retained: bool,
}

/// `POST /v1/publish`: answered once queued for every subscriber (and, retained, stored).
#[utoipa::path(
    post,
    path = "/v1/publish",
    operation_id = "publish",
    tag = "server",
    security(("bearer" = [])),
    request_body = NewPublication,
    responses((status = 200, description = "Queued for every subscriber (and stored, retained)", body = Published),
              PublishRefusals)
)]
pub(crate) async fn publish(
    State(api): State<Arc<Api>>,
    Operator(who): Operator,
    body: Result<Json<Object<NewPublication>>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Published>, ApiError> {
    let Json(Object(p)) = body?;
    let body = p.body.map(|b| Bytes::copy_from_slice(b.get().as_bytes()));
    let broker = &api.shared.broker;
    let delivered = if p.retain {
        let (delivered, committed) = broker.publish_retained(&who, &p.topic, body)?;
        committed.await.unwrap_or_else(|_| {
            Err(ErrorBody::new(ErrorCode::ServerShutdown, "the server stopped before the publication was stored"))
        })?;
        delivered
    } else {
        broker.publish(&who, &p.topic, body)?
    };
    Ok(Json(Published { delivered: delivered as u64, retained: p.retain }))
}

refusals!(
    /// Refusals of `GET /v1/status`.
    StatusRefusals, true:
);

refusals!(
    /// Refusals of `POST /v1/publish`.
    PublishRefusals, true: BadRequest, BadTopic, BadBody, FrameTooLarge, TooManyRetained, ServerShutdown,
    StoreUnavailable
);

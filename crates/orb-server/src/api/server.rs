//! `GET /v1/status` (what the server is and holds now) and `POST /v1/publish` (a publication, as
//! `orb pub` makes it, retained or not).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use bytes::Bytes;
use orb_proto::{ErrorBody, ErrorCode};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use super::Api;
use super::auth::Operator;
use super::error::ApiError;

/// `GET /v1/status`.
#[derive(Debug, Serialize)]
pub(crate) struct Status {
    /// Server software name and version.
    server: String,
    /// Protocol version.
    protocol: u32,
    /// This server's node id.
    node: String,
    /// RFC 3339 start time, and seconds since.
    started_at: String,
    uptime_s: i64,
    /// Connected agent and operator sessions (wire protocol).
    agents: u64,
    operators: u64,
    /// Devices the registry knows, and how many of them are connected.
    devices_known: u64,
    devices_connected: u64,
    jobs_in_flight: u64,
    /// Pub/sub subscriptions held, topics retained.
    subscriptions: u64,
    retained: u64,
    /// `sqlite` or `postgres`.
    store: String,
    /// Resident memory of the server process in bytes (Linux; null elsewhere).
    rss_bytes: Option<u64>,
    /// Sessions closed since start, per reason.
    closed: std::collections::BTreeMap<String, u64>,
    draining: bool,
    /// Frames per second by kind, read and sent, over the last 10 s.
    rates: crate::metrics::Rates,
}

/// `GET /v1/status`.
pub(crate) async fn status(State(api): State<Arc<Api>>, Operator(who): Operator) -> Result<Json<Status>, ApiError> {
    let broker = &api.shared.broker;
    let info = broker.server_info(&who)?;
    let started = chrono::DateTime::parse_from_rfc3339(&info.started_at).map(|t| t.to_utc()).unwrap_or_default();
    Ok(Json(Status {
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
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Publication {
    topic: String,
    /// Any JSON value (null when absent).
    #[serde(default)]
    body: Option<Box<RawValue>>,
    /// Keep it as the topic's retained publication (a null body clears it).
    #[serde(default)]
    retain: bool,
}

/// What a publication reached.
#[derive(Debug, Serialize)]
pub(crate) struct Published {
    /// Connections it was queued for.
    delivered: u64,
    /// Retained (stored) as well.
    retained: bool,
}

/// `POST /v1/publish`: answered once queued for every subscriber (and, retained, stored).
pub(crate) async fn publish(
    State(api): State<Arc<Api>>,
    Operator(who): Operator,
    body: Result<Json<Publication>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Published>, ApiError> {
    let Json(p) = body?;
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

//! The REST API under `/v1/` (issue 14), an adapter over the broker's one door like the wire
//! session: each handler authenticates the bearer token through the same [`Authenticator`] a
//! `hello` goes through, calls one typed service (the ones the `$orb.` queries use) or
//! `Broker::submit`/`publish`, and answers JSON. Refusals are `{"code", "message"}` with the
//! code's HTTP status, as `docs/errors.md` lists them.
//!
//! Modules: `error` (refusals as responses), `auth` (the bearer token), `jobs`, `devices`,
//! `schedules`, `server` (status, publish), `events` (publications as Server-Sent Events or WebSocket messages).
//!
//! [`Authenticator`]: crate::auth::Authenticator

mod auth;
mod devices;
mod error;
mod events;
mod jobs;
mod metrics;
mod schedules;
mod server;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

use crate::identity::{Identity, Requester};
use crate::session::Shared;

/// What every API handler gets.
pub(crate) struct Api {
    pub(crate) shared: Arc<Shared>,
    /// The requester every admin-token call acts as: one quota of running jobs for the API,
    /// its name in the job history.
    pub(crate) admin: Requester,
}

/// The `/v1/` routes.
pub(crate) fn routes(shared: Arc<Shared>) -> Router {
    let api = Arc::new(Api { shared, admin: Requester::new(Identity::admin("http")) });
    Router::new()
        .route("/metrics", get(metrics::render))
        .route("/v1/status", get(server::status))
        .route("/v1/publish", post(server::publish))
        .route("/v1/events", get(events::stream))
        .route("/v1/events/ws", get(events::websocket))
        .route("/v1/devices", get(devices::list))
        .route("/v1/devices/{id}", get(devices::show))
        .route("/v1/jobs", get(jobs::list).post(jobs::submit))
        .route("/v1/jobs/{id}", get(jobs::show).delete(jobs::cancel))
        .route("/v1/schedules", get(schedules::list).post(schedules::create))
        .route("/v1/schedules/{id}", get(schedules::show).delete(schedules::remove))
        .route("/v1/schedules/{id}/pause", post(schedules::pause))
        .route("/v1/schedules/{id}/resume", post(schedules::resume))
        .fallback(error::not_found)
        .with_state(api)
}

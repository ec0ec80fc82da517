//! The HTTP listener: the agent WebSocket at `/v1/ws` and a health check at `/v1/health`. The
//! REST API, event streams, metrics and dashboard join this router with later issues.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router as HttpRouter;
use axum::extract::{ConnectInfo, State, WebSocketUpgrade};
use axum::response::{IntoResponse, Json};
use axum::routing::get;
use orb_proto::WS_PATH;

use crate::session::{self, Shared};
use orb_io::ws::server as ws;

/// Builds the axum application.
pub(crate) fn app(shared: Arc<Shared>) -> HttpRouter {
    HttpRouter::new().route(WS_PATH, get(upgrade)).route("/v1/health", get(health)).with_state(shared)
}

async fn upgrade(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(addr): ConnectInfo<SocketAddr>,
    headers: axum::http::HeaderMap,
    upgrade: WebSocketUpgrade,
) -> impl IntoResponse {
    let max = shared.router.limits().max_frame;
    let user_agent = headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(256).collect());
    let peer = session::Peer { addr, transport: "ws", user_agent };
    upgrade.max_message_size(max).max_frame_size(max).on_upgrade(move |socket| async move {
        let (source, sink) = ws::split(socket, max);
        let tracker = shared.tracker.clone();
        tracker.spawn(session::serve(shared, source, sink, peer));
    })
}

async fn health(State(shared): State<Arc<Shared>>) -> Json<serde_json::Value> {
    let (agents, operators) = shared.router.counts();
    Json(serde_json::json!({"status": "ok", "agents": agents, "operators": operators}))
}

/// Serves HTTP until shutdown.
pub(crate) async fn run(listener: tokio::net::TcpListener, shared: Arc<Shared>) {
    let shutdown = shared.stop_accepting.clone();
    let app = app(shared).into_make_service_with_connect_info::<SocketAddr>();
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(shutdown.cancelled_owned()).await {
        tracing::error!(error = %e, "http listener failed");
    }
}

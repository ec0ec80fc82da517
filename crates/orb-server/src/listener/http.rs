//! The HTTP port: the routes of `crate::api` (the REST API, health, the OpenAPI document) and the
//! agent WebSocket at `/v1/ws`, whose handler is here. Its own accept loop admits every
//! connection under the same connection limits as the TCP port (a connection over them gets
//! `503` and is closed) and serves it with hyper, whose header timeout (the handshake timeout)
//! closes connections that never finish a request, idle keep-alive ones included. An upgraded
//! WebSocket keeps the connection's place in the limits until its session ends. The dashboard's
//! pages (`crate::dashboard`) share the port, outside the API's document.
//! With `[tls]` every connection goes through the TLS handshake first (`super::tls`): the port
//! serves `https://` and `wss://` only, and a client certificate reaches the WebSocket session it
//! becomes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router as HttpRouter;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::{Extension, State, WebSocketUpgrade};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use orb_proto::ErrorBody;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tower::ServiceExt;

use super::tls::{self, Accepted};
use crate::api::Api;
use crate::api::openapi::refusals;
use crate::auth::{ClientCertificate, PeerCredentials};
use crate::router::admission::ConnectionGuard;
use crate::session::{self, Shared};

/// The admitted connection a request came in on, handed to the WebSocket session it becomes.
#[derive(Clone)]
pub(crate) struct Admitted {
    pub(crate) peer: SocketAddr,
    guard: Arc<ConnectionGuard>,
    /// Over TLS: the verified client certificate, if one was presented.
    tls: Option<Option<ClientCertificate>>,
}

/// The agent WebSocket (`orb_proto::WS_PATH`): the wire protocol over WebSocket binary
/// messages. No bearer token: the client authenticates in its first frame (`hello`).
#[utoipa::path(
    get,
    path = "/v1/ws",
    operation_id = "agent_ws",
    tag = "agents",
    responses(
        (status = 101, description = "A WebSocket upgrade request (`Connection: upgrade`, `Upgrade: websocket`, \
                                      `Sec-WebSocket-Version: 13`, `Sec-WebSocket-Key`) becomes a session of the \
                                      wire protocol (docs/protocol.md): binary messages, one frame each, `hello` \
                                      first"),
        AgentSocketRefusals,
    )
)]
pub(crate) async fn upgrade(
    State(api): State<Arc<Api>>,
    Extension(admitted): Extension<Admitted>,
    headers: axum::http::HeaderMap,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(r) => return crate::api::ApiError::from(r).into_response(),
    };
    let shared = Arc::clone(&api.shared);
    let max = shared.broker.limits().max_frame;
    let user_agent = headers
        .get(axum::http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(|s| s.chars().take(256).collect());
    let (transport, client_cert) = match admitted.tls {
        Some(cert) => ("wss", cert),
        None => ("ws", None),
    };
    let credentials = PeerCredentials { client_cert };
    let peer = session::Peer { addr: admitted.peer, transport, user_agent, credentials };
    upgrade
        .max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| async move {
            let (source, sink) = orb_io::ws::server::split(socket, max);
            let tracker = shared.broker.tracker().clone();
            tracker.spawn(session::serve(shared, source, sink, peer, Ok(admitted.guard)));
        })
        .into_response()
}

refusals!(
    /// Refusals of the agent WebSocket's upgrade: `bad_request` for a request that is no
    /// WebSocket upgrade (refusals of the session itself are frames, docs/protocol.md).
    AgentSocketRefusals, false: BadRequest
);

/// Serves HTTP until the listeners stop.
pub(crate) async fn run(listener: TcpListener, shared: Arc<Shared>) {
    // The dashboard's HTML pages are no API: they stay out of the OpenAPI document.
    let app: HttpRouter = crate::api::routes(Arc::clone(&shared))
        .merge(crate::dashboard::routes(Arc::clone(&shared)))
        .layer(super::cors::layer(Arc::clone(&shared.cors)));
    super::accept_loop(listener, &shared, "http", |stream, peer, admitted| {
        let broker = &shared.broker;
        let limits = broker.limits();
        if let Some(tls) = shared.tls.clone() {
            let (app, shared) = (app.clone(), Arc::clone(&shared));
            broker.tracker().spawn(async move {
                match tls::accept(&tls, stream, peer, limits.handshake_timeout).await {
                    Accepted::Tls(stream, cert) => match admitted {
                        Ok(guard) => {
                            let admitted = Admitted { peer, guard: Arc::new(guard), tls: Some(cert) };
                            serve(*stream, admitted, app, shared, limits.handshake_timeout).await;
                        }
                        Err(e) => refuse(*stream, e, limits.close_linger).await,
                    },
                    Accepted::Plain { stream, http } => {
                        tracing::debug!(peer.addr = %peer, http, "plain client on the HTTPS port");
                        tls::refuse_plain(stream, http, false, limits.close_linger).await;
                    }
                    Accepted::Gone => {}
                }
            });
            return;
        }
        match admitted {
            Ok(guard) => {
                let admitted = Admitted { peer, guard: Arc::new(guard), tls: None };
                let conn = serve(stream, admitted, app.clone(), Arc::clone(&shared), limits.handshake_timeout);
                broker.tracker().spawn(conn);
            }
            Err(e) => {
                broker.tracker().spawn(refuse(stream, e, limits.close_linger));
            }
        }
    })
    .await;
}

/// Serves one admitted connection (HTTP/1.1, with upgrades) until it closes, the header timeout
/// passes, or the listeners stop (then it finishes the request in progress).
async fn serve<S>(stream: S, admitted: Admitted, app: HttpRouter, shared: Arc<Shared>, header_timeout: Duration)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let peer = admitted.peer;
    let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(admitted.clone());
        app.clone().oneshot(req)
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(header_timeout);
    let conn = builder.serve_connection(TokioIo::new(stream), service).with_upgrades();
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = shared.stop_accepting.cancelled() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(peer.addr = %peer, error = %e, "http connection ended");
    }
}

/// Answers a connection over the limits with `503` and the error body, then closes it.
async fn refuse<S: AsyncWrite + Unpin>(mut stream: S, e: ErrorBody, linger: Duration) {
    let body = serde_json::json!({ "code": e.code, "message": e.message }).to_string();
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(linger, async {
        let _ = stream.write_all(response.as_bytes()).await;
        let _ = stream.shutdown().await;
    })
    .await;
}

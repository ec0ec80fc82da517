//! The wire session: the broker's adapter for one connection, from the first frame to the last.
//! `handshake` turns `hello` into `welcome` (or a refusal), `run` reads frames and acts on them
//! with backpressure (`pace` is the session's message rate), `commands` turns `cmd` frames into
//! broker calls and the broker's typed answers into frames. Only this adapter encodes frames; a
//! writer task drains the connection's bounded queue to the socket. Every session ends with a
//! typed [`CloseReason`], logged once.

mod commands;
mod handshake;
mod pace;
mod pubsub;
mod run;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use orb_io::queue::Limits as QueueLimits;
use orb_io::transport::{CloseCode, FrameSink, FrameSource, LinkStats, Stop, write_loop_counted};
use orb_proto::message::Bye;
use orb_proto::{Codec, Envelope, ErrorBody, ErrorCode, Kind};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::auth::Authenticator;
use crate::broker::Broker;
use crate::close::{CloseReason, Closer};
use crate::router::admission::ConnectionGuard;
use crate::router::delivery::Outbox;

/// Frames admitted for a session's answers beyond its open requests: pongs and errors the
/// reader writes (it reads one frame at a time, and none while its queue is full) and pings.
const ANSWER_SLACK: usize = 64;

/// What every session shares: the broker, authentication, and the listeners' stop.
pub(crate) struct Shared {
    pub broker: Broker,
    pub auth: Arc<dyn Authenticator>,
    /// TLS on both listeners (`[tls]`), reloadable.
    pub tls: Option<Arc<crate::listener::tls::Tls>>,
    /// Cancelled first on a graceful stop: listeners stop accepting, sessions stay.
    pub stop_accepting: CancellationToken,
    /// The dashboard's sign-ins (session cookies).
    pub logins: crate::dashboard::Logins,
    /// `[http] cors_origins`, replaced on reload.
    pub cors: Arc<crate::listener::cors::CorsOrigins>,
}

/// Where a connection comes from.
pub(crate) struct Peer {
    /// Remote address.
    pub addr: SocketAddr,
    /// `tcp`, `tls`, `ws` or `wss`.
    pub transport: &'static str,
    /// The WebSocket handshake's `User-Agent` header.
    pub user_agent: Option<String>,
    /// What the transport established: a verified client certificate.
    pub credentials: crate::auth::PeerCredentials,
}

/// Serves one accepted connection until it closes. `admitted` is the listener's admission: a
/// connection over the limits is told `too_many_connections` and closed.
pub(crate) async fn serve<R: FrameSource, W: FrameSink>(
    shared: Arc<Shared>,
    mut source: R,
    sink: W,
    peer: Peer,
    admitted: Result<Arc<ConnectionGuard>, ErrorBody>,
) {
    let broker = shared.broker.clone();
    let conn = broker.sessions().next_conn_id();
    let (addr, transport) = (peer.addr, peer.transport);
    // A debug span: at the default level it is never created, which saves a few hundred bytes per
    // connection; the close log below carries the same fields.
    let span = tracing::debug_span!("session", conn, peer.addr = %addr, transport, agent.id = tracing::field::Empty);
    async move {
        let limits = broker.limits();
        // Answers to the session's own commands may exceed the limits by as many as it may have
        // open, plus room for the pongs and errors the reader writes and the server's pings.
        let queue = QueueLimits::new(limits.outbound_queue, limits.outbound_queue_bytes)
            .with_answers(limits.max_inflight_requests.saturating_add(ANSWER_SLACK));
        let (tx, rx) = orb_io::queue::bounded(queue);
        let stop = orb_io::signal::Signal::new();
        let stopped = stop.clone();
        // However this task ends (a panic included), the writer is told to stop, so the socket
        // and the queue are released.
        let _stop_on_drop = StopOnDrop(stop.clone());
        let stats = Arc::new(LinkStats::default());
        let linger_of = broker.clone();
        let writer = write_loop_counted(
            sink,
            rx,
            async move {
                stopped.raised().await;
                Stop { code: stopped.code(), linger: linger_of.close_linger() }
            },
            Some(Arc::clone(&stats)),
        );
        let writer = broker.tracker().spawn(writer.instrument(tracing::Span::current()));
        // JSON until the handshake chose the session's codec.
        let outbox = Outbox { conn, tx, closer: Closer::default(), codec: Codec::Json, max_frame: limits.max_frame };

        let mut name = None;
        let (reason, last) = match admitted {
            Err(e) => (CloseReason::ConnectionLimit, Some((Kind::Error, error_frame(Codec::Json, e)))),
            // Boxed: the handshake runs once, and inline its state (authentication, registration,
            // store writes) would enlarge every connection's task for its whole life.
            Ok(_guard) => match Box::pin(handshake::handshake(&shared, &mut source, &outbox, peer, stats)).await {
                Ok(mut session) => {
                    let live = broker.metrics().connected(transport, session.requester.identity.role);
                    let reason = session.run(&mut source).await;
                    drop(live);
                    session.ended(reason);
                    name = Some(session.name().to_owned());
                    let last = match session.take_last() {
                        Some(error) => Some((Kind::Error, error)),
                        None => goodbye(reason, session.codec()).map(|bye| (Kind::Bye, bye)),
                    };
                    (reason, last)
                }
                Err((reason, last)) => (reason, last),
            },
        };
        broker.stats().record_close(reason);
        if let Some((kind, f)) = last {
            broker.metrics().sent(kind, f.len());
            outbox.tx.send_last(f);
        }
        stop.raise_with(close_code(reason));
        let _ = writer.await;
        let id = name.as_deref().unwrap_or("-");
        match reason {
            // Refused credentials are logged per address and episode by the failed-auth
            // limiter (`router::failed_auth`), not once per attempt.
            CloseReason::PeerClosed
            | CloseReason::ServerShutdown
            | CloseReason::AuthFailed
            | CloseReason::RateLimited => {
                tracing::debug!(conn, peer.addr = %addr, transport, agent.id = id, reason = %reason, "session closed")
            }
            _ => tracing::info!(conn, peer.addr = %addr, transport, agent.id = id, reason = %reason, "session closed"),
        }
    }
    .instrument(span)
    .await;
}

/// Raises the writer's stop signal when dropped (a no-op after the normal close raised it).
struct StopOnDrop(orb_io::signal::Signal);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        if !self.0.is_raised() {
            self.0.raise_with(CloseCode::InternalError);
        }
    }
}

/// The `bye` a session sends when it closes for `reason`, if any, in the session's codec.
fn goodbye(reason: CloseReason, codec: Codec) -> Option<Bytes> {
    let reconnect_after_ms = match reason {
        CloseReason::ServerShutdown => Some(1000),
        CloseReason::Replaced
        | CloseReason::SlowConsumer
        | CloseReason::HeartbeatTimeout
        | CloseReason::Revoked
        | CloseReason::Removed => None,
        _ => return None,
    };
    let bye = Bye { reason: reason.as_str().to_owned(), reconnect_after_ms };
    Some(codec.encode(&Envelope::new(Kind::Bye).with_json_body(&bye)))
}

/// An `error` frame (no `re`). Refusals before the welcome are JSON, like the handshake itself.
fn error_frame(codec: Codec, e: ErrorBody) -> Bytes {
    codec.encode(&Envelope::error(None, e.code, e.message))
}

/// The close reason of a handshake refused with `code` (documented in `docs/protocol.md`
/// section 8).
fn refusal_reason(code: &ErrorCode) -> CloseReason {
    match code {
        ErrorCode::AuthFailed
        | ErrorCode::IdTaken
        | ErrorCode::Revoked
        | ErrorCode::Forbidden
        | ErrorCode::IdMismatch => CloseReason::AuthFailed,
        ErrorCode::HandshakeTimeout => CloseReason::HandshakeTimeout,
        ErrorCode::RateLimited => CloseReason::RateLimited,
        ErrorCode::FrameTooLarge => CloseReason::FrameTooLarge,
        ErrorCode::StoreUnavailable | ErrorCode::Internal => CloseReason::ServerError,
        _ => CloseReason::ProtocolViolation,
    }
}

/// The WebSocket close code a session closing for `reason` sends (TCP has none).
fn close_code(reason: CloseReason) -> CloseCode {
    match reason {
        CloseReason::PeerClosed | CloseReason::Replaced | CloseReason::HeartbeatTimeout => CloseCode::Normal,
        CloseReason::ServerShutdown => CloseCode::GoingAway,
        CloseReason::ProtocolViolation => CloseCode::ProtocolError,
        CloseReason::FrameTooLarge => CloseCode::TooBig,
        CloseReason::ServerError => CloseCode::InternalError,
        CloseReason::HandshakeTimeout
        | CloseReason::AuthFailed
        | CloseReason::SlowConsumer
        | CloseReason::ConnectionLimit
        | CloseReason::RateLimited
        | CloseReason::Revoked
        | CloseReason::Removed => CloseCode::PolicyViolation,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_close_reason_has_a_websocket_code_and_refusals_map_to_reasons() {
        for r in CloseReason::ALL {
            let code = close_code(r).websocket();
            assert!((1000..=1011).contains(&code), "{r}: {code}");
        }
        assert_eq!(refusal_reason(&ErrorCode::IdTaken), CloseReason::AuthFailed);
        assert_eq!(refusal_reason(&ErrorCode::IdMismatch), CloseReason::AuthFailed);
        assert_eq!(refusal_reason(&ErrorCode::BadId), CloseReason::ProtocolViolation);
        assert_eq!(refusal_reason(&ErrorCode::RateLimited), CloseReason::RateLimited);
        assert_eq!(refusal_reason(&ErrorCode::StoreUnavailable), CloseReason::ServerError);
    }
}

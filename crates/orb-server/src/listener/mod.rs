//! Accept loops: [`tcp`] takes length-prefixed TCP connections, [`http`] serves the HTTP port
//! (the agent WebSocket at `/v1/ws`, health and readiness). Both admit every connection under the
//! same connection limits before anything else, and the WebSocket is adapted to the same frame
//! interface (`orb_io::ws::server`), so a session never knows which transport it runs on. With
//! `[tls]`, both take each connection through [`tls`] first.

pub mod cors;
pub mod http;
pub mod tcp;
pub(crate) mod tls;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

use crate::router::admission::ConnectionGuard;
use crate::session::Shared;

/// Accepts connections until the listeners stop, admitting each under the connection limits
/// before `serve` gets it (with its admission: a refused connection is still served, to be told
/// why). An accept that fails (out of file descriptors, say) backs off briefly instead of spinning.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    shared: &Shared,
    name: &'static str,
    mut serve: impl FnMut(TcpStream, SocketAddr, Result<ConnectionGuard, orb_proto::ErrorBody>),
) {
    loop {
        let accepted = tokio::select! {
            () = shared.stop_accepting.cancelled() => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => {
                let admitted = shared.broker.admission().admit(peer.ip(), &shared.broker.limits());
                serve(stream, peer, admitted);
            }
            Err(e) => {
                tracing::warn!(listener = name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    tracing::debug!(listener = name, "listener stopped");
}

//! The TCP accept loop: each connection becomes a framed source/sink pair handed to a session.

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;

use crate::session::{self, Shared};

/// Accepts until shutdown; each connection is served by its own session task.
pub(crate) async fn run(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let accepted = tokio::select! {
            () = shared.stop_accepting.cancelled() => break,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, peer)) => match orb_io::transport::tcp(stream, shared.router.limits().max_frame) {
                Ok((source, sink)) => {
                    let peer = session::Peer { addr: peer, transport: "tcp", user_agent: None };
                    shared.tracker.spawn(session::serve(Arc::clone(&shared), source, sink, peer));
                }
                Err(e) => {
                    tracing::debug!(peer.addr = %peer, error = %e, "could not set up connection")
                }
            },
            Err(e) => {
                // Out of file descriptors or similar: back off briefly instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    tracing::debug!("tcp listener stopped");
}

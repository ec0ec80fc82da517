//! The TCP accept loop: each connection is admitted (connection limits), framed, and served by
//! its own session task.

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::session::{self, Shared};

/// Accepts until the listeners stop.
pub(crate) async fn run(listener: TcpListener, shared: Arc<Shared>) {
    super::accept_loop(listener, &shared, "tcp", |stream, peer, admitted| {
        let broker = &shared.broker;
        match orb_io::transport::tcp(stream, broker.limits().max_frame) {
            Ok((source, sink)) => {
                let peer = session::Peer { addr: peer, transport: "tcp", user_agent: None };
                let admitted = admitted.map(Arc::new);
                broker.tracker().spawn(session::serve(Arc::clone(&shared), source, sink, peer, admitted));
            }
            Err(e) => tracing::debug!(peer.addr = %peer, error = %e, "could not set up connection"),
        }
    })
    .await;
}

//! The TCP accept loop: each connection is admitted (connection limits), framed, and served by
//! its own session task. With `[tls]` the connection goes through the TLS handshake first (on its
//! own task, within the handshake timeout) and is framed over the TLS stream; plain TCP keeps its
//! split socket.

use std::sync::Arc;

use tokio::net::TcpListener;

use super::tls::{self, Accepted};
use crate::auth::PeerCredentials;
use crate::session::{self, Shared};

/// Accepts until the listeners stop.
pub(crate) async fn run(listener: TcpListener, shared: Arc<Shared>) {
    super::accept_loop(listener, &shared, "tcp", |stream, peer, admitted| {
        let broker = &shared.broker;
        if let Some(tls) = shared.tls.clone() {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::debug!(peer.addr = %peer, error = %e, "could not set up connection");
                return;
            }
            let shared = Arc::clone(&shared);
            broker.tracker().spawn(async move {
                let limits = shared.broker.limits();
                match tls::accept(&tls, stream, peer, limits.handshake_timeout).await {
                    Accepted::Tls(stream, client_cert) => {
                        let (source, sink) = orb_io::transport::stream(*stream, limits.max_frame);
                        let credentials = PeerCredentials { client_cert };
                        let peer = session::Peer { addr: peer, transport: "tls", user_agent: None, credentials };
                        session::serve(shared, source, sink, peer, admitted.map(Arc::new)).await;
                    }
                    Accepted::Plain { stream, http } => {
                        tracing::debug!(peer.addr = %peer, http, "plain client on the TLS port");
                        tls::refuse_plain(stream, http, true, limits.close_linger).await;
                    }
                    Accepted::Gone => {}
                }
            });
            return;
        }
        match orb_io::transport::tcp(stream, broker.limits().max_frame) {
            Ok((source, sink)) => {
                let peer = session::Peer {
                    addr: peer,
                    transport: "tcp",
                    user_agent: None,
                    credentials: PeerCredentials::default(),
                };
                let admitted = admitted.map(Arc::new);
                broker.tracker().spawn(session::serve(Arc::clone(&shared), source, sink, peer, admitted));
            }
            Err(e) => tracing::debug!(peer.addr = %peer, error = %e, "could not set up connection"),
        }
    })
    .await;
}

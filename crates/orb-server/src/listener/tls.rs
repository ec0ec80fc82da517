//! TLS on both listeners (`[tls]`). The rustls configuration in force sits behind a lock as an
//! `Arc`; each connection takes the current one for its handshake, so a reload
//! ([`Tls::reload`]: certificate, key and client CA re-read) applies to new handshakes while
//! connections already up keep theirs. [`accept`] looks at the first byte before the handshake:
//! a plain client (an orb frame, or HTTP) on a TLS port is told to use TLS instead of failing a
//! handshake it cannot read. The handshake is bounded by the handshake timeout.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use orb_io::tls::rustls::ServerConfig as RustlsConfig;
use orb_io::tls::tokio_rustls::{TlsAcceptor, server::TlsStream};
use orb_io::tls::{TlsError, identity};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::auth::ClientCertificate;
use crate::config::TlsConfig;

/// The TLS configuration in force.
pub(crate) struct Tls {
    current: RwLock<Arc<RustlsConfig>>,
}

impl Tls {
    /// Reads the certificate, key and client CA.
    pub(crate) fn load(cfg: &TlsConfig) -> Result<Tls, TlsError> {
        Ok(Tls { current: RwLock::new(cfg.load()?) })
    }

    /// Reads them again; on success new handshakes use them, on failure nothing changes.
    pub(crate) fn reload(&self, cfg: &TlsConfig) -> Result<(), TlsError> {
        let fresh = cfg.load()?;
        *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
        Ok(())
    }

    fn acceptor(&self) -> TlsAcceptor {
        TlsAcceptor::from(Arc::clone(&self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner)))
    }
}

/// What came of a connection to a TLS port.
pub(crate) enum Accepted {
    /// The handshake succeeded; with the client's certificate when it presented one.
    Tls(Box<TlsStream<TcpStream>>, Option<ClientCertificate>),
    /// The peer spoke plain text: HTTP (a request) or, else, most likely orb frames.
    Plain { stream: TcpStream, http: bool },
    /// The peer left, was too slow, or its handshake failed (logged).
    Gone,
}

/// The first byte of a TLS record carrying a handshake (the ClientHello).
const TLS_HANDSHAKE: u8 = 0x16;

/// Takes a new connection through the TLS handshake within `timeout`.
pub(crate) async fn accept(tls: &Tls, stream: TcpStream, peer: SocketAddr, timeout: Duration) -> Accepted {
    let acceptor = tls.acceptor();
    let handshake = async move {
        let mut first = [0u8; 1];
        match stream.peek(&mut first).await {
            Ok(0) | Err(_) => return Accepted::Gone,
            Ok(_) => {}
        }
        if first[0] != TLS_HANDSHAKE {
            // HTTP starts with an upper-case method; an orb frame with its length's high byte (0).
            return Accepted::Plain { stream, http: first[0].is_ascii_uppercase() };
        }
        match acceptor.accept(stream).await {
            Ok(s) => {
                let cert = s
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| ClientCertificate { identity: identity::device_id(c).map_err(|e| e.to_string()) });
                Accepted::Tls(Box::new(s), cert)
            }
            Err(e) => {
                // A client refusing our certificate, or refused for its own: worth an operator's eye.
                tracing::info!(peer.addr = %peer, error = %e, "TLS handshake failed");
                Accepted::Gone
            }
        }
    };
    match tokio::time::timeout(timeout, handshake).await {
        Ok(a) => a,
        Err(_) => {
            tracing::debug!(peer.addr = %peer, timeout_ms = timeout.as_millis() as u64, "TLS handshake timed out");
            Accepted::Gone
        }
    }
}

/// Answers a plain client on a TLS port in its own language, within `linger`, and closes: an
/// HTTP client gets `400` with [`orb_io::sniff::TLS_PORT_ANSWER`]; an orb client an `error`
/// frame `tls_required` (what the TCP port's clients read instead of a welcome).
pub(crate) async fn refuse_plain(mut stream: TcpStream, http: bool, tcp_port: bool, linger: Duration) {
    let answer = if http {
        orb_io::sniff::bad_request(orb_io::sniff::TLS_PORT_ANSWER)
    } else {
        let hint = if tcp_port {
            "this port speaks TLS only; connect with tls://HOST:PORT"
        } else {
            "this port speaks TLS only; connect with wss://HOST:PORT/v1/ws or https://"
        };
        let frame = orb_proto::encode(&orb_proto::Envelope::error(None, orb_proto::ErrorCode::TlsRequired, hint));
        let len = u32::try_from(frame.len()).unwrap_or(u32::MAX).to_be_bytes();
        Bytes::from([&len[..], &frame[..]].concat())
    };
    let _ = tokio::time::timeout(linger, async {
        let _ = stream.write_all(&answer).await;
        let _ = stream.shutdown().await;
        // What the client sent is read before closing: closing with it unread would reset the
        // connection, and the client could lose the answer. Bounded by the linger and in size.
        let mut sink = [0u8; 4096];
        let mut left = 64 * 1024usize;
        while left > 0 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

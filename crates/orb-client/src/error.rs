//! Errors of the client library.

use orb_proto::{ErrorBody, ErrorCode};

/// Why a client operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The server could not be reached (refused, unreachable, DNS).
    #[error("cannot reach {url}: {reason}")]
    Unreachable {
        /// The URL tried.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The address answers in another protocol than the one asked for: a `tcp://` URL that
    /// reached orb's HTTP port, or a `ws://` URL that reached orb's TCP port. `hint` says which
    /// address to use instead.
    #[error("{url}: {hint}")]
    WrongPort {
        /// The URL tried.
        url: String,
        /// What the port is and what to use.
        hint: String,
    },
    /// TLS could not be set up: a CA, certificate or key file that cannot be used, or a
    /// handshake that failed (the server's certificate is not trusted, or the server refused
    /// this client's certificate). `reason` says which and what to do.
    #[error("TLS with {url} failed: {reason}")]
    Tls {
        /// The URL tried.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The server refused the hello (`auth_failed`, `bad_id`, `unsupported_version`, ...).
    #[error("server refused the connection: {0}")]
    Refused(ErrorBody),
    /// The server or the device answered with an error.
    #[error("{0}")]
    Remote(ErrorBody),
    /// No answer within the deadline.
    #[error("no answer within {0} ms")]
    Timeout(u128),
    /// The connection closed.
    #[error("connection closed: {0}")]
    Closed(String),
    /// The server sent something this client cannot understand, or the arguments given to send
    /// were not valid JSON.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The stable code behind this error, when there is one.
    pub fn code(&self) -> Option<&ErrorCode> {
        match self {
            ClientError::Refused(e) | ClientError::Remote(e) => Some(&e.code),
            _ => None,
        }
    }
}

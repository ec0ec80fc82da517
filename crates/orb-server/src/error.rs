//! Errors of the server library: starting (binding, data folder, configuration, store).

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A listener could not bind.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The data folder or a file in it could not be used.
    #[error("data folder {}: {source}", path.display())]
    DataDir {
        /// The path involved.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Another server holds the data folder.
    #[error("another orb server is using the data folder {} (its server.lock is held)", path.display())]
    DataDirLocked {
        /// The data folder.
        path: PathBuf,
    },
    /// The configuration is invalid (every problem listed).
    #[error("invalid configuration: {}", .0.join("; "))]
    Config(Vec<String>),
    /// The TLS certificate, key or client CA could not be used (`[tls]`).
    #[error("tls: {0}")]
    Tls(#[from] orb_io::tls::TlsError),
    /// The store could not be opened, migrated or read.
    #[error(transparent)]
    Store(#[from] orb_store::StoreError),
}

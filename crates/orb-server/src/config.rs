//! Server configuration: listen addresses, data folder, credentials, named groups and limits.
//! Built by the binary (flags today; the TOML file with the lifecycle issue) and passed to
//! [`crate::ServerBuilder`]; sub-structs are handed down to the modules that use them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use orb_proto::{DEFAULT_HTTP_PORT, DEFAULT_MAX_FRAME, DEFAULT_TCP_PORT};

/// A secret string whose `Debug` output is redacted.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself; use only where it must be compared or written.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Everything a server needs to start.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// TCP listener for agents and clients (default `127.0.0.1:7700`).
    pub listen: SocketAddr,
    /// HTTP listener: WebSocket at `/v1/ws`, health (default `127.0.0.1:7780`).
    pub http: SocketAddr,
    /// Data folder (default `./orb-data`): generated tokens live here.
    pub data_dir: PathBuf,
    /// Operator token; generated into `DATA/admin.token` when absent.
    pub admin_token: Option<Secret>,
    /// Agent (enrollment) token; generated into `DATA/agent.token` when absent.
    pub agent_token: Option<Secret>,
    /// Named selectors for `group:NAME`, as selector source text.
    pub groups: BTreeMap<String, String>,
    /// Limits and timers.
    pub limits: Limits,
    /// Where the registry and job history are kept, and for how long.
    pub store: StoreConfig,
}

/// The store: which database, and the job history's retention.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// `sqlite:PATH` or `postgres://...`; `None`: SQLite at `DATA/orb.db`.
    pub url: Option<String>,
    /// Jobs older than this are deleted (with their results).
    pub job_retention: Duration,
    /// At most this many jobs are kept (the oldest go first).
    pub job_retention_count: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig { url: None, job_retention: Duration::from_secs(30 * 24 * 3600), job_retention_count: 100_000 }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_TCP_PORT)),
            http: SocketAddr::from(([127, 0, 0, 1], DEFAULT_HTTP_PORT)),
            data_dir: PathBuf::from("orb-data"),
            admin_token: None,
            agent_token: None,
            groups: BTreeMap::new(),
            limits: Limits::default(),
            store: StoreConfig::default(),
        }
    }
}

impl ServerConfig {
    /// A configuration for tests: both listeners on `127.0.0.1:0`, data in `data_dir`, fixed tokens.
    pub fn for_tests(data_dir: PathBuf) -> ServerConfig {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir,
            admin_token: Some(Secret::new("test-admin-token-0123456789")),
            agent_token: Some(Secret::new("test-agent-token-0123456789")),
            groups: BTreeMap::new(),
            limits: Limits::default(),
            store: StoreConfig::default(),
        }
    }
}

/// Limits and timers, with the defaults documented in `docs/operations.md`.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest frame accepted, in bytes (checked before allocating).
    pub max_frame: usize,
    /// Frames queued for one connection before it is closed as a slow consumer.
    pub outbound_queue: usize,
    /// Time allowed for the first frame (`hello`).
    pub handshake_timeout: Duration,
    /// Interval announced to clients for their pings.
    pub heartbeat: Duration,
    /// Silence after which the server closes a connection.
    pub heartbeat_timeout: Duration,
    /// Deadline of a job when the command carries none.
    pub default_job_deadline: Duration,
    /// Deadline of a plain request when the command carries none.
    pub default_request_deadline: Duration,
    /// Longest deadline a command may ask for.
    pub max_deadline: Duration,
    /// Time a closing connection gets to write what is queued and its goodbye.
    pub close_linger: Duration,
    /// Connections in total (0: unlimited).
    pub max_connections: usize,
    /// Connections per source IP address (0: unlimited).
    pub max_connections_per_ip: usize,
    /// Commands in flight per agent session: server-handler calls (0: unlimited). Operator
    /// sessions are not limited.
    pub max_inflight_per_agent: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame: DEFAULT_MAX_FRAME,
            outbound_queue: 1024,
            handshake_timeout: Duration::from_secs(10),
            heartbeat: Duration::from_secs(15),
            heartbeat_timeout: Duration::from_secs(45),
            default_job_deadline: Duration::from_secs(10),
            default_request_deadline: Duration::from_secs(30),
            max_deadline: Duration::from_secs(24 * 3600),
            close_linger: Duration::from_secs(1),
            max_connections: 0,
            max_connections_per_ip: 0,
            max_inflight_per_agent: 64,
        }
    }
}

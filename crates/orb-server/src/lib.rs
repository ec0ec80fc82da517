//! The orb broker as a library. Data flows:
//!
//! ```text
//! socket -> listener::{tcp, ws} -> session (handshake, read loop) -> router / jobs / handler
//!        -> target sessions' bounded outbound queues -> writer task -> socket
//! reply  -> session -> router -> job inbox -> job task -> requester's queue
//! ```
//!
//! [`ServerBuilder`] configures a server, registers server-side command handlers and starts it;
//! [`Server`] is the running instance. Module map: `config` (settings), `auth` (hello
//! credentials), `tokens` (data-folder tokens), `listener` + `http` (accept), `session` (one
//! connection), `router` (registry, correlations, delivery), `jobs` (fan-out and results),
//! `builtin` (the `$orb.` queries; application handlers use `orb_client::handler`), `close` (close reasons).
//!
//! ```no_run
//! # async fn demo() -> Result<(), orb_server::ServerError> {
//! use orb_server::{Context, ServerBuilder, ServerConfig};
//! let server = ServerBuilder::new(ServerConfig::default())
//!     .handler("time.now", |_ctx: Context| async move {
//!         Ok(serde_json::json!({"unix": 1_700_000_000}))
//!     })
//!     .start()
//!     .await?;
//! println!("agents connect to tcp://{}", server.tcp_addr());
//! server.shutdown().await;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]

pub mod auth;
pub mod builtin;
pub mod close;
pub mod config;
mod error;
mod http;
pub mod jobs;
mod listener;
pub mod router;
mod session;
pub mod tokens;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use auth::{Authenticator, Principal, TokenAuth};
pub use close::CloseReason;
pub use config::{Limits, Secret, ServerConfig};
pub use error::ServerError;
pub use orb_client::handler::{Context, Handler, HandlerResult, Handlers};

use crate::router::Router;
use crate::session::Shared;

/// Configures and starts a [`Server`].
pub struct ServerBuilder {
    config: ServerConfig,
    handlers: Handlers,
    auth: Option<Arc<dyn Authenticator>>,
}

impl ServerBuilder {
    /// A builder for `config`.
    pub fn new(config: ServerConfig) -> ServerBuilder {
        ServerBuilder {
            config,
            handlers: Handlers::default(),
            auth: None,
        }
    }

    /// Registers a handler for commands devices (or operators) send to the server itself.
    /// Names starting with `$orb.` are reserved and never reach application handlers.
    pub fn handler(mut self, name: impl Into<String>, h: impl Handler) -> ServerBuilder {
        self.handlers = self.handlers.on(name, h);
        self
    }

    /// Replaces the token authenticator (device credentials, mTLS identities).
    pub fn authenticator(mut self, auth: Arc<dyn Authenticator>) -> ServerBuilder {
        self.auth = Some(auth);
        self
    }

    /// Validates the configuration, loads or generates tokens, binds both listeners and starts
    /// serving.
    ///
    /// # Errors
    /// [`ServerError`] when the configuration is invalid, the data folder is unusable or an
    /// address cannot be bound.
    pub async fn start(self) -> Result<Server, ServerError> {
        let cfg = self.config;
        let groups = parse_groups(&cfg.groups)?;
        let admin = tokens::load_or_generate(
            &cfg.data_dir,
            tokens::ADMIN_TOKEN_FILE,
            cfg.admin_token.as_ref(),
        )?;
        let agent = tokens::load_or_generate(
            &cfg.data_dir,
            tokens::AGENT_TOKEN_FILE,
            cfg.agent_token.as_ref(),
        )?;
        let auth = self
            .auth
            .unwrap_or_else(|| Arc::new(TokenAuth::new(&admin, &agent)));

        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| ServerError::Bind { addr, source })
        };
        let tcp = bind(cfg.listen).await?;
        let http = bind(cfg.http).await?;
        let local = |l: &TcpListener, addr| {
            l.local_addr()
                .map_err(|source| ServerError::Bind { addr, source })
        };
        let tcp_addr = local(&tcp, cfg.listen)?;
        let http_addr = local(&http, cfg.http)?;

        let shutdown = CancellationToken::new();
        let tracker = TaskTracker::new();
        let router = Arc::new(Router::new(cfg.limits.clone(), groups));
        let shared = Arc::new(Shared {
            router: Arc::clone(&router),
            auth,
            handlers: self.handlers,
            shutdown: shutdown.clone(),
            tracker: tracker.clone(),
        });
        tracker.spawn(listener::tcp::run(tcp, Arc::clone(&shared)));
        tracker.spawn(http::run(http, Arc::clone(&shared)));
        tracker.spawn(expire_requests(Arc::clone(&router), shutdown.clone()));
        tracing::info!(%tcp_addr, %http_addr, data = %cfg.data_dir.display(), "orb server listening");
        Ok(Server {
            tcp_addr,
            http_addr,
            router,
            shutdown,
            tracker,
            admin_token: admin,
            agent_token: agent,
        })
    }
}

fn parse_groups(
    groups: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, orb_proto::Selector>, ServerError> {
    let mut out = BTreeMap::new();
    let mut problems = Vec::new();
    for (name, text) in groups {
        if orb_proto::DeviceId::new(name).is_err() {
            problems.push(format!(
                "group name '{name}' must match [A-Za-z0-9][A-Za-z0-9_-]{{0,63}}"
            ));
        }
        match orb_proto::Selector::parse(text) {
            Ok(sel) => {
                out.insert(name.clone(), sel);
            }
            Err(e) => problems.push(format!("group '{name}': {e}")),
        }
    }
    for name in out.keys() {
        let probe = orb_proto::Selector::parse(&format!("group:{name}"));
        if let Ok(p) = probe
            && let Err(e) = p.expand_groups(&|n| out.get(n).cloned())
        {
            problems.push(format!("group '{name}': {e}"));
        }
    }
    if problems.is_empty() {
        Ok(out)
    } else {
        Err(ServerError::Config(problems))
    }
}

/// Answers `timeout` to plain requests whose deadline passed. Once a second is enough: the
/// client library enforces its own deadline precisely; this only frees the server's records.
async fn expire_requests(router: Arc<Router>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            now = tick.tick() => router.expire_requests(now),
        }
    }
}

/// A running server. Dropping it does not stop it; call [`Server::shutdown`].
pub struct Server {
    tcp_addr: SocketAddr,
    http_addr: SocketAddr,
    router: Arc<Router>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    admin_token: Secret,
    agent_token: Secret,
}

impl Server {
    /// Bound TCP address (useful with port 0).
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp_addr
    }

    /// Bound HTTP address; the WebSocket is at `ws://ADDR/v1/ws`.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// The operator token in force.
    pub fn admin_token(&self) -> &Secret {
        &self.admin_token
    }

    /// The agent token in force.
    pub fn agent_token(&self) -> &Secret {
        &self.agent_token
    }

    /// The router, for in-process producers and inspection.
    pub fn router(&self) -> &Arc<Router> {
        &self.router
    }

    /// A token cancelled when the server begins to stop.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Stops the server: listeners close, every session gets `bye` (`server_shutdown`, with a
    /// reconnect hint) and closes, then tasks get up to 10 s to finish. Idempotent.
    pub async fn shutdown(&self) {
        self.shutdown_with_grace(Duration::from_secs(10)).await;
    }

    /// [`Server::shutdown`] with an explicit grace period. Returns whether every task finished in time.
    pub async fn shutdown_with_grace(&self, grace: Duration) -> bool {
        self.shutdown.cancel();
        self.tracker.close();
        let graceful = tokio::time::timeout(grace, self.tracker.wait())
            .await
            .is_ok();
        if graceful {
            tracing::info!("server stopped gracefully");
        } else {
            tracing::warn!(
                grace_ms = grace.as_millis() as u64,
                "server stopped with tasks still running"
            );
        }
        graceful
    }

    /// Waits until the server has been told to stop (by [`Server::shutdown`] or the token).
    pub async fn stopped(&self) {
        self.shutdown.cancelled().await;
    }
}

//! The orb broker as a library. Data flows:
//!
//! ```text
//! socket -> listener::{tcp, http (/v1/ws)} -> session (handshake, read loop): the wire adapter
//!        -> broker (the one door: submit, request, call, services) -> jobs / router
//!        -> target sessions' bounded outbound queues -> writer task -> socket
//! reply  -> session -> broker -> correlation table -> job inbox -> job task -> job events
//!        -> the requester's adapter (the wire session encodes them into its queue)
//! ```
//!
//! [`ServerBuilder`] configures a server, registers server-side command handlers and starts it;
//! [`Server`] is the running instance and [`Server::broker`] its one door for in-process
//! adapters. Module map: `config` (settings), `node` (this server's node id), `identity` (who
//! asks), `auth` (hello credentials and device secrets), `tokens` (data-folder tokens),
//! `registry` (every known device, in memory in front of the `orb_store::Store`), `broker`
//! (the one door, its policy and typed services), `jobs` (fan-out, results, cancel), `router`
//! (sessions and delivery, correlations, admission, statistics), `session` (the wire adapter),
//! `listener` (accept loops: TCP, HTTP), `maintenance` (retention, sweeps), `admin` (messages
//! for the embedding process), `close` (close reasons), `metrics` (Prometheus metrics and
//! message rates).
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

pub mod admin;
mod api;
pub mod auth;
pub mod broker;
pub mod close;
pub mod config;
mod dashboard;
mod error;
pub mod identity;
pub mod jobs;
mod listener;
mod maintenance;
mod metrics;
pub mod node;
pub mod operators;
pub mod registry;
pub mod router;
pub mod scheduler;
mod session;
pub mod tokens;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use admin::{AdminMessage, AdminRequest};
pub use auth::{Authenticator, Principal, TokenAuth};
pub use broker::Broker;
pub use close::CloseReason;
pub use config::{Limits, Secret, ServerConfig, StoreConfig};
pub use error::ServerError;
pub use orb_io::handler::{Context, Handler, HandlerResult, Handlers};

use crate::node::NodeId;
use crate::registry::Registry;
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
        ServerBuilder { config, handlers: Handlers::default(), auth: None }
    }

    /// Registers a handler for commands devices (or operators) send to the server itself.
    /// Names starting with `$orb.` are reserved and never reach application handlers.
    pub fn handler(mut self, name: impl Into<String>, h: impl Handler) -> ServerBuilder {
        self.handlers = self.handlers.on(name, h);
        self
    }

    /// Replaces the token authenticator (device credentials, mTLS identities). Token reloads
    /// then no longer apply.
    pub fn authenticator(mut self, auth: Arc<dyn Authenticator>) -> ServerBuilder {
        self.auth = Some(auth);
        self
    }

    /// Validates the configuration, loads or generates tokens and the node id, takes the data
    /// folder's lock, binds both listeners, opens the store (whose own lock keeps a second
    /// server off the same database) and starts serving.
    ///
    /// # Errors
    /// [`ServerError`] when the configuration is invalid, the data folder or the database is
    /// unusable or in use, or an address cannot be bound.
    pub async fn start(self) -> Result<Server, ServerError> {
        let cfg = self.config;
        let groups = parse_groups(&cfg.groups)?;
        let acl = broker::Acl::compile(&cfg.acl, &groups).map_err(ServerError::Config)?;
        let fleet = broker::FleetRules::compile(&cfg.fleet, &groups).map_err(ServerError::Config)?;
        let (admin, agent) = load_tokens(&cfg)?;
        let store_url = match &cfg.store.url {
            Some(url) => orb_store::StoreUrl::parse(url).map_err(|e| ServerError::Config(vec![e.to_string()]))?,
            None => orb_store::StoreUrl::in_data_dir(&cfg.data_dir),
        };
        // Before anything touches the store: one server per data folder, and listeners bound, so
        // a second server started by mistake fails without ending the first one's jobs.
        let data_lock = lock_data_dir(&cfg.data_dir)?;
        let node = NodeId::load_or_generate(&cfg.data_dir, cfg.node_id.as_deref())?;
        let tcp = listen(cfg.listen)?;
        let http = listen(cfg.http)?;
        let tls = cfg.tls.as_ref().map(listener::tls::Tls::load).transpose()?.map(Arc::new);
        let local = |l: &TcpListener, addr| l.local_addr().map_err(|source| ServerError::Bind { addr, source });
        let tcp_addr = local(&tcp, cfg.listen)?;
        let http_addr = local(&http, cfg.http)?;

        let store = orb_store::open(&store_url).await?;
        let interrupted =
            store.recover_jobs(node.as_str(), chrono::Utc::now(), "the server restarted before this target answered");
        match interrupted.await? {
            0 => {}
            n => tracing::warn!(jobs = n, "jobs left running by the previous server process were ended"),
        }
        let registry = Arc::new(Registry::load(Arc::clone(&store)).await?);
        let retained = store.retained().await?;
        let operators = Arc::new(operators::OperatorTokens::load(Arc::clone(&store)).await?);
        let (auth, token_auth): (Arc<dyn Authenticator>, _) = match self.auth {
            Some(custom) => (custom, None),
            None => {
                let tokens = Arc::new(
                    TokenAuth::new(&admin, &agent, Arc::clone(&registry)).with_operators(Arc::clone(&operators)),
                );
                tokens.set_token_devices(cfg.acl.token_devices);
                (Arc::clone(&tokens) as Arc<dyn Authenticator>, Some(tokens))
            }
        };

        let shutdown = CancellationToken::new();
        let stop_accepting = CancellationToken::new();
        let tracker = TaskTracker::new();
        let (admin_tx, admin_rx) = tokio::sync::mpsc::channel(16);
        let metrics = Arc::new(metrics::Metrics::new(cfg.http_options.metrics_public));
        let cors = Arc::new(listener::cors::CorsOrigins::new(&cfg.http_options.cors_origins));
        let broker = Broker::new(broker::Parts {
            node: node.clone(),
            registry,
            limits: cfg.limits.clone(),
            acl,
            retained,
            groups,
            handlers: self.handlers,
            admin_tx,
            tracker: tracker.clone(),
            shutdown: shutdown.clone(),
            metrics,
            fleet,
        });
        broker.policy().set_tokens(operators);
        let shared = Arc::new(Shared {
            broker: broker.clone(),
            auth,
            tls: tls.clone(),
            stop_accepting: stop_accepting.clone(),
            logins: dashboard::Logins::default(),
            cors: Arc::clone(&cors),
        });
        tracker.spawn(listener::tcp::run(tcp, Arc::clone(&shared)));
        tracker.spawn(listener::http::run(http, Arc::clone(&shared)));
        let store_config = Arc::new(RwLock::new(cfg.store.clone()));
        tracker.spawn(maintenance::run(broker.clone(), Arc::clone(&store_config), shutdown.clone()));
        tracker.spawn(scheduler::run(broker.clone(), cfg.restart_grace, shutdown.clone()));
        tracing::info!(
            %tcp_addr,
            %http_addr,
            tls = tls.is_some(),
            node = %node,
            data = %cfg.data_dir.display(),
            store = %store_url.redacted(),
            devices = broker.registry().counts().0,
            "orb server listening"
        );
        Ok(Server {
            tcp_addr,
            http_addr,
            broker,
            shutdown,
            stop_accepting,
            tracker,
            admin_token: admin,
            agent_token: agent,
            token_auth,
            tls,
            config: cfg,
            admin_rx: Some(admin_rx),
            store,
            store_config,
            cors,
            data_lock: std::sync::Mutex::new(Some(data_lock)),
        })
    }
}

/// Accept queue length requested from the kernel (capped by `net.core.somaxconn`): a fleet
/// reconnecting at once after a restart must not have its SYNs dropped into retransmit delays.
const LISTEN_BACKLOG: u32 = 4096;

/// Binds a listener with address reuse (a restart must not wait for old connections'
/// TIME_WAIT) and a deep accept queue.
fn listen(addr: SocketAddr) -> Result<TcpListener, ServerError> {
    let err = |source| ServerError::Bind { addr, source };
    let socket =
        if addr.is_ipv4() { tokio::net::TcpSocket::new_v4() } else { tokio::net::TcpSocket::new_v6() }.map_err(err)?;
    socket.set_reuseaddr(true).map_err(err)?;
    socket.bind(addr).map_err(err)?;
    socket.listen(LISTEN_BACKLOG).map_err(err)
}

/// Name of the lock file in the data folder, held while a server runs.
const DATA_LOCK_FILE: &str = "server.lock";

/// Takes the data folder's exclusive lock (created with the folder if missing).
fn lock_data_dir(dir: &std::path::Path) -> Result<std::fs::File, ServerError> {
    let path = dir.join(DATA_LOCK_FILE);
    let io = |source| ServerError::DataDir { path: path.clone(), source };
    std::fs::create_dir_all(dir).map_err(io)?;
    let file = std::fs::File::options().create(true).truncate(false).write(true).open(&path).map_err(io)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(ServerError::DataDirLocked { path: dir.to_path_buf() }),
        Err(std::fs::TryLockError::Error(e)) => Err(io(e)),
    }
}

fn load_tokens(cfg: &ServerConfig) -> Result<(Secret, Secret), ServerError> {
    let admin = tokens::load_or_generate(&cfg.data_dir, tokens::ADMIN_TOKEN_FILE, cfg.admin_token.as_ref())?;
    let agent = tokens::load_or_generate(&cfg.data_dir, tokens::AGENT_TOKEN_FILE, cfg.agent_token.as_ref())?;
    Ok((admin, agent))
}

fn parse_groups(groups: &BTreeMap<String, String>) -> Result<BTreeMap<String, orb_proto::Selector>, ServerError> {
    config::parse_groups(groups).map_err(ServerError::Config)
}

/// What a configuration reload did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reloaded {
    /// Settings that differ from those the server started with but only take effect after a
    /// restart (`server.listen`, `store.url`, ...), by their configuration key.
    pub restart_required: Vec<&'static str>,
}

/// A running server. Dropping it does not stop it; call [`Server::shutdown`] or [`Server::drain`].
pub struct Server {
    tcp_addr: SocketAddr,
    http_addr: SocketAddr,
    broker: Broker,
    shutdown: CancellationToken,
    stop_accepting: CancellationToken,
    tracker: TaskTracker,
    admin_token: Secret,
    agent_token: Secret,
    token_auth: Option<Arc<TokenAuth>>,
    /// TLS on both listeners, when configured: reloaded with the configuration.
    tls: Option<Arc<listener::tls::Tls>>,
    /// The configuration the server started with (a reload compares against it).
    config: ServerConfig,
    admin_rx: Option<tokio::sync::mpsc::Receiver<AdminRequest>>,
    store: Arc<dyn orb_store::Store>,
    /// Retention, replaced by a reload.
    store_config: Arc<RwLock<StoreConfig>>,
    /// `[http] cors_origins`, replaced by a reload.
    cors: Arc<listener::cors::CorsOrigins>,
    /// The data folder's lock, released when the server has stopped.
    data_lock: std::sync::Mutex<Option<std::fs::File>>,
}

impl Server {
    /// Bound TCP address (useful with port 0).
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp_addr
    }

    /// Bound HTTP address; the WebSocket is at `ws://ADDR/v1/ws` (`wss://` with TLS).
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Whether both listeners speak TLS only (`[tls]`).
    pub fn tls_enabled(&self) -> bool {
        self.tls.is_some()
    }

    /// The operator token in force at start.
    pub fn admin_token(&self) -> &Secret {
        &self.admin_token
    }

    /// The agent token in force at start.
    pub fn agent_token(&self) -> &Secret {
        &self.agent_token
    }

    /// The store (registry and job history).
    pub fn store(&self) -> &Arc<dyn orb_store::Store> {
        &self.store
    }

    /// The broker: the one door for in-process adapters, and inspection.
    pub fn broker(&self) -> &Broker {
        &self.broker
    }

    /// Applies the job retention now (it also runs every minute in the background).
    pub async fn enforce_retention(&self) {
        let cfg = self.store_config.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        maintenance::prune(&self.broker, &cfg).await;
    }

    /// A token cancelled when the server closes its sessions.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Admin messages from `orb signal` (`QUIT`, `RELOAD`, `LOG_ROTATE`) for the embedding
    /// process to act on; `None` after the first call. Until taken, such messages wait and
    /// `orb signal` times out.
    pub fn take_admin_requests(&mut self) -> Option<tokio::sync::mpsc::Receiver<AdminRequest>> {
        self.admin_rx.take()
    }

    /// Applies a new configuration while connections stay up: tokens, groups, limits (queue
    /// sizes and the frame limit apply to new connections), access rules, settings pushed to
    /// agents (`[fleet]`: sent at once to the connected ones whose settings changed), retention,
    /// `[http] metrics_public`, and the TLS certificate, key and client CA (re-read from their
    /// files; new handshakes use them, connections up keep theirs). Settings that need a restart
    /// (turning TLS on or off among them) are listed in the answer and logged; they stay as they
    /// were.
    ///
    /// # Errors
    /// [`ServerError::Config`] when a group does not parse, [`ServerError::Tls`] when a TLS file
    /// cannot be used; nothing changes then.
    pub fn reload(&self, new: ServerConfig) -> Result<Reloaded, ServerError> {
        let groups = parse_groups(&new.groups)?;
        let acl = broker::Acl::compile(&new.acl, &groups).map_err(ServerError::Config)?;
        let fleet = broker::FleetRules::compile(&new.fleet, &groups).map_err(ServerError::Config)?;
        let cfg = ServerConfig { data_dir: self.config.data_dir.clone(), ..new.clone() };
        let (admin, agent) = load_tokens(&cfg)?;
        // First of what changes, since it can still fail: the rest is applied only after it.
        if let (Some(tls), Some(files)) = (&self.tls, &new.tls) {
            tls.reload(files)?;
            tracing::info!(cert = %files.cert.display(), "TLS certificate, key and client CA reloaded");
        }
        if let Some(auth) = &self.token_auth {
            auth.set_tokens(&admin, &agent);
            auth.set_token_devices(new.acl.token_devices);
        }
        self.broker.set_groups(groups);
        self.broker.policy().set_acl(acl);
        // After the groups: the rules were compiled with the new ones.
        self.broker.set_fleet(fleet);
        self.broker.set_limits(new.limits.clone());
        self.broker.metrics().set_public(new.http_options.metrics_public);
        self.cors.set(&new.http_options.cors_origins);
        *self.store_config.write().unwrap_or_else(std::sync::PoisonError::into_inner) = new.store.clone();
        let restart_required = self.config.restart_required(&new);
        for key in &restart_required {
            tracing::warn!(key, "configuration changed a setting that needs a restart; it stays as it was until then");
        }
        // The ACL, tokens and limits may have changed: the audit log says when (an `orb signal
        // RELOAD` is recorded beside it with who sent it).
        let detail = serde_json::json!({ "restart_required": restart_required });
        self.broker.audit_host(broker::Audited::ConfigReload, "reload", "config", detail);
        Ok(Reloaded { restart_required })
    }

    /// Stops the server with the configured grace period (`shutdown.grace`, default 10 s; see
    /// [`Server::drain`]).
    pub async fn shutdown(&self) -> bool {
        self.drain(self.config.grace).await
    }

    /// Stops gracefully: listeners close and new work is refused; jobs in flight get up to
    /// `grace` to finish, then the rest end (pending targets `timeout`) and open requests are
    /// answered `server_shutdown`; every requester gets its jobs' whole event streams; then every
    /// session gets `bye` (`server_shutdown`, reconnect hint) after what is queued for it and
    /// closes, and remaining tasks get what is left of the grace (at least one second each
    /// step). Idempotent. Returns whether everything finished in time.
    pub async fn drain(&self, grace: Duration) -> bool {
        let deadline = crate::jobs::instant_after(tokio::time::Instant::now(), grace);
        let rest = || deadline.saturating_duration_since(tokio::time::Instant::now()).max(Duration::from_secs(1));
        self.stop_accepting.cancel();
        self.broker.set_drain_deadline(deadline);
        self.broker.start_draining();
        let jobs = self.broker.jobs();
        let jobs_done = tokio::time::timeout_at(deadline, jobs.finished()).await.is_ok();
        if !jobs_done {
            tracing::warn!(jobs = jobs.in_flight(), "grace period over with jobs in flight; ending them");
        }
        self.broker.stop_work();
        // Every requester receives its jobs' last events before its session says goodbye.
        let streams_done = tokio::time::timeout(rest(), async {
            jobs.finished().await;
            jobs.streams_finished().await;
        })
        .await
        .is_ok();
        if !streams_done {
            tracing::warn!("some requesters did not take their jobs' last events in time");
        }
        self.shutdown.cancel();
        self.tracker.close();
        let tasks_done = tokio::time::timeout(rest(), self.tracker.wait()).await.is_ok();
        // Delivery loops have ended: their counts go to the store before it closes.
        if tokio::time::timeout(rest(), self.broker.write_delivery_counts()).await.is_err() {
            tracing::warn!("the delivery counts were not written in time");
        }
        // Sessions and jobs have recorded their ends: write the last batch, close the database
        // (bounded too: a database that stopped answering must not hold the exit).
        if tokio::time::timeout(rest(), self.store.close()).await.is_err() {
            tracing::warn!("the store did not close in time; its last batch may be lost");
        }
        drop(self.data_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take());
        let graceful = jobs_done && streams_done && tasks_done;
        if graceful {
            tracing::info!("server stopped gracefully");
        } else {
            tracing::warn!("server stopped with work unfinished");
        }
        graceful
    }

    /// Waits until the server has begun closing its sessions.
    pub async fn stopped(&self) {
        self.shutdown.cancelled().await;
    }
}

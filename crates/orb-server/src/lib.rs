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
//! credentials and device secrets), `tokens` (data-folder tokens), `registry` (every known device,
//! in memory in front of the `orb_store::Store`), `listener` + `http` (accept), `session` (one
//! connection), `router` (sessions, correlations, delivery), `jobs` (fan-out, results, cancel),
//! `builtin` + `inventory` + `history` (the `$orb.` operator commands; application handlers use
//! `orb_io::handler`), `maintenance` (retention), `close` (close reasons).
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
pub mod auth;
pub mod builtin;
pub mod close;
pub mod config;
mod error;
mod history;
mod http;
mod inventory;
pub mod jobs;
mod listener;
mod maintenance;
pub mod registry;
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

pub use admin::{AdminMessage, AdminRequest};
pub use auth::{Authenticator, Principal, TokenAuth};
pub use close::CloseReason;
pub use config::{Limits, Secret, ServerConfig, StoreConfig};
pub use error::ServerError;
pub use orb_io::handler::{Context, Handler, HandlerResult, Handlers};

use crate::registry::Registry;
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

    /// Validates the configuration, loads or generates tokens, binds both listeners and starts
    /// serving.
    ///
    /// # Errors
    /// [`ServerError`] when the configuration is invalid, the data folder is unusable or an
    /// address cannot be bound.
    pub async fn start(self) -> Result<Server, ServerError> {
        let cfg = self.config;
        let groups = parse_groups(&cfg.groups)?;
        let (admin, agent) = load_tokens(&cfg)?;
        let store_url = match &cfg.store.url {
            Some(url) => orb_store::StoreUrl::parse(url).map_err(|e| ServerError::Config(vec![e.to_string()]))?,
            None => orb_store::StoreUrl::in_data_dir(&cfg.data_dir),
        };
        // Before anything touches the store: one server per data folder, and listeners bound, so
        // a second server started by mistake fails without ending the first one's jobs.
        let data_lock = lock_data_dir(&cfg.data_dir)?;
        let tcp = listen(cfg.listen)?;
        let http = listen(cfg.http)?;
        let local = |l: &TcpListener, addr| l.local_addr().map_err(|source| ServerError::Bind { addr, source });
        let tcp_addr = local(&tcp, cfg.listen)?;
        let http_addr = local(&http, cfg.http)?;

        let store = orb_store::open(&store_url).await?;
        let interrupted = store.recover_jobs(chrono::Utc::now(), "the server restarted before this target answered");
        match interrupted.await? {
            0 => {}
            n => tracing::warn!(jobs = n, "jobs left running by the previous server process were ended"),
        }
        let registry = Arc::new(Registry::load(Arc::clone(&store)).await?);
        let (auth, token_auth): (Arc<dyn Authenticator>, _) = match self.auth {
            Some(custom) => (custom, None),
            None => {
                let tokens = Arc::new(TokenAuth::new(&admin, &agent, Arc::clone(&registry)));
                (Arc::clone(&tokens) as Arc<dyn Authenticator>, Some(tokens))
            }
        };

        let shutdown = CancellationToken::new();
        let stop_accepting = CancellationToken::new();
        let tracker = TaskTracker::new();
        let router = Arc::new(Router::new(cfg.limits.clone(), groups, registry));
        let (admin_tx, admin_rx) = tokio::sync::mpsc::channel(16);
        let shared = Arc::new(Shared {
            router: Arc::clone(&router),
            auth,
            handlers: self.handlers,
            shutdown: shutdown.clone(),
            stop_accepting: stop_accepting.clone(),
            tracker: tracker.clone(),
            admin_tx,
        });
        tracker.spawn(listener::tcp::run(tcp, Arc::clone(&shared)));
        tracker.spawn(http::run(http, Arc::clone(&shared)));
        tracker.spawn(expire_requests(Arc::clone(&router), shutdown.clone()));
        tracker.spawn(maintenance::run(Arc::clone(&router), cfg.store.clone(), shutdown.clone()));
        tracing::info!(
            %tcp_addr,
            %http_addr,
            data = %cfg.data_dir.display(),
            store = %store_url.redacted(),
            devices = router.registry().counts().0,
            "orb server listening"
        );
        Ok(Server {
            tcp_addr,
            http_addr,
            router,
            shutdown,
            stop_accepting,
            tracker,
            admin_token: admin,
            agent_token: agent,
            token_auth,
            data_dir: cfg.data_dir,
            admin_rx: Some(admin_rx),
            store,
            store_config: cfg.store,
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
    let mut out = BTreeMap::new();
    let mut problems = Vec::new();
    for (name, text) in groups {
        if orb_proto::DeviceId::new(name).is_err() {
            problems.push(format!("group name '{name}' must match [A-Za-z0-9][A-Za-z0-9_-]{{0,63}}"));
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
    if problems.is_empty() { Ok(out) } else { Err(ServerError::Config(problems)) }
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

/// What a configuration reload may change while connections stay up.
#[derive(Debug, Clone)]
pub struct Reload {
    /// New operator token (`None`: the data folder's, generated if missing).
    pub admin_token: Option<Secret>,
    /// New agent token (`None`: the data folder's).
    pub agent_token: Option<Secret>,
    /// New named selectors.
    pub groups: BTreeMap<String, String>,
    /// New limits (queue sizes apply to new connections).
    pub limits: Limits,
}

/// A running server. Dropping it does not stop it; call [`Server::shutdown`] or [`Server::drain`].
pub struct Server {
    tcp_addr: SocketAddr,
    http_addr: SocketAddr,
    router: Arc<Router>,
    shutdown: CancellationToken,
    stop_accepting: CancellationToken,
    tracker: TaskTracker,
    admin_token: Secret,
    agent_token: Secret,
    token_auth: Option<Arc<TokenAuth>>,
    data_dir: std::path::PathBuf,
    admin_rx: Option<tokio::sync::mpsc::Receiver<AdminRequest>>,
    store: Arc<dyn orb_store::Store>,
    store_config: StoreConfig,
    /// The data folder's lock, released when the server has stopped.
    data_lock: std::sync::Mutex<Option<std::fs::File>>,
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

    /// Applies the job retention now (it also runs every minute in the background).
    pub async fn enforce_retention(&self) {
        maintenance::prune(&self.router, &self.store_config).await;
    }

    /// The router, for in-process producers and inspection.
    pub fn router(&self) -> &Arc<Router> {
        &self.router
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

    /// Applies a configuration reload: tokens, groups and limits. Connections stay up.
    ///
    /// # Errors
    /// [`ServerError::Config`] when a group does not parse; nothing changes then.
    pub fn reload(&self, reload: Reload) -> Result<(), ServerError> {
        let groups = parse_groups(&reload.groups)?;
        let cfg = ServerConfig {
            data_dir: self.data_dir.clone(),
            admin_token: reload.admin_token,
            agent_token: reload.agent_token,
            ..ServerConfig::default()
        };
        let (admin, agent) = load_tokens(&cfg)?;
        if let Some(auth) = &self.token_auth {
            auth.set_tokens(&admin, &agent);
        }
        self.router.set_groups(groups);
        self.router.set_limits(reload.limits);
        Ok(())
    }

    /// Stops the server with a 10 s grace period (see [`Server::drain`]).
    pub async fn shutdown(&self) -> bool {
        self.drain(Duration::from_secs(10)).await
    }

    /// Stops gracefully: listeners close and new jobs are refused; jobs in flight get up to
    /// `grace` to finish; then every session gets `bye` (`server_shutdown`, reconnect hint) and
    /// closes, and remaining tasks get what is left of the grace (at least one second).
    /// Idempotent. Returns whether everything finished in time.
    pub async fn drain(&self, grace: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + grace;
        self.stop_accepting.cancel();
        self.router.start_draining();
        let jobs_done = tokio::time::timeout_at(deadline, self.router.jobs_finished()).await.is_ok();
        if !jobs_done {
            tracing::warn!(jobs = self.router.jobs_in_flight(), "grace period over with jobs in flight");
        }
        self.shutdown.cancel();
        self.tracker.close();
        let rest = deadline.saturating_duration_since(tokio::time::Instant::now()).max(Duration::from_secs(1));
        let tasks_done = tokio::time::timeout(rest, self.tracker.wait()).await.is_ok();
        // Sessions and jobs have recorded their ends: write the last batch, close the database.
        self.store.close().await;
        drop(self.data_lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take());
        let graceful = jobs_done && tasks_done;
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

//! A connection to an orb server: connect by URL, handshake, then a reader task that routes
//! replies to waiting requests, streams job events, runs handlers for incoming commands and
//! answers pings, and a writer task that batches outgoing frames. [`Client`] is a cheap handle.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use orb_proto::agent_config::AgentSettings;
use orb_proto::message::{Bye, Hello, JobAccepted, Role, Welcome};
use orb_proto::{Codec, DEFAULT_MAX_FRAME, Envelope, ErrorBody, Kind, PROTOCOL_VERSION};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::durable::{Journal, OutboxMessage};
use crate::error::ClientError;
use crate::job::Job;
use crate::request::{JobRequest, Select};
use crate::running::Running;
use crate::url::ServerUrl;
use orb_io::handler::{self, Context, Handlers};
use orb_io::queue::{QueueTx, TrySendError};
use orb_io::tls::ClientTls;
use orb_io::transport::{self, FrameSink, FrameSource, TransportError, WrongProtocol};

/// How to connect.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Server address.
    pub url: ServerUrl,
    /// Agent (enrollment) or admin token. Not sent when `secret` is set.
    pub token: Option<String>,
    /// The device's own secret (agents that enrolled, or were added with `orb devices add`).
    pub secret: Option<String>,
    /// Ask to be enrolled: when the server registers a new id it issues a device secret in the
    /// welcome, which this client must keep (see [`crate::Persistent`]). Agents only.
    pub enroll: bool,
    /// Device (agent) or operator.
    pub role: Role,
    /// Device id (agents).
    pub id: Option<String>,
    /// Tags the device reports.
    pub tags: BTreeMap<String, String>,
    /// Software name/version sent in hello.
    pub agent: String,
    /// Largest frame accepted from the server.
    pub max_frame: usize,
    /// Time allowed for connecting and the handshake.
    pub connect_timeout: Duration,
    /// Frames queued for sending before senders wait.
    pub outbound_queue: usize,
    /// Local address to connect from (TCP only): lets a load generator spread connections over
    /// several loopback addresses when one address runs out of ephemeral ports.
    pub bind: Option<std::net::IpAddr>,
    /// The envelope codec to ask for. The hello offers it first, then `json`; the connection uses
    /// what the server chose (`welcome.codec`; a server without MessagePack answers `json`).
    pub codec: Codec,
    /// The agent's journal of held commands (see [`crate::durable`]): with it, a held command
    /// (one delivered with an `attempt`) is recorded before its handler runs and answered from
    /// the journal when delivered again, so it never runs twice; the hello says `durable`, so
    /// the server redelivers what it did not get an answer for. Agents only.
    pub journal: Option<Journal>,
    /// A last will: the server publishes it if this connection ends without [`Client::close`]
    /// (the process died, the link broke).
    pub will: Option<orb_proto::message::Will>,
    /// For `tls://` and `wss://`: the CA to trust (default: the system's trust store) and a
    /// client certificate (mTLS). The files are read at each connect, so renewed ones are used
    /// on the next reconnect.
    pub tls: ClientTls,
}

impl ClientConfig {
    /// An operator connection (CLI, scripts).
    pub fn operator(url: ServerUrl, token: Option<String>) -> ClientConfig {
        ClientConfig {
            url,
            token,
            secret: None,
            enroll: false,
            role: Role::Operator,
            id: None,
            tags: BTreeMap::new(),
            agent: concat!("orb-client/", env!("CARGO_PKG_VERSION")).to_owned(),
            max_frame: DEFAULT_MAX_FRAME,
            connect_timeout: Duration::from_secs(10),
            outbound_queue: 1024,
            bind: None,
            codec: Codec::Json,
            journal: None,
            will: None,
            tls: ClientTls::default(),
        }
    }

    /// A device connection with id `id`, enrolling (a new id gets a device secret).
    pub fn agent(url: ServerUrl, token: Option<String>, id: impl Into<String>) -> ClientConfig {
        ClientConfig { role: Role::Agent, id: Some(id.into()), enroll: true, ..ClientConfig::operator(url, token) }
    }
}

/// Bytes queued for sending before senders wait.
const OUTBOUND_BYTES: usize = 64 * 1024 * 1024;

enum Waiter {
    Once(oneshot::Sender<Envelope>),
    /// A job's stream. Unbounded, yet bounded in practice: a job sends at most one frame per
    /// target plus two, so an unread job never stalls the connection's reader; its `progress`
    /// frames, which have no such bound, are counted in the [`Buffered`] and dropped beyond
    /// [`MAX_BUFFERED_PROGRESS`] unread.
    Stream(mpsc::UnboundedSender<Envelope>, Buffered),
}

/// Progress frames a job's stream holds that its reader has not taken yet.
pub(crate) type Buffered = Arc<std::sync::atomic::AtomicUsize>;

/// The most `progress` frames a job's stream holds unread; more are dropped (progress is best
/// effort: a reader that is behind loses lines, never memory).
pub const MAX_BUFFERED_PROGRESS: usize = 1024;

struct Inner {
    tx: QueueTx,
    /// Handler tasks for incoming commands, so a stop can wait for them.
    tasks: tokio_util::task::TaskTracker,
    /// Set by [`Client::drain`]: new commands are refused with `shutting_down`.
    draining: std::sync::atomic::AtomicBool,
    /// The server's `reconnect_after_ms` hint from its `bye`, if any.
    reconnect_after: OnceLock<Duration>,
    waiters: Mutex<HashMap<u64, Waiter>>,
    /// Commands handled on their own tasks, so a `cancel` frame can stop them.
    running: Arc<Running>,
    next_id: AtomicU64,
    welcome: Welcome,
    /// The codec every frame after the welcome uses, both ways.
    codec: Codec,
    /// Held commands are journaled here (agents with a data folder).
    journal: Option<Journal>,
    stop: CancellationToken,
    close_reason: OnceLock<String>,
    /// Cancelled when the writer task has ended (queued frames written, socket closed).
    writer_done: CancellationToken,
    /// This connection's pub/sub subscriptions.
    subs: crate::subscription::Subscriptions,
    /// The settings the server pushes to this agent: the welcome's, then each `config` frame's.
    settings: tokio::sync::watch::Sender<Arc<AgentSettings>>,
}

/// A connected client. Clones share the connection; it closes on [`Client::close`], when the
/// server closes it, or when the last clone and the background tasks end.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl Client {
    /// Connects, sends `hello` and waits for `welcome`. `handlers` answer commands sent to this
    /// client (agents); commands without a handler get `unknown_command`.
    ///
    /// # Errors
    /// [`ClientError::Unreachable`] when the server cannot be reached, [`ClientError::Refused`]
    /// with the server's code when the hello is refused.
    pub async fn connect(config: ClientConfig, handlers: Handlers) -> Result<Client, ClientError> {
        let url = config.url.to_string();
        let timeout = config.connect_timeout;
        let unreachable = |reason: String| ClientError::Unreachable { url: url.clone(), reason };
        let timed_out = || unreachable("connect timed out".into());
        // The TLS configuration first: a missing or bad file is reported before any network I/O.
        let tls = match config.url.is_tls() {
            true => Some(config.tls.load().map_err(|e| ClientError::Tls { url: url.clone(), reason: e.to_string() })?),
            false => None,
        };
        let (host, port) = (config.url.host().to_owned(), config.url.port());
        let deadline = Instant::now() + timeout;
        let stream = tokio::time::timeout_at(deadline, tcp_connect(&host, port, config.bind, timeout))
            .await
            .map_err(|_| timed_out())?
            .map_err(|e| unreachable(e.to_string()))?;
        match &config.url {
            ServerUrl::Tcp { .. } => {
                let (source, sink) =
                    transport::tcp(stream, config.max_frame).map_err(|e| unreachable(e.to_string()))?;
                Client::handshake(config, handlers, source, sink).await
            }
            ServerUrl::Tls { .. } => {
                let stream = secure(stream, tls, &host, &url, deadline).await?;
                let (source, sink) = transport::stream(stream, config.max_frame);
                Client::handshake(config, handlers, source, sink).await
            }
            ServerUrl::Ws { url: ws_url, .. } => {
                let ws_url = ws_url.clone();
                let upgrade = orb_io::ws::client::connect(stream, &ws_url, config.max_frame);
                let (source, sink) = tokio::time::timeout_at(deadline, upgrade)
                    .await
                    .map_err(|_| timed_out())?
                    .map_err(|e| ws_failure(&config.url, e))?;
                Client::handshake(config, handlers, source, sink).await
            }
            ServerUrl::Wss { url: ws_url, .. } => {
                let ws_url = ws_url.clone();
                let stream = secure(stream, tls, &host, &url, deadline).await?;
                let upgrade = orb_io::ws::client::connect(stream, &ws_url, config.max_frame);
                let (source, sink) = tokio::time::timeout_at(deadline, upgrade)
                    .await
                    .map_err(|_| timed_out())?
                    .map_err(|e| ws_failure(&config.url, e))?;
                Client::handshake(config, handlers, source, sink).await
            }
        }
    }

    async fn handshake<R: FrameSource, W: FrameSink>(
        config: ClientConfig,
        handlers: Handlers,
        mut source: R,
        mut sink: W,
    ) -> Result<Client, ClientError> {
        let hello = Hello {
            version: PROTOCOL_VERSION,
            role: config.role,
            token: if config.secret.is_some() { None } else { config.token.clone() },
            secret: config.secret.clone(),
            enroll: config.enroll,
            id: config.id.clone(),
            tags: config.tags.clone(),
            commands: handlers.names(),
            schemas: handlers.schemas(),
            agent: Some(config.agent.clone()),
            codecs: offered_codecs(config.codec),
            durable: config.journal.is_some(),
            will: config.will.clone(),
        };
        // The hello and the welcome are JSON whatever codec is negotiated.
        let frame = orb_proto::encode(&Envelope::new(Kind::Hello).with_json_body(&hello));
        let closed = |e: String| ClientError::Closed(e);
        sink.send_batch(&[frame]).await.map_err(|e| closed(e.to_string()))?;
        let answer = tokio::time::timeout(config.connect_timeout, source.next_frame())
            .await
            .map_err(|_| ClientError::Timeout(config.connect_timeout.as_millis()))?
            .map_err(|e| match e {
                TransportError::Http(WrongProtocol::Response { .. }) => http_port(&config.url),
                // With TLS 1.3 a refused client certificate shows on the first read.
                TransportError::Io(e) if orb_io::tls::explain(&e).is_some() => tls_failure(&config.url.to_string(), &e),
                e => closed(e.to_string()),
            })?
            .ok_or_else(|| closed("server closed the connection during the handshake".into()))?;
        let env = orb_proto::decode(&answer).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let welcome: Welcome = match env.kind {
            Kind::Welcome => env.json_body().map_err(|e| ClientError::Protocol(e.message))?,
            Kind::Error => {
                let e = env.error.unwrap_or_else(|| ErrorBody::new(orb_proto::ErrorCode::Internal, "refused"));
                if e.code == orb_proto::ErrorCode::TlsRequired {
                    return Err(tls_port(&config.url));
                }
                return Err(ClientError::Refused(e));
            }
            other => {
                return Err(ClientError::Protocol(format!("expected welcome, got {}", other.as_str())));
            }
        };
        let codec = match welcome.codec.as_str() {
            "" => Codec::Json,
            name => Codec::from_name(name).ok_or_else(|| {
                ClientError::Protocol(format!("the server chose codec {name:?}, which this client lacks"))
            })?,
        };
        // Frames bound the queue; bytes only guard against a burst of huge ones.
        let (tx, rx) = orb_io::queue::bounded(orb_io::queue::Limits::new(config.outbound_queue, OUTBOUND_BYTES));
        let stop = CancellationToken::new();
        let pushed = Arc::new(welcome.config.clone().unwrap_or_default());
        let inner = Arc::new(Inner {
            tx,
            tasks: tokio_util::task::TaskTracker::new(),
            draining: std::sync::atomic::AtomicBool::new(false),
            reconnect_after: OnceLock::new(),
            waiters: Mutex::new(HashMap::new()),
            running: Arc::new(Running::default()),
            next_id: AtomicU64::new(1),
            welcome,
            codec,
            journal: config.journal.clone(),
            stop: stop.clone(),
            close_reason: OnceLock::new(),
            writer_done: CancellationToken::new(),
            subs: crate::subscription::Subscriptions::default(),
            settings: tokio::sync::watch::Sender::new(pushed),
        });
        let stopped = stop.clone().cancelled_owned();
        let writer = transport::write_loop(sink, rx, async move {
            stopped.await;
            transport::Stop { code: transport::CloseCode::Normal, linger: Duration::from_secs(1) }
        });
        let writer_done = inner.writer_done.clone();
        tokio::spawn(async move {
            writer.await;
            writer_done.cancel();
        });
        tokio::spawn(read_loop(Arc::clone(&inner), source, handlers));
        tokio::spawn(heartbeat(Arc::clone(&inner)));
        Ok(Client { inner })
    }

    /// The server's welcome (assigned id, heartbeat, limits, codec).
    pub fn welcome(&self) -> &Welcome {
        &self.inner.welcome
    }

    /// The settings the server pushes to this agent (`welcome.config`, then every `config`
    /// frame, each replacing the one before; empty when the server pushes none). Marked changed
    /// on every frame, even one that repeats the settings.
    pub fn agent_settings(&self) -> tokio::sync::watch::Receiver<Arc<AgentSettings>> {
        self.inner.settings.subscribe()
    }

    /// The envelope codec this connection uses after the handshake.
    pub fn codec(&self) -> Codec {
        self.inner.codec
    }

    /// Sends a plain request to one device and waits for its reply (an RPC; not a job).
    /// `args` must be one JSON value.
    ///
    /// # Errors
    /// [`ClientError::Remote`] with the device's or server's code (`device_offline`,
    /// `unknown_command`, ...), [`ClientError::Timeout`], [`ClientError::Closed`];
    /// [`ClientError::Protocol`] when `args` is not valid JSON (nothing is sent then).
    pub async fn request(&self, to: &str, cmd: &str, args: Bytes, timeout: Duration) -> Result<Bytes, ClientError> {
        check_json(&args)?;
        let mut env = Envelope::new(Kind::Cmd);
        env.to = Some(to.to_owned());
        env.cmd = Some(cmd.to_owned());
        env.body = Some(args);
        env.deadline_ms = Some(millis(timeout));
        self.round_trip(env, timeout).await
    }

    /// Sends a command to the server itself (an application handler or a `$orb.` query).
    ///
    /// # Errors
    /// As [`Client::request`].
    pub async fn call(&self, cmd: &str, args: Bytes, timeout: Duration) -> Result<Bytes, ClientError> {
        check_json(&args)?;
        let mut env = Envelope::new(Kind::Cmd);
        env.cmd = Some(cmd.to_owned());
        env.body = Some(args);
        env.deadline_ms = Some(millis(timeout));
        self.round_trip(env, timeout).await
    }

    /// Sends one outbox message to the server (a `cmd` with `msg` and `at_ms`) and waits for
    /// its acknowledgement: the server answers once it has stored the message (or has it
    /// already).
    pub(crate) async fn send_outbox(&self, m: &OutboxMessage, timeout: Duration) -> Result<Bytes, ClientError> {
        let mut env = Envelope::new(Kind::Cmd);
        env.cmd = Some(m.cmd.clone());
        env.body = Some(m.body.clone());
        env.msg = Some(m.msg.clone());
        env.at_ms = u64::try_from(m.created_at.timestamp_millis()).ok();
        env.deadline_ms = Some(millis(timeout));
        self.round_trip(env, timeout).await
    }

    /// Resolves when the connection has closed.
    pub(crate) async fn closed_quietly(&self) {
        self.inner.stop.cancelled().await;
    }

    /// [`Client::call`] with typed arguments and result.
    ///
    /// # Errors
    /// As [`Client::request`], and [`ClientError::Protocol`] when the result has another shape.
    pub async fn call_json<A: serde::Serialize, T: serde::de::DeserializeOwned>(
        &self,
        cmd: &str,
        args: &A,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let args = serde_json::to_vec(args).map_err(|e| ClientError::Protocol(e.to_string()))?;
        let res = self.call(cmd, Bytes::from(args), timeout).await?;
        serde_json::from_slice(&res).map_err(|e| ClientError::Protocol(format!("{cmd} result: {e}")))
    }

    async fn round_trip(&self, env: Envelope, timeout: Duration) -> Result<Bytes, ClientError> {
        let (id, tx_once) = self.next_waiter();
        self.round_trip_as(id, tx_once, env, timeout).await
    }

    /// [`Client::round_trip`] with the frame's id chosen by the caller (`id`, as text `tx_once`).
    async fn round_trip_as(
        &self,
        id: u64,
        tx_once: String,
        mut env: Envelope,
        timeout: Duration,
    ) -> Result<Bytes, ClientError> {
        let (otx, orx) = oneshot::channel();
        self.register(id, Waiter::Once(otx));
        // Unregisters on every exit, including a caller dropping this future.
        let _waiter = WaiterGuard { client: self, id, armed: true };
        env.id = Some(tx_once);
        self.send(&env).await?;
        let answer = tokio::select! {
            r = orx => r.map_err(|_| self.closed_error()),
            () = tokio::time::sleep(timeout) => Err(ClientError::Timeout(timeout.as_millis())),
        }?;
        match (answer.kind, answer.error) {
            (_, Some(e)) => Err(ClientError::Remote(e)),
            (Kind::Reply, None) => Ok(answer.body.unwrap_or_else(|| Bytes::from_static(b"null"))),
            (k, None) => Err(ClientError::Protocol(format!("unexpected {} answering a command", k.as_str()))),
        }
    }

    /// Publishes `body` (one JSON value) on `topic`. Returns how many connections the server
    /// queued it for (subscribers, each once).
    ///
    /// # Errors
    /// [`ClientError::Remote`] with `bad_topic`, `forbidden` (a `$orb.` topic), `bad_body`,
    /// `frame_too_large`; [`ClientError::Protocol`] when `body` is not JSON (nothing sent).
    pub async fn publish(&self, topic: &str, body: Bytes, timeout: Duration) -> Result<u64, ClientError> {
        self.publish_as(topic, body, false, timeout).await
    }

    /// [`Client::publish`], and the server keeps it as `topic`'s retained publication (stored;
    /// sent first to every subscription that starts later and matches); a `null` body clears
    /// it. Returns once the server has stored it.
    ///
    /// # Errors
    /// As [`Client::publish`], and [`ClientError::Remote`] with `too_many_retained` or
    /// `store_unavailable`.
    pub async fn publish_retained(&self, topic: &str, body: Bytes, timeout: Duration) -> Result<u64, ClientError> {
        self.publish_as(topic, body, true, timeout).await
    }

    async fn publish_as(&self, topic: &str, body: Bytes, retain: bool, timeout: Duration) -> Result<u64, ClientError> {
        check_json(&body)?;
        let mut env = Envelope::new(Kind::Pub);
        env.topic = Some(topic.to_owned());
        env.retain = retain.then_some(true);
        env.body = Some(body);
        let answer = self.round_trip(env, timeout).await?;
        let v: serde_json::Value = serde_json::from_slice(&answer).map_err(|e| ClientError::Protocol(e.to_string()))?;
        v["delivered"].as_u64().ok_or_else(|| ClientError::Protocol(format!("pub answered with {v}")))
    }

    /// Subscribes to `pattern` (`*` one segment, a final `>` the rest): the [`Subscription`]
    /// yields what is published on matching topics from the server's answer on, until it is
    /// dropped (which unsubscribes).
    ///
    /// # Errors
    /// [`ClientError::Remote`] with `bad_topic` (checked here first: nothing sent),
    /// `forbidden`, `too_many_subscriptions`.
    ///
    /// [`Subscription`]: crate::Subscription
    pub async fn subscribe(&self, pattern: &str, timeout: Duration) -> Result<crate::Subscription, ClientError> {
        let parsed = orb_proto::topic::Pattern::parse(pattern).map_err(ClientError::Remote)?;
        let (id, id_text) = self.next_waiter();
        // Listening before the server subscribes: nothing published after its answer is missed.
        let (rx, dropped) = self.inner.subs.add(id, parsed);
        let mut env = Envelope::new(Kind::Sub);
        env.topic = Some(pattern.to_owned());
        if let Err(e) = self.round_trip_as(id, id_text, env, timeout).await {
            self.inner.subs.remove(id);
            return Err(e);
        }
        Ok(crate::Subscription { id, pattern: pattern.to_owned(), rx, dropped, client: self.clone() })
    }

    /// Ends subscription `id` here and asks the server to end it (no answer awaited; a closed
    /// connection has ended it already).
    pub(crate) fn unsubscribe_quietly(&self, id: u64) {
        self.inner.subs.remove(id);
        let mut env = Envelope::new(Kind::Unsub);
        env.re = Some(id.to_string());
        let _ = self.inner.tx.try_send(self.inner.codec.encode(&env));
    }

    /// Submits a job: its command to every device its selector matches (those connected, with
    /// [`crate::Select::Online`]), results due within its deadline. Returns once the server
    /// accepted it; read results from the [`Job`].
    ///
    /// # Errors
    /// [`ClientError::Remote`] with `bad_selector`, `unknown_group`, `no_match`,
    /// `unknown_command` or `forbidden`; [`ClientError::Protocol`] when the arguments are not
    /// valid JSON (nothing is sent then).
    pub async fn submit(&self, job: JobRequest) -> Result<Job, ClientError> {
        let JobRequest { target, command, args, deadline, select, ttl, rollout, progress } = job;
        check_json(&args)?;
        let (id, id_str) = self.next_waiter();
        let (stx, mut srx) = mpsc::unbounded_channel();
        let buffered = Buffered::default();
        self.register(id, Waiter::Stream(stx, Arc::clone(&buffered)));
        let mut waiter = WaiterGuard { client: self, id, armed: true };
        let mut env = Envelope::new(Kind::Cmd);
        env.id = Some(id_str);
        env.target = Some(target);
        // Absent means all: what servers before `select` existed do.
        env.select = (select != Select::All).then(|| select.as_str().to_owned());
        env.ttl_ms = ttl.map(millis);
        rollout.write_to(&mut env);
        env.cmd = Some(command);
        env.body = Some(args);
        env.deadline_ms = Some(millis(deadline));
        env.progress = progress.then_some(true);
        self.send(&env).await?;
        // A fast device's progress may overtake the ack: kept, and handed out first.
        let mut early = Vec::new();
        let first = loop {
            let first = tokio::select! {
                f = srx.recv() => f.ok_or_else(|| self.closed_error()),
                () = tokio::time::sleep(self.inner.welcome_timeout()) => Err(ClientError::Timeout(self.inner.welcome_timeout().as_millis())),
            }?;
            if first.kind != Kind::Progress {
                break first;
            }
            early.push(first);
        };
        match (first.kind, first.error.clone()) {
            (Kind::Ack, None) => {
                let accepted: JobAccepted = first.json_body().map_err(|e| ClientError::Protocol(e.message))?;
                // From here the Job owns the registration and removes it when dropped.
                waiter.armed = false;
                Ok(Job::new(accepted, srx, self.clone(), id, early, buffered))
            }
            (_, Some(e)) => Err(ClientError::Remote(e)),
            (k, None) => Err(ClientError::Protocol(format!("expected ack, got {}", k.as_str()))),
        }
    }

    /// Closes the connection: a `bye`, then the socket. Pending requests fail with `Closed`.
    pub async fn close(&self) {
        let bye = Bye { reason: "peer_closed".into(), reconnect_after_ms: None };
        // Never wait for room here: a peer that stopped reading must not keep us from closing.
        let _ = self.inner.tx.try_send(self.inner.codec.encode(&Envelope::new(Kind::Bye).with_json_body(&bye)));
        let _ = self.inner.close_reason.set("closed by client".into());
        self.inner.stop.cancel();
    }

    /// Stops taking new commands (they are answered `shutting_down`), waits up to `grace` for
    /// running handlers to finish and send their replies, then closes. Returns whether every
    /// handler finished in time. A handler that finishes without waiting is answered inline by
    /// the connection's reader, outside the handlers this waits for: a handler that triggers the
    /// drain itself should do so after its first `.await` (see `examples/conversation`).
    pub async fn drain(&self, grace: Duration) -> bool {
        self.inner.draining.store(true, Ordering::Release);
        self.inner.tasks.close();
        let finished = tokio::time::timeout(grace, self.inner.tasks.wait()).await.is_ok();
        self.close().await;
        // The replies are only queued: wait (bounded by the writer's own linger) until they are
        // written, or a process that exits right after draining would lose them.
        let _ = tokio::time::timeout(Duration::from_secs(2), self.inner.writer_done.cancelled()).await;
        finished
    }

    /// Commands being handled right now.
    pub fn running_commands(&self) -> usize {
        self.inner.tasks.len()
    }

    /// The delay the server asked for in its `bye` before reconnecting, if it gave one.
    pub fn reconnect_hint(&self) -> Option<Duration> {
        self.inner.reconnect_after.get().copied()
    }

    /// Resolves when the connection has closed, with the reason.
    pub async fn closed(&self) -> String {
        self.inner.stop.cancelled().await;
        self.inner.close_reason.get().cloned().unwrap_or_else(|| "closed".into())
    }

    /// Whether the connection is closed.
    pub fn is_closed(&self) -> bool {
        self.inner.stop.is_cancelled()
    }

    fn closed_error(&self) -> ClientError {
        ClientError::Closed(self.inner.close_reason.get().cloned().unwrap_or_else(|| "connection closed".into()))
    }

    fn next_waiter(&self) -> (u64, String) {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        (id, id.to_string())
    }

    fn register(&self, id: u64, w: Waiter) {
        self.inner.lock_waiters().insert(id, w);
    }

    pub(crate) fn unregister(&self, id: u64) {
        self.inner.lock_waiters().remove(&id);
    }

    /// Encodes `env` with the connection's codec and queues it, waiting for room.
    async fn send(&self, env: &Envelope) -> Result<(), ClientError> {
        if self.inner.stop.is_cancelled() {
            return Err(self.closed_error());
        }
        self.inner.tx.send(self.inner.codec.encode(env)).await.map_err(|_| self.closed_error())
    }
}

/// Removes a waiter from the table when dropped (error paths, and callers that drop a pending
/// request), unless disarmed because something else took over the registration.
struct WaiterGuard<'a> {
    client: &'a Client,
    id: u64,
    armed: bool,
}

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.client.unregister(self.id);
        }
    }
}

impl Inner {
    fn lock_waiters(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Waiter>> {
        // Never held across an await; a poisoned map is still consistent (plain inserts/removes).
        self.waiters.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn welcome_timeout(&self) -> Duration {
        Duration::from_millis(self.welcome.heartbeat_timeout_ms.max(1000))
    }

    fn finish(&self, reason: String) {
        let _ = self.close_reason.set(reason);
        self.stop.cancel();
        self.lock_waiters().clear();
        // Subscriptions end with the connection: their inboxes end once read.
        self.subs.clear();
    }
}

/// The error for a `tcp://` connection answered in HTTP: it reached an HTTP port, most likely
/// orb's own, so the error says which address to use instead.
fn http_port(server: &ServerUrl) -> ClientError {
    let (ws, tcp) = if server.is_tls() { ("wss", "tls") } else { ("ws", "tcp") };
    ClientError::WrongPort {
        url: server.to_string(),
        hint: format!(
            "this is orb's HTTP port; use {ws}://{}{}, or {tcp}:// on the agent port ({} by default)",
            server.authority(),
            orb_proto::WS_PATH,
            orb_proto::DEFAULT_TCP_PORT
        ),
    }
}

/// Checks that command arguments are one JSON value. They are copied into the frame verbatim, so
/// anything else would make the whole frame invalid and the server would close the connection
/// (failing every other request on it).
fn check_json(args: &Bytes) -> Result<(), ClientError> {
    serde_json::from_slice::<&serde_json::value::RawValue>(args)
        .map(|_| ())
        .map_err(|e| ClientError::Protocol(format!("arguments are not valid JSON: {e}")))
}

/// The `codecs` of the hello: the preferred codec, then JSON (which every server speaks).
fn offered_codecs(preferred: Codec) -> Vec<String> {
    let mut v = vec![preferred.as_str().to_owned()];
    if preferred != Codec::Json {
        v.push(Codec::Json.as_str().to_owned());
    }
    v
}

/// Connects over TCP (`TCP_NODELAY` set) to the first address of `host` that accepts, trying each address it
/// resolves to in turn (each gets an equal share of `timeout`, at least a second, so one address
/// that drops packets does not use up the whole time), from `bind` when given. The error names
/// every address tried.
async fn tcp_connect(
    host: &str,
    port: u16,
    bind: Option<std::net::IpAddr>,
    timeout: Duration,
) -> std::io::Result<tokio::net::TcpStream> {
    let addrs: Vec<_> = tokio::net::lookup_host((host, port))
        .await?
        .filter(|a| bind.is_none_or(|local| a.is_ipv4() == local.is_ipv4()))
        .collect();
    connect_any(host, &addrs, bind, timeout).await
}

/// Connects to the first of `addrs` (the addresses of `host`) that accepts ([`tcp_connect`]).
async fn connect_any(
    host: &str,
    addrs: &[std::net::SocketAddr],
    bind: Option<std::net::IpAddr>,
    timeout: Duration,
) -> std::io::Result<tokio::net::TcpStream> {
    if addrs.is_empty() {
        return Err(std::io::Error::new(std::io::ErrorKind::NotFound, format!("no address for {host}")));
    }
    let count = u32::try_from(addrs.len()).unwrap_or(u32::MAX);
    let share = (timeout / count).max(Duration::from_secs(1));
    let mut failures = Vec::new();
    for &addr in addrs {
        let attempt = async {
            let socket =
                if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
            if let Some(local) = bind {
                // An explicit bind picks a port without regard to the destination; allow ports
                // still in TIME_WAIT from earlier connections so many short runs do not exhaust
                // the range.
                socket.set_reuseaddr(true)?;
                socket.bind(std::net::SocketAddr::new(local, 0))?;
            }
            socket.connect(addr).await
        };
        match tokio::time::timeout(share, attempt).await {
            Ok(Ok(s)) => {
                // Frames are batched by the writer: Nagle's algorithm would only add latency
                // (TLS and WebSocket too).
                s.set_nodelay(true)?;
                return Ok(s);
            }
            Ok(Err(e)) => failures.push((addr, e.to_string(), e.kind())),
            Err(_) => failures.push((addr, "timed out".to_owned(), std::io::ErrorKind::TimedOut)),
        }
    }
    if let [(_, _, kind)] = failures.as_slice() {
        let (_, reason, _) = &failures[0];
        return Err(std::io::Error::new(*kind, reason.clone()));
    }
    let kind = failures.last().map_or(std::io::ErrorKind::Other, |f| f.2);
    let tried: Vec<String> = failures.iter().map(|(a, e, _)| format!("{a}: {e}")).collect();
    Err(std::io::Error::new(kind, format!("every address of {host} failed ({})", tried.join("; "))))
}

/// Runs the TLS handshake on `stream` for `host` (SNI and the name checked in the server's
/// certificate), by `deadline`.
async fn secure(
    stream: tokio::net::TcpStream,
    tls: Option<Arc<orb_io::tls::rustls::ClientConfig>>,
    host: &str,
    url: &str,
    deadline: Instant,
) -> Result<orb_io::tls::tokio_rustls::client::TlsStream<tokio::net::TcpStream>, ClientError> {
    let failed = |reason: String| ClientError::Tls { url: url.to_owned(), reason };
    let tls = tls.ok_or_else(|| failed("no TLS configuration".into()))?;
    let name = orb_io::tls::server_name(host).map_err(|e| failed(e.to_string()))?;
    let connector = orb_io::tls::tokio_rustls::TlsConnector::from(tls);
    match tokio::time::timeout_at(deadline, connector.connect(name, stream)).await {
        Err(_) => Err(ClientError::Unreachable { url: url.to_owned(), reason: "the TLS handshake timed out".into() }),
        Ok(Err(e)) => Err(tls_failure(url, &e)),
        Ok(Ok(s)) => Ok(s),
    }
}

/// The error for a TLS handshake (or first read) that failed, in words a person can act on.
fn tls_failure(url: &str, e: &std::io::Error) -> ClientError {
    match orb_io::tls::explain(e) {
        Some(reason) => ClientError::Tls { url: url.to_owned(), reason },
        None => ClientError::Unreachable { url: url.to_owned(), reason: format!("TLS handshake failed: {e}") },
    }
}

/// The error for a WebSocket upgrade that failed: a plain or TLS port answering otherwise than
/// expected says which address to use.
fn ws_failure(server: &ServerUrl, e: TransportError) -> ClientError {
    let url = server.to_string();
    match e {
        TransportError::Http(WrongProtocol::Refused { body, .. })
            if body.starts_with(orb_io::sniff::TCP_PORT_ANSWER_START) =>
        {
            let scheme = if server.is_tls() { "tls" } else { "tcp" };
            let hint = format!(
                "this is orb's TCP port; use {scheme}://{} (WebSocket is on the HTTP port, {})",
                server.authority(),
                orb_proto::WS_PATH
            );
            ClientError::WrongPort { url, hint }
        }
        TransportError::Http(WrongProtocol::Refused { body, .. })
            if body.starts_with(orb_io::sniff::TLS_PORT_ANSWER_START) =>
        {
            tls_port(server)
        }
        TransportError::Io(e) if orb_io::tls::explain(&e).is_some() => tls_failure(&url, &e),
        e => ClientError::Unreachable { url, reason: e.to_string() },
    }
}

/// The error for a plain (`tcp://`, `ws://`) connection to a port that speaks TLS only.
fn tls_port(server: &ServerUrl) -> ClientError {
    let secure = match server {
        ServerUrl::Ws { url, .. } => url.replacen("ws://", "wss://", 1),
        _ => format!("tls://{}", server.authority()),
    };
    ClientError::WrongPort { url: server.to_string(), hint: format!("this port speaks TLS only; use {secure}") }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Reads frames until the connection ends, dispatching each.
async fn read_loop<R: FrameSource>(inner: Arc<Inner>, mut source: R, handlers: Handlers) {
    let timeout = Duration::from_millis(inner.welcome.heartbeat_timeout_ms.max(1000));
    let every = timeout / 3;
    let mut check = tokio::time::interval_at(Instant::now() + every, every);
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Silence is counted in check intervals, so the hot path reads no clock.
    let mut heard = true;
    let mut silent: u32 = 0;
    let stop = inner.stop.clone();
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    let reason = loop {
        let frame = tokio::select! {
            biased;
            () = &mut stopped => break None,
            f = source.next_frame() => f,
            _ = check.tick() => {
                if heard {
                    heard = false;
                    silent = 0;
                } else {
                    silent += 1;
                    if every * silent >= timeout {
                        break Some("heartbeat_timeout: the server sent nothing within the heartbeat timeout".to_owned());
                    }
                }
                continue;
            }
        };
        let frame = match frame {
            Ok(Some(f)) => f,
            Ok(None) => break Some("server closed the connection".to_owned()),
            Err(TransportError::FrameTooLarge { max }) => {
                let err = Envelope::error(
                    None,
                    orb_proto::ErrorCode::FrameTooLarge,
                    format!("frame larger than {max} bytes"),
                );
                inner.tx.send_last(inner.codec.encode(&err));
                break Some("frame_too_large: the server sent a frame above the limit".to_owned());
            }
            Err(e) => break Some(e.to_string()),
        };
        heard = true;
        transport::trace_frame("in", &frame, inner.codec);
        let env = match inner.codec.decode(&frame) {
            Ok(env) => env,
            Err(e) => break Some(format!("protocol_violation: {e}")),
        };
        match env.kind {
            Kind::Reply | Kind::Ack | Kind::Event | Kind::Error | Kind::Progress if env.re.is_some() => {
                deliver(&inner, env).await;
            }
            Kind::Error => tracing::warn!(error = ?env.error, "server reported an error"),
            Kind::Cmd => run_command(&inner, &handlers, env),
            Kind::Pub => {
                let from = env.from.unwrap_or_default();
                let body = env.body.unwrap_or_else(|| Bytes::from_static(b"null"));
                let to = env.re.as_deref().filter(|_| env.retain == Some(true));
                inner.subs.route(env.topic.unwrap_or_default(), from, body, to);
            }
            Kind::Config => match env.json_body::<AgentSettings>() {
                Ok(settings) => {
                    inner.settings.send_replace(Arc::new(settings));
                }
                Err(e) => tracing::warn!(error = %e.message, "the server pushed settings this agent cannot read"),
            },
            Kind::Cancel => {
                let re = env.re.as_deref().unwrap_or_default();
                let found = inner.running.cancel(re);
                tracing::debug!(re, job = env.job.as_deref(), found, "cancel received");
            }
            Kind::Ping => {
                let mut pong = Envelope::new(Kind::Pong);
                pong.re = env.id;
                let _ = inner.tx.try_send(inner.codec.encode(&pong));
            }
            Kind::Bye => {
                let bye: Option<Bye> = env.json_body().ok();
                if let Some(ms) = bye.as_ref().and_then(|b| b.reconnect_after_ms) {
                    let _ = inner.reconnect_after.set(Duration::from_millis(ms));
                }
                break Some(bye.map_or_else(|| "server said bye".to_owned(), |b| b.reason));
            }
            _ => tracing::debug!(kind = env.kind.as_str(), "frame ignored"),
        }
    };
    inner.finish(reason.unwrap_or_else(|| "closed by client".to_owned()));
}

/// Hands a correlated frame to whoever waits for it. Never waits: a job's stream buffers what
/// its reader has not taken yet (at most one frame per target), so one unread job cannot stall
/// replies to anything else on the connection.
async fn deliver(inner: &Inner, env: Envelope) {
    let Some(id) = env.re.as_deref().and_then(|r| r.parse::<u64>().ok()) else {
        return;
    };
    let stream = {
        let mut waiters = inner.lock_waiters();
        match waiters.get(&id) {
            // Progress goes to job streams only (a request never asks for it).
            Some(Waiter::Once(_)) if env.kind == Kind::Progress => return,
            Some(Waiter::Once(_)) => {
                if let Some(Waiter::Once(tx)) = waiters.remove(&id) {
                    let _ = tx.send(env);
                }
                return;
            }
            Some(Waiter::Stream(tx, buffered)) => {
                if env.kind == Kind::Progress {
                    if buffered.load(Ordering::Acquire) >= MAX_BUFFERED_PROGRESS {
                        tracing::debug!(re = id, "progress dropped: the job's reader is behind");
                        return;
                    }
                    buffered.fetch_add(1, Ordering::AcqRel);
                }
                let tx = tx.clone();
                if env.kind == Kind::Reply || env.kind == Kind::Error {
                    waiters.remove(&id);
                }
                tx
            }
            None => return,
        }
    };
    if stream.send(env).is_err() {
        inner.lock_waiters().remove(&id);
    }
}

/// Runs the handler for an incoming command on its own task and queues the reply. While it runs,
/// its cancel token is in `inner.running` under the command id (a `cancel` frame can only arrive
/// after this returns, so a handler answered inline needs no entry).
fn run_command(inner: &Arc<Inner>, handlers: &Handlers, env: Envelope) {
    let Some(id) = env.id else { return };
    let cmd = env.cmd.unwrap_or_default();
    let cancel = CancellationToken::new();
    let tx = inner.tx.clone();
    let codec = inner.codec;
    // The requester asked for progress: each report is a `progress` frame naming this command,
    // queued only while the outbound queue is less than half full (never waiting), and only
    // when it fits the server's frame limit (a larger frame would cost the connection).
    let progress = if env.progress == Some(true) {
        let (tx, re) = (tx.clone(), id.clone());
        let max_frame = usize::try_from(inner.welcome.max_frame).unwrap_or(usize::MAX);
        handler::Progress::new(move |body| {
            let mut p = Envelope::new(Kind::Progress);
            p.re = Some(re.clone());
            p.body = Some(body);
            let frame = codec.encode(&p);
            frame.len() <= max_frame && tx.try_send_half(frame).is_ok()
        })
    } else {
        handler::Progress::off()
    };
    let ctx = Context {
        from: env.from.unwrap_or_else(|| "$server".to_owned()),
        args: env.body.unwrap_or_else(|| Bytes::from_static(b"null")),
        job: env.job,
        deadline: Duration::from_millis(env.deadline_ms.unwrap_or(30_000)),
        cmd: cmd.clone(),
        cancel: cancel.clone(),
        progress,
    };
    if inner.draining.load(Ordering::Acquire) {
        let e = ErrorBody::new(orb_proto::ErrorCode::ShuttingDown, format!("{cmd}: this client is stopping"));
        let _ = tx.try_send(handler::reply_frame(codec, id, Err(e)));
        return;
    }
    let handler = handlers.get(&cmd);
    if let (Some(journal), Some(job), Some(_)) = (&inner.journal, &ctx.job, env.attempt) {
        // A held command: journaled, so a redelivery never runs it twice.
        let (journal, job) = (journal.clone(), job.clone());
        let running = inner.running.start(&id, cancel);
        inner.tasks.spawn(async move {
            let result = run_journaled(&journal, &job, handler, ctx).await;
            drop(running);
            let _ = tx.send(handler::reply_frame(codec, id, result)).await;
        });
        return;
    }
    let mut run = Box::pin(handler::run(handler, ctx));
    // Most handlers (ping, echo) finish without waiting: answer them here, saving a task spawn
    // and a wake-up per command. The first poll used a no-op waker; the spawned task polls again
    // with its own, so a handler that does wait is driven normally.
    if let Some(result) = (&mut run).now_or_never() {
        let frame = handler::reply_frame(codec, id, result);
        if let Err(TrySendError::Full(frame)) = tx.try_send(frame) {
            inner.tasks.spawn(async move {
                let _ = tx.send(frame).await;
            });
        }
        return;
    }
    let running = inner.running.start(&id, cancel);
    inner.tasks.spawn(async move {
        let result = run.await;
        drop(running);
        let _ = tx.send(handler::reply_frame(codec, id, result)).await;
    });
}

/// Runs held command `job` at most once (see [`Journal::run_once`]).
async fn run_journaled(
    journal: &Journal,
    job: &str,
    handler: Option<Arc<dyn handler::Handler>>,
    ctx: Context,
) -> handler::HandlerResult {
    let cmd = ctx.cmd.clone();
    journal.run_once(job, &cmd, handler::run(handler, ctx)).await
}

/// Sends a `ping` every heartbeat interval so the server (and NATs) keep the link open.
async fn heartbeat(inner: Arc<Inner>) {
    let every = Duration::from_millis(inner.welcome.heartbeat_ms.max(100));
    let mut tick = tokio::time::interval_at(Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            () = inner.stop.cancelled() => break,
            _ = tick.tick() => {
                n += 1;
                let mut ping = Envelope::new(Kind::Ping);
                ping.id = Some(format!("hb{n}"));
                let _ = inner.tx.try_send(inner.codec.encode(&ping));
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod scripted {
    //! A scripted server for unit tests: real TCP on 127.0.0.1, frames written by hand.
    use super::*;
    use orb_io::transport::{TcpSink, TcpSource};

    /// One accepted connection whose hello has been read.
    pub(crate) struct Scripted {
        source: TcpSource,
        sink: TcpSink,
        /// The client's hello.
        pub(crate) hello: Hello,
    }

    impl Scripted {
        /// Accepts the next connection and reads its hello.
        pub(crate) async fn accept(listener: &tokio::net::TcpListener) -> Scripted {
            let (stream, _) = listener.accept().await.unwrap();
            let (mut source, sink) = transport::tcp(stream, DEFAULT_MAX_FRAME).unwrap();
            let hello = orb_proto::decode(&source.next_frame().await.unwrap().unwrap()).unwrap();
            assert_eq!(hello.kind, Kind::Hello);
            let hello: Hello = hello.json_body().unwrap();
            Scripted { source, sink, hello }
        }

        /// Welcomes the client as `id`, issuing `secret` when given.
        pub(crate) async fn welcome(&mut self, id: &str, secret: Option<&str>) {
            let welcome = Welcome {
                version: PROTOCOL_VERSION,
                id: id.into(),
                session: 1,
                heartbeat_ms: 15_000,
                heartbeat_timeout_ms: 45_000,
                max_frame: DEFAULT_MAX_FRAME as u64,
                server: "scripted".into(),
                codec: String::new(),
                secret: secret.map(str::to_owned),
                known: secret.is_none(),
                first_seen: secret.is_none().then(|| "2026-01-01T00:00:00Z".to_owned()),
                config: None,
            };
            self.send(&Envelope::new(Kind::Welcome).with_json_body(&welcome)).await;
        }

        /// Ends the session with a `bye` giving `reason` (as the server does for `revoked`).
        pub(crate) async fn bye(&mut self, reason: &str) {
            let bye = Bye { reason: reason.into(), reconnect_after_ms: None };
            self.send(&Envelope::new(Kind::Bye).with_json_body(&bye)).await;
        }

        /// Refuses the hello with `code`.
        pub(crate) async fn refuse(&mut self, code: orb_proto::ErrorCode) {
            self.send(&Envelope::error(None, code, "scripted refusal")).await;
        }

        pub(crate) async fn send(&mut self, env: &Envelope) {
            self.sink.send_batch(&[orb_proto::encode(env)]).await.unwrap();
        }

        pub(crate) async fn cmd(&mut self, id: &str, cmd: &str) {
            let mut env = Envelope::new(Kind::Cmd);
            env.id = Some(id.into());
            env.job = Some(id.into());
            env.cmd = Some(cmd.into());
            env.deadline_ms = Some(30_000);
            self.send(&env).await;
        }

        /// The next reply (pings and other frames skipped).
        pub(crate) async fn reply(&mut self) -> Envelope {
            loop {
                let env = orb_proto::decode(&self.source.next_frame().await.unwrap().unwrap()).unwrap();
                if env.kind == Kind::Reply {
                    return env;
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::scripted::Scripted;
    use super::*;

    #[tokio::test]
    async fn every_address_is_tried_in_turn_and_a_failure_names_each() {
        let closed = {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            l.local_addr().unwrap()
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap();
        let s = connect_any("h", &[closed, open], None, Duration::from_secs(5)).await.unwrap();
        assert_eq!(s.peer_addr().unwrap(), open);
        let e = connect_any("h", &[closed, closed], None, Duration::from_secs(5)).await.unwrap_err();
        assert!(e.to_string().starts_with("every address of h failed"), "{e}");
        assert_eq!(e.to_string().matches(&closed.to_string()).count(), 2, "{e}");
        assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused);
        let e = connect_any("h", &[], None, Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(e.to_string(), "no address for h");
    }

    #[tokio::test]
    async fn pushed_settings_replace_each_other_and_bad_ones_are_ignored() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url: ServerUrl = format!("tcp://{}", listener.local_addr().unwrap()).parse().unwrap();
        let server = tokio::spawn(async move {
            let mut s = Scripted::accept(&listener).await;
            s.welcome("web-1", None).await;
            s
        });
        let client = Client::connect(ClientConfig::agent(url, None, "web-1"), Handlers::new()).await.unwrap();
        let mut server = server.await.unwrap();
        let mut settings = client.agent_settings();
        assert!(settings.borrow_and_update().is_empty(), "a welcome without config pushes nothing");
        let bounded = Duration::from_secs(10);
        let push = |body: &'static str| {
            let mut env = Envelope::new(Kind::Config);
            env.body = Some(Bytes::from_static(body.as_bytes()));
            env
        };
        server.send(&push(r#"{"telemetry_interval_ms": 5000, "log_level": "debug"}"#)).await;
        tokio::time::timeout(bounded, settings.changed()).await.unwrap().unwrap();
        let now = settings.borrow_and_update().clone();
        assert_eq!((now.telemetry_interval_ms, now.log_level.as_deref()), (Some(5000), Some("debug")));
        // Not settings: ignored, the connection stays; the next whole set replaces the first.
        server.send(&push(r#"{"telemetry_interval_ms": "soon"}"#)).await;
        server.send(&push(r#"{"exec_allow": ["df -h"]}"#)).await;
        tokio::time::timeout(bounded, settings.changed()).await.unwrap().unwrap();
        let now = settings.borrow_and_update().clone();
        assert_eq!(now.telemetry_interval_ms, None);
        assert_eq!(now.exec_allow, ["df -h"]);
        assert!(!client.is_closed());
        client.close().await;
    }

    #[tokio::test]
    async fn a_cancel_frame_cancels_the_running_handler_and_the_table_empties() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url: ServerUrl = format!("tcp://{}", listener.local_addr().unwrap()).parse().unwrap();
        let server = tokio::spawn(async move {
            let mut s = Scripted::accept(&listener).await;
            s.welcome("web-1", None).await;
            s
        });
        let (started_tx, mut started_rx) = mpsc::unbounded_channel::<()>();
        let handlers = Handlers::new().on("ping", |_c: Context| async { Ok(serde_json::json!({"pong": true})) }).on(
            "wait",
            move |c: Context| {
                let started = started_tx.clone();
                async move {
                    let _ = started.send(());
                    c.cancel.cancelled().await;
                    Ok(serde_json::Value::Null)
                }
            },
        );
        let client = Client::connect(ClientConfig::agent(url, None, "web-1"), handlers).await.unwrap();
        let mut server = server.await.unwrap();
        let bounded = Duration::from_secs(10);

        // Answered inline: never recorded.
        server.cmd("p1", "ping").await;
        let r = tokio::time::timeout(bounded, server.reply()).await.unwrap();
        assert_eq!(r.re.as_deref(), Some("p1"));
        assert_eq!(client.inner.running.len(), 0);

        server.cmd("job-1", "wait").await;
        tokio::time::timeout(bounded, started_rx.recv()).await.unwrap().unwrap();
        assert_eq!(client.inner.running.len(), 1, "the waiting handler is recorded");

        // A cancel for something else changes nothing; the one for job-1 stops it.
        let mut other = Envelope::new(Kind::Cancel);
        other.re = Some("job-0".into());
        server.send(&other).await;
        let mut cancel = Envelope::new(Kind::Cancel);
        cancel.re = Some("job-1".into());
        cancel.job = Some("job-1".into());
        server.send(&cancel).await;
        let r = tokio::time::timeout(bounded, server.reply()).await.unwrap();
        assert_eq!(r.re.as_deref(), Some("job-1"));
        assert_eq!(r.error.map(|e| e.code), Some(orb_proto::ErrorCode::Cancelled));
        // The entry is removed before the reply is queued.
        assert_eq!(client.inner.running.len(), 0, "no entry outlives its handler");
        client.close().await;
    }
}

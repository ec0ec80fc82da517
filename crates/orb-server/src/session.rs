//! One connection, from the first frame to the last: handshake (`hello` → `welcome` or `error`),
//! then a loop reading frames and acting on them (commands to the router, jobs or handlers;
//! replies to the router), while a writer task drains the bounded outbound queue to the socket.
//! Every session ends with a typed [`CloseReason`], logged once.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use orb_io::handler::{self, Context, Handlers};
use orb_io::transport::{FrameSink, FrameSource, LinkStats, TransportError, write_loop_counted};
use orb_proto::message::{Bye, Hello, Role, Welcome};
use orb_proto::{
    Codec, DeviceId, Envelope, ErrorBody, ErrorCode, Kind, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION, RESERVED_PREFIX,
};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::admin::{self, AdminRequest};
use crate::auth::Authenticator;
use crate::builtin::{self, SERVER_NAME};
use crate::close::{CloseReason, Closer};
use crate::jobs::{self, JobRequest};
use crate::router::{DeviceRecord, DeviceSession, Outbox, Router};

/// What every session shares: the router, authentication, handlers, and the server's lifetime.
pub(crate) struct Shared {
    pub router: Arc<Router>,
    pub auth: Arc<dyn Authenticator>,
    pub handlers: Handlers,
    pub shutdown: CancellationToken,
    /// Cancelled first on a graceful stop: listeners stop accepting, sessions stay.
    pub stop_accepting: CancellationToken,
    pub tracker: TaskTracker,
    /// Admin messages (`QUIT`, `RELOAD`, `LOG_ROTATE`) for the process that embeds the server.
    pub admin_tx: mpsc::Sender<AdminRequest>,
}

/// Where a connection comes from.
pub(crate) struct Peer {
    /// Remote address.
    pub addr: SocketAddr,
    /// `tcp` or `ws`.
    pub transport: &'static str,
    /// The WebSocket handshake's `User-Agent` header.
    pub user_agent: Option<String>,
}

/// Serves one accepted connection until it closes.
pub(crate) async fn serve<R: FrameSource, W: FrameSink>(shared: Arc<Shared>, mut source: R, sink: W, peer: Peer) {
    let Peer { addr: peer, transport, user_agent } = peer;
    let conn = shared.router.next_conn_id();
    // A debug span: at the default level it is never created, which saves a few hundred bytes per
    // connection; the close log below carries the same fields.
    let span = tracing::debug_span!("session", conn, peer.addr = %peer, transport, agent.id = tracing::field::Empty);
    async move {
        let limits = shared.router.limits();
        let (tx, rx) = orb_io::queue::bounded(limits.outbound_queue);
        let stop = orb_io::signal::Signal::new();
        let stopped = stop.clone();
        let stats = Arc::new(LinkStats::default());
        let writer = write_loop_counted(
            sink,
            rx,
            async move { stopped.raised().await },
            limits.close_linger,
            Some(Arc::clone(&stats)),
        );
        let writer = shared.tracker.spawn(writer.instrument(tracing::Span::current()));
        // JSON until the handshake chose the session's codec.
        let outbox = Outbox { conn, tx, closer: Closer::default(), codec: Codec::Json };

        let admitted = shared.router.admit(peer.ip());
        let mut name = None;
        let (reason, last) = match admitted {
            Err(e) => (CloseReason::ConnectionLimit, Some(error_frame(Codec::Json, None, e.code, e.message))),
            // Boxed: the handshake runs once, and inline its state (authentication, registration,
            // store writes) would enlarge every connection's task for its whole life.
            Ok(_guard) => {
                match Box::pin(handshake(&shared, &mut source, &outbox, peer, transport, user_agent, stats)).await {
                    Ok(mut session) => {
                        let reason = session.run(&mut source).await;
                        // A replaced session's end is not the device's: its successor is connected.
                        if let Registered::Device { id, .. } = &session.registered
                            && reason != CloseReason::Replaced
                        {
                            shared.router.registry().disconnected(id.as_str(), chrono::Utc::now());
                        }
                        name = Some(std::mem::take(&mut session.name));
                        (reason, session.last.take().or_else(|| goodbye(reason, session.outbox.codec)))
                    }
                    Err((reason, frame)) => (reason, frame),
                }
            }
        };
        shared.router.record_close(reason);
        if let Some(f) = last {
            outbox.tx.send_last(f);
        }
        stop.raise();
        let _ = writer.await;
        let id = name.as_deref().unwrap_or("-");
        match reason {
            CloseReason::PeerClosed | CloseReason::ServerShutdown => {
                tracing::debug!(conn, peer.addr = %peer, transport, agent.id = id, reason = %reason, "session closed")
            }
            _ => tracing::info!(conn, peer.addr = %peer, transport, agent.id = id, reason = %reason, "session closed"),
        }
    }
    .instrument(span)
    .await;
}

/// The `bye` a session sends when it closes for `reason`, if any, in the session's codec.
fn goodbye(reason: CloseReason, codec: Codec) -> Option<Bytes> {
    let reconnect_after_ms = match reason {
        CloseReason::ServerShutdown => Some(1000),
        CloseReason::Replaced
        | CloseReason::SlowConsumer
        | CloseReason::HeartbeatTimeout
        | CloseReason::Revoked
        | CloseReason::Removed => None,
        _ => return None,
    };
    let bye = Bye { reason: reason.as_str().to_owned(), reconnect_after_ms };
    Some(codec.encode(&Envelope::new(Kind::Bye).with_json_body(&bye)))
}

/// An `error` frame. Refusals before the welcome are JSON, like the handshake itself.
fn error_frame(codec: Codec, re: Option<String>, code: ErrorCode, message: impl Into<String>) -> Bytes {
    codec.encode(&Envelope::error(re, code, message))
}

type Refusal = (CloseReason, Option<Bytes>);

async fn handshake<R: FrameSource>(
    shared: &Arc<Shared>,
    source: &mut R,
    outbox: &Outbox,
    peer: SocketAddr,
    transport: &'static str,
    user_agent: Option<String>,
    stats: Arc<LinkStats>,
) -> Result<Session, Refusal> {
    let limits = shared.router.limits();
    let first = tokio::select! {
        () = tokio::time::sleep(limits.handshake_timeout) => {
            let msg = format!("no hello within {} ms", limits.handshake_timeout.as_millis());
            let f = error_frame(Codec::Json, None, ErrorCode::HandshakeTimeout, msg);
            return Err((CloseReason::HandshakeTimeout, Some(f)));
        }
        () = shared.shutdown.cancelled() => {
            return Err((CloseReason::ServerShutdown, goodbye(CloseReason::ServerShutdown, Codec::Json)));
        }
        f = source.next_frame() => f,
    };
    let frame = match first {
        Ok(Some(f)) => f,
        Ok(None) | Err(TransportError::Io(_)) => return Err((CloseReason::PeerClosed, None)),
        Err(e @ TransportError::FrameTooLarge { .. }) => {
            let f = error_frame(Codec::Json, None, ErrorCode::FrameTooLarge, e.to_string());
            return Err((CloseReason::FrameTooLarge, Some(f)));
        }
        Err(e @ TransportError::Protocol(_)) => {
            let f = error_frame(Codec::Json, None, ErrorCode::BadFrame, e.to_string());
            return Err((CloseReason::ProtocolViolation, Some(f)));
        }
    };
    stats.received(frame.len());
    let violation =
        |code, msg: String| (CloseReason::ProtocolViolation, Some(error_frame(Codec::Json, None, code, msg)));
    // The hello is JSON whatever the client will ask for.
    let env = orb_proto::decode(&frame).map_err(|e| violation(ErrorCode::BadFrame, e.to_string()))?;
    if env.kind != Kind::Hello {
        let msg = format!("the first frame must be hello, not {}", env.kind.as_str());
        return Err(violation(ErrorCode::HandshakeRequired, msg));
    }
    let hello: Hello = env.json_body().map_err(|e| violation(e.code, e.message))?;
    if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&hello.version) {
        let msg = format!(
            "protocol version {} is not supported (this server speaks {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION})",
            hello.version
        );
        return Err(violation(ErrorCode::UnsupportedVersion, msg));
    }
    // A custom authenticator may do I/O: it gets the handshake timeout too.
    let checked = tokio::time::timeout(limits.handshake_timeout, shared.auth.authenticate(&hello)).await;
    let refuse = |e: ErrorBody| {
        let reason = match e.code {
            ErrorCode::AuthFailed | ErrorCode::IdTaken | ErrorCode::Revoked => CloseReason::AuthFailed,
            ErrorCode::HandshakeTimeout => CloseReason::HandshakeTimeout,
            _ => CloseReason::ProtocolViolation,
        };
        (reason, Some(error_frame(Codec::Json, None, e.code, e.message)))
    };
    let principal = checked
        .unwrap_or_else(|_| Err(ErrorBody::new(ErrorCode::HandshakeTimeout, "authentication took too long")))
        .map_err(refuse)?;
    // The registry knows every device that connects (an authenticator other than the default
    // registers nothing itself); a revoked one is refused whatever authenticated it.
    let registry = shared.router.registry();
    let known = match &principal.device {
        Some(id) if principal.role == Role::Agent => Some(match registry.get(id.as_str()) {
            Some(k) if k.revoked => return Err(refuse(crate::registry::revoked(id.as_str()))),
            Some(k) => k,
            None => registry.add(id, None, Default::default()).await.map_err(refuse)?,
        }),
        _ => None,
    };
    let now = chrono::Utc::now();

    // The codec of every frame after the welcome, both ways; the first the client listed that we speak.
    let codec = Codec::negotiate(&hello.codecs);
    let announced = if hello.codecs.is_empty() { String::new() } else { codec.as_str().to_owned() };
    let outbox = &Outbox { codec, ..outbox.clone() };
    let name = match (&principal.role, &principal.device) {
        (Role::Agent, Some(id)) => id.to_string(),
        _ => format!("op-{}", outbox.conn),
    };
    let welcome = Welcome {
        version: hello.version,
        id: name.clone(),
        session: outbox.conn,
        heartbeat_ms: millis(limits.heartbeat),
        heartbeat_timeout_ms: millis(limits.heartbeat_timeout),
        max_frame: limits.max_frame as u64,
        server: SERVER_NAME.to_owned(),
        codec: announced,
        secret: principal.issued_secret.clone(),
        known: known.as_ref().is_some_and(|k| k.first_seen.is_some()),
        first_seen: known.as_ref().map(|k| crate::router::rfc3339(k.first_seen.unwrap_or(now))),
    };
    // The welcome itself is JSON, so the client can read the choice before switching. It is queued
    // before the session is registered (with no await in between), so nothing routed to the session
    // can reach the client ahead of it.
    let _ = outbox.deliver(orb_proto::encode(&Envelope::new(Kind::Welcome).with_json_body(&welcome)));
    let router = &shared.router;
    let (registration, record) = match (&principal.role, principal.device) {
        (Role::Agent, Some(id)) => {
            tracing::Span::current().record("agent.id", id.as_str());
            let record = Arc::new(DeviceRecord {
                id: id.clone(),
                conn: outbox.conn,
                tags: hello.tags.clone(),
                commands: hello.commands.clone(),
                agent_version: hello.agent.clone(),
                remote_addr: peer,
                connected_since: now,
                transport,
                rtt_us: std::sync::atomic::AtomicU64::new(0),
                stats: Arc::clone(&stats),
            });
            let reg = router.register(DeviceSession { outbox: outbox.clone(), record: Arc::clone(&record) });
            let connection = orb_store::Connection {
                id: id.to_string(),
                at: now,
                remote_addr: peer.to_string(),
                user_agent: user_agent.or_else(|| hello.agent.clone()),
                agent_version: hello.agent,
                commands: hello.commands,
                reported_tags: hello.tags,
                transport: transport.to_owned(),
            };
            registry.connected(connection);
            // Revoked or removed between the check above and the registration: close now.
            match registry.get(id.as_str()) {
                None => outbox.closer.close(CloseReason::Removed),
                Some(k) if k.revoked => outbox.closer.close(CloseReason::Revoked),
                Some(_) => {}
            }
            (Registered::Device { id, _registration: reg }, Some(record))
        }
        _ => (Registered::Operator { _guard: router.register_operator() }, None),
    };
    tracing::debug!(name, codec = codec.as_str(), "session established");
    Ok(Session {
        shared: Arc::clone(shared),
        outbox: outbox.clone(),
        name,
        role: principal.role,
        registered: registration,
        record,
        last: None,
        stats,
        inflight: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
        ping: None,
        pings_sent: 0,
    })
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Keeps a session in the registry while it lives.
enum Registered {
    Device { id: DeviceId, _registration: crate::router::Registration },
    Operator { _guard: crate::router::OperatorGuard },
}

struct Session {
    shared: Arc<Shared>,
    outbox: Outbox,
    name: String,
    role: Role,
    registered: Registered,
    /// The device's record (agents), where the measured RTT is kept.
    record: Option<Arc<DeviceRecord>>,
    /// The frame to send last (an error explaining the close), set when a frame ends the session.
    last: Option<Bytes>,
    /// Traffic counters of the connection (the writer counts what it sends).
    stats: Arc<LinkStats>,
    /// Server-handler commands of this session still running.
    inflight: Arc<std::sync::atomic::AtomicUsize>,
    /// The server's outstanding ping: its id and when it was sent (for RTT).
    ping: Option<(u64, Instant)>,
    pings_sent: u64,
}

impl Session {
    async fn run<R: FrameSource>(&mut self, source: &mut R) -> CloseReason {
        let limits = self.shared.router.limits();
        // One timer: every heartbeat interval the server pings (measuring RTT) and checks that the
        // peer said something within the timeout. Idle sessions wake only this often, and the
        // frame path reads no clock: silence is counted in intervals.
        // At least 1 ms: limits built through the library API are not validated like the config.
        let every = limits.heartbeat.min(limits.heartbeat_timeout / 2).max(Duration::from_millis(1));
        let mut heartbeat = tokio::time::interval_at(Instant::now() + every, every);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut heard, mut silent) = (true, 0u32);
        // Created once, not per frame: each `cancelled()` registers a waiter.
        let closer = self.outbox.closer.clone();
        let closed = closer.closed();
        tokio::pin!(closed);
        let shutdown = self.shared.shutdown.clone();
        let stopping = shutdown.cancelled();
        tokio::pin!(stopping);
        loop {
            tokio::select! {
                biased;
                reason = &mut closed => return reason,
                () = &mut stopping => return CloseReason::ServerShutdown,
                frame = source.next_frame() => match frame {
                    Ok(Some(f)) => {
                        heard = true;
                        self.stats.received(f.len());
                        if let Err(reason) = self.on_frame(&f) {
                            return reason;
                        }
                    }
                    Ok(None) | Err(TransportError::Io(_)) => return CloseReason::PeerClosed,
                    Err(e @ TransportError::FrameTooLarge { .. }) => {
                        self.last = Some(self.error_frame(None, ErrorCode::FrameTooLarge, e.to_string()));
                        return CloseReason::FrameTooLarge;
                    }
                    Err(e @ TransportError::Protocol(_)) => {
                        self.last = Some(self.error_frame(None, ErrorCode::BadFrame, e.to_string()));
                        return CloseReason::ProtocolViolation;
                    }
                },
                _ = heartbeat.tick() => {
                    if heard {
                        (heard, silent) = (false, 0);
                    } else {
                        silent += 1;
                        if every * silent >= limits.heartbeat_timeout {
                            return CloseReason::HeartbeatTimeout;
                        }
                    }
                    self.send_ping();
                }
            }
        }
    }

    /// Acts on one frame. `Err` ends the session with that reason.
    fn on_frame(&mut self, frame: &Bytes) -> Result<(), CloseReason> {
        let env = match self.outbox.codec.decode(frame) {
            Ok(env) => env,
            Err(e) => {
                self.last = Some(self.error_frame(None, ErrorCode::BadFrame, e.to_string()));
                return Err(CloseReason::ProtocolViolation);
            }
        };
        if tracing::enabled!(tracing::Level::TRACE) {
            crate::router::trace_envelope("in", self.outbox.conn, &env, frame.len());
        }
        match env.kind {
            Kind::Cmd => self.on_cmd(env),
            Kind::Reply => match &self.registered {
                Registered::Device { id, .. } => self.shared.router.on_device_reply(id, env, Instant::now()),
                Registered::Operator { .. } => {
                    tracing::debug!("reply from an operator session ignored")
                }
            },
            Kind::Ping => {
                let mut pong = Envelope::new(Kind::Pong);
                pong.re = env.id;
                self.send(&pong);
            }
            Kind::Pong => self.on_pong(env.re.as_deref(), Instant::now()),
            Kind::Bye => return Err(CloseReason::PeerClosed),
            Kind::Error => tracing::debug!(error = ?env.error, "peer reported an error"),
            Kind::Hello | Kind::Welcome | Kind::Ack | Kind::Event | Kind::Cancel => {
                let msg = format!("{} is not valid on an established session", env.kind.as_str());
                self.send(&Envelope::error(env.id, ErrorCode::BadRequest, msg));
            }
            Kind::Pub | Kind::Sub | Kind::Unsub | Kind::Config | Kind::Unknown => {
                let msg = "this message kind is not supported by this server".to_owned();
                self.send(&Envelope::error(env.id, ErrorCode::Unsupported, msg));
            }
        }
        Ok(())
    }

    fn send_ping(&mut self) {
        self.pings_sent += 1;
        let mut ping = Envelope::new(Kind::Ping);
        ping.id = Some(format!("s{}", self.pings_sent));
        self.send(&ping);
        self.ping = Some((self.pings_sent, Instant::now()));
    }

    fn on_pong(&mut self, re: Option<&str>, at: Instant) {
        let Some((id, sent)) = &self.ping else { return };
        if re.and_then(|r| r.strip_prefix('s')).and_then(|n| n.parse::<u64>().ok()) != Some(*id) {
            return;
        }
        let rtt = at.saturating_duration_since(*sent);
        if let Some(record) = &self.record {
            let us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX).max(1);
            record.rtt_us.store(us, std::sync::atomic::Ordering::Relaxed);
        }
        self.ping = None;
    }

    /// Queues `env`, encoded with the session's codec.
    fn send(&self, env: &Envelope) {
        let _ = self.outbox.deliver_env(env);
    }

    fn error_frame(&self, re: Option<String>, code: ErrorCode, message: impl Into<String>) -> Bytes {
        error_frame(self.outbox.codec, re, code, message)
    }

    fn reply_err(&self, re: String, e: ErrorBody) {
        self.send(&Envelope::reply_err(re, e.code, e.message));
    }

    fn on_cmd(&self, env: Envelope) {
        let Some(id) = env.id else {
            self.send(&Envelope::error(None, ErrorCode::BadRequest, "cmd needs an id"));
            return;
        };
        let Some(cmd) = env.cmd.filter(|c| !c.is_empty()) else {
            self.reply_err(id, ErrorBody::new(ErrorCode::BadRequest, "cmd needs a command name"));
            return;
        };
        let limits = self.shared.router.limits();
        let deadline_of =
            |default: Duration| env.deadline_ms.map_or(default, Duration::from_millis).min(limits.max_deadline);
        let operator_only =
            |what: &str| ErrorBody::new(ErrorCode::Forbidden, format!("{what} need an operator session (admin token)"));
        if env.target.is_some() && env.to.is_some() {
            return self.reply_err(id, ErrorBody::new(ErrorCode::BadRequest, "cmd has both to and target; use one"));
        }
        if let Some(target) = env.target {
            if self.role != Role::Operator {
                return self.reply_err(id, operator_only("jobs"));
            }
            if self.shared.router.is_draining() {
                let e = ErrorBody::new(ErrorCode::ServerShutdown, "the server is stopping and accepts no new jobs");
                return self.reply_err(id, e);
            }
            let req = JobRequest {
                requester_name: self.name.clone(),
                requester: self.outbox.clone(),
                re: id.clone(),
                cmd,
                target,
                body: env.body,
                deadline: deadline_of(limits.default_job_deadline),
            };
            if let Err(e) = jobs::submit(&self.shared.router, &self.shared.tracker, &self.shared.shutdown, req) {
                self.reply_err(id, e);
            }
        } else if let Some(to) = env.to {
            if self.role != Role::Operator {
                return self.reply_err(id, operator_only("requests to devices"));
            }
            let deadline = deadline_of(limits.default_request_deadline);
            let res = self.shared.router.forward_request(
                self.outbox.clone(),
                &self.name,
                id.clone(),
                &to,
                cmd,
                env.body,
                deadline,
            );
            if let Err(e) = res {
                self.reply_err(id, e);
            }
        } else {
            let ctx = Context {
                cmd,
                from: self.name.clone(),
                args: env.body.unwrap_or_else(|| Bytes::from_static(b"null")),
                job: None,
                deadline: deadline_of(limits.default_request_deadline),
                cancel: tokio_util::sync::CancellationToken::new(),
            };
            self.server_command(id, ctx);
        }
    }

    /// A command to the server itself: a reserved `$orb.` query or an application handler.
    fn server_command(&self, id: String, ctx: Context) {
        if ctx.cmd == orb_proto::message::commands::SIGNAL {
            if self.role != Role::Operator {
                let e = ErrorBody::new(ErrorCode::Forbidden, "signals need an operator session (admin token)");
                return self.reply_err(id, e);
            }
            let router = Arc::clone(&self.shared.router);
            let admin_tx = self.shared.admin_tx.clone();
            let outbox = self.outbox.clone();
            self.shared.tracker.spawn(async move {
                let result = admin::signal(&router, &admin_tx, &ctx).await;
                let _ = outbox.deliver_env(&handler::reply_envelope(id, result));
            });
            return;
        }
        if ctx.cmd.starts_with(RESERVED_PREFIX) {
            if self.role != Role::Operator {
                let e = ErrorBody::new(ErrorCode::Forbidden, format!("{} needs an operator session", ctx.cmd));
                return self.reply_err(id, e);
            }
            let router = Arc::clone(&self.shared.router);
            let outbox = self.outbox.clone();
            self.shared.tracker.spawn(async move {
                let result = builtin::answer(&router, &ctx).await.unwrap_or_else(|| {
                    Err(ErrorBody::new(ErrorCode::UnknownCommand, format!("no server command named {}", ctx.cmd)))
                });
                let _ = outbox.deliver_env(&handler::reply_envelope(id, result));
            });
            return;
        }
        let max = self.shared.router.limits().max_inflight_per_agent;
        let running = self.inflight.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        if self.role == Role::Agent && max > 0 && running >= max {
            self.inflight.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            let e = ErrorBody::new(ErrorCode::TooManyJobs, format!("at most {max} commands in flight per agent"));
            return self.reply_err(id, e);
        }
        let h = self.shared.handlers.get(&ctx.cmd);
        let outbox = self.outbox.clone();
        let inflight = Arc::clone(&self.inflight);
        self.shared.tracker.spawn(async move {
            let result = handler::run(h, ctx).await;
            inflight.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
            let _ = outbox.deliver_env(&handler::reply_envelope(id, result));
        });
    }
}

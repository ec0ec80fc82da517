//! The router: a concurrent registry of device sessions (no global lock on fan-out), the table of
//! open correlations (jobs and plain requests awaiting replies) and delivery into each session's
//! bounded outbound queue. Sessions, the job tracker and server handlers all share one `Arc<Router>`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use dashmap::DashMap;
use orb_io::queue::{QueueTx, TrySendError};
use orb_proto::message::{DeviceInfo, Role};
use orb_proto::{Codec, DeviceId, Envelope, ErrorBody, ErrorCode, Selector, SelectorErrorKind};
use tokio::time::Instant;

use crate::close::{CloseReason, Closer};
use crate::config::Limits;
use crate::jobs::JobInbox;
use crate::registry::Registry;

/// What the router knows about a connected device (immutable for the session's life).
#[derive(Debug)]
pub struct DeviceRecord {
    /// Device id.
    pub id: DeviceId,
    /// Connection id.
    pub conn: u64,
    /// Tags reported in hello.
    pub tags: BTreeMap<String, String>,
    /// Commands the device declared.
    pub commands: Vec<String>,
    /// Agent software reported in hello.
    pub agent_version: Option<String>,
    /// Peer address.
    pub remote_addr: SocketAddr,
    /// When the session was established.
    pub connected_since: DateTime<Utc>,
    /// `tcp` or `ws`.
    pub transport: &'static str,
    /// Last measured round-trip time in microseconds (0: not measured yet).
    pub rtt_us: AtomicU64,
    /// Frames and bytes in both directions, and when the last ones passed.
    pub stats: Arc<orb_io::transport::LinkStats>,
}

impl DeviceRecord {
    /// Last measured round-trip time in milliseconds.
    pub fn rtt_ms(&self) -> Option<f64> {
        match self.rtt_us.load(Ordering::Relaxed) {
            0 => None,
            us => Some(us as f64 / 1000.0),
        }
    }
}

/// RFC 3339 UTC with seconds, the form every listing uses.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The inventory line of a stored device, with its live session when connected.
pub fn device_info(d: &orb_store::Device, live: Option<&DeviceRecord>) -> DeviceInfo {
    DeviceInfo {
        id: d.id.clone(),
        connected: live.is_some(),
        tags: d.tags(),
        remote_addr: live.map(|r| r.remote_addr.to_string()).or_else(|| d.last_remote_addr.clone()),
        connected_since: live.map(|r| rfc3339(r.connected_since)),
        agent_version: d.agent_version.clone(),
        transport: live.map(|r| r.transport.to_owned()).or_else(|| d.transport.clone()),
        commands: d.commands.clone(),
        rtt_ms: live.and_then(DeviceRecord::rtt_ms),
        revoked: d.revoked,
        last_seen: if live.is_some() { Some(rfc3339(Utc::now())) } else { d.last_seen.map(rfc3339) },
    }
}

/// A device a selector matched: known to the registry, connected or not.
#[derive(Clone)]
pub struct Target {
    /// Device id.
    pub id: DeviceId,
    /// Its live session, when connected.
    pub session: Option<DeviceSession>,
}

/// A way to reach one session: its bounded outbound queue, its closer and the codec its frames
/// are encoded with.
#[derive(Clone)]
pub struct Outbox {
    /// Connection id (unique per server process).
    pub conn: u64,
    /// Encoded frames for the session's writer.
    pub tx: QueueTx,
    /// Ends the session (slow consumer, replaced).
    pub closer: Closer,
    /// The envelope codec negotiated in the session's handshake (JSON until the welcome is sent).
    pub codec: Codec,
}

/// Why a frame could not be queued for a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryError {
    /// The queue was full: the session is being closed as a slow consumer.
    SlowConsumer,
    /// The session is gone.
    Closed,
}

impl Outbox {
    /// Queues a frame without waiting. A full queue closes the session with `slow_consumer`:
    /// nothing is dropped silently, and a slow peer never stalls the sender.
    pub fn deliver(&self, frame: Bytes) -> Result<(), DeliveryError> {
        self.trace_out(&frame);
        match self.tx.try_send(frame) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.closer.close(CloseReason::SlowConsumer);
                Err(DeliveryError::SlowConsumer)
            }
            Err(TrySendError::Closed(_)) => Err(DeliveryError::Closed),
        }
    }

    /// Logs a frame queued for this session at TRACE (`--trace`), naming the connection.
    pub fn trace_out(&self, frame: &Bytes) {
        if !tracing::enabled!(tracing::Level::TRACE) {
            return;
        }
        match self.codec.decode(frame) {
            Ok(env) => trace_envelope("out", self.conn, &env, frame.len()),
            Err(_) => tracing::trace!(dir = "out", conn = self.conn, len = frame.len(), "undecodable frame"),
        }
    }

    /// Encodes `env` with this session's codec and queues it as [`Outbox::deliver`] does.
    pub fn deliver_env(&self, env: &Envelope) -> Result<(), DeliveryError> {
        self.deliver(self.codec.encode(env))
    }
}

/// Logs one frame at TRACE: direction, connection, kind, command, id, correlation, size.
pub(crate) fn trace_envelope(dir: &'static str, conn: u64, env: &Envelope, len: usize) {
    tracing::trace!(
        dir,
        conn,
        kind = env.kind.as_str(),
        cmd = env.cmd.as_deref(),
        id = env.id.as_deref(),
        re = env.re.as_deref(),
        len,
        "frame"
    );
}

/// A connected device session as the registry holds it.
#[derive(Clone)]
pub struct DeviceSession {
    /// How to reach it.
    pub outbox: Outbox,
    /// What it is.
    pub record: Arc<DeviceRecord>,
}

/// A plain request forwarded to a device, awaiting its reply.
pub struct PendingRequest {
    /// Where the reply goes.
    pub requester: Outbox,
    /// The requester's own id for the command.
    pub re: String,
    /// The device that must answer.
    pub device: DeviceId,
    /// When the requester is told `timeout`.
    pub deadline: Instant,
}

/// An open correlation: what a reply's `re` refers to.
pub enum Pending {
    /// A job: replies go to its inbox.
    Job(Arc<JobInbox>),
    /// A plain request: the reply is relayed to the requester.
    Request(PendingRequest),
}

/// The registry of sessions and open correlations.
pub struct Router {
    registry: Arc<Registry>,
    devices: DashMap<DeviceId, DeviceSession>,
    pending: DashMap<String, Pending>,
    groups: RwLock<BTreeMap<String, Selector>>,
    limits: RwLock<Arc<Limits>>,
    next_conn: AtomicU64,
    next_request: AtomicU64,
    operators: AtomicU64,
    connections: AtomicUsize,
    per_ip: DashMap<IpAddr, usize>,
    jobs_open: AtomicUsize,
    job_closed: tokio::sync::Notify,
    draining: AtomicBool,
    closes: [AtomicU64; CloseReason::ALL.len()],
    /// When the server started.
    pub started_at: DateTime<Utc>,
}

/// Holds one admitted connection's place in the connection limits; released on drop.
pub struct ConnectionGuard {
    router: Arc<Router>,
    ip: IpAddr,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.router.connections.fetch_sub(1, Ordering::Relaxed);
        self.router.per_ip.remove_if_mut(&self.ip, |_, n| {
            *n -= 1;
            *n == 0
        });
    }
}

/// Unregisters a device session when dropped, unless a newer session replaced it.
pub struct Registration {
    router: Arc<Router>,
    id: DeviceId,
    conn: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.router.devices.remove_if(&self.id, |_, s| s.outbox.conn == self.conn);
    }
}

/// Counts an operator session while alive.
pub struct OperatorGuard(Arc<Router>);

impl Drop for OperatorGuard {
    fn drop(&mut self) {
        self.0.operators.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Router {
    /// A router with no sessions, over the device `registry`.
    pub fn new(limits: Limits, groups: BTreeMap<String, Selector>, registry: Arc<Registry>) -> Router {
        Router {
            registry,
            devices: DashMap::new(),
            pending: DashMap::new(),
            groups: RwLock::new(groups),
            limits: RwLock::new(Arc::new(limits)),
            next_conn: AtomicU64::new(1),
            next_request: AtomicU64::new(1),
            operators: AtomicU64::new(0),
            connections: AtomicUsize::new(0),
            per_ip: DashMap::new(),
            jobs_open: AtomicUsize::new(0),
            job_closed: tokio::sync::Notify::new(),
            draining: AtomicBool::new(false),
            closes: std::array::from_fn(|_| AtomicU64::new(0)),
            started_at: Utc::now(),
        }
    }

    /// Every known device, connected or not.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// The limits in force (replaced as a whole on reload; sessions read them when they need them).
    pub fn limits(&self) -> Arc<Limits> {
        Arc::clone(&self.limits.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Replaces the limits (configuration reload). Existing queues keep their size.
    pub fn set_limits(&self, limits: Limits) {
        *self.limits.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(limits);
    }

    /// Admits a connection from `ip` under the total and per-address limits.
    ///
    /// # Errors
    /// `too_many_connections` naming the limit that was hit.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<ConnectionGuard, ErrorBody> {
        let limits = self.limits();
        let total = self.connections.fetch_add(1, Ordering::Relaxed) + 1;
        let mut at_ip = 0;
        self.per_ip.entry(ip).and_modify(|n| *n += 1).or_insert(1);
        if let Some(n) = self.per_ip.get(&ip) {
            at_ip = *n;
        }
        let guard = ConnectionGuard { router: Arc::clone(self), ip };
        if limits.max_connections > 0 && total > limits.max_connections {
            return Err(ErrorBody::new(
                ErrorCode::TooManyConnections,
                format!("the server holds its maximum of {} connections", limits.max_connections),
            ));
        }
        if limits.max_connections_per_ip > 0 && at_ip > limits.max_connections_per_ip {
            return Err(ErrorBody::new(
                ErrorCode::TooManyConnections,
                format!("{ip} holds the maximum of {} connections per address", limits.max_connections_per_ip),
            ));
        }
        Ok(guard)
    }

    /// Counts a closed session by reason.
    pub fn record_close(&self, reason: CloseReason) {
        self.closes[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Closed sessions so far, per reason.
    pub fn close_counts(&self) -> BTreeMap<&'static str, u64> {
        CloseReason::ALL.iter().map(|r| (r.as_str(), self.closes[*r as usize].load(Ordering::Relaxed))).collect()
    }

    /// Stops accepting jobs (graceful stop): new ones are refused with `server_shutdown`.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }

    /// Whether the server is draining.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// Jobs still waiting for answers.
    pub fn jobs_in_flight(&self) -> usize {
        self.jobs_open.load(Ordering::Acquire)
    }

    /// Resolves when no job is in flight.
    ///
    /// # Cancel safety
    /// Cancel-safe.
    pub async fn jobs_finished(&self) {
        loop {
            let notified = self.job_closed.notified();
            if self.jobs_in_flight() == 0 {
                return;
            }
            notified.await;
        }
    }

    /// A fresh connection id.
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// Registers a device session. An older session with the same id is closed with `replaced`:
    /// never two sessions for one id.
    pub fn register(self: &Arc<Self>, session: DeviceSession) -> Registration {
        let id = session.record.id.clone();
        let conn = session.outbox.conn;
        if let Some(old) = self.devices.insert(id.clone(), session) {
            old.outbox.closer.close(CloseReason::Replaced);
        }
        Registration { router: Arc::clone(self), id, conn }
    }

    /// Counts an operator session until the guard drops.
    pub fn register_operator(self: &Arc<Self>) -> OperatorGuard {
        self.operators.fetch_add(1, Ordering::Relaxed);
        OperatorGuard(Arc::clone(self))
    }

    /// Connected agents and operators.
    pub fn counts(&self) -> (u64, u64) {
        (self.devices.len() as u64, self.operators.load(Ordering::Relaxed))
    }

    /// Jobs and requests awaiting replies.
    pub fn pending_count(&self) -> u64 {
        self.pending.len() as u64
    }

    /// The session of a connected device.
    pub fn device(&self, id: &str) -> Option<DeviceSession> {
        self.devices.get(id).map(|s| s.clone())
    }

    /// Every connected device session, e.g. to say goodbye at shutdown.
    pub fn all_devices(&self) -> Vec<DeviceSession> {
        self.devices.iter().map(|e| e.value().clone()).collect()
    }

    /// Parses a selector and expands `group:` names from the configuration.
    ///
    /// # Errors
    /// `bad_selector` or `unknown_group` with the parser's message.
    pub fn parse_selector(&self, text: &str) -> Result<Selector, ErrorBody> {
        let sel = Selector::parse(text).map_err(|e| ErrorBody::new(ErrorCode::BadSelector, e.to_string()))?;
        if sel.group_names().is_empty() {
            return Ok(sel);
        }
        let groups = self.groups.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        sel.expand_groups(&|name| groups.get(name).cloned()).map_err(|e| {
            let code = match e.kind {
                SelectorErrorKind::UnknownGroup => ErrorCode::UnknownGroup,
                _ => ErrorCode::BadSelector,
            };
            ErrorBody::new(code, e.to_string())
        })
    }

    /// Replaces the named groups (configuration reload).
    pub fn set_groups(&self, groups: BTreeMap<String, Selector>) {
        *self.groups.write().unwrap_or_else(std::sync::PoisonError::into_inner) = groups;
    }

    /// Known devices matching `sel` (connected or not), sorted by id. A plain id list is looked
    /// up directly; anything else scans the registry shard by shard (no global lock).
    pub fn resolve(&self, sel: &Selector) -> Vec<Target> {
        let target = |id: &str| {
            let session = self.device(id);
            let id = session.as_ref().map(|s| s.record.id.clone()).or_else(|| DeviceId::new(id).ok())?;
            Some(Target { id, session })
        };
        let mut out: Vec<Target> = match sel.exact_ids() {
            Some(ids) => ids.into_iter().filter(|id| self.registry.get(id).is_some()).filter_map(target).collect(),
            None => self.registry.matching(|k| sel.matches(k)).iter().filter_map(|k| target(&k.id)).collect(),
        };
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out.dedup_by(|a, b| a.id == b.id);
        out
    }

    /// Opens a correlation for a job's replies.
    pub fn open_job(&self, job_id: String, inbox: Arc<JobInbox>) {
        self.jobs_open.fetch_add(1, Ordering::AcqRel);
        self.pending.insert(job_id, Pending::Job(inbox));
    }

    /// Closes a job's correlation: later replies are ignored.
    pub fn close_job(&self, job_id: &str) {
        if self.pending.remove(job_id).is_some() {
            self.jobs_open.fetch_sub(1, Ordering::AcqRel);
            self.job_closed.notify_waiters();
        }
    }

    /// Forwards a plain request to one device under a fresh server-side id.
    ///
    /// # Errors
    /// `device_offline` when the device is not connected or its queue refused the frame.
    // One caller (the session) passes the fields of one `cmd`; a struct would only rename them.
    #[allow(clippy::too_many_arguments)]
    pub fn forward_request(
        &self,
        requester: Outbox,
        requester_name: &str,
        re: String,
        device: &str,
        cmd: String,
        body: Option<Bytes>,
        deadline: std::time::Duration,
    ) -> Result<(), ErrorBody> {
        let offline = || ErrorBody::new(ErrorCode::DeviceOffline, format!("device {device} is not connected"));
        let target = self.device(device).ok_or_else(offline)?;
        let id = format!("r{}", self.next_request.fetch_add(1, Ordering::Relaxed));
        let mut env = Envelope::new(orb_proto::Kind::Cmd);
        env.id = Some(id.clone());
        env.cmd = Some(cmd);
        env.from = Some(requester_name.to_owned());
        env.deadline_ms = Some(u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX));
        env.body = body;
        self.pending.insert(
            id.clone(),
            Pending::Request(PendingRequest {
                requester,
                re,
                device: target.record.id.clone(),
                deadline: Instant::now() + deadline,
            }),
        );
        if target.outbox.deliver_env(&env).is_err() {
            self.pending.remove(&id);
            return Err(offline());
        }
        Ok(())
    }

    /// Routes a `reply` received from device `from` to the job or requester waiting for it.
    /// Replies nobody waits for (late, duplicate, forged) are dropped with a debug log.
    pub fn on_device_reply(&self, from: &DeviceId, env: Envelope, at: Instant) {
        let Some(re) = env.re.as_deref() else {
            tracing::debug!(agent.id = %from, "reply without re ignored");
            return;
        };
        // Plain requests carry server ids `r<n>`; job ids are UUIDs (hex), so one lookup suffices.
        if !re.starts_with('r') {
            let inbox = match self.pending.get(re).as_deref() {
                Some(Pending::Job(inbox)) => Arc::clone(inbox),
                _ => return self.late_reply(from, env),
            };
            inbox.answer_from(from, env, at);
            return;
        }
        let Some((_, Pending::Request(req))) = self.pending.remove_if(re, |_, p| match p {
            Pending::Request(r) => &r.device == from,
            Pending::Job(_) => false,
        }) else {
            tracing::debug!(agent.id = %from, re, "reply to nothing pending, or from a device that was not asked, ignored");
            return;
        };
        let mut out = env;
        out.re = Some(req.re);
        out.from = Some(from.to_string());
        let _ = req.requester.deliver_env(&out);
    }

    /// A reply to a job that has ended (its deadline passed, or the server restarted): stored as a
    /// late result, which replaces only a `timeout` of that very device in that job.
    fn late_reply(&self, from: &DeviceId, env: Envelope) {
        let Some(job) = env.re.filter(|re| uuid::Uuid::try_parse(re).is_ok()) else {
            tracing::debug!(agent.id = %from, "reply to nothing pending ignored");
            return;
        };
        let (status, result, error) = match env.error {
            Some(e) => (orb_proto::Status::Error, None, Some(e)),
            None => {
                let body = env.body.unwrap_or_else(|| Bytes::from_static(b"null"));
                (orb_proto::Status::Ok, Some(String::from_utf8_lossy(&body).into_owned()), None)
            }
        };
        let outcome = orb_store::TargetOutcome {
            job,
            device: from.to_string(),
            status,
            result,
            error,
            elapsed_ms: None,
            at: Utc::now(),
            late: true,
        };
        // Never waits and never spawns: a device sending bogus replies cannot pile up work.
        if !self.registry.recorder().try_record(orb_store::Record::TargetsSettled(vec![outcome])) {
            tracing::warn!(agent.id = %from, "the store is behind; a late result was dropped");
        }
    }

    /// The inbox of a running job, to cancel it.
    pub fn running_job(&self, job_id: &str) -> Option<Arc<JobInbox>> {
        match self.pending.get(job_id).as_deref() {
            Some(Pending::Job(inbox)) => Some(Arc::clone(inbox)),
            _ => None,
        }
    }

    /// Answers `timeout` to every plain request whose deadline passed. Called periodically.
    pub fn expire_requests(&self, now: Instant) {
        let expired: Vec<String> = self
            .pending
            .iter()
            .filter_map(|e| match e.value() {
                Pending::Request(r) if r.deadline <= now => Some(e.key().clone()),
                _ => None,
            })
            .collect();
        for id in expired {
            if let Some((_, Pending::Request(req))) = self.pending.remove(&id) {
                let env = Envelope::reply_err(
                    req.re,
                    ErrorCode::Timeout,
                    format!("device {} did not answer before the deadline", req.device),
                );
                let _ = req.requester.deliver_env(&env);
            }
        }
    }

    /// Inventory of known devices matching `sel` (all when `None`; only connected ones when
    /// `connected_only`), sorted by id: the registry selects, the store (flushed first) describes.
    ///
    /// # Errors
    /// `store_unavailable`.
    pub async fn device_infos(
        &self,
        sel: Option<&Selector>,
        connected_only: bool,
    ) -> Result<Vec<DeviceInfo>, ErrorBody> {
        let wanted: std::collections::HashSet<String> = self
            .registry
            .matching(|k| sel.is_none_or(|s| s.matches(k)))
            .iter()
            .filter(|k| !connected_only || self.devices.contains_key(k.id.as_str()))
            .map(|k| k.id.clone())
            .collect();
        let store = self.registry.store();
        store.flush().await.map_err(crate::registry::store_error)?;
        let devices = store.devices().await.map_err(crate::registry::store_error)?;
        Ok(devices
            .iter()
            .filter(|d| wanted.contains(&d.id))
            .map(|d| {
                let live = self.device(&d.id);
                device_info(d, live.as_ref().map(|s| s.record.as_ref()))
            })
            .collect())
    }
}

/// Who sent a frame, as sessions pass it to the router and handlers.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Device id, or the operator session's name.
    pub name: String,
    /// Agent or operator.
    pub role: Role,
}

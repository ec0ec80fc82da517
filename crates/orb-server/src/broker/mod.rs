//! The broker's one door. Every way into the broker (the wire session today; the HTTP API, the
//! scheduler, durable queues and a backplane later) is an adapter over [`Broker`]: it submits
//! jobs ([`Broker::submit`], typed [`JobEvent`](crate::jobs::JobEvent)s back), sends plain
//! requests to one device ([`Broker::request`], the reply to a [`ReplySink`]), calls the server's
//! own handlers ([`Broker::call`]) and uses the typed services of the `$orb.` queries
//! (`services`: devices, job history, server information, selectors). Only adapters encode
//! frames; the broker deals in typed values and raw JSON bodies. Every permission check goes
//! through one [`Policy`].
//!
//! Modules: `policy` (who may do what), `services` (the typed services), `queries` (the `$orb.`
//! command names mapped onto them, for the wire protocol), `declared` (a job's command checked
//! against the commands its targets declared), `audit` (operator actions recorded for the audit
//! log, at this door).

mod agent_schedules;
mod audit;
mod declared;
mod fleet;
pub(crate) mod gate;
mod held;
mod messages;
mod policy;
mod pubsub;
mod queries;
pub mod services;
mod settler;
pub(crate) mod tally;
pub(crate) mod telemetry;

pub use fleet::FleetRules;
pub(crate) use fleet::{HelloSubject, digest as settings_digest};
pub use messages::{MAX_MESSAGE_ID, MessageSpec, Stored};
pub use policy::{Acl, Action, Policy, Reach};

pub(crate) use audit::Audited;
pub(crate) use held::Delivering;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use orb_io::handler::{self, Context, Handlers};
use orb_proto::message::Select;
use orb_proto::{DeviceId, ErrorBody, ErrorCode, RESERVED_PREFIX, Selector, SelectorErrorKind};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::AdminRequest;
use crate::config::Limits;
use crate::identity::{Identity, Requester};
use crate::jobs::{JobHandle, JobSpec, Jobs, Outcome};
use crate::metrics::ProgressDrop;
use crate::node::NodeId;
use crate::registry::Registry;
use crate::router::admission::Admission;
use crate::router::correlation::{
    Answer, Correlations, PendingRequest, ProgressSink, Progressed, Reply, ReplySink, Routed,
};
use crate::router::sessions::{Sessions, Target};
use crate::router::stats::Stats;

/// A plain request to one device (form 2 of the protocol).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestSpec {
    /// The device id.
    pub to: String,
    /// Command name.
    pub command: String,
    /// Arguments as JSON bytes.
    pub args: Option<Bytes>,
    /// Time the device has to answer (`None`: the server's default; capped at its maximum).
    pub deadline: Option<Duration>,
}

/// A command to the server itself (form 1): a `$orb.` query or an application handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallSpec {
    /// Command name.
    pub command: String,
    /// Arguments as JSON bytes.
    pub args: Option<Bytes>,
    /// Time the handler has (`None`: the server's default request deadline; capped).
    pub deadline: Option<Duration>,
}

/// The broker. Cheap to clone; every adapter holds one.
#[derive(Clone)]
pub struct Broker(Arc<Inner>);

struct Inner {
    node: NodeId,
    registry: Arc<Registry>,
    sessions: Arc<Sessions>,
    correlations: Arc<Correlations>,
    admission: Arc<Admission>,
    stats: Stats,
    jobs: Jobs,
    groups: RwLock<BTreeMap<String, Selector>>,
    limits: RwLock<Arc<Limits>>,
    /// `limits.max_frame`, read on every reply without taking the limits' lock.
    max_frame: std::sync::atomic::AtomicUsize,
    handlers: Handlers,
    policy: Arc<Policy>,
    admin_tx: mpsc::Sender<AdminRequest>,
    tracker: TaskTracker,
    draining: AtomicBool,
    /// While draining: when the grace period ends (closing sessions may write until then).
    drain_deadline: std::sync::Mutex<Option<Instant>>,
    /// Cancelled when the server has stopped serving sessions.
    shutdown: CancellationToken,
    /// Devices with held commands, and those whose held commands are being delivered now.
    delivering: Arc<held::Delivering>,
    /// Held commands' outcomes, committed in groups.
    settler: settler::Settler,
    /// Devices' delivery counts not written to the store yet.
    tally: Arc<tally::Tally>,
    /// Told when a schedule is created, paused, resumed or removed: the scheduler wakes.
    schedules_changed: tokio::sync::Notify,
    /// Devices owed their agent-local schedules.
    agent_sync: Arc<agent_schedules::SyncQueue>,
    /// Every connection's pub/sub subscriptions (shared with the jobs, which publish progress).
    topics: Arc<crate::router::topics::Topics>,
    /// Each topic's retained publication (locked while one is retained or a subscription
    /// starts), and where changes go to be stored.
    retained: std::sync::Mutex<crate::router::retained::RetainedSet>,
    retained_writer: crate::router::retained::RetainedWriter,
    /// The server's metrics (shared with the jobs and the router, which count into them).
    metrics: Arc<crate::metrics::Metrics>,
    /// Each device's latest telemetry (`telemetry.<id>.sys`).
    telemetry: telemetry::Latest,
    /// The `[[fleet.agents]]` rules: settings pushed to agents.
    fleet: RwLock<Arc<FleetRules>>,
}

/// What [`Broker::new`] is made of.
pub(crate) struct Parts {
    pub node: NodeId,
    pub registry: Arc<Registry>,
    pub limits: Limits,
    pub acl: Acl,
    /// The retained publications the store kept.
    pub retained: Vec<orb_store::Retained>,
    pub groups: BTreeMap<String, Selector>,
    pub handlers: Handlers,
    pub admin_tx: mpsc::Sender<AdminRequest>,
    pub tracker: TaskTracker,
    pub shutdown: CancellationToken,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub fleet: FleetRules,
}

impl Broker {
    pub(crate) fn new(p: Parts) -> Broker {
        let correlations = Arc::new(Correlations::new(p.node.clone()));
        let (held_tx, held_rx) = mpsc::unbounded_channel();
        let delivering = Arc::new(held::Delivering::default());
        let sessions = Arc::new(Sessions::default());
        let topics = Arc::new(crate::router::topics::Topics::new(Arc::clone(&p.metrics)));
        let tally = Arc::new(tally::Tally::default());
        let jobs = Jobs::new(crate::jobs::JobsParts {
            node: p.node.clone(),
            correlations: Arc::clone(&correlations),
            recorder: p.registry.recorder().clone(),
            store: Arc::clone(p.registry.store()),
            held_tx,
            delivering: Arc::clone(&delivering),
            tally: Arc::clone(&tally),
            sessions: Arc::clone(&sessions),
            topics: Arc::clone(&topics),
            tracker: p.tracker.clone(),
            metrics: Arc::clone(&p.metrics),
        });
        let settler = settler::Settler::start(Arc::clone(p.registry.store()), Arc::clone(&tally));
        let retained_writer = crate::router::retained::RetainedWriter::start(
            Arc::clone(p.registry.store()),
            &p.tracker,
            p.shutdown.clone(),
        );
        let broker = Broker(Arc::new(Inner {
            node: p.node,
            registry: p.registry,
            sessions,
            correlations,
            admission: Arc::new(Admission::default()),
            stats: Stats::default(),
            jobs,
            groups: RwLock::new(p.groups),
            max_frame: std::sync::atomic::AtomicUsize::new(p.limits.max_frame),
            limits: RwLock::new(Arc::new(p.limits)),
            handlers: p.handlers,
            policy: Arc::new(Policy::new(p.acl)),
            admin_tx: p.admin_tx,
            tracker: p.tracker,
            draining: AtomicBool::new(false),
            drain_deadline: std::sync::Mutex::new(None),
            shutdown: p.shutdown,
            delivering,
            settler,
            tally,
            schedules_changed: tokio::sync::Notify::new(),
            agent_sync: Arc::default(),
            topics,
            retained: std::sync::Mutex::new(crate::router::retained::RetainedSet::load(p.retained)),
            retained_writer,
            metrics: p.metrics,
            telemetry: telemetry::Latest::default(),
            fleet: RwLock::new(Arc::new(p.fleet)),
        }));
        broker.0.tracker.spawn(held::newly_held(Arc::downgrade(&broker.0), held_rx, broker.0.shutdown.clone()));
        let (weak, queue) = (Arc::downgrade(&broker.0), Arc::clone(&broker.0.agent_sync));
        broker.0.tracker.spawn(agent_schedules::run(weak, queue, broker.0.shutdown.clone()));
        broker
    }

    /// This server's node id.
    pub fn node(&self) -> &NodeId {
        &self.0.node
    }

    /// Every known device, connected or not.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.0.registry
    }

    /// The connected sessions.
    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.0.sessions
    }

    /// Connection limits and the enrollment limiter.
    pub fn admission(&self) -> &Arc<Admission> {
        &self.0.admission
    }

    /// Counters since start.
    pub fn stats(&self) -> &Stats {
        &self.0.stats
    }

    /// The server's metrics.
    pub(crate) fn metrics(&self) -> &Arc<crate::metrics::Metrics> {
        &self.0.metrics
    }

    /// Device `id`'s latest telemetry, when it published any since the server started.
    pub(crate) fn telemetry(&self, id: &str) -> Option<telemetry::Sample> {
        self.0.telemetry.get(id)
    }

    /// The running jobs.
    pub fn jobs(&self) -> &Jobs {
        &self.0.jobs
    }

    /// The access policy.
    pub fn policy(&self) -> &Policy {
        &self.0.policy
    }

    /// Where tasks the broker starts are tracked.
    pub(crate) fn tracker(&self) -> &TaskTracker {
        &self.0.tracker
    }

    /// Cancelled when the server closes its sessions.
    pub(crate) fn shutdown_token(&self) -> &CancellationToken {
        &self.0.shutdown
    }

    /// The limits in force (replaced as a whole on reload; readers take them when they need them).
    pub fn limits(&self) -> Arc<Limits> {
        Arc::clone(&self.0.limits.read().unwrap_or_else(std::sync::PoisonError::into_inner))
    }

    /// Replaces the limits (configuration reload). Existing queues keep their size.
    pub fn set_limits(&self, limits: Limits) {
        self.0.max_frame.store(limits.max_frame, Ordering::Relaxed);
        *self.0.limits.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(limits);
    }

    /// Replaces the named groups (configuration reload); devices get their agent-local
    /// schedules again (a `group:` selector may match others now).
    pub fn set_groups(&self, groups: BTreeMap<String, Selector>) {
        *self.0.groups.write().unwrap_or_else(std::sync::PoisonError::into_inner) = groups;
        self.sync_agent_schedules(None);
    }

    /// Stops accepting jobs and requests (graceful stop): new ones are refused with
    /// `server_shutdown`.
    pub fn start_draining(&self) {
        self.0.draining.store(true, Ordering::Release);
        self.0.jobs.stop_accepting();
    }

    /// The grace period of a drain ends at `deadline`: sessions closing until then may take
    /// that long to write what is queued for them.
    pub(crate) fn set_drain_deadline(&self, deadline: Instant) {
        *self.0.drain_deadline.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(deadline);
    }

    /// How long a closing session may take to write what is queued and its goodbye: the
    /// configured linger, or while draining what is left of the grace period if longer (a
    /// requester's last job events are not cut off).
    pub(crate) fn close_linger(&self) -> Duration {
        let linger = self.limits().close_linger;
        let deadline = *self.0.drain_deadline.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        deadline.map_or(linger, |d| d.saturating_duration_since(Instant::now()).max(linger))
    }

    /// Whether the server is draining.
    pub fn is_draining(&self) -> bool {
        self.0.draining.load(Ordering::Acquire)
    }

    fn refuse_when_draining(&self) -> Result<(), ErrorBody> {
        if self.is_draining() {
            return Err(ErrorBody::new(ErrorCode::ServerShutdown, "the server is stopping and accepts no new work"));
        }
        Ok(())
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
        let groups = self.0.groups.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        sel.expand_groups(&|name| groups.get(name).cloned()).map_err(|e| {
            let code = match e.kind {
                SelectorErrorKind::UnknownGroup => ErrorCode::UnknownGroup,
                _ => ErrorCode::BadSelector,
            };
            ErrorBody::new(code, e.to_string())
        })
    }

    /// Known devices matching `sel` (connected or not), sorted by id; revoked devices are never
    /// targets. A plain id list is looked up directly; anything else scans the registry shard by
    /// shard (no global lock).
    pub fn resolve(&self, sel: &Selector) -> Vec<Target> {
        let sessions = &self.0.sessions;
        let target = |id: &str| {
            let session = sessions.get(id);
            let id = session.as_ref().map(|s| s.record.id.clone()).or_else(|| DeviceId::new(id).ok())?;
            Some(Target { id, session })
        };
        let registry = &self.0.registry;
        let mut out: Vec<Target> = match sel.exact_ids() {
            Some(ids) => {
                ids.into_iter().filter(|id| registry.get(id).is_some_and(|k| !k.revoked)).filter_map(target).collect()
            }
            None => registry.matching(|k| !k.revoked && sel.matches(k)).iter().filter_map(|k| target(&k.id)).collect(),
        };
        out.sort_by(|a, b| a.id.cmp(&b.id));
        out.dedup_by(|a, b| a.id == b.id);
        out
    }

    /// Starts delivering the commands held for `device` (jobs sent with a TTL) now that it is
    /// connected: one at a time, oldest first, in a task of its own.
    pub fn deliver_held(&self, device: DeviceId) {
        held::start(self, device);
    }

    /// `device`'s session on connection `conn` ended: a job that handed it a held command on
    /// that session, still unanswered, reports it `queued`.
    pub(crate) fn held_session_ended(&self, device: &DeviceId, conn: u64) {
        self.0.delivering.session_ended(device, conn);
    }

    /// Ends the held commands whose TTL passed (status `expired`); run every second.
    pub async fn expire_held(&self) {
        held::expire(self).await;
    }

    /// Resolves when a schedule changed since the last call (a change meanwhile is not lost).
    pub(crate) async fn schedules_changed(&self) {
        self.0.schedules_changed.notified().await;
    }

    /// Adds the delivery counts gathered in memory to the store (every few seconds, and at
    /// shutdown); logged when the store fails (they are kept and written next time).
    pub(crate) async fn write_delivery_counts(&self) {
        if let Err(e) = self.0.tally.write(self.registry().store().as_ref()).await {
            tracing::warn!(error = %e, "cannot write delivery counts; kept for the next try");
        }
    }

    /// Submits a job: the one way every adapter starts one.
    ///
    /// # Errors
    /// `forbidden`, `server_shutdown`, `bad_body`, `bad_selector`, `unknown_group`, `no_match`
    /// (also when `select: online` finds every matched device offline), `unknown_command` (no
    /// target declares the command, though every target declared its commands; devices that
    /// never connected are left out),
    /// `too_many_jobs`, `frame_too_large`; nothing is sent then.
    pub fn submit(&self, who: &Requester, spec: JobSpec) -> Result<JobHandle, ErrorBody> {
        self.submit_with_progress(who, spec, None)
    }

    /// [`Broker::submit`] for a requester that wants its targets' `progress` (protocol section
    /// 4.13): the command goes out with `progress: true`, and what each target reports while
    /// it is pending goes to `progress`, best effort. A job with a TTL gets none (its commands
    /// are delivered from the store).
    ///
    /// # Errors
    /// As [`Broker::submit`].
    pub fn submit_with_progress(
        &self,
        who: &Requester,
        spec: JobSpec,
        progress: Option<Arc<dyn ProgressSink>>,
    ) -> Result<JobHandle, ErrorBody> {
        if !audit::recorded(who) {
            return self.start_job(who, spec, progress);
        }
        let (target, command) = (spec.target.clone(), spec.command.clone());
        let result = self.start_job(who, spec, progress);
        let job = result.as_ref().ok().map(|h| h.accepted.job.clone());
        self.audit(who, Audited::JobSubmit, &target, serde_json::json!({ "command": command, "job": job }), &result);
        result
    }

    /// [`Broker::submit`] without its audit.
    fn start_job(
        &self,
        who: &Requester,
        spec: JobSpec,
        progress: Option<Arc<dyn ProgressSink>>,
    ) -> Result<JobHandle, ErrorBody> {
        let reach = self.reach(who, &spec.command)?;
        self.refuse_when_draining()?;
        check_command_name(&spec.command)?;
        check_not_reserved(&spec.command)?;
        check_args(spec.args.as_ref())?;
        let sel = self.parse_selector(&spec.target)?;
        let mut targets = self.resolve(&sel);
        if targets.is_empty() {
            let msg = format!("no known device matches '{}'", orb_proto::excerpt(&spec.target));
            return Err(ErrorBody::new(ErrorCode::NoMatch, msg));
        }
        // Targets an operator's rules do not reach stay in the job, `denied`; nothing is sent
        // to them. When none is left, the job is refused. An agent's are left out instead: a
        // device does not learn which other devices exist.
        let mut denied: HashSet<DeviceId> = match reach {
            Reach::Any => HashSet::new(),
            Reach::Only(_) => targets
                .iter()
                .filter(|t| !self.0.registry.get(t.id.as_str()).is_some_and(|k| reach.allows(&k)))
                .map(|t| t.id.clone())
                .collect(),
        };
        let refused = || {
            let msg = format!(
                "no device matching '{}' may receive '{}' from {}: no access rule allows it",
                orb_proto::excerpt(&spec.target),
                orb_proto::excerpt(&spec.command),
                who.identity.name
            );
            ErrorBody::new(ErrorCode::Forbidden, msg)
        };
        if denied.len() == targets.len() {
            return Err(refused());
        }
        if who.identity.role != orb_proto::message::Role::Operator {
            targets.retain(|t| !denied.contains(&t.id));
            denied.clear();
        }
        let matched = targets.len();
        if spec.select == Select::One && (spec.ttl.is_some_and(|t| !t.is_zero()) || spec.rollout.is_staged()) {
            let msg = "select one sends to one connected device now: it takes no ttl, splay or batch";
            return Err(ErrorBody::new(ErrorCode::BadRequest, msg));
        }
        match spec.select {
            // "Any one of" picks among the devices it may reach.
            Select::One => targets.retain(|t| t.session.is_some() && !denied.contains(&t.id)),
            Select::Online => targets.retain(|t| t.session.is_some()),
            Select::All => {}
        }
        let skipped = (matched - targets.len()) as u64;
        if targets.is_empty() {
            let msg = format!(
                "no connected device matches '{}': {matched} matched device{} offline",
                orb_proto::excerpt(&spec.target),
                if matched == 1 { " is" } else { "s are" }
            );
            return Err(ErrorBody::new(ErrorCode::NoMatch, msg));
        }
        if targets.iter().all(|t| denied.contains(&t.id)) {
            return Err(refused());
        }
        let registry = &self.0.registry;
        // What each target declared in its last hello. A pre-registered device that never
        // connected has declared nothing yet: it says nothing about the command (it ends
        // `offline`), so it neither allows nor refuses it. A connected one whose list lacks the
        // command is not sent it: it ends `error` `unknown_command`, decided here (unless no
        // target declares it at all: then the job is refused). An offline one may come back
        // declaring it: a command held for it is judged when it is delivered.
        // Only the lists that lack the command are kept: when every target's does, they name the
        // closest commands in the refusal (a fan-out whose targets declare it keeps none).
        let mut lacking = Vec::new();
        let mut not_declaring = Vec::new();
        let mut someone_declares = false;
        for t in targets.iter().filter(|t| !denied.contains(&t.id)) {
            match registry.get(t.id.as_str()) {
                Some(k) if k.first_seen.is_none() && t.session.is_none() => {}
                Some(k) if declares(&k.commands, &spec.command) => someone_declares = true,
                Some(k) => {
                    if t.session.is_some() {
                        not_declaring.push(t.id.clone());
                    }
                    lacking.push(Arc::clone(&k.commands));
                }
                None => someone_declares = true,
            }
        }
        if !someone_declares {
            declared::check(&spec.command, lacking)?;
        }
        if spec.select == Select::One {
            // "Any one of" goes to a device that can run it: one that declares the command, or
            // declared nothing.
            targets.retain(|t| {
                registry.get(t.id.as_str()).is_none_or(|k| k.commands.is_empty() || k.commands.contains(&spec.command))
            });
        }
        // Targets that end at once, nothing sent: denied, or not declaring the command.
        let name = &who.identity.name;
        let mut settled: HashMap<DeviceId, Outcome> = denied
            .into_iter()
            .map(|id| {
                let e = gate::denied(name, &spec.command, id.as_str());
                (id, Outcome::Denied(e))
            })
            .collect();
        for id in not_declaring {
            let e = undeclared(id.as_str(), &spec.command);
            settled.insert(id, Outcome::Error(e));
        }
        let gate = self.gate(who.identity.clone(), spec.command.clone());
        let resolved = crate::jobs::Resolved { targets, skipped, settled };
        self.0.jobs.start(who, spec, resolved, &self.limits(), gate, progress)
    }

    /// Sends a plain request to one connected device; `sink` receives exactly one reply: the
    /// device's, a `timeout` at the deadline, or the refusal (`forbidden`, `server_shutdown`,
    /// `bad_body`, `device_offline`, `frame_too_large`).
    pub fn request(&self, who: &Requester, spec: RequestSpec, sink: Box<dyn ReplySink>) {
        if let Err(e) = check_not_reserved(&spec.command) {
            return sink.complete(Reply { from: None, answer: Err(e) });
        }
        self.send_request(who, spec, sink);
    }

    /// [`Broker::request`] without the check that the command is not one of the server's own
    /// (`$orb.`): the server sends those to devices itself (a sync of agent-local schedules).
    fn send_request(&self, who: &Requester, spec: RequestSpec, sink: Box<dyn ReplySink>) {
        let refusal = |e: ErrorBody| Reply { from: None, answer: Err(e) };
        if let Err(e) = self
            .reach(who, &spec.command)
            .and_then(|reach| match self.0.registry.get(&spec.to) {
                Some(k) if reach.allows(&k) => Ok(()),
                _ if reach == Reach::Any => Ok(()),
                _ => Err(ErrorBody::new(
                    ErrorCode::Forbidden,
                    format!(
                        "{} may not send '{}' to {} (acl.peers)",
                        who.identity.name,
                        orb_proto::excerpt(&spec.command),
                        orb_proto::excerpt(&spec.to)
                    ),
                )),
            })
            .and_then(|()| self.refuse_when_draining())
            .and_then(|()| check_command_name(&spec.command))
            .and_then(|()| check_args(spec.args.as_ref()))
        {
            if audit::recorded(who) {
                let detail = serde_json::json!({ "command": spec.command });
                self.audit(who, Audited::RequestSend, &spec.to, detail, &Err::<(), _>(e.clone()));
            }
            return sink.complete(refusal(e));
        }
        let offline = || {
            let msg = format!("device {} is not connected", orb_proto::excerpt(&spec.to));
            ErrorBody::new(ErrorCode::DeviceOffline, msg)
        };
        let Some(target) = self.0.sessions.get(&spec.to) else {
            return sink.complete(refusal(offline()));
        };
        let limits = self.limits();
        let deadline = spec.deadline.unwrap_or(limits.default_request_deadline).min(limits.max_deadline);
        let wants_progress = sink.wants_progress();
        let id = self.0.correlations.open_request(PendingRequest {
            device: target.record.id.clone(),
            deadline: crate::jobs::instant_after(Instant::now(), deadline),
            sink,
        });
        let mut env = orb_proto::Envelope::new(orb_proto::Kind::Cmd);
        env.id = Some(id.to_string());
        env.cmd = Some(spec.command);
        env.from = Some(who.identity.name.clone());
        env.deadline_ms = Some(u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX));
        env.progress = wants_progress.then_some(true);
        env.body = spec.args;
        let frame = target.outbox.codec.encode(&env);
        let failure = if frame.len() > target.outbox.max_frame {
            Some(ErrorBody::new(
                ErrorCode::FrameTooLarge,
                format!(
                    "the command frame would be {} bytes, above the frame limit of {} bytes",
                    frame.len(),
                    target.outbox.max_frame
                ),
            ))
        } else {
            let len = frame.len();
            match target.outbox.deliver(frame) {
                Ok(()) => {
                    self.0.metrics.sent(orb_proto::Kind::Cmd, len);
                    None
                }
                Err(_) => Some(offline()),
            }
        };
        if let Some(e) = failure
            && let Some(sink) = self.0.correlations.withdraw_request(&id)
        {
            sink.complete(refusal(e));
        }
    }

    /// The gate that judges again, when a command of `who`'s leaves later, whether `who` may
    /// still send `command` to its device.
    pub(crate) fn gate(&self, who: Identity, command: String) -> gate::Gate {
        gate::Gate::new(Arc::clone(&self.0.policy), Arc::clone(&self.0.registry), who, command)
    }

    /// Which devices `who` may send `command` to (see [`Policy::reach`]).
    fn reach(&self, who: &Requester, command: &str) -> Result<Reach, ErrorBody> {
        let sender = who.identity.device.as_ref().and_then(|d| self.0.registry.get(d.as_str()));
        self.0.policy.reach(&who.identity, sender.as_deref(), command)
    }

    /// Calls the server itself: a reserved `$orb.` query or an application handler registered
    /// with the server. Resolves to the result as JSON bytes.
    ///
    /// # Errors
    /// `forbidden`, `unknown_command`, `bad_args`, `bad_body`, the query's or handler's codes.
    pub async fn call(&self, who: &Requester, call: CallSpec) -> Result<Bytes, ErrorBody> {
        check_args(call.args.as_ref())?;
        let args = call.args.unwrap_or_else(|| Bytes::from_static(b"null"));
        if call.command.starts_with(RESERVED_PREFIX) {
            return queries::answer(self, who, &call.command, args).await;
        }
        self.0.policy.check(&who.identity, &Action::Call { command: &call.command })?;
        let limits = self.limits();
        let ctx = Context {
            cmd: call.command,
            from: who.identity.name.clone(),
            args,
            job: None,
            deadline: call.deadline.unwrap_or(limits.default_request_deadline).min(limits.max_deadline),
            cancel: CancellationToken::new(),
            progress: orb_io::handler::Progress::off(),
        };
        let handler = self.0.handlers.get(&ctx.cmd);
        let value = handler::run(handler, ctx).await?;
        serde_json::to_vec(&value)
            .map(Bytes::from)
            .map_err(|e| ErrorBody::new(ErrorCode::Internal, format!("the handler's result does not encode: {e}")))
    }

    /// Device `from` answered `re`: the answer goes to the job or requester waiting for it; an
    /// answer to a job that ended is stored as a late result; anything else is dropped.
    pub fn reply_from(&self, from: &DeviceId, re: &str, answer: Answer) {
        let relayable = self.0.max_frame.load(Ordering::Relaxed).saturating_sub(RELAY_RESERVE);
        let answer = match answer {
            Ok(body) if body.len() > relayable => Err(ErrorBody::new(
                ErrorCode::FrameTooLarge,
                format!(
                    "the device's result ({} bytes) is too large to relay within the frame limit (results up to {relayable} bytes)",
                    body.len()
                ),
            )),
            Ok(body) => match orb_proto::body::check(&body) {
                Ok(()) => Ok(body),
                Err(e) => Err(ErrorBody::new(ErrorCode::BadBody, format!("the device's result was refused: {e}"))),
            },
            // An error's data counts like a result: what cannot be relayed whole is replaced.
            Err(e) if e.weight() > relayable => Err(ErrorBody::new(
                ErrorCode::FrameTooLarge,
                format!(
                    "the device's error {} ({} bytes with its data) is too large to relay within the frame limit \
                     (up to {relayable} bytes)",
                    e.code,
                    e.weight()
                ),
            )),
            Err(e) => Err(e),
        };
        match self.0.correlations.route(from, re, answer.clone(), Instant::now()) {
            Routed::Delivered => {}
            Routed::Late { job } => self.record_late(from, job, answer),
            Routed::Unknown => {
                tracing::debug!(agent.id = %from, re = %orb_proto::excerpt(re), "reply to nothing pending ignored")
            }
        }
    }

    /// Device `from` reported progress on command `re`: passed on to its requester while the
    /// command is pending and its requester asked for it; dropped otherwise, and when the
    /// requester has no room for it (counted in `orb_progress_dropped_total`). Never waits.
    pub fn progress_from(&self, from: &DeviceId, re: &str, body: Bytes) {
        match self.0.correlations.progress(from, re, body) {
            Progressed::Passed => {}
            Progressed::Dropped => self.0.metrics.progress_dropped(ProgressDrop::QueueFull),
            Progressed::NotPending => self.0.metrics.progress_dropped(ProgressDrop::NotPending),
        }
    }

    /// Stores a late answer beside the target's outcome. Never waits and never spawns: a device
    /// sending bogus replies cannot pile up work.
    fn record_late(&self, from: &DeviceId, job: String, answer: Answer) {
        let outcome = crate::jobs::late_outcome(job, from, answer);
        if !self.0.registry.recorder().try_record(orb_store::Record::TargetsSettled(vec![outcome])) {
            tracing::warn!(agent.id = %from, "the store is behind; a late result was dropped");
        }
    }

    /// Times out requests past their deadline and forgets ended jobs past their late window.
    pub(crate) fn expire(&self, now: Instant) {
        self.0.correlations.expire(now);
    }

    /// The server is stopping: running jobs end now (pending targets `timeout`) and open
    /// requests are answered `server_shutdown`.
    pub(crate) fn stop_work(&self) {
        self.0.jobs.stop_all();
        let e = ErrorBody::new(ErrorCode::ServerShutdown, "the server stopped before the device answered");
        self.0.correlations.fail_requests(&e);
    }

    /// Sends an admin message to the process embedding the server.
    pub(crate) fn admin_tx(&self) -> &mpsc::Sender<AdminRequest> {
        &self.0.admin_tx
    }
}

/// Bytes of a frame kept for what the broker adds to a device's result when it relays it (`re`,
/// `job`, `device`, `status`, `elapsed_ms`, `from`): a result must fit the frame limit less
/// this, so every frame it travels in fits too.
const RELAY_RESERVE: usize = 1024;

/// Refuses arguments that break the body limits (depth, string validity), so nothing stored can
/// become unreadable.
/// A command for devices is named like the ones they declare: at most
/// [`orb_proto::message::MAX_COMMAND_NAME`] bytes.
/// Whether a device whose last hello declared `declared` handles `command`: it declared it, or
/// declared nothing (then it may handle anything).
pub(crate) fn declares(declared: &[String], command: &str) -> bool {
    declared.is_empty() || declared.iter().any(|c| c == command)
}

/// The refusal of a command device `device` does not declare, decided by the server.
pub(crate) fn undeclared(device: &str, command: &str) -> ErrorBody {
    let msg = format!(
        "{} does not declare '{}' among the commands it handles; nothing was sent to it",
        orb_proto::excerpt(device),
        orb_proto::excerpt(command)
    );
    ErrorBody::new(ErrorCode::UnknownCommand, msg)
}

pub(crate) fn check_command_name(command: &str) -> Result<(), ErrorBody> {
    let max = orb_proto::message::MAX_COMMAND_NAME;
    if command.len() > max {
        let msg = format!("command name '{}' is longer than {max} bytes", orb_proto::excerpt(command));
        return Err(ErrorBody::new(ErrorCode::BadRequest, msg));
    }
    Ok(())
}

/// Commands named `$orb.` are the server's own: a client may not send them to devices.
pub(crate) fn check_not_reserved(command: &str) -> Result<(), ErrorBody> {
    if command.starts_with(RESERVED_PREFIX) {
        let msg = format!(
            "{RESERVED_PREFIX} commands go to the server, never to devices ('{}')",
            orb_proto::excerpt(command)
        );
        return Err(ErrorBody::new(ErrorCode::BadRequest, msg));
    }
    Ok(())
}

pub(crate) fn check_args(args: Option<&Bytes>) -> Result<(), ErrorBody> {
    match args {
        Some(a) => orb_proto::body::check(a)
            .map_err(|e| ErrorBody::new(ErrorCode::BadBody, format!("the arguments were refused: {e}"))),
        None => Ok(()),
    }
}

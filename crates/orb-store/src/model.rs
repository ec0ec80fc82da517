//! What the store keeps: devices (registry and inventory), jobs and their targets, and the
//! batched [`Record`]s the server hands to a [`Recorder`] on its hot paths.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use orb_proto::history::JobPhase;
use orb_proto::{ErrorBody, Status};

/// A registered device: credential state, tags by source and inventory. Its `Debug` output
/// hides the secret hash.
#[derive(Clone, PartialEq, Eq)]
pub struct Device {
    /// Device id.
    pub id: String,
    /// SHA-256 of the device's own secret; `None` for a v1 agent that connects with the shared
    /// token, and after revocation.
    pub secret_hash: Option<[u8; 32]>,
    /// An operator revoked the credential: the device may not connect.
    pub revoked: bool,
    /// Tags the agent reported in its last hello.
    pub reported_tags: BTreeMap<String, String>,
    /// Tags set by operators (they win over reported ones).
    pub operator_tags: BTreeMap<String, String>,
    /// Agent software of the last hello.
    pub agent_version: Option<String>,
    /// Commands declared in the last hello.
    pub commands: Vec<String>,
    /// JSON Schemas of the arguments of some of those commands, by name, from the last hello.
    pub schemas: BTreeMap<String, serde_json::Value>,
    /// When it was registered.
    pub registered_at: DateTime<Utc>,
    /// Its first connection.
    pub first_seen: Option<DateTime<Utc>>,
    /// The last time it was heard from (connect, disconnect, or a periodic mark while connected).
    pub last_seen: Option<DateTime<Utc>>,
    /// When its last connection ended.
    pub last_disconnect: Option<DateTime<Utc>>,
    /// Peer address of its last connection.
    pub last_remote_addr: Option<String>,
    /// User agent of its last connection.
    pub user_agent: Option<String>,
    /// Transport of its last connection (`tcp`, `ws`).
    pub transport: Option<String>,
    /// Connections since registration.
    pub connections: u64,
    /// Connections that began within [`FLAP_WINDOW_MS`] of the previous disconnection.
    pub flaps: u64,
    /// Held commands handed to it (every delivery, redeliveries included).
    pub delivered: u64,
    /// Held commands it answered.
    pub acknowledged: u64,
}

/// A reconnection sooner than this after a disconnection counts as a flap.
pub const FLAP_WINDOW_MS: i64 = 60_000;

impl Device {
    /// Effective tags: reported ones overridden by operator ones.
    pub fn tags(&self) -> BTreeMap<String, String> {
        let mut t = self.reported_tags.clone();
        t.extend(self.operator_tags.iter().map(|(k, v)| (k.clone(), v.clone())));
        t
    }
}

/// A device to register. Its `Debug` output hides the secret hash.
#[derive(Clone, PartialEq, Eq)]
pub struct NewDevice {
    /// Device id (validated by the caller).
    pub id: String,
    /// SHA-256 of its secret, when it gets one.
    pub secret_hash: Option<[u8; 32]>,
    /// Operator tags from the start.
    pub operator_tags: BTreeMap<String, String>,
    /// Registration time.
    pub registered_at: DateTime<Utc>,
}

/// Shows whether a secret hash is set, never the hash.
struct Redacted<'a>(&'a Option<[u8; 32]>);

impl std::fmt::Debug for Redacted<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() { "Some(<redacted>)" } else { "None" })
    }
}

impl std::fmt::Debug for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Device")
            .field("id", &self.id)
            .field("secret_hash", &Redacted(&self.secret_hash))
            .field("revoked", &self.revoked)
            .field("reported_tags", &self.reported_tags)
            .field("operator_tags", &self.operator_tags)
            .field("agent_version", &self.agent_version)
            .field("commands", &self.commands)
            .field("schemas", &self.schemas)
            .field("registered_at", &self.registered_at)
            .field("first_seen", &self.first_seen)
            .field("last_seen", &self.last_seen)
            .field("last_disconnect", &self.last_disconnect)
            .field("last_remote_addr", &self.last_remote_addr)
            .field("user_agent", &self.user_agent)
            .field("transport", &self.transport)
            .field("connections", &self.connections)
            .field("flaps", &self.flaps)
            .field("delivered", &self.delivered)
            .field("acknowledged", &self.acknowledged)
            .finish()
    }
}

impl std::fmt::Debug for NewDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewDevice")
            .field("id", &self.id)
            .field("secret_hash", &Redacted(&self.secret_hash))
            .field("operator_tags", &self.operator_tags)
            .field("registered_at", &self.registered_at)
            .finish()
    }
}

/// A device connected (batched): updates its inventory, counts the connection and a flap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    /// Device id.
    pub id: String,
    /// When the session was established.
    pub at: DateTime<Utc>,
    /// Peer address.
    pub remote_addr: String,
    /// WebSocket `User-Agent`, else the agent software.
    pub user_agent: Option<String>,
    /// Agent software from hello.
    pub agent_version: Option<String>,
    /// Declared commands from hello.
    pub commands: Vec<String>,
    /// JSON Schemas of declared commands' arguments from hello (replace the stored ones).
    pub schemas: BTreeMap<String, serde_json::Value>,
    /// Reported tags from hello (replace the stored reported tags).
    pub reported_tags: BTreeMap<String, String>,
    /// `tcp` or `ws`.
    pub transport: String,
}

/// A job to store, with its targets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    /// Job id (UUID v7 text).
    pub id: String,
    /// The node (server) that runs the job: only that node's [`Store::recover_jobs`] ends it
    /// when it is left running.
    ///
    /// [`Store::recover_jobs`]: crate::Store::recover_jobs
    pub node: String,
    /// Requester's session name.
    pub requester: String,
    /// Selector as given.
    pub selector: String,
    /// Command name.
    pub command: String,
    /// Arguments as JSON text, `None` when absent.
    pub args: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Deadline.
    pub deadline_at: DateTime<Utc>,
    /// Targets in device id order.
    pub targets: Vec<NewTarget>,
    /// Devices the selector matched that were not targeted because they were not connected
    /// (a job that targets connected devices only).
    pub skipped: u64,
    /// The schedule whose firing this job is (its row exists already, stored by
    /// [`crate::Store::advance_schedule`]: this record completes it).
    pub schedule: Option<String>,
    /// How it reaches its targets: `orb_proto::rollout::Rollout` as JSON; `None` for all at once.
    pub rollout: Option<String>,
}

/// One target of a new job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTarget {
    /// Device id.
    pub device: String,
    /// `None` while pending; `Some(Offline)` for a target that was not connected, and so on.
    pub status: Option<Status>,
    /// The error of a target that ended at once (offline, slow consumer).
    pub error: Option<ErrorBody>,
}

/// One target's outcome (batched).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetOutcome {
    /// Job id.
    pub job: String,
    /// Device id.
    pub device: String,
    /// Final status.
    pub status: Status,
    /// Result JSON text (status ok).
    pub result: Option<String>,
    /// Error (other statuses).
    pub error: Option<ErrorBody>,
    /// Milliseconds from dispatch to answer.
    pub elapsed_ms: Option<u64>,
    /// When it arrived.
    pub at: DateTime<Utc>,
    /// The answer came after the deadline. It is stored beside the target's `timeout` as its
    /// [`LateAnswer`], never over it (the requester was told `timeout`); only the first late
    /// answer is kept, and one for a target that is pending or has any other status is ignored.
    /// Otherwise (`false`) it settles a pending target only.
    pub late: bool,
}

/// A job ended (batched): its state, and what its still-pending targets become.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobEnd {
    /// Job id.
    pub job: String,
    /// When.
    pub at: DateTime<Utc>,
    /// `done` or `cancelled`.
    pub state: JobPhase,
    /// Status and error given to every target still pending (`timeout`, `cancelled`).
    pub pending_become: Option<(Status, ErrorBody)>,
}

/// A write that is batched off the hot path. Losing the last batch on `kill -9` is accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// A device connected.
    Connected(Connection),
    /// A device's session ended.
    Disconnected {
        /// Device id.
        id: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// A connected device was heard from (moves `last_seen` forward only).
    Seen {
        /// Device id.
        id: String,
        /// When.
        at: DateTime<Utc>,
    },
    /// A job was submitted.
    JobCreated(NewJob),
    /// Targets settled (usually several of one job, written with one statement per thousand).
    TargetsSettled(Vec<TargetOutcome>),
    /// A job ended.
    JobEnded(JobEnd),
    /// A pending target of a job moved to another device ("any one of": the first disconnected
    /// before answering): the job's target list is now `targets`.
    JobRetargeted {
        /// Job id.
        job: String,
        /// The job's targets, in slot order.
        targets: Vec<String>,
    },
    /// An operator action for the audit log (appended, never changed).
    Audit(AuditEntry),
}

/// A stored job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRecord {
    /// Job id.
    pub id: String,
    /// The node (server) that runs or ran it; `None` for a job stored before jobs had nodes.
    pub node: Option<String>,
    /// Requester's session name.
    pub requester: String,
    /// Selector as given.
    pub selector: String,
    /// Command name.
    pub command: String,
    /// Arguments as JSON text.
    pub args: Option<String>,
    /// Creation time.
    pub created_at: DateTime<Utc>,
    /// Deadline.
    pub deadline_at: DateTime<Utc>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// Running, done or cancelled.
    pub state: JobPhase,
    /// Number of targets.
    pub targets: u64,
    /// Devices the selector matched that were not targeted because they were not connected.
    pub skipped: u64,
    /// How it reaches its targets: `orb_proto::rollout::Rollout` as JSON; `None` for all at once.
    pub rollout: Option<String>,
    /// Count per final status (only statuses with at least one target).
    pub summary: BTreeMap<Status, u64>,
}

/// A stored target of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetRecord {
    /// Device id.
    pub device: String,
    /// Final status; `None` while pending.
    pub status: Option<Status>,
    /// Result JSON text.
    pub result: Option<String>,
    /// Error.
    pub error: Option<ErrorBody>,
    /// Milliseconds from dispatch to answer.
    pub elapsed_ms: Option<u64>,
    /// An answer that arrived after the deadline, kept beside the status the requester was told.
    pub late: Option<LateAnswer>,
}

/// An answer that arrived after its job's deadline, to a target that had timed out. It does not
/// change the target's status, error or its job's summary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LateAnswer {
    /// What the device answered: `ok`, `error`, or `timeout` (it gave up at its own deadline).
    pub status: Status,
    /// Result JSON text (status ok).
    pub result: Option<String>,
    /// Error (other statuses).
    pub error: Option<ErrorBody>,
    /// When it arrived.
    pub at: DateTime<Utc>,
}

/// Hands batched [`Record`]s to the store's writer. Cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    pub(crate) tx: tokio::sync::mpsc::Sender<crate::writer::Op>,
}

impl Recorder {
    /// Queues a record for the next batch. Waits only when the writer is far behind (its queue
    /// is bounded); a store that has been closed logs and drops the record.
    pub async fn record(&self, record: Record) {
        if self.tx.send(crate::writer::Op::Record(record)).await.is_err() {
            tracing::warn!("store closed; a record was not written");
        }
    }

    /// Queues a record without waiting: for statistics, which must never hold up a connection.
    /// Returns false (the record is dropped) when the writer's queue is full or the store closed.
    pub fn try_record(&self, record: Record) -> bool {
        self.tx.try_send(crate::writer::Op::Record(record)).is_ok()
    }

    /// [`Recorder::try_record`] that hands a record it could not queue back, so the caller can
    /// say what was lost.
    ///
    /// # Errors
    /// The record, when the writer's queue is full or the store closed.
    pub fn offer(&self, record: Record) -> Result<(), Box<Record>> {
        self.tx.try_send(crate::writer::Op::Record(record)).map_err(|e| match e.into_inner() {
            crate::writer::Op::Record(record) => Box::new(record),
            _ => unreachable!("only a record was sent"),
        })
    }
}

/// A command to hold for a device until it connects or its TTL passes (a job sent with a TTL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewQueued {
    /// The job.
    pub job_id: String,
    /// The device it waits for.
    pub device: String,
    /// Command name.
    pub command: String,
    /// Arguments (JSON text).
    pub args: Option<String>,
    /// Who sent the job (operator session name or device id).
    pub sender: String,
    /// The sender's credential, so access rules are applied again at delivery (`admin`,
    /// `operator`, `viewer`, `token:NAME` or `device:ID`); `None` for commands held before
    /// credentials were kept, which keep the rights they were held with.
    pub credential: Option<String>,
    /// The deadline the command gets when it is delivered, in milliseconds.
    pub wait_ms: u64,
    /// When it was queued.
    pub queued_at: DateTime<Utc>,
    /// When it expires if not delivered by then.
    pub expires_at: DateTime<Utc>,
    /// Stored as handed over already (attempt 1, `delivered_at` = `queued_at`), in the commit
    /// that holds it: for a connected device with nothing else held, to which its job sends it
    /// right after. Read back: whether it has been handed over.
    pub handed_over: bool,
}

impl NewQueued {
    /// What it counts against its device's byte budget: command, arguments and sender.
    pub fn bytes(&self) -> u64 {
        (self.command.len()
            + self.args.as_ref().map_or(0, String::len)
            + self.sender.len()
            + self.credential.as_ref().map_or(0, String::len)) as u64
    }
}

/// A held command as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    /// Its place in its device's queue (increasing: oldest first).
    pub id: i64,
    /// What was queued.
    pub command: NewQueued,
    /// How many times it was handed to its device.
    pub attempts: u64,
    /// When it was last handed to its device (`None`: still waiting).
    pub delivered_at: Option<DateTime<Utc>>,
}

/// How much one device's queue may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueLimits {
    /// Commands.
    pub max_commands: u64,
    /// Bytes, as [`NewQueued::bytes`] counts them.
    pub max_bytes: u64,
}

/// A held command's outcome, for [`crate::Store::settle_held`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldOutcome {
    /// The held command.
    pub id: i64,
    /// Its target's outcome.
    pub outcome: TargetOutcome,
}

/// What to add to a device's delivery counts ([`crate::Store::count_deliveries`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryCount {
    /// Device id.
    pub device: String,
    /// Deliveries (negative: claims given back).
    pub delivered: i64,
    /// Answers received.
    pub acknowledged: i64,
}

/// What became of one command handed to [`crate::Store::enqueue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Enqueued {
    /// Committed, with its id.
    Queued(i64),
    /// Refused: its device's queue is full (the reason says which limit); nothing was stored.
    Full(String),
}

/// A device's queue at a glance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueCounts {
    /// Commands waiting for delivery.
    pub queued: u64,
    /// Commands handed to the device whose outcome is not settled yet.
    pub in_flight: u64,
    /// Bytes held, waiting or in flight.
    pub bytes: u64,
}

/// A message a device sent from its durable outbox, to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// The device.
    pub device: String,
    /// Its id, chosen by the device, unique per device (the duplicate key).
    pub msg: String,
    /// Command name.
    pub command: String,
    /// JSON body.
    pub body: Option<String>,
    /// When the device sent it (its clock).
    pub sent_at: DateTime<Utc>,
    /// When the server received it.
    pub received_at: DateTime<Utc>,
}

/// How much of its outbox messages the server keeps per device: the newest, within both bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MessageLimits {
    /// Messages.
    pub max_messages: u64,
    /// Bytes (id, command name and body).
    pub max_bytes: u64,
}

impl NewMessage {
    /// The bytes it counts against [`MessageLimits::max_bytes`].
    pub fn bytes(&self) -> u64 {
        (self.msg.len() + self.command.len() + self.body.as_ref().map_or(0, String::len)) as u64
    }
}

/// A stored device message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredMessage {
    /// Row id: the order the server stored messages in.
    pub id: i64,
    /// The message.
    pub message: NewMessage,
}

/// A schedule to store (decision 0014): a job template and when it fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSchedule {
    /// Schedule id (UUID v7 text).
    pub id: String,
    /// When it fires: `orb_schedule::Spec` as JSON (the store does not read it).
    pub spec: String,
    /// What to do with firings missed while no server ran: `skip` or `run-once`.
    pub missed: String,
    /// The firings' target selector.
    pub selector: String,
    /// Command name.
    pub command: String,
    /// Arguments (JSON text).
    pub args: Option<String>,
    /// Each firing's deadline, in milliseconds.
    pub wait_ms: u64,
    /// Each firing's TTL for targets that are not connected, in milliseconds.
    pub ttl_ms: Option<u64>,
    /// Each firing's rollout: `orb_proto::rollout::Rollout` as JSON; `None` for all at once.
    pub rollout: Option<String>,
    /// Run by each matching device on its own clock, never fired by the server (its
    /// `next_fire_at` stays `None`).
    pub on_agent: bool,
    /// Who created it (session name).
    pub created_by: String,
    /// Its creator's credential, with whose rights each firing runs (`admin`, `operator`,
    /// `viewer`, `token:NAME` or `device:ID`); `None` for schedules stored before credentials
    /// were kept: those fire with the admin's rights, as they did.
    pub credential: Option<String>,
    /// When.
    pub created_at: DateTime<Utc>,
    /// Its first firing (`None`: it never fires).
    pub next_fire_at: Option<DateTime<Utc>>,
}

impl NewSchedule {
    /// What it counts against `limits.max_schedule_bytes`: every text it stores.
    pub fn bytes(&self) -> u64 {
        [&self.spec, &self.missed, &self.selector, &self.command, &self.created_by]
            .iter()
            .map(|s| s.len() as u64)
            .sum::<u64>()
            + self.args.as_ref().map_or(0, |a| a.len() as u64)
            + self.credential.as_ref().map_or(0, |c| c.len() as u64)
            + self.rollout.as_ref().map_or(0, |r| r.len() as u64)
    }
}

/// A stored schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleRecord {
    /// What was stored (with `next_fire_at` as it is now).
    pub schedule: NewSchedule,
    /// When it was paused (`None`: active).
    pub paused_at: Option<DateTime<Utc>>,
    /// Its last firing.
    pub last_fired_at: Option<DateTime<Utc>>,
    /// How often it fired.
    pub fired: u64,
    /// Why its last firing's job could not start, if it could not.
    pub last_error: Option<String>,
}

/// Bounds on stored schedules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleLimits {
    /// Schedules stored at once.
    pub max_schedules: u64,
    /// Bytes of one schedule, as [`NewSchedule::bytes`] counts them.
    pub max_bytes: u64,
}

/// What became of [`crate::Store::create_schedule`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScheduleCreated {
    /// Stored.
    Created,
    /// Refused: a limit would be exceeded (why).
    Full(String),
}

/// A schedule's next firing time moved on, with the job it fires now if it fires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firing {
    /// The schedule.
    pub schedule: String,
    /// Its `next_fire_at` when read: the move happens only if it is still that (and the schedule
    /// is not paused), so a firing is stored once.
    pub expected: DateTime<Utc>,
    /// Its next firing time after this one (`None`: it never fires again).
    pub next: Option<DateTime<Utc>>,
    /// The job it fires now, stored awaiting its dispatch (`None`: a missed firing skipped).
    pub job: Option<NewJob>,
    /// That job's TTL for targets that are not connected, in milliseconds (stored with it, so a
    /// dispatch after a crash needs nothing else).
    pub ttl_ms: Option<u64>,
    /// When.
    pub at: DateTime<Utc>,
}

/// A fired job awaiting dispatch ([`crate::Store::undispatched_firings`]): what it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FiredJob {
    /// The job.
    pub job: String,
    /// The schedule that fired it.
    pub schedule: String,
    /// Target selector.
    pub selector: String,
    /// Command name.
    pub command: String,
    /// Arguments (JSON text).
    pub args: Option<String>,
    /// Its deadline, in milliseconds from its firing.
    pub wait_ms: u64,
    /// Its TTL for targets that are not connected, in milliseconds.
    pub ttl_ms: Option<u64>,
    /// Its rollout: `orb_proto::rollout::Rollout` as JSON; `None` for all at once.
    pub rollout: Option<String>,
    /// Its schedule creator's credential ([`NewSchedule::credential`]); `None`: the admin's
    /// rights (a schedule stored before credentials were kept, or removed since it fired).
    pub credential: Option<String>,
}

/// A topic's retained publication (pub/sub).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Retained {
    /// The topic.
    pub topic: String,
    /// The body, JSON text.
    pub body: String,
    /// Who published it: a device id or an operator session's name.
    pub sender: String,
    /// When it was published.
    pub at: DateTime<Utc>,
}

/// A change to the retained publications.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RetainedChange {
    /// The topic retains this message now (replacing what it retained).
    Set(Retained),
    /// The topic retains nothing any more.
    Clear(String),
}

/// An operator token (security): a named credential with a role, kept as its SHA-256.
#[derive(Clone, PartialEq, Eq)]
pub struct OperatorToken {
    /// Its name (unique), which the job history and the audit log show.
    pub name: String,
    /// `admin`, `operator` or `viewer`.
    pub role: String,
    /// SHA-256 of the token.
    pub hash: [u8; 32],
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it was revoked; a revoked token admits nobody.
    pub revoked_at: Option<DateTime<Utc>>,
    /// When it expires (`None`: never); an expired token admits nobody.
    pub expires_at: Option<DateTime<Utc>>,
}

impl std::fmt::Debug for OperatorToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OperatorToken")
            .field("name", &self.name)
            .field("role", &self.role)
            .field("created_at", &self.created_at)
            .field("revoked_at", &self.revoked_at)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// The most bytes the store keeps of an audit entry's short text fields (actor, role, source,
/// action, target, outcome); longer ones are cut at a character boundary.
pub const AUDIT_TEXT_MAX: usize = 256;
/// The most bytes the store keeps of an audit entry's detail; a longer detail is replaced by
/// `null` (it is JSON text, which a cut would break).
pub const AUDIT_DETAIL_MAX: usize = 2048;

/// One operator action for the audit log: who did what, to what, when, from where, and whether
/// it was done. Written in batches as a [`Record::Audit`]; the store bounds its text fields
/// ([`AUDIT_TEXT_MAX`], [`AUDIT_DETAIL_MAX`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// When.
    pub at: DateTime<Utc>,
    /// Who: an operator token's name, an admin-token session's name (`op-3`, `http`), or
    /// `server` for what the host did (a configuration reload).
    pub actor: String,
    /// Which credential and role: `admin-token`, `admin`, `operator`, `viewer`, `host`.
    pub role: String,
    /// From where: the client's transport and address (`tcp 10.0.0.5:53122`), or how the host
    /// asked (`reload`).
    pub source: String,
    /// What: `job.submit`, `schedule.create`, `token.revoke`, ...
    pub action: String,
    /// What it was done to: a selector, a job, schedule or device id, a token name.
    pub target: String,
    /// `ok`, or the error code it was refused with (`forbidden`).
    pub outcome: String,
    /// More about it, as JSON text (`{"command":"reboot","job":"..."}`); `None` when nothing.
    pub detail: Option<String>,
}

/// A stored audit entry with its place in the log (increasing: newer entries have larger ids).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Its id in the log.
    pub id: i64,
    /// What was recorded.
    pub entry: AuditEntry,
}

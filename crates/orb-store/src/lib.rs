//! orb's persistence. [`Store`] is what the server needs to remember across restarts: the device
//! registry (credentials, tags, inventory) and the job history. Two backends implement it:
//! SQLite in the data folder (the embedded default) and PostgreSQL (several nodes later); one
//! conformance suite (`testkit`) runs against both.
//!
//! Writes come in two kinds. Registry changes (`add_device`, `revoke_device`, ...) are committed
//! before the call returns: when the server reports them, they are on disk. Job records and
//! connection statistics are [`Record`]s handed to a [`Recorder`] and written in batches by the
//! store's single writer, off the hot path; [`Store::flush`] waits for everything recorded so far.
//! Both kinds share that one writer, which commits many operations per transaction (group commit),
//! so their order is kept.
//!
//! # How it is built
//! One SQL implementation serves both backends, over sqlx's `Any` driver: portable SQL with
//! `$1, $2, ...` placeholders, times as BIGINT unix milliseconds, tags and command lists as JSON
//! text, the secret hash as BLOB/BYTEA, flags as BOOLEAN (PostgreSQL) or INTEGER 0/1 (SQLite,
//! because `Any` cannot read a column declared BOOLEAN there). A private `Backend` enum covers
//! the few differences: migrations (one folder per backend, embedded), connection setup and
//! pool sizes, and the SQLite database's lock file (one store per SQLite database; PostgreSQL is
//! shared by nodes, whose jobs carry their node). Ordering by device id is done in Rust (byte
//! order), so it does not depend on a PostgreSQL collation.
//!
//! The writer (see `writer.rs`) takes up to 4096 queued ops per transaction; a batch of records
//! only may linger 20 ms to gather more, awaited writes and flushes never wait. SQLite uses one
//! writing connection and 4 readers (WAL, `synchronous=FULL`, foreign keys, 5 s busy timeout);
//! PostgreSQL one pool of 8, the writer taking one connection per batch.
//!
//! Modules: `backend` connects and migrates; `writer` is the single writer with group commit;
//! `apply` (records) and `registry` (awaited writes) hold the write SQL; `query` the reads;
//! `audit` the audit log (appended as records, read newest first, pruned by retention);
//! `rows` maps rows to the model; `store` ties them into the [`Store`] implementation that
//! [`open`] returns; `testkit` (feature `testkit`) is the conformance suite.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod apply;
mod audit;
mod backend;
mod bulk;
mod error;
mod messages;
pub mod model;
mod query;
mod queue;
mod registry;
mod retained;
mod rows;
mod schedules;
mod store;
#[cfg(feature = "testkit")]
#[allow(clippy::unwrap_used)] // test support: a panic is how a failed check reports
pub mod testkit;
mod tokens;
mod url;
mod writer;

pub use error::{AMBIGUOUS_CANDIDATES, StoreError};
pub use model::{
    AUDIT_DETAIL_MAX, AUDIT_TEXT_MAX, AuditEntry, AuditRecord, Connection, DeliveryCount, Device, Enqueued, FiredJob,
    Firing, HeldOutcome, JobEnd, JobRecord, LateAnswer, MessageLimits, NewDevice, NewJob, NewMessage, NewQueued,
    NewSchedule, NewTarget, OperatorToken, QueueCounts, QueueLimits, Queued, Record, Recorder, Retained,
    RetainedChange, ScheduleCreated, ScheduleLimits, ScheduleRecord, StoredMessage, TargetOutcome, TargetRecord,
};
pub use url::{StoreUrl, redact_url};

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};

/// Opens the store at `url`: connects, creates a SQLite file (and its folder) when missing,
/// brings the schema up to date, and starts the writer. Call [`Store::close`] before exit.
///
/// SQLite runs in WAL mode with `synchronous=FULL`: what the store reports as stored survives
/// a power loss, and group commit shares each fsync among many writes.
///
/// A SQLite database is used by one store at a time: `open` takes an exclusive lock on the file
/// `DATABASE.lock` beside it (created when missing) before it touches the database, and holds it
/// until [`Store::close`] (or until the store is dropped). A PostgreSQL database is shared: it
/// takes no lock, and several nodes may open it.
///
/// # Errors
/// [`StoreError::Locked`] when another store, in this process or another, has the SQLite
/// database open; [`StoreError::Unavailable`] naming the (redacted) URL when the database cannot
/// be reached, created or migrated; a PostgreSQL server that does not answer fails within seconds.
pub async fn open(url: &StoreUrl) -> Result<Arc<dyn Store>, StoreError> {
    let pools = backend::connect(url).await?;
    tracing::info!(store = %url.redacted(), backend = pools.backend.name(), durability = %pools.durability, "store open");
    Ok(Arc::new(store::SqlStore::start(pools)))
}

/// The device registry and job history. Object safe: the server holds an `Arc<dyn Store>`.
///
/// Reads see every awaited write; batched [`Record`]s become visible after [`Store::flush`].
///
/// One damaged row never fails a read: a stored value that cannot be read (unknown status or
/// job state, malformed tags, commands or target list, a time out of range, ...) is logged, as a
/// warning naming the device or job and the column, and read as a fallback (empty, absent, no
/// status; a device's damaged credential as revoked); a row whose id cannot be read is skipped.
#[async_trait::async_trait]
pub trait Store: Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;

    /// How commits are made durable, as read back from the store's own connection when it
    /// opened: `journal_mode=wal synchronous=FULL` (SQLite), `synchronous_commit=on fsync=on`
    /// (PostgreSQL). A store whose commits would not be on disk when they return does not open.
    fn durability(&self) -> &str;

    /// Where batched records go (cheap to clone).
    fn recorder(&self) -> Recorder;

    /// Waits until every record handed to the recorder before this call is committed.
    async fn flush(&self) -> Result<(), StoreError>;

    /// Every registered device, in id order (the server loads them into memory at start).
    async fn devices(&self) -> Result<Vec<Device>, StoreError>;

    /// One device.
    async fn device(&self, id: &str) -> Result<Option<Device>, StoreError>;

    /// Registers a device; committed before it returns.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the id is registered already (nothing changes).
    async fn add_device(&self, device: NewDevice) -> Result<Device, StoreError>;

    /// Gives a registered device its own secret (the SHA-256 of it); committed before it returns.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown id.
    async fn set_secret(&self, id: &str, secret_hash: [u8; 32]) -> Result<(), StoreError>;

    /// Disables a device's credential for good (its secret is erased); committed before it returns.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown id.
    async fn revoke_device(&self, id: &str) -> Result<Device, StoreError>;

    /// Forgets a device (its job results stay in the history); committed before it returns.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown id.
    async fn remove_device(&self, id: &str) -> Result<(), StoreError>;

    /// Sets and removes operator tags (removal first, then `set`); committed before it returns.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown id.
    async fn set_operator_tags(
        &self,
        id: &str,
        set: &BTreeMap<String, String>,
        remove: &[String],
    ) -> Result<Device, StoreError>;

    /// The most recent jobs, newest first.
    async fn jobs(&self, limit: u32) -> Result<Vec<JobRecord>, StoreError>;

    /// The most recent jobs schedule `schedule` fired, newest first.
    async fn schedule_jobs(&self, schedule: &str, limit: u32) -> Result<Vec<JobRecord>, StoreError>;

    /// The ids of the schedules stored jobs were fired by that start with `prefix` (any case),
    /// in id order, at most `limit`: a schedule removed, or a one-shot that fired, is still
    /// named by its jobs. Empty for an empty prefix.
    async fn job_schedules(&self, prefix: &str, limit: u32) -> Result<Vec<String>, StoreError>;

    /// One job and its targets (in device id order), by full id or unique prefix.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when nothing matches, [`StoreError::Ambiguous`] when the prefix
    /// matches several jobs.
    async fn job(&self, id_or_prefix: &str) -> Result<(JobRecord, Vec<TargetRecord>), StoreError>;

    /// Cancels a stored job that no process is running (e.g. after a restart): pending targets
    /// become `cancelled` and the job `cancelled`. Returns the targets cancelled, in id order.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown job id (full id only).
    async fn cancel_job(&self, id: &str, at: DateTime<Utc>) -> Result<Vec<String>, StoreError>;

    /// At start: jobs a previous process of node `node` left running end now, and so do running
    /// jobs stored without a node (from before jobs had one); their pending targets become
    /// `timeout` with `message`. Running jobs of other nodes sharing the database are left
    /// alone. Returns how many jobs were ended.
    async fn recover_jobs(&self, node: &str, at: DateTime<Utc>, message: &str) -> Result<u64, StoreError>;

    /// Retention: deletes jobs (with their targets) created before `before`, and all but the
    /// newest `keep` jobs (counted among all jobs). A running job is never deleted. Works in
    /// steps of at most 10,000 jobs, each its own transaction, so other writes go between
    /// steps. Returns how many jobs were deleted.
    async fn prune_jobs(&self, before: DateTime<Utc>, keep: u64) -> Result<u64, StoreError>;

    /// Holds commands for devices until they connect: each is committed, in order, before this
    /// returns, unless its device's queue would then exceed `limits` (that one is refused, the
    /// others are stored); one marked [`NewQueued::handed_over`] is stored claimed for its
    /// first delivery, and its device is taken to hold nothing else (the caller reserved it:
    /// its queue is not counted). One answer per command, in order.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when a command for the same job and device is queued already
    /// (nothing of this call is stored then); `Unavailable`.
    async fn enqueue(&self, commands: Vec<NewQueued>, limits: QueueLimits) -> Result<Vec<Enqueued>, StoreError>;

    /// A device's held commands, oldest first, at most `limit`: waiting ones and those handed
    /// over whose outcome is not settled yet.
    async fn queued_for(&self, device: &str, limit: u32) -> Result<Vec<Queued>, StoreError>;

    /// Claims command `id` for a delivery at `at` (before it is sent): answers its attempt
    /// number (1 the first time), committed before this returns. With `again`, a command handed
    /// over before (whose answer was lost) is claimed too, for a redelivery to a device that
    /// keeps a journal, even past its TTL (the device may hold its answer).
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when it is no longer waiting: settled, expired (its TTL passed
    /// by `at`), or (without `again`) claimed already — do not send it then.
    async fn delivered(&self, id: i64, at: DateTime<Utc>, again: bool) -> Result<u64, StoreError>;

    /// Gives back a claim whose command never reached the device; false when there was none.
    async fn undelivered(&self, id: i64) -> Result<bool, StoreError>;

    /// Settles held commands in one commit: records each outcome as its target's (replacing
    /// `queued`), forgets the command, and ends its job when it was the last one held and the
    /// job's live part is over. Per command, in order: whether it was still held.
    async fn settle_held(&self, settled: Vec<HeldOutcome>) -> Result<Vec<bool>, StoreError>;

    /// Adds to devices' `delivered` and `acknowledged` counts (the broker counts in memory and
    /// writes them now and then); a device no longer registered is skipped.
    async fn count_deliveries(&self, counts: Vec<DeliveryCount>) -> Result<(), StoreError>;

    /// Stores a schedule (committed before it returns), unless `limits` refuse it.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when its id is taken.
    async fn create_schedule(
        &self,
        schedule: NewSchedule,
        limits: ScheduleLimits,
    ) -> Result<ScheduleCreated, StoreError>;

    /// Every stored schedule, by id, without its arguments (`args` is `None`; [`Store::schedule`]
    /// has them).
    async fn schedules(&self) -> Result<Vec<ScheduleRecord>, StoreError>;

    /// The active (not paused) agent-local schedules, by id, with their arguments.
    async fn agent_schedules(&self) -> Result<Vec<ScheduleRecord>, StoreError>;

    /// Active schedules due by `before`, earliest first, at most `limit`.
    async fn due_schedules(&self, before: DateTime<Utc>, limit: u32) -> Result<Vec<ScheduleRecord>, StoreError>;

    /// The earliest next firing time of an active schedule.
    async fn next_firing(&self) -> Result<Option<DateTime<Utc>>, StoreError>;

    /// One schedule by id or unique id prefix (case-insensitive).
    ///
    /// # Errors
    /// [`StoreError::NotFound`], [`StoreError::Ambiguous`].
    async fn schedule(&self, id_or_prefix: &str) -> Result<ScheduleRecord, StoreError>;

    /// Pauses an active schedule (`paused_at` set) or resumes a paused one (`None`), and sets its
    /// next firing time. False when there is no such schedule, or it is paused (active) already.
    async fn pause_schedule(
        &self,
        id: &str,
        paused_at: Option<DateTime<Utc>>,
        next_fire_at: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError>;

    /// Removes a schedule (the jobs it fired stay, still linked to its id). False when there is
    /// no such schedule.
    async fn remove_schedule(&self, id: &str) -> Result<bool, StoreError>;

    /// Moves a schedule's next firing time on (deletes it when it fires no more: `next` is
    /// `None`), and when it fires stores its job in the same commit, awaiting dispatch (`due_at`):
    /// a firing is stored exactly once. False when the
    /// schedule is gone, paused, or its next firing time is no longer `firing.expected` (another
    /// node or an earlier wake-up moved it); nothing is written then.
    async fn advance_schedule(&self, firing: Firing) -> Result<bool, StoreError>;

    /// Marks a fired job dispatched (before any of its commands is sent): false when it was
    /// already, or is not a running fired job awaiting dispatch (cancelled, ended) — then it must
    /// not be dispatched.
    async fn dispatch_firing(&self, job: &str) -> Result<bool, StoreError>;

    /// Fired jobs of `node` still awaiting dispatch (a crash came between the firing and its
    /// dispatch), oldest first, with what they run.
    async fn undispatched_firings(&self, node: &str) -> Result<Vec<FiredJob>, StoreError>;

    /// Records why a schedule's last firing could not start (`None`: it started).
    async fn schedule_error(&self, id: &str, error: Option<String>) -> Result<(), StoreError>;

    /// Removes and returns at most `limit` held commands that are over, their targets' statuses
    /// written in the same transaction: waiting ones whose TTL passed by `now` (`expired`), and
    /// handed-over ones whose answer cannot come any more (`error` `interrupted`: delivered
    /// longer ago than their deadline and a minute). Their jobs end when nothing else is held.
    async fn expire_queued(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Queued>, StoreError>;

    /// Stores messages devices sent from their durable outbox, in order, each once per (device,
    /// msg), committed before this returns; then trims each device to its newest messages
    /// within `limits` (count and bytes). Answers, per message, whether it was new (false: a
    /// duplicate, nothing written).
    async fn store_messages(&self, messages: Vec<NewMessage>, limits: MessageLimits) -> Result<Vec<bool>, StoreError>;

    /// `device`'s newest `limit` stored messages, oldest first.
    async fn messages_for(&self, device: &str, limit: u32) -> Result<Vec<StoredMessage>, StoreError>;

    /// Sets and clears topics' retained publications, in order, committed before this returns.
    async fn retain(&self, changes: Vec<RetainedChange>) -> Result<(), StoreError>;

    /// Every retained publication, by topic (rows that cannot be read are left out, logged).
    async fn retained(&self) -> Result<Vec<Retained>, StoreError>;

    /// Adds an operator token, committed before it returns.
    ///
    /// # Errors
    /// [`StoreError::Conflict`] when the name (or the token) exists already.
    async fn add_token(&self, token: OperatorToken) -> Result<(), StoreError>;

    /// Marks the token `name` revoked at `at`, committed before it returns.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] when there is no such token.
    async fn revoke_token(&self, name: &str, at: DateTime<Utc>) -> Result<(), StoreError>;

    /// Every operator token, revoked ones included, by name.
    async fn tokens(&self) -> Result<Vec<OperatorToken>, StoreError>;

    /// The audit log's newest `limit` entries at or after `since` (all when `None`), newest
    /// first. Entries come in as [`Record::Audit`] (batched): [`Store::flush`] first to see the
    /// latest. A row that cannot be read is left out, logged.
    async fn audit(&self, since: Option<DateTime<Utc>>, limit: u32) -> Result<Vec<AuditRecord>, StoreError>;

    /// Audit retention: deletes entries made before `before`, and all but the newest `keep`. Works
    /// in steps of at most 10,000 entries, each its own transaction. Returns how many were
    /// deleted.
    async fn prune_audit(&self, before: DateTime<Utc>, keep: u64) -> Result<u64, StoreError>;

    /// Every device's queue counts (devices with nothing held are absent).
    async fn queue_counts(&self) -> Result<BTreeMap<String, QueueCounts>, StoreError>;

    /// Flushes and closes: the writer commits what it holds, connections close.
    async fn close(&self);
}

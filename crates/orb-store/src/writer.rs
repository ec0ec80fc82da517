//! The store's single writer and its group commit. Every write — batched [`Record`]s from the
//! [`Recorder`](crate::Recorder) and awaited registry writes from the store — arrives here as an
//! [`Op`] on one bounded queue, in order. The writer takes what is queued (up to [`BATCH_CAP`]),
//! applies it in one transaction (`apply.rs`, `registry.rs`), commits, and only then answers the
//! callers waiting on it.
//!
//! A failing statement does not sink its neighbours: the batch is retried op by op, each in a
//! savepoint, so only the failing write's caller hears of it (a failing record is logged and
//! skipped). A failure that is not about one statement (see [`is_environmental`]: the database
//! busy or locked, I/O, a lost connection, no free connection) fails the transaction instead,
//! without trying the rest op by op; such a transaction failure, or a failed begin or commit,
//! is retried once for the whole batch. If that fails too, every waiting caller gets
//! [`StoreError::Unavailable`] and the batch's records are lost.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{AnyConnection, AnyPool, Connection};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::backend::unavailable;
use crate::{Device, NewDevice, Record, StoreError};

/// How many ops may wait for the writer; senders wait when it is full.
pub(crate) const QUEUE: usize = 16_384;
/// The most ops applied in one transaction.
pub(crate) const BATCH_CAP: usize = 4_096;
/// How long a batch of records only may wait to gather more (never awaited writes or flushes).
pub(crate) const LINGER: Duration = Duration::from_millis(20);
const _: () = assert!(LINGER.as_millis() <= 1_000, "the linger must stay short");

/// The answer to an awaited write.
pub(crate) type Ack<T> = oneshot::Sender<Result<T, StoreError>>;

/// What the writer is asked to do.
pub(crate) enum Op {
    /// A batched record (nobody waits for it).
    Record(Record),
    /// A registry write; answered after its transaction commits.
    Write(Write, Ack<Written>),
    /// Answered after everything queued before it is committed.
    Flush(Ack<()>),
    /// Commit what came before, refuse what comes after, stop.
    Close(oneshot::Sender<()>),
}

/// How long the writer waits before retrying a batch whose transaction failed.
const RETRY_PAUSE: Duration = Duration::from_millis(100);

/// A write whose caller waits for the commit. Its `Debug` shows the kind and device only (a
/// registration or secret carries a secret hash, which must not reach the logs).
pub(crate) enum Write {
    AddDevice(NewDevice),
    SetSecret {
        id: String,
        hash: [u8; 32],
    },
    Revoke(String),
    Remove(String),
    SetOperatorTags {
        id: String,
        set: BTreeMap<String, String>,
        remove: Vec<String>,
    },
    CancelJob {
        id: String,
        at: DateTime<Utc>,
    },
    RecoverJobs {
        node: String,
        at: DateTime<Utc>,
        message: String,
    },
    /// The first step of a prune: finds what to delete, deletes the oldest chunk of it.
    PruneJobs {
        before: DateTime<Utc>,
        keep: u64,
    },
    /// A further step of a prune (each in its own transaction, so other writes run between).
    PruneMore(PruneBound),
    /// Commands held for devices (`queue.rs`).
    Enqueue {
        commands: Vec<crate::NewQueued>,
        limits: crate::QueueLimits,
    },
    /// A held command claimed for a delivery.
    Delivered {
        id: i64,
        at: DateTime<Utc>,
        again: bool,
    },
    /// A claim given back (the command never reached the device).
    Undelivered(i64),
    /// Held commands settled: their outcomes recorded, the commands forgotten.
    SettleHeld {
        settled: Vec<crate::HeldOutcome>,
        at: DateTime<Utc>,
    },
    /// Delivery counts added to devices' (`queue.rs`).
    CountDeliveries(Vec<crate::DeliveryCount>),
    /// Schedules (`schedules.rs`): stored, paused or resumed, removed, advanced (a firing),
    /// a firing's job dispatched, a firing's error.
    CreateSchedule {
        schedule: crate::NewSchedule,
        limits: crate::ScheduleLimits,
    },
    PauseSchedule {
        id: String,
        paused_at: Option<DateTime<Utc>>,
        next_fire_at: Option<DateTime<Utc>>,
    },
    RemoveSchedule(String),
    AdvanceSchedule(Box<crate::Firing>),
    DispatchFiring(String),
    ScheduleError {
        id: String,
        error: Option<String>,
    },
    /// Held commands that are over (TTL passed, or an answer that cannot come any more).
    ExpireQueued {
        now: DateTime<Utc>,
        limit: u32,
    },
    /// Messages from devices' outboxes (`messages.rs`).
    StoreMessages {
        messages: Vec<crate::NewMessage>,
        limits: crate::MessageLimits,
    },
    /// Retained publications set or cleared, in order (`retained.rs`).
    Retain(Vec<crate::RetainedChange>),
    /// An operator token added (`tokens.rs`).
    AddToken(crate::OperatorToken),
    /// An operator token revoked.
    RevokeToken {
        name: String,
        at: chrono::DateTime<chrono::Utc>,
    },
    /// One step of the audit log's retention (`audit.rs`).
    PruneAudit {
        before: DateTime<Utc>,
        keep: u64,
    },
}

impl Write {
    /// The kind of write, for logs.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Write::AddDevice(_) => "add_device",
            Write::SetSecret { .. } => "set_secret",
            Write::Revoke(_) => "revoke_device",
            Write::Remove(_) => "remove_device",
            Write::SetOperatorTags { .. } => "set_operator_tags",
            Write::CancelJob { .. } => "cancel_job",
            Write::RecoverJobs { .. } => "recover_jobs",
            Write::PruneJobs { .. } | Write::PruneMore(_) => "prune_jobs",
            Write::Enqueue { .. } => "enqueue",
            Write::Delivered { .. } => "delivered",
            Write::Undelivered(_) => "undelivered",
            Write::SettleHeld { .. } => "settle_held",
            Write::CountDeliveries(_) => "count_deliveries",
            Write::CreateSchedule { .. } => "create_schedule",
            Write::PauseSchedule { .. } => "pause_schedule",
            Write::RemoveSchedule(_) => "remove_schedule",
            Write::AdvanceSchedule(_) => "advance_schedule",
            Write::DispatchFiring(_) => "dispatch_firing",
            Write::ScheduleError { .. } => "schedule_error",
            Write::ExpireQueued { .. } => "expire_queued",
            Write::StoreMessages { .. } => "store_messages",
            Write::Retain(_) => "retain",
            Write::AddToken(_) => "add_token",
            Write::RevokeToken { .. } => "revoke_token",
            Write::PruneAudit { .. } => "prune_audit",
        }
    }

    /// The device a registry write is about, for logs.
    pub(crate) fn device(&self) -> Option<&str> {
        match self {
            Write::AddDevice(device) => Some(&device.id),
            Write::SetSecret { id, .. } | Write::Revoke(id) | Write::Remove(id) | Write::SetOperatorTags { id, .. } => {
                Some(id)
            }
            Write::CancelJob { .. }
            | Write::RecoverJobs { .. }
            | Write::PruneJobs { .. }
            | Write::PruneMore(_)
            | Write::Enqueue { .. }
            | Write::Delivered { .. }
            | Write::Undelivered(_)
            | Write::SettleHeld { .. }
            | Write::CountDeliveries(_)
            | Write::CreateSchedule { .. }
            | Write::PauseSchedule { .. }
            | Write::RemoveSchedule(_)
            | Write::AdvanceSchedule(_)
            | Write::DispatchFiring(_)
            | Write::ScheduleError { .. }
            | Write::ExpireQueued { .. }
            | Write::StoreMessages { .. }
            | Write::Retain(_)
            | Write::AddToken(_)
            | Write::RevokeToken { .. }
            | Write::PruneAudit { .. } => None,
        }
    }
}

impl std::fmt::Debug for Write {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Write").field("kind", &self.kind()).field("device", &self.device()).finish()
    }
}

/// Which jobs a prune deletes: those not running at or before this point in
/// `(created_at, id)` order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PruneBound {
    /// Jobs created before this time (unix ms).
    Before(i64),
    /// Jobs up to and including this `(created_at, id)`.
    UpTo(i64, String),
}

/// What a [`Write`] gives back.
#[derive(Debug)]
pub(crate) enum Written {
    Device(Box<Device>),
    Nothing,
    Ids(Vec<String>),
    Count(u64),
    /// A prune step: how many jobs it deleted, and the bound to go on with when more may remain.
    Pruned {
        deleted: u64,
        more: Option<PruneBound>,
    },
    /// What became of each enqueued command.
    Enqueued(Vec<crate::Enqueued>),
    /// Held commands removed.
    Queued(Vec<crate::Queued>),
    /// Per stored message, whether it was new; per settled held command, whether it was held.
    Stored(Vec<bool>),
    /// What became of a schedule to store.
    ScheduleCreated(crate::ScheduleCreated),
}

/// Starts the writer on `pool`; it runs until it receives [`Op::Close`] or every sender is gone.
pub(crate) fn spawn(pool: AnyPool) -> (mpsc::Sender<Op>, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    (tx, tokio::spawn(run(pool, rx)))
}

/// Sends a write and waits for its commit.
pub(crate) async fn write(tx: &mpsc::Sender<Op>, write: Write) -> Result<Written, StoreError> {
    let (ack, answer) = oneshot::channel();
    tx.send(Op::Write(write, ack)).await.map_err(|_| closed())?;
    answer.await.map_err(|_| closed())?
}

/// Waits until everything sent before is committed.
pub(crate) async fn flush(tx: &mpsc::Sender<Op>) -> Result<(), StoreError> {
    let (ack, answer) = oneshot::channel();
    tx.send(Op::Flush(ack)).await.map_err(|_| closed())?;
    answer.await.map_err(|_| closed())?
}

/// The error for calls after `close`.
pub(crate) fn closed() -> StoreError {
    StoreError::Unavailable("the store is closed".to_owned())
}

async fn run(pool: AnyPool, mut rx: mpsc::Receiver<Op>) {
    let mut batch = Vec::with_capacity(BATCH_CAP);
    while let Some(first) = rx.recv().await {
        let close = gather(&mut rx, first, &mut batch).await;
        if !batch.is_empty() {
            commit(&pool, &mut batch).await;
        }
        if let Some(done) = close {
            refuse_rest(&mut rx);
            let _ = done.send(());
            return;
        }
    }
}

/// Fills `batch` starting with `first`; returns the close request if one arrived.
async fn gather(rx: &mut mpsc::Receiver<Op>, first: Op, batch: &mut Vec<Op>) -> Option<oneshot::Sender<()>> {
    let mut only_records = true;
    let mut next = Some(first);
    let deadline = Instant::now() + LINGER;
    while batch.len() < BATCH_CAP {
        let op = match next.take() {
            Some(op) => op,
            None => match rx.try_recv() {
                Ok(op) => op,
                Err(mpsc::error::TryRecvError::Disconnected) => return None,
                Err(mpsc::error::TryRecvError::Empty) if !only_records => return None,
                Err(mpsc::error::TryRecvError::Empty) => match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(op)) => op,
                    Ok(None) | Err(_) => return None,
                },
            },
        };
        match op {
            Op::Close(done) => return Some(done),
            Op::Record(_) => {}
            Op::Write(..) | Op::Flush(_) => only_records = false,
        }
        batch.push(op);
    }
    None
}

/// After a close: whatever is still queued is refused (records are dropped, with a warning).
fn refuse_rest(rx: &mut mpsc::Receiver<Op>) {
    rx.close();
    let mut dropped = 0_usize;
    // Bounded: the channel is closed, so only what is buffered (at most QUEUE) remains.
    while let Ok(op) = rx.try_recv() {
        match op {
            Op::Record(_) => dropped += 1,
            Op::Write(_, ack) => drop(ack.send(Err(closed()))),
            Op::Flush(ack) => drop(ack.send(Err(closed()))),
            Op::Close(done) => drop(done.send(())),
        }
    }
    if dropped > 0 {
        tracing::warn!(records = dropped, "store closed; records queued after the close were not written");
    }
}

/// Why a pass over a batch stopped.
enum Failure {
    /// One op's statement failed; the transaction was rolled back.
    Op(sqlx::Error),
    /// The transaction itself (begin, savepoint, commit) failed.
    Tx(sqlx::Error),
}

/// Per op in a batch: the answer for a write, `None` for records and flushes.
type Answers = Vec<Option<Result<Written, StoreError>>>;

/// Applies and commits `batch`, then answers every caller in it; leaves `batch` empty. A
/// transaction that fails for a likely transient reason is retried once.
async fn commit(pool: &AnyPool, batch: &mut Vec<Op>) {
    let mut outcome = attempt(pool, batch).await;
    if let Err(e) = &outcome
        && is_environmental(e)
        && !matches!(e, sqlx::Error::PoolClosed)
    {
        tracing::warn!(error = %e, ops = batch.len(), "a store transaction failed; retrying its batch once");
        tokio::time::sleep(RETRY_PAUSE).await;
        outcome = attempt(pool, batch).await;
    }
    match outcome {
        Ok(answers) => {
            for (op, answer) in batch.drain(..).zip(answers) {
                match (op, answer) {
                    (Op::Write(_, ack), Some(answer)) => drop(ack.send(answer)),
                    (Op::Flush(ack), _) => drop(ack.send(Ok(()))),
                    _ => {}
                }
            }
        }
        Err(e) => {
            let records = batch.iter().filter(|op| matches!(op, Op::Record(_))).count();
            tracing::error!(error = %e, records, "a store commit failed; its records are lost");
            let message = format!("the store could not commit: {e}");
            for op in batch.drain(..) {
                match op {
                    Op::Write(_, ack) => drop(ack.send(Err(StoreError::Unavailable(message.clone())))),
                    Op::Flush(ack) => drop(ack.send(Err(StoreError::Unavailable(message.clone())))),
                    Op::Record(_) | Op::Close(_) => {}
                }
            }
        }
    }
}

/// One pass over `batch`: all at once, and op by op if one statement failed.
async fn attempt(pool: &AnyPool, batch: &[Op]) -> Result<Answers, sqlx::Error> {
    match all_at_once(pool, batch).await {
        Ok(answers) => Ok(answers),
        Err(Failure::Op(e)) => {
            tracing::warn!(error = %e, ops = batch.len(), "a write failed; applying its batch op by op");
            one_by_one(pool, batch).await
        }
        Err(Failure::Tx(e)) => Err(e),
    }
}

/// The fast path: the whole batch in one transaction, no savepoints.
async fn all_at_once(pool: &AnyPool, batch: &[Op]) -> Result<Answers, Failure> {
    let mut tx = pool.begin().await.map_err(Failure::Tx)?;
    let mut answers = Vec::with_capacity(batch.len());
    for op in batch {
        match apply(&mut tx, op).await {
            Ok(answer) => answers.push(answer),
            Err(e) => {
                if let Err(rollback) = tx.rollback().await {
                    tracing::debug!(error = %rollback, "rolling back a failed batch");
                }
                // Not about this op: trying the others one by one would meet it again.
                return Err(if is_environmental(&e) { Failure::Tx(e) } else { Failure::Op(e) });
            }
        }
    }
    tx.commit().await.map_err(Failure::Tx)?;
    Ok(answers)
}

/// The slow path after a failure: each op in its own savepoint, one commit. An error that is
/// not about the op's statement ends it as a transaction failure (each further op could wait
/// out the busy timeout in turn).
async fn one_by_one(pool: &AnyPool, batch: &[Op]) -> Result<Answers, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut answers = Vec::with_capacity(batch.len());
    for op in batch {
        let mut savepoint = Connection::begin(&mut *tx).await?;
        match apply(&mut savepoint, op).await {
            Ok(answer) => {
                savepoint.commit().await?;
                answers.push(answer);
            }
            Err(e) if is_environmental(&e) => {
                if let Err(rollback) = savepoint.rollback().await {
                    tracing::debug!(error = %rollback, "rolling back a failed savepoint");
                }
                return Err(e);
            }
            Err(e) => {
                savepoint.rollback().await?;
                match op {
                    Op::Write(write, _) => {
                        tracing::warn!(error = %e, op = write.kind(), device = write.device(), "a store write failed");
                        answers.push(Some(Err(unavailable(e))));
                    }
                    _ => {
                        tracing::warn!(error = %e, "a store record failed and was skipped");
                        answers.push(None);
                    }
                }
            }
        }
    }
    tx.commit().await?;
    Ok(answers)
}

/// Applies one op inside the current transaction.
async fn apply(conn: &mut AnyConnection, op: &Op) -> Result<Option<Result<Written, StoreError>>, sqlx::Error> {
    match op {
        Op::Record(record) => crate::apply::record(conn, record).await.map(|()| None),
        Op::Write(write, _) => crate::registry::write(conn, write).await.map(Some),
        Op::Flush(_) | Op::Close(_) => Ok(None),
    }
}

/// Whether `e` is about the database or the connection rather than one statement: the database
/// busy or locked, out of memory or disk, I/O, corruption, a lost or refused connection, no free
/// connection in time. Retrying the statement alone would meet it again; retrying the whole
/// transaction a moment later may succeed.
pub(crate) fn is_environmental(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::BeginFailed => true,
        sqlx::Error::Database(db) => {
            let Some(code) = db.code() else { return false };
            if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                code.parse::<i32>().is_ok_and(sqlite_environmental)
            } else {
                postgres_environmental(&code)
            }
        }
        _ => false,
    }
}

/// SQLite (extended) result codes whose primary code is about the database, not the statement.
fn sqlite_environmental(code: i32) -> bool {
    // BUSY, LOCKED, NOMEM, READONLY, IOERR, CORRUPT, FULL, CANTOPEN, PROTOCOL, NOTADB.
    matches!(code & 0xff, 5 | 6 | 7 | 8 | 10 | 11 | 13 | 14 | 15 | 26)
}

/// PostgreSQL SQLSTATE classes about the server or the connection: 08 connection exception,
/// 53 insufficient resources, 57 operator intervention (shutdown, cancel, statement timeout),
/// 58 system error (I/O); and 55P03, a lock not obtained within `lock_timeout`.
fn postgres_environmental(sqlstate: &str) -> bool {
    sqlstate.len() == 5
        && (sqlstate == "55P03" || ["08", "53", "57", "58"].iter().any(|class| sqlstate.starts_with(class)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environmental_codes() {
        assert!(sqlite_environmental(5) && sqlite_environmental(517) && sqlite_environmental(6));
        assert!(sqlite_environmental(10) && sqlite_environmental(3338) && sqlite_environmental(13));
        assert!(!sqlite_environmental(19) && !sqlite_environmental(787) && !sqlite_environmental(1555));
        assert!(!sqlite_environmental(1));
        for code in ["08006", "08P01", "53300", "57P01", "57014", "58030", "55P03"] {
            assert!(postgres_environmental(code), "{code}");
        }
        for code in ["23505", "23503", "22012", "42P01", "40001", "55000", "0800"] {
            assert!(!postgres_environmental(code), "{code}");
        }
        assert!(is_environmental(&sqlx::Error::PoolTimedOut));
        assert!(is_environmental(&sqlx::Error::Io(std::io::Error::other("reset"))));
        assert!(!is_environmental(&sqlx::Error::RowNotFound));
    }

    #[test]
    fn write_debug_shows_no_secret() {
        let add = Write::AddDevice(NewDevice {
            id: "dev-1".into(),
            secret_hash: Some([0xAB; 32]),
            operator_tags: BTreeMap::new(),
            registered_at: DateTime::UNIX_EPOCH,
        });
        let set = Write::SetSecret { id: "dev-2".into(), hash: [0xCD; 32] };
        for (write, id) in [(add, "dev-1"), (set, "dev-2")] {
            let text = format!("{write:?}");
            assert!(text.contains(id) && !text.contains("171") && !text.contains("205"), "{text}");
        }
    }
}

//! The store's single writer and its group commit. Every write — batched [`Record`]s from the
//! [`Recorder`](crate::Recorder) and awaited registry writes from the store — arrives here as an
//! [`Op`] on one bounded queue, in order. The writer takes what is queued (up to [`BATCH_CAP`]),
//! applies it in one transaction (`apply.rs`, `registry.rs`), commits, and only then answers the
//! callers waiting on it.
//!
//! A failing statement does not sink its neighbours: the batch is retried op by op, each in a
//! savepoint, so only the failing write's caller hears of it (a failing record is logged and
//! skipped). If the commit itself fails, every waiting caller gets [`StoreError::Unavailable`].

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

/// A write whose caller waits for the commit.
#[derive(Debug)]
pub(crate) enum Write {
    AddDevice(NewDevice),
    SetSecret { id: String, hash: [u8; 32] },
    Revoke(String),
    Remove(String),
    SetOperatorTags { id: String, set: BTreeMap<String, String>, remove: Vec<String> },
    CancelJob { id: String, at: DateTime<Utc> },
    RecoverJobs { at: DateTime<Utc>, message: String },
    PruneJobs { before: DateTime<Utc>, keep: u64 },
}

/// What a [`Write`] gives back.
#[derive(Debug)]
pub(crate) enum Written {
    Device(Box<Device>),
    Nothing,
    Ids(Vec<String>),
    Count(u64),
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

/// Applies and commits `batch`, then answers every caller in it; leaves `batch` empty.
async fn commit(pool: &AnyPool, batch: &mut Vec<Op>) {
    let outcome = match all_at_once(pool, batch).await {
        Ok(answers) => Ok(answers),
        Err(Failure::Op(e)) => {
            tracing::warn!(error = %e, ops = batch.len(), "a write failed; applying its batch op by op");
            one_by_one(pool, batch).await
        }
        Err(Failure::Tx(e)) => Err(e),
    };
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
                return Err(Failure::Op(e));
            }
        }
    }
    tx.commit().await.map_err(Failure::Tx)?;
    Ok(answers)
}

/// The slow path after a failure: each op in its own savepoint, one commit.
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
            Err(e) => {
                savepoint.rollback().await?;
                match op {
                    Op::Write(write, _) => {
                        tracing::warn!(error = %e, ?write, "a store write failed");
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

//! The outbox: messages an agent sends to the server (commands for server-side handlers, later
//! publications and telemetry) committed locally before [`Outbox::send`] returns, flushed in order
//! while connected ([`Outbox::flush`]) and deleted only when the server's answer says it stored
//! them. Writes are group-committed by one writer task. Overflow policy: when the outbox holds
//! its limit of messages or bytes, new messages are refused with [`DurableError::Full`]; nothing
//! already accepted is ever dropped.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use orb_proto::ErrorCode;
use sqlx::Row;
use sqlx::sqlite::SqlitePool;
use tokio::sync::{Notify, mpsc, oneshot};

use super::{DurableError, ms};
use crate::client::Client;
use crate::error::ClientError;

/// How much the outbox holds at most.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboxLimits {
    /// Messages.
    pub max_messages: u64,
    /// Bytes of command names and bodies.
    pub max_bytes: u64,
}

impl Default for OutboxLimits {
    fn default() -> Self {
        OutboxLimits { max_messages: 100_000, max_bytes: 64 * 1024 * 1024 }
    }
}

/// One message waiting for the server's acknowledgement.
#[derive(Debug, Clone)]
pub(crate) struct OutboxMessage {
    /// Its place in the outbox (flush order).
    pub(crate) seq: i64,
    /// The id the server deduplicates by.
    pub(crate) msg: String,
    /// Command name.
    pub(crate) cmd: String,
    /// JSON body.
    pub(crate) body: Bytes,
    /// When the agent sent it.
    pub(crate) created_at: DateTime<Utc>,
}

/// A message to commit, and who waits for the commit.
struct Pending {
    msg: String,
    cmd: String,
    body: Bytes,
    at: DateTime<Utc>,
    done: oneshot::Sender<Result<(), DurableError>>,
}

/// Told when the server has stored a message, or refused it for good.
#[derive(Debug)]
pub struct Receipt {
    msg: String,
    acked: oneshot::Receiver<Result<(), String>>,
}

impl Receipt {
    /// The message's id (the server's duplicate key).
    pub fn id(&self) -> &str {
        &self.msg
    }

    /// Waits until the server acknowledged the message (stored it on its side), however many
    /// reconnects that takes.
    ///
    /// # Errors
    /// [`DurableError::Invalid`] when the server refused the message for good (it was removed
    /// from the outbox); [`DurableError::Closed`] when the outbox stopped first (the message
    /// stays in the outbox and is sent after the next start).
    pub async fn acknowledged(self) -> Result<(), DurableError> {
        match self.acked.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(refusal)) => Err(DurableError::Invalid(refusal)),
            Err(_) => Err(DurableError::Closed),
        }
    }
}

/// Messages and bytes held.
#[derive(Debug, Default, Clone, Copy)]
struct Usage {
    messages: u64,
    bytes: u64,
}

struct Shared {
    pool: SqlitePool,
    limits: OutboxLimits,
    usage: Mutex<Usage>,
    /// Receipts waiting, by message id.
    waiting: Mutex<HashMap<String, oneshot::Sender<Result<(), String>>>>,
    /// Woken when a message was committed.
    added: Notify,
}

/// The outbox (a cheap handle).
#[derive(Clone)]
pub struct Outbox {
    shared: Arc<Shared>,
    tx: mpsc::Sender<Pending>,
}

impl std::fmt::Debug for Outbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Outbox").field("limits", &self.shared.limits).finish_non_exhaustive()
    }
}

/// Messages committed in one transaction at most.
const GROUP: usize = 512;
/// Messages sent to the server and not yet acknowledged, at most.
const WINDOW: usize = 256;
/// How long the server has to acknowledge one message.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after a failed flush step before trying again on the same connection.
const RETRY: Duration = Duration::from_secs(1);
/// Longest command name.
const MAX_CMD: usize = orb_proto::message::MAX_COMMAND_NAME;

impl Outbox {
    pub(super) async fn start(pool: SqlitePool, limits: OutboxLimits) -> Result<Outbox, DurableError> {
        let row =
            sqlx::query("SELECT COUNT(*) AS n, COALESCE(SUM(bytes), 0) AS b FROM outbox").fetch_one(&pool).await?;
        let usage = Usage {
            messages: u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0),
            bytes: u64::try_from(row.try_get::<i64, _>("b")?).unwrap_or(0),
        };
        let shared = Arc::new(Shared {
            pool,
            limits,
            usage: Mutex::new(usage),
            waiting: Mutex::new(HashMap::new()),
            added: Notify::new(),
        });
        let (tx, rx) = mpsc::channel(GROUP * 4);
        tokio::spawn(write_loop(Arc::clone(&shared), rx));
        Ok(Outbox { shared, tx })
    }

    /// Commits `cmd` with `body` (one JSON value) to the outbox and returns once it is on disk;
    /// the [`Receipt`] tells when the server has it. Sent as soon as (and each time) the agent is
    /// connected, in the order sent.
    ///
    /// # Errors
    /// [`DurableError::Full`] when the outbox holds its limit (the message is not kept);
    /// [`DurableError::Invalid`] for an empty or too long command name, or a body that is not
    /// JSON; [`DurableError::Storage`] when the write failed.
    pub async fn send(&self, cmd: &str, body: Bytes) -> Result<Receipt, DurableError> {
        if cmd.is_empty() || cmd.len() > MAX_CMD || cmd.starts_with(orb_proto::RESERVED_PREFIX) {
            return Err(DurableError::Invalid(format!(
                "a command name must have 1 to {MAX_CMD} bytes and not start with {}",
                orb_proto::RESERVED_PREFIX
            )));
        }
        self.commit(cmd, body).await
    }

    /// [`Outbox::send`] for the client's own reports to the server (a `$orb.` command, such as a
    /// local schedule's firing).
    pub(crate) async fn send_reserved(&self, cmd: &'static str, body: Bytes) -> Result<Receipt, DurableError> {
        self.commit(cmd, body).await
    }

    /// Commits a system-telemetry sample taken while disconnected (`$orb.telemetry`; the server
    /// publishes it on `telemetry.<id>.sys` once stored). Telemetry never fills the outbox past
    /// half of either limit, so it cannot crowd out other messages: beyond that it is refused.
    ///
    /// # Errors
    /// [`DurableError::Full`] past half the limits; otherwise as [`Outbox::send`].
    pub async fn send_telemetry(&self, body: Bytes) -> Result<Receipt, DurableError> {
        {
            let usage = lock(&self.shared.usage);
            let limits = &self.shared.limits;
            if usage.messages >= limits.max_messages / 2 || usage.bytes + body.len() as u64 > limits.max_bytes / 2 {
                return Err(DurableError::Full(format!(
                    "telemetry may fill at most half the outbox ({} of {} messages, {} of {} bytes held)",
                    usage.messages, limits.max_messages, usage.bytes, limits.max_bytes
                )));
            }
        }
        self.commit(orb_proto::message::commands::TELEMETRY, body).await
    }

    async fn commit(&self, cmd: &str, body: Bytes) -> Result<Receipt, DurableError> {
        if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
            return Err(DurableError::Invalid(format!("the body is not JSON: {e}")));
        }
        let msg = uuid::Uuid::now_v7().to_string();
        let (acked_tx, acked) = oneshot::channel();
        lock(&self.shared.waiting).insert(msg.clone(), acked_tx);
        let (done, committed) = oneshot::channel();
        let pending = Pending { msg: msg.clone(), cmd: cmd.to_owned(), body, at: Utc::now(), done };
        let result = match self.tx.send(pending).await {
            Ok(()) => committed.await.unwrap_or(Err(DurableError::Closed)),
            Err(_) => Err(DurableError::Closed),
        };
        if let Err(e) = result {
            lock(&self.shared.waiting).remove(&msg);
            return Err(e);
        }
        Ok(Receipt { msg, acked })
    }

    /// Messages waiting for the server's acknowledgement.
    pub fn len(&self) -> u64 {
        lock(&self.shared.usage).messages
    }

    /// Whether nothing waits for the server.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Sends the outbox over `client`, oldest first, at most 256 unacknowledged at a time,
    /// and deletes each message the server stored; then waits for new ones. Returns when the
    /// connection closes (what was not acknowledged is sent again on the next one).
    pub async fn flush(&self, client: &Client) {
        for _ in 0..usize::MAX {
            match self.flush_until_failure(client).await {
                Flushed::Closed => return,
                Flushed::Retry(e) => {
                    tracing::debug!(error = %e, "outbox flush failed; retrying");
                    tokio::select! {
                        () = client.closed_quietly() => return,
                        () = tokio::time::sleep(RETRY) => {}
                    }
                }
            }
        }
    }

    async fn flush_until_failure(&self, client: &Client) -> Flushed {
        let mut after = 0_i64;
        let mut inflight = FuturesOrdered::new();
        loop {
            if inflight.len() < WINDOW {
                let room = WINDOW - inflight.len();
                let rows = match self.pending_after(after, room).await {
                    Ok(rows) => rows,
                    Err(e) => return Flushed::Retry(e.to_string()),
                };
                for m in rows {
                    after = m.seq;
                    let client = client.clone();
                    inflight.push_back(async move {
                        let answer = client.send_outbox(&m, ACK_TIMEOUT).await;
                        (m, answer)
                    });
                }
            }
            if inflight.is_empty() {
                let added = self.shared.added.notified();
                tokio::pin!(added);
                added.as_mut().enable();
                // Something committed after the read above is read on the next turn.
                if self.pending_after(after, 1).await.is_ok_and(|rows| !rows.is_empty()) {
                    continue;
                }
                tokio::select! {
                    () = client.closed_quietly() => return Flushed::Closed,
                    () = added => continue,
                }
            }
            let first = tokio::select! {
                () = client.closed_quietly() => return Flushed::Closed,
                r = inflight.next() => r,
            };
            // That answer and every other one already in.
            let mut answers: Vec<(OutboxMessage, Result<Bytes, ClientError>)> = first.into_iter().collect();
            while let Some(Some(r)) = futures_util::FutureExt::now_or_never(inflight.next()) {
                answers.push(r);
            }
            let mut settled = Vec::with_capacity(answers.len());
            let mut failure = None;
            for (m, answer) in answers {
                match answer {
                    Ok(_) => settled.push((m.msg, Ok(()))),
                    Err(ClientError::Remote(e)) if refused_for_good(&e.code) => {
                        tracing::warn!(msg = m.msg, cmd = m.cmd, error = %e, "the server refused an outbox message; removed");
                        settled.push((m.msg, Err(format!("the server refused it: {e}"))));
                    }
                    Err(e) => {
                        // Later answers may have arrived; those are settled, the rest resent.
                        failure.get_or_insert(e.to_string());
                    }
                }
            }
            if let Err(e) = self.settle(settled).await {
                return Flushed::Retry(e.to_string());
            }
            if let Some(e) = failure {
                if client.is_closed() {
                    return Flushed::Closed;
                }
                return Flushed::Retry(e);
            }
        }
    }

    /// At most `limit` messages after `seq`, oldest first.
    async fn pending_after(&self, seq: i64, limit: usize) -> Result<Vec<OutboxMessage>, DurableError> {
        let rows =
            sqlx::query("SELECT seq, msg, cmd, body, created_at FROM outbox WHERE seq > $1 ORDER BY seq LIMIT $2")
                .bind(seq)
                .bind(i64::try_from(limit).unwrap_or(i64::MAX))
                .fetch_all(&self.shared.pool)
                .await?;
        rows.iter()
            .map(|row| {
                let created: i64 = row.try_get("created_at")?;
                Ok(OutboxMessage {
                    seq: row.try_get("seq")?,
                    msg: row.try_get("msg")?,
                    cmd: row.try_get("cmd")?,
                    body: Bytes::from(row.try_get::<String, _>("body")?.into_bytes()),
                    created_at: DateTime::from_timestamp_millis(created).unwrap_or_default(),
                })
            })
            .collect()
    }

    /// Deletes messages the server acknowledged (or refused for good), in one transaction, and
    /// tells their receipts.
    async fn settle(&self, settled: Vec<(String, Result<(), String>)>) -> Result<(), DurableError> {
        if settled.is_empty() {
            return Ok(());
        }
        let mut tx = self.shared.pool.begin().await?;
        let mut freed = Usage::default();
        for (msg, _) in &settled {
            let bytes: Option<i64> = sqlx::query_scalar("DELETE FROM outbox WHERE msg = $1 RETURNING bytes")
                .bind(msg)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(b) = bytes {
                freed.messages += 1;
                freed.bytes += u64::try_from(b).unwrap_or(0);
            }
        }
        tx.commit().await?;
        {
            let mut usage = lock(&self.shared.usage);
            usage.messages = usage.messages.saturating_sub(freed.messages);
            usage.bytes = usage.bytes.saturating_sub(freed.bytes);
        }
        let mut waiting = lock(&self.shared.waiting);
        for (msg, outcome) in settled {
            if let Some(tx) = waiting.remove(&msg) {
                let _ = tx.send(outcome);
            }
        }
        Ok(())
    }
}

/// What ended one flush.
enum Flushed {
    /// The connection closed.
    Closed,
    /// A read, a write or an answer failed; try again.
    Retry(String),
}

/// Refusals that sending again cannot fix: the message is removed (and its receipt told).
fn refused_for_good(code: &ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::BadRequest
            | ErrorCode::BadBody
            | ErrorCode::BadArgs
            | ErrorCode::FrameTooLarge
            | ErrorCode::Forbidden
            | ErrorCode::UnknownCommand
    )
}

/// Commits what `rx` brings, up to [`GROUP`] messages per transaction, within the limits.
async fn write_loop(shared: Arc<Shared>, mut rx: mpsc::Receiver<Pending>) {
    let mut batch: Vec<Pending> = Vec::with_capacity(GROUP);
    while rx.recv_many(&mut batch, GROUP).await > 0 {
        let mut accepted = Vec::with_capacity(batch.len());
        {
            let mut usage = lock(&shared.usage);
            for p in batch.drain(..) {
                let size = (p.cmd.len() + p.body.len()) as u64;
                if usage.messages + 1 > shared.limits.max_messages {
                    let m = format!("the outbox holds {} messages, its limit; this one was not kept", usage.messages);
                    let _ = p.done.send(Err(DurableError::Full(m)));
                } else if usage.bytes + size > shared.limits.max_bytes {
                    let m = format!(
                        "the outbox holds {} bytes; {size} more would exceed its {} bytes; this message was not kept",
                        usage.bytes, shared.limits.max_bytes
                    );
                    let _ = p.done.send(Err(DurableError::Full(m)));
                } else {
                    usage.messages += 1;
                    usage.bytes += size;
                    accepted.push((p, size));
                }
            }
        }
        if accepted.is_empty() {
            continue;
        }
        let committed = insert(&shared.pool, &accepted).await;
        if committed.is_err() {
            let mut usage = lock(&shared.usage);
            for (_, size) in &accepted {
                usage.messages = usage.messages.saturating_sub(1);
                usage.bytes = usage.bytes.saturating_sub(*size);
            }
        }
        for (p, _) in accepted {
            let _ = p.done.send(committed.as_ref().copied().map_err(|e| DurableError::Storage(e.to_string())));
        }
        shared.added.notify_waiters();
    }
}

async fn insert(pool: &SqlitePool, accepted: &[(Pending, u64)]) -> Result<(), sqlx::Error> {
    let mut tx = pool.begin().await?;
    for (p, size) in accepted {
        sqlx::query("INSERT INTO outbox (msg, cmd, body, created_at, bytes) VALUES ($1, $2, $3, $4, $5)")
            .bind(&p.msg)
            .bind(&p.cmd)
            .bind(String::from_utf8_lossy(&p.body).into_owned())
            .bind(ms(p.at))
            .bind(i64::try_from(*size).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // Never held across an await.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::durable::{AgentStore, DurableLimits};

    async fn open(dir: &std::path::Path, outbox: OutboxLimits) -> Outbox {
        let limits = DurableLimits { outbox, ..DurableLimits::default() };
        AgentStore::open(&dir.join("agent.db"), limits).await.unwrap().outbox().clone()
    }

    #[tokio::test]
    async fn a_full_outbox_refuses_new_messages_and_keeps_every_accepted_one_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let limits = OutboxLimits { max_messages: 2, max_bytes: 1024 };
        let outbox = open(dir.path(), limits).await;
        let a = outbox.send("reading", Bytes::from_static(b"1")).await.unwrap();
        outbox.send("reading", Bytes::from_static(b"2")).await.unwrap();
        let e = outbox.send("reading", Bytes::from_static(b"3")).await.unwrap_err();
        assert!(matches!(&e, DurableError::Full(m) if m.contains("2 messages")), "{e}");
        drop(outbox);
        let outbox = open(dir.path(), limits).await;
        assert_eq!(outbox.len(), 2, "both accepted messages are still there");
        let kept = outbox.pending_after(0, 10).await.unwrap();
        assert_eq!(kept.iter().map(|m| m.body.clone()).collect::<Vec<_>>(), [Bytes::from("1"), Bytes::from("2")]);
        assert_eq!(kept[0].msg, a.id(), "the id is kept, so a resend is recognised");
        assert!(outbox.send("reading", Bytes::from_static(b"3")).await.is_err(), "still full after the restart");
        // Bytes: a message that would pass the limit is refused, a smaller one is not.
        let dir = tempfile::tempdir().unwrap();
        let outbox = open(dir.path(), OutboxLimits { max_messages: 10, max_bytes: 20 }).await;
        let e = outbox.send("reading", Bytes::from(format!("\"{}\"", "x".repeat(20)))).await.unwrap_err();
        assert!(matches!(&e, DurableError::Full(m) if m.contains("bytes")), "{e}");
        outbox.send("reading", Bytes::from_static(b"1")).await.unwrap();
    }

    #[tokio::test]
    async fn telemetry_fills_at_most_half_the_outbox() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = open(dir.path(), OutboxLimits { max_messages: 4, max_bytes: 1024 }).await;
        outbox.send_telemetry(Bytes::from_static(b"{\"n\":1}")).await.unwrap();
        outbox.send_telemetry(Bytes::from_static(b"{\"n\":2}")).await.unwrap();
        let e = outbox.send_telemetry(Bytes::from_static(b"{\"n\":3}")).await.unwrap_err();
        assert!(matches!(&e, DurableError::Full(m) if m.contains("half")), "{e}");
        // Other messages still have the other half.
        outbox.send("reading", Bytes::from_static(b"1")).await.unwrap();
        outbox.send("reading", Bytes::from_static(b"2")).await.unwrap();
        let kept = outbox.pending_after(0, 10).await.unwrap();
        assert_eq!(kept[0].cmd, orb_proto::message::commands::TELEMETRY);
        assert_eq!(kept.len(), 4);
    }

    #[tokio::test]
    async fn bad_messages_are_refused_before_anything_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = open(dir.path(), OutboxLimits::default()).await;
        for (cmd, body) in [("", "1"), ("$orb.devices.list", "1"), ("reading", "{not json")] {
            let e = outbox.send(cmd, Bytes::from(body)).await.unwrap_err();
            assert!(matches!(e, DurableError::Invalid(_)), "{cmd} {body}: {e}");
        }
        let long = "x".repeat(MAX_CMD + 1);
        assert!(matches!(outbox.send(&long, Bytes::from("1")).await, Err(DurableError::Invalid(_))));
        assert!(outbox.is_empty());
    }

    #[tokio::test]
    async fn many_senders_at_once_are_committed_in_groups_and_all_kept_in_order_of_commit() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = open(dir.path(), OutboxLimits::default()).await;
        let sends = (0..200).map(|n| {
            let outbox = outbox.clone();
            async move { outbox.send("reading", Bytes::from(n.to_string())).await.unwrap() }
        });
        let receipts = futures_util::future::join_all(sends).await;
        assert_eq!(outbox.len(), 200);
        let kept = outbox.pending_after(0, 1000).await.unwrap();
        let ids: std::collections::HashSet<&str> = receipts.iter().map(Receipt::id).collect();
        assert_eq!(kept.len(), 200);
        assert!(kept.iter().all(|m| ids.contains(m.msg.as_str())));
        assert!(kept.windows(2).all(|w| w[0].seq < w[1].seq));
    }
}

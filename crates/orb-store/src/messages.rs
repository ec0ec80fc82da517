//! Messages devices sent from their durable outbox: the awaited write that stores a batch once
//! per (device, msg) and trims each device to its newest `keep`, and the read of a device's
//! newest ones.

use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, Row};

use crate::backend::unavailable;
use crate::rows::ms;
use crate::writer::Written;
use crate::{MessageLimits, NewMessage, StoreError, StoredMessage};

/// Stores `messages` in order, each unless its (device, msg) is stored already; then deletes
/// what each device holds beyond its newest messages within `limits` (count, then bytes).
/// Answers, per message, whether it was new.
pub(crate) async fn store(
    conn: &mut AnyConnection,
    messages: &[NewMessage],
    limits: MessageLimits,
) -> Result<Result<Written, StoreError>, sqlx::Error> {
    let mut fresh = Vec::with_capacity(messages.len());
    for m in messages {
        let row = sqlx::query(
            "INSERT INTO device_messages (device, msg, command, body, sent_at, received_at, bytes) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (device, msg) DO NOTHING RETURNING id",
        )
        .bind(&m.device)
        .bind(&m.msg)
        .bind(&m.command)
        .bind(m.body.as_deref())
        .bind(ms(m.sent_at))
        .bind(ms(m.received_at))
        .bind(i64::try_from(m.bytes()).unwrap_or(i64::MAX))
        .fetch_optional(&mut *conn)
        .await?;
        fresh.push(row.is_some());
    }
    let mut devices: Vec<&str> = messages.iter().map(|m| m.device.as_str()).collect();
    devices.sort_unstable();
    devices.dedup();
    let keep = i64::try_from(limits.max_messages).unwrap_or(i64::MAX);
    let max_bytes = i64::try_from(limits.max_bytes).unwrap_or(i64::MAX);
    for device in devices {
        sqlx::query(
            "DELETE FROM device_messages WHERE device = $1 AND id <= \
             (SELECT id FROM device_messages WHERE device = $1 ORDER BY id DESC LIMIT 1 OFFSET $2)",
        )
        .bind(device)
        .bind(keep)
        .execute(&mut *conn)
        .await?;
        // The newest message whose running total (newest first) passes the bytes bound goes,
        // with every older one.
        sqlx::query(
            "DELETE FROM device_messages WHERE device = $1 AND id <= \
             (SELECT MAX(id) FROM (SELECT id, SUM(bytes) OVER (ORDER BY id DESC) AS total \
              FROM device_messages WHERE device = $1) AS newest_first WHERE total > $2)",
        )
        .bind(device)
        .bind(max_bytes)
        .execute(&mut *conn)
        .await?;
    }
    Ok(Ok(Written::Stored(fresh)))
}

/// `device`'s newest `limit` messages, oldest first.
pub(crate) async fn newest(pool: &AnyPool, device: &str, limit: u32) -> Result<Vec<StoredMessage>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, device, msg, command, body, sent_at, received_at FROM device_messages \
         WHERE device = $1 ORDER BY id DESC LIMIT $2",
    )
    .bind(device)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(unavailable)?;
    let mut out: Vec<StoredMessage> = rows.iter().filter_map(message).collect();
    out.reverse();
    Ok(out)
}

/// A stored message, or `None` (logged) when its row cannot be read.
fn message(row: &AnyRow) -> Option<StoredMessage> {
    let read = || -> Result<StoredMessage, sqlx::Error> {
        let time = |col: &str| crate::rows::time_column(row, col);
        Ok(StoredMessage {
            id: row.try_get("id")?,
            message: NewMessage {
                device: row.try_get("device")?,
                msg: row.try_get("msg")?,
                command: row.try_get("command")?,
                body: row.try_get("body")?,
                sent_at: time("sent_at")?,
                received_at: time("received_at")?,
            },
        })
    };
    match read() {
        Ok(m) => Some(m),
        Err(e) => {
            tracing::warn!(error = %e, "a device message could not be read; skipped");
            None
        }
    }
}

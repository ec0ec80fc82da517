//! Retained publications (pub/sub, issue 13): the awaited write that sets or clears topics'
//! retained messages, in order, and the read of them all (the server holds them in memory from
//! its start).

use sqlx::{AnyConnection, AnyPool, Row};

use crate::backend::unavailable;
use crate::rows::{ms, time_column};
use crate::writer::Written;
use crate::{Retained, RetainedChange, StoreError};

/// Applies `changes` in order: a topic set replaces what it retained, a topic cleared forgets it.
pub(crate) async fn apply(
    conn: &mut AnyConnection,
    changes: &[RetainedChange],
) -> Result<Result<Written, StoreError>, sqlx::Error> {
    for change in changes {
        match change {
            RetainedChange::Set(r) => {
                sqlx::query(
                    "INSERT INTO retained (topic, body, sender, at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (topic) DO UPDATE SET body = excluded.body, sender = excluded.sender, at = excluded.at",
                )
                .bind(&r.topic)
                .bind(&r.body)
                .bind(&r.sender)
                .bind(ms(r.at))
                .execute(&mut *conn)
                .await?;
            }
            RetainedChange::Clear(topic) => {
                sqlx::query("DELETE FROM retained WHERE topic = $1").bind(topic).execute(&mut *conn).await?;
            }
        }
    }
    Ok(Ok(Written::Nothing))
}

/// Every retained message, by topic. A row that cannot be read is left out with a warning (it
/// never keeps the server from starting).
pub(crate) async fn all(pool: &AnyPool) -> Result<Vec<Retained>, StoreError> {
    let rows = sqlx::query("SELECT topic, body, sender, at FROM retained ORDER BY topic")
        .fetch_all(pool)
        .await
        .map_err(unavailable)?;
    let read = |row: &sqlx::any::AnyRow| -> Result<Retained, sqlx::Error> {
        Ok(Retained {
            topic: row.try_get("topic")?,
            body: row.try_get("body")?,
            sender: row.try_get("sender")?,
            at: time_column(row, "at")?,
        })
    };
    Ok(rows
        .iter()
        .filter_map(|row| {
            read(row).map_err(|e| tracing::warn!(error = %e, "a retained message cannot be read; it is left out")).ok()
        })
        .collect())
}

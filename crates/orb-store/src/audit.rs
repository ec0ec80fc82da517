//! The audit log (security, issue 15): entries arrive as [`crate::Record::Audit`] through the
//! batching writer (`apply.rs` calls [`append`]), are read newest first ([`newest`]) by the
//! server's `$orb.audit.list` and `GET /v1/audit`, and are deleted only by retention
//! ([`prune_step`], from the server's maintenance task). Text is bounded here, when written, so
//! no entry can grow the log or fail a read.

use chrono::{DateTime, Utc};
use sqlx::{AnyConnection, AnyPool, Row};

use crate::StoreError;
use crate::backend::unavailable;
use crate::model::{AUDIT_DETAIL_MAX, AUDIT_TEXT_MAX, AuditEntry, AuditRecord};
use crate::rows::{ms, time_column};
use crate::writer::Written;

/// The most entries one prune step deletes (each step is its own transaction).
pub(crate) const PRUNE_STEP: u64 = 10_000;

/// Appends `e`, its text fields cut to their bounds.
pub(crate) async fn append(conn: &mut AnyConnection, e: &AuditEntry) -> Result<(), sqlx::Error> {
    let detail = e.detail.as_deref().filter(|d| d.len() <= AUDIT_DETAIL_MAX);
    sqlx::query(
        "INSERT INTO audit_log (at, actor, role, source, action, target, outcome, detail) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(ms(e.at))
    .bind(cut(&e.actor))
    .bind(cut(&e.role))
    .bind(cut(&e.source))
    .bind(cut(&e.action))
    .bind(cut(&e.target))
    .bind(cut(&e.outcome))
    .bind(detail)
    .execute(conn)
    .await
    .map(drop)
}

/// `s` cut to at most [`AUDIT_TEXT_MAX`] bytes, at a character boundary.
fn cut(s: &str) -> &str {
    let mut end = s.len().min(AUDIT_TEXT_MAX);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The newest `limit` entries at or after `since`, newest first. A row that cannot be read is
/// left out with a warning.
pub(crate) async fn newest(
    pool: &AnyPool,
    since: Option<DateTime<Utc>>,
    limit: u32,
) -> Result<Vec<AuditRecord>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, at, actor, role, source, action, target, outcome, detail FROM audit_log \
         WHERE at >= $1 ORDER BY id DESC LIMIT $2",
    )
    .bind(since.map_or(i64::MIN, ms))
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(unavailable)?;
    let read = |row: &sqlx::any::AnyRow| -> Result<AuditRecord, sqlx::Error> {
        Ok(AuditRecord {
            id: row.try_get("id")?,
            entry: AuditEntry {
                at: time_column(row, "at")?,
                actor: row.try_get("actor")?,
                role: row.try_get("role")?,
                source: row.try_get("source")?,
                action: row.try_get("action")?,
                target: row.try_get("target")?,
                outcome: row.try_get("outcome")?,
                detail: row.try_get("detail")?,
            },
        })
    };
    Ok(rows
        .iter()
        .filter_map(|row| {
            read(row).map_err(|e| tracing::warn!(error = %e, "an audit entry cannot be read; it is left out")).ok()
        })
        .collect())
}

/// One step of a prune: deletes up to [`PRUNE_STEP`] of the oldest entries made before `before`
/// or beyond the newest `keep`. Returns how many it deleted.
pub(crate) async fn prune_step(
    conn: &mut AnyConnection,
    before: DateTime<Utc>,
    keep: u64,
) -> Result<Result<Written, StoreError>, sqlx::Error> {
    // The id of the newest entry past the `keep` newest: it and every older one go.
    let bound: Option<i64> = sqlx::query("SELECT id FROM audit_log ORDER BY id DESC LIMIT 1 OFFSET $1")
        .bind(i64::try_from(keep).unwrap_or(i64::MAX))
        .fetch_optional(&mut *conn)
        .await?
        .map(|row| row.try_get("id"))
        .transpose()?;
    let done = sqlx::query(
        "DELETE FROM audit_log WHERE id IN (SELECT id FROM audit_log WHERE at < $1 OR id <= $2 ORDER BY id LIMIT $3)",
    )
    .bind(ms(before))
    .bind(bound.unwrap_or(i64::MIN))
    .bind(PRUNE_STEP as i64)
    .execute(&mut *conn)
    .await?;
    Ok(Ok(Written::Count(done.rows_affected())))
}

//! The SQL for each batched [`Record`]: inventory updates on connect, disconnect and seen, and
//! the job history (create, settle, end). Called by the writer (`writer.rs`) inside its batch
//! transaction; nothing here commits.
//!
//! A job's target list is stored once, as JSON text in `jobs.targets` (device ids in id order);
//! a `job_targets` row is written only when a target gets a status (at creation for targets
//! that start settled, by a settle, or when the job ends). A listed target without a row is
//! pending. Jobs stored before the list existed (`targets` NULL) have one row per target, with
//! a NULL status while pending; everything here handles both.

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use sqlx::{AnyConnection, Row};

use crate::Record;
use crate::bulk::Placeholders;
use crate::model::{Connection, FLAP_WINDOW_MS, JobEnd, NewJob, TargetOutcome};
use crate::rows::{list_json, map_json, ms, values_json};

/// Targets per multi-row `INSERT`: 4 parameters each plus the job id, far below SQLite's 32766
/// and PostgreSQL's 65535 parameter limits.
const TARGET_CHUNK: usize = 1_000;

/// `last_seen` moves forward only (`$2` is the new time).
const LAST_SEEN_FORWARD: &str = "CASE WHEN last_seen IS NULL OR last_seen < $2 THEN $2 ELSE last_seen END";

/// Applies one record. A record for an unknown device or job changes nothing.
pub(crate) async fn record(conn: &mut AnyConnection, record: &Record) -> Result<(), sqlx::Error> {
    match record {
        Record::Connected(c) => connected(conn, c).await,
        Record::Disconnected { id, at } => {
            let sql = format!("UPDATE devices SET last_seen = {LAST_SEEN_FORWARD}, last_disconnect = $2 WHERE id = $1");
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).bind(ms(*at)).execute(conn).await.map(drop)
        }
        Record::Seen { id, at } => {
            let sql = format!("UPDATE devices SET last_seen = {LAST_SEEN_FORWARD} WHERE id = $1");
            sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).bind(ms(*at)).execute(conn).await.map(drop)
        }
        Record::JobCreated(job) => job_created(conn, job).await,
        Record::TargetsSettled(outcomes) => targets_settled(conn, outcomes).await,
        Record::JobEnded(end) => job_ended(conn, end).await,
        Record::JobRetargeted { job, targets } => {
            let list = serde_json::to_string(targets).expect("a list of strings always serializes");
            sqlx::query("UPDATE jobs SET targets = $2 WHERE id = $1").bind(job).bind(list).execute(conn).await.map(drop)
        }
        Record::Audit(entry) => crate::audit::append(conn, entry).await,
    }
}

/// A held command of `job` settled (answered, expired or interrupted): the job is done when its
/// live part is over (`finished_at` set) and no command of it is held any more.
pub(crate) async fn held_settled(conn: &mut AnyConnection, job: &str, at: DateTime<Utc>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE jobs SET state = 'done', finished_at = $2 WHERE id = $1 AND state = 'running' \
         AND finished_at IS NOT NULL AND NOT EXISTS (SELECT 1 FROM queued_commands WHERE job_id = $1)",
    )
    .bind(job)
    .bind(ms(at))
    .execute(conn)
    .await
    .map(drop)
}

async fn connected(conn: &mut AnyConnection, c: &Connection) -> Result<(), sqlx::Error> {
    let sql = format!(
        "UPDATE devices SET first_seen = COALESCE(first_seen, $2), last_seen = {LAST_SEEN_FORWARD}, \
         connections = connections + 1, \
         flaps = flaps + CASE WHEN last_disconnect IS NOT NULL AND $2 >= last_disconnect \
                                   AND $2 - last_disconnect < $3 THEN 1 ELSE 0 END, \
         last_remote_addr = $4, user_agent = $5, agent_version = $6, commands = $7, \
         reported_tags = $8, transport = $9, command_schemas = $10 \
         WHERE id = $1"
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&c.id)
        .bind(ms(c.at))
        .bind(FLAP_WINDOW_MS)
        .bind(&c.remote_addr)
        .bind(&c.user_agent)
        .bind(&c.agent_version)
        .bind(list_json(&c.commands))
        .bind(map_json(&c.reported_tags))
        .bind(&c.transport)
        .bind(values_json(&c.schemas))
        .execute(conn)
        .await
        .map(drop)
}

async fn job_created(conn: &mut AnyConnection, job: &NewJob) -> Result<(), sqlx::Error> {
    let list: Vec<&str> = job.targets.iter().map(|t| t.device.as_str()).collect();
    let list = serde_json::to_string(&list).expect("a list of strings always serializes");
    // A schedule's firing stored its job's row already (`schedules::advance`): completed here.
    // Any other existing row is left as it is.
    sqlx::query(
        "INSERT INTO jobs (id, requester, selector, command, args, created_at, deadline_at, state, target_count, \
         targets, node, skipped, schedule_id, rollout) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, 'running', $8, $9, $10, $11, $12, $13) \
         ON CONFLICT (id) DO UPDATE SET requester = excluded.requester, selector = excluded.selector, \
         command = excluded.command, args = excluded.args, created_at = excluded.created_at, \
         deadline_at = excluded.deadline_at, target_count = excluded.target_count, targets = excluded.targets, \
         skipped = excluded.skipped, rollout = excluded.rollout WHERE jobs.schedule_id IS NOT NULL",
    )
    .bind(&job.id)
    .bind(&job.requester)
    .bind(&job.selector)
    .bind(&job.command)
    .bind(&job.args)
    .bind(ms(job.created_at))
    .bind(ms(job.deadline_at))
    .bind(i64::try_from(job.targets.len()).unwrap_or(i64::MAX))
    .bind(list)
    .bind(&job.node)
    .bind(i64::try_from(job.skipped).unwrap_or(i64::MAX))
    .bind(&job.schedule)
    .bind(&job.rollout)
    .execute(&mut *conn)
    .await?;

    // Pending targets are in the list only; rows are for targets that start with a status.
    let settled: Vec<TargetRow<'_>> = job
        .targets
        .iter()
        .filter_map(|t| {
            let error = t.error.as_ref();
            t.status.map(|s| {
                (t.device.as_str(), s.as_str(), error.map(|e| e.code.as_str()), error.map(|e| e.message.as_str()))
            })
        })
        .collect();
    insert_targets(conn, &job.id, &settled).await
}

/// Columns of one settled target in the bulk upsert.
const SETTLED_COLUMNS: usize = 9;

/// On-time outcomes in bulk (one statement per [`TARGET_CHUNK`]); late ones (rare) one by one.
pub(crate) async fn targets_settled<'a>(
    conn: &mut AnyConnection,
    outcomes: impl IntoIterator<Item = &'a TargetOutcome>,
) -> Result<(), sqlx::Error> {
    let (late, on_time): (Vec<&TargetOutcome>, Vec<&TargetOutcome>) = outcomes.into_iter().partition(|o| o.late);
    for chunk in on_time.chunks(TARGET_CHUNK) {
        on_time_chunk(conn, chunk).await?;
    }
    for o in late {
        late_settled(conn, o).await?;
    }
    Ok(())
}

/// Settles pending targets only: an upsert whose update applies where `status IS NULL` or
/// `queued` (a target that already has a final status keeps it; a pending target, which has no
/// row, gets one; a held command's outcome replaces its `queued`). Rows
/// come from a `VALUES` list (columns `column1`.. on both backends) filtered to jobs that exist:
/// an outcome for an unknown job (pruned, or its creation lost) is skipped rather than failing
/// the foreign key, which would send the whole batch down the slow path.
async fn on_time_chunk(conn: &mut AnyConnection, chunk: &[&TargetOutcome]) -> Result<(), sqlx::Error> {
    let mut sql = String::with_capacity(30 * chunk.len() + 600);
    sql.push_str(
        "INSERT INTO job_targets (job_id, device_id, status, result, error_code, error_message, elapsed_ms, \
         answered_at, error_data) SELECT v.column1, v.column2, v.column3, v.column4, v.column5, v.column6, \
         v.column7, v.column8, v.column9 FROM (VALUES ",
    );
    sql.push_str(&Placeholders::of(conn).rows(chunk.len(), SETTLED_COLUMNS));
    // The WHERE also keeps SQLite from reading ON CONFLICT as a join constraint.
    sql.push_str(
        ") AS v WHERE EXISTS (SELECT 1 FROM jobs WHERE jobs.id = v.column1) \
         ON CONFLICT (job_id, device_id) DO UPDATE SET status = excluded.status, result = excluded.result, \
         error_code = excluded.error_code, error_message = excluded.error_message, \
         error_data = excluded.error_data, elapsed_ms = excluded.elapsed_ms, answered_at = excluded.answered_at \
         WHERE job_targets.status IS NULL OR job_targets.status = 'queued'",
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(chunk.len() == TARGET_CHUNK);
    for o in chunk {
        query = bind_outcome(query, o);
    }
    query.execute(conn).await.map(drop)
}

/// Binds an outcome's [`SETTLED_COLUMNS`] values, in the column order both statements use.
fn bind_outcome<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments>,
    o: &'q TargetOutcome,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments> {
    query
        .bind(&o.job)
        .bind(&o.device)
        .bind(o.status.as_str())
        .bind(&o.result)
        .bind(o.error.as_ref().map(|e| e.code.as_str()))
        .bind(o.error.as_ref().map(|e| e.message.as_str()))
        .bind(o.elapsed_ms.map(|v| i64::try_from(v).unwrap_or(i64::MAX)))
        .bind(ms(o.at))
        .bind(o.error.as_ref().and_then(|e| e.data_json()))
}

/// An answer after the deadline is kept beside a `timeout`, in the `late_*` columns: the
/// target's status and error, and so its job's summary, stay what the requester was told. Only
/// the first late answer is kept (`late_status IS NULL`), and only for a target that timed out:
/// a pending target (no row, or a NULL status) was not told anything yet, and any other status
/// was an answer or a decision of the server. A row written before the `late_*` columns with
/// `late` set holds a late answer already (in place of its timeout), so it takes no other.
async fn late_settled(conn: &mut AnyConnection, o: &TargetOutcome) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE job_targets SET late_status = $3, late_result = $4, late_error_code = $5, \
         late_error_message = $6, late_at = $7, late_error_data = $8 \
         WHERE job_id = $1 AND device_id = $2 AND status = 'timeout' AND late_status IS NULL AND late = FALSE",
    )
    .bind(&o.job)
    .bind(&o.device)
    .bind(o.status.as_str())
    .bind(&o.result)
    .bind(o.error.as_ref().map(|e| e.code.as_str()))
    .bind(o.error.as_ref().map(|e| e.message.as_str()))
    .bind(ms(o.at))
    .bind(o.error.as_ref().and_then(|e| e.data_json()))
    .execute(conn)
    .await
    .map(drop)
}

/// The live part of a job ended: its state becomes `end.state`, unless commands of it are still
/// held for devices (sent with a TTL): then it stays `running` until the last of them settles
/// ([`held_settled`]); `finished_at` marks that the live part is over either way.
async fn job_ended(conn: &mut AnyConnection, end: &JobEnd) -> Result<(), sqlx::Error> {
    if end.state == orb_proto::history::JobPhase::Cancelled {
        // Cancelled: what is still waiting for a device is dropped (handed-over ones settle).
        crate::queue::cancel_waiting(conn, &end.job, end.at).await?;
    }
    sqlx::query(
        "UPDATE jobs SET state = CASE WHEN EXISTS (SELECT 1 FROM queued_commands WHERE job_id = $1) \
         THEN 'running' ELSE $2 END, finished_at = $3, due_at = NULL WHERE id = $1",
    )
    .bind(&end.job)
    .bind(end.state.as_str())
    .bind(ms(end.at))
    .execute(&mut *conn)
    .await?;
    if let Some((status, error)) = &end.pending_become {
        settle_pending(conn, &end.job, status.as_str(), error.code.as_str(), &error.message).await?;
    }
    Ok(())
}

/// Gives every pending target of `job` a final status and error; returns their ids in id order.
/// Pending are the listed targets without a row (rows for them are inserted in bulk) and rows
/// with a NULL status (a job stored before the list existed), which are updated. A pending
/// target whose command is held for its device (a job with a TTL does not write `queued` in the
/// commit that holds it) becomes `queued` instead, and is not among those returned.
pub(crate) async fn settle_pending(
    conn: &mut AnyConnection,
    job: &str,
    status: &str,
    code: &str,
    message: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let Some(row) = sqlx::query("SELECT targets FROM jobs WHERE id = $1").bind(job).fetch_optional(&mut *conn).await?
    else {
        return Ok(Vec::new());
    };
    let list = crate::rows::target_list(&row, job);
    let rows = sqlx::query("SELECT device_id, status FROM job_targets WHERE job_id = $1")
        .bind(job)
        .fetch_all(&mut *conn)
        .await?;
    let mut with_row = HashSet::with_capacity(rows.len());
    let mut unset = Vec::new();
    for row in &rows {
        let device: String = row.try_get("device_id")?;
        if row.try_get::<Option<String>, _>("status")?.is_none() {
            unset.push(device.clone());
        }
        with_row.insert(device);
    }
    let held: HashSet<String> = sqlx::query("SELECT device FROM queued_commands WHERE job_id = $1")
        .bind(job)
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|row| row.try_get("device"))
        .collect::<Result<_, _>>()?;
    let (queued, missing): (Vec<String>, Vec<String>) =
        list.unwrap_or_default().into_iter().filter(|d| !with_row.contains(d)).partition(|d| held.contains(d));
    let unset: Vec<String> = unset.into_iter().filter(|d| !held.contains(d)).collect();

    let queued: Vec<TargetRow<'_>> = queued.iter().map(|d| (d.as_str(), "queued", None, None)).collect();
    insert_targets(conn, job, &queued).await?;
    let missing_rows: Vec<TargetRow<'_>> =
        missing.iter().map(|d| (d.as_str(), status, Some(code), Some(message))).collect();
    insert_targets(conn, job, &missing_rows).await?;
    if !held.is_empty() {
        sqlx::query(
            "UPDATE job_targets SET status = 'queued' WHERE job_id = $1 AND status IS NULL \
             AND device_id IN (SELECT device FROM queued_commands WHERE job_id = $1)",
        )
        .bind(job)
        .execute(&mut *conn)
        .await?;
    }
    if !unset.is_empty() {
        sqlx::query(
            "UPDATE job_targets SET status = $2, error_code = $3, error_message = $4 \
             WHERE job_id = $1 AND status IS NULL",
        )
        .bind(job)
        .bind(status)
        .bind(code)
        .bind(message)
        .execute(&mut *conn)
        .await?;
    }
    let mut settled = missing;
    settled.extend(unset);
    settled.sort_unstable();
    settled.dedup();
    Ok(settled)
}

/// A target row to insert: device, status, error code, error message.
type TargetRow<'a> = (&'a str, &'a str, Option<&'a str>, Option<&'a str>);

/// Inserts `rows` as `job`'s targets: one statement per [`TARGET_CHUNK`].
async fn insert_targets(conn: &mut AnyConnection, job: &str, rows: &[TargetRow<'_>]) -> Result<(), sqlx::Error> {
    let style = Placeholders::of(conn);
    for chunk in rows.chunks(TARGET_CHUNK) {
        let sql = format!(
            "INSERT INTO job_targets (job_id, device_id, status, error_code, error_message) VALUES {}",
            style.rows(chunk.len(), 5)
        );
        // Full chunks repeat, so their prepared statement is worth caching; a remainder is not.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).persistent(chunk.len() == TARGET_CHUNK);
        for (device, status, code, message) in chunk {
            query = query.bind(job).bind(*device).bind(*status).bind(*code).bind(*message);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(())
}

//! The SQL for awaited writes ([`Write`]): registry changes (add, secret, revoke, remove,
//! operator tags) and job administration (cancel, recover, prune). Run by the writer
//! (`writer.rs`) inside its batch transaction. Every refusal (`NotFound`, `Conflict`) is decided
//! before the first change, so a refused write changes nothing; SQL failures go back to the
//! writer as `sqlx::Error`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use orb_proto::ErrorCode;
use sqlx::AnyConnection;

use crate::apply::settle_pending;
use crate::rows::{self, DEVICE_COLUMNS, DEVICES, map_json, ms};
use crate::writer::{PruneBound, Write, Written};
use crate::{Device, NewDevice, StoreError};

/// What the inner `Result` of [`write`] carries: the answer, or a refusal for the caller.
type Answer = Result<Written, StoreError>;

/// Applies one awaited write.
pub(crate) async fn write(conn: &mut AnyConnection, write: &Write) -> Result<Answer, sqlx::Error> {
    match write {
        Write::AddDevice(device) => add_device(conn, device).await,
        Write::SetSecret { id, hash } => {
            let done = sqlx::query("UPDATE devices SET secret_hash = $2 WHERE id = $1")
                .bind(id)
                .bind(hash.to_vec())
                .execute(conn)
                .await?;
            Ok(if done.rows_affected() == 0 { Err(no_device(id)) } else { Ok(Written::Nothing) })
        }
        Write::Revoke(id) => {
            let done = sqlx::query("UPDATE devices SET revoked = TRUE, secret_hash = NULL WHERE id = $1")
                .bind(id)
                .execute(&mut *conn)
                .await?;
            if done.rows_affected() == 0 {
                return Ok(Err(no_device(id)));
            }
            reread(conn, id).await
        }
        Write::Remove(id) => {
            sqlx::query("DELETE FROM device_deliveries WHERE device = $1").bind(id).execute(&mut *conn).await?;
            let done = sqlx::query("DELETE FROM devices WHERE id = $1").bind(id).execute(conn).await?;
            Ok(if done.rows_affected() == 0 { Err(no_device(id)) } else { Ok(Written::Nothing) })
        }
        Write::SetOperatorTags { id, set, remove } => {
            let row = sqlx::query("SELECT operator_tags FROM devices WHERE id = $1")
                .bind(id)
                .fetch_optional(&mut *conn)
                .await?;
            let Some(row) = row else { return Ok(Err(no_device(id))) };
            // Tags that cannot be read are read as none (`rows::device`); the change applies to
            // what the operator was shown.
            let text: Option<String> = sqlx::Row::try_get(&row, "operator_tags").ok();
            let mut tags = match text.as_deref().map(rows::parse_map) {
                Some(Ok(tags)) => tags,
                Some(Err(_)) | None => {
                    tracing::warn!(device.id = %id, "device {id}: stored operator_tags cannot be read; replaced");
                    BTreeMap::new()
                }
            };
            for key in remove {
                tags.remove(key);
            }
            tags.extend(set.iter().map(|(k, v)| (k.clone(), v.clone())));
            sqlx::query("UPDATE devices SET operator_tags = $2 WHERE id = $1")
                .bind(id)
                .bind(map_json(&tags))
                .execute(&mut *conn)
                .await?;
            reread(conn, id).await
        }
        Write::CancelJob { id, at } => cancel_job(conn, id, *at).await,
        Write::RecoverJobs { node, at, message } => recover_jobs(conn, node, *at, message).await,
        Write::PruneJobs { before, keep } => prune_jobs(conn, *before, *keep).await,
        Write::PruneMore(bound) => prune_step(conn, bound).await,
        Write::Enqueue { commands, limits } => crate::queue::enqueue(conn, commands, *limits).await,
        Write::Delivered { id, at, again } => crate::queue::delivered(conn, *id, *at, *again).await,
        Write::Undelivered(id) => crate::queue::undelivered(conn, *id).await,
        Write::SettleHeld { settled, at } => crate::queue::settle_held(conn, settled, *at).await,
        Write::CountDeliveries(counts) => crate::queue::count_deliveries(conn, counts).await,
        Write::CreateSchedule { schedule, limits } => crate::schedules::create(conn, schedule, *limits).await,
        Write::PauseSchedule { id, paused_at, next_fire_at } => {
            crate::schedules::pause(conn, id, *paused_at, *next_fire_at).await
        }
        Write::RemoveSchedule(id) => crate::schedules::remove(conn, id).await,
        Write::AdvanceSchedule(firing) => crate::schedules::advance(conn, firing).await,
        Write::DispatchFiring(job) => crate::schedules::dispatch(conn, job).await,
        Write::ScheduleError { id, error } => crate::schedules::set_error(conn, id, error.as_deref()).await,
        Write::ExpireQueued { now, limit } => crate::queue::expire(conn, *now, *limit).await,
        Write::StoreMessages { messages, limits } => crate::messages::store(conn, messages, *limits).await,
        Write::Retain(changes) => crate::retained::apply(conn, changes).await,
        Write::AddToken(token) => crate::tokens::add(conn, token).await,
        Write::RevokeToken { name, at } => crate::tokens::revoke(conn, name, *at).await,
        Write::PruneAudit { before, keep } => crate::audit::prune_step(conn, *before, *keep).await,
    }
}

fn no_device(id: &str) -> StoreError {
    StoreError::NotFound(format!("device {id}"))
}

/// Reads one device inside the writer's transaction.
pub(crate) async fn device(conn: &mut AnyConnection, id: &str) -> Result<Option<Device>, sqlx::Error> {
    let sql = format!("SELECT {DEVICE_COLUMNS} FROM {DEVICES} WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(conn).await?;
    Ok(row.as_ref().and_then(rows::device))
}

/// The device as it is now in the transaction, as a write's answer.
async fn reread(conn: &mut AnyConnection, id: &str) -> Result<Answer, sqlx::Error> {
    Ok(match device(conn, id).await? {
        Some(device) => Ok(Written::Device(Box::new(device))),
        None => Err(no_device(id)),
    })
}

async fn add_device(conn: &mut AnyConnection, new: &NewDevice) -> Result<Answer, sqlx::Error> {
    let exists = sqlx::query("SELECT id FROM devices WHERE id = $1").bind(&new.id).fetch_optional(&mut *conn).await?;
    if exists.is_some() {
        return Ok(Err(StoreError::Conflict(format!("device {}", new.id))));
    }
    sqlx::query("INSERT INTO devices (id, secret_hash, operator_tags, registered_at) VALUES ($1, $2, $3, $4)")
        .bind(&new.id)
        .bind(new.secret_hash.map(|h| h.to_vec()))
        .bind(map_json(&new.operator_tags))
        .bind(ms(new.registered_at))
        .execute(&mut *conn)
        .await?;
    reread(conn, &new.id).await
}

async fn cancel_job(conn: &mut AnyConnection, id: &str, at: DateTime<Utc>) -> Result<Answer, sqlx::Error> {
    let row = sqlx::query("SELECT state FROM jobs WHERE id = $1").bind(id).fetch_optional(&mut *conn).await?;
    let Some(row) = row else { return Ok(Err(StoreError::NotFound(format!("job {id}")))) };
    let state: String = sqlx::Row::try_get(&row, "state")?;
    if state != orb_proto::history::JobPhase::Running.as_str() {
        return Ok(Ok(Written::Ids(Vec::new())));
    }
    let mut ids = settle_pending(conn, id, "cancelled", "cancelled", "the job was cancelled").await?;
    ids.extend(crate::queue::cancel_waiting(conn, id, at).await?);
    ids.sort();
    sqlx::query("UPDATE jobs SET state = 'cancelled', finished_at = $2, due_at = NULL WHERE id = $1")
        .bind(id)
        .bind(ms(at))
        .execute(&mut *conn)
        .await?;
    Ok(Ok(Written::Ids(ids)))
}

/// Ends the running jobs of `node`, and running jobs without a node (stored before jobs had
/// one); running jobs of other nodes are theirs to end. Their pending targets become `timeout`;
/// a job with commands still held for devices stays running until those settle.
async fn recover_jobs(
    conn: &mut AnyConnection,
    node: &str,
    at: DateTime<Utc>,
    message: &str,
) -> Result<Answer, sqlx::Error> {
    // A schedule's fired job still awaiting dispatch is not ended: the scheduler dispatches it.
    const OWNED: &str = "state = 'running' AND (node = $1 OR node IS NULL) AND due_at IS NULL";
    let running = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT id FROM jobs WHERE {OWNED}")))
        .bind(node)
        .fetch_all(&mut *conn)
        .await?;
    for row in &running {
        let id: String = sqlx::Row::try_get(row, "id")?;
        settle_pending(conn, &id, "timeout", ErrorCode::Timeout.as_str(), message).await?;
    }
    // A job with commands still held for devices stays running (they are delivered after the
    // restart); its live part is over.
    let sql = format!(
        "UPDATE jobs SET state = CASE WHEN EXISTS (SELECT 1 FROM queued_commands q WHERE q.job_id = jobs.id) \
         THEN 'running' ELSE 'done' END, finished_at = $2 WHERE {OWNED}"
    );
    let done = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(node).bind(ms(at)).execute(conn).await?;
    Ok(Ok(Written::Count(done.rows_affected())))
}

/// Jobs per prune step: at most this many are deleted per statement and per transaction.
const PRUNE_JOBS: usize = 10_000;
/// Targets per prune step, roughly (a step stops adding jobs when their targets would exceed it,
/// but always deletes at least one job).
const PRUNE_TARGETS: u64 = 50_000;

/// The first prune step: the bound follows from `before` and from the `keep`-th newest job
/// (found with an index walk over `(created_at, id)`), then the oldest chunk below it goes.
async fn prune_jobs(conn: &mut AnyConnection, before: DateTime<Utc>, keep: u64) -> Result<Answer, sqlx::Error> {
    let offset = i64::try_from(keep).unwrap_or(i64::MAX);
    let cutoff = sqlx::query("SELECT created_at, id FROM jobs ORDER BY created_at DESC, id DESC LIMIT 1 OFFSET $1")
        .bind(offset)
        .fetch_optional(&mut *conn)
        .await?;
    let before = ms(before);
    let bound = match cutoff {
        Some(row) => {
            let at: i64 = sqlx::Row::try_get(&row, "created_at")?;
            let id: String = sqlx::Row::try_get(&row, "id")?;
            // Everything created before `before` is at or below the cutoff when the cutoff is
            // not older than `before`; otherwise age is the wider bound.
            if at >= before { PruneBound::UpTo(at, id) } else { PruneBound::Before(before) }
        }
        None => PruneBound::Before(before),
    };
    prune_step(conn, &bound).await
}

/// Deletes the oldest chunk of jobs within `bound` that are not running, with their targets.
/// Says to go on when the chunk was full.
pub(crate) async fn prune_step(conn: &mut AnyConnection, bound: &PruneBound) -> Result<Answer, sqlx::Error> {
    let running = orb_proto::history::JobPhase::Running.as_str();
    let (condition, at, id) = match bound {
        PruneBound::Before(at) => ("created_at < $1", *at, None),
        PruneBound::UpTo(at, id) => ("(created_at, id) <= ($1, $2)", *at, Some(id)),
    };
    let sql = format!(
        "SELECT id, target_count FROM jobs WHERE {condition} AND state <> '{running}' \
         ORDER BY created_at, id LIMIT {PRUNE_JOBS}"
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(at);
    if let Some(id) = id {
        query = query.bind(id);
    }
    let rows = query.fetch_all(&mut *conn).await?;
    let mut ids = Vec::with_capacity(rows.len());
    let mut targets = 0_u64;
    for row in &rows {
        let count: i64 = sqlx::Row::try_get(row, "target_count")?;
        let count = u64::try_from(count).unwrap_or(0);
        if !ids.is_empty() && targets.saturating_add(count) > PRUNE_TARGETS {
            break;
        }
        targets = targets.saturating_add(count);
        ids.push(sqlx::Row::try_get::<String, _>(row, "id")?);
    }
    let full = rows.len() == PRUNE_JOBS || ids.len() < rows.len();
    if ids.is_empty() {
        return Ok(Ok(Written::Pruned { deleted: 0, more: None }));
    }
    // Targets are deleted explicitly (not only by ON DELETE CASCADE), so pruning does not depend
    // on a connection's foreign-key setting.
    delete_listed(conn, "DELETE FROM job_targets WHERE job_id", &ids).await?;
    let deleted = delete_listed(conn, "DELETE FROM jobs WHERE id", &ids).await?;
    Ok(Ok(Written::Pruned { deleted, more: full.then(|| bound.clone()) }))
}

/// Runs `<delete> IN ($1, ..., $n)` over `ids` (at most [`PRUNE_JOBS`], below both backends'
/// parameter limits); returns the rows deleted.
async fn delete_listed(conn: &mut AnyConnection, delete: &str, ids: &[String]) -> Result<u64, sqlx::Error> {
    let list = crate::bulk::Placeholders::of(conn).list(ids.len());
    let mut query = sqlx::query(sqlx::AssertSqlSafe(format!("{delete} IN ({list})"))).persistent(false);
    for id in ids {
        query = query.bind(id);
    }
    Ok(query.execute(conn).await?.rows_affected())
}

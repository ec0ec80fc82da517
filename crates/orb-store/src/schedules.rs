//! Stored schedules (decision 0014): the awaited writes the writer runs in its batch
//! transaction (store within the limits, pause or resume, remove, advance with the job a firing
//! starts, mark that job dispatched, record a firing's error) and the reads (all schedules, one
//! by id or prefix, fired jobs still awaiting dispatch). The scheduler in `orb-server` decides
//! when; this module only makes each step happen once.

use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, Row};

use crate::backend::{Backend, unavailable};
use crate::rows::ms;
use crate::writer::Written;
use crate::{FiredJob, Firing, NewSchedule, ScheduleCreated, ScheduleLimits, ScheduleRecord, StoreError};

type Answer = Result<Written, StoreError>;

const COLUMNS: &str = "id, spec, missed, selector, command, args, wait_ms, ttl_ms, rollout, on_agent, created_by, credential, \
     created_at, paused_at, next_fire_at, last_fired_at, fired, last_error";

/// Stores `s` unless there are `limits.max_schedules` already or it is larger than
/// `limits.max_bytes`.
pub(crate) async fn create(
    conn: &mut AnyConnection,
    s: &NewSchedule,
    limits: ScheduleLimits,
) -> Result<Answer, sqlx::Error> {
    let bytes = s.bytes();
    if bytes > limits.max_bytes {
        let why = format!("the schedule is {bytes} bytes, above the {} a schedule may have", limits.max_bytes);
        return Ok(Ok(Written::ScheduleCreated(ScheduleCreated::Full(why))));
    }
    let row = sqlx::query("SELECT COUNT(*) AS n FROM schedules").fetch_one(&mut *conn).await?;
    let stored = u64::try_from(row.try_get::<i64, _>("n")?).unwrap_or(0);
    if stored >= limits.max_schedules {
        let why = format!("{stored} schedules are stored, the most this server keeps");
        return Ok(Ok(Written::ScheduleCreated(ScheduleCreated::Full(why))));
    }
    let taken =
        sqlx::query("SELECT 1 AS x FROM schedules WHERE id = $1").bind(&s.id).fetch_optional(&mut *conn).await?;
    if taken.is_some() {
        return Ok(Err(StoreError::Conflict(format!("schedule {}", s.id))));
    }
    sqlx::query(
        "INSERT INTO schedules (id, spec, missed, selector, command, args, wait_ms, ttl_ms, created_by, created_at, \
         bytes, next_fire_at, rollout, on_agent, credential) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
    )
    .bind(&s.id)
    .bind(&s.spec)
    .bind(&s.missed)
    .bind(&s.selector)
    .bind(&s.command)
    .bind(s.args.as_deref())
    .bind(i64::try_from(s.wait_ms).unwrap_or(i64::MAX))
    .bind(s.ttl_ms.map(|t| i64::try_from(t).unwrap_or(i64::MAX)))
    .bind(&s.created_by)
    .bind(ms(s.created_at))
    .bind(i64::try_from(bytes).unwrap_or(i64::MAX))
    .bind(s.next_fire_at.map(ms))
    .bind(s.rollout.as_deref())
    .bind(i64::from(s.on_agent))
    .bind(s.credential.as_deref())
    .execute(&mut *conn)
    .await?;
    Ok(Ok(Written::ScheduleCreated(ScheduleCreated::Created)))
}

/// Pauses (`paused_at` set) an active schedule, or resumes a paused one, with its next firing
/// time; a schedule already so is left as it is (0).
pub(crate) async fn pause(
    conn: &mut AnyConnection,
    id: &str,
    paused_at: Option<DateTime<Utc>>,
    next_fire_at: Option<DateTime<Utc>>,
) -> Result<Answer, sqlx::Error> {
    let was = if paused_at.is_some() { "paused_at IS NULL" } else { "paused_at IS NOT NULL" };
    let sql = format!("UPDATE schedules SET paused_at = $2, next_fire_at = $3 WHERE id = $1 AND {was}");
    let done = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .bind(paused_at.map(ms))
        .bind(next_fire_at.map(ms))
        .execute(&mut *conn)
        .await?;
    Ok(Ok(Written::Count(done.rows_affected())))
}

/// Removes a schedule; the jobs it fired keep its id.
pub(crate) async fn remove(conn: &mut AnyConnection, id: &str) -> Result<Answer, sqlx::Error> {
    let done = sqlx::query("DELETE FROM schedules WHERE id = $1").bind(id).execute(&mut *conn).await?;
    Ok(Ok(Written::Count(done.rows_affected())))
}

/// Moves a schedule on from `firing.expected` (if it is still there and not paused) and, when it
/// fires, stores its job awaiting dispatch, in the same transaction. A schedule that fires no
/// more (`firing.next` is `None`) is deleted instead: its jobs stay, linked to its id.
pub(crate) async fn advance(conn: &mut AnyConnection, firing: &Firing) -> Result<Answer, sqlx::Error> {
    let fires = firing.job.is_some();
    let moved = match firing.next {
        Some(next) => {
            sqlx::query(
                "UPDATE schedules SET next_fire_at = $3, \
                 last_fired_at = CASE WHEN $4 = 1 THEN $5 ELSE last_fired_at END, \
                 fired = fired + $4 \
                 WHERE id = $1 AND next_fire_at = $2 AND paused_at IS NULL",
            )
            .bind(&firing.schedule)
            .bind(ms(firing.expected))
            .bind(ms(next))
            .bind(i64::from(fires))
            .bind(ms(firing.at))
            .execute(&mut *conn)
            .await?
        }
        None => {
            sqlx::query("DELETE FROM schedules WHERE id = $1 AND next_fire_at = $2 AND paused_at IS NULL")
                .bind(&firing.schedule)
                .bind(ms(firing.expected))
                .execute(&mut *conn)
                .await?
        }
    };
    if moved.rows_affected() == 0 {
        return Ok(Ok(Written::Count(0)));
    }
    if let Some(job) = &firing.job {
        sqlx::query(
            "INSERT INTO jobs (id, requester, selector, command, args, created_at, deadline_at, state, target_count, \
             targets, node, skipped, schedule_id, due_at, ttl_ms, rollout) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, 'running', 0, '[]', $8, 0, $9, $10, $11, $12)",
        )
        .bind(&job.id)
        .bind(&job.requester)
        .bind(&job.selector)
        .bind(&job.command)
        .bind(job.args.as_deref())
        .bind(ms(job.created_at))
        .bind(ms(job.deadline_at))
        .bind(&job.node)
        .bind(&firing.schedule)
        .bind(ms(firing.at))
        .bind(firing.ttl_ms.map(|t| i64::try_from(t).unwrap_or(i64::MAX)))
        .bind(job.rollout.as_deref())
        .execute(&mut *conn)
        .await?;
    }
    Ok(Ok(Written::Count(1)))
}

/// Marks a fired job dispatched, once.
pub(crate) async fn dispatch(conn: &mut AnyConnection, job: &str) -> Result<Answer, sqlx::Error> {
    let done = sqlx::query("UPDATE jobs SET due_at = NULL WHERE id = $1 AND due_at IS NOT NULL AND state = 'running'")
        .bind(job)
        .execute(&mut *conn)
        .await?;
    Ok(Ok(Written::Count(done.rows_affected())))
}

/// Records (or clears) why a schedule's last firing could not start.
pub(crate) async fn set_error(conn: &mut AnyConnection, id: &str, error: Option<&str>) -> Result<Answer, sqlx::Error> {
    let done =
        sqlx::query("UPDATE schedules SET last_error = $2 WHERE id = $1").bind(id).bind(error).execute(conn).await?;
    Ok(Ok(Written::Count(done.rows_affected())))
}

/// Every schedule, by id, without its arguments (they may be large; [`one`] has them); one whose
/// row cannot be read is left out (logged).
pub(crate) async fn all(pool: &AnyPool) -> Result<Vec<ScheduleRecord>, StoreError> {
    let columns = COLUMNS.replace("args,", "CAST(NULL AS TEXT) AS args,");
    let sql = format!("SELECT {columns} FROM schedules ORDER BY id");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await.map_err(unavailable)?;
    Ok(rows.iter().filter_map(schedule).collect())
}

/// Active schedules due by `before`, earliest first, at most `limit`.
pub(crate) async fn due(pool: &AnyPool, before: DateTime<Utc>, limit: u32) -> Result<Vec<ScheduleRecord>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM schedules WHERE paused_at IS NULL AND next_fire_at <= $1 \
         ORDER BY next_fire_at, id LIMIT $2"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(ms(before))
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await
        .map_err(unavailable)?;
    Ok(rows.iter().filter_map(schedule).collect())
}

/// The active agent-local schedules, by id, with their arguments.
pub(crate) async fn on_agents(pool: &AnyPool) -> Result<Vec<ScheduleRecord>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM schedules WHERE on_agent = 1 AND paused_at IS NULL ORDER BY id");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await.map_err(unavailable)?;
    Ok(rows.iter().filter_map(schedule).collect())
}

/// The earliest next firing time of an active schedule.
pub(crate) async fn earliest(pool: &AnyPool) -> Result<Option<DateTime<Utc>>, StoreError> {
    let row = sqlx::query("SELECT MIN(next_fire_at) AS t FROM schedules WHERE paused_at IS NULL")
        .fetch_one(pool)
        .await
        .map_err(unavailable)?;
    let t: Option<i64> = row.try_get("t").map_err(unavailable)?;
    Ok(t.and_then(DateTime::from_timestamp_millis))
}

/// One schedule by id or unique prefix.
pub(crate) async fn one(pool: &AnyPool, backend: Backend, id_or_prefix: &str) -> Result<ScheduleRecord, StoreError> {
    let not_found = || StoreError::NotFound(format!("schedule {id_or_prefix}"));
    let row = crate::query::by_id_or_prefix(pool, backend, "schedules", COLUMNS, id_or_prefix).await?;
    row.as_ref().and_then(schedule).ok_or_else(not_found)
}

/// `node`'s fired jobs still awaiting dispatch, oldest first; one whose row cannot be read is
/// left out (logged).
pub(crate) async fn undispatched(pool: &AnyPool, node: &str) -> Result<Vec<FiredJob>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, schedule_id, selector, command, args, created_at, deadline_at, ttl_ms, rollout, \
         (SELECT credential FROM schedules WHERE schedules.id = jobs.schedule_id) AS credential FROM jobs \
         WHERE due_at IS NOT NULL AND node = $1 AND state = 'running' AND schedule_id IS NOT NULL \
         ORDER BY due_at, id",
    )
    .bind(node)
    .fetch_all(pool)
    .await
    .map_err(unavailable)?;
    let read = |r: &AnyRow| -> Result<FiredJob, sqlx::Error> {
        let (created, deadline): (i64, i64) = (r.try_get("created_at")?, r.try_get("deadline_at")?);
        Ok(FiredJob {
            job: r.try_get("id")?,
            schedule: r.try_get("schedule_id")?,
            selector: r.try_get("selector")?,
            command: r.try_get("command")?,
            args: r.try_get("args")?,
            wait_ms: u64::try_from(deadline.saturating_sub(created)).unwrap_or(0),
            ttl_ms: r.try_get::<Option<i64>, _>("ttl_ms")?.map(|t| u64::try_from(t).unwrap_or(0)),
            rollout: r.try_get("rollout")?,
            credential: r.try_get("credential")?,
        })
    };
    Ok(rows
        .iter()
        .filter_map(|r| {
            read(r)
                .map_err(|e| tracing::warn!(error = %e, "a fired job awaiting dispatch could not be read; skipped"))
                .ok()
        })
        .collect())
}

/// A schedule, or `None` (logged) when its row cannot be read.
fn schedule(row: &AnyRow) -> Option<ScheduleRecord> {
    let read = || -> Result<ScheduleRecord, sqlx::Error> {
        let time = |col: &str| crate::rows::time_column(row, col);
        let optional_time = |col: &str| -> Result<Option<DateTime<Utc>>, sqlx::Error> {
            Ok(row.try_get::<Option<i64>, _>(col)?.and_then(DateTime::from_timestamp_millis))
        };
        let count =
            |col: &str| -> Result<u64, sqlx::Error> { Ok(u64::try_from(row.try_get::<i64, _>(col)?).unwrap_or(0)) };
        Ok(ScheduleRecord {
            schedule: NewSchedule {
                id: row.try_get("id")?,
                spec: row.try_get("spec")?,
                missed: row.try_get("missed")?,
                selector: row.try_get("selector")?,
                command: row.try_get("command")?,
                args: row.try_get("args")?,
                wait_ms: count("wait_ms")?,
                ttl_ms: row.try_get::<Option<i64>, _>("ttl_ms")?.map(|t| u64::try_from(t).unwrap_or(0)),
                rollout: row.try_get("rollout")?,
                on_agent: row.try_get::<i64, _>("on_agent")? != 0,
                created_by: row.try_get("created_by")?,
                credential: row.try_get("credential")?,
                created_at: time("created_at")?,
                next_fire_at: optional_time("next_fire_at")?,
            },
            paused_at: optional_time("paused_at")?,
            last_fired_at: optional_time("last_fired_at")?,
            fired: count("fired")?,
            last_error: row.try_get("last_error")?,
        })
    };
    match read() {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "a stored schedule could not be read; skipped");
            None
        }
    }
}

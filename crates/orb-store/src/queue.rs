//! Commands held for devices until they connect (jobs sent with a TTL): the awaited writes the
//! writer runs in its batch transaction (enqueue within each device's limits, record a delivery,
//! settle, expire) and the reads (a device's queue, everyone's counts). Rows are deleted when the
//! command is settled or expires, so the table holds only what is still owed to a device.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, AnyPool, Row};

use crate::backend::unavailable;
use crate::bulk::Placeholders;
use crate::rows::ms;
use crate::writer::Written;
use crate::{Enqueued, NewQueued, QueueCounts, QueueLimits, Queued, StoreError};

/// What the inner `Result` of a write carries: the answer, or a refusal for the caller.
type Answer = Result<Written, StoreError>;

const COLUMNS: &str =
    "id, job_id, device, command, args, sender, credential, wait_ms, queued_at, expires_at, attempts, delivered_at";

/// Rows per multi-row statement: 11 parameters each, far below SQLite's 32766 and PostgreSQL's
/// 65535 parameter limits.
const CHUNK: usize = 500;

/// Stores `commands` in order, each unless its device's queue would exceed `limits`. A command
/// for a job and device already held refuses the whole call before anything is written. Built
/// for jobs that hold thousands at once: a few statements per 500 commands, not one per command.
pub(crate) async fn enqueue(
    conn: &mut AnyConnection,
    commands: &[NewQueued],
    limits: QueueLimits,
) -> Result<Answer, sqlx::Error> {
    let style = Placeholders::of(conn);
    // Already held, per job.
    let jobs: BTreeSet<&str> = commands.iter().map(|c| c.job_id.as_str()).collect();
    let mut held_by_job: BTreeMap<&str, BTreeMap<String, i64>> = BTreeMap::new();
    for job in &jobs {
        let rows = sqlx::query("SELECT id, device FROM queued_commands WHERE job_id = $1")
            .bind(*job)
            .fetch_all(&mut *conn)
            .await?;
        let mut devices = BTreeMap::new();
        for row in &rows {
            devices.insert(row.try_get::<String, _>("device")?, row.try_get::<i64, _>("id")?);
        }
        held_by_job.insert(job, devices);
    }
    if let Some(c) =
        commands.iter().find(|c| held_by_job.get(c.job_id.as_str()).is_some_and(|d| d.contains_key(&c.device)))
    {
        let what = format!("queued command of job {} for device {}", c.job_id, c.device);
        return Ok(Err(StoreError::Conflict(what)));
    }
    // What each device holds now. A command handed over went to a device its job reserved, which
    // has nothing held (the broker knows it): its device is not counted.
    let devices: Vec<&str> = commands
        .iter()
        .filter(|c| !c.handed_over)
        .map(|c| c.device.as_str())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut held: BTreeMap<&str, (u64, u64)> = devices.iter().map(|d| (*d, (0, 0))).collect();
    for chunk in devices.chunks(CHUNK) {
        let sql = format!(
            "SELECT device, COUNT(*) AS n, CAST(COALESCE(SUM(bytes), 0) AS BIGINT) AS b FROM queued_commands \
             WHERE device IN ({}) GROUP BY device",
            style.list(chunk.len())
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for d in chunk {
            query = query.bind(*d);
        }
        for row in query.fetch_all(&mut *conn).await? {
            let device: String = row.try_get("device")?;
            if let Some(h) = held.get_mut(device.as_str()) {
                *h = (non_negative(&row, "n")?, non_negative(&row, "b")?);
            }
        }
    }
    // Which fit, in order; the others are refused.
    let mut out: Vec<Option<Enqueued>> = Vec::with_capacity(commands.len());
    let mut fitting: Vec<&NewQueued> = Vec::new();
    for c in commands {
        let (count, bytes) = held.get(c.device.as_str()).copied().unwrap_or((0, 0));
        let size = c.bytes();
        if count + 1 > limits.max_commands {
            out.push(Some(Enqueued::Full(format!(
                "device {} has {count} commands queued, the most it may hold",
                c.device
            ))));
        } else if bytes + size > limits.max_bytes {
            out.push(Some(Enqueued::Full(format!(
                "device {} has {bytes} bytes queued; {size} more would exceed its {} bytes",
                c.device, limits.max_bytes
            ))));
        } else {
            held.insert(&c.device, (count + 1, bytes + size));
            fitting.push(c);
            out.push(None);
        }
    }
    // Their ids, as the inserts return them: one command per job and device, so the pair names
    // the row.
    let mut ids: BTreeMap<(String, String), i64> = BTreeMap::new();
    for run in same_command_runs(&fitting) {
        for chunk in run.chunks(CHUNK) {
            insert_run(conn, style, chunk, &mut ids).await?;
        }
    }
    let out = out
        .into_iter()
        .zip(commands)
        .map(|(refused, c)| {
            refused.unwrap_or_else(|| {
                Enqueued::Queued(ids.get(&(c.job_id.clone(), c.device.clone())).copied().unwrap_or_default())
            })
        })
        .collect();
    Ok(Ok(Written::Enqueued(out)))
}

/// The columns a job's held commands share: bound once per statement, not once per row.
const SHARED_COLUMNS: &str = "job_id, command, args, sender, credential, wait_ms, queued_at, expires_at, bytes";

/// Splits `commands` into runs of consecutive commands that differ only in their device and
/// whether they are handed over (a job's commands: one run).
fn same_command_runs<'a>(commands: &'a [&'a NewQueued]) -> Vec<&'a [&'a NewQueued]> {
    let same = |a: &NewQueued, b: &NewQueued| {
        (&a.job_id, &a.command, &a.args, &a.sender, &a.credential, a.wait_ms, a.queued_at, a.expires_at)
            == (&b.job_id, &b.command, &b.args, &b.sender, &b.credential, b.wait_ms, b.queued_at, b.expires_at)
    };
    commands.chunk_by(|a, b| same(a, b)).collect()
}

/// Inserts `run` (commands that share everything but their device and hand-over: at most
/// [`CHUNK`]) with one statement, and adds their ids to `ids`.
async fn insert_run(
    conn: &mut AnyConnection,
    style: Placeholders,
    run: &[&NewQueued],
    ids: &mut BTreeMap<(String, String), i64>,
) -> Result<(), sqlx::Error> {
    let Some(first) = run.first() else { return Ok(()) };
    let shared = style.shared(9);
    let sql = format!(
        "INSERT INTO queued_commands ({SHARED_COLUMNS}, device, attempts, delivered_at) \
         SELECT {}, v.column1, v.column2, v.column3 FROM (VALUES {}) AS v RETURNING id, device",
        shared.join(", "),
        style.rows_after(shared.len(), run.len(), 3)
    );
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(&first.job_id)
        .bind(&first.command)
        .bind(first.args.as_deref())
        .bind(&first.sender)
        .bind(first.credential.as_deref())
        .bind(i64::try_from(first.wait_ms).unwrap_or(i64::MAX))
        .bind(ms(first.queued_at))
        .bind(ms(first.expires_at))
        .bind(i64::try_from(first.bytes()).unwrap_or(i64::MAX));
    for c in run {
        query = query.bind(&c.device).bind(i64::from(c.handed_over)).bind(c.handed_over.then(|| ms(c.queued_at)));
    }
    for row in query.fetch_all(&mut *conn).await? {
        ids.insert((first.job_id.clone(), row.try_get("device")?), row.try_get("id")?);
    }
    Ok(())
}

/// Claims command `id` for a delivery at `at`, if it is still waiting and its TTL has not
/// passed, or (with `again`) if it was handed over before: answers its attempt number, or
/// `NotFound` (settled, expired, or handed over already).
pub(crate) async fn delivered(
    conn: &mut AnyConnection,
    id: i64,
    at: DateTime<Utc>,
    again: bool,
) -> Result<Answer, sqlx::Error> {
    let row = sqlx::query(
        "UPDATE queued_commands SET attempts = attempts + 1, delivered_at = $2 \
         WHERE id = $1 AND ((delivered_at IS NULL AND expires_at > $2) OR (delivered_at IS NOT NULL AND $3)) \
         RETURNING attempts",
    )
    .bind(id)
    .bind(ms(at))
    .bind(again)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(Err(StoreError::NotFound(format!("waiting command {id}")))) };
    Ok(Ok(Written::Count(non_negative(&row, "attempts")?)))
}

/// Gives back a claim that never reached the device (its session closed first).
pub(crate) async fn undelivered(conn: &mut AnyConnection, id: i64) -> Result<Answer, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE queued_commands SET attempts = attempts - 1, delivered_at = NULL \
         WHERE id = $1 AND delivered_at IS NOT NULL",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(Ok(Written::Count(done.rows_affected())))
}

/// Settles held commands: records their outcomes as their targets' (replacing `queued`),
/// deletes them, and ends each job whose last held command this was (and whose live part is
/// over). Answers, per command, whether it was still held.
pub(crate) async fn settle_held(
    conn: &mut AnyConnection,
    settled: &[crate::HeldOutcome],
    at: DateTime<Utc>,
) -> Result<Answer, sqlx::Error> {
    crate::apply::targets_settled(conn, settled.iter().map(|h| &h.outcome)).await?;
    let style = Placeholders::of(conn);
    let mut removed: BTreeSet<i64> = BTreeSet::new();
    for chunk in settled.chunks(CHUNK) {
        let sql = format!("DELETE FROM queued_commands WHERE id IN ({}) RETURNING id", style.list(chunk.len()));
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for h in chunk {
            query = query.bind(h.id);
        }
        for row in query.fetch_all(&mut *conn).await? {
            removed.insert(row.try_get("id")?);
        }
    }
    let jobs: BTreeSet<&str> =
        settled.iter().filter(|h| removed.contains(&h.id)).map(|h| h.outcome.job.as_str()).collect();
    for job in jobs {
        crate::apply::held_settled(conn, job, at).await?;
    }
    Ok(Ok(Written::Stored(settled.iter().map(|h| removed.contains(&h.id)).collect())))
}

/// Adds `counts` to their devices' `delivered` and `acknowledged` (in `device_deliveries`): one
/// upsert per 500 devices. A device no longer registered is skipped.
pub(crate) async fn count_deliveries(
    conn: &mut AnyConnection,
    counts: &[crate::DeliveryCount],
) -> Result<Answer, sqlx::Error> {
    let style = Placeholders::of(conn);
    for chunk in counts.chunks(CHUNK) {
        let sql = format!(
            "INSERT INTO device_deliveries (device, delivered, acknowledged) \
             SELECT v.column1, v.column2, v.column3 FROM (VALUES {}) AS v \
             WHERE EXISTS (SELECT 1 FROM devices WHERE devices.id = v.column1) \
             ON CONFLICT (device) DO UPDATE SET delivered = device_deliveries.delivered + excluded.delivered, \
             acknowledged = device_deliveries.acknowledged + excluded.acknowledged",
            style.rows(chunk.len(), 3)
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for c in chunk {
            query = query.bind(&c.device).bind(c.delivered).bind(c.acknowledged);
        }
        query.execute(&mut *conn).await?;
    }
    Ok(Ok(Written::Count(counts.len() as u64)))
}

/// Removes, in one transaction with their targets' statuses and their jobs' ends, at most
/// `limit` held commands that are over: those still waiting whose TTL passed by `now` (their
/// target becomes `expired`) and those handed over whose answer cannot come any more (delivered
/// longer ago than their deadline and a minute, and their TTL passed — until then a device with
/// a journal may reconnect and answer a redelivery: `interrupted`). Answers them.
pub(crate) async fn expire(conn: &mut AnyConnection, now: DateTime<Utc>, limit: u32) -> Result<Answer, sqlx::Error> {
    const OVER: &str = "(delivered_at IS NULL AND expires_at <= $1) \
         OR (delivered_at IS NOT NULL AND delivered_at + wait_ms + 60000 <= $1 AND expires_at <= $1)";
    let sql = format!(
        "DELETE FROM queued_commands WHERE id IN (SELECT id FROM queued_commands WHERE {OVER} ORDER BY id LIMIT $2) \
         RETURNING {COLUMNS}"
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(ms(now)).bind(i64::from(limit)).fetch_all(&mut *conn).await?;
    let over: Vec<Queued> = rows.iter().filter_map(queued).collect();
    for q in &over {
        let (status, code, message) = match q.delivered_at {
            None => (
                "expired",
                "expired",
                format!("the TTL passed before device {} connected; the command never ran", q.command.device),
            ),
            Some(_) => (
                "error",
                "interrupted",
                "the command was handed to the device, whose answer was lost; it is not run again".to_owned(),
            ),
        };
        // An upsert: the target may have no row yet (its `queued` outcome is written with the
        // job's batched records, or when its live part ends).
        sqlx::query(
            "INSERT INTO job_targets (job_id, device_id, status, error_code, error_message, answered_at) \
             SELECT $1, $2, $3, $4, $5, $6 WHERE EXISTS (SELECT 1 FROM jobs WHERE id = $1) \
             ON CONFLICT (job_id, device_id) DO UPDATE SET status = excluded.status, \
             error_code = excluded.error_code, error_message = excluded.error_message, \
             answered_at = excluded.answered_at \
             WHERE job_targets.status IS NULL OR job_targets.status = 'queued'",
        )
        .bind(&q.command.job_id)
        .bind(&q.command.device)
        .bind(status)
        .bind(code)
        .bind(message)
        .bind(ms(now))
        .execute(&mut *conn)
        .await?;
        crate::apply::held_settled(conn, &q.command.job_id, now).await?;
    }
    Ok(Ok(Written::Queued(over)))
}

/// Drops the commands of `job` still waiting (never handed over) and makes their targets
/// `cancelled`; answers their devices.
pub(crate) async fn cancel_waiting(
    conn: &mut AnyConnection,
    job: &str,
    at: DateTime<Utc>,
) -> Result<Vec<String>, sqlx::Error> {
    let rows = sqlx::query("DELETE FROM queued_commands WHERE job_id = $1 AND delivered_at IS NULL RETURNING device")
        .bind(job)
        .fetch_all(&mut *conn)
        .await?;
    let mut devices = Vec::with_capacity(rows.len());
    for row in &rows {
        let device: String = row.try_get("device")?;
        sqlx::query(
            "UPDATE job_targets SET status = 'cancelled', error_code = 'cancelled', \
             error_message = 'the job was cancelled', answered_at = $3 \
             WHERE job_id = $1 AND device_id = $2 AND (status IS NULL OR status = 'queued')",
        )
        .bind(job)
        .bind(&device)
        .bind(ms(at))
        .execute(&mut *conn)
        .await?;
        devices.push(device);
    }
    Ok(devices)
}

/// A device's held commands, oldest first.
pub(crate) async fn queued_for(pool: &AnyPool, device: &str, limit: u32) -> Result<Vec<Queued>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM queued_commands WHERE device = $1 ORDER BY id LIMIT $2");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(device)
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await
        .map_err(unavailable)?;
    Ok(rows.iter().filter_map(queued).collect())
}

/// Every device's counts.
pub(crate) async fn counts(pool: &AnyPool) -> Result<BTreeMap<String, QueueCounts>, StoreError> {
    let rows = sqlx::query(
        "SELECT device, \
         CAST(SUM(CASE WHEN delivered_at IS NULL THEN 1 ELSE 0 END) AS BIGINT) AS queued, \
         CAST(SUM(CASE WHEN delivered_at IS NULL THEN 0 ELSE 1 END) AS BIGINT) AS in_flight, \
         CAST(SUM(bytes) AS BIGINT) AS bytes \
         FROM queued_commands GROUP BY device",
    )
    .fetch_all(pool)
    .await
    .map_err(unavailable)?;
    let mut out = BTreeMap::new();
    for row in &rows {
        let counts = (|| -> Result<(String, QueueCounts), sqlx::Error> {
            let c = QueueCounts {
                queued: non_negative(row, "queued")?,
                in_flight: non_negative(row, "in_flight")?,
                bytes: non_negative(row, "bytes")?,
            };
            Ok((row.try_get("device")?, c))
        })();
        match counts {
            Ok((device, c)) => {
                out.insert(device, c);
            }
            Err(e) => tracing::warn!(error = %e, "a queue count could not be read; left out"),
        }
    }
    Ok(out)
}

/// A count or size column (an `i64` in SQL, never negative in this table).
fn non_negative(row: &AnyRow, col: &str) -> Result<u64, sqlx::Error> {
    let v: i64 = row.try_get(col)?;
    Ok(u64::try_from(v).unwrap_or(0))
}

/// A held command, or `None` (logged) when its row cannot be read: one damaged row never fails
/// the read of a queue.
fn queued(row: &AnyRow) -> Option<Queued> {
    let read = || -> Result<Queued, sqlx::Error> {
        let time = |col: &str| crate::rows::time_column(row, col);
        let delivered_at: Option<i64> = row.try_get("delivered_at")?;
        Ok(Queued {
            id: row.try_get("id")?,
            command: NewQueued {
                job_id: row.try_get("job_id")?,
                device: row.try_get("device")?,
                command: row.try_get("command")?,
                args: row.try_get("args")?,
                sender: row.try_get("sender")?,
                credential: row.try_get("credential")?,
                wait_ms: non_negative(row, "wait_ms")?,
                queued_at: time("queued_at")?,
                expires_at: time("expires_at")?,
                handed_over: delivered_at.is_some(),
            },
            attempts: non_negative(row, "attempts")?,
            delivered_at: delivered_at.and_then(DateTime::from_timestamp_millis),
        })
    };
    match read() {
        Ok(q) => Some(q),
        Err(e) => {
            tracing::warn!(error = %e, "a queued command could not be read; skipped");
            None
        }
    }
}

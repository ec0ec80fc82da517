//! Reads: devices, the job list with per-status summaries (one grouped query for all listed
//! jobs), and one job by id or unique prefix with its targets (its stored target list merged
//! with the rows of targets that have a status). They run on the read pool and
//! see every committed write; rows are mapped by `rows.rs` and handed to the caller.

use std::collections::BTreeMap;

use sqlx::any::AnyRow;
use sqlx::{AnyPool, Row};

use crate::backend::{Backend, unavailable};
use crate::rows::{self, DEVICE_COLUMNS, DEVICES, JOB_COLUMNS, TARGET_COLUMNS};
use crate::{AMBIGUOUS_CANDIDATES, Device, JobRecord, StoreError, TargetRecord};

/// Every device, in id order (byte order, the same on both backends whatever the collation).
pub(crate) async fn devices(pool: &AnyPool) -> Result<Vec<Device>, StoreError> {
    let sql = format!("SELECT {DEVICE_COLUMNS} FROM {DEVICES}");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await.map_err(unavailable)?;
    let mut devices: Vec<Device> = rows.iter().filter_map(rows::device).collect();
    devices.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    Ok(devices)
}

/// One device.
pub(crate) async fn device(pool: &AnyPool, id: &str) -> Result<Option<Device>, StoreError> {
    let sql = format!("SELECT {DEVICE_COLUMNS} FROM {DEVICES} WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(pool).await.map_err(unavailable)?;
    Ok(row.as_ref().and_then(rows::device))
}

/// The newest `limit` jobs (of `schedule` only, when given), newest first, with their summaries.
pub(crate) async fn jobs(pool: &AnyPool, limit: u32, schedule: Option<&str>) -> Result<Vec<JobRecord>, StoreError> {
    let filter = if schedule.is_some() { "WHERE schedule_id = $2" } else { "" };
    let newest = format!("SELECT id FROM jobs {filter} ORDER BY created_at DESC, id DESC LIMIT $1");
    let bind = |sql: String| {
        let query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(i64::from(limit));
        match schedule {
            Some(s) => query.bind(s.to_owned()),
            None => query,
        }
    };
    let rows = bind(format!("SELECT {JOB_COLUMNS} FROM jobs {filter} ORDER BY created_at DESC, id DESC LIMIT $1"))
        .fetch_all(pool)
        .await
        .map_err(unavailable)?;
    let mut jobs: Vec<JobRecord> = rows.iter().filter_map(rows::job).collect();
    if jobs.is_empty() {
        return Ok(jobs);
    }
    let summary = bind(format!(
        "SELECT job_id, status, COUNT(*) AS n FROM job_targets \
         WHERE status IS NOT NULL AND job_id IN ({newest}) GROUP BY job_id, status"
    ))
    .fetch_all(pool)
    .await
    .map_err(unavailable)?;
    let mut by_job: BTreeMap<String, BTreeMap<_, u64>> = BTreeMap::new();
    for (job, status, n) in summary.iter().filter_map(rows::summary_row) {
        by_job.entry(job).or_default().insert(status, n);
    }
    for job in &mut jobs {
        job.summary = by_job.remove(&job.id).unwrap_or_default();
    }
    Ok(jobs)
}

/// One job by full id, else by unique prefix, with its targets in device id order.
///
/// Job ids are lowercase (hex UUIDs), so the prefix is lowercased and then compared in byte
/// order, case-sensitively, the same on both backends: `id >= prefix AND id < successor`, a
/// range the id index serves (on PostgreSQL in `COLLATE "C"`, whatever the database collation).
pub(crate) async fn job(
    pool: &AnyPool,
    backend: Backend,
    id_or_prefix: &str,
) -> Result<(JobRecord, Vec<TargetRecord>), StoreError> {
    let not_found = || StoreError::NotFound(format!("job {id_or_prefix}"));
    let columns = format!("{JOB_COLUMNS}, targets");
    let row = by_id_or_prefix(pool, backend, "jobs", &columns, id_or_prefix).await?;
    let Some(row) = row else { return Err(not_found()) };
    let Some(mut job) = rows::job(&row) else { return Err(not_found()) };
    let list = rows::target_list(&row, &job.id);

    // Targets with a status have a row; listed targets without one are pending.
    let sql = format!("SELECT {TARGET_COLUMNS} FROM job_targets WHERE job_id = $1");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(&job.id).fetch_all(pool).await.map_err(unavailable)?;
    let mut by_device = BTreeMap::new();
    for target in rows.iter().filter_map(|row| rows::target(row, &job)) {
        by_device.insert(target.device.clone(), target);
    }
    for device in list.unwrap_or_default() {
        by_device.entry(device).or_insert_with_key(|device| TargetRecord {
            device: device.clone(),
            status: None,
            result: None,
            error: None,
            elapsed_ms: None,
            late: None,
        });
    }
    let targets: Vec<TargetRecord> = by_device.into_values().collect();
    for status in targets.iter().filter_map(|t| t.status) {
        *job.summary.entry(status).or_default() += 1;
    }
    Ok((job, targets))
}

/// The row of `table` (selecting `columns`) whose id is `id_or_prefix`, else the one whose id
/// starts with it (lowercased: ids are lowercase hex UUIDs), compared in byte order on both
/// backends: `id >= prefix AND id < successor`, a range the primary key serves.
///
/// # Errors
/// [`StoreError::Ambiguous`] when the prefix matches several rows (the first few named).
pub(crate) async fn by_id_or_prefix(
    pool: &AnyPool,
    backend: Backend,
    table: &'static str,
    columns: &str,
    id_or_prefix: &str,
) -> Result<Option<AnyRow>, StoreError> {
    if id_or_prefix.is_empty() {
        return Ok(None);
    }
    let lower = id_or_prefix.to_ascii_lowercase();
    let exact = format!("SELECT {columns} FROM {table} WHERE id = $1");
    let mut ids = vec![id_or_prefix];
    if lower != id_or_prefix {
        ids.push(&lower);
    }
    for id in ids {
        let row = sqlx::query(sqlx::AssertSqlSafe(exact.as_str()))
            .bind(id)
            .fetch_optional(pool)
            .await
            .map_err(unavailable)?;
        if row.is_some() {
            return Ok(row);
        }
    }
    let id = match backend {
        Backend::Sqlite => "id",
        Backend::Postgres => r#"id COLLATE "C""#,
    };
    let (range, end) = match prefix_end(&lower) {
        Some(end) => (format!("{id} >= $1 AND {id} < $2"), Some(end)),
        None => (format!("{id} >= $1"), None),
    };
    let bind = |sql: String| {
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(lower.clone());
        if let Some(end) = &end {
            query = query.bind(end.clone());
        }
        query
    };
    let mut found = bind(format!("SELECT {columns} FROM {table} WHERE {range} ORDER BY {id} LIMIT 2"))
        .fetch_all(pool)
        .await
        .map_err(unavailable)?;
    if found.len() > 1 {
        let count = bind(format!("SELECT COUNT(*) AS n FROM {table} WHERE {range}"))
            .fetch_one(pool)
            .await
            .map_err(unavailable)?;
        let first = format!("SELECT id FROM {table} WHERE {range} ORDER BY {id} LIMIT {AMBIGUOUS_CANDIDATES}");
        let candidates = bind(first).fetch_all(pool).await.map_err(unavailable)?;
        let candidates = candidates.iter().filter_map(|r| r.try_get::<String, _>("id").ok()).collect();
        return Err(StoreError::Ambiguous { prefix: id_or_prefix.to_owned(), count: rows::count(&count)?, candidates });
    }
    Ok(found.pop())
}

/// The ids of the schedules stored jobs were fired by that start with `prefix` (lowercased, as
/// ids are), in id order, at most `limit`: compared in byte order on both backends, a range the
/// `jobs_schedule` index serves.
pub(crate) async fn job_schedules(
    pool: &AnyPool,
    backend: Backend,
    prefix: &str,
    limit: u32,
) -> Result<Vec<String>, StoreError> {
    if prefix.is_empty() {
        return Ok(Vec::new());
    }
    let lower = prefix.to_ascii_lowercase();
    let column = match backend {
        Backend::Sqlite => "schedule_id",
        Backend::Postgres => r#"schedule_id COLLATE "C""#,
    };
    let end = prefix_end(&lower);
    let range = if end.is_some() { format!("{column} >= $2 AND {column} < $3") } else { format!("{column} >= $2") };
    let sql = format!("SELECT schedule_id FROM jobs WHERE {range} GROUP BY schedule_id ORDER BY {column} LIMIT $1");
    let mut query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(i64::from(limit)).bind(lower);
    if let Some(end) = end {
        query = query.bind(end);
    }
    let rows = query.fetch_all(pool).await.map_err(unavailable)?;
    Ok(rows.iter().filter_map(|r| r.try_get::<String, _>("schedule_id").ok()).collect())
}

/// The smallest string above every string that starts with `prefix`, in byte (= code point)
/// order: its last character incremented (dropping trailing `char::MAX`); `None` when no
/// string is (the prefix is all `char::MAX`).
fn prefix_end(prefix: &str) -> Option<String> {
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = match last {
            '\u{D7FF}' => Some('\u{E000}'),
            c => char::from_u32(u32::from(c) + 1),
        };
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn prefix_end_is_the_successor() {
        assert_eq!(prefix_end("0198-ab").as_deref(), Some("0198-ac"));
        assert_eq!(prefix_end("a%").as_deref(), Some("a&"));
        assert_eq!(prefix_end("a\u{10FFFF}").as_deref(), Some("b"));
        assert_eq!(prefix_end("\u{D7FF}").as_deref(), Some("\u{E000}"));
        assert_eq!(prefix_end("\u{10FFFF}"), None);
    }
}

//! Reads: devices, the job list with per-status summaries (one grouped query for all listed
//! jobs), and one job by id or unique prefix with its targets. They run on the read pool and
//! see every committed write; rows are mapped by `rows.rs` and handed to the caller.

use std::collections::BTreeMap;

use sqlx::AnyPool;

use crate::backend::unavailable;
use crate::rows::{self, DEVICE_COLUMNS, JOB_COLUMNS, TARGET_COLUMNS};
use crate::{Device, JobRecord, StoreError, TargetRecord};

/// Every device, in id order (byte order, the same on both backends whatever the collation).
pub(crate) async fn devices(pool: &AnyPool) -> Result<Vec<Device>, StoreError> {
    let sql = format!("SELECT {DEVICE_COLUMNS} FROM devices");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await.map_err(unavailable)?;
    let mut devices = rows.iter().map(rows::device).collect::<Result<Vec<_>, _>>()?;
    devices.sort_unstable_by(|a, b| a.id.cmp(&b.id));
    Ok(devices)
}

/// One device.
pub(crate) async fn device(pool: &AnyPool, id: &str) -> Result<Option<Device>, StoreError> {
    let sql = format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE id = $1");
    let row = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(pool).await.map_err(unavailable)?;
    row.as_ref().map(rows::device).transpose()
}

/// The newest `limit` jobs, newest first, with their summaries.
pub(crate) async fn jobs(pool: &AnyPool, limit: u32) -> Result<Vec<JobRecord>, StoreError> {
    let newest = format!("SELECT {JOB_COLUMNS} FROM jobs ORDER BY created_at DESC, id DESC LIMIT $1");
    let rows =
        sqlx::query(sqlx::AssertSqlSafe(newest)).bind(i64::from(limit)).fetch_all(pool).await.map_err(unavailable)?;
    let mut jobs = rows.iter().map(rows::job).collect::<Result<Vec<_>, _>>()?;
    if jobs.is_empty() {
        return Ok(jobs);
    }
    let summary = sqlx::query(
        "SELECT job_id, status, COUNT(*) AS n FROM job_targets \
         WHERE status IS NOT NULL AND job_id IN \
             (SELECT id FROM jobs ORDER BY created_at DESC, id DESC LIMIT $1) \
         GROUP BY job_id, status",
    )
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await
    .map_err(unavailable)?;
    let mut by_job: BTreeMap<String, BTreeMap<_, u64>> = BTreeMap::new();
    for row in &summary {
        let (job, status, n) = rows::summary_row(row)?;
        by_job.entry(job).or_default().insert(status, n);
    }
    for job in &mut jobs {
        job.summary = by_job.remove(&job.id).unwrap_or_default();
    }
    Ok(jobs)
}

/// One job by full id, else by unique prefix, with its targets in device id order.
pub(crate) async fn job(pool: &AnyPool, id_or_prefix: &str) -> Result<(JobRecord, Vec<TargetRecord>), StoreError> {
    let not_found = || StoreError::NotFound(format!("job {id_or_prefix}"));
    if id_or_prefix.is_empty() {
        return Err(not_found());
    }
    let exact = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = $1");
    let mut row =
        sqlx::query(sqlx::AssertSqlSafe(exact)).bind(id_or_prefix).fetch_optional(pool).await.map_err(unavailable)?;
    if row.is_none() {
        let pattern = format!("{}%", escape_like(id_or_prefix));
        let matches = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id LIKE $1 ESCAPE '\\' ORDER BY id LIMIT 2");
        let mut found =
            sqlx::query(sqlx::AssertSqlSafe(matches)).bind(&pattern).fetch_all(pool).await.map_err(unavailable)?;
        if found.len() > 1 {
            let count = sqlx::query("SELECT COUNT(*) AS n FROM jobs WHERE id LIKE $1 ESCAPE '\\'")
                .bind(&pattern)
                .fetch_one(pool)
                .await
                .map_err(unavailable)?;
            return Err(StoreError::Ambiguous { prefix: id_or_prefix.to_owned(), count: rows::count(&count)? });
        }
        row = found.pop();
    }
    let Some(row) = row else { return Err(not_found()) };
    let mut job = rows::job(&row)?;

    let sql = format!("SELECT {TARGET_COLUMNS} FROM job_targets WHERE job_id = $1");
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(&job.id).fetch_all(pool).await.map_err(unavailable)?;
    let mut targets = rows.iter().map(rows::target).collect::<Result<Vec<_>, _>>()?;
    targets.sort_unstable_by(|a, b| a.device.cmp(&b.device));
    for status in targets.iter().filter_map(|t| t.status) {
        *job.summary.entry(status).or_default() += 1;
    }
    Ok((job, targets))
}

/// Escapes `LIKE` wildcards (and the escape character) so `text` matches only itself.
fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::escape_like;

    #[test]
    fn like_wildcards_are_escaped() {
        assert_eq!(escape_like("0198-ab"), "0198-ab");
        assert_eq!(escape_like("a%b_c\\"), "a\\%b\\_c\\\\");
    }
}

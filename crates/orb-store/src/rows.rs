//! Row ↔ model mapping: how a [`Device`], [`JobRecord`] or [`TargetRecord`] is laid out in SQL
//! (column lists, unix-millisecond times, JSON text, 0/1 or boolean flags) and read back from an
//! `AnyRow`. `query.rs` and `registry.rs` read through here; writes bind with the helpers here.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use orb_proto::history::JobPhase;
use orb_proto::{ErrorBody, ErrorCode, Status};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Device, JobRecord, StoreError, TargetRecord};

/// The columns [`device`] reads, in a `SELECT` over `devices`.
pub(crate) const DEVICE_COLUMNS: &str = "id, secret_hash, revoked, reported_tags, operator_tags, \
     agent_version, commands, registered_at, first_seen, last_seen, last_disconnect, \
     last_remote_addr, user_agent, transport, connections, flaps";

/// The columns [`job`] reads, in a `SELECT` over `jobs`.
pub(crate) const JOB_COLUMNS: &str =
    "id, requester, selector, command, args, created_at, deadline_at, finished_at, state, target_count";

/// The columns [`target`] reads, in a `SELECT` over `job_targets`.
pub(crate) const TARGET_COLUMNS: &str = "device_id, status, result, error_code, error_message, elapsed_ms, late";

/// A time as stored: unix milliseconds.
pub(crate) fn ms(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

/// A string map as stored: JSON text.
pub(crate) fn map_json(map: &BTreeMap<String, String>) -> String {
    serde_json::to_string(map).expect("a map of strings always serializes")
}

/// A string list as stored: JSON text.
pub(crate) fn list_json(list: &[String]) -> String {
    serde_json::to_string(list).expect("a list of strings always serializes")
}

/// Parses a stored string map.
pub(crate) fn parse_map(text: &str, what: &str) -> Result<BTreeMap<String, String>, StoreError> {
    serde_json::from_str(text).map_err(|e| corrupt(what, e))
}

/// The error for a row this code cannot have written.
fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(format!("corrupt {what} in the store: {e}"))
}

/// Reads a column, naming it in the error.
fn get<'r, T>(row: &'r AnyRow, col: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
{
    row.try_get(col).map_err(|e| corrupt(col, e))
}

/// Reads a flag: `BOOLEAN` on PostgreSQL, `INTEGER` 0/1 on SQLite.
fn get_bool(row: &AnyRow, col: &str) -> Result<bool, StoreError> {
    match row.try_get::<bool, _>(col) {
        Ok(b) => Ok(b),
        Err(_) => get::<i64>(row, col).map(|i| i != 0),
    }
}

/// Reads a stored time.
fn get_time(row: &AnyRow, col: &str) -> Result<DateTime<Utc>, StoreError> {
    let v: i64 = get(row, col)?;
    DateTime::from_timestamp_millis(v).ok_or_else(|| corrupt(col, format!("time {v} out of range")))
}

/// Reads a stored optional time.
fn get_opt_time(row: &AnyRow, col: &str) -> Result<Option<DateTime<Utc>>, StoreError> {
    match get::<Option<i64>>(row, col)? {
        None => Ok(None),
        Some(v) => {
            DateTime::from_timestamp_millis(v).map(Some).ok_or_else(|| corrupt(col, format!("time {v} out of range")))
        }
    }
}

/// Reads a stored count (never negative).
fn get_count(row: &AnyRow, col: &str) -> Result<u64, StoreError> {
    let v: i64 = get(row, col)?;
    u64::try_from(v).map_err(|e| corrupt(col, e))
}

/// Reads a stored status; `None` while pending.
fn get_status(row: &AnyRow, col: &str) -> Result<Option<Status>, StoreError> {
    match get::<Option<String>>(row, col)? {
        None => Ok(None),
        Some(s) => Status::from_wire(&s).map(Some).ok_or_else(|| corrupt(col, format!("status '{s}'"))),
    }
}

/// One `devices` row, selected with [`DEVICE_COLUMNS`].
pub(crate) fn device(row: &AnyRow) -> Result<Device, StoreError> {
    let secret_hash = match get::<Option<Vec<u8>>>(row, "secret_hash")? {
        None => None,
        Some(bytes) => Some(
            <[u8; 32]>::try_from(bytes.as_slice())
                .map_err(|_| corrupt("secret_hash", format!("{} bytes, expected 32", bytes.len())))?,
        ),
    };
    let commands: String = get(row, "commands")?;
    Ok(Device {
        id: get(row, "id")?,
        secret_hash,
        revoked: get_bool(row, "revoked")?,
        reported_tags: parse_map(&get::<String>(row, "reported_tags")?, "reported_tags")?,
        operator_tags: parse_map(&get::<String>(row, "operator_tags")?, "operator_tags")?,
        agent_version: get(row, "agent_version")?,
        commands: serde_json::from_str(&commands).map_err(|e| corrupt("commands", e))?,
        registered_at: get_time(row, "registered_at")?,
        first_seen: get_opt_time(row, "first_seen")?,
        last_seen: get_opt_time(row, "last_seen")?,
        last_disconnect: get_opt_time(row, "last_disconnect")?,
        last_remote_addr: get(row, "last_remote_addr")?,
        user_agent: get(row, "user_agent")?,
        transport: get(row, "transport")?,
        connections: get_count(row, "connections")?,
        flaps: get_count(row, "flaps")?,
    })
}

/// One `jobs` row, selected with [`JOB_COLUMNS`]; the summary is filled in by the caller.
pub(crate) fn job(row: &AnyRow) -> Result<JobRecord, StoreError> {
    let state: String = get(row, "state")?;
    Ok(JobRecord {
        id: get(row, "id")?,
        requester: get(row, "requester")?,
        selector: get(row, "selector")?,
        command: get(row, "command")?,
        args: get(row, "args")?,
        created_at: get_time(row, "created_at")?,
        deadline_at: get_time(row, "deadline_at")?,
        finished_at: get_opt_time(row, "finished_at")?,
        state: JobPhase::from_wire(&state).ok_or_else(|| corrupt("state", format!("job state '{state}'")))?,
        targets: get_count(row, "target_count")?,
        summary: BTreeMap::new(),
    })
}

/// One `job_targets` row, selected with [`TARGET_COLUMNS`].
pub(crate) fn target(row: &AnyRow) -> Result<TargetRecord, StoreError> {
    let error = match get::<Option<String>>(row, "error_code")? {
        None => None,
        Some(code) => Some(ErrorBody::new(
            ErrorCode::from_wire(&code),
            get::<Option<String>>(row, "error_message")?.unwrap_or_default(),
        )),
    };
    Ok(TargetRecord {
        device: get(row, "device_id")?,
        status: get_status(row, "status")?,
        result: get(row, "result")?,
        error,
        elapsed_ms: match get::<Option<i64>>(row, "elapsed_ms")? {
            None => None,
            Some(v) => Some(u64::try_from(v).map_err(|e| corrupt("elapsed_ms", e))?),
        },
        late: get_bool(row, "late")?,
    })
}

/// One `(job_id, status, n)` row of a summary query.
pub(crate) fn summary_row(row: &AnyRow) -> Result<(String, Status, u64), StoreError> {
    let status = get_status(row, "status")?.ok_or_else(|| corrupt("status", "a pending status in a summary"))?;
    Ok((get(row, "job_id")?, status, get_count(row, "n")?))
}

/// A count from `SELECT COUNT(*) AS n`.
pub(crate) fn count(row: &AnyRow) -> Result<u64, StoreError> {
    get_count(row, "n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_and_lists_round_trip_as_json() {
        let map = BTreeMap::from([("a".to_owned(), "1".to_owned()), ("b\"".to_owned(), "é".to_owned())]);
        assert_eq!(parse_map(&map_json(&map), "t").ok(), Some(map));
        let list = vec!["x".to_owned(), "y".to_owned()];
        let back: Vec<String> = serde_json::from_str(&list_json(&list)).unwrap_or_default();
        assert_eq!(back, list);
        assert!(matches!(parse_map("[1]", "tags"), Err(StoreError::Unavailable(m)) if m.contains("tags")));
    }
}

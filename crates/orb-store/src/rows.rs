//! Row ↔ model mapping: how a [`Device`], [`JobRecord`] or [`TargetRecord`] is laid out in SQL
//! (column lists, unix-millisecond times, JSON text, 0/1 or boolean flags) and read back from an
//! `AnyRow`. `query.rs` and `registry.rs` read through here; writes bind with the helpers here.
//! A stored value that cannot be read degrades its field (logged), never the whole read.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use orb_proto::history::JobPhase;
use orb_proto::{ErrorBody, ErrorCode, Status};
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Device, JobRecord, LateAnswer, StoreError, TargetRecord};

/// The columns [`device`] reads, in a `SELECT` over [`DEVICES`].
pub(crate) const DEVICE_COLUMNS: &str = "id, secret_hash, revoked, reported_tags, operator_tags, \
     agent_version, commands, command_schemas, registered_at, first_seen, last_seen, last_disconnect, \
     last_remote_addr, user_agent, transport, connections, flaps, \
     COALESCE(dd.delivered, 0) AS delivered, COALESCE(dd.acknowledged, 0) AS acknowledged";

/// What [`DEVICE_COLUMNS`] are selected from: each device with its delivery counts.
pub(crate) const DEVICES: &str = "devices LEFT JOIN device_deliveries dd ON dd.device = devices.id";

/// The columns [`job`] reads, in a `SELECT` over `jobs`.
pub(crate) const JOB_COLUMNS: &str = "id, node, requester, selector, command, args, created_at, deadline_at, finished_at, state, target_count, skipped, \
     rollout";

/// The columns [`target`] reads, in a `SELECT` over `job_targets`.
pub(crate) const TARGET_COLUMNS: &str = "device_id, status, result, error_code, error_message, error_data, \
     elapsed_ms, answered_at, late, late_status, late_result, late_error_code, late_error_message, late_error_data, \
     late_at";

/// A time as stored: unix milliseconds.
pub(crate) fn ms(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

/// A time column (Unix milliseconds) that must hold a time.
pub(crate) fn time_column(row: &AnyRow, col: &str) -> Result<DateTime<Utc>, sqlx::Error> {
    let v: i64 = row.try_get(col)?;
    DateTime::from_timestamp_millis(v).ok_or_else(|| sqlx::Error::Decode(format!("{col} out of range").into()))
}

/// A string map as stored: JSON text.
pub(crate) fn map_json(map: &BTreeMap<String, String>) -> String {
    serde_json::to_string(map).expect("a map of strings always serializes")
}

/// A string list as stored: JSON text.
pub(crate) fn list_json(list: &[String]) -> String {
    serde_json::to_string(list).expect("a list of strings always serializes")
}

/// A map of JSON values as stored: JSON text.
pub(crate) fn values_json(map: &BTreeMap<String, serde_json::Value>) -> String {
    serde_json::to_string(map).expect("a map of JSON values always serializes")
}

/// Whose row is read: named in the warning about a value that cannot be read.
#[derive(Debug, Clone, Copy)]
enum Owner<'a> {
    Device(&'a str),
    Job(&'a str),
    Target { job: &'a str, device: &'a str },
}

impl std::fmt::Display for Owner<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Owner::Device(id) => write!(f, "device {id}"),
            Owner::Job(id) => write!(f, "job {id}"),
            Owner::Target { job, device } => write!(f, "target {device} of job {job}"),
        }
    }
}

/// Reads one row's columns for the model. A stored value that cannot be read (the wrong type,
/// unknown text, malformed JSON, a time out of range, a negative count) does not fail the read:
/// it is logged (a warning naming the device or job and the column) and read as the stated
/// fallback, so one damaged row, or a value a newer version wrote, never hides every other row.
/// Only the id is required: a row whose id cannot be read is skipped (see [`device`], [`job`],
/// [`target`]).
struct Fields<'r> {
    row: &'r AnyRow,
    owner: Owner<'r>,
}

impl<'r> Fields<'r> {
    /// Logs that `col` cannot be read (`problem`) and reads as `shown`.
    fn damaged(&self, col: &str, problem: &dyn std::fmt::Display, shown: &str) {
        let owner = self.owner;
        match owner {
            Owner::Device(id) => tracing::warn!(
                device.id = id,
                field = col,
                "{owner}: stored {col} cannot be read ({problem}); read as {shown}"
            ),
            Owner::Job(id) => tracing::warn!(
                job.id = id,
                field = col,
                "{owner}: stored {col} cannot be read ({problem}); read as {shown}"
            ),
            Owner::Target { job, device } => tracing::warn!(
                job.id = job,
                device.id = device,
                field = col,
                "{owner}: stored {col} cannot be read ({problem}); read as {shown}"
            ),
        }
    }

    /// A column of type `T`, `None` when it cannot be read.
    fn try_get<T>(&self, col: &str, shown: &str) -> Option<T>
    where
        T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
    {
        self.row.try_get(col).map_err(|e| self.damaged(col, &e, shown)).ok()
    }

    /// A required text column; empty when it cannot be read.
    fn text(&self, col: &str) -> String {
        self.try_get(col, "empty").unwrap_or_default()
    }

    /// An optional text column; `None` when it cannot be read.
    fn opt_text(&self, col: &str) -> Option<String> {
        self.try_get(col, "absent").flatten()
    }

    /// An optional integer column; `None` when it cannot be read.
    fn opt_i64(&self, col: &str, shown: &str) -> Option<i64> {
        self.try_get(col, shown).flatten()
    }

    /// A flag: `BOOLEAN` on PostgreSQL, `INTEGER` 0/1 on SQLite; `fallback` (named `shown`)
    /// when it cannot be read.
    fn flag(&self, col: &str, fallback: bool, shown: &str) -> bool {
        match self.row.try_get::<bool, _>(col) {
            Ok(b) => b,
            Err(_) => self.try_get::<i64>(col, shown).map_or(fallback, |i| i != 0),
        }
    }

    /// A required time; `fallback` (named `shown`) when it cannot be read.
    fn time(&self, col: &str, fallback: DateTime<Utc>, shown: &str) -> DateTime<Utc> {
        let v: Option<i64> = self.try_get(col, shown);
        match v.map(|v| (v, DateTime::from_timestamp_millis(v))) {
            Some((_, Some(at))) => at,
            Some((v, None)) => {
                self.damaged(col, &format_args!("time {v} out of range"), shown);
                fallback
            }
            None => fallback,
        }
    }

    /// An optional time; `None` when it cannot be read.
    fn opt_time(&self, col: &str) -> Option<DateTime<Utc>> {
        let v = self.opt_i64(col, "absent")?;
        let at = DateTime::from_timestamp_millis(v);
        if at.is_none() {
            self.damaged(col, &format_args!("time {v} out of range"), "absent");
        }
        at
    }

    /// A count (never negative); 0 when it cannot be read.
    fn count(&self, col: &str) -> u64 {
        let v: i64 = self.try_get(col, "0").unwrap_or_default();
        u64::try_from(v).unwrap_or_else(|e| {
            self.damaged(col, &format_args!("{v}: {e}"), "0");
            0
        })
    }

    /// A status; `None` when absent (pending) or when it cannot be read (an unknown status, from
    /// damage or a newer version, reads as no answer; it is not counted in summaries either).
    fn status(&self, col: &str) -> Option<Status> {
        let text = self.opt_text(col)?;
        let status = Status::from_wire(&text);
        if status.is_none() {
            self.damaged(col, &format_args!("unknown status '{text}'"), "no status");
        }
        status
    }

    /// An error stored as a code column and a message column.
    fn error(&self, code: &str, message: &str, data: &str) -> Option<ErrorBody> {
        let code = self.opt_text(code)?;
        let e = ErrorBody::new(ErrorCode::from_wire(&code), self.opt_text(message).unwrap_or_default());
        // Data was one JSON value within the body limits when it was stored.
        let data = self.opt_text(data).and_then(|text| {
            serde_json::value::RawValue::from_string(text)
                .map_err(|err| self.damaged(data, &format_args!("malformed JSON: {err}"), "absent"))
                .ok()
        });
        Some(match data {
            Some(data) => e.with_data(data),
            None => e,
        })
    }

    /// A JSON text column (tags, command lists); empty when it cannot be read or parsed.
    fn json<T: serde::de::DeserializeOwned + Default>(&self, col: &str) -> T {
        let Some(text) = self.try_get::<String>(col, "empty") else { return T::default() };
        serde_json::from_str(&text).unwrap_or_else(|e| {
            self.damaged(col, &format_args!("malformed JSON: {e}"), "empty");
            T::default()
        })
    }
}

/// Parses a stored string map (a device's tags, in a write).
pub(crate) fn parse_map(text: &str) -> Result<BTreeMap<String, String>, serde_json::Error> {
    serde_json::from_str(text)
}

/// Reads a row's id (the one column a read cannot do without); `None`, after a warning naming
/// `what` and `context`, when it cannot be read.
fn id(row: &AnyRow, col: &str, what: &str, context: &dyn std::fmt::Display) -> Option<String> {
    row.try_get::<String, _>(col)
        .map_err(|e| tracing::warn!(error = %e, "a {what} row{context} whose {col} cannot be read is skipped"))
        .ok()
}

/// One `devices` row, selected with [`DEVICE_COLUMNS`]; `None` (skipped, with a warning) when
/// its id cannot be read. A value that cannot be read is logged and read as empty or absent,
/// except for the credential, which fails closed: an unreadable secret hash or revocation flag
/// reads as revoked (no secret), never as a device that may connect with the shared token.
pub(crate) fn device(row: &AnyRow) -> Option<Device> {
    let id = id(row, "id", "device", &"")?;
    let f = Fields { row, owner: Owner::Device(&id) };
    let mut revoked = f.flag("revoked", true, "revoked");
    let secret_hash = match f.try_get::<Option<Vec<u8>>>("secret_hash", "revoked") {
        Some(None) => None,
        Some(Some(bytes)) => match <[u8; 32]>::try_from(bytes.as_slice()) {
            Ok(hash) => Some(hash),
            Err(_) => {
                f.damaged("secret_hash", &format_args!("{} bytes, expected 32", bytes.len()), "revoked");
                revoked = true;
                None
            }
        },
        None => {
            revoked = true;
            None
        }
    };
    Some(Device {
        // A revoked credential has no secret (revocation erases it; so does reading it revoked).
        secret_hash: if revoked { None } else { secret_hash },
        revoked,
        reported_tags: f.json("reported_tags"),
        operator_tags: f.json("operator_tags"),
        agent_version: f.opt_text("agent_version"),
        commands: f.json("commands"),
        schemas: f.json("command_schemas"),
        registered_at: f.time("registered_at", DateTime::UNIX_EPOCH, "1970-01-01"),
        first_seen: f.opt_time("first_seen"),
        last_seen: f.opt_time("last_seen"),
        last_disconnect: f.opt_time("last_disconnect"),
        last_remote_addr: f.opt_text("last_remote_addr"),
        user_agent: f.opt_text("user_agent"),
        transport: f.opt_text("transport"),
        connections: f.count("connections"),
        flaps: f.count("flaps"),
        delivered: f.count("delivered"),
        acknowledged: f.count("acknowledged"),
        id,
    })
}

/// One `jobs` row, selected with [`JOB_COLUMNS`]; the summary is filled in by the caller.
/// `None` (skipped, with a warning) when its id cannot be read. An unknown state reads as
/// `done`: the store treats every state but `running` as ended (pruning, recovery).
pub(crate) fn job(row: &AnyRow) -> Option<JobRecord> {
    let id = id(row, "id", "job", &"")?;
    let f = Fields { row, owner: Owner::Job(&id) };
    let state = f.try_get::<String>("state", "done").and_then(|state| {
        let phase = JobPhase::from_wire(&state);
        if phase.is_none() {
            f.damaged("state", &format_args!("unknown job state '{state}'"), "done");
        }
        phase
    });
    let created_at = f.time("created_at", DateTime::UNIX_EPOCH, "1970-01-01");
    let state = state.unwrap_or(JobPhase::Done);
    Some(JobRecord {
        node: f.opt_text("node"),
        requester: f.text("requester"),
        selector: f.text("selector"),
        command: f.text("command"),
        args: f.opt_text("args"),
        created_at,
        deadline_at: f.time("deadline_at", created_at, "its creation time"),
        // A job whose commands are still held for devices is running; its live part's end is
        // not when it finished.
        finished_at: if state == JobPhase::Running { None } else { f.opt_time("finished_at") },
        state,
        targets: f.count("target_count"),
        skipped: f.count("skipped"),
        rollout: f.opt_text("rollout"),
        summary: BTreeMap::new(),
        id,
    })
}

/// The `targets` column of a `jobs` row (selected with it): the job's device ids, `None` for a
/// job stored before the list existed, and (with a warning) for a list that cannot be read:
/// then only its targets with a row are known.
pub(crate) fn target_list(row: &AnyRow, job: &str) -> Option<Vec<String>> {
    const SHOWN: &str = "its targets with a status only";
    let f = Fields { row, owner: Owner::Job(job) };
    let text = f.try_get::<Option<String>>("targets", SHOWN)??;
    serde_json::from_str(&text).map_err(|e| f.damaged("targets", &format_args!("malformed JSON: {e}"), SHOWN)).ok()
}

/// One `job_targets` row of `job`, selected with [`TARGET_COLUMNS`]; `None` (skipped, with a
/// warning) when its device id cannot be read. A value that cannot be read is logged and read
/// as absent (an unknown status as no status).
///
/// A late answer is in the `late_*` columns. Rows written before those columns existed (before
/// migration 0005) with `late` set are different: the late answer replaced the target's
/// `timeout` (or its pending status), and what the requester was told is gone. They are read as
/// stored, the status being the late answer's, and that same answer is their [`LateAnswer`], at
/// its `answered_at` (always written with `late`; the job's deadline, which it came after, if
/// missing): the record stays readable and says the answer was late, and the summary counts the
/// stored status, as it did when it was written.
pub(crate) fn target(row: &AnyRow, job: &JobRecord) -> Option<TargetRecord> {
    let device = id(row, "device_id", "target", &format_args!(" of job {}", job.id))?;
    let f = Fields { row, owner: Owner::Target { job: &job.id, device: &device } };
    let status = f.status("status");
    let result = f.opt_text("result");
    let error = f.error("error_code", "error_message", "error_data");
    let late = match f.status("late_status") {
        Some(late_status) => Some(LateAnswer {
            status: late_status,
            result: f.opt_text("late_result"),
            error: f.error("late_error_code", "late_error_message", "late_error_data"),
            at: f.time("late_at", job.deadline_at, "the job's deadline"),
        }),
        None if f.flag("late", false, "not late") => status.map(|status| LateAnswer {
            status,
            result: result.clone(),
            error: error.clone(),
            at: f.opt_time("answered_at").unwrap_or(job.deadline_at),
        }),
        None => None,
    };
    let elapsed_ms = f
        .opt_i64("elapsed_ms", "absent")
        .and_then(|v| u64::try_from(v).map_err(|e| f.damaged("elapsed_ms", &format_args!("{v}: {e}"), "absent")).ok());
    Some(TargetRecord { status, result, error, elapsed_ms, late, device })
}

/// One `(job_id, status, n)` row of a summary query; `None` (with a warning) for a status that
/// cannot be read, which [`target`] reads as no status, so neither counts it.
pub(crate) fn summary_row(row: &AnyRow) -> Option<(String, Status, u64)> {
    let job = id(row, "job_id", "summary", &"")?;
    let f = Fields { row, owner: Owner::Job(&job) };
    let status = f.status("status")?;
    let n = f.count("n");
    Some((job, status, n))
}

/// A count from `SELECT COUNT(*) AS n`.
pub(crate) fn count(row: &AnyRow) -> Result<u64, StoreError> {
    let n: i64 = row.try_get("n").map_err(|e| StoreError::Unavailable(format!("cannot read a count: {e}")))?;
    Ok(u64::try_from(n).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_and_lists_round_trip_as_json() {
        let map = BTreeMap::from([("a".to_owned(), "1".to_owned()), ("b\"".to_owned(), "é".to_owned())]);
        assert_eq!(parse_map(&map_json(&map)).ok(), Some(map));
        let list = vec!["x".to_owned(), "y".to_owned()];
        let back: Vec<String> = serde_json::from_str(&list_json(&list)).unwrap_or_default();
        assert_eq!(back, list);
        assert!(parse_map("[1]").is_err());
    }
}

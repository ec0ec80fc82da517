//! Typed bodies of the schedule commands (`$orb.schedules.*`, decision 0014): create a stored
//! schedule (a job template and when it fires), list and show them, pause, resume and remove
//! one. The server's scheduler fires each one through the same door as an operator's job.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub use orb_schedule::{MissedPolicy, Spec};

use crate::rollout::Rollout;

/// Arguments of [`crate::message::commands::SCHEDULES_CREATE`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScheduleCreate {
    /// Target selector, resolved at each firing (devices that match later are included).
    pub target: String,
    /// Command name.
    pub command: String,
    /// Arguments (JSON), absent for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Box<RawValue>>,
    /// Each firing's deadline in milliseconds (server default when absent, capped at its maximum).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadline_ms: Option<u64>,
    /// Each firing's TTL for targets that are not connected, in milliseconds (as `ttl_ms` of a job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_ms: Option<u64>,
    /// How each firing's job reaches its targets (splay, batches); absent: all at once.
    #[serde(default, skip_serializing_if = "Rollout::is_default")]
    pub rollout: Rollout,
    /// When it fires.
    pub spec: Spec,
    /// What to do with firings missed while no server ran (default `skip`).
    #[serde(default)]
    pub missed: MissedPolicy,
    /// Run on each matching device's own clock (also while it is disconnected) instead of being
    /// fired by the server (default false).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub on_agent: bool,
}

/// Arguments naming one schedule: its id or a unique prefix of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleRef {
    /// Schedule id or unique prefix.
    pub id: String,
}

/// A stored schedule: the result of create, show, pause and resume, and the elements of list.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ScheduleInfo {
    /// Schedule id (a UUID v7).
    pub id: String,
    /// Target selector.
    pub target: String,
    /// Command name.
    pub command: String,
    /// Arguments (JSON), null when none; always null in `$orb.schedules.list` (`show` has them).
    #[cfg_attr(feature = "openapi", schema(value_type = Value))]
    pub args: Option<Box<RawValue>>,
    /// Each firing's deadline, in milliseconds.
    pub deadline_ms: u64,
    /// Each firing's TTL for targets that are not connected, in milliseconds.
    pub ttl_ms: Option<u64>,
    /// How each firing's job reaches its targets; absent for all at once (and when the stored
    /// value cannot be read: its firings then fail with `bad_rollout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
    /// When it fires; `null` when the stored value cannot be read (it never fires then).
    pub spec: Option<Spec>,
    /// What is done with firings missed while no server ran.
    pub missed: String,
    /// It runs on each matching device's own clock (`next_fire_at` is then null: each device
    /// keeps its own).
    #[serde(default)]
    pub on_agent: bool,
    /// Who created it.
    pub created_by: String,
    /// RFC 3339 UTC creation time.
    pub created_at: String,
    /// RFC 3339 UTC time it was paused; null when active.
    pub paused_at: Option<String>,
    /// RFC 3339 UTC time of its next firing; null while paused.
    pub next_fire_at: Option<String>,
    /// RFC 3339 UTC time of its last firing.
    pub last_fired_at: Option<String>,
    /// How many times it fired.
    pub fired: u64,
    /// Why its last firing's job could not start (`code: message`), if it could not.
    pub last_error: Option<String>,
}

/// Arguments of [`crate::message::commands::SCHEDULES_SYNC`]: every agent-local schedule the
/// device runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentSchedules {
    /// Which sync this is: a device applies a set only if its version is not older than the
    /// last one it applied (two syncs may be handled out of order).
    pub version: u64,
    /// The schedules, by id.
    pub schedules: Vec<AgentSchedule>,
}

/// One agent-local schedule as the server sends it to a device: the device fires it on its own
/// clock, runs `command` with `args` through its own handler, and reports each firing through its
/// outbox ([`ScheduleRan`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentSchedule {
    /// The schedule's id.
    pub id: String,
    /// When it fires.
    pub spec: Spec,
    /// What to do with firings missed while the agent was not running.
    #[serde(default)]
    pub missed: MissedPolicy,
    /// Command name.
    pub command: String,
    /// Arguments (JSON), absent for none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<Box<RawValue>>,
    /// Each firing's deadline, in milliseconds.
    pub deadline_ms: u64,
}

/// Body of [`crate::message::commands::SCHEDULES_RAN`]: one firing of an agent-local schedule.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScheduleRan {
    /// The schedule.
    pub schedule: String,
    /// The command it ran.
    pub command: String,
    /// RFC 3339 UTC time of the firing, by the device's clock.
    pub fired_at: String,
    /// How it ended: `ok`, `error` or `timeout`.
    pub status: crate::Status,
    /// The handler's result (status `ok`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Box<RawValue>>,
    /// Why it failed (other statuses).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::ErrorBody>,
    /// Milliseconds the handler ran.
    pub elapsed_ms: u64,
}

impl ScheduleRan {
    /// The report of a firing of `schedule` at `fired_at` (RFC 3339) that ran `command` for
    /// `elapsed_ms` and ended with `outcome` (an error with code `timeout` is status `timeout`).
    pub fn new(
        schedule: &str,
        command: &str,
        fired_at: String,
        elapsed_ms: u64,
        outcome: Result<serde_json::Value, crate::ErrorBody>,
    ) -> ScheduleRan {
        let (status, result, error) = match outcome {
            Ok(v) => (crate::Status::Ok, serde_json::value::to_raw_value(&v).ok(), None),
            Err(e) if e.code == crate::ErrorCode::Timeout => (crate::Status::Timeout, None, Some(e)),
            Err(e) => (crate::Status::Error, None, Some(e)),
        };
        ScheduleRan {
            schedule: schedule.to_owned(),
            command: command.to_owned(),
            fired_at,
            status,
            result,
            error,
            elapsed_ms,
        }
    }
}

//! Typed bodies of the job history's operator commands (`$orb.jobs.*`): the list of recent jobs,
//! one job with every target's result (the same objects `orb send --json` prints), and cancel.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::envelope::Status;
use crate::message::TargetResult;

/// Arguments of [`crate::message::commands::JOBS_LIST`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobsQuery {
    /// At most this many jobs, newest first (server default 50, at most 1000).
    #[serde(default)]
    pub limit: Option<u32>,
    /// Only the jobs this schedule fired (its full id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
}

/// Arguments naming one job: its id or a unique prefix of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRef {
    /// Job id or unique prefix.
    pub id: String,
}

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum JobPhase {
    /// Some targets have not answered and the deadline has not passed.
    Running,
    /// Every target has a final status.
    Done,
    /// An operator cancelled it; targets pending then are `cancelled`.
    Cancelled,
}

impl JobPhase {
    /// The wire and storage name.
    pub fn as_str(self) -> &'static str {
        match self {
            JobPhase::Running => "running",
            JobPhase::Done => "done",
            JobPhase::Cancelled => "cancelled",
        }
    }

    /// Parses a storage name.
    pub fn from_wire(s: &str) -> Option<JobPhase> {
        match s {
            "running" => Some(JobPhase::Running),
            "done" => Some(JobPhase::Done),
            "cancelled" => Some(JobPhase::Cancelled),
            _ => None,
        }
    }
}

/// One job as the history lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobInfo {
    /// Job id (a UUID v7: time-ordered).
    pub id: String,
    /// Who submitted it (operator session name).
    pub requester: String,
    /// The target selector as given.
    pub selector: String,
    /// Command name.
    pub command: String,
    /// Arguments (JSON), null when none were given.
    #[cfg_attr(feature = "openapi", schema(value_type = Value))]
    pub args: Option<Box<RawValue>>,
    /// RFC 3339 UTC creation time.
    pub created_at: String,
    /// RFC 3339 UTC deadline.
    pub deadline_at: String,
    /// RFC 3339 UTC time the last target settled, when done or cancelled.
    pub finished_at: Option<String>,
    /// Running, done or cancelled.
    pub state: JobPhase,
    /// Number of targets.
    pub targets: u64,
    /// Devices the selector matched that were not targeted because they were not connected
    /// (`select: online`). Absent from servers before it existed: read as 0.
    #[serde(default)]
    pub skipped: u64,
    /// How it reached its targets (splay, batches); absent for all at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::rollout::Rollout>,
    /// Count per final status (every status present); targets still pending are not counted.
    pub summary: BTreeMap<Status, u64>,
}

/// Result of [`crate::message::commands::JOBS_SHOW`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(description = "One job with every target's result."))]
pub struct JobDetail {
    /// The job.
    pub job: JobInfo,
    /// Targets with a final status, in id order: the objects `orb send --json` prints.
    pub results: Vec<TargetResult>,
    /// Targets still waiting for an answer, in id order.
    pub pending: Vec<String>,
}

/// Result of [`crate::message::commands::JOBS_CANCEL`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(description = "What cancelling a job cancelled."))]
pub struct JobCancelled {
    /// The full job id.
    pub job: String,
    /// Targets that were pending and are now `cancelled`, in id order.
    pub cancelled: Vec<String>,
}

//! What a job asks for: [`JobRequest`], the command, its targets and the options of a job
//! (deadline, which matched devices to target, how long to wait for offline ones), handed to
//! [`crate::Client::submit`]. New job
//! options become new fields with a default, so callers keep compiling.

use std::time::Duration;

use bytes::Bytes;
pub use orb_proto::message::Select;
use orb_proto::rollout::Rollout;

/// A job to submit: `command` to every device `target` matches. Build it with
/// [`JobRequest::new`] and the setters; every option has a default.
///
/// ```
/// # use std::time::Duration;
/// use orb_client::{JobRequest, Select};
/// let job = JobRequest::new("tag:role=web", "ping").deadline(Duration::from_secs(5)).select(Select::Online);
/// assert_eq!(job.select, Select::Online);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct JobRequest {
    /// Target selector (`*`, `web-1,web-2`, `tag:role=web`, ...).
    pub target: String,
    /// Command name.
    pub command: String,
    /// Arguments: one JSON value (default `null`).
    pub args: Bytes,
    /// Time the targets have to answer (default [`JobRequest::DEFAULT_DEADLINE`]; the server
    /// caps it at its maximum).
    pub deadline: Duration,
    /// Which matched devices become targets (default [`Select::All`]).
    pub select: Select,
    /// How long the command waits, stored by the server, for a target that is not connected
    /// (default `None`: such a target ends `offline`).
    pub ttl: Option<Duration>,
    /// How the job reaches its targets: all at once (default), spread over a splay window, or
    /// in batches with an abort threshold.
    pub rollout: Rollout,
    /// Ask for the targets' progress while they run (default `false`): the job's stream then
    /// has [`crate::JobUpdate::Progress`] updates, best effort (protocol section 4.13).
    pub progress: bool,
}

impl JobRequest {
    /// The deadline of a request that sets none.
    pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(10);

    /// `command` on every device `target` matches, without arguments, with the default deadline.
    pub fn new(target: impl Into<String>, command: impl Into<String>) -> JobRequest {
        JobRequest {
            target: target.into(),
            command: command.into(),
            args: Bytes::from_static(b"null"),
            deadline: JobRequest::DEFAULT_DEADLINE,
            select: Select::All,
            ttl: None,
            rollout: Rollout::default(),
            progress: false,
        }
    }

    /// Sets the arguments (one JSON value; checked when submitted).
    #[must_use]
    pub fn args(mut self, args: Bytes) -> JobRequest {
        self.args = args;
        self
    }

    /// Sets the deadline.
    #[must_use]
    pub fn deadline(mut self, deadline: Duration) -> JobRequest {
        self.deadline = deadline;
        self
    }

    /// Sets which matched devices become targets.
    #[must_use]
    pub fn select(mut self, select: Select) -> JobRequest {
        self.select = select;
        self
    }

    /// Holds the command for targets that are not connected, up to `ttl`: the server delivers
    /// it when they connect (their status is `queued` meanwhile), or ends them `expired`.
    #[must_use]
    pub fn ttl(mut self, ttl: Duration) -> JobRequest {
        self.ttl = Some(ttl);
        self
    }

    /// Sets the rollout: a splay window, batches, an abort threshold (checked by the server:
    /// `bad_rollout`). A batched job's stream has a [`crate::JobUpdate::Batch`] as each batch
    /// starts.
    #[must_use]
    pub fn rollout(mut self, rollout: Rollout) -> JobRequest {
        self.rollout = rollout;
        self
    }

    /// Asks for the targets' `progress` while their command runs: what a handler reports with
    /// [`crate::Context::progress`] arrives as [`crate::JobUpdate::Progress`], best effort
    /// (dropped rather than queued without bound; none for a job with a TTL).
    #[must_use]
    pub fn progress(mut self, progress: bool) -> JobRequest {
        self.progress = progress;
        self
    }
}

//! Correlations: what a device's `reply` answers. Every command the broker sends a device carries
//! a [`CorrelationId`] as its `id`: for a job, the job id (protocol v1 promises `id` = `job` on a
//! job's command, and one frame serves every target); for a plain request, `NODE.SEQ`. Each also
//! records the node that waits for the answer. A reply's `re` is looked up as it is; the table
//! says what waits for it ([`Pending`]): a job's replies, a request's reply sink, or a job that
//! ended recently (its late answers are still recognised). Nothing here tells jobs from requests
//! by the shape of an id.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use dashmap::DashMap;
use orb_proto::{DeviceId, ErrorBody, ErrorCode};
use tokio::time::Instant;

use crate::node::NodeId;

/// The key of one correlation: its wire form (the `id` of the command a device receives, the
/// `re` of its reply) and the node that waits for the answer.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct CorrelationId {
    /// The node that waits for the answer.
    pub node: NodeId,
    wire: Arc<str>,
}

impl CorrelationId {
    /// The wire form.
    pub fn as_str(&self) -> &str {
        &self.wire
    }
}

impl fmt::Display for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.wire)
    }
}

impl fmt::Debug for CorrelationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CorrelationId({} on {})", self.wire, self.node)
    }
}

/// What a device answered: a result (JSON bytes) or an error.
pub type Answer = Result<Bytes, ErrorBody>;

/// Where a job's replies go (implemented by the job's inbox).
pub trait JobReplies: Send + Sync + 'static {
    /// Device `from` answered at `at`.
    fn answer(&self, from: &DeviceId, answer: Answer, at: Instant);

    /// Device `from` reported progress on job `job`'s command: passed to the job's
    /// [`ProgressSink`] while `from` is a target still pending. Never waits.
    fn progress(&self, _from: &DeviceId, _job: &str, _body: Bytes) -> Progressed {
        Progressed::NotPending
    }
}

/// Receives the `progress` of commands whose requester asked for it (best effort). Adapters
/// implement it: the wire session encodes a `progress` frame and queues it only when there is
/// room, never waiting and never closing the session.
pub trait ProgressSink: Send + Sync + 'static {
    /// Device `from` reported `body` while running the command (of job `job`, for a job).
    /// Never waits: a frame that does not fit is dropped and [`Progressed::Dropped`] answered.
    fn progress(&self, job: Option<&str>, from: &DeviceId, body: Bytes) -> Progressed;
}

/// What became of a `progress` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progressed {
    /// Queued for the requester.
    Passed,
    /// The requester had no room for it: dropped.
    Dropped,
    /// Its command is not pending (answered, timed out, unknown, another device's) or its
    /// requester did not ask for progress: dropped.
    NotPending,
}

/// The outcome of a plain request, as its requester receives it.
#[derive(Debug)]
pub struct Reply {
    /// The device that answered (`None` when the broker answers for it: timeout, shutdown).
    pub from: Option<DeviceId>,
    /// Its result or error.
    pub answer: Answer,
}

/// Receives the one reply of a plain request. Adapters implement it: the wire session encodes a
/// `reply` frame, an in-process caller completes a future.
pub trait ReplySink: Send + Sync + 'static {
    /// The request is answered (exactly once).
    fn complete(self: Box<Self>, reply: Reply);

    /// Whether nobody can receive the reply any more (its requester's session closed): the
    /// request is then forgotten before its deadline.
    fn is_gone(&self) -> bool;

    /// Whether the requester asked for the command's progress (the delivered `cmd` then says
    /// `progress: true`). By default it did not.
    fn wants_progress(&self) -> bool {
        false
    }

    /// The device reported progress while the request is pending (only called when
    /// [`ReplySink::wants_progress`]). Never waits.
    fn progress(&self, _from: &DeviceId, _body: Bytes) -> Progressed {
        Progressed::NotPending
    }
}

/// A plain request to one device, awaiting its reply.
pub struct PendingRequest {
    /// The device that must answer (a reply from another is ignored).
    pub device: DeviceId,
    /// When the requester is told `timeout`.
    pub deadline: Instant,
    /// Where the reply goes.
    pub sink: Box<dyn ReplySink>,
}

/// What a correlation waits for.
pub enum Pending {
    /// A running job.
    Job(Arc<dyn JobReplies>),
    /// A plain request.
    Request(PendingRequest),
    /// A job that ended: answers still coming are late results, kept until `until`.
    Ended {
        /// The job's id.
        job: String,
        /// When the entry is dropped.
        until: Instant,
    },
}

/// What became of a reply.
#[derive(Debug, PartialEq, Eq)]
pub enum Routed {
    /// Handed to its job or requester.
    Delivered,
    /// An answer to job `job`, which has ended: a late result for the history.
    Late {
        /// The job's id.
        job: String,
    },
    /// Nothing waits for it (unknown, expired, another node's, or from a device not asked).
    Unknown,
}

/// The table of open correlations of this node.
pub struct Correlations {
    node: NodeId,
    /// Sequence numbers of requests; they start at the node's start time in microseconds, so
    /// ids of a restarted node do not repeat those of its previous run.
    next: AtomicU64,
    open: DashMap<Arc<str>, Pending>,
}

impl Correlations {
    /// An empty table for `node`.
    pub fn new(node: NodeId) -> Correlations {
        let start = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX / 2));
        Correlations { node, next: AtomicU64::new(start), open: DashMap::new() }
    }

    /// The node this table belongs to.
    pub fn node(&self) -> &NodeId {
        &self.node
    }

    /// Opens the correlation of job `job`: its command's id is the job id.
    pub fn open_job(&self, job: &str, replies: Arc<dyn JobReplies>) -> CorrelationId {
        let id = CorrelationId { node: self.node.clone(), wire: Arc::from(job) };
        self.open.insert(Arc::clone(&id.wire), Pending::Job(replies));
        id
    }

    /// A job ended: its answers from now on are late, recognised for `keep`.
    pub fn end_job(&self, id: &CorrelationId, job: String, keep: Duration) {
        if let Some(mut entry) = self.open.get_mut(id.as_str()) {
            *entry = Pending::Ended { job, until: Instant::now() + keep };
        }
    }

    /// Forgets a correlation at once (a job that could not start).
    pub fn close(&self, id: &CorrelationId) {
        self.open.remove(id.as_str());
    }

    /// Opens a correlation for a plain request: `NODE.SEQ`.
    pub fn open_request(&self, request: PendingRequest) -> CorrelationId {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        let id = CorrelationId { node: self.node.clone(), wire: Arc::from(format!("{}.{seq}", self.node)) };
        self.open.insert(Arc::clone(&id.wire), Pending::Request(request));
        id
    }

    /// Withdraws a request that could not be sent; its sink comes back to be answered.
    pub fn withdraw_request(&self, id: &CorrelationId) -> Option<Box<dyn ReplySink>> {
        match self.open.remove_if(id.as_str(), |_, p| matches!(p, Pending::Request(_))) {
            Some((_, Pending::Request(r))) => Some(r.sink),
            _ => None,
        }
    }

    /// Routes device `from`'s reply `re` to what waits for it.
    pub fn route(&self, from: &DeviceId, re: &str, answer: Answer, at: Instant) -> Routed {
        {
            // A job's answer is handed over under the entry's read lock (the hand-over never
            // waits): `end_job` cannot slip in between, so an answer reaches either the running
            // job or, after it, the late path, never neither.
            match self.open.get(re).as_deref() {
                Some(Pending::Job(replies)) => {
                    replies.answer(from, answer, at);
                    return Routed::Delivered;
                }
                Some(Pending::Ended { job, .. }) => return Routed::Late { job: job.clone() },
                Some(Pending::Request(_)) => {}
                None => return Routed::Unknown,
            }
        }
        match self.open.remove_if(re, |_, p| matches!(p, Pending::Request(r) if &r.device == from)) {
            Some((_, Pending::Request(r))) => {
                r.sink.complete(Reply { from: Some(from.clone()), answer });
                Routed::Delivered
            }
            _ => Routed::Unknown,
        }
    }

    /// Passes device `from`'s progress on command `re` to the requester that asked for it, while
    /// the command is pending: a running job's target that has not answered, or a request to
    /// `from` not answered yet. Never waits (under the entry's read lock, like a job's answer).
    pub fn progress(&self, from: &DeviceId, re: &str, body: Bytes) -> Progressed {
        match self.open.get(re).as_deref() {
            Some(Pending::Job(replies)) => replies.progress(from, re, body),
            Some(Pending::Request(r)) if &r.device == from && r.sink.wants_progress() => r.sink.progress(from, body),
            Some(Pending::Request(_) | Pending::Ended { .. }) | None => Progressed::NotPending,
        }
    }

    /// Answers `timeout` to every request whose deadline passed, forgets requests nobody can
    /// receive any more and ended jobs past their late window. Called periodically.
    pub fn expire(&self, now: Instant) {
        let due: Vec<Arc<str>> = self
            .open
            .iter()
            .filter(|e| match e.value() {
                Pending::Request(r) => r.deadline <= now || r.sink.is_gone(),
                Pending::Ended { until, .. } => *until <= now,
                Pending::Job(_) => false,
            })
            .map(|e| Arc::clone(e.key()))
            .collect();
        for key in due {
            if let Some((_, Pending::Request(r))) = self.open.remove_if(&key, |_, p| !matches!(p, Pending::Job(_))) {
                let msg = format!("device {} did not answer before the deadline", r.device);
                r.sink.complete(Reply { from: None, answer: Err(ErrorBody::new(ErrorCode::Timeout, msg)) });
            }
        }
    }

    /// Answers every open request with `error` (the server is stopping).
    pub fn fail_requests(&self, error: &ErrorBody) {
        let open: Vec<Arc<str>> = self
            .open
            .iter()
            .filter(|e| matches!(e.value(), Pending::Request(_)))
            .map(|e| Arc::clone(e.key()))
            .collect();
        for key in open {
            if let Some((_, Pending::Request(r))) = self.open.remove_if(&key, |_, p| matches!(p, Pending::Request(_))) {
                r.sink.complete(Reply { from: None, answer: Err(error.clone()) });
            }
        }
    }

    /// Open correlations (jobs, requests and recently ended jobs).
    pub fn len(&self) -> usize {
        self.open.len()
    }

    /// Whether none is open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Sink(Arc<Mutex<Option<Reply>>>);

    impl ReplySink for Sink {
        fn complete(self: Box<Self>, reply: Reply) {
            *self.0.lock().unwrap() = Some(reply);
        }

        fn is_gone(&self) -> bool {
            false
        }
    }

    fn table() -> Correlations {
        Correlations::new(NodeId::new("n-1").unwrap())
    }

    fn device(id: &str) -> DeviceId {
        DeviceId::new(id).unwrap()
    }

    #[tokio::test]
    async fn a_request_is_answered_once_and_only_by_the_device_asked() {
        let t = table();
        let got = Arc::new(Mutex::new(None));
        let id = t.open_request(PendingRequest {
            device: device("web-1"),
            deadline: Instant::now() + Duration::from_secs(5),
            sink: Box::new(Sink(Arc::clone(&got))),
        });
        let re = id.to_string();
        let at = Instant::now();
        assert_eq!(t.route(&device("web-2"), &re, Ok(Bytes::from_static(b"1")), at), Routed::Unknown);
        assert_eq!(t.route(&device("web-1"), &re, Ok(Bytes::from_static(b"2")), at), Routed::Delivered);
        assert_eq!(got.lock().unwrap().as_ref().unwrap().answer.as_deref().ok(), Some(&b"2"[..]));
        assert_eq!(t.route(&device("web-1"), &re, Ok(Bytes::from_static(b"3")), at), Routed::Unknown);
        assert!(t.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn requests_time_out_and_ended_jobs_are_forgotten_after_their_window() {
        let t = table();
        let got = Arc::new(Mutex::new(None));
        t.open_request(PendingRequest {
            device: device("web-1"),
            deadline: Instant::now() + Duration::from_secs(1),
            sink: Box::new(Sink(Arc::clone(&got))),
        });
        struct Nothing;
        impl JobReplies for Nothing {
            fn answer(&self, _: &DeviceId, _: Answer, _: Instant) {}
        }
        let job = t.open_job("J", Arc::new(Nothing));
        assert_eq!((job.as_str(), job.node.as_str()), ("J", "n-1"), "a job's command id is its job id");
        t.end_job(&job, "J".into(), Duration::from_secs(3));
        assert_eq!(
            t.route(&device("web-1"), &job.to_string(), Ok(Bytes::new()), Instant::now()),
            Routed::Late { job: "J".into() }
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        t.expire(Instant::now());
        let reply = got.lock().unwrap().take().unwrap();
        assert_eq!(reply.answer.unwrap_err().code, ErrorCode::Timeout);
        assert_eq!(t.len(), 1, "the ended job is still within its window");
        tokio::time::advance(Duration::from_secs(2)).await;
        t.expire(Instant::now());
        assert!(t.is_empty());
    }

    /// A request's sink that asked for progress and counts what it got.
    struct Watching(Arc<Mutex<Vec<Bytes>>>);

    impl ReplySink for Watching {
        fn complete(self: Box<Self>, _: Reply) {}

        fn is_gone(&self) -> bool {
            false
        }

        fn wants_progress(&self) -> bool {
            true
        }

        fn progress(&self, _: &DeviceId, body: Bytes) -> Progressed {
            self.0.lock().unwrap().push(body);
            Progressed::Passed
        }
    }

    #[test]
    fn progress_reaches_a_pending_request_that_asked_and_nothing_else() {
        let t = table();
        let got = Arc::new(Mutex::new(Vec::new()));
        let id = t.open_request(PendingRequest {
            device: device("a"),
            deadline: Instant::now() + Duration::from_secs(5),
            sink: Box::new(Watching(Arc::clone(&got))),
        });
        let re = id.to_string();
        let line = Bytes::from_static(br#"{"line":"1"}"#);
        assert_eq!(t.progress(&device("a"), &re, line.clone()), Progressed::Passed);
        assert_eq!(t.progress(&device("b"), &re, line.clone()), Progressed::NotPending, "another device");
        assert_eq!(t.progress(&device("a"), "n-1.0", line.clone()), Progressed::NotPending, "unknown");
        assert_eq!(t.route(&device("a"), &re, Ok(Bytes::new()), Instant::now()), Routed::Delivered);
        assert_eq!(t.progress(&device("a"), &re, line.clone()), Progressed::NotPending, "answered");
        assert_eq!(got.lock().unwrap().len(), 1);
        // A requester that did not ask gets none.
        let quiet = t.open_request(PendingRequest {
            device: device("a"),
            deadline: Instant::now() + Duration::from_secs(5),
            sink: Box::new(Sink(Arc::default())),
        });
        assert_eq!(t.progress(&device("a"), quiet.as_str(), line), Progressed::NotPending);
    }

    #[test]
    fn request_ids_carry_the_node_and_unknown_ids_route_nowhere() {
        let t = table();
        let id = t.open_request(PendingRequest {
            device: device("a"),
            deadline: Instant::now() + Duration::from_secs(5),
            sink: Box::new(Sink(Arc::default())),
        });
        assert!(id.as_str().starts_with("n-1."), "{id}");
        assert_eq!(id.node.as_str(), "n-1");
        for unknown in ["", "n-2.1", "r17"] {
            assert_eq!(t.route(&device("a"), unknown, Ok(Bytes::new()), Instant::now()), Routed::Unknown);
        }
    }
}

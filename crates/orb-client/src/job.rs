//! A submitted job as the requester sees it: the accepted targets, then one [`TargetResult`]
//! per target as it arrives, then the summary.

use bytes::Bytes;
use orb_proto::message::{BatchStarted, JobAccepted, JobSummary, TargetResult};
use orb_proto::{Envelope, ErrorBody, ErrorCode, Kind, Status};
use serde_json::value::RawValue;
use tokio::sync::mpsc;

use crate::client::Client;

/// What a job stream yields.
#[derive(Debug)]
pub enum JobUpdate {
    /// One target's outcome.
    Result(TargetResult),
    /// A batch of a staged job started (jobs submitted with a batch size only).
    Batch(BatchStarted),
    /// The job ended; no more updates follow.
    Done(JobSummary),
    /// A target reported progress while its command runs (jobs submitted with
    /// [`crate::JobRequest::progress`] only): best effort, never stored, and never after that
    /// target's [`JobUpdate::Result`].
    Progress {
        /// The device that reported it.
        device: String,
        /// What it reported (JSON, e.g. `{"stream": "stdout", "line": "..."}`).
        body: Box<RawValue>,
    },
}

/// A running job's result stream. Dropping it stops reading (the server keeps the job running).
pub struct Job {
    /// What the server accepted: job id, targets, deadline.
    pub accepted: JobAccepted,
    rx: mpsc::UnboundedReceiver<Envelope>,
    client: Client,
    waiter: u64,
    done: bool,
    /// Progress that arrived before the ack, handed out first.
    early: std::collections::VecDeque<Envelope>,
    /// Progress frames in `rx` not read yet (the connection's reader drops beyond its limit).
    buffered: crate::client::Buffered,
}

impl Job {
    pub(crate) fn new(
        accepted: JobAccepted,
        rx: mpsc::UnboundedReceiver<Envelope>,
        client: Client,
        waiter: u64,
        early: Vec<Envelope>,
        buffered: crate::client::Buffered,
    ) -> Job {
        Job { accepted, rx, client, waiter, done: false, early: early.into(), buffered }
    }

    /// The job id.
    pub fn id(&self) -> &str {
        &self.accepted.job
    }

    /// The next update, or `None` after [`JobUpdate::Done`] or when the connection closed.
    pub async fn next(&mut self) -> Option<JobUpdate> {
        if self.done {
            return None;
        }
        // Each turn takes one frame off the stream; only a malformed batch event is skipped.
        loop {
            let env = match self.early.pop_front() {
                Some(env) => env,
                None => self.rx.recv().await?,
            };
            return match env.kind {
                Kind::Progress => {
                    // Counted when the connection's reader queued it (early ones too).
                    let _ = self.buffered.fetch_update(
                        std::sync::atomic::Ordering::AcqRel,
                        std::sync::atomic::Ordering::Acquire,
                        |n| Some(n.saturating_sub(1)),
                    );
                    let Some(body) = env.body.as_ref().and_then(raw) else { continue };
                    Some(JobUpdate::Progress { device: env.device.unwrap_or_default(), body })
                }
                // An event about no device: a batch started.
                Kind::Event if env.device.is_none() => match env.json_body::<BatchStarted>() {
                    Ok(batch) => Some(JobUpdate::Batch(batch)),
                    Err(e) => {
                        tracing::warn!(job = self.accepted.job, "an event about no device skipped: {}", e.message);
                        continue;
                    }
                },
                Kind::Event => Some(JobUpdate::Result(target_result(env))),
                Kind::Reply if env.error.is_none() => {
                    self.done = true;
                    let summary =
                        env.json_body::<JobSummary>().unwrap_or_else(|_| JobSummary::empty(self.accepted.job.clone()));
                    Some(JobUpdate::Done(summary))
                }
                _ => {
                    self.done = true;
                    None
                }
            };
        }
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        self.client.unregister(self.waiter);
    }
}

fn target_result(env: Envelope) -> TargetResult {
    let status = env.status.unwrap_or(Status::Error);
    let result = match (status, env.body) {
        (Status::Ok, Some(b)) => raw(&b),
        _ => None,
    };
    let error = match (status, env.error) {
        (Status::Ok, _) => None,
        (_, Some(e)) => Some(e),
        // Held for the device (a job with a TTL): its outcome is stored when it comes.
        (Status::Queued, None) => Some(ErrorBody::new(
            ErrorCode::Other(status.as_str().to_owned()),
            "held for the device: delivered when it connects, its outcome stored then",
        )),
        (_, None) => Some(ErrorBody::new(ErrorCode::Other(status.as_str().to_owned()), status.as_str())),
    };
    TargetResult {
        device: env.device.unwrap_or_default(),
        status,
        result,
        error,
        elapsed_ms: env.elapsed_ms,
        late: None,
    }
}

fn raw(b: &Bytes) -> Option<Box<RawValue>> {
    std::str::from_utf8(b).ok().and_then(|s| RawValue::from_string(s.to_owned()).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use orb_proto::Kind;

    fn event(status: Status) -> Envelope {
        let mut env = Envelope::new(Kind::Event);
        env.device = Some("d-1".to_owned());
        env.status = Some(status);
        env
    }

    #[test]
    fn a_queued_target_says_what_happens_to_it_and_others_name_their_status() {
        let queued = target_result(event(Status::Queued));
        let e = queued.error.expect("a detail");
        assert_eq!(e.code.as_str(), "queued");
        assert!(e.message.contains("delivered when it connects"), "{}", e.message);
        let offline = target_result(event(Status::Offline)).error.expect("a detail");
        assert_eq!((offline.code.as_str(), offline.message.as_str()), ("offline", "offline"));
        assert!(target_result(event(Status::Ok)).error.is_none());
    }
}

//! A job's progress on `$orb.job.<id>` (pub/sub): each target's outcome as it becomes known and
//! the job's end with its summary, published by the job's task for whoever subscribed (operators:
//! `$orb.` topics are theirs). Nothing is built when nobody is subscribed.

use std::sync::Arc;

use bytes::Bytes;
use orb_proto::DeviceId;
use orb_proto::message::JobSummary;
use orb_proto::topic::Topic;

use super::inbox::Outcome;
use crate::router::topics::Topics;

/// Where one job publishes its progress.
pub(crate) struct Progress {
    topics: Arc<Topics>,
    /// `$orb.job.<id>` (`None` for an id that is not a topic segment: nothing is published).
    topic: Option<Topic>,
    job: String,
}

impl Progress {
    /// The progress of job `job`.
    pub(crate) fn new(topics: Arc<Topics>, job: &str) -> Progress {
        Progress { topics, topic: Topic::parse(&format!("$orb.job.{job}")).ok(), job: job.to_owned() }
    }

    /// A target's outcome: `{"job", "device", "status", "elapsed_ms", "error"}`.
    pub(crate) fn settled(&self, device: &DeviceId, outcome: &Outcome, elapsed_ms: Option<u64>) {
        let Some(topic) = &self.topic else { return };
        self.topics.publish(topic, "$server", || {
            let error = outcome.error();
            json(&serde_json::json!({
                "job": self.job, "device": device.as_str(), "status": outcome.status(),
                "elapsed_ms": elapsed_ms, "error": error,
            }))
        });
    }

    /// An "any one of" job's command moved from `from` (its session ended for `reason` before
    /// it answered) to `to`: `{"job", "moved": {"from", "to", "reason"}}`.
    pub(crate) fn moved(&self, from: &DeviceId, to: &DeviceId, reason: &str) {
        let Some(topic) = &self.topic else { return };
        self.topics.publish(topic, "$server", || {
            json(&serde_json::json!({
                "job": self.job, "moved": {"from": from.as_str(), "to": to.as_str(), "reason": reason},
            }))
        });
    }

    /// The job's end: `{"job", "ended": true, "summary", "skipped", "aborted"}`.
    pub(crate) fn ended(&self, summary: &JobSummary) {
        let Some(topic) = &self.topic else { return };
        self.topics.publish(topic, "$server", || {
            json(&serde_json::json!({
                "job": self.job, "ended": true, "summary": summary.summary,
                "skipped": summary.skipped, "aborted": summary.aborted,
            }))
        });
    }
}

fn json(v: &serde_json::Value) -> Option<Bytes> {
    Some(Bytes::from(serde_json::to_vec(v).expect("a JSON value serialises")))
}

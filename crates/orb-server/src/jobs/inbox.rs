//! A job's inbox: where the correlation table hands the job's replies (`JobReplies`) and where a
//! closing session tells that a command never left its queue (`Undelivered`). It maps a device
//! to its target slot and lets only the first outcome of each target through (one atomic swap),
//! so the channel to the job's task holds at most one message per target.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use bytes::Bytes;
use orb_io::queue::Undelivered;
use orb_proto::{DeviceId, ErrorBody, ErrorCode, Status};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::router::correlation::{Answer, JobReplies, ProgressSink, Progressed};

/// What one target ended with, before it becomes an event and a stored result.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// Result JSON.
    Ok(Bytes),
    /// Error reply, or a delivery failure with its code.
    Error(ErrorBody),
    /// Not delivered: the device was not connected, or its session closed before the command
    /// left the server.
    Offline,
    /// Not answered in time: the deadline passed, the server stopped, or the device itself gave
    /// up at the deadline (it answered `timeout`).
    Timeout(ErrorBody),
    /// Pending when the job was cancelled.
    Cancelled,
    /// A staged job's target never started (status `cancelled`): the rollout was aborted or the
    /// server is stopping; the error says which.
    NotStarted(ErrorBody),
    /// Not connected; the command is held for it (a job with a TTL) and delivered when it
    /// connects: its outcome is stored then.
    Queued,
    /// The requester's access rules do not reach it (code `forbidden`): nothing was sent.
    Denied(ErrorBody),
}

impl Outcome {
    /// A device's answer: an error with code `timeout` means the device gave up at the deadline,
    /// which is the same cause as no answer at all, so it is status `timeout` too.
    pub(crate) fn of_answer(answer: Answer) -> Outcome {
        match answer {
            Ok(body) => Outcome::Ok(body),
            Err(e) if e.code == ErrorCode::Timeout => Outcome::Timeout(e),
            Err(e) => Outcome::Error(e),
        }
    }

    /// The device's answer this outcome came from; `None` for outcomes the broker decided
    /// (offline, cancelled, denied).
    pub(crate) fn into_answer(self) -> Option<Answer> {
        match self {
            Outcome::Ok(body) => Some(Ok(body)),
            Outcome::Error(e) | Outcome::Timeout(e) => Some(Err(e)),
            Outcome::Offline | Outcome::Cancelled | Outcome::NotStarted(_) | Outcome::Queued | Outcome::Denied(_) => {
                None
            }
        }
    }

    pub(crate) fn status(&self) -> Status {
        match self {
            Outcome::Ok(_) => Status::Ok,
            Outcome::Error(_) => Status::Error,
            Outcome::Offline => Status::Offline,
            Outcome::Timeout(_) => Status::Timeout,
            Outcome::Cancelled | Outcome::NotStarted(_) => Status::Cancelled,
            Outcome::Queued => Status::Queued,
            Outcome::Denied(_) => Status::Denied,
        }
    }

    /// The error a non-`ok` outcome carries as its detail.
    pub(crate) fn error(&self) -> Option<ErrorBody> {
        match self {
            Outcome::Ok(_) => None,
            Outcome::Error(e) | Outcome::Timeout(e) | Outcome::Denied(e) | Outcome::NotStarted(e) => Some(e.clone()),
            Outcome::Offline => Some(ErrorBody::new(ErrorCode::DeviceOffline, "the device was not connected")),
            Outcome::Cancelled => Some(ErrorBody::new(ErrorCode::Cancelled, "the job was cancelled")),
            Outcome::Queued => None,
        }
    }
}

/// What the job's task is told.
pub(crate) enum JobMsg {
    /// A target's outcome.
    Answer {
        /// Its slot.
        index: usize,
        /// When the device answered; `None` when it never got the command (no `elapsed_ms`).
        at: Option<Instant>,
        /// The outcome.
        outcome: Outcome,
        /// Recorded already (a held command's outcome, stored by its delivery loop): only told.
        recorded: bool,
    },
    /// Cancel every pending target; answer with their ids.
    Cancel(oneshot::Sender<Vec<String>>),
}

/// The receiving side of a job.
pub(crate) struct JobInbox {
    index: HashMap<DeviceId, usize>,
    answered: Vec<AtomicBool>,
    tx: mpsc::UnboundedSender<JobMsg>,
    /// An "any one of" job's one target: the device its command went to last (it moves when
    /// that one disconnects); answers from any other device are ignored.
    one: Option<std::sync::Mutex<DeviceId>>,
    /// Where the targets' `progress` goes, when the requester asked for it.
    progress: Option<std::sync::Arc<dyn ProgressSink>>,
}

impl JobInbox {
    /// An inbox for `targets` (in slot order), feeding `tx`.
    pub(crate) fn new(targets: impl Iterator<Item = DeviceId>, tx: mpsc::UnboundedSender<JobMsg>) -> JobInbox {
        let index: HashMap<DeviceId, usize> = targets.enumerate().map(|(i, d)| (d, i)).collect();
        let answered = (0..index.len()).map(|_| AtomicBool::new(false)).collect();
        JobInbox { index, answered, tx, one: None, progress: None }
    }

    /// The same inbox passing its pending targets' progress to `sink`.
    pub(crate) fn with_progress(mut self, sink: Option<std::sync::Arc<dyn ProgressSink>>) -> JobInbox {
        self.progress = sink;
        self
    }

    /// The inbox of an "any one of" job whose one target is `device` for now.
    pub(crate) fn one_of(device: DeviceId, tx: mpsc::UnboundedSender<JobMsg>) -> JobInbox {
        JobInbox {
            index: HashMap::new(),
            answered: vec![AtomicBool::new(false)],
            tx,
            one: Some(std::sync::Mutex::new(device)),
            progress: None,
        }
    }

    /// An "any one of" job's target moves to `device`: only its answer counts from now on.
    /// False (and nothing moves) when the current device's answer came meanwhile: decided under
    /// the same lock as an answer's, so an answer is never credited to the device moved to.
    pub(crate) fn move_one(&self, device: DeviceId) -> bool {
        let Some(one) = &self.one else { return false };
        let mut current = one.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.is_answered(0) {
            return false;
        }
        *current = device;
        true
    }

    /// Whether target `index` has an outcome (it may still be on its way to the task).
    pub(crate) fn is_answered(&self, index: usize) -> bool {
        self.answered.get(index).is_some_and(|a| a.load(Ordering::Acquire))
    }

    /// Settles `device`'s target (`recorded`: with an outcome recorded already) unless it has an
    /// outcome. For an "any one of" job, only the current device's, checked under the lock a
    /// move takes.
    fn settle_device(&self, device: &DeviceId, at: Option<Instant>, outcome: Outcome, recorded: bool) -> bool {
        let _current = match &self.one {
            Some(one) => {
                let current = one.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                if *current != *device {
                    return false;
                }
                Some(current)
            }
            None => None,
        };
        let index = if self.one.is_some() {
            0
        } else {
            match self.index.get(device) {
                Some(i) => *i,
                None => return false,
            }
        };
        let Some(flag) = self.answered.get(index) else { return false };
        if !flag.swap(true, Ordering::AcqRel) {
            let _ = self.tx.send(JobMsg::Answer { index, at, outcome, recorded });
        }
        true
    }

    /// Settles target `index` unless it already has an outcome.
    pub(crate) fn settle(&self, index: usize, at: Option<Instant>, outcome: Outcome) {
        let Some(flag) = self.answered.get(index) else { return };
        if flag.swap(true, Ordering::AcqRel) {
            return;
        }
        let _ = self.tx.send(JobMsg::Answer { index, at, outcome, recorded: false });
    }

    /// Settles `device`'s target with an outcome that is recorded already, unless it has one.
    pub(crate) fn settle_recorded(&self, device: &DeviceId, at: Option<Instant>, outcome: Outcome) {
        self.settle_device(device, at, outcome, true);
    }

    /// Asks the job's task to cancel every pending target; the receiver gets their ids (it fails
    /// when the job ended meanwhile).
    pub(crate) fn cancel(&self) -> oneshot::Receiver<Vec<String>> {
        let (tx, rx) = oneshot::channel();
        let _ = self.tx.send(JobMsg::Cancel(tx));
        rx
    }
}

impl JobReplies for JobInbox {
    fn answer(&self, from: &DeviceId, answer: Answer, at: Instant) {
        if !self.settle_device(from, Some(at), Outcome::of_answer(answer), false) {
            tracing::debug!(agent.id = %from, "reply from a device that is not a target ignored");
        }
    }

    fn progress(&self, from: &DeviceId, job: &str, body: Bytes) -> Progressed {
        let Some(sink) = &self.progress else { return Progressed::NotPending };
        let index = match &self.one {
            // An "any one of" job: only the device its command is with now.
            Some(one) if *one.lock().unwrap_or_else(std::sync::PoisonError::into_inner) == *from => 0,
            Some(_) => return Progressed::NotPending,
            None => match self.index.get(from) {
                Some(i) => *i,
                None => return Progressed::NotPending,
            },
        };
        if self.is_answered(index) {
            return Progressed::NotPending;
        }
        sink.progress(Some(job), from, body)
    }
}

impl Undelivered for JobInbox {
    fn undelivered(&self, slot: u32) {
        // An "any one of" job watches its device's session itself and moves the command on.
        if self.one.is_some() {
            return;
        }
        self.settle(slot as usize, None, Outcome::Offline);
    }
}

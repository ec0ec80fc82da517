//! Jobs: one command fanned out to every device a selector matches. [`submit`] resolves the
//! targets, encodes the command frame once per codec in use among them (at most one JSON and one
//! MessagePack encoding per job) and queues the shared bytes to each session; replies
//! land in the job's [`JobInbox`] (no global lock: a lookup and one atomic swap per reply); one
//! task per job turns them into `event` frames for the requester, flow-controlled per job, and
//! ends the job with a summary when every target has answered or the deadline passed (or early,
//! without a summary, when the requester's session has ended).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use orb_proto::message::{JobAccepted, JobSummary};
use orb_proto::{Codec, DeviceId, Envelope, ErrorBody, ErrorCode, Kind, Status};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use crate::router::{DeliveryError, Outbox, Router};

/// What one target ended with, before it becomes an `event`.
#[derive(Debug)]
enum Outcome {
    /// Result JSON.
    Ok(Bytes),
    /// Error reply, or a delivery failure with its code.
    Error(ErrorBody),
    /// Not delivered: the session was gone.
    Offline,
    /// Delivered, not answered before the deadline.
    Timeout,
}

struct Answer {
    index: usize,
    at: Instant,
    outcome: Outcome,
}

/// The receiving side of a job, shared with the router: maps a replying device to its target
/// slot and lets only the first answer of each target through.
pub struct JobInbox {
    index: HashMap<DeviceId, usize>,
    answered: Vec<AtomicBool>,
    tx: mpsc::UnboundedSender<Answer>,
}

impl JobInbox {
    /// Records device `from`'s reply. Replies from non-targets and second replies are ignored,
    /// so the channel holds at most one message per target.
    pub fn answer_from(&self, from: &DeviceId, env: Envelope, at: Instant) {
        let Some(&index) = self.index.get(from) else {
            tracing::debug!(agent.id = %from, "reply from a device that is not a target ignored");
            return;
        };
        let outcome = match env.error {
            Some(e) => Outcome::Error(e),
            None => Outcome::Ok(env.body.unwrap_or_else(|| Bytes::from_static(b"null"))),
        };
        self.settle(index, at, outcome);
    }

    fn settle(&self, index: usize, at: Instant, outcome: Outcome) {
        if self.answered[index].swap(true, Ordering::AcqRel) {
            return;
        }
        let _ = self.tx.send(Answer { index, at, outcome });
    }
}

/// The pure state of a job's targets: which ended how. No I/O, no clock.
#[derive(Debug, Clone)]
pub struct JobState {
    statuses: Vec<Option<Status>>,
    remaining: usize,
}

impl JobState {
    /// A job with `n` targets, all pending.
    pub fn new(n: usize) -> JobState {
        JobState { statuses: vec![None; n], remaining: n }
    }

    /// Moves target `i` to a final status. Returns false (and changes nothing) when it already
    /// has one: a final status never changes.
    pub fn settle(&mut self, i: usize, status: Status) -> bool {
        match self.statuses.get_mut(i) {
            Some(slot @ None) => {
                *slot = Some(status);
                self.remaining -= 1;
                true
            }
            _ => false,
        }
    }

    /// The deadline passed: every pending target becomes `timeout`. Returns their indices.
    pub fn expire(&mut self) -> Vec<usize> {
        let pending: Vec<usize> =
            self.statuses.iter().enumerate().filter(|(_, s)| s.is_none()).map(|(i, _)| i).collect();
        for &i in &pending {
            self.settle(i, Status::Timeout);
        }
        pending
    }

    /// Whether every target has a final status.
    pub fn is_done(&self) -> bool {
        self.remaining == 0
    }

    /// Count per status (every status present).
    pub fn summary(&self, job: String) -> JobSummary {
        let mut s = JobSummary::empty(job);
        for st in self.statuses.iter().flatten() {
            *s.summary.entry(*st).or_insert(0) += 1;
        }
        s
    }
}

/// A job as submitted by a session.
pub struct JobRequest {
    /// Requester's name (device id or operator session), sent to targets as `from`.
    pub requester_name: String,
    /// Where acks, events and the final reply go.
    pub requester: Outbox,
    /// The requester's id for its `cmd` (becomes `re` of everything sent back).
    pub re: String,
    /// Command name.
    pub cmd: String,
    /// Target selector text.
    pub target: String,
    /// Raw JSON arguments.
    pub body: Option<Bytes>,
    /// Time until pending targets become `timeout`.
    pub deadline: Duration,
}

/// Starts a job: resolve, register, dispatch, and spawn its task on `tracker`.
///
/// # Errors
/// `bad_selector`, `unknown_group` or `no_match`; nothing is sent then.
pub fn submit(router: &Arc<Router>, tracker: &TaskTracker, req: JobRequest) -> Result<(), ErrorBody> {
    let sel = router.parse_selector(&req.target)?;
    let targets = router.resolve(&sel);
    if targets.is_empty() {
        return Err(ErrorBody::new(ErrorCode::NoMatch, format!("no connected device matches '{}'", req.target)));
    }
    let job_id = uuid::Uuid::now_v7().to_string();
    let (tx, rx) = mpsc::unbounded_channel();
    let inbox = Arc::new(JobInbox {
        index: targets.iter().enumerate().map(|(i, t)| (t.record.id.clone(), i)).collect(),
        answered: (0..targets.len()).map(|_| AtomicBool::new(false)).collect(),
        tx,
    });
    router.open_job(job_id.clone(), Arc::clone(&inbox));

    let deadline_ms = u64::try_from(req.deadline.as_millis()).unwrap_or(u64::MAX);
    let mut cmd = Envelope::new(Kind::Cmd);
    cmd.id = Some(job_id.clone());
    cmd.job = Some(job_id.clone());
    cmd.cmd = Some(req.cmd);
    cmd.from = Some(req.requester_name);
    cmd.deadline_ms = Some(deadline_ms);
    cmd.body = req.body;
    let mut frames = EncodedOnce::new(&cmd); // one encoding per codec, shared by every target using it

    let started = Instant::now();
    for (i, t) in targets.iter().enumerate() {
        match t.outbox.deliver(frames.get(t.outbox.codec)) {
            Ok(()) => {}
            Err(DeliveryError::Closed) => inbox.settle(i, started, Outcome::Offline),
            Err(DeliveryError::SlowConsumer) => inbox.settle(
                i,
                started,
                Outcome::Error(ErrorBody::new(
                    ErrorCode::SlowConsumer,
                    "the device's queue was full; it was disconnected",
                )),
            ),
        }
    }

    let accepted = JobAccepted {
        job: job_id.clone(),
        targets: targets.iter().map(|t| t.record.id.to_string()).collect(),
        deadline_ms,
    };
    let mut ack = Envelope::new(Kind::Ack).with_json_body(&accepted);
    ack.re = Some(req.re.clone());
    ack.job = Some(job_id.clone());
    let codec = req.requester.codec;
    let run = JobRun {
        router: Arc::clone(router),
        devices: accepted.targets,
        job_id,
        re: req.re,
        requester: Some(req.requester),
        codec,
        started,
        deadline: started + req.deadline,
        rx,
        out: VecDeque::from([codec.encode(&ack)]),
    };
    drop(inbox);
    tracker.spawn(run.run());
    Ok(())
}

/// A job's command frame, encoded lazily at most once per codec: every target using a codec gets
/// the same `Bytes` (a reference count, not a copy), and a codec no target uses costs nothing.
struct EncodedOnce<'a> {
    env: &'a Envelope,
    json: Option<Bytes>,
    msgpack: Option<Bytes>,
}

impl<'a> EncodedOnce<'a> {
    fn new(env: &'a Envelope) -> EncodedOnce<'a> {
        EncodedOnce { env, json: None, msgpack: None }
    }

    fn get(&mut self, codec: Codec) -> Bytes {
        let env = self.env;
        let slot = match codec {
            Codec::Json => &mut self.json,
            Codec::MsgPack => &mut self.msgpack,
        };
        slot.get_or_insert_with(|| codec.encode(env)).clone()
    }
}

struct JobRun {
    router: Arc<Router>,
    devices: Vec<String>,
    job_id: String,
    re: String,
    requester: Option<Outbox>,
    /// The requester's codec: every frame in `out` is encoded with it.
    codec: Codec,
    started: Instant,
    deadline: Instant,
    rx: mpsc::UnboundedReceiver<Answer>,
    /// Frames for the requester not yet queued: bounded by targets + 2 (ack, final reply).
    out: VecDeque<Bytes>,
}

impl JobRun {
    async fn run(mut self) {
        let mut state = JobState::new(self.devices.len());
        let deadline = tokio::time::sleep_until(self.deadline);
        tokio::pin!(deadline);
        let mut finished = false;
        loop {
            if finished && (self.out.is_empty() || self.requester.is_none()) {
                break;
            }
            let requester = self.requester.clone();
            tokio::select! {
                biased;
                // Cancel safety: `space` takes nothing; pending frames stay in `out` until queued.
                room = space(requester.as_ref()), if !self.out.is_empty() && requester.is_some() => {
                    let Some(outbox) = requester.as_ref().filter(|_| room) else { break };
                    // Results take at most half the requester's queue, leaving the rest for its
                    // other traffic: a big job never makes its own requester a slow consumer.
                    let limit = outbox.tx.capacity().div_ceil(2);
                    while let Some(f) = self.out.pop_front() {
                        outbox.trace_out(&f);
                        match outbox.tx.try_send_below(f, limit) {
                            Ok(()) => {}
                            Err(orb_client::queue::TrySendError::Full(f)) => {
                                self.out.push_front(f);
                                break;
                            }
                            Err(orb_client::queue::TrySendError::Closed(_)) => break,
                        }
                    }
                }
                // Nobody is left to report to (the requester's session ended, e.g. at shutdown):
                // stop waiting for answers; late replies are then ignored.
                () = gone(requester.as_ref()), if requester.is_some() => break,
                Some(a) = self.rx.recv(), if !finished => {
                    if state.settle(a.index, status_of(&a.outcome)) {
                        let elapsed = a.at.saturating_duration_since(self.started);
                        self.push_event(a.index, a.outcome, Some(elapsed));
                    }
                    if state.is_done() {
                        finished = true;
                        self.push_final(&state);
                    }
                }
                () = &mut deadline, if !finished => {
                    for i in state.expire() {
                        self.push_event(i, Outcome::Timeout, None);
                    }
                    finished = true;
                    self.push_final(&state);
                }
            }
        }
        self.router.close_job(&self.job_id);
    }

    fn push_event(&mut self, index: usize, outcome: Outcome, elapsed: Option<Duration>) {
        let mut ev = Envelope::new(Kind::Event);
        ev.re = Some(self.re.clone());
        ev.job = Some(self.job_id.clone());
        ev.device = Some(self.devices[index].clone());
        ev.elapsed_ms = elapsed.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        ev.status = Some(status_of(&outcome));
        match outcome {
            Outcome::Ok(body) => ev.body = Some(body),
            Outcome::Error(e) => ev.error = Some(e),
            Outcome::Offline => {
                ev.error = Some(ErrorBody::new(ErrorCode::DeviceOffline, "device disconnected before delivery"));
            }
            Outcome::Timeout => {
                let ms = self.deadline.duration_since(self.started).as_millis();
                ev.error = Some(ErrorBody::new(ErrorCode::Timeout, format!("no answer within {ms} ms")));
            }
        }
        if self.requester.is_some() {
            self.out.push_back(self.codec.encode(&ev));
        }
    }

    fn push_final(&mut self, state: &JobState) {
        let summary = state.summary(self.job_id.clone());
        let mut env = Envelope::new(Kind::Reply).with_json_body(&summary);
        env.re = Some(self.re.clone());
        env.job = Some(self.job_id.clone());
        if self.requester.is_some() {
            self.out.push_back(self.codec.encode(&env));
        }
    }
}

fn status_of(o: &Outcome) -> Status {
    match o {
        Outcome::Ok(_) => Status::Ok,
        Outcome::Error(_) => Status::Error,
        Outcome::Offline => Status::Offline,
        Outcome::Timeout => Status::Timeout,
    }
}

/// Resolves when the requester's session can no longer receive anything.
async fn gone(outbox: Option<&Outbox>) {
    match outbox {
        Some(o) => o.tx.closed().await,
        None => std::future::pending().await,
    }
}

/// Whether the requester's queue has room (false: it is gone).
async fn space(outbox: Option<&Outbox>) -> bool {
    match outbox {
        Some(o) => o.tx.space_below(o.tx.capacity().div_ceil(2)).await.is_ok(),
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_settles_once() {
        let mut s = JobState::new(2);
        assert!(s.settle(0, Status::Ok));
        assert!(!s.settle(0, Status::Error));
        assert!(!s.is_done());
        assert!(s.settle(1, Status::Error));
        assert!(s.is_done());
        let sum = s.summary("j".into());
        assert_eq!(sum.summary[&Status::Ok], 1);
        assert_eq!(sum.summary[&Status::Error], 1);
        assert_eq!(sum.summary.len(), Status::ALL.len());
    }

    #[test]
    fn expiry_times_out_only_pending_targets() {
        let mut s = JobState::new(3);
        s.settle(1, Status::Ok);
        assert_eq!(s.expire(), vec![0, 2]);
        assert!(s.is_done());
        assert_eq!(s.summary("j".into()).summary[&Status::Timeout], 2);
        assert!(s.expire().is_empty());
    }

    #[test]
    fn the_command_is_encoded_once_per_codec_and_shared() {
        let mut env = Envelope::new(Kind::Cmd);
        env.id = Some("j".into());
        env.body = Some(Bytes::from_static(br#"{"x":1}"#));
        let mut frames = EncodedOnce::new(&env);
        assert!(frames.json.is_none() && frames.msgpack.is_none(), "nothing is encoded up front");
        let a = frames.get(Codec::MsgPack);
        assert!(frames.json.is_none(), "a codec no target uses is never encoded");
        let b = frames.get(Codec::MsgPack);
        assert_eq!(a.as_ptr(), b.as_ptr(), "the same bytes, shared");
        let j1 = frames.get(Codec::Json);
        let j2 = frames.get(Codec::Json);
        assert_eq!(j1.as_ptr(), j2.as_ptr());
        assert_eq!(orb_proto::decode(&j1).ok(), Codec::MsgPack.decode(&a).ok());
    }

    #[test]
    fn out_of_range_index_changes_nothing() {
        let mut s = JobState::new(1);
        assert!(!s.settle(5, Status::Ok));
        assert!(!s.is_done());
    }
}

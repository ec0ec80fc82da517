//! Jobs: one command fanned out to every known device a selector matches. [`submit`] resolves
//! the targets (offline ones end at once as `offline`), encodes the command frame once per codec
//! in use among them (at most one JSON and one MessagePack encoding per job) and queues the
//! shared bytes to each connected target's session; replies land in the job's [`JobInbox`] (no
//! global lock: a lookup and one atomic swap per reply); one task per job turns them into `event`
//! frames for the requester, flow-controlled per job, records the job and every outcome in the
//! store's batched recorder, and ends the job with a summary when every target has answered, the
//! deadline passed or an operator cancelled it. A requester that goes away stops receiving
//! frames; the job still runs to its end and its results are stored.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use orb_proto::history::JobPhase;
use orb_proto::message::{JobAccepted, JobSummary};
use orb_proto::{Codec, DeviceId, Envelope, ErrorBody, ErrorCode, Kind, Status};
use orb_store::{JobEnd, NewJob, NewTarget, Record, Recorder, TargetOutcome};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::router::{DeliveryError, Outbox, Router};

/// What one target ended with, before it becomes an `event`.
#[derive(Debug)]
enum Outcome {
    /// Result JSON.
    Ok(Bytes),
    /// Error reply, or a delivery failure with its code.
    Error(ErrorBody),
    /// Not delivered: the device was not connected.
    Offline,
    /// Delivered, not answered before the deadline (or before the server stopped).
    Timeout(ErrorBody),
    /// Pending when an operator cancelled the job.
    Cancelled,
}

impl Outcome {
    fn status(&self) -> Status {
        match self {
            Outcome::Ok(_) => Status::Ok,
            Outcome::Error(_) => Status::Error,
            Outcome::Offline => Status::Offline,
            Outcome::Timeout(_) => Status::Timeout,
            Outcome::Cancelled => Status::Cancelled,
        }
    }
}

/// The error an offline target ends with.
fn offline_error() -> ErrorBody {
    ErrorBody::new(ErrorCode::DeviceOffline, "the device was not connected")
}

/// The error a cancelled target ends with.
fn cancelled_error() -> ErrorBody {
    ErrorBody::new(ErrorCode::Cancelled, "the job was cancelled")
}

/// What the job's task is told.
enum JobMsg {
    /// A target's outcome.
    Answer(Answer),
    /// An operator cancelled the job: answer with the targets that were still pending.
    Cancel(oneshot::Sender<Vec<String>>),
}

struct Answer {
    index: usize,
    /// When the device answered; `None` when it never got the command (so no `elapsed_ms`).
    at: Option<Instant>,
    outcome: Outcome,
}

/// The receiving side of a job, shared with the router: maps a replying device to its target
/// slot and lets only the first answer of each target through.
pub struct JobInbox {
    index: HashMap<DeviceId, usize>,
    answered: Vec<AtomicBool>,
    tx: mpsc::UnboundedSender<JobMsg>,
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
        self.settle(index, Some(at), outcome);
    }

    fn settle(&self, index: usize, at: Option<Instant>, outcome: Outcome) {
        if self.answered[index].swap(true, Ordering::AcqRel) {
            return;
        }
        let _ = self.tx.send(JobMsg::Answer(Answer { index, at, outcome }));
    }

    /// Asks the job's task to cancel every pending target; resolves to those targets' ids
    /// (`None` when the job ended meanwhile).
    pub async fn cancel(&self) -> Option<Vec<String>> {
        let (tx, rx) = oneshot::channel();
        self.tx.send(JobMsg::Cancel(tx)).ok()?;
        rx.await.ok()
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

    /// Indices of the targets without a final status.
    pub fn pending(&self) -> Vec<usize> {
        self.statuses.iter().enumerate().filter(|(_, s)| s.is_none()).map(|(i, _)| i).collect()
    }

    /// The deadline passed: every pending target becomes `timeout`. Returns their indices.
    pub fn expire(&mut self) -> Vec<usize> {
        let pending = self.pending();
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
pub fn submit(
    router: &Arc<Router>,
    tracker: &TaskTracker,
    shutdown: &CancellationToken,
    req: JobRequest,
) -> Result<(), ErrorBody> {
    let sel = router.parse_selector(&req.target)?;
    let targets = router.resolve(&sel);
    if targets.is_empty() {
        return Err(ErrorBody::new(ErrorCode::NoMatch, format!("no known device matches '{}'", req.target)));
    }
    let job_id = uuid::Uuid::now_v7().to_string();
    let (tx, rx) = mpsc::unbounded_channel();
    let inbox = Arc::new(JobInbox {
        index: targets.iter().enumerate().map(|(i, t)| (t.id.clone(), i)).collect(),
        answered: (0..targets.len()).map(|_| AtomicBool::new(false)).collect(),
        tx,
    });
    router.open_job(job_id.clone(), Arc::clone(&inbox));

    let deadline_ms = u64::try_from(req.deadline.as_millis()).unwrap_or(u64::MAX);
    let created_at = Utc::now();
    let record = NewJob {
        id: job_id.clone(),
        requester: req.requester_name.clone(),
        selector: req.target.clone(),
        command: req.cmd.clone(),
        args: req.body.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()),
        created_at,
        deadline_at: created_at + chrono::Duration::from_std(req.deadline).unwrap_or(chrono::Duration::MAX),
        // Filled by the job's task, after the command has gone out.
        targets: Vec::new(),
    };
    let mut cmd = Envelope::new(Kind::Cmd);
    cmd.id = Some(job_id.clone());
    cmd.job = Some(job_id.clone());
    cmd.cmd = Some(req.cmd);
    cmd.from = Some(req.requester_name);
    cmd.deadline_ms = Some(deadline_ms);
    cmd.body = req.body;
    let mut frames = EncodedOnce::new(&cmd); // one encoding per codec, shared by every target using it

    let started = Instant::now();
    let mut delivered = Vec::with_capacity(targets.len());
    for (i, t) in targets.iter().enumerate() {
        let Some(session) = &t.session else {
            inbox.settle(i, None, Outcome::Offline);
            delivered.push(None);
            continue;
        };
        match session.outbox.deliver(frames.get(session.outbox.codec)) {
            Ok(()) => delivered.push(Some(session.outbox.clone())),
            Err(DeliveryError::Closed) => {
                inbox.settle(i, None, Outcome::Offline);
                delivered.push(None);
            }
            Err(DeliveryError::SlowConsumer) => {
                inbox.settle(
                    i,
                    None,
                    Outcome::Error(ErrorBody::new(
                        ErrorCode::SlowConsumer,
                        "the device's queue was full; it was disconnected",
                    )),
                );
                delivered.push(None);
            }
        }
    }

    let accepted =
        JobAccepted { job: job_id.clone(), targets: targets.iter().map(|t| t.id.to_string()).collect(), deadline_ms };
    let mut ack = Envelope::new(Kind::Ack).with_json_body(&accepted);
    ack.re = Some(req.re.clone());
    ack.job = Some(job_id.clone());
    let codec = req.requester.codec;
    let run = JobRun {
        router: Arc::clone(router),
        recorder: router.registry().recorder().clone(),
        record: Some(record),
        devices: accepted.targets,
        delivered,
        job_id,
        re: req.re,
        requester: Some(req.requester),
        codec,
        started,
        deadline: started + req.deadline,
        shutdown: shutdown.clone(),
        rx,
        out: VecDeque::from([codec.encode(&ack)]),
        unrecorded: Vec::new(),
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
    recorder: Recorder,
    /// The job's record (its targets added from `devices`), stored when the task starts.
    record: Option<NewJob>,
    devices: Vec<String>,
    /// Where each target's command was queued (to send `cancel`); `None` when not delivered.
    delivered: Vec<Option<Outbox>>,
    job_id: String,
    re: String,
    /// `None` once the requester's session is gone: the job goes on, unreported.
    requester: Option<Outbox>,
    /// The requester's codec: every frame in `out` is encoded with it.
    codec: Codec,
    started: Instant,
    deadline: Instant,
    /// The server is stopping: pending targets end as `timeout` at once.
    shutdown: CancellationToken,
    rx: mpsc::UnboundedReceiver<JobMsg>,
    /// Frames for the requester not yet queued: bounded by targets + 2 (ack, final reply).
    out: VecDeque<Bytes>,
    /// Outcomes not yet handed to the recorder: written together once no answer is waiting.
    unrecorded: Vec<TargetOutcome>,
}

/// Outcomes handed to the recorder at once: a full batch makes full, cached bulk statements.
const RECORD_BATCH: usize = 1000;
/// Outcomes of a job that is still running are handed to the recorder at least this often.
const RECORD_EVERY: Duration = Duration::from_millis(250);

impl JobRun {
    async fn run(mut self) {
        if let Some(mut record) = self.record.take() {
            record.targets =
                self.devices.iter().map(|d| NewTarget { device: d.clone(), status: None, error: None }).collect();
            self.recorder.record(Record::JobCreated(record)).await;
        }
        let mut state = JobState::new(self.devices.len());
        let deadline = tokio::time::sleep_until(self.deadline);
        tokio::pin!(deadline);
        let shutdown = self.shutdown.clone();
        let stopping = shutdown.cancelled();
        tokio::pin!(stopping);
        // Outcomes go to the store in batches: when a batch is full, every RECORD_EVERY, at the end.
        let mut record_tick = tokio::time::interval_at(Instant::now() + RECORD_EVERY, RECORD_EVERY);
        record_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut finished = false;
        loop {
            if finished {
                // From now on replies are late: they go to the store as such (the router no longer
                // routes them here), while the last events still drain to the requester.
                self.router.close_job(&self.job_id);
                if self.out.is_empty() || self.requester.is_none() {
                    break;
                }
            }
            let requester = self.requester.clone();
            tokio::select! {
                biased;
                // Cancel safety: `space` takes nothing; pending frames stay in `out` until queued.
                room = space(requester.as_ref()), if !self.out.is_empty() && requester.is_some() => {
                    let Some(outbox) = requester.as_ref().filter(|_| room) else {
                        self.requester_gone();
                        continue;
                    };
                    // Results take at most half the requester's queue, leaving the rest for its
                    // other traffic: a big job never makes its own requester a slow consumer.
                    let limit = outbox.tx.capacity().div_ceil(2);
                    while let Some(f) = self.out.pop_front() {
                        outbox.trace_out(&f);
                        match outbox.tx.try_send_below(f, limit) {
                            Ok(()) => {}
                            Err(orb_io::queue::TrySendError::Full(f)) => {
                                self.out.push_front(f);
                                break;
                            }
                            Err(orb_io::queue::TrySendError::Closed(_)) => {
                                self.requester_gone();
                                break;
                            }
                        }
                    }
                }
                // Nobody is left to report to (the requester detached or its session ended): the
                // job runs on to its end, its results only stored.
                () = gone(requester.as_ref()), if requester.is_some() => self.requester_gone(),
                Some(msg) = self.rx.recv(), if !finished => match msg {
                    JobMsg::Answer(a) => {
                        let status = a.outcome.status();
                        if state.settle(a.index, status) {
                            let elapsed = a.at.map(|at| at.saturating_duration_since(self.started));
                            self.settled(a.index, a.outcome, elapsed);
                        }
                        if self.unrecorded.len() >= RECORD_BATCH {
                            self.record_outcomes().await;
                        }
                        if state.is_done() {
                            finished = true;
                            self.end(&state, JobPhase::Done, None).await;
                        }
                    }
                    JobMsg::Cancel(reply) => {
                        let cancelled = self.cancel(&mut state).await;
                        finished = true;
                        let _ = reply.send(cancelled);
                    }
                },
                () = &mut deadline, if !finished => {
                    let ms = self.deadline.duration_since(self.started).as_millis();
                    self.expire(&mut state, format!("no answer within {ms} ms")).await;
                    finished = true;
                }
                _ = record_tick.tick(), if !self.unrecorded.is_empty() => self.record_outcomes().await,
                () = &mut stopping, if !finished => {
                    self.expire(&mut state, "the server stopped before this target answered".to_owned()).await;
                    finished = true;
                }
            }
        }
        self.router.close_job(&self.job_id);
    }

    /// Every pending target becomes `timeout` with `message`; the job ends.
    async fn expire(&mut self, state: &mut JobState, message: String) {
        let timeout = ErrorBody::new(ErrorCode::Timeout, message);
        for i in state.expire() {
            self.push_event(i, &Outcome::Timeout(timeout.clone()), None);
        }
        self.end(state, JobPhase::Done, Some((Status::Timeout, timeout))).await;
    }

    fn requester_gone(&mut self) {
        self.requester = None;
        self.out.clear();
    }

    /// Every pending target becomes `cancelled`; those that were sent the command are told to
    /// stop. Returns the cancelled targets' ids.
    async fn cancel(&mut self, state: &mut JobState) -> Vec<String> {
        let pending = state.pending();
        let mut stop = Envelope::new(Kind::Cancel);
        stop.re = Some(self.job_id.clone());
        stop.job = Some(self.job_id.clone());
        for &i in &pending {
            state.settle(i, Status::Cancelled);
            self.push_event(i, &Outcome::Cancelled, None);
            if let Some(outbox) = &self.delivered[i] {
                let _ = outbox.deliver_env(&stop);
            }
        }
        self.end(state, JobPhase::Cancelled, Some((Status::Cancelled, cancelled_error()))).await;
        pending.into_iter().map(|i| self.devices[i].clone()).collect()
    }

    /// Hands the outcomes gathered so far to the recorder.
    async fn record_outcomes(&mut self) {
        if !self.unrecorded.is_empty() {
            let batch = std::mem::take(&mut self.unrecorded);
            self.recorder.record(Record::TargetsSettled(batch)).await;
        }
    }

    /// Reports one outcome to the requester and keeps it for the recorder.
    fn settled(&mut self, index: usize, outcome: Outcome, elapsed: Option<Duration>) {
        self.push_event(index, &outcome, elapsed);
        let status = outcome.status();
        let (result, error) = match outcome {
            Outcome::Ok(body) => (Some(String::from_utf8_lossy(&body).into_owned()), None),
            Outcome::Error(e) => (None, Some(e)),
            Outcome::Offline => (None, Some(offline_error())),
            Outcome::Timeout(_) | Outcome::Cancelled => return,
        };
        let outcome = TargetOutcome {
            job: self.job_id.clone(),
            device: self.devices[index].clone(),
            status,
            result,
            error,
            elapsed_ms: elapsed.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            at: Utc::now(),
            late: false,
        };
        self.unrecorded.push(outcome);
    }

    /// The final summary to the requester, and the job's end in the store.
    async fn end(&mut self, state: &JobState, phase: JobPhase, pending_become: Option<(Status, ErrorBody)>) {
        self.push_final(state);
        self.record_outcomes().await;
        let end = JobEnd { job: self.job_id.clone(), at: Utc::now(), state: phase, pending_become };
        self.recorder.record(Record::JobEnded(end)).await;
    }

    fn push_event(&mut self, index: usize, outcome: &Outcome, elapsed: Option<Duration>) {
        if self.requester.is_none() {
            return;
        }
        let mut ev = Envelope::new(Kind::Event);
        ev.re = Some(self.re.clone());
        ev.job = Some(self.job_id.clone());
        ev.device = Some(self.devices[index].clone());
        ev.elapsed_ms = elapsed.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        ev.status = Some(outcome.status());
        match outcome {
            Outcome::Ok(body) => ev.body = Some(body.clone()),
            Outcome::Error(e) => ev.error = Some(e.clone()),
            Outcome::Offline => ev.error = Some(offline_error()),
            Outcome::Cancelled => ev.error = Some(cancelled_error()),
            Outcome::Timeout(e) => ev.error = Some(e.clone()),
        }
        self.out.push_back(self.codec.encode(&ev));
    }

    fn push_final(&mut self, state: &JobState) {
        if self.requester.is_none() {
            return;
        }
        let summary = state.summary(self.job_id.clone());
        let mut env = Envelope::new(Kind::Reply).with_json_body(&summary);
        env.re = Some(self.re.clone());
        env.job = Some(self.job_id.clone());
        self.out.push_back(self.codec.encode(&env));
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

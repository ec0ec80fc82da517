//! A staged job's dispatch (decision 0015), run by the job's own task: at each wake-up its
//! timetable ([`Stages`]) says which targets are due; each is looked up among the connected
//! sessions then (not when the job started, which may be minutes earlier) and sent the command
//! frame encoded once per codec, or, in a job with a TTL, held like any other. Groups whose
//! deadline passed end `timeout` (`queued` with a TTL); a batch that ended starts the next one
//! after the batch wait, unless failures passed the abort threshold: then the targets never
//! started end `cancelled`. Each target's turn judges the requester's rights again: one they no
//! longer reach ends `denied`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use orb_proto::message::BatchStarted;
use orb_proto::rollout::Rollout;
use orb_proto::{Envelope, ErrorBody, ErrorCode, Kind, Status};
use orb_store::TargetOutcome;
use tokio::time::Instant;

use super::events::JobEvent;
use super::inbox::{JobInbox, Outcome};
use super::run::{HeldRow, JobRun};
use super::stages::Stages;
use super::state::JobState;
use crate::broker::gate::Gate;
use crate::router::delivery::DeliveryError;
use crate::router::sessions::Sessions;

/// How a staged job's summary ends the reason no more targets start.
const NOT_STARTED: &str = ": the targets not started were cancelled";

/// What a staged job needs to dispatch on its own.
pub(crate) struct Staged {
    pub(crate) stages: Stages,
    /// The command frame, before its encodings.
    cmd: Envelope,
    /// Its encoding per codec, made on first use.
    frames: [Option<Bytes>; 2],
    sessions: Arc<Sessions>,
    /// Where the targets' answers go (the command is delivered noticed by it).
    inbox: Arc<JobInbox>,
    deadline: Duration,
    /// Why no more batches start, once the abort threshold was passed.
    pub(crate) aborted: Option<String>,
    /// The requester's rights, judged again as each target's turn comes.
    gate: Gate,
}

/// What a staged job sends, and to whom.
pub(crate) struct Outgoing {
    /// The command frame, before its encodings.
    pub(crate) cmd: Envelope,
    /// Its encodings made already, per codec.
    pub(crate) frames: [Option<Bytes>; 2],
    /// The connected sessions, where each target is looked up when its turn comes.
    pub(crate) sessions: Arc<Sessions>,
    /// Where the targets' answers go.
    pub(crate) inbox: Arc<JobInbox>,
    /// The requester's rights, judged again as each target's turn comes.
    pub(crate) gate: Gate,
}

impl Staged {
    /// A staged job whose first batch starts at `start`, sending what `to` says.
    pub(crate) fn new(rollout: Rollout, deadline: Duration, start: Instant, to: Outgoing) -> Staged {
        let Outgoing { cmd, frames, sessions, inbox, gate } = to;
        let stages = Stages::new(rollout, deadline, start);
        Staged { stages, cmd, frames, sessions, inbox, deadline, aborted: None, gate }
    }

    /// The job's targets in batches of the rollout's size.
    pub(crate) fn state(&self, targets: usize) -> JobState {
        let size = self.stages.rollout.batch.map_or(targets, |b| b.of(targets));
        JobState::in_batches(targets, size)
    }
}

impl JobRun {
    /// Does what the timetable says is due now; repeated (at most once per batch, plus once)
    /// while a batch ends at once (every target offline, say) and the next starts without a
    /// wait.
    pub(crate) async fn advance_stages(&mut self, state: &mut JobState, out: &mut Vec<TargetOutcome>) {
        for _ in 0..=state.batches() {
            let now = Instant::now();
            let Some(staged) = self.staged.as_mut() else { return };
            if staged.stages.batch_ended(state) {
                let (failed, finished) = state.failed_of_finished();
                if staged.stages.rollout.should_abort(failed, finished) {
                    let pct = staged.stages.rollout.abort_on_failure_pct.unwrap_or(0);
                    let cause = format!(
                        "{failed} of {finished} targets that ran failed ({:.1}%), above the {pct}% allowed",
                        failed as f64 * 100.0 / finished as f64
                    );
                    let why = format!("{cause}{NOT_STARTED}");
                    return self.end_not_started(&why, &format!("the rollout was aborted: {cause}"), state, out);
                }
                staged.stages.schedule_next(now);
            }
            let batched = staged.stages.rollout.batch.is_some();
            let due = staged.stages.take_due(now, &self.devices, state);
            if due == super::stages::Due::default() {
                return;
            }
            if !due.expired.is_empty() {
                self.expire_group(due.expired, state, out);
            }
            // Only a job sent with a batch size hears of batches (a splay alone is one batch).
            if let Some(batch) = due.batch_started.filter(|_| batched) {
                let targets = state.batch(batch).len();
                let to_u32 = |n: usize| u32::try_from(n).unwrap_or(u32::MAX);
                self.events.push(JobEvent::Batch(BatchStarted {
                    batch: to_u32(batch + 1),
                    batches: to_u32(state.batches()),
                    targets: to_u32(targets),
                }));
            }
            if !due.dispatch.is_empty() {
                self.dispatch(due.dispatch, state, out).await;
            }
        }
    }

    /// No further target starts (the abort threshold was passed, or the server is stopping):
    /// those not started end `cancelled`, and the summary says `why` (the first reason given;
    /// each target's error says it too, without the words on the targets not started).
    pub(crate) fn cancel_not_started(&mut self, why: &str, state: &mut JobState, out: &mut Vec<TargetOutcome>) {
        let cause = why.strip_suffix(NOT_STARTED).unwrap_or(why).to_owned();
        self.end_not_started(why, &cause, state, out);
    }

    /// [`JobRun::cancel_not_started`], each target's error reading `not started: {cause}` (what
    /// the history keeps and `orb jobs show` prints: nobody cancelled the job).
    fn end_not_started(&mut self, why: &str, cause: &str, state: &mut JobState, out: &mut Vec<TargetOutcome>) {
        let Some(staged) = self.staged.as_mut() else { return };
        let rest = staged.stages.abort(state);
        if rest.is_empty() {
            return;
        }
        staged.aborted.get_or_insert_with(|| why.to_owned());
        let error = ErrorBody::new(ErrorCode::Cancelled, format!("not started: {cause}"));
        for i in rest {
            if state.settle(i, Status::Cancelled) {
                self.settled(i, Outcome::NotStarted(error.clone()), None, out);
            }
        }
    }

    /// The pending targets of a group whose deadline passed end `timeout` — `queued` in a job
    /// with a TTL (its command is held; the outcome is stored when it comes).
    fn expire_group(&mut self, group: Vec<usize>, state: &mut JobState, out: &mut Vec<TargetOutcome>) {
        let ms = self.staged.as_ref().map_or(0, |s| s.deadline.as_millis());
        let held = self.template.is_some();
        for i in group {
            let outcome = if held {
                Outcome::Queued
            } else {
                Outcome::Timeout(ErrorBody::new(ErrorCode::Timeout, format!("no answer within {ms} ms")))
            };
            if state.settle(i, outcome.status()) {
                self.settled(i, outcome, None, out);
            }
        }
    }

    /// Sends the command to targets `due` that are connected now (or holds it for each, in a
    /// job with a TTL); one that is not connected ends `offline`.
    async fn dispatch(&mut self, due: Vec<usize>, state: &mut JobState, out: &mut Vec<TargetOutcome>) {
        let Some(staged) = self.staged.as_mut() else { return };
        // A target settled already (denied at the start) is not sent anything; one the
        // requester's rules no longer reach (a token revoked, a rule changed) ends `denied`.
        let mut due = due;
        due.retain(|&i| !staged.inbox.is_answered(i));
        let mut denied = Vec::new();
        due.retain(|&i| match staged.gate.refusal(self.devices[i].as_str()) {
            Some(e) => {
                denied.push((i, e));
                false
            }
            None => true,
        });
        for (i, e) in denied {
            if state.settle(i, Status::Denied) {
                self.settled(i, Outcome::Denied(e), None, out);
            }
        }
        let Some(staged) = self.staged.as_mut() else { return };
        if let Some(template) = self.template.as_mut() {
            let mut rows = Vec::with_capacity(due.len());
            let mut refused = Vec::new();
            for i in due {
                let online = staged.sessions.is_connected(self.devices[i].as_str());
                match template.for_device(&self.devices[i]) {
                    Ok(command) => rows.push(HeldRow { slot: i, command, online, hand_to: None }),
                    Err(e) => refused.push((i, e)),
                }
            }
            for (i, e) in refused {
                if state.settle(i, Status::Error) {
                    self.settled(i, Outcome::Error(e), None, out);
                }
            }
            return self.hold_rows(rows, state, out).await;
        }
        let mut ended = Vec::new();
        for i in due {
            let Some(session) = staged.sessions.get(self.devices[i].as_str()) else {
                ended.push((i, Outcome::Offline));
                continue;
            };
            let codec = session.outbox.codec;
            let cmd = &staged.cmd;
            let frame = staged.frames[super::codec_slot(codec)].get_or_insert_with(|| codec.encode(cmd)).clone();
            if frame.len() > session.outbox.max_frame {
                let why = format!(
                    "the command frame would be {} bytes, above the device's frame limit of {} bytes",
                    frame.len(),
                    session.outbox.max_frame
                );
                ended.push((i, Outcome::Error(ErrorBody::new(ErrorCode::FrameTooLarge, why))));
                continue;
            }
            let slot = u32::try_from(i).unwrap_or(u32::MAX);
            let len = frame.len();
            match session.outbox.deliver_noticed(frame, Arc::clone(&staged.inbox) as _, slot) {
                Ok(()) => {
                    self.metrics.sent(Kind::Cmd, len);
                    self.delivered[i] = Some(session.outbox.clone());
                }
                Err(DeliveryError::Closed) => ended.push((i, Outcome::Offline)),
                Err(DeliveryError::SlowConsumer) => {
                    let e = ErrorBody::new(ErrorCode::SlowConsumer, "the device's queue was full; it was disconnected");
                    ended.push((i, Outcome::Error(e)));
                }
            }
        }
        for (i, outcome) in ended {
            if state.settle(i, outcome.status()) {
                self.settled(i, outcome, None, out);
            }
        }
    }
}

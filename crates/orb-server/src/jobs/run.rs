//! A job's task, one per job: takes its targets' outcomes from the inbox, keeps the pure
//! [`JobState`], tells the requester through the job's event stream, records the job and every
//! outcome in the store (batched), and ends the job with a summary when every target has an
//! outcome, the deadline passes, the server stops or an operator cancels it.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use orb_proto::history::JobPhase;
use orb_proto::{DeviceId, Envelope, ErrorBody, ErrorCode, Kind, Status};
use orb_store::{
    Enqueued, JobEnd, NewJob, NewQueued, NewTarget, QueueLimits, Queued, Record, Recorder, Store, TargetOutcome,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::RunningJobs;
use super::events::{EventsTx, JobEvent, Settled};
use super::inbox::{JobMsg, Outcome};
use super::state::JobState;
use crate::broker::Delivering;
use crate::close::CloseReason;
use crate::identity::JobSlot;
use crate::metrics::Metrics;
use crate::router::correlation::{CorrelationId, Correlations};
use crate::router::delivery::Outbox;

/// Outcomes handed to the recorder at once: a full batch makes full, cached bulk statements.
const RECORD_BATCH: usize = 1000;
/// Outcomes of a job that is still running are handed to the recorder at least this often.
const RECORD_EVERY: Duration = Duration::from_millis(250);
/// How long answers to an ended job are still recognised (and stored as late results).
pub(crate) const LATE_WINDOW: Duration = Duration::from_secs(60);

/// Everything a job's task owns.
pub(crate) struct JobRun {
    pub(crate) job_id: String,
    pub(crate) correlation: CorrelationId,
    /// The job's record (targets added from `devices`), stored when the task starts.
    pub(crate) record: Option<NewJob>,
    pub(crate) devices: Vec<DeviceId>,
    /// Matched devices left out because they were not connected (told in the summary).
    pub(crate) skipped: u64,
    /// Where each target's command was queued (to send `cancel`); `None` when not delivered.
    pub(crate) delivered: Vec<Option<Outbox>>,
    pub(crate) started: Instant,
    pub(crate) deadline: Instant,
    pub(crate) rx: mpsc::UnboundedReceiver<JobMsg>,
    pub(crate) events: EventsTx,
    pub(crate) recorder: Recorder,
    pub(crate) correlations: Arc<Correlations>,
    pub(crate) running: RunningJobs,
    /// Cancelled when the server stops: pending targets end as `timeout` at once.
    pub(crate) stop: CancellationToken,
    /// Cancelled when the server starts draining: a staged job starts no more targets.
    pub(crate) draining: CancellationToken,
    /// Commands to hold for targets that are not connected (a job with a TTL).
    pub(crate) hold: Option<Hold>,
    /// How to hold one more (a job with a TTL).
    pub(crate) template: Option<HoldTemplate>,
    /// Where they are held.
    pub(crate) store: Arc<dyn Store>,
    /// Told each device a command was held for.
    pub(crate) held_tx: mpsc::UnboundedSender<HeldNotice>,
    /// Reservations of connected devices' delivery loops (see [`Delivering::reserve`]).
    pub(crate) delivering: Arc<Delivering>,
    /// A staged job's timetable and what it dispatches with (`None`: everything went out at
    /// the start).
    pub(crate) staged: Option<super::staged::Staged>,
    /// An "any one of" job's dispatch: where its command is, where it goes next.
    pub(crate) one: Option<super::one::OneOf>,
    /// Where its progress is published (`$orb.job.<id>`).
    pub(crate) progress: super::progress::Progress,
    /// Where outcomes, answer times and `cancel` frames are counted.
    pub(crate) metrics: Arc<Metrics>,
    /// The job's place in its requester's quota, shared with the job's reader (released when
    /// both are done).
    pub(crate) _slot: Arc<JobSlot>,
}

/// What a job with a TTL holds for its targets, before it is acknowledged.
pub(crate) struct Hold {
    /// The commands held.
    pub(crate) rows: Vec<HeldRow>,
    /// Told once they are committed (or refused): the requester is acknowledged then.
    pub(crate) committed: oneshot::Sender<()>,
}

/// The command held for one target of a job with a TTL.
pub(crate) struct HeldRow {
    /// The target's slot.
    pub(crate) slot: usize,
    /// The command.
    pub(crate) command: NewQueued,
    /// The device was connected when the job started: its delivery loop sends the command
    /// now, and the outcome comes to the job while it runs (one not connected is `queued` at
    /// once).
    pub(crate) online: bool,
}

/// Told to the broker for each command a job holds.
pub(crate) enum HeldNotice {
    /// A command was held for the device (committed; the device is marked): it is delivered at
    /// once if the device is connected.
    Held(DeviceId),
    /// The device was reserved for this command, committed as handed over already: the
    /// device's delivery loop starts with it, without reading the queue.
    HandedOver(DeviceId, Box<Queued>),
    /// The device was reserved, but its command was not held (the store failed): its delivery
    /// loop runs to end the reservation.
    NotHeld(DeviceId),
}

/// How a job with a TTL holds a command for one of its targets.
#[derive(Clone)]
pub(crate) struct HoldTemplate {
    /// The command, its device left blank.
    pub(crate) command: NewQueued,
    /// How much each device's queue may hold.
    pub(crate) limits: QueueLimits,
    /// Bytes this job holds so far (at most [`super::MAX_HELD_BYTES_PER_JOB`]).
    pub(crate) bytes: u64,
}

impl HoldTemplate {
    /// The command held for `device`, counted against the job's byte cap.
    ///
    /// # Errors
    /// `queue_full` when the job would hold more than its cap.
    pub(crate) fn for_device(&mut self, device: &DeviceId) -> Result<NewQueued, ErrorBody> {
        let command = NewQueued { device: device.to_string(), ..self.command.clone() };
        self.bytes += command.bytes();
        if self.bytes > super::MAX_HELD_BYTES_PER_JOB {
            let why = format!("the job holds at most {} bytes for offline targets", super::MAX_HELD_BYTES_PER_JOB);
            return Err(ErrorBody::new(ErrorCode::QueueFull, why));
        }
        Ok(command)
    }
}

impl JobRun {
    pub(crate) async fn run(mut self) {
        if let Some(mut record) = self.record.take() {
            record.targets =
                self.devices.iter().map(|d| NewTarget { device: d.to_string(), status: None, error: None }).collect();
            self.recorder.record(Record::JobCreated(record)).await;
        }
        let mut state = match &self.staged {
            Some(staged) => staged.state(self.devices.len()),
            None => JobState::new(self.devices.len()),
        };
        let mut unrecorded = Vec::new();
        if let Some(hold) = self.hold.take() {
            self.hold_for_offline_targets(hold, &mut state, &mut unrecorded).await;
        }
        // A staged job's targets get their own deadlines from their dispatch, not the job's.
        let staged = self.staged.is_some();
        if staged {
            self.advance_stages(&mut state, &mut unrecorded).await;
        }
        let deadline = tokio::time::sleep_until(self.deadline);
        tokio::pin!(deadline);
        let stop = self.stop.clone();
        let stopping = stop.cancelled();
        tokio::pin!(stopping);
        let draining = self.draining.clone();
        let drain_started = draining.cancelled();
        tokio::pin!(drain_started);
        let mut drained = false;
        // Outcomes go to the store in batches: when a batch is full, every RECORD_EVERY, at the end.
        let mut record_tick = tokio::time::interval_at(Instant::now() + RECORD_EVERY, RECORD_EVERY);
        record_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (phase, pending_become) = loop {
            if state.is_done() {
                break (JobPhase::Done, None);
            }
            let wake = self.staged.as_ref().and_then(|s| s.stages.next_wake());
            // An "any one of" job watches the session its command went to.
            let watched = self.one.as_ref().and_then(|o| o.current.as_ref()).map(|(_, outbox)| outbox.closer.clone());
            tokio::select! {
                biased;
                msg = self.rx.recv() => match msg {
                    Some(JobMsg::Answer { index, at, outcome, recorded }) => {
                        let status = outcome.status();
                        if state.settle(index, status) {
                            let elapsed = at.map(|at| at.saturating_duration_since(self.started));
                            // A device's own answer, timed from the dispatch (a staged job's
                            // targets are sent later than its start; a held command's delivery
                            // loop times its own).
                            if let Some(took) = elapsed.filter(|_| !recorded && !staged) {
                                self.metrics.command_answered(took);
                            }
                            if recorded {
                                self.tell(index, &outcome, elapsed.map(millis));
                            } else {
                                self.settled(index, outcome, elapsed, &mut unrecorded);
                            }
                            if self.staged.as_ref().is_some_and(|s| s.stages.batch_ended(&state)) {
                                self.advance_stages(&mut state, &mut unrecorded).await;
                            }
                        } else if staged && !recorded && at.is_some() {
                            // A staged job's target whose own deadline passed answered late.
                            self.late_answer(index, outcome, &mut unrecorded);
                        }
                        if unrecorded.len() >= RECORD_BATCH {
                            self.record(&mut unrecorded).await;
                        }
                    }
                    Some(JobMsg::Cancel(reply)) => {
                        let cancelled = self.cancel(&mut state);
                        let _ = reply.send(cancelled);
                        let error = ErrorBody::new(ErrorCode::Cancelled, "the job was cancelled");
                        break (JobPhase::Cancelled, Some((Status::Cancelled, error)));
                    }
                    // Every sender is gone: cannot happen while `running` holds the inbox.
                    None => break (JobPhase::Done, self.expire(&mut state, "the job lost its inbox")),
                },
                reason = async { watched.as_ref().expect("guarded").closed().await }, if watched.is_some() => {
                    self.one_lost(reason, &mut state, &mut unrecorded).await;
                }
                () = &mut deadline, if !staged => {
                    let ms = self.deadline.duration_since(self.started).as_millis();
                    break (JobPhase::Done, self.expire(&mut state, &format!("no answer within {ms} ms")));
                }
                () = tokio::time::sleep_until(wake.unwrap_or(self.started)), if wake.is_some() => {
                    self.advance_stages(&mut state, &mut unrecorded).await;
                }
                () = &mut drain_started, if staged && !drained => {
                    drained = true;
                    let why = "the server is stopping: the targets not started were cancelled";
                    self.cancel_not_started(why, &mut state, &mut unrecorded);
                }
                () = &mut stopping => {
                    if staged {
                        let why = "the server stopped: the targets not started were cancelled";
                        self.cancel_not_started(why, &mut state, &mut unrecorded);
                    }
                    break (JobPhase::Done, self.expire(&mut state, "the server stopped before this target answered"));
                }
                _ = record_tick.tick(), if !unrecorded.is_empty() => self.record(&mut unrecorded).await,
            }
        };
        if let Some(one) = &mut self.one {
            one.release();
        }
        let mut summary = state.summary(self.job_id.clone());
        summary.skipped = self.skipped;
        summary.aborted = self.staged.as_mut().and_then(|s| s.aborted.take());
        self.progress.ended(&summary);
        self.events.push(JobEvent::Ended(summary));
        self.record(&mut unrecorded).await;
        let end = JobEnd { job: self.job_id.clone(), at: Utc::now(), state: phase, pending_become };
        self.recorder.record(Record::JobEnded(end)).await;
        // From now on answers are late, stored beside the outcome the requester was told; the
        // job's end is recorded first, so the store has that outcome when they come. Answers
        // that reached the inbox meanwhile are late ones too.
        self.correlations.end_job(&self.correlation, self.job_id.clone(), LATE_WINDOW);
        self.record_late_arrivals().await;
        self.running.finish(&self.job_id);
    }

    /// Holds the commands of the targets that are not connected (one awaited, group-committed
    /// write), then tells the requester: `queued` for each one held, `error` `queue_full` for
    /// one whose device's queue is full, `error` `store_unavailable` when the store failed.
    /// Only then is the job acknowledged.
    async fn hold_for_offline_targets(&mut self, hold: Hold, state: &mut JobState, out: &mut Vec<TargetOutcome>) {
        let Hold { rows, committed } = hold;
        self.hold_rows(rows, state, out).await;
        let _ = committed.send(());
    }

    /// Holds `rows` (one awaited write) and settles each target that is not connected
    /// (`queued`) or was refused (`queue_full`, `store_unavailable`); a connected one's delivery
    /// loop is started and its outcome awaited.
    pub(super) async fn hold_rows(&mut self, rows: Vec<HeldRow>, state: &mut JobState, out: &mut Vec<TargetOutcome>) {
        let Some(limits) = self.template.as_ref().map(|t| t.limits) else { return };
        let mut slots = Vec::with_capacity(rows.len());
        let mut commands = Vec::with_capacity(rows.len());
        for mut row in rows {
            // A connected device with nothing held and no delivery loop gets its command handed
            // over in the commit that holds it, and sent right after. Only a command that fits
            // an empty queue, so the commit does not refuse it.
            let fits = limits.max_commands >= 1 && row.command.bytes() <= limits.max_bytes;
            row.command.handed_over = row.online && fits && self.delivering.reserve(&self.devices[row.slot]);
            slots.push((row.slot, row.online, row.command.handed_over.then(|| row.command.clone())));
            commands.push(row.command);
        }
        let enqueued = self.store.enqueue(commands, limits).await.map_err(crate::registry::store_error);
        for (n, (slot, online, handed_over)) in slots.into_iter().enumerate() {
            let device = self.devices[slot].clone();
            let held = match enqueued.as_ref().map(|all| &all[n]) {
                Ok(Enqueued::Queued(id)) => Ok(*id),
                Ok(Enqueued::Full(why)) => Err(ErrorBody::new(ErrorCode::QueueFull, why.clone())),
                Err(error) => Err(error.clone()),
            };
            let notice = match (&held, handed_over) {
                (Ok(id), Some(command)) => Some(HeldNotice::HandedOver(
                    device,
                    Box::new(Queued { id: *id, command, attempts: 1, delivered_at: None }),
                )),
                (Err(_), Some(_)) => Some(HeldNotice::NotHeld(device)),
                (Ok(_), None) => {
                    // Marked before the ack: a job submitted after it sees that the device has
                    // this command held, and never overtakes it.
                    self.delivering.hold(device.clone());
                    Some(HeldNotice::Held(device))
                }
                (Err(_), None) => None,
            };
            if let Some(notice) = notice {
                let _ = self.held_tx.send(notice);
            }
            let outcome = match held {
                Ok(_) if online => continue,
                Ok(_) => Outcome::Queued,
                Err(e) => Outcome::Error(e),
            };
            if state.settle(slot, outcome.status()) {
                self.settled(slot, outcome, None, out);
            }
        }
    }

    /// The session of the device an "any one of" job's command went to ended (`reason`) before
    /// it answered: the command goes to the next matching device still connected, or, with none
    /// left, the target ends `offline`. An answer already on its way wins (nothing moves).
    async fn one_lost(&mut self, reason: CloseReason, state: &mut JobState, out: &mut Vec<TargetOutcome>) {
        let Some(one) = self.one.as_mut() else { return };
        if state.is_done() || one.answered() {
            one.release();
            return;
        }
        let from = self.devices[0].clone();
        match one.dispatch() {
            Some((to, outbox)) => {
                tracing::debug!(job = self.job_id, from = %from, to = %to, reason = reason.as_str(), "the command moved on");
                self.devices[0] = to.clone();
                self.delivered[0] = Some(outbox);
                let targets = vec![to.to_string()];
                self.recorder.record(Record::JobRetargeted { job: self.job_id.clone(), targets }).await;
                self.progress.moved(&from, &to, reason.as_str());
            }
            // The device's answer came after all: it is on its way to this task.
            None if one.answered() => {}
            None => {
                self.delivered[0] = None;
                if state.settle(0, Status::Offline) {
                    self.settled(0, Outcome::Offline, None, out);
                }
            }
        }
    }

    /// An answer of a target that had ended `timeout` while the job runs on (a staged job's
    /// group deadline): stored as a late answer, as after the job's end. It goes with the
    /// outcomes not recorded yet, which are written before it (the `timeout` it sits beside may
    /// be among them).
    fn late_answer(&mut self, index: usize, outcome: Outcome, out: &mut Vec<TargetOutcome>) {
        if let Some(answer) = outcome.into_answer() {
            out.push(super::late_outcome(self.job_id.clone(), &self.devices[index], answer));
        }
    }

    /// Answers that reached the inbox after the job ended but before its correlation said so:
    /// recorded as late answers, like those that come afterwards.
    async fn record_late_arrivals(&mut self) {
        let mut late = Vec::new();
        while let Ok(msg) = self.rx.try_recv() {
            if let JobMsg::Answer { index, at: Some(_), outcome, recorded: false } = msg
                && let Some(answer) = outcome.into_answer()
            {
                late.push(super::late_outcome(self.job_id.clone(), &self.devices[index], answer));
            }
        }
        if !late.is_empty() {
            self.recorder.record(Record::TargetsSettled(late)).await;
        }
    }

    /// Every pending target becomes `timeout` with `message` — in a job with a TTL, `queued`:
    /// its command is held, its outcome stored when it comes. Returns what the store makes of
    /// targets still pending there (held ones are `queued` there already).
    fn expire(&mut self, state: &mut JobState, message: &str) -> Option<(Status, ErrorBody)> {
        let timeout = ErrorBody::new(ErrorCode::Timeout, message);
        let held = self.template.is_some();
        for i in state.expire_as(if held { Status::Queued } else { Status::Timeout }) {
            let outcome = if held { Outcome::Queued } else { Outcome::Timeout(timeout.clone()) };
            self.tell(i, &outcome, None);
        }
        Some((Status::Timeout, timeout))
    }

    /// Every pending target becomes `cancelled`; those that were sent the command are told to
    /// stop. Returns the cancelled targets' ids.
    fn cancel(&mut self, state: &mut JobState) -> Vec<String> {
        let pending = state.pending();
        let mut stop = Envelope::new(Kind::Cancel);
        stop.re = Some(self.correlation.to_string());
        stop.job = Some(self.job_id.clone());
        for &i in &pending {
            state.settle(i, Status::Cancelled);
            self.tell(i, &Outcome::Cancelled, None);
            if let Some(outbox) = &self.delivered[i] {
                let frame = outbox.codec.encode(&stop);
                let len = frame.len();
                if outbox.deliver(frame).is_ok() {
                    self.metrics.sent(Kind::Cancel, len);
                }
            }
        }
        pending.into_iter().map(|i| self.devices[i].to_string()).collect()
    }

    /// Hands the outcomes gathered so far to the recorder.
    async fn record(&self, unrecorded: &mut Vec<TargetOutcome>) {
        if !unrecorded.is_empty() {
            let batch = std::mem::take(unrecorded);
            self.recorder.record(Record::TargetsSettled(batch)).await;
        }
    }

    /// Tells the requester one outcome and keeps it for the recorder. (Targets timed out by the
    /// deadline or cancelled are written with the job's end, in one statement.)
    pub(super) fn settled(
        &mut self,
        index: usize,
        outcome: Outcome,
        elapsed: Option<Duration>,
        out: &mut Vec<TargetOutcome>,
    ) {
        let elapsed_ms = elapsed.map(millis);
        self.tell(index, &outcome, elapsed_ms);
        let status = outcome.status();
        let error = outcome.error();
        let result = match outcome {
            Outcome::Ok(body) => Some(String::from_utf8_lossy(&body).into_owned()),
            Outcome::Error(_)
            | Outcome::Offline
            | Outcome::Timeout(_)
            | Outcome::Cancelled
            | Outcome::NotStarted(_)
            | Outcome::Queued
            | Outcome::Denied(_) => None,
        };
        out.push(TargetOutcome {
            job: self.job_id.clone(),
            device: self.devices[index].to_string(),
            status,
            result,
            error,
            elapsed_ms,
            at: Utc::now(),
            late: false,
        });
    }

    /// Tells the requester and the job's progress subscribers one target's outcome (once per
    /// target: every caller has just settled it), and counts it.
    fn tell(&self, index: usize, outcome: &Outcome, elapsed_ms: Option<u64>) {
        self.metrics.job_target(outcome.status());
        self.progress.settled(&self.devices[index], outcome, elapsed_ms);
        if !self.events.is_read() {
            return;
        }
        self.events.push(JobEvent::Settled(Settled {
            device: self.devices[index].clone(),
            status: outcome.status(),
            result: match outcome {
                Outcome::Ok(body) => Some(body.clone()),
                _ => None,
            },
            error: outcome.error(),
            elapsed_ms,
        }));
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

//! Held commands a job delivers itself (decision 0013, item 6d): in a job with a TTL, each
//! connected target that has nothing else held is reserved and its command committed as handed
//! over (attempt 1) in the commit that holds it; right after that commit the job sends those
//! commands as a plain fan-out does (the frame encoded once, answers routed to the job's inbox),
//! settles their outcomes in the store in bulk (outcome recorded, held row deleted: at most one
//! write in flight, the next takes everything gathered meanwhile), tells the requester once a
//! write is committed, and gives each device's reservation back to the broker's delivery loops
//! (`broker/held.rs`), which take over anything held for the device meanwhile.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use orb_proto::{DeviceId, ErrorBody, Kind, Status};
use orb_store::{HeldOutcome, Store, TargetOutcome};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::inbox::{JobInbox, Outcome};
use super::run::{HeldNotice, JobRun};
use super::state::JobState;
use crate::broker::Delivering;
use crate::broker::tally::Tally;
use crate::metrics::Metrics;
use crate::router::delivery::{DeliveryError, Outbox};

/// Outcomes settled in one store write at most.
const WRITE_BATCH: usize = 4096;

/// A settle write in flight (a task of its own): what it settles, and the store's answer (per
/// outcome, whether its command was still held).
pub(crate) type Writing = tokio::task::JoinHandle<(Vec<Settling>, Result<Vec<bool>, String>)>;

/// What a job with a TTL needs to deliver and settle the commands it hands over.
pub(crate) struct HandOvers {
    /// Per target slot: the held command handed over and its device's reservation.
    handed: Vec<Option<Handed>>,
    /// When the commands were sent (their answers are timed from then).
    sent_at: Option<Instant>,
    /// Outcomes waiting for the next settle write.
    gathered: Vec<Settling>,
    /// The settle write started and not awaited yet (the job's loop takes it out to await it).
    writing: Option<Writing>,
    /// Whether a settle write is in flight (at most one: the next takes all gathered meanwhile).
    in_flight: bool,
    /// The broker's parts it works with.
    pub(crate) with: HandOverParts,
}

/// One handed-over command.
struct Handed {
    /// Its held row.
    id: i64,
    /// Its device's reservation.
    mark: u64,
}

/// A handed-over command's outcome on its way to the store.
pub(crate) struct Settling {
    slot: usize,
    outcome: Outcome,
    elapsed: Option<Duration>,
    /// The requester heard it already (a cancellation is told at once).
    told: bool,
    /// The device answered it (counted as acknowledged once settled).
    answered: bool,
}

/// A connected target the job may hand its command to: the session and the frame for its codec.
pub(crate) struct HandTo {
    pub(crate) outbox: Outbox,
    pub(crate) frame: Bytes,
}

impl HandOvers {
    /// Hand-overs for a job of `targets` targets.
    pub(crate) fn new(with: HandOverParts, targets: usize) -> HandOvers {
        let mut handed = Vec::new();
        handed.resize_with(targets, || None);
        HandOvers { handed, sent_at: None, gathered: Vec::new(), writing: None, in_flight: false, with }
    }

    /// Whether target `slot`'s command was handed over by the job and is not settled yet.
    pub(crate) fn is_handed(&self, slot: usize) -> bool {
        self.handed.get(slot).is_some_and(Option::is_some)
    }

    /// Whether any command was handed over.
    pub(crate) fn any_sent(&self) -> bool {
        self.sent_at.is_some()
    }

    /// Gives `device`'s reservation back (its command `emptied` from the store, or still
    /// held); starts its delivery loop when something was held for it meanwhile.
    fn release(&mut self, slot: usize, device: &DeviceId, emptied: bool) {
        let Some(h) = self.handed.get_mut(slot).and_then(Option::take) else { return };
        if self.with.delivering.release(device, h.mark, emptied) {
            let _ = self.with.held_tx.send(HeldNotice::Resume(device.clone()));
        }
    }

    /// Queues `s` for the next settle write.
    fn gather(&mut self, s: Settling) {
        self.gathered.push(s);
    }

    /// Starts a settle write of what was gathered, unless one is in flight or nothing was.
    fn start_write(&mut self, job: &str, devices: &[DeviceId]) {
        if self.in_flight || self.gathered.is_empty() {
            return;
        }
        self.in_flight = true;
        let n = self.gathered.len().min(WRITE_BATCH);
        // Only commands still handed over: the store's answer is read back by position.
        let handed = &self.handed;
        let batch: Vec<(Settling, i64)> = self
            .gathered
            .drain(..n)
            .filter_map(|s| handed.get(s.slot).and_then(Option::as_ref).map(|h| h.id).map(|id| (s, id)))
            .collect();
        let outcomes: Vec<HeldOutcome> = batch
            .iter()
            .map(|(s, id)| {
                let outcome = target_outcome(job, &devices[s.slot], &s.outcome, s.elapsed.map(millis));
                HeldOutcome { id: *id, outcome }
            })
            .collect();
        let batch: Vec<Settling> = batch.into_iter().map(|(s, _)| s).collect();
        let store = Arc::clone(&self.with.store);
        self.writing = Some(tokio::spawn(async move {
            let written = store.settle_held(outcomes).await.map_err(|e| e.to_string());
            (batch, written)
        }));
    }

    /// The write started, taken out to be awaited beside the job's other events (its answer
    /// goes to [`JobRun::written`]).
    pub(crate) fn take_writing(&mut self) -> Option<Writing> {
        self.writing.take()
    }

    /// Puts back a write taken out and not awaited to its end.
    pub(crate) fn put_writing(&mut self, writing: Option<Writing>) {
        if writing.is_some() {
            self.writing = writing;
        }
    }
}

/// The broker's parts a job's hand-overs work with.
pub(crate) struct HandOverParts {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) delivering: Arc<Delivering>,
    /// Where a device whose reservation comes back with something held meanwhile is announced.
    pub(crate) held_tx: mpsc::UnboundedSender<HeldNotice>,
    pub(crate) tally: Arc<Tally>,
    pub(crate) metrics: Arc<Metrics>,
}

impl JobRun {
    /// Sends target `slot`'s command, held as row `id` and handed over in the commit that held
    /// it (its device reserved at `mark`). One that cannot be queued is heard as `offline`:
    /// its claim is given back and the target is `queued`.
    pub(crate) fn hand_over(&mut self, slot: usize, id: i64, mark: u64, to: HandTo, inbox: &Arc<JobInbox>) {
        let Some(handover) = self.handover.as_mut() else { return };
        let device = self.devices[slot].clone();
        handover.handed[slot] = Some(Handed { id, mark });
        handover.sent_at.get_or_insert_with(Instant::now);
        handover.with.tally.delivered(device.as_str(), 1);
        // Told before the frame is queued, so a session ending at any point after is heard.
        handover.with.delivering.handed_over(&device, to.outbox.conn, inbox, slot);
        let len = to.frame.len();
        let index = u32::try_from(slot).unwrap_or(u32::MAX);
        match to.outbox.deliver_noticed(to.frame, Arc::clone(inbox) as _, index) {
            Ok(()) => {
                handover.with.metrics.sent(Kind::Cmd, len);
                self.delivered[slot] = Some(to.outbox);
            }
            // Never queued: heard as `offline`, then its claim is given back.
            Err(DeliveryError::Closed | DeliveryError::SlowConsumer) => inbox.settle(slot, None, Outcome::Offline),
        }
    }

    /// Takes the answer (or loss) of command `slot`, which the job handed over.
    pub(crate) async fn handed_answer(
        &mut self,
        slot: usize,
        at: Option<Instant>,
        outcome: Outcome,
        state: &mut JobState,
        out: &mut Vec<TargetOutcome>,
    ) {
        let Some(handover) = self.handover.as_mut() else { return };
        let Some(id) = handover.handed.get(slot).and_then(Option::as_ref).map(|h| h.id) else { return };
        let device = self.devices[slot].clone();
        match outcome {
            // The session ended after the command went out: it stays handed over (delivered again
            // to a device with a journal, else `interrupted`), and the target is `queued`.
            Outcome::Queued => {
                handover.release(slot, &device, false);
                if state.settle(slot, Status::Queued) {
                    self.settled(slot, Outcome::Queued, None, out);
                }
            }
            // It never left the server: the claim is given back, it waits in the queue.
            Outcome::Offline => {
                match handover.with.store.undelivered(id).await {
                    Ok(true) => handover.with.tally.delivered(device.as_str(), -1),
                    Ok(false) => {}
                    Err(e) => tracing::warn!(job = self.job_id, error = %e, "cannot give back a held command's claim"),
                }
                handover.release(slot, &device, false);
                if state.settle(slot, Status::Queued) {
                    self.settled(slot, Outcome::Queued, None, out);
                }
            }
            outcome => {
                if !state.settle(slot, outcome.status()) {
                    return;
                }
                let answered = matches!(outcome, Outcome::Ok(_) | Outcome::Error(_));
                let sent = handover.sent_at.unwrap_or(self.started);
                let elapsed = at.map(|at| at.saturating_duration_since(sent));
                if let Some(took) = elapsed {
                    handover.with.metrics.command_answered(took);
                }
                handover.gather(Settling { slot, outcome, elapsed, told: false, answered });
                handover.start_write(&self.job_id, &self.devices);
            }
        }
    }

    /// Settles the commands handed over and still pending as the job ends: `timeout` at its
    /// deadline, `cancelled` (the caller settles and tells them) when it was cancelled; left
    /// handed over when the server stops (the caller makes them `queued`).
    pub(crate) fn end_handed(&mut self, state: &mut JobState, why: HandedEnd) {
        let Some(handover) = self.handover.as_mut() else { return };
        let pending: Vec<usize> = state.pending().into_iter().filter(|&i| handover.is_handed(i)).collect();
        for i in pending {
            match &why {
                HandedEnd::Deadline(error) => {
                    if state.settle(i, Status::Timeout) {
                        let outcome = Outcome::Timeout(error.clone());
                        handover.gather(Settling { slot: i, outcome, elapsed: None, told: false, answered: false });
                    }
                }
                HandedEnd::Cancelled => {
                    let outcome = Outcome::Cancelled;
                    handover.gather(Settling { slot: i, outcome, elapsed: None, told: true, answered: false });
                }
                HandedEnd::Stopping => {}
            }
        }
        handover.start_write(&self.job_id, &self.devices);
    }

    /// A settle write finished: tells the requester each outcome it committed, counts them and
    /// gives the devices' reservations back; starts the next write with what gathered meanwhile.
    pub(crate) fn written(&mut self, batch: Vec<Settling>, written: Result<Vec<bool>, String>) {
        let Some(handover) = self.handover.as_mut() else { return };
        handover.in_flight = false;
        let held: Vec<bool> = match written {
            Ok(held) => held,
            Err(e) => {
                tracing::warn!(job = self.job_id, error = %e, "cannot settle held commands; they end when they expire");
                Vec::new()
            }
        };
        let stored = !held.is_empty();
        let mut tell = Vec::with_capacity(batch.len());
        for (n, s) in batch.into_iter().enumerate() {
            let still_held = held.get(n).copied().unwrap_or(false);
            let device = self.devices[s.slot].clone();
            if still_held {
                handover.with.metrics.held_settled(s.outcome.status(), 1);
                if s.answered {
                    handover.with.tally.acknowledged(device.as_str());
                }
            }
            handover.release(s.slot, &device, stored);
            if !s.told {
                tell.push(s);
            }
        }
        handover.start_write(&self.job_id, &self.devices);
        for s in tell {
            self.tell(s.slot, &s.outcome, s.elapsed.map(millis));
        }
    }

    /// Waits for every settle write, the last ones included, then gives back every reservation
    /// still held (commands left handed over as the server stops).
    pub(crate) async fn finish_handed(&mut self) {
        for _ in 0..=self.devices.len() {
            let Some(handover) = self.handover.as_mut() else { return };
            handover.start_write(&self.job_id, &self.devices);
            let Some(mut writing) = handover.take_writing() else { break };
            let (batch, written) = awaited(&mut writing).await;
            self.written(batch, written);
        }
        let Some(handover) = self.handover.as_mut() else { return };
        for slot in 0..handover.handed.len() {
            let device = self.devices[slot].clone();
            handover.release(slot, &device, false);
        }
    }
}

/// Why the commands still handed over end with the job.
pub(crate) enum HandedEnd {
    /// Its deadline passed: `timeout` with this error.
    Deadline(ErrorBody),
    /// It was cancelled (the requester was told).
    Cancelled,
    /// The server stops: they stay handed over.
    Stopping,
}

/// The stored form of `outcome` for `device`'s target of `job`.
pub(crate) fn target_outcome(
    job: &str,
    device: &DeviceId,
    outcome: &Outcome,
    elapsed_ms: Option<u64>,
) -> TargetOutcome {
    let result = match outcome {
        Outcome::Ok(body) => Some(String::from_utf8_lossy(body).into_owned()),
        _ => None,
    };
    TargetOutcome {
        job: job.to_owned(),
        device: device.to_string(),
        status: outcome.status(),
        result,
        error: outcome.error(),
        elapsed_ms,
        at: chrono::Utc::now(),
        late: false,
    }
}

/// A settle write's answer; one whose task failed settled nothing.
pub(crate) async fn awaited(writing: &mut Writing) -> (Vec<Settling>, Result<Vec<bool>, String>) {
    match writing.await {
        Ok(done) => done,
        Err(e) => (Vec::new(), Err(format!("the settle task failed: {e}"))),
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

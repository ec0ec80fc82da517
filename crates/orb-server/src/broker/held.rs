//! Commands held for devices (jobs sent with a TTL), after the job's live part: delivered one at
//! a time, oldest first, when their device connects (each with its attempt number), their
//! outcome stored as the target's; expired when the TTL passes first. A command handed over
//! before whose answer was lost (the session ended, or the server restarted) is delivered again
//! to a device that keeps a journal (hello `durable`: it answers from the journal, never running
//! it twice); to any other it is not sent again and ends `error` `interrupted`. Before each
//! delivery from the queue the sender's rights are judged again (a revoked token or a changed
//! rule makes it `denied`, never sent). The job's stored state turns `done` when its last held
//! command settles. A command a job handed over itself (to a connected device it reserved, in
//! the commit that held it) is not delivered here: the job sends it and settles it
//! (`jobs/handover.rs`); [`Delivering`] tells the job when that device's session ends first.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use orb_proto::{DeviceId, Envelope, ErrorBody, ErrorCode, Kind, Status};
use orb_store::{HeldOutcome, NewQueued, Queued, StoreError, TargetOutcome};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::Broker;
use crate::identity::Identity;
use crate::jobs::{HeldNotice, JobInbox, Outcome};
use crate::router::correlation::{PendingRequest, Reply, ReplySink};

/// Held commands read from the store at a time.
const BATCH: u32 = 256;
/// Reads of a device's queue one delivery loop makes at most (a bound, far above any queue).
const MAX_ROUNDS: usize = 1 << 16;
/// Held commands the sweep ends at a time.
const EXPIRE_BATCH: u32 = 1000;

/// Which devices have commands held for them, and which are being delivered to now.
#[derive(Default)]
pub(crate) struct Delivering(Mutex<DeliveringState>);

#[derive(Default)]
struct DeliveringState {
    /// Devices with commands held for them (seeded from the store at start, marked as commands
    /// are held, unmarked when a delivery loop empties a queue), each with the number of its
    /// latest mark: a device not in it connects without a store read, and a loop unmarks a
    /// device only if nobody marked it since the loop read its queue.
    held: HashMap<DeviceId, u64>,
    /// The last mark given.
    marks: u64,
    /// Whether `held` has been seeded from the store: until then no device is reserved (one
    /// may have older commands held).
    seeded: bool,
    /// Devices with a delivery loop running, or reserved by a job that delivers their command
    /// itself.
    running: HashMap<DeviceId, Running>,
}

/// A device's delivery in progress.
#[derive(Default)]
struct Running {
    /// Whether its queue must be read once more before the delivery ends (a trigger came
    /// meanwhile).
    again: bool,
    /// The command a job handed over on one of the device's sessions, awaiting its answer.
    handed: Option<HandOver>,
}

/// Where a job's handed-over command went, and whom to tell when that session ends first.
struct HandOver {
    /// The session's connection.
    conn: u64,
    /// The job (gone when the job ended).
    job: std::sync::Weak<JobInbox>,
    /// The device's target slot in the job.
    slot: usize,
}

impl DeliveringState {
    fn mark(&mut self, device: DeviceId) {
        self.marks += 1;
        self.held.insert(device, self.marks);
    }
}

impl Delivering {
    fn lock(&self) -> std::sync::MutexGuard<'_, DeliveringState> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Marks `device` as having held commands. A job marks each device it held a command for
    /// before it is acknowledged, so a later job sees it (and never overtakes that command).
    pub(crate) fn hold(&self, device: DeviceId) {
        self.lock().mark(device);
    }

    /// Reserves `device` for a job's command, if it has nothing held and no delivery in
    /// progress: then the command about to be held for it will be the only one (anything held
    /// later waits for it, and triggers a delivery loop when the job gives the reservation back
    /// with [`Delivering::release`]). Answers the reservation's mark.
    pub(crate) fn reserve(&self, device: &DeviceId) -> Option<u64> {
        let mut st = self.lock();
        if !st.seeded || st.held.contains_key(device) || st.running.contains_key(device) {
            return None;
        }
        st.mark(device.clone());
        st.running.insert(device.clone(), Running::default());
        Some(st.marks)
    }

    /// The reserved `device`'s command went out on connection `conn`: when that session ends
    /// before the job gives the reservation back, target `slot` of `job` hears `queued`.
    pub(crate) fn handed_over(&self, device: &DeviceId, conn: u64, job: &Arc<JobInbox>, slot: usize) {
        if let Some(r) = self.lock().running.get_mut(device) {
            r.handed = Some(HandOver { conn, job: Arc::downgrade(job), slot });
        }
    }

    /// `device`'s session on connection `conn` ended: a job whose command went out on it, and
    /// has no answer yet, hears `queued` (the command stays handed over: a device with a
    /// journal gets it again, any other ends `interrupted`).
    pub(crate) fn session_ended(&self, device: &DeviceId, conn: u64) {
        let lost = match self.lock().running.get_mut(device) {
            Some(r) if r.handed.as_ref().is_some_and(|h| h.conn == conn) => r.handed.take(),
            _ => None,
        };
        if let Some(h) = lost
            && let Some(job) = h.job.upgrade()
        {
            job.settle(h.slot, None, Outcome::Queued);
        }
    }

    /// A job gives back its reservation of `device` (made at `mark`), its command settled
    /// (`emptied`) or still held: answers whether something was held for the device meanwhile,
    /// and the caller must then start its delivery loop ([`HeldNotice::Resume`]).
    pub(crate) fn release(&self, device: &DeviceId, mark: u64, emptied: bool) -> bool {
        self.pass_done(device, Some(mark), emptied)
    }
}

impl Delivering {
    /// `device`'s latest mark, read as a delivery pass begins.
    fn mark_of(&self, device: &DeviceId) -> Option<u64> {
        self.lock().held.get(device).copied()
    }

    /// After a delivery pass that began at `mark` and found the queue `emptied`: whether the
    /// loop goes on (it was triggered meanwhile); else the loop ends, and the device is unmarked
    /// if its queue was emptied and nobody marked it since the pass began.
    fn pass_done(&self, device: &DeviceId, mark: Option<u64>, emptied: bool) -> bool {
        let mut st = self.lock();
        match st.running.get_mut(device) {
            // Triggered meanwhile: something more may be held (the trigger marked it so).
            Some(r) if r.again => {
                *r = Running::default();
                true
            }
            _ => {
                if emptied && st.held.get(device).copied() == mark {
                    st.held.remove(device);
                }
                st.running.remove(device);
                false
            }
        }
    }
}

/// Starts a delivery loop for `device`, unless nothing is held for it, or one runs (then that
/// one reads the queue again before it ends).
pub(crate) fn start(broker: &Broker, device: DeviceId) {
    {
        let mut st = broker.0.delivering.lock();
        if !st.held.contains_key(&device) {
            return;
        }
        if let Some(r) = st.running.get_mut(&device) {
            r.again = true;
            return;
        }
        st.running.insert(device.clone(), Running::default());
    }
    broker.0.tracker.spawn(deliver(broker.clone(), device));
}

/// Delivers `device`'s held commands, one at a time, while it stays connected; reads its queue
/// once more when triggered meanwhile.
async fn deliver(broker: Broker, device: DeviceId) {
    loop {
        let mark = broker.0.delivering.mark_of(&device);
        let emptied = deliver_pass(&broker, &device).await;
        if !broker.0.delivering.pass_done(&device, mark, emptied) {
            return;
        }
    }
}

/// One pass over the queue: true when it found the queue empty.
async fn deliver_pass(broker: &Broker, device: &DeviceId) -> bool {
    let store = Arc::clone(broker.registry().store());
    let mut after = 0_i64;
    for _ in 0..MAX_ROUNDS {
        let rows = match store.queued_for(device.as_str(), BATCH).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(agent.id = %device, error = %e, "cannot read held commands");
                return false;
            }
        };
        let rows: Vec<Queued> = rows.into_iter().filter(|q| q.id > after).collect();
        if rows.is_empty() {
            return after == 0;
        }
        for q in rows {
            after = q.id;
            if matches!(deliver_queued(broker, device, &q).await, Step::Stop) {
                return false;
            }
        }
    }
    false
}

/// Whether a delivery loop goes on with the next held command.
enum Step {
    Next,
    Stop,
}

/// Delivers held command `q` from the queue: claims it (a device with a journal gets again what
/// it was handed before), sends it, settles it with the answer; `Stop` when the device is gone
/// or the server stops.
async fn deliver_queued(broker: &Broker, device: &DeviceId, q: &Queued) -> Step {
    let Some(durable) = broker.sessions().get(device.as_str()).map(|s| s.record.durable) else {
        broker.jobs().held_answered(&q.command.job_id, device, Outcome::Queued, None);
        return Step::Stop;
    };
    if q.delivered_at.is_some() && !durable {
        // Handed over before, its answer lost (a restart, or a session that ended), to a device
        // without a journal: not run again.
        let e = ErrorBody::new(
            ErrorCode::Interrupted,
            "the command was handed to the device, whose answer was lost; it is not run again",
        );
        settle(broker, &q.command, q.id, Status::Error, None, Some(e), None).await;
        return Step::Next;
    }
    if broker.is_draining() {
        return Step::Stop;
    }
    // The sender's rights are judged again now: a token revoked or a rule changed since the
    // command was held makes it `denied`, and it is never sent.
    if let Some(e) = refusal(broker, &q.command) {
        settle(broker, &q.command, q.id, Status::Denied, None, Some(e), None).await;
        return Step::Next;
    }
    // Nor is a command the device, as it connected now, does not declare.
    if broker.registry().get(device.as_str()).is_some_and(|k| !super::declares(&k.commands, &q.command.command)) {
        let e = super::undeclared(device.as_str(), &q.command.command);
        settle(broker, &q.command, q.id, Status::Error, None, Some(e), None).await;
        return Step::Next;
    }
    // Claimed before it is sent: an expired or settled command is never sent, and the attempt
    // number is the stored one.
    let attempt = match broker.registry().store().delivered(q.id, Utc::now(), durable).await {
        Ok(attempt) => attempt,
        Err(StoreError::NotFound(_)) => return Step::Next,
        Err(e) => {
            tracing::warn!(job = q.command.job_id, error = %e, "cannot claim a held command");
            return Step::Stop;
        }
    };
    broker.0.tally.delivered(device.as_str(), 1);
    let sent = send(broker, device, &q.command, attempt).await;
    finish(broker, device, &q.command, q.id, sent).await
}

/// Why held `command`'s sender may no longer send it to its device, judged by the rules in force
/// now; `None` when it still may, or when the command was held before credentials were kept.
fn refusal(broker: &Broker, command: &NewQueued) -> Option<ErrorBody> {
    let credential = command.credential.as_deref()?;
    let Some(who) = Identity::from_credential(&command.sender, credential) else {
        let why = format!("the sender's stored credential '{}' is not understood", orb_proto::excerpt(credential));
        return Some(ErrorBody::new(ErrorCode::Forbidden, why));
    };
    broker.gate(who, command.command.clone()).refusal(&command.device)
}

/// Settles held command `id` after a delivery: the answer (or timeout) becomes its outcome; one
/// that never reached the device gives its claim back and its live job hears `queued`; one whose
/// session ended after it was sent stays claimed (see [`send`]).
async fn finish(broker: &Broker, device: &DeviceId, command: &NewQueued, id: i64, sent: Sent) -> Step {
    match sent {
        Sent::NotReached => {
            match broker.registry().store().undelivered(id).await {
                Ok(true) => broker.0.tally.delivered(device.as_str(), -1),
                Ok(false) => {}
                Err(e) => tracing::warn!(job = command.job_id, error = %e, "cannot give back a held command's claim"),
            }
            broker.jobs().held_answered(&command.job_id, device, Outcome::Queued, None);
            Step::Stop
        }
        Sent::Lost => {
            broker.jobs().held_answered(&command.job_id, device, Outcome::Queued, None);
            Step::Stop
        }
        Sent::Stopping => Step::Stop,
        Sent::TooLarge(e) => {
            settle(broker, command, id, Status::Error, None, Some(e), None).await;
            Step::Next
        }
        Sent::Answered(reply, took) => {
            if reply.from.is_some() {
                broker.metrics().command_answered(took);
            }
            let elapsed = Some(u64::try_from(took.as_millis()).unwrap_or(u64::MAX));
            match reply.answer {
                Ok(body) => {
                    let result = Some(String::from_utf8_lossy(&body).into_owned());
                    settle(broker, command, id, Status::Ok, result, None, elapsed).await;
                }
                // The server is stopping: the claim stays; after the restart the command ends
                // `interrupted` (it may have run), or is delivered again to a durable device.
                Err(e) if e.code == ErrorCode::ServerShutdown => return Step::Stop,
                Err(e) if e.code == ErrorCode::Timeout => {
                    settle(broker, command, id, Status::Timeout, None, Some(e), elapsed).await;
                }
                Err(e) => settle(broker, command, id, Status::Error, None, Some(e), elapsed).await,
            }
            Step::Next
        }
    }
}

/// Devices with commands held for them at start (from the store), and every command held
/// from then on: a device connected now has its held commands delivered at once; one a job
/// had reserved (and delivered to itself) gets its delivery loop when the job gives it back with
/// something held meanwhile. Holds the broker weakly and ends at shutdown.
pub(crate) async fn newly_held(
    broker: std::sync::Weak<super::Inner>,
    mut held: tokio::sync::mpsc::UnboundedReceiver<HeldNotice>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    if let Some(inner) = broker.upgrade() {
        let broker = Broker(inner);
        match broker.registry().store().queue_counts().await {
            Ok(counts) => {
                for device in counts.into_keys().filter_map(|d| DeviceId::new(&d).ok()) {
                    broker.0.delivering.hold(device.clone());
                    if broker.sessions().get(device.as_str()).is_some() {
                        start(&broker, device);
                    }
                }
                // Only now may a job hand a command over directly (no older one is unknown).
                broker.0.delivering.lock().seeded = true;
            }
            Err(e) => tracing::warn!(
                error = %e,
                "cannot read which devices have held commands; every held command goes through its queue"
            ),
        }
    }
    loop {
        let notice = tokio::select! {
            () = shutdown.cancelled() => return,
            n = held.recv() => match n { Some(n) => n, None => return },
        };
        let Some(inner) = broker.upgrade() else { return };
        let broker = Broker(inner);
        match notice {
            HeldNotice::Held(device) => {
                if broker.sessions().get(device.as_str()).is_some() {
                    start(&broker, device);
                }
            }
            HeldNotice::Resume(device) => {
                broker.0.tracker.spawn(deliver(broker.clone(), device));
            }
        }
    }
}

/// What became of one delivery.
enum Sent {
    /// The device answered (or its deadline passed).
    Answered(Reply, Duration),
    /// It never reached the device (not connected, or its session closed first).
    NotReached,
    /// It was sent, then the session ended before the answer.
    Lost,
    /// Its frame is larger than the device accepts (not sent).
    TooLarge(ErrorBody),
    /// The server is stopping (the answer's correlation was dropped).
    Stopping,
}

/// Hands `command` (attempt `attempt`) to `device`'s session, waiting for room in its queue,
/// and waits for the answer or the session's end.
async fn send(broker: &Broker, device: &DeviceId, command: &NewQueued, attempt: u64) -> Sent {
    let Some(session) = broker.sessions().get(device.as_str()) else { return Sent::NotReached };
    let limits = broker.limits();
    let wait = Duration::from_millis(command.wait_ms).min(limits.max_deadline).max(Duration::from_millis(1));
    let mut env = Envelope::new(Kind::Cmd);
    env.cmd = Some(command.command.clone());
    env.from = Some(command.sender.clone());
    env.deadline_ms = Some(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
    env.job = Some(command.job_id.clone());
    env.attempt = Some(attempt);
    env.body = command.args.as_ref().map(|a| Bytes::from(a.clone().into_bytes()));
    let (tx, rx) = oneshot::channel();
    let started = Instant::now();
    let id = broker.0.correlations.open_request(PendingRequest {
        device: device.clone(),
        deadline: crate::jobs::instant_after(started, wait),
        sink: Box::new(HeldReply(Mutex::new(Some(tx)))),
    });
    env.id = Some(id.to_string());
    let mut frame = session.outbox.codec.encode(&env);
    if frame.len() > session.outbox.max_frame {
        broker.0.correlations.withdraw_request(&id);
        return Sent::TooLarge(ErrorBody::new(
            ErrorCode::FrameTooLarge,
            format!(
                "the command frame would be {} bytes, above the device's limit of {}",
                frame.len(),
                session.outbox.max_frame
            ),
        ));
    }
    session.outbox.trace_out(&frame);
    let len = frame.len();
    // Bulk work: it waits for room in the lower half of the queue, leaving the rest to others.
    let queued = loop {
        match session.outbox.tx.try_send_half(frame) {
            Ok(()) => {
                broker.metrics().sent(Kind::Cmd, len);
                break true;
            }
            Err(orb_io::queue::TrySendError::Closed(_)) => break false,
            Err(orb_io::queue::TrySendError::Full(f)) => {
                if session.outbox.tx.space_half_for(f.len()).await.is_err() {
                    break false;
                }
                frame = f;
            }
        }
    };
    if !queued {
        broker.0.correlations.withdraw_request(&id);
        return Sent::NotReached;
    }
    tokio::select! {
        reply = rx => match reply {
            Ok(reply) => Sent::Answered(reply, started.elapsed()),
            Err(_) => Sent::Stopping,
        },
        // The session ended before the answer: the command stays claimed; at the next
        // connection it is delivered again to a device with a journal, else it ends
        // `interrupted` (then, or a minute past its deadline and TTL).
        () = session.outbox.tx.closed() => {
            broker.0.correlations.withdraw_request(&id);
            Sent::Lost
        }
    }
}

/// Stores held command `id`'s outcome as its target's and forgets the command in one commit
/// (shared with other loops' through the [`super::settler::Settler`]), letting the job end if it
/// was its last one; then tells the job if its live part still runs.
async fn settle(
    broker: &Broker,
    command: &NewQueued,
    id: i64,
    status: Status,
    result: Option<String>,
    error: Option<ErrorBody>,
    elapsed_ms: Option<u64>,
) {
    let job = command.job_id.clone();
    let outcome = TargetOutcome {
        job: job.clone(),
        device: command.device.clone(),
        status,
        result,
        error,
        elapsed_ms,
        at: Utc::now(),
        late: false,
    };
    let told = live_outcome(&outcome);
    let answered = matches!(status, Status::Ok | Status::Error) && elapsed_ms.is_some();
    match broker.0.settler.settle(HeldOutcome { id, outcome }, answered).await {
        // Counted when it was still held (an expiry may have settled it meanwhile).
        Ok(true) => broker.metrics().held_settled(status, 1),
        Ok(false) => {}
        Err(e) => tracing::warn!(job, error = %e, "cannot settle a held command"),
    }
    // A job still in its live part tells its requester (its device was connected at the start).
    if let (Some(told), Ok(device)) = (told, DeviceId::new(&command.device)) {
        broker.jobs().held_answered(&job, &device, told, Some(Instant::now()));
    }
}

/// A stored outcome as the live job's, for the statuses a delivery ends with.
fn live_outcome(o: &TargetOutcome) -> Option<Outcome> {
    let error = || o.error.clone().unwrap_or_else(|| ErrorBody::new(ErrorCode::Internal, "no detail"));
    Some(match o.status {
        Status::Ok => Outcome::Ok(Bytes::from(o.result.clone().unwrap_or_else(|| "null".to_owned()).into_bytes())),
        Status::Timeout => Outcome::Timeout(error()),
        Status::Error => Outcome::Error(error()),
        Status::Denied => Outcome::Denied(error()),
        _ => return None,
    })
}

/// Ends the held commands that are over (TTL passed: `expired`; handed over, answer lost:
/// `interrupted`); the store writes their statuses in the same transaction.
pub(crate) async fn expire(broker: &Broker) {
    match broker.registry().store().expire_queued(Utc::now(), EXPIRE_BATCH).await {
        Ok(over) if over.is_empty() => {}
        Ok(over) => {
            // Handed over before, their answers lost: `error` `interrupted`; the rest `expired`.
            let interrupted = over.iter().filter(|q| q.delivered_at.is_some()).count() as u64;
            broker.metrics().held_settled(Status::Error, interrupted);
            broker.metrics().held_settled(Status::Expired, over.len() as u64 - interrupted);
            tracing::debug!(commands = over.len(), "held commands expired");
        }
        Err(e) => tracing::warn!(error = %e, "cannot expire held commands; retrying later"),
    }
}

/// The one answer to a delivered held command, for the delivery loop that waits for it.
struct HeldReply(Mutex<Option<oneshot::Sender<Reply>>>);

impl ReplySink for HeldReply {
    fn complete(self: Box<Self>, reply: Reply) {
        if let Some(tx) = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take() {
            let _ = tx.send(reply);
        }
    }

    fn is_gone(&self) -> bool {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).as_ref().is_none_or(oneshot::Sender::is_closed)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn seeded() -> Delivering {
        let d = Delivering::default();
        d.lock().seeded = true;
        d
    }

    #[test]
    fn a_device_is_reserved_only_with_nothing_held_and_no_loop_after_seeding() {
        let dev = DeviceId::new("d-1").unwrap();
        let unseeded = Delivering::default();
        assert!(unseeded.reserve(&dev).is_none(), "before the store's held commands are known");
        let d = seeded();
        assert!(d.reserve(&dev).is_some());
        assert!(d.reserve(&dev).is_none(), "reserved now");
        let other = DeviceId::new("d-2").unwrap();
        d.hold(other.clone());
        assert!(d.reserve(&other).is_none(), "something is held for it");
    }

    #[test]
    fn a_loop_unmarks_a_device_only_when_nobody_marked_it_since_its_pass_began() {
        let dev = DeviceId::new("d-1").unwrap();
        let d = seeded();
        assert!(d.reserve(&dev).is_some());
        let mark = d.mark_of(&dev);
        // A job holds another command for the device while the pass runs (its row was not
        // there when the pass read the queue): the loop ends, the device stays marked.
        d.hold(dev.clone());
        assert!(!d.pass_done(&dev, mark, true));
        assert!(d.mark_of(&dev).is_some(), "still marked: its command waits");
        assert!(d.reserve(&dev).is_none(), "so no later job overtakes it");
        // A pass that began after the last mark unmarks it.
        d.lock().running.insert(dev.clone(), Running::default());
        let mark = d.mark_of(&dev);
        assert!(!d.pass_done(&dev, mark, true));
        assert!(d.mark_of(&dev).is_none());
        assert!(d.reserve(&dev).is_some());
    }

    #[test]
    fn a_loop_triggered_meanwhile_goes_on() {
        let dev = DeviceId::new("d-1").unwrap();
        let d = seeded();
        assert!(d.reserve(&dev).is_some());
        let mark = d.mark_of(&dev);
        d.lock().running.insert(dev.clone(), Running { again: true, handed: None });
        assert!(d.pass_done(&dev, mark, true), "triggered: one more pass");
        assert!(!d.pass_done(&dev, mark, true));
        assert!(d.mark_of(&dev).is_none());
    }

    #[test]
    fn a_job_releasing_its_reservation_learns_whether_something_was_held_meanwhile() {
        let dev = DeviceId::new("d-1").unwrap();
        let d = seeded();
        let mark = d.reserve(&dev).unwrap();
        assert!(!d.release(&dev, mark, true), "nothing else came");
        assert!(d.mark_of(&dev).is_none(), "its command settled: nothing held");
        let mark = d.reserve(&dev).unwrap();
        // Another job holds a command for the device and triggers its loop, which waits.
        d.hold(dev.clone());
        d.lock().running.get_mut(&dev).unwrap().again = true;
        assert!(d.release(&dev, mark, true), "the caller starts the loop");
        assert!(d.mark_of(&dev).is_some(), "the other command is held");
        assert!(d.lock().running.contains_key(&dev), "owned by the loop now");
    }

    #[test]
    fn a_session_ending_tells_only_the_job_whose_command_went_out_on_it() {
        let dev = DeviceId::new("d-1").unwrap();
        let d = seeded();
        let mark = d.reserve(&dev).unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let inbox = Arc::new(JobInbox::new([dev.clone()].into_iter(), tx));
        d.handed_over(&dev, 7, &inbox, 0);
        d.session_ended(&dev, 6);
        assert!(rx.try_recv().is_err(), "another connection of the device");
        d.session_ended(&dev, 7);
        let told = rx.try_recv().ok();
        assert!(matches!(told, Some(crate::jobs::JobMsg::Answer { index: 0, outcome: Outcome::Queued, .. })));
        d.session_ended(&dev, 7);
        assert!(rx.try_recv().is_err(), "told once");
        assert!(!d.release(&dev, mark, false));
        assert!(d.mark_of(&dev).is_some(), "the command is still held (handed over)");
    }
}

//! Commands held for devices (jobs sent with a TTL), after the job's live part: delivered one at
//! a time, oldest first, when their device connects (each with its attempt number), their
//! outcome stored as the target's; expired when the TTL passes first. A command handed over
//! before whose answer was lost (the server restarted meanwhile) is not sent again: it ends
//! `error` `interrupted`. The job's stored state turns `done` when its last held command settles.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use orb_proto::{DeviceId, Envelope, ErrorBody, ErrorCode, Kind, Status};
use orb_store::{Queued, Record, StoreError, TargetOutcome};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::Broker;
use crate::router::correlation::{PendingRequest, Reply, ReplySink};

/// Held commands read from the store at a time.
const BATCH: u32 = 256;

/// The devices whose held commands are being delivered now (one delivery loop per device).
#[derive(Default)]
pub(crate) struct Delivering(Mutex<HashSet<DeviceId>>);

impl Delivering {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<DeviceId>> {
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Takes `device` off [`Delivering`] when its loop ends.
struct Turn<'a>(&'a Delivering, DeviceId);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.0.lock().remove(&self.1);
    }
}

/// What became of one delivery.
enum Sent {
    /// The device answered (or its deadline passed).
    Answered(Reply, Duration),
    /// The device is not connected (any more): the command stays held.
    NotConnected,
}

/// Delivers `device`'s held commands, one at a time, while it stays connected.
pub(crate) async fn deliver(broker: Broker, device: DeviceId) {
    if !broker.0.delivering.lock().insert(device.clone()) {
        return; // A loop for this device runs already; it finds the new session.
    }
    let _turn = Turn(&broker.0.delivering, device.clone());
    let store = Arc::clone(broker.registry().store());
    let max_rounds = broker.limits().max_queued_per_device / BATCH as usize + 2;
    let mut after = 0_i64;
    for _ in 0..max_rounds {
        let rows = match store.queued_for(device.as_str(), BATCH).await {
            Ok(rows) => rows,
            Err(e) => return tracing::warn!(agent.id = %device, error = %e, "cannot read held commands"),
        };
        let rows: Vec<Queued> = rows.into_iter().filter(|q| q.id > after).collect();
        if rows.is_empty() {
            return;
        }
        for q in rows {
            after = q.id;
            if q.delivered_at.is_some() {
                let e = ErrorBody::new(
                    ErrorCode::Interrupted,
                    "the command was handed to the device, whose answer was lost; it is not run again",
                );
                settle(&broker, &q, Status::Error, None, Some(e), None).await;
                continue;
            }
            match send(&broker, &device, &q).await {
                Sent::NotConnected => return,
                Sent::Answered(reply, took) => {
                    let elapsed = Some(u64::try_from(took.as_millis()).unwrap_or(u64::MAX));
                    match reply.answer {
                        Ok(body) => {
                            let result = Some(String::from_utf8_lossy(&body).into_owned());
                            settle(&broker, &q, Status::Ok, result, None, elapsed).await;
                        }
                        Err(e) if e.code == ErrorCode::Timeout => {
                            settle(&broker, &q, Status::Timeout, None, Some(e), elapsed).await;
                        }
                        Err(e) => settle(&broker, &q, Status::Error, None, Some(e), elapsed).await,
                    }
                }
            }
        }
    }
}

/// Hands `q` to `device`'s session (waiting for room in its queue) and waits for the answer.
async fn send(broker: &Broker, device: &DeviceId, q: &Queued) -> Sent {
    let Some(session) = broker.sessions().get(device.as_str()) else { return Sent::NotConnected };
    let limits = broker.limits();
    let wait = Duration::from_millis(q.command.wait_ms).clamp(Duration::from_millis(1), limits.max_deadline);
    let (tx, rx) = oneshot::channel();
    let started = Instant::now();
    let id = broker.0.correlations.open_request(PendingRequest {
        device: device.clone(),
        deadline: crate::jobs::instant_after(started, wait),
        sink: Box::new(HeldReply(Mutex::new(Some(tx)))),
    });
    let mut env = Envelope::new(Kind::Cmd);
    env.id = Some(id.to_string());
    env.cmd = Some(q.command.command.clone());
    env.from = Some(q.command.sender.clone());
    env.deadline_ms = Some(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX));
    env.job = Some(q.command.job_id.clone());
    env.attempt = Some(q.attempts + 1);
    env.body = q.command.args.as_ref().map(|a| Bytes::from(a.clone().into_bytes()));
    let mut frame = session.outbox.codec.encode(&env);
    session.outbox.trace_out(&frame);
    // Bulk work: it waits for room in the lower half of the queue, leaving the rest to others.
    let queued = loop {
        match session.outbox.tx.try_send_half(frame) {
            Ok(()) => break true,
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
        return Sent::NotConnected;
    }
    // Recorded once it is on its way: a restart before the answer makes it `interrupted`.
    match broker.registry().store().delivered(q.id, Utc::now()).await {
        Ok(_) | Err(StoreError::NotFound(_)) => {}
        Err(e) => tracing::warn!(job = q.command.job_id, error = %e, "cannot record a held command's delivery"),
    }
    match rx.await {
        Ok(reply) => Sent::Answered(reply, started.elapsed()),
        // The correlation was dropped without an answer (the server is stopping).
        Err(_) => Sent::NotConnected,
    }
}

/// Stores a held command's outcome as its target's, forgets the command, and lets the job end
/// if it was its last one.
async fn settle(
    broker: &Broker,
    q: &Queued,
    status: Status,
    result: Option<String>,
    error: Option<ErrorBody>,
    elapsed_ms: Option<u64>,
) {
    let recorder = broker.registry().recorder();
    let at = Utc::now();
    let job = q.command.job_id.clone();
    let outcome = TargetOutcome {
        job: job.clone(),
        device: q.command.device.clone(),
        status,
        result,
        error,
        elapsed_ms,
        at,
        late: false,
    };
    recorder.record(Record::TargetsSettled(vec![outcome])).await;
    if let Err(e) = broker.registry().store().dequeue(q.id).await {
        tracing::warn!(job, error = %e, "cannot forget a settled held command");
    }
    recorder.record(Record::HeldSettled { job, at }).await;
}

/// Ends the held commands whose TTL passed before their device connected: `expired`.
pub(crate) async fn expire(broker: &Broker) {
    let expired = match broker.registry().store().expire_queued(Utc::now()).await {
        Ok(expired) => expired,
        Err(e) => return tracing::warn!(error = %e, "cannot expire held commands; retrying later"),
    };
    let recorder = broker.registry().recorder();
    for q in expired {
        let message = format!("the TTL passed before device {} connected; the command never ran", q.command.device);
        let outcome = TargetOutcome {
            job: q.command.job_id.clone(),
            device: q.command.device.clone(),
            status: Status::Expired,
            result: None,
            error: Some(ErrorBody::new(ErrorCode::Expired, message)),
            elapsed_ms: None,
            at: Utc::now(),
            late: false,
        };
        recorder.record(Record::TargetsSettled(vec![outcome])).await;
        recorder.record(Record::HeldSettled { job: q.command.job_id, at: Utc::now() }).await;
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

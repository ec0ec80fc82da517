//! A job's typed event stream, from its task to whoever submitted it: one [`JobEvent::Settled`]
//! per target, then [`JobEvent::Ended`] with the summary. The job's task never waits for the
//! reader: events are buffered, bounded in bytes; a reader that falls that far behind gets
//! [`JobEvent::Lagged`] instead of the rest (the job runs on and its results are stored). A
//! reader that goes away (drops its [`JobEvents`]) stops the buffering.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use orb_proto::message::{JobAccepted, JobSummary};
use orb_proto::{DeviceId, ErrorBody, Status};
use tokio::sync::Notify;

use crate::identity::JobSlot;

/// One target's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Settled {
    /// The device.
    pub device: DeviceId,
    /// Its final status.
    pub status: Status,
    /// Its result (JSON), status `ok` only.
    pub result: Option<Bytes>,
    /// The error or the detail of a non-`ok` status.
    pub error: Option<ErrorBody>,
    /// Milliseconds from dispatch to answer; `None` when nothing was timed (never delivered).
    pub elapsed_ms: Option<u64>,
}

/// What a job tells its requester.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobEvent {
    /// A target settled.
    Settled(Settled),
    /// A batch of a staged job started.
    Batch(orb_proto::message::BatchStarted),
    /// The job ended: the last event.
    Ended(JobSummary),
    /// The reader fell more than the buffer behind: the last event; the job runs on unreported.
    Lagged {
        /// Bytes the buffer holds at most.
        limit: usize,
    },
}

impl JobEvent {
    /// Roughly what the event holds in memory, for the buffer's bound.
    fn weight(&self) -> usize {
        const OVERHEAD: usize = 96;
        match self {
            JobEvent::Settled(s) => {
                OVERHEAD
                    + s.device.as_str().len()
                    + s.result.as_ref().map_or(0, Bytes::len)
                    + s.error.as_ref().map_or(0, ErrorBody::weight)
            }
            JobEvent::Batch(_) | JobEvent::Ended(_) | JobEvent::Lagged { .. } => OVERHEAD,
        }
    }
}

struct Buffer {
    events: VecDeque<JobEvent>,
    bytes: usize,
    /// No more events come after those queued (ended or lagged).
    finished: bool,
    /// The reader is gone: events are not kept.
    reader_gone: bool,
}

struct Shared {
    buffer: Mutex<Buffer>,
    notify: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Buffer> {
        // Held for a push or pop, never across an await.
        self.buffer.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A submitted job: what was accepted, and its events to come.
pub struct JobHandle {
    /// The job's id, its targets and its deadline.
    pub accepted: JobAccepted,
    /// Its events.
    pub events: JobEvents,
    /// For a job with a TTL: resolves once the commands held for its offline targets are
    /// committed (or refused) — acknowledge the job only then. `None`: acknowledge at once.
    pub committed: Option<tokio::sync::oneshot::Receiver<()>>,
}

/// The reading end of a job's events.
pub struct JobEvents {
    shared: Arc<Shared>,
    readers: Arc<Readers>,
    _slot: Arc<JobSlot>,
}

/// The job's writing end.
pub(crate) struct EventsTx {
    shared: Arc<Shared>,
    limit: usize,
}

/// Counts the event streams still being read, so a stopping server can wait until every
/// requester has received its jobs' last events.
#[derive(Default)]
pub(crate) struct Readers {
    count: std::sync::atomic::AtomicUsize,
    gone: Notify,
}

impl Readers {
    /// Streams being read now.
    pub(crate) fn count(&self) -> usize {
        self.count.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Resolves when no stream is being read.
    ///
    /// # Cancel safety
    /// Cancel-safe.
    pub(crate) async fn none(&self) {
        loop {
            let gone = self.gone.notified();
            tokio::pin!(gone);
            gone.as_mut().enable();
            if self.count() == 0 {
                return;
            }
            gone.await;
        }
    }
}

/// A stream for one job, buffering at most `limit` bytes of events; its reader counts in
/// `readers` and holds the job's place in its requester's quota (`slot`, shared with the job's
/// task: released when both the job and the reading have ended, so a requester that does not read
/// cannot start more jobs than its quota).
pub(crate) fn channel(limit: usize, readers: Arc<Readers>, slot: Arc<JobSlot>) -> (EventsTx, JobEvents) {
    let shared = Arc::new(Shared {
        buffer: Mutex::new(Buffer { events: VecDeque::new(), bytes: 0, finished: false, reader_gone: false }),
        notify: Notify::new(),
    });
    readers.count.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    (EventsTx { shared: Arc::clone(&shared), limit: limit.max(1) }, JobEvents { shared, readers, _slot: slot })
}

impl EventsTx {
    /// Whether anyone reads the events (else the job need not build them).
    pub(crate) fn is_read(&self) -> bool {
        let b = self.shared.lock();
        !b.reader_gone && !b.finished
    }

    /// Queues `event` for the reader. Beyond the byte limit the buffer is replaced by `Lagged`.
    pub(crate) fn push(&self, event: JobEvent) {
        let last = matches!(event, JobEvent::Ended(_));
        {
            let mut b = self.shared.lock();
            if b.reader_gone || b.finished {
                return;
            }
            let weight = event.weight();
            if !last && b.bytes + weight > self.limit {
                b.events.clear();
                b.bytes = 0;
                b.events.push_back(JobEvent::Lagged { limit: self.limit });
                b.finished = true;
            } else {
                b.bytes += weight;
                b.events.push_back(event);
                b.finished = last;
            }
        }
        self.shared.notify.notify_one();
    }
}

impl Drop for EventsTx {
    fn drop(&mut self) {
        // A job task that ends (or is dropped) without an `Ended` still ends the stream.
        self.shared.lock().finished = true;
        self.shared.notify.notify_one();
    }
}

impl JobEvents {
    /// The next event; `None` after the last one.
    ///
    /// # Cancel safety
    /// Cancel-safe: an event is taken only when the call completes.
    pub async fn next(&mut self) -> Option<JobEvent> {
        loop {
            {
                let mut b = self.shared.lock();
                if let Some(ev) = b.events.pop_front() {
                    b.bytes = b.bytes.saturating_sub(ev.weight());
                    return Some(ev);
                }
                if b.finished {
                    return None;
                }
            }
            self.shared.notify.notified().await;
        }
    }
}

impl Drop for JobEvents {
    fn drop(&mut self) {
        {
            let mut b = self.shared.lock();
            b.reader_gone = true;
            b.events = VecDeque::new();
            b.bytes = 0;
        }
        self.readers.count.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        self.readers.gone.notify_waiters();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn slot() -> Arc<JobSlot> {
        let requester = crate::identity::Requester::new(crate::identity::Identity::admin("t"));
        Arc::new(requester.job_slot(0).unwrap())
    }

    fn settled(n: usize) -> JobEvent {
        JobEvent::Settled(Settled {
            device: DeviceId::new("d").unwrap(),
            status: Status::Ok,
            result: Some(Bytes::from(vec![b'1'; n])),
            error: None,
            elapsed_ms: Some(1),
        })
    }

    #[tokio::test]
    async fn events_arrive_in_order_and_end_with_the_summary() {
        let (tx, mut rx) = channel(1 << 20, Arc::default(), slot());
        tx.push(settled(1));
        tx.push(JobEvent::Ended(JobSummary::empty("j".into())));
        tx.push(settled(1));
        assert!(matches!(rx.next().await, Some(JobEvent::Settled(_))));
        assert!(matches!(rx.next().await, Some(JobEvent::Ended(_))));
        assert_eq!(rx.next().await, None, "nothing after the end");
    }

    #[tokio::test]
    async fn a_reader_that_falls_behind_gets_lagged_instead_of_unbounded_memory() {
        let (tx, mut rx) = channel(10_000, Arc::default(), slot());
        for _ in 0..100 {
            tx.push(settled(1000));
        }
        assert_eq!(rx.next().await, Some(JobEvent::Lagged { limit: 10_000 }));
        assert_eq!(rx.next().await, None);
        assert!(!tx.is_read());
    }

    #[test]
    fn a_gone_reader_stops_the_buffering() {
        let (tx, rx) = channel(1 << 20, Arc::default(), slot());
        assert!(tx.is_read());
        drop(rx);
        assert!(!tx.is_read());
        tx.push(settled(1));
        assert!(tx.shared.lock().events.is_empty());
    }

    #[tokio::test]
    async fn a_dropped_job_ends_the_stream() {
        let (tx, mut rx) = channel(1 << 20, Arc::default(), slot());
        tx.push(settled(1));
        drop(tx);
        assert!(matches!(rx.next().await, Some(JobEvent::Settled(_))));
        assert_eq!(rx.next().await, None);
    }
}

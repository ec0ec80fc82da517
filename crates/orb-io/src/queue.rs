//! The bounded outbound queue of one connection: encoded frames from any task to the
//! connection's writer, bounded both in frames and in bytes.
//!
//! Producers pick how they meet a full queue:
//! - [`QueueTx::try_send`] never waits: "full" is the caller's signal of a slow consumer.
//! - [`QueueTx::try_send_half`] and [`QueueTx::space_half_for`] let bulk producers (a job's results)
//!   use at most half the queue, leaving the rest to everything else.
//! - [`QueueTx::send_reply`] admits answers to what the peer itself asked above the limits, by
//!   up to [`Limits::answers`] more frames (bytes not counted): the reader of a connection stops
//!   reading while its queue is full or it has that many requests open, so the answers still on
//!   their way are bounded by what it read before.
//! - [`QueueTx::send`] and [`QueueTx::space`] wait for room.
//!
//! A frame may carry an [`Undelivered`] notice: when the connection closes before the frame was
//! written (it was still queued, or in a [`Batch`] whose write did not complete), the notice is
//! told, so a command that never left the server can be settled at once. An empty queue holds no buffer, so idle connections stay small (a tokio
//! `mpsc` channel allocates a block of 32 slots up front, about 1 KiB per connection).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;

/// Told when a frame is dropped with its queue, never having reached the writer.
pub trait Undelivered: Send + Sync + 'static {
    /// The frame queued with this notice and `slot` was not delivered.
    fn undelivered(&self, slot: u32);
}

/// Why a frame was not queued; the frame comes back.
#[derive(Debug)]
pub enum TrySendError {
    /// The queue holds its maximum (of frames or of bytes).
    Full(Bytes),
    /// The receiver is gone (the connection closed).
    Closed(Bytes),
}

/// The receiver is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

/// How much of the queue a producer may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    /// Half the limits (bulk producers).
    Half,
    /// The limits.
    Full,
    /// The limits plus the answers' allowance in frames, bytes not counted (answers to the
    /// peer's own requests).
    Answers,
}

/// The most frames and bytes a queue holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Frames (at least 1).
    pub frames: usize,
    /// Payload bytes (at least 1; a single frame larger than this is still admitted into an
    /// empty queue, so a frame within the protocol's size limit always fits).
    pub bytes: usize,
    /// Frames admitted beyond `frames` for answers ([`QueueTx::send_reply`]); their bytes are not
    /// counted against `bytes`.
    pub answers: usize,
}

impl Limits {
    /// `frames` frames and `bytes` bytes, and as many frames again for answers.
    pub fn new(frames: usize, bytes: usize) -> Limits {
        let frames = frames.max(1);
        Limits { frames, bytes: bytes.max(1), answers: frames }
    }

    /// The same limits with `answers` frames admitted beyond them for answers.
    pub fn with_answers(self, answers: usize) -> Limits {
        Limits { answers, ..self }
    }

    fn at(self, level: Level) -> (usize, usize) {
        match level {
            Level::Half => (self.frames.div_ceil(2), self.bytes.div_ceil(2)),
            Level::Full => (self.frames, self.bytes),
            Level::Answers => (self.frames.saturating_add(self.answers), usize::MAX),
        }
    }
}

struct Item {
    frame: Bytes,
    notice: Option<(Arc<dyn Undelivered>, u32)>,
}

struct State {
    items: VecDeque<Item>,
    bytes: usize,
    closed: bool,
    /// Producers waiting for room: every drain wakes them while there are any.
    waiting: usize,
}

impl State {
    /// Whether a frame of `len` bytes fits below `(frames, bytes)`. An empty queue takes any frame.
    fn fits(&self, len: usize, (frames, bytes): (usize, usize)) -> bool {
        self.items.is_empty() || (self.items.len() < frames && self.bytes.saturating_add(len) <= bytes)
    }

    fn below(&self, (frames, bytes): (usize, usize)) -> bool {
        self.items.len() < frames && self.bytes < bytes
    }
}

struct Shared {
    state: Mutex<State>,
    limits: Limits,
    /// Wakes the receiver (one consumer: a stored permit means no lost wake-up).
    readable: Notify,
    /// Wakes producers waiting for space; signalled by a drain while any wait.
    writable: Notify,
    /// Wakes tasks waiting for the receiver to go away.
    gone: Notify,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Held only for a push or pop, never across an await; the state stays consistent.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A queue holding at most `limits` (frames and bytes).
pub fn bounded(limits: Limits) -> (QueueTx, QueueRx) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State { items: VecDeque::new(), bytes: 0, closed: false, waiting: 0 }),
        limits,
        readable: Notify::new(),
        writable: Notify::new(),
        gone: Notify::new(),
    });
    (QueueTx(Arc::clone(&shared)), QueueRx(shared))
}

/// The sending side; cheap to clone.
#[derive(Clone)]
pub struct QueueTx(Arc<Shared>);

impl QueueTx {
    fn push(&self, item: Item, level: Level) -> Result<(), (TrySendError, Item)> {
        {
            let mut st = self.0.lock();
            if st.closed {
                let frame = item.frame.clone();
                return Err((TrySendError::Closed(frame), item));
            }
            if !st.fits(item.frame.len(), self.0.limits.at(level)) {
                let frame = item.frame.clone();
                return Err((TrySendError::Full(frame), item));
            }
            st.bytes += item.frame.len();
            st.items.push_back(item);
        }
        self.0.readable.notify_one();
        Ok(())
    }

    fn push_plain(&self, frame: Bytes, level: Level) -> Result<(), TrySendError> {
        self.push(Item { frame, notice: None }, level).map_err(|(e, _)| e)
    }

    /// Queues `frame` without waiting, within the limits.
    ///
    /// # Errors
    /// [`TrySendError::Full`] at a limit, [`TrySendError::Closed`] after the receiver is gone.
    pub fn try_send(&self, frame: Bytes) -> Result<(), TrySendError> {
        self.push_plain(frame, Level::Full)
    }

    /// As [`QueueTx::try_send`], and if the queue is dropped with the frame still in it,
    /// `notice` is told with `slot`. On an error the notice is not called: the caller knows.
    ///
    /// # Errors
    /// As [`QueueTx::try_send`].
    pub fn try_send_noticed(&self, frame: Bytes, notice: Arc<dyn Undelivered>, slot: u32) -> Result<(), TrySendError> {
        self.push(Item { frame, notice: Some((notice, slot)) }, Level::Full).map_err(|(e, _)| e)
    }

    /// Queues `frame` only while the queue is below half its limits, so bulk producers (a job's
    /// results) leave the rest of the queue to everything else.
    ///
    /// # Errors
    /// As [`QueueTx::try_send`], with `Full` meaning "at or above half".
    pub fn try_send_half(&self, frame: Bytes) -> Result<(), TrySendError> {
        self.push_plain(frame, Level::Half)
    }

    /// Queues an answer to something the peer asked (a reply, a pong, an error) beyond the
    /// limits by up to [`Limits::answers`] frames, bytes not counted. The reader of a connection
    /// stops reading while its queue is full or it has that many requests open, so such answers
    /// are bounded by the requests it read before; past that the peer is not reading.
    ///
    /// # Errors
    /// As [`QueueTx::try_send`], with `Full` meaning "at the limit plus the answers' allowance".
    pub fn send_reply(&self, frame: Bytes) -> Result<(), TrySendError> {
        self.push_plain(frame, Level::Answers)
    }

    /// Queues `frames` together, in order, when the queue is below its limits (or empty),
    /// however many and large they are: a burst whose size the caller bounds elsewhere (the
    /// retained publications a new subscription is sent: at most the server's
    /// `max_retained_bytes`). The reader of a connection stops reading while its queue is full,
    /// so one such burst at a time goes past the limits.
    ///
    /// # Errors
    /// [`TrySendError::Full`] (with the first frame) when the queue is at its limits;
    /// [`TrySendError::Closed`] after the receiver is gone. Nothing is queued then.
    pub fn send_burst(&self, frames: Vec<Bytes>) -> Result<(), TrySendError> {
        let Some(first) = frames.first().cloned() else { return Ok(()) };
        {
            let mut st = self.0.lock();
            if st.closed {
                return Err(TrySendError::Closed(first));
            }
            if !st.items.is_empty() && !st.below(self.0.limits.at(Level::Full)) {
                return Err(TrySendError::Full(first));
            }
            for frame in frames {
                st.bytes += frame.len();
                st.items.push_back(Item { frame, notice: None });
            }
        }
        self.0.readable.notify_one();
        Ok(())
    }

    /// Queues `frame`, waiting for room within the limits.
    ///
    /// # Errors
    /// [`Closed`] when the receiver is gone.
    ///
    /// # Cancel safety
    /// Not cancel-safe: a cancelled call may drop `frame`. Use [`QueueTx::space`] then
    /// [`QueueTx::try_send`] in `select!`.
    pub async fn send(&self, mut frame: Bytes) -> Result<(), Closed> {
        loop {
            match self.try_send(frame) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Closed(_)) => return Err(Closed),
                Err(TrySendError::Full(f)) => {
                    self.wait_until(|st, limits| st.fits(f.len(), limits.at(Level::Full))).await?;
                    frame = f;
                }
            }
        }
    }

    /// Resolves once the queue is below its limits (another producer may take the room first).
    ///
    /// # Errors
    /// [`Closed`] when the receiver is gone.
    ///
    /// # Cancel safety
    /// Cancel-safe.
    pub async fn space(&self) -> Result<(), Closed> {
        self.wait_until(|st, limits| st.below(limits.at(Level::Full))).await
    }

    /// Resolves once a frame of `len` bytes would be admitted by [`QueueTx::try_send_half`]
    /// (another producer may take the room first). Waiting for "below half" instead could spin:
    /// a frame may not fit although the queue is below half.
    ///
    /// # Errors
    /// [`Closed`] when the receiver is gone.
    ///
    /// # Cancel safety
    /// Cancel-safe.
    pub async fn space_half_for(&self, len: usize) -> Result<(), Closed> {
        self.wait_until(|st, limits| st.fits(len, limits.at(Level::Half))).await
    }

    /// Waits until `ready` holds (checked under the lock), counted among the waiting producers
    /// meanwhile so that every drain wakes it.
    async fn wait_until(&self, ready: impl Fn(&State, Limits) -> bool) -> Result<(), Closed> {
        /// Takes the producer off the waiting count however the wait ends (cancelled included).
        struct Waiting<'a>(&'a Shared);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.lock().waiting -= 1;
            }
        }
        loop {
            let notified = self.0.writable.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.0.lock();
                if st.closed {
                    return Err(Closed);
                }
                if ready(&st, self.0.limits) {
                    return Ok(());
                }
                st.waiting += 1;
            }
            let _waiting = Waiting(&self.0);
            notified.await;
        }
    }

    /// Frames and bytes queued now.
    pub fn depth(&self) -> (usize, usize) {
        let st = self.0.lock();
        (st.items.len(), st.bytes)
    }

    /// Whether no frame is queued.
    pub fn is_empty(&self) -> bool {
        self.0.lock().items.is_empty()
    }

    /// Whether the queue is at or above its limits (a reader applying backpressure stops reading).
    pub fn is_full(&self) -> bool {
        !self.0.lock().below(self.0.limits.at(Level::Full))
    }

    /// Queues a connection's goodbye (`bye` or a closing `error`) even when the queue is full:
    /// it is the last frame, queued just before the writer is told to stop.
    pub fn send_last(&self, frame: Bytes) {
        {
            let mut st = self.0.lock();
            if st.closed {
                return;
            }
            st.bytes += frame.len();
            st.items.push_back(Item { frame, notice: None });
        }
        self.0.readable.notify_one();
    }

    /// The queue's limits.
    pub fn limits(&self) -> Limits {
        self.0.limits
    }

    /// Resolves once the receiver is gone.
    ///
    /// # Cancel safety
    /// Cancel-safe.
    pub async fn closed(&self) {
        loop {
            let notified = self.0.gone.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.0.lock().closed {
                return;
            }
            notified.await;
        }
    }

    /// Whether the receiver is gone.
    pub fn is_closed(&self) -> bool {
        self.0.lock().closed
    }
}

/// Frames taken from the queue for one write, with the notices of those that carry one. Until
/// [`Batch::written`] says the write completed, the frames count as not delivered: a batch dropped
/// before that tells their notices.
#[derive(Default)]
pub struct Batch {
    frames: Vec<Bytes>,
    notices: Vec<(Arc<dyn Undelivered>, u32)>,
}

impl Batch {
    /// The frames, in queue order.
    pub fn frames(&self) -> &[Bytes] {
        &self.frames
    }

    /// How many frames.
    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// Whether it holds no frame.
    pub fn is_empty(&self) -> bool {
        self.frames.is_empty()
    }

    /// The frames were written: forget them and their notices. A batch that grew large gives
    /// its memory back, so a quiet connection keeps none.
    pub fn written(&mut self) {
        self.frames.clear();
        self.notices.clear();
        if self.frames.capacity() > 16 {
            self.frames = Vec::new();
        }
        // Notices come with job commands only: a connection that had one keeps no vector for it.
        if self.notices.capacity() > 0 {
            self.notices = Vec::new();
        }
    }
}

impl Drop for Batch {
    fn drop(&mut self) {
        for (notice, slot) in self.notices.drain(..) {
            notice.undelivered(slot);
        }
    }
}

/// The receiving side, owned by the connection's writer. Dropping it closes the queue and tells
/// the notices of the frames still in it.
pub struct QueueRx(Arc<Shared>);

impl QueueRx {
    /// Moves up to `max_frames` queued frames, and at most `max_bytes` (but always one frame,
    /// however large), into `batch`; returns how many. Never waits.
    pub fn drain_into(&mut self, batch: &mut Batch, max_frames: usize, max_bytes: usize) -> usize {
        let (n, wake) = {
            let mut st = self.0.lock();
            let mut n = 0;
            let mut taken = 0;
            while n < max_frames {
                let Some(next) = st.items.front() else { break };
                if n > 0 && taken + next.frame.len() > max_bytes {
                    break;
                }
                let Some(item) = st.items.pop_front() else { break };
                taken += item.frame.len();
                n += 1;
                batch.frames.push(item.frame);
                if let Some(notice) = item.notice {
                    batch.notices.push(notice);
                }
            }
            st.bytes -= taken;
            // Give memory back once the queue is empty again after a burst.
            if st.items.is_empty() && st.items.capacity() > 16 {
                st.items = VecDeque::new();
            }
            // Only producers that wait need a wake-up; the common case takes no extra lock.
            (n, n > 0 && st.waiting > 0)
        };
        if wake {
            self.0.writable.notify_waiters();
        }
        n
    }

    /// Waits until at least one frame is queued, then moves up to `max` into `batch`.
    ///
    /// # Cancel safety
    /// Cancel-safe: frames are only moved when the call completes.
    pub async fn recv_into(&mut self, batch: &mut Batch, max_frames: usize, max_bytes: usize) -> usize {
        loop {
            let n = self.drain_into(batch, max_frames, max_bytes);
            if n > 0 {
                return n;
            }
            self.0.readable.notified().await;
        }
    }
}

impl Drop for QueueRx {
    fn drop(&mut self) {
        let left = {
            let mut st = self.0.lock();
            st.closed = true;
            st.bytes = 0;
            std::mem::take(&mut st.items)
        };
        self.0.writable.notify_waiters();
        self.0.gone.notify_waiters();
        // Outside the lock: a notice may queue work elsewhere.
        for item in left {
            if let Some((notice, slot)) = item.notice {
                notice.undelivered(slot);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn frame(n: usize) -> Bytes {
        Bytes::from(vec![b'x'; n])
    }

    #[test]
    fn full_and_closed_are_reported_with_the_frame() {
        let (tx, rx) = bounded(Limits::new(2, 1 << 20));
        tx.try_send(Bytes::from_static(b"1")).unwrap();
        tx.try_send(Bytes::from_static(b"2")).unwrap();
        assert!(matches!(tx.try_send(Bytes::from_static(b"3")), Err(TrySendError::Full(f)) if f == "3"));
        assert!(tx.is_full());
        drop(rx);
        assert!(matches!(tx.try_send(Bytes::from_static(b"4")), Err(TrySendError::Closed(_))));
        assert!(tx.is_closed());
    }

    #[test]
    fn a_burst_goes_in_whole_below_the_limits_and_not_at_them() {
        let (tx, mut rx) = bounded(Limits::new(2, 1000));
        tx.try_send(frame(1)).unwrap();
        tx.send_burst(vec![frame(600), frame(600), frame(600)]).unwrap();
        assert!(tx.is_full(), "past the limits by the burst");
        assert!(matches!(tx.send_burst(vec![frame(1)]), Err(TrySendError::Full(_))), "not at them");
        tx.send_burst(Vec::new()).unwrap();
        let mut batch = Batch::default();
        assert_eq!(rx.drain_into(&mut batch, usize::MAX, usize::MAX), 4, "in order, all of it");
        drop(rx);
        assert!(matches!(tx.send_burst(vec![frame(1)]), Err(TrySendError::Closed(_))));
    }

    #[test]
    fn bytes_are_bounded_as_well_as_frames_and_an_empty_queue_takes_any_frame() {
        let (tx, mut rx) = bounded(Limits::new(100, 1000));
        tx.try_send(frame(600)).unwrap();
        assert!(matches!(tx.try_send(frame(600)), Err(TrySendError::Full(_))), "1200 bytes > 1000");
        tx.try_send(frame(400)).unwrap();
        assert!(tx.is_full(), "at the byte limit");
        let mut batch = Batch::default();
        rx.drain_into(&mut batch, usize::MAX, usize::MAX);
        tx.try_send(frame(5000)).unwrap();
        assert!(matches!(tx.try_send(frame(1)), Err(TrySendError::Full(_))));
    }

    #[test]
    fn bulk_producers_get_half_and_replies_get_their_allowance() {
        let (tx, _rx) = bounded(Limits::new(4, 1 << 20));
        tx.try_send_half(frame(1)).unwrap();
        tx.try_send_half(frame(1)).unwrap();
        assert!(matches!(tx.try_send_half(frame(1)), Err(TrySendError::Full(_))), "half of 4 is 2");
        tx.try_send(frame(1)).unwrap();
        tx.try_send(frame(1)).unwrap();
        assert!(matches!(tx.try_send(frame(1)), Err(TrySendError::Full(_))));
        for _ in 0..4 {
            tx.send_reply(frame(1 << 20)).unwrap();
        }
        assert!(matches!(tx.send_reply(frame(1)), Err(TrySendError::Full(_))), "4 frames + 4 for answers");
        tx.send_last(frame(1));
    }

    #[tokio::test]
    async fn frames_arrive_in_order_in_batches() {
        let (tx, mut rx) = bounded(Limits::new(8, 1 << 20));
        for i in 0..5u8 {
            tx.try_send(Bytes::from(vec![i])).unwrap();
        }
        let mut batch = Batch::default();
        assert_eq!(rx.recv_into(&mut batch, 3, usize::MAX).await, 3);
        assert_eq!(rx.recv_into(&mut batch, 3, usize::MAX).await, 2);
        let got: Vec<u8> = batch.frames().iter().map(|b| b[0]).collect();
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn a_waiting_sender_gets_space_when_the_writer_drains() {
        let (tx, mut rx) = bounded(Limits::new(1, 1 << 20));
        tx.try_send(Bytes::from_static(b"a")).unwrap();
        let t2 = tx.clone();
        let waiter = tokio::spawn(async move { t2.send(Bytes::from_static(b"b")).await });
        let mut batch = Batch::default();
        rx.recv_into(&mut batch, 1, usize::MAX).await;
        waiter.await.unwrap().unwrap();
        rx.recv_into(&mut batch, 1, usize::MAX).await;
        assert_eq!(batch.frames(), [Bytes::from_static(b"a"), Bytes::from_static(b"b")]);
    }

    #[tokio::test]
    async fn a_waiter_for_a_large_frame_waits_until_it_fits_and_does_not_spin() {
        // Below half in frames and bytes, yet a 400-byte frame does not fit half of 1000 bytes.
        let (tx, mut rx) = bounded(Limits::new(100, 1000));
        tx.try_send(frame(300)).unwrap();
        assert!(matches!(tx.try_send_half(frame(400)), Err(TrySendError::Full(_))));
        let t2 = tx.clone();
        let waiter = tokio::spawn(async move { t2.space_half_for(400).await });
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
        assert!(!waiter.is_finished(), "no room yet: it waits");
        let mut batch = Batch::default();
        rx.drain_into(&mut batch, 1, usize::MAX);
        waiter.await.unwrap().unwrap();
        tx.try_send_half(frame(400)).unwrap();
    }

    #[test]
    fn a_drain_takes_at_most_its_bytes_but_always_one_frame() {
        let (tx, mut rx) = bounded(Limits::new(100, 1 << 20));
        for n in [600, 600, 10] {
            tx.try_send(frame(n)).unwrap();
        }
        let mut batch = Batch::default();
        assert_eq!(rx.drain_into(&mut batch, 100, 1000), 1);
        assert_eq!(rx.drain_into(&mut batch, 100, 100), 1, "one frame even above the bytes");
        assert_eq!(rx.drain_into(&mut batch, 100, 1000), 1);
    }

    #[tokio::test]
    async fn dropping_the_receiver_wakes_waiters() {
        let (tx, rx) = bounded(Limits::new(1, 1 << 20));
        tx.try_send(Bytes::from_static(b"a")).unwrap();
        let t2 = tx.clone();
        let sender = tokio::spawn(async move { t2.send(Bytes::from_static(b"b")).await });
        let t3 = tx.clone();
        let watcher = tokio::spawn(async move { t3.closed().await });
        tokio::task::yield_now().await;
        drop(rx);
        assert_eq!(sender.await.unwrap(), Err(Closed));
        watcher.await.unwrap();
    }

    struct Count(AtomicU32);

    impl Undelivered for Count {
        fn undelivered(&self, slot: u32) {
            self.0.fetch_add(slot, Ordering::Relaxed);
        }
    }

    #[test]
    fn frames_not_written_tell_their_notices_and_written_ones_do_not() {
        let count = Arc::new(Count(AtomicU32::new(0)));
        let (tx, mut rx) = bounded(Limits::new(8, 1 << 20));
        tx.try_send_noticed(frame(1), count.clone(), 1).unwrap();
        let mut batch = Batch::default();
        rx.drain_into(&mut batch, 1, usize::MAX);
        batch.written();
        tx.try_send_noticed(frame(1), count.clone(), 10).unwrap();
        rx.drain_into(&mut batch, 1, usize::MAX);
        tx.try_send_noticed(frame(1), count.clone(), 100).unwrap();
        drop(batch);
        assert_eq!(count.0.load(Ordering::Relaxed), 10, "the batch whose write did not complete");
        drop(rx);
        assert_eq!(count.0.load(Ordering::Relaxed), 110, "and the frame still queued");
    }
}

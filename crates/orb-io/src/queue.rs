//! The bounded outbound queue of one connection: encoded frames from any task to the
//! connection's writer. Producers that must never wait use [`QueueTx::try_send`] (a full queue
//! is the caller's signal of a slow consumer); producers that may wait use [`QueueTx::send`] or
//! [`QueueTx::space`]. An empty queue holds no buffer, so idle connections stay small (a tokio
//! `mpsc` channel allocates a block of 32 slots up front, about 1 KiB per connection).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::Notify;

/// Why a frame was not queued; the frame comes back.
#[derive(Debug)]
pub enum TrySendError {
    /// The queue holds its maximum.
    Full(Bytes),
    /// The receiver is gone (the connection closed).
    Closed(Bytes),
}

/// The receiver is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Closed;

struct State {
    items: VecDeque<Bytes>,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    cap: usize,
    /// Wakes the receiver (one consumer: a stored permit means no lost wake-up).
    readable: Notify,
    /// Wakes producers waiting for space; signalled when a full queue shrinks.
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

/// A queue holding at most `cap` frames (at least 1).
pub fn bounded(cap: usize) -> (QueueTx, QueueRx) {
    let shared = Arc::new(Shared {
        state: Mutex::new(State { items: VecDeque::new(), closed: false }),
        cap: cap.max(1),
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
    /// Queues `frame` without waiting.
    ///
    /// # Errors
    /// [`TrySendError::Full`] at capacity, [`TrySendError::Closed`] after the receiver is gone.
    pub fn try_send(&self, frame: Bytes) -> Result<(), TrySendError> {
        {
            let mut st = self.0.lock();
            if st.closed {
                return Err(TrySendError::Closed(frame));
            }
            if st.items.len() >= self.0.cap {
                return Err(TrySendError::Full(frame));
            }
            st.items.push_back(frame);
        }
        self.0.readable.notify_one();
        Ok(())
    }

    /// Queues `frame`, waiting for space.
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
                    frame = f;
                    self.space().await?;
                }
            }
        }
    }

    /// Resolves once the queue has room (another producer may take it first).
    ///
    /// # Errors
    /// [`Closed`] when the receiver is gone.
    ///
    /// # Cancel safety
    /// Cancel-safe.
    pub async fn space(&self) -> Result<(), Closed> {
        self.space_below(self.0.cap).await
    }

    /// Resolves once fewer than `limit` frames are queued.
    ///
    /// # Errors
    /// [`Closed`] when the receiver is gone.
    ///
    /// # Cancel safety
    /// Cancel-safe.
    pub async fn space_below(&self, limit: usize) -> Result<(), Closed> {
        loop {
            let notified = self.0.writable.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let st = self.0.lock();
                if st.closed {
                    return Err(Closed);
                }
                if st.items.len() < limit.min(self.0.cap) {
                    return Ok(());
                }
            }
            notified.await;
        }
    }

    /// Queues `frame` only while fewer than `limit` frames are queued, so bulk producers (a
    /// job's results) leave the rest of the queue to everything else.
    ///
    /// # Errors
    /// As [`QueueTx::try_send`], with `Full` meaning "at or above `limit`".
    pub fn try_send_below(&self, frame: Bytes, limit: usize) -> Result<(), TrySendError> {
        {
            let mut st = self.0.lock();
            if st.closed {
                return Err(TrySendError::Closed(frame));
            }
            if st.items.len() >= limit.min(self.0.cap) {
                return Err(TrySendError::Full(frame));
            }
            st.items.push_back(frame);
        }
        self.0.readable.notify_one();
        Ok(())
    }

    /// Queues a connection's goodbye (`bye` or a closing `error`) even when the queue is full:
    /// it is the last frame, queued just before the writer is told to stop.
    pub fn send_last(&self, frame: Bytes) {
        {
            let mut st = self.0.lock();
            if st.closed {
                return;
            }
            st.items.push_back(frame);
        }
        self.0.readable.notify_one();
    }

    /// The most frames the queue holds.
    pub fn capacity(&self) -> usize {
        self.0.cap
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

/// The receiving side, owned by the connection's writer. Dropping it closes the queue.
pub struct QueueRx(Arc<Shared>);

impl QueueRx {
    /// Moves up to `max` queued frames into `batch`; returns how many. Never waits.
    pub fn drain_into(&mut self, batch: &mut Vec<Bytes>, max: usize) -> usize {
        let (n, wake) = {
            let mut st = self.0.lock();
            let before = st.items.len();
            let n = before.min(max);
            batch.extend(st.items.drain(..n));
            // Give memory back once the queue is empty again after a burst.
            if st.items.is_empty() && st.items.capacity() > 16 {
                st.items = VecDeque::new();
            }
            // Producers wait for "below capacity" or "below half" (bulk); wake them only when a
            // drain crosses one of those lines, so the common case takes no extra lock.
            let (after, cap, half) = (before - n, self.0.cap, self.0.cap.div_ceil(2));
            (n, (before >= cap && after < cap) || (before >= half && after < half))
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
    pub async fn recv_into(&mut self, batch: &mut Vec<Bytes>, max: usize) -> usize {
        loop {
            let n = self.drain_into(batch, max);
            if n > 0 {
                return n;
            }
            self.0.readable.notified().await;
        }
    }
}

impl Drop for QueueRx {
    fn drop(&mut self) {
        {
            let mut st = self.0.lock();
            st.closed = true;
            st.items = VecDeque::new();
        }
        self.0.writable.notify_waiters();
        self.0.gone.notify_waiters();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn full_and_closed_are_reported_with_the_frame() {
        let (tx, rx) = bounded(2);
        tx.try_send(Bytes::from_static(b"1")).unwrap();
        tx.try_send(Bytes::from_static(b"2")).unwrap();
        assert!(matches!(tx.try_send(Bytes::from_static(b"3")), Err(TrySendError::Full(f)) if f == "3"));
        drop(rx);
        assert!(matches!(tx.try_send(Bytes::from_static(b"4")), Err(TrySendError::Closed(_))));
        assert!(tx.is_closed());
    }

    #[tokio::test]
    async fn frames_arrive_in_order_in_batches() {
        let (tx, mut rx) = bounded(8);
        for i in 0..5u8 {
            tx.try_send(Bytes::from(vec![i])).unwrap();
        }
        let mut batch = Vec::new();
        assert_eq!(rx.recv_into(&mut batch, 3).await, 3);
        assert_eq!(rx.recv_into(&mut batch, 3).await, 2);
        let got: Vec<u8> = batch.iter().map(|b| b[0]).collect();
        assert_eq!(got, vec![0, 1, 2, 3, 4]);
    }

    #[tokio::test]
    async fn a_waiting_sender_gets_space_when_the_writer_drains() {
        let (tx, mut rx) = bounded(1);
        tx.try_send(Bytes::from_static(b"a")).unwrap();
        let t2 = tx.clone();
        let waiter = tokio::spawn(async move { t2.send(Bytes::from_static(b"b")).await });
        let mut batch = Vec::new();
        rx.recv_into(&mut batch, 1).await;
        waiter.await.unwrap().unwrap();
        rx.recv_into(&mut batch, 1).await;
        assert_eq!(batch, vec![Bytes::from_static(b"a"), Bytes::from_static(b"b")]);
    }

    #[tokio::test]
    async fn dropping_the_receiver_wakes_waiters() {
        let (tx, rx) = bounded(1);
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
}

//! A running command's `progress` (protocol section 4.13): what a handler reports while it runs,
//! sent to the requester best effort. [`Progress`] is a no-op unless the command's requester
//! asked (`progress: true` on the delivered `cmd`); when on, it holds the rate to at most
//! [`PROGRESS_PER_SECOND`] frames a second (a burst of as many) and drops, and counts, what is
//! over it or finds the connection's queue full: a chatty handler never blocks, and never
//! floods its connection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::time::Instant;

/// The most `progress` frames one command sends a second (and in one burst).
pub const PROGRESS_PER_SECOND: u32 = 50;

/// Queues one progress body (JSON) on the connection; false when it has no room.
type Send = dyn Fn(Bytes) -> bool + std::marker::Send + Sync;

/// A command's way to report progress to its requester. Cheap to clone; off by default.
#[derive(Clone, Default)]
pub struct Progress(Option<Arc<On>>);

struct On {
    send: Box<Send>,
    bucket: Mutex<Bucket>,
    dropped: AtomicU64,
}

/// A token bucket of [`PROGRESS_PER_SECOND`] tokens, refilled continuously.
struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Progress {
    /// Progress that goes nowhere: the requester did not ask for it.
    pub fn off() -> Progress {
        Progress(None)
    }

    /// Progress handed to `send`, which queues one body on the connection without waiting
    /// (false: no room, the body is dropped).
    pub fn new(send: impl Fn(Bytes) -> bool + std::marker::Send + Sync + 'static) -> Progress {
        let bucket = Bucket { tokens: f64::from(PROGRESS_PER_SECOND), at: Instant::now() };
        Progress(Some(Arc::new(On { send: Box::new(send), bucket: Mutex::new(bucket), dropped: AtomicU64::new(0) })))
    }

    /// Whether the requester asked for progress (when not, [`Progress::send`] does nothing and a
    /// handler may skip building what it would report).
    pub fn is_on(&self) -> bool {
        self.0.is_some()
    }

    /// Reports `body` (any JSON, e.g. `{"stream": "stdout", "line": "..."}`). Never waits.
    /// Returns whether it was queued: false when progress is off, and when it was dropped
    /// (over the rate, or the connection's queue full), which [`Progress::dropped`] counts.
    pub fn send(&self, body: &serde_json::Value) -> bool {
        let Some(on) = &self.0 else { return false };
        let queued = on.take() && serde_json::to_vec(body).is_ok_and(|json| (on.send)(Bytes::from(json)));
        if !queued {
            on.dropped.fetch_add(1, Ordering::Relaxed);
        }
        queued
    }

    /// How many reports were dropped so far (0 when progress is off).
    pub fn dropped(&self) -> u64 {
        self.0.as_ref().map_or(0, |on| on.dropped.load(Ordering::Relaxed))
    }
}

impl On {
    /// Takes a token if there is one.
    fn take(&self) -> bool {
        let mut b = self.bucket.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = Instant::now();
        let rate = f64::from(PROGRESS_PER_SECOND);
        b.tokens = (b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate).min(rate);
        b.at = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl std::fmt::Debug for Progress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Progress").field("on", &self.is_on()).field("dropped", &self.dropped()).finish()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use super::*;

    #[test]
    fn off_sends_nothing_and_counts_nothing() {
        let p = Progress::off();
        assert!(!p.is_on());
        assert!(!p.send(&serde_json::json!({"line": "x"})));
        assert_eq!(p.dropped(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn the_rate_is_held_and_what_is_over_it_or_finds_no_room_is_counted() {
        let sent = Arc::new(AtomicUsize::new(0));
        let room = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (s, r) = (Arc::clone(&sent), Arc::clone(&room));
        let p = Progress::new(move |body| {
            assert_eq!(&body[..], br#"{"n":1}"#);
            r.load(Ordering::Relaxed) && s.fetch_add(1, Ordering::Relaxed) < usize::MAX
        });
        let body = serde_json::json!({"n": 1});
        let burst = PROGRESS_PER_SECOND as usize;
        let queued = (0..burst + 10).filter(|_| p.send(&body)).count();
        assert_eq!((queued, p.dropped()), (burst, 10), "a burst of the rate, the rest dropped");
        tokio::time::advance(Duration::from_millis(100)).await;
        let queued = (0..burst).filter(|_| p.send(&body)).count();
        assert_eq!(queued, burst / 10, "refilled at the rate");
        tokio::time::advance(Duration::from_secs(1)).await;
        room.store(false, Ordering::Relaxed);
        assert!(!p.send(&body), "no room: dropped");
        assert_eq!(sent.load(Ordering::Relaxed), burst + burst / 10);
        assert_eq!(p.dropped(), 10 + (burst - burst / 10) as u64 + 1);
    }
}

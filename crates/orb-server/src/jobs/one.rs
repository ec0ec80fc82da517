//! "Any one of" (`select: one`, issue 13): a job with one target, the matching connected device
//! with the fewest "any one of" commands in flight (ties taken in turn). The job's task watches
//! that device's session: when it ends before the device answered, the command goes to the next
//! such device still connected (the target moves; the store's target list follows), until one
//! answers, the deadline passes, or none is left (`offline`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use dashmap::DashMap;
use orb_proto::{DeviceId, Envelope, Kind};

use super::inbox::JobInbox;
use crate::metrics::Metrics;
use crate::router::delivery::Outbox;
use crate::router::sessions::Sessions;

/// How many "any one of" commands each device is running: where the next one goes.
#[derive(Default)]
pub(crate) struct OneLoad {
    in_flight: DashMap<DeviceId, usize>,
    turn: AtomicUsize,
}

impl OneLoad {
    /// The index in `candidates` of the device with the fewest commands in flight; among equals,
    /// each call starts looking one further on, so idle devices take turns.
    fn pick(&self, candidates: &[DeviceId]) -> Option<usize> {
        let n = candidates.len();
        if n == 0 {
            return None;
        }
        let start = self.turn.fetch_add(1, Ordering::Relaxed) % n;
        (0..n).map(|k| (start + k) % n).min_by_key(|&i| self.in_flight.get(&candidates[i]).map_or(0, |c| *c))
    }

    fn acquire(&self, device: &DeviceId) {
        *self.in_flight.entry(device.clone()).or_default() += 1;
    }

    fn release(&self, device: &DeviceId) {
        self.in_flight.remove_if_mut(device, |_, c| {
            *c = c.saturating_sub(1);
            *c == 0
        });
    }
}

/// An "any one of" job's dispatch: the devices not tried yet and where the command is now.
pub(crate) struct OneOf {
    /// Matching devices connected when the job started, not tried yet.
    spares: Vec<DeviceId>,
    /// The device the command went to last, and its session's outbox (watched).
    pub(crate) current: Option<(DeviceId, Outbox)>,
    load: Arc<OneLoad>,
    inbox: Arc<JobInbox>,
    /// The command, and its encodings so far (per codec).
    cmd: Envelope,
    frames: [Option<Bytes>; 2],
    sessions: Arc<Sessions>,
    /// Where the commands sent are counted.
    metrics: Arc<Metrics>,
}

impl OneOf {
    pub(crate) fn new(
        candidates: Vec<DeviceId>,
        load: Arc<OneLoad>,
        inbox: Arc<JobInbox>,
        cmd: Envelope,
        frames: [Option<Bytes>; 2],
        sessions: Arc<Sessions>,
        metrics: Arc<Metrics>,
    ) -> OneOf {
        OneOf { spares: candidates, current: None, load, inbox, cmd, frames, sessions, metrics }
    }

    /// Sends the command to the least busy device not tried yet that is still connected;
    /// `None` when none is left. Its answer is the only one the inbox takes from then on.
    pub(crate) fn dispatch(&mut self) -> Option<(DeviceId, Outbox)> {
        self.release();
        while let Some(i) = self.load.pick(&self.spares) {
            let device = self.spares.swap_remove(i);
            let Some(session) = self.sessions.get(device.as_str()) else { continue };
            // Before the command leaves: a quick answer must find the inbox expecting it. When the
            // current device's answer came meanwhile, nothing moves.
            if !self.inbox.move_one(device.clone()) {
                return None;
            }
            let codec = session.outbox.codec;
            let frame = self.frames[super::codec_slot(codec)].get_or_insert_with(|| codec.encode(&self.cmd)).clone();
            let len = frame.len();
            if len > session.outbox.max_frame || session.outbox.deliver(frame).is_err() {
                continue;
            }
            self.metrics.sent(Kind::Cmd, len);
            self.load.acquire(&device);
            self.current = Some((device.clone(), session.outbox.clone()));
            return Some((device, session.outbox));
        }
        None
    }

    /// Whether the current device's answer is in (perhaps still on its way to the job's task).
    pub(crate) fn answered(&self) -> bool {
        self.inbox.is_answered(0)
    }

    /// The command is no longer in flight on the current device (it answered, or the job ended).
    pub(crate) fn release(&mut self) {
        if let Some((device, _)) = self.current.take() {
            self.load.release(&device);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_least_busy_device_is_picked_and_equals_take_turns() {
        let load = OneLoad::default();
        let ids: Vec<DeviceId> = ["a", "b", "c"].iter().map(|s| DeviceId::new(s).unwrap()).collect();
        let first = load.pick(&ids).unwrap();
        let second = load.pick(&ids).unwrap();
        assert_ne!(first, second, "idle devices take turns");
        load.acquire(&ids[0]);
        load.acquire(&ids[1]);
        for _ in 0..5 {
            assert_eq!(load.pick(&ids), Some(2), "c has nothing in flight");
        }
        load.acquire(&ids[2]);
        load.acquire(&ids[2]);
        load.release(&ids[0]);
        assert_eq!(load.pick(&ids), Some(0));
        load.release(&ids[0]);
        assert!(load.in_flight.get(&ids[0]).is_none(), "a count of 0 is removed");
        assert_eq!(load.pick(&[]), None);
    }
}

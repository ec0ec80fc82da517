//! A staged job's timetable (decision 0015): which targets are dispatched when. Batches run one
//! after another (the next starts when every target of one has an outcome, plus the batch wait);
//! within a batch, a splay delays each target by a stable offset of its own. The job's task
//! (`run.rs`) asks [`Stages::next_wake`], sleeps until then, and takes what is due: targets to
//! dispatch, groups whose deadline passed, the next batch to start. No I/O here.

use std::collections::VecDeque;
use std::time::Duration;

use orb_proto::DeviceId;
use orb_proto::rollout::Rollout;
use tokio::time::Instant;

use super::state::JobState;

/// A staged job's timetable.
pub(crate) struct Stages {
    pub(crate) rollout: Rollout,
    /// Each target's deadline, from its dispatch.
    deadline: Duration,
    /// Batches started so far (the one running is `started - 1`).
    started: usize,
    /// When the next batch starts: set at the job's start and when a batch ended.
    next_batch_at: Option<Instant>,
    /// Targets of the running batch not dispatched yet, by when they are due (in order).
    waiting: VecDeque<(Instant, usize)>,
    /// Dispatched groups and when their deadline passes, in order.
    deadlines: VecDeque<(Instant, Vec<usize>)>,
}

/// What is due now.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Due {
    /// Groups whose deadline passed: their pending targets end `timeout` (or `queued`).
    pub(crate) expired: Vec<usize>,
    /// A batch starts: its number from 0.
    pub(crate) batch_started: Option<usize>,
    /// Targets to dispatch now.
    pub(crate) dispatch: Vec<usize>,
}

impl Stages {
    /// The timetable of a job whose first batch starts at `start`.
    pub(crate) fn new(rollout: Rollout, deadline: Duration, start: Instant) -> Stages {
        Stages {
            rollout,
            deadline,
            started: 0,
            next_batch_at: Some(start),
            waiting: VecDeque::new(),
            deadlines: VecDeque::new(),
        }
    }

    /// When something is due next (`None`: nothing until a batch ends).
    pub(crate) fn next_wake(&self) -> Option<Instant> {
        [self.next_batch_at, self.waiting.front().map(|w| w.0), self.deadlines.front().map(|d| d.0)]
            .into_iter()
            .flatten()
            .min()
    }

    /// Takes what is due at `now`: expired groups, then a batch start (its targets laid out over
    /// the splay window), then the targets due for dispatch (whose deadline group is recorded).
    pub(crate) fn take_due(&mut self, now: Instant, devices: &[DeviceId], state: &JobState) -> Due {
        let mut due = Due::default();
        while self.deadlines.front().is_some_and(|d| d.0 <= now) {
            if let Some((_, group)) = self.deadlines.pop_front() {
                due.expired.extend(group);
            }
        }
        if self.next_batch_at.is_some_and(|at| at <= now) && self.started < state.batches() {
            self.next_batch_at = None;
            let batch = self.started;
            self.started += 1;
            let splay = self.rollout.splay();
            let mut laid_out: Vec<(Instant, usize)> =
                state.batch(batch).map(|i| (now + splay_offset(devices[i].as_str(), splay), i)).collect();
            laid_out.sort_unstable();
            self.waiting = laid_out.into();
            due.batch_started = Some(batch);
        }
        while self.waiting.front().is_some_and(|w| w.0 <= now) {
            if let Some((_, i)) = self.waiting.pop_front() {
                due.dispatch.push(i);
            }
        }
        if !due.dispatch.is_empty() {
            let at = super::instant_after(now, self.deadline);
            self.deadlines.push_back((at, due.dispatch.clone()));
        }
        due
    }

    /// The running batch's number from 0 (`None` before the first starts).
    pub(crate) fn running(&self) -> Option<usize> {
        self.started.checked_sub(1)
    }

    /// Whether the running batch has ended (every target dispatched and settled) and another
    /// is still to start, with none scheduled yet.
    pub(crate) fn batch_ended(&self, state: &JobState) -> bool {
        self.next_batch_at.is_none()
            && self.waiting.is_empty()
            && self.started < state.batches()
            && self.running().is_some_and(|b| state.batch_done(b))
    }

    /// The next batch starts `batch_wait` after `now`.
    pub(crate) fn schedule_next(&mut self, now: Instant) {
        self.next_batch_at = Some(super::instant_after(now, self.rollout.batch_wait()));
    }

    /// No batch starts any more (the job aborted): returns the targets never dispatched.
    pub(crate) fn abort(&mut self, state: &JobState) -> Vec<usize> {
        self.next_batch_at = None;
        let mut rest: Vec<usize> = self.waiting.drain(..).map(|w| w.1).collect();
        rest.extend((self.started..state.batches()).flat_map(|b| state.batch(b)));
        self.started = state.batches();
        rest
    }
}

/// A device's stable offset within a splay window: the same device gets the same place in every
/// job with the same window (FNV-1a of its id, so it does not change between builds).
pub(crate) fn splay_offset(device: &str, window: Duration) -> Duration {
    let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
    if window_ms == 0 {
        return Duration::ZERO;
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in device.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    Duration::from_millis(hash % window_ms)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use orb_proto::Status;
    use orb_proto::rollout::BatchSize;

    fn devices(n: usize) -> Vec<DeviceId> {
        (0..n).map(|i| DeviceId::new(&format!("dev-{i:03}")).unwrap()).collect()
    }

    #[test]
    fn splay_offsets_are_stable_spread_and_inside_the_window() {
        let w = Duration::from_secs(60);
        assert_eq!(splay_offset("a", w), splay_offset("a", w));
        let offsets: Vec<Duration> = devices(1000).iter().map(|d| splay_offset(d.as_str(), w)).collect();
        assert!(offsets.iter().all(|o| *o < w));
        // Spread: every tenth of the window gets some of 1000 devices.
        for tenth in 0..10 {
            let (lo, hi) = (w * tenth / 10, w * (tenth + 1) / 10);
            assert!(offsets.iter().any(|o| *o >= lo && *o < hi), "nothing in tenth {tenth}");
        }
        assert_eq!(splay_offset("a", Duration::ZERO), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn batches_start_one_after_another_with_the_wait_between() {
        let devs = devices(5);
        let rollout = Rollout { batch: Some(BatchSize::Count(2)), batch_wait_ms: Some(1000), ..Rollout::default() };
        let mut state = JobState::in_batches(5, 2);
        let t0 = Instant::now();
        let mut stages = Stages::new(rollout, Duration::from_secs(10), t0);
        assert_eq!(stages.next_wake(), Some(t0));
        let due = stages.take_due(t0, &devs, &state);
        assert_eq!(due, Due { expired: vec![], batch_started: Some(0), dispatch: vec![0, 1] });
        assert_eq!(stages.next_wake(), Some(t0 + Duration::from_secs(10)), "only the deadline is left");
        assert!(!stages.batch_ended(&state));
        state.settle(0, Status::Ok);
        state.settle(1, Status::Error);
        assert!(stages.batch_ended(&state));
        let t1 = t0 + Duration::from_secs(3);
        stages.schedule_next(t1);
        assert!(!stages.batch_ended(&state), "scheduled once");
        assert_eq!(stages.take_due(t1, &devs, &state), Due::default(), "the wait is not over");
        let t2 = t1 + Duration::from_secs(1);
        let due = stages.take_due(t2, &devs, &state);
        assert_eq!((due.batch_started, due.dispatch), (Some(1), vec![2, 3]));
        // The first group's deadline passes (its targets settled already: the job skips them).
        let due = stages.take_due(t0 + Duration::from_secs(10), &devs, &state);
        assert_eq!(due.expired, vec![0, 1]);
        assert_eq!(stages.abort(&state), vec![4]);
        assert!(!stages.batch_ended(&state));
        assert_eq!(stages.next_wake(), Some(t2 + Duration::from_secs(10)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_splay_spreads_dispatch_over_the_window_in_offset_order() {
        let devs = devices(50);
        let window = Duration::from_secs(30);
        let rollout = Rollout { splay_ms: Some(30_000), ..Rollout::default() };
        let state = JobState::new(50);
        let t0 = Instant::now();
        let mut stages = Stages::new(rollout, Duration::from_secs(5), t0);
        let first = stages.take_due(t0, &devs, &state);
        assert_eq!(first.batch_started, Some(0));
        let mut dispatched = first.dispatch;
        let mut wakes = 0;
        while let Some(at) = stages.next_wake() {
            wakes += 1;
            assert!(wakes <= 200, "bounded");
            let due = stages.take_due(at, &devs, &state);
            for &i in &due.dispatch {
                assert_eq!(at, t0 + splay_offset(devs[i].as_str(), window), "device {i} at its offset");
            }
            dispatched.extend(due.dispatch);
            for &i in &due.expired {
                assert!(at >= t0 + splay_offset(devs[i].as_str(), window) + Duration::from_secs(5));
            }
        }
        dispatched.sort_unstable();
        assert_eq!(dispatched, (0..50).collect::<Vec<_>>());
    }
}

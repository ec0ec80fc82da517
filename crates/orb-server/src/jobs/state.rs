//! The pure state of a job's targets: which ended how, and how many of each batch (a staged
//! job's consecutive runs of targets) are still pending. No I/O, no clock; the job's task
//! (`run.rs`) drives it.

use orb_proto::Status;
use orb_proto::message::JobSummary;

/// The pure state of a job's targets: which ended how. No I/O, no clock.
#[derive(Debug, Clone)]
pub struct JobState {
    statuses: Vec<Option<Status>>,
    remaining: usize,
    /// Targets per batch: target `i` is in batch `i / batch_size`.
    batch_size: usize,
    /// Pending targets per batch.
    batch_pending: Vec<usize>,
    /// Targets that ran (`ok`, `error`, `timeout`), and those of them that failed.
    ran: u64,
    failed: u64,
}

impl JobState {
    /// A job with `n` targets, all pending, in one batch.
    pub fn new(n: usize) -> JobState {
        JobState::in_batches(n, n)
    }

    /// A job with `n` targets, all pending, in batches of `size` consecutive targets (the last
    /// one may be smaller).
    pub fn in_batches(n: usize, size: usize) -> JobState {
        let size = size.clamp(1, n.max(1));
        let batch_pending = (0..n.div_ceil(size)).map(|b| size.min(n - b * size)).collect();
        JobState { statuses: vec![None; n], remaining: n, batch_size: size, batch_pending, ran: 0, failed: 0 }
    }

    /// How many batches there are.
    pub fn batches(&self) -> usize {
        self.batch_pending.len()
    }

    /// The targets of batch `b` (empty past the last).
    pub fn batch(&self, b: usize) -> std::ops::Range<usize> {
        let n = self.statuses.len();
        (b * self.batch_size).min(n)..((b + 1) * self.batch_size).min(n)
    }

    /// Whether every target of batch `b` has a final status.
    pub fn batch_done(&self, b: usize) -> bool {
        self.batch_pending.get(b).is_none_or(|p| *p == 0)
    }

    /// Targets that ran and failed (`error`, `timeout`) and that ran at all (`ok` too): what an
    /// abort threshold weighs. Offline, held, expired, denied and cancelled targets did not run.
    pub fn failed_of_finished(&self) -> (u64, u64) {
        (self.failed, self.ran)
    }

    /// Moves target `i` to a final status. Returns false (and changes nothing) when it already
    /// has one: a final status never changes.
    pub fn settle(&mut self, i: usize, status: Status) -> bool {
        match self.statuses.get_mut(i) {
            Some(slot @ None) => {
                *slot = Some(status);
                self.remaining -= 1;
                self.batch_pending[i / self.batch_size] -= 1;
                match status {
                    Status::Error | Status::Timeout => {
                        self.ran += 1;
                        self.failed += 1;
                    }
                    Status::Ok => self.ran += 1,
                    _ => {}
                }
                true
            }
            _ => false,
        }
    }

    /// Indices of the targets without a final status.
    pub fn pending(&self) -> Vec<usize> {
        self.statuses.iter().enumerate().filter(|(_, s)| s.is_none()).map(|(i, _)| i).collect()
    }

    /// The deadline passed: every pending target becomes `status` (`timeout`, or `queued` for a
    /// job whose commands are held). Returns their indices.
    pub fn expire_as(&mut self, status: Status) -> Vec<usize> {
        let pending = self.pending();
        for &i in &pending {
            self.settle(i, status);
        }
        pending
    }

    /// Whether every target has a final status.
    pub fn is_done(&self) -> bool {
        self.remaining == 0
    }

    /// Count per status (every status present).
    pub fn summary(&self, job: String) -> JobSummary {
        let mut s = JobSummary::empty(job);
        for st in self.statuses.iter().flatten() {
            *s.summary.entry(*st).or_insert(0) += 1;
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_target_settles_once() {
        let mut s = JobState::new(2);
        assert!(s.settle(0, Status::Ok));
        assert!(!s.settle(0, Status::Error));
        assert!(!s.is_done());
        assert!(s.settle(1, Status::Error));
        assert!(s.is_done());
        let sum = s.summary("j".into());
        assert_eq!(sum.summary[&Status::Ok], 1);
        assert_eq!(sum.summary[&Status::Error], 1);
        assert_eq!(sum.summary.len(), Status::ALL.len());
    }

    #[test]
    fn expiry_times_out_only_pending_targets() {
        let mut s = JobState::new(3);
        s.settle(1, Status::Ok);
        assert_eq!(s.expire_as(Status::Timeout), vec![0, 2]);
        assert!(s.is_done());
        assert_eq!(s.summary("j".into()).summary[&Status::Timeout], 2);
        assert!(s.expire_as(Status::Queued).is_empty());
    }

    #[test]
    fn batches_are_consecutive_targets_and_end_when_each_has_an_outcome() {
        let mut s = JobState::in_batches(5, 2);
        assert_eq!(s.batches(), 3);
        assert_eq!((s.batch(0), s.batch(2), s.batch(3)), (0..2, 4..5, 5..5));
        assert!(!s.batch_done(0));
        s.settle(0, Status::Ok);
        s.settle(1, Status::Timeout);
        assert!(s.batch_done(0) && !s.batch_done(1));
        s.settle(4, Status::Offline);
        assert!(s.batch_done(2));
        assert!(s.batch_done(7), "no such batch: nothing pending in it");
        assert_eq!(s.failed_of_finished(), (1, 2), "offline did not run");
        let one = JobState::new(3);
        assert_eq!((one.batches(), one.batch(0)), (1, 0..3));
        assert_eq!(JobState::new(0).batches(), 0);
    }

    #[test]
    fn out_of_range_index_changes_nothing() {
        let mut s = JobState::new(1);
        assert!(!s.settle(5, Status::Ok));
        assert!(!s.is_done());
    }
}

//! The pure state of a job's targets: which ended how. No I/O, no clock; the job's task
//! (`run.rs`) drives it.

use orb_proto::Status;
use orb_proto::message::JobSummary;

/// The pure state of a job's targets: which ended how. No I/O, no clock.
#[derive(Debug, Clone)]
pub struct JobState {
    statuses: Vec<Option<Status>>,
    remaining: usize,
}

impl JobState {
    /// A job with `n` targets, all pending.
    pub fn new(n: usize) -> JobState {
        JobState { statuses: vec![None; n], remaining: n }
    }

    /// Moves target `i` to a final status. Returns false (and changes nothing) when it already
    /// has one: a final status never changes.
    pub fn settle(&mut self, i: usize, status: Status) -> bool {
        match self.statuses.get_mut(i) {
            Some(slot @ None) => {
                *slot = Some(status);
                self.remaining -= 1;
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
    fn out_of_range_index_changes_nothing() {
        let mut s = JobState::new(1);
        assert!(!s.settle(5, Status::Ok));
        assert!(!s.is_done());
    }
}

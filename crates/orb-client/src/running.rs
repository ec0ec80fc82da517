//! `Running`: a connection's table of commands still being handled on their own tasks, by command
//! id, so a `cancel` frame from the server reaches the right one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

/// The commands a connection is handling on their own tasks, by command id, each with the token
/// that cancels it (a `cancel` frame names the command by id). An entry lives exactly as long as
/// its [`RunningGuard`], so the table never outgrows the commands in progress.
#[derive(Default)]
pub(crate) struct Running {
    map: Mutex<HashMap<String, (u64, CancellationToken)>>,
    next: AtomicU64,
}

impl Running {
    /// Records command `id` as running until the returned guard is dropped.
    pub(crate) fn start(self: &Arc<Self>, id: &str, cancel: CancellationToken) -> RunningGuard {
        let seq = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id.to_owned(), (seq, cancel));
        RunningGuard { running: Arc::clone(self), id: id.to_owned(), seq }
    }

    /// Cancels command `id`; false when it is not running (finished, or never seen).
    pub(crate) fn cancel(&self, id: &str) -> bool {
        let token = self.lock().get(id).map(|(_, t)| t.clone());
        token.map(|t| t.cancel()).is_some()
    }

    /// Commands recorded as running.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, CancellationToken)>> {
        // Never held across an await; plain inserts and removes keep a poisoned map consistent.
        self.map.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Removes its command from [`Running`] when dropped (the handler finished, or its task was
/// dropped). A later command that reused the id keeps its own entry.
pub(crate) struct RunningGuard {
    running: Arc<Running>,
    id: String,
    seq: u64,
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        let mut map = self.running.lock();
        if map.get(&self.id).is_some_and(|(seq, _)| *seq == self.seq) {
            map.remove(&self.id);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn running_entries_live_as_long_as_their_guard_and_a_reused_id_keeps_its_own() {
        let running = Arc::new(Running::default());
        let (a, b) = (CancellationToken::new(), CancellationToken::new());
        let first = running.start("job-1", a.clone());
        assert_eq!(running.len(), 1);
        let second = running.start("job-1", b.clone());
        drop(first);
        assert_eq!(running.len(), 1, "the older guard does not remove the newer entry");
        assert!(running.cancel("job-1"));
        assert!(b.is_cancelled() && !a.is_cancelled());
        drop(second);
        assert_eq!(running.len(), 0);
        assert!(!running.cancel("job-1"), "nothing to cancel once finished");
    }
}

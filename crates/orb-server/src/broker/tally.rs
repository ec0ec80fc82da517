//! Devices' delivery counts (`delivered`, `acknowledged`), counted in memory as held commands are
//! handed over, given back and answered, and added to the store every few seconds and at
//! shutdown, one upsert per device for both (`Store::count_deliveries`): a fan-out with a TTL to
//! thousands of devices no longer rewrites two counters per command in the commits its
//! acknowledgement and outcomes wait for. Reads add what is not written yet, so they are exact;
//! a crash loses at most the counts since the last write (never a command or an outcome).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use orb_store::{DeliveryCount, Store, StoreError};
use tokio::sync::RwLock;

/// How often counts are written to the store.
pub(crate) const WRITE_EVERY: Duration = Duration::from_secs(5);

/// Counts not written to the store yet, per device.
#[derive(Default)]
pub(crate) struct Tally {
    pending: Mutex<HashMap<String, Counts>>,
    /// Held for writing by [`Tally::write`] across its store write and the removal of what it
    /// wrote, and for reading by [`Tally::read`] across its store read: a read never sees the
    /// same counts in both places, nor in neither.
    gate: RwLock<()>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Counts {
    delivered: i64,
    acknowledged: i64,
}

impl Tally {
    /// A command was handed to `device` (`-1`: a claim given back, it never reached the device).
    pub(crate) fn delivered(&self, device: &str, n: i64) {
        self.add(device, Counts { delivered: n, acknowledged: 0 });
    }

    /// `device` answered a held command.
    pub(crate) fn acknowledged(&self, device: &str) {
        self.add(device, Counts { delivered: 0, acknowledged: 1 });
    }

    fn add(&self, device: &str, n: Counts) {
        let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let c = pending.entry(device.to_owned()).or_default();
        c.delivered += n.delivered;
        c.acknowledged += n.acknowledged;
    }

    /// Adds the counts gathered so far to the store; they stay here when the write fails (and
    /// are tried again next time).
    ///
    /// # Errors
    /// The store's.
    pub(crate) async fn write(&self, store: &dyn Store) -> Result<(), StoreError> {
        let _writing = self.gate.write().await;
        let counts: Vec<DeliveryCount> = self
            .pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .iter()
            .map(|(device, c)| DeliveryCount {
                device: device.clone(),
                delivered: c.delivered,
                acknowledged: c.acknowledged,
            })
            .collect();
        if counts.is_empty() {
            return Ok(());
        }
        store.count_deliveries(counts.clone()).await?;
        let mut pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for written in counts {
            if let Some(c) = pending.get_mut(&written.device) {
                c.delivered -= written.delivered;
                c.acknowledged -= written.acknowledged;
                if *c == Counts::default() {
                    pending.remove(&written.device);
                }
            }
        }
        Ok(())
    }

    /// Runs `read` (a store read of `device`'s counts) and answers with it the counts not
    /// written yet: `(delivered, acknowledged)`, to add with [`plus`].
    pub(crate) async fn read<T>(&self, device: &str, read: impl Future<Output = T>) -> (T, (i64, i64)) {
        let _reading = self.gate.read().await;
        let found = read.await;
        let pending = self.pending.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(device).copied();
        let pending = pending.unwrap_or_default();
        (found, (pending.delivered, pending.acknowledged))
    }
}

/// A stored count plus a pending one (never below zero).
pub(crate) fn plus(stored: u64, pending: i64) -> u64 {
    u64::try_from(i64::try_from(stored).unwrap_or(i64::MAX).saturating_add(pending)).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn pending_counts_are_added_to_what_a_read_found() {
        let t = Tally::default();
        t.delivered("a", 1);
        t.delivered("a", 1);
        t.delivered("a", -1);
        t.acknowledged("a");
        let ((), pending) = t.read("a", async {}).await;
        assert_eq!(pending, (1, 1));
        assert_eq!((plus(10, pending.0), plus(0, -1)), (11, 0));
        let ((), pending) = t.read("b", async {}).await;
        assert_eq!(pending, (0, 0), "nothing pending for b");
    }
}

//! Counters the broker keeps for operators: when it started and how many sessions closed for
//! each [`CloseReason`].

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{DateTime, Utc};

use crate::close::CloseReason;

/// Counters since start.
pub struct Stats {
    started_at: DateTime<Utc>,
    closes: [AtomicU64; CloseReason::ALL.len()],
}

impl Default for Stats {
    fn default() -> Self {
        Stats { started_at: Utc::now(), closes: std::array::from_fn(|_| AtomicU64::new(0)) }
    }
}

impl Stats {
    /// When the server started.
    pub fn started_at(&self) -> DateTime<Utc> {
        self.started_at
    }

    /// Counts a closed session by reason.
    pub fn record_close(&self, reason: CloseReason) {
        self.closes[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Closed sessions so far, by reason index (`reason as usize`).
    pub fn closed(&self) -> [u64; CloseReason::ALL.len()] {
        std::array::from_fn(|i| self.closes[i].load(Ordering::Relaxed))
    }

    /// Closed sessions so far, per reason.
    pub fn close_counts(&self) -> BTreeMap<&'static str, u64> {
        CloseReason::ALL.iter().map(|r| (r.as_str(), self.closes[*r as usize].load(Ordering::Relaxed))).collect()
    }
}

//! [`Signal`]: a one-shot, cloneable "stop now" flag that tasks can await, carrying the
//! [`CloseCode`] the connection ends with. Lighter than a `CancellationToken` (no parent/child
//! tree, one small allocation), because every connection holds a couple of them and idle
//! connections must stay small.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use tokio::sync::Notify;

use crate::transport::CloseCode;

#[derive(Default)]
struct Inner {
    raised: AtomicBool,
    code: AtomicU8,
    notify: Notify,
}

/// A flag raised once; clones share it.
#[derive(Clone, Default)]
pub struct Signal(Arc<Inner>);

impl Signal {
    /// A new, lowered signal.
    pub fn new() -> Signal {
        Signal::default()
    }

    /// Raises the signal, waking every waiter. Idempotent.
    pub fn raise(&self) {
        self.0.raised.store(true, Ordering::Release);
        self.0.notify.notify_waiters();
    }

    /// Raises the signal with the code the connection closes with.
    pub fn raise_with(&self, code: CloseCode) {
        self.0.code.store(code as u8, Ordering::Release);
        self.raise();
    }

    /// The close code given with [`Signal::raise_with`] ([`CloseCode::Normal`] otherwise).
    pub fn code(&self) -> CloseCode {
        CloseCode::from_u8(self.0.code.load(Ordering::Acquire))
    }

    /// Whether the signal was raised.
    pub fn is_raised(&self) -> bool {
        self.0.raised.load(Ordering::Acquire)
    }

    /// Resolves once the signal is raised.
    ///
    /// # Cancel safety
    /// Cancel-safe.
    pub async fn raised(&self) {
        loop {
            let notified = self.0.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_raised() {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_before_and_after_the_raise_both_return() {
        let s = Signal::new();
        let early = {
            let s = s.clone();
            tokio::spawn(async move { s.raised().await })
        };
        tokio::task::yield_now().await;
        assert!(!s.is_raised());
        s.raise();
        early.await.unwrap_or_default();
        s.raised().await;
        assert!(s.is_raised());
    }
}

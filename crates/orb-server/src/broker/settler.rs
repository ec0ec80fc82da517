//! Held commands' outcomes, committed in groups: each delivery loop hands its command's outcome
//! here and waits; one task takes what has gathered (up to [`BATCH`]) and settles it in one
//! store write (outcomes recorded, commands forgotten, counters and job ends, one commit), then
//! answers every waiter. A fan-out with a TTL to thousands of connected devices settles in a
//! few commits instead of one per device. The delivery loop tells the live job afterwards.

use std::sync::Arc;

use orb_store::{HeldOutcome, Store};
use tokio::sync::{mpsc, oneshot};

/// Outcomes settled in one store write at most.
const BATCH: usize = 4096;

type Waiter = oneshot::Sender<Result<bool, String>>;

/// The handle delivery loops settle through.
pub(crate) struct Settler {
    tx: mpsc::Sender<(HeldOutcome, Waiter)>,
}

impl Settler {
    /// Starts the settling task on `store`; it ends when the settler is dropped.
    pub(crate) fn start(store: Arc<dyn Store>) -> Settler {
        let (tx, rx) = mpsc::channel(BATCH);
        tokio::spawn(run(store, rx));
        Settler { tx }
    }

    /// Settles one held command; answers once it is committed: whether it was still held.
    ///
    /// # Errors
    /// The store's error, as text, when the write failed.
    pub(crate) async fn settle(&self, outcome: HeldOutcome) -> Result<bool, String> {
        let (tx, rx) = oneshot::channel();
        self.tx.send((outcome, tx)).await.map_err(|_| "the settler stopped".to_owned())?;
        rx.await.map_err(|_| "the settler stopped".to_owned())?
    }
}

async fn run(store: Arc<dyn Store>, mut rx: mpsc::Receiver<(HeldOutcome, Waiter)>) {
    let mut gathered = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut gathered, BATCH).await > 0 {
        let (outcomes, waiters): (Vec<HeldOutcome>, Vec<Waiter>) = gathered.drain(..).unzip();
        match store.settle_held(outcomes).await {
            Ok(held) => {
                for (waiter, held) in waiters.into_iter().zip(held) {
                    let _ = waiter.send(Ok(held));
                }
            }
            Err(e) => {
                let e = e.to_string();
                for waiter in waiters {
                    let _ = waiter.send(Err(e.clone()));
                }
            }
        }
    }
}

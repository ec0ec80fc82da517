//! Held commands' outcomes, committed in groups: each delivery loop hands its command's outcome
//! here and waits; one task takes what has gathered (up to [`BATCH`]) and settles it in one
//! store write (outcomes recorded, commands forgotten, job ends, one commit), counts the answered
//! ones in the [`Tally`], then answers every waiter. A fan-out with a TTL to thousands of
//! connected devices settles in a few commits instead of one per device. The delivery loop tells
//! the live job afterwards.

use std::sync::Arc;

use orb_store::{HeldOutcome, Store};

use super::tally::Tally;
use tokio::sync::{mpsc, oneshot};

/// Outcomes settled in one store write at most.
const BATCH: usize = 4096;

type Waiter = oneshot::Sender<Result<bool, String>>;

/// A held command's outcome, whether its device answered it, and who waits for the commit.
type Settling = (HeldOutcome, bool, Waiter);

/// The handle delivery loops settle through.
pub(crate) struct Settler {
    tx: mpsc::Sender<Settling>,
}

impl Settler {
    /// Starts the settling task on `store`, counting answers in `tally`; it ends when the
    /// settler is dropped.
    pub(crate) fn start(store: Arc<dyn Store>, tally: Arc<Tally>) -> Settler {
        let (tx, rx) = mpsc::channel(BATCH);
        tokio::spawn(run(store, tally, rx));
        Settler { tx }
    }

    /// Settles one held command (`answered`: by its device, which counts it as acknowledged
    /// when it was still held); answers once it is committed: whether it was still held.
    ///
    /// # Errors
    /// The store's error, as text, when the write failed.
    pub(crate) async fn settle(&self, outcome: HeldOutcome, answered: bool) -> Result<bool, String> {
        let (tx, rx) = oneshot::channel();
        self.tx.send((outcome, answered, tx)).await.map_err(|_| "the settler stopped".to_owned())?;
        rx.await.map_err(|_| "the settler stopped".to_owned())?
    }
}

async fn run(store: Arc<dyn Store>, tally: Arc<Tally>, mut rx: mpsc::Receiver<Settling>) {
    let mut gathered = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut gathered, BATCH).await > 0 {
        let mut outcomes = Vec::with_capacity(gathered.len());
        let mut waiters = Vec::with_capacity(gathered.len());
        for (outcome, answered, waiter) in gathered.drain(..) {
            waiters.push((answered.then(|| outcome.outcome.device.clone()), waiter));
            outcomes.push(outcome);
        }
        match store.settle_held(outcomes).await {
            Ok(held) => {
                for ((answered_by, waiter), held) in waiters.into_iter().zip(held) {
                    if let (Some(device), true) = (answered_by, held) {
                        tally.acknowledged(&device);
                    }
                    let _ = waiter.send(Ok(held));
                }
            }
            Err(e) => {
                let e = e.to_string();
                for (_, waiter) in waiters {
                    let _ = waiter.send(Err(e.clone()));
                }
            }
        }
    }
}

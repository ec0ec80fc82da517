//! Retained publications (pub/sub, issue 13): the last message kept per topic, in memory for new
//! subscriptions (sent to them first, before anything live), bounded in count and bytes, and
//! written to the store in order by one task that acknowledges each change once committed.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use orb_proto::topic::{Pattern, Topic};
use orb_proto::{ErrorBody, ErrorCode};
use orb_store::{RetainedChange, Store};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

/// Changes written in one store call at most.
const WRITE_BATCH: usize = 256;

/// One topic's retained publication.
#[derive(Debug, Clone)]
pub(crate) struct Kept {
    /// The body (JSON).
    pub(crate) body: Bytes,
    /// Its publisher.
    pub(crate) from: String,
    /// When it was published.
    pub(crate) at: DateTime<Utc>,
}

/// Every topic's retained publication, and their bytes.
#[derive(Debug, Default)]
pub(crate) struct RetainedSet {
    by_topic: BTreeMap<Topic, Kept>,
    bytes: usize,
}

fn cost(topic: &Topic, kept: &Kept) -> usize {
    topic.as_str().len() + kept.body.len() + kept.from.len()
}

impl RetainedSet {
    /// The set the store kept (every readable row, even beyond today's limits: those apply to
    /// what is retained from now on).
    pub(crate) fn load(rows: Vec<orb_store::Retained>) -> RetainedSet {
        let mut set = RetainedSet::default();
        for row in rows {
            match Topic::parse(&row.topic) {
                Ok(topic) => {
                    let kept = Kept { body: Bytes::from(row.body), from: row.sender, at: row.at };
                    set.bytes += cost(&topic, &kept);
                    set.by_topic.insert(topic, kept);
                }
                Err(e) => {
                    tracing::warn!(topic = %orb_proto::excerpt(&row.topic), "a stored retained publication is skipped: {}", e.message)
                }
            }
        }
        set
    }

    /// `topic` retains `kept` now, unless that makes more than `max` topics or `max_bytes`
    /// bytes.
    ///
    /// # Errors
    /// `too_many_retained`; nothing changes then.
    pub(crate) fn set(&mut self, topic: &Topic, kept: Kept, max: usize, max_bytes: usize) -> Result<(), ErrorBody> {
        let old = self.by_topic.get(topic).map_or(0, |k| cost(topic, k));
        if old == 0 && self.by_topic.len() >= max {
            let msg =
                format!("the server retains {} topics, the most it may (limits.max_retained)", self.by_topic.len());
            return Err(ErrorBody::new(ErrorCode::TooManyRetained, msg));
        }
        let bytes = self.bytes - old + cost(topic, &kept);
        if bytes > max_bytes {
            let msg = format!(
                "retaining this would make {bytes} bytes of retained publications, above limits.max_retained_bytes ({max_bytes})"
            );
            return Err(ErrorBody::new(ErrorCode::TooManyRetained, msg));
        }
        self.bytes = bytes;
        self.by_topic.insert(topic.clone(), kept);
        Ok(())
    }

    /// `topic` retains nothing any more.
    pub(crate) fn clear(&mut self, topic: &Topic) {
        if let Some(k) = self.by_topic.remove(topic) {
            self.bytes -= cost(topic, &k);
        }
    }

    /// The retained publications `pattern` matches, by topic.
    pub(crate) fn matching<'a>(&'a self, pattern: &'a Pattern) -> impl Iterator<Item = (&'a Topic, &'a Kept)> + 'a {
        self.by_topic.iter().filter(|(topic, _)| pattern.matches(topic))
    }

    /// Topics retained, and their bytes.
    pub(crate) fn size(&self) -> (usize, usize) {
        (self.by_topic.len(), self.bytes)
    }
}

/// A change for the store and who waits for its commit.
type Pending = (RetainedChange, oneshot::Sender<Result<(), ErrorBody>>);

/// Where retained changes go to be stored, in the order they were made.
#[derive(Clone)]
pub(crate) struct RetainedWriter(mpsc::UnboundedSender<Pending>);

impl RetainedWriter {
    /// Starts the writing task (on `tracker`); it ends once `stop` is cancelled and what was
    /// handed to it is written.
    pub(crate) fn start(
        store: Arc<dyn Store>,
        tracker: &tokio_util::task::TaskTracker,
        stop: CancellationToken,
    ) -> RetainedWriter {
        let (tx, rx) = mpsc::unbounded_channel();
        tracker.spawn(write(store, rx, stop));
        RetainedWriter(tx)
    }

    /// Hands `change` to the store; the receiver hears once it is committed (or failed).
    pub(crate) fn write(&self, change: RetainedChange) -> oneshot::Receiver<Result<(), ErrorBody>> {
        let (tx, rx) = oneshot::channel();
        if let Err(mpsc::error::SendError((_, tx))) = self.0.send((change, tx)) {
            let _ = tx.send(Err(ErrorBody::new(ErrorCode::ServerShutdown, "the server is stopping")));
        }
        rx
    }
}

/// The writing task: batches of changes, in order, each batch one store call.
async fn write(store: Arc<dyn Store>, mut rx: mpsc::UnboundedReceiver<Pending>, stop: CancellationToken) {
    loop {
        let first = tokio::select! {
            biased;
            first = rx.recv() => first,
            () = stop.cancelled() => rx.try_recv().ok(),
        };
        let Some(first) = first else { return };
        let mut batch = vec![first];
        while batch.len() < WRITE_BATCH {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let (changes, waiting): (Vec<_>, Vec<_>) = batch.into_iter().unzip();
        let result = store.retain(changes).await.map_err(crate::registry::store_error);
        if let Err(e) = &result {
            tracing::warn!(code = %e.code, "retained publications were not stored: {}", e.message);
        }
        for w in waiting {
            let _ = w.send(result.clone());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn kept(body: &str) -> Kept {
        Kept { body: Bytes::copy_from_slice(body.as_bytes()), from: "op".into(), at: Utc::now() }
    }

    #[test]
    fn counts_and_bytes_are_bounded_and_replacing_or_clearing_frees_them() {
        let mut set = RetainedSet::default();
        let (a, b) = (Topic::parse("a").unwrap(), Topic::parse("b").unwrap());
        set.set(&a, kept("1234"), 1, 100).unwrap();
        assert_eq!(set.size(), (1, 1 + 4 + 2));
        assert_eq!(set.set(&b, kept("1"), 1, 100).unwrap_err().code, ErrorCode::TooManyRetained, "one topic at most");
        set.set(&a, kept("12"), 1, 100).unwrap();
        assert_eq!(set.size(), (1, 1 + 2 + 2), "replaced");
        assert_eq!(set.set(&a, kept(&"x".repeat(100)), 1, 100).unwrap_err().code, ErrorCode::TooManyRetained);
        assert_eq!(set.size(), (1, 5), "nothing changed");
        set.clear(&a);
        set.clear(&a);
        assert_eq!(set.size(), (0, 0));
        set.set(&b, kept("1"), 1, 100).unwrap();
        let p = Pattern::parse(">").unwrap();
        assert_eq!(set.matching(&p).map(|(t, _)| t.as_str()).collect::<Vec<_>>(), ["b"]);
    }
}

//! Subscriptions as a client sees them (pub/sub, issue 13): [`crate::Client::subscribe`] asks
//! the server for a pattern and returns a [`Subscription`], an inbox of the [`Message`]s
//! published on matching topics, numbered in arrival order on this connection. The server sends
//! each publication once per connection; the client hands it to every local subscription whose
//! pattern matches. A retained publication the server sends when a subscription starts names
//! that subscription (`re`) and goes to it alone.
//!
//! A [`Subscription`] is an inbox read three ways: [`Subscription::next`] awaits the next
//! message, it is a [`futures_util::Stream`] of them, and [`Subscription::take_pending`] takes
//! every message waiting now without waiting (for polling loops). Each [`Message`] carries its
//! sequence number on the connection, its sender, its topic and its body. Commands sent to this
//! client do not arrive here: they go to the [`crate::Handlers`] given to
//! [`crate::Client::connect`], whose answer is the command's reply, or to an [`crate::Inbox`]
//! that merges commands and subscriptions for a program that reads one loop.
//!
//! # A reader that falls behind
//! An inbox holds at most [`INBOX`] unread messages. Beyond, new ones are **dropped and counted,
//! never silently**: [`Subscription::dropped`] is the total, and the next message that does get
//! in says how many were dropped just before it ([`Message::dropped_before`]); the first drop of
//! a subscription is also logged (`warn`). The library does not stop reading the connection
//! instead (backpressure): one connection carries every subscription, the replies to requests,
//! the commands an agent must answer and the heartbeat, so one unread inbox would stall all of
//! them and the server would soon close the connection as a slow consumer, losing everything
//! queued. Dropping at the one inbox that is behind keeps the rest flowing, as NATS clients do
//! with a slow subscription. A reader that must not lose messages reads promptly (hand them to
//! your own queue, or to a task per subscription) and treats a non-zero `dropped_before` as a
//! gap; `orb sub` reports it and exits 1.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use orb_proto::topic::{Pattern, Topic};
use tokio::sync::mpsc;

/// Unread messages one subscription holds at most.
pub const INBOX: usize = 10_000;

/// One message published on a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its place among the messages this connection received (1, 2, ...).
    pub seq: u64,
    /// The topic it was published on.
    pub topic: String,
    /// Who published it: a device id, an operator session's name, or `$server`.
    pub from: String,
    /// The body (JSON).
    pub body: Bytes,
    /// A retained publication, sent when the subscription started (published before it).
    pub retained: bool,
    /// Messages of this subscription dropped just before this one because its inbox was full
    /// (its reader fell behind): 0 when none were. See [`Subscription::dropped`].
    pub dropped_before: u64,
}

/// The local end of one subscription.
pub(crate) struct Local {
    pattern: Pattern,
    tx: mpsc::Sender<Message>,
    dropped: Arc<AtomicU64>,
    /// Dropped since the last message that got into the inbox (only the reader task routes, so
    /// plain loads and stores suffice).
    gap: AtomicU64,
}

impl Local {
    /// Puts `m` in the inbox, saying how many were dropped before it; or counts it dropped.
    fn deliver(&self, mut m: Message) {
        m.dropped_before = self.gap.load(Ordering::Relaxed);
        if self.tx.try_send(m).is_ok() {
            self.gap.store(0, Ordering::Relaxed);
            return;
        }
        if self.dropped.fetch_add(1, Ordering::Relaxed) == 0 {
            tracing::warn!(
                pattern = self.pattern.as_str(),
                "a subscription's reader fell behind: its inbox holds {INBOX} unread messages, so new ones are dropped"
            );
        }
        self.gap.fetch_add(1, Ordering::Relaxed);
    }
}

/// The subscriptions of one connection, by the id each was sent with.
#[derive(Default)]
pub(crate) struct Subscriptions {
    by_id: std::sync::Mutex<HashMap<u64, Local>>,
    received: AtomicU64,
}

impl Subscriptions {
    /// Adds subscription `id` to `pattern`; its inbox and the count of messages dropped.
    pub(crate) fn add(&self, id: u64, pattern: Pattern) -> (mpsc::Receiver<Message>, Arc<AtomicU64>) {
        let (tx, rx) = mpsc::channel(INBOX);
        let dropped = Arc::new(AtomicU64::new(0));
        let local = Local { pattern, tx, dropped: Arc::clone(&dropped), gap: AtomicU64::new(0) };
        self.lock().insert(id, local);
        (rx, dropped)
    }

    /// Forgets subscription `id`.
    pub(crate) fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Forgets every subscription (the connection closed).
    pub(crate) fn clear(&self) {
        self.lock().clear();
    }

    /// Hands a publication to every subscription whose pattern matches `topic`, or, for a
    /// retained one sent as a subscription started, to that subscription (`to`) alone.
    pub(crate) fn route(&self, topic: String, from: String, body: Bytes, to: Option<&str>) {
        let topic = Topic::relayed(topic);
        let seq = self.received.fetch_add(1, Ordering::Relaxed) + 1;
        let to = match to.map(str::parse::<u64>) {
            Some(Ok(id)) => Some(id),
            Some(Err(_)) => return tracing::debug!("retained publication for no subscription of ours ignored"),
            None => None,
        };
        let retained = to.is_some();
        let subs = self.lock();
        // A copy for each but the last subscription, which gets the message itself.
        let mut previous: Option<&Local> = None;
        let matching = subs.iter().filter(|(id, l)| match to {
            Some(to) => **id == to,
            None => l.pattern.matches(&topic),
        });
        for (_, local) in matching {
            if let Some(p) = previous.replace(local) {
                let topic = topic.as_str().to_owned();
                p.deliver(Message { seq, topic, from: from.clone(), body: body.clone(), retained, dropped_before: 0 });
            }
        }
        if let Some(p) = previous {
            p.deliver(Message { seq, topic: topic.into_string(), from, body, retained, dropped_before: 0 });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Local>> {
        self.by_id.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A subscription: the messages published on topics matching its pattern, until it is dropped
/// (which unsubscribes) or the connection closes.
pub struct Subscription {
    pub(crate) id: u64,
    pub(crate) pattern: String,
    pub(crate) rx: mpsc::Receiver<Message>,
    pub(crate) dropped: Arc<AtomicU64>,
    pub(crate) client: crate::Client,
}

impl Subscription {
    /// The pattern subscribed to.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// The next message; `None` once the connection has closed.
    ///
    /// # Cancel safety
    /// Cancel-safe (a channel receive).
    pub async fn next(&mut self) -> Option<Message> {
        self.rx.recv().await
    }

    /// Every message waiting now, without waiting for more (for simple polling loops).
    pub fn take_pending(&mut self) -> Vec<Message> {
        let mut out = Vec::new();
        while let Ok(m) = self.rx.try_recv() {
            out.push(m);
        }
        out
    }

    /// Messages dropped so far because the inbox held [`INBOX`] unread ones (each message that
    /// got in after a drop says how many were dropped just before it:
    /// [`Message::dropped_before`]).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// A subscription is a [`futures_util::Stream`] of its messages (the same as
/// [`Subscription::next`]): `while let Some(m) = sub.next().await`, or the stream combinators
/// (`StreamExt::take`, `filter`, `select` with other streams). It ends once the connection has
/// closed and the inbox is read.
impl futures_util::Stream for Subscription {
    type Item = Message;

    fn poll_next(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Message>> {
        self.rx.poll_recv(cx)
    }
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").field("id", &self.id).field("pattern", &self.pattern).finish_non_exhaustive()
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.client.unsubscribe_quietly(self.id);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn publish(subs: &Subscriptions, n: u64) {
        subs.route(format!("a.{n}"), "op-1".into(), Bytes::from(n.to_string()), None);
    }

    #[test]
    fn a_full_inbox_drops_counts_and_the_next_message_in_says_how_many() {
        let subs = Subscriptions::default();
        let (mut rx, dropped) = subs.add(1, Pattern::parse("a.>").unwrap());
        let (mut other, other_dropped) = subs.add(2, Pattern::parse("a.*").unwrap());
        let total = INBOX as u64 + 3;
        for n in 1..=total {
            publish(&subs, n);
        }
        assert_eq!(dropped.load(Ordering::Relaxed), 3, "three past the inbox");
        let first = rx.try_recv().unwrap();
        assert_eq!((first.seq, first.dropped_before), (1, 0));
        // Room again: the next message in carries the gap, and its seq shows where it was.
        publish(&subs, total + 1);
        let mut last = None;
        while let Ok(m) = rx.try_recv() {
            last = Some(m);
        }
        let last = last.unwrap();
        assert_eq!((last.seq, last.dropped_before), (total + 1, 3), "{last:?}");
        publish(&subs, total + 2);
        assert_eq!(rx.try_recv().unwrap().dropped_before, 0, "the gap is told once");
        // Each subscription has its own inbox and count.
        assert_eq!(other_dropped.load(Ordering::Relaxed), 5);
        assert_eq!(other.try_recv().unwrap().dropped_before, 0);
    }
}

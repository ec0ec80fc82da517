//! Subscriptions as a client sees them (pub/sub, issue 13): [`crate::Client::subscribe`] asks
//! the server for a pattern and returns a [`Subscription`], an inbox of the [`Message`]s
//! published on matching topics, numbered in arrival order on this connection. The server sends
//! each publication once per connection; the client hands it to every local subscription whose
//! pattern matches. A retained publication the server sends when a subscription starts names
//! that subscription (`re`) and goes to it alone. An inbox holds at most [`INBOX`] unread messages: beyond, new ones are
//! dropped and counted ([`Subscription::dropped`]), so a subscription nobody reads never stalls
//! the connection.

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
}

/// The local end of one subscription.
pub(crate) struct Local {
    pattern: Pattern,
    tx: mpsc::Sender<Message>,
    dropped: Arc<AtomicU64>,
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
        let local = Local { pattern, tx, dropped: Arc::clone(&dropped) };
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
        let deliver = |local: &Local, m: Message| {
            if local.tx.try_send(m).is_err() {
                local.dropped.fetch_add(1, Ordering::Relaxed);
            }
        };
        // A copy for each but the last subscription, which gets the message itself.
        let mut previous: Option<&Local> = None;
        let matching = subs.iter().filter(|(id, l)| match to {
            Some(to) => **id == to,
            None => l.pattern.matches(&topic),
        });
        for (_, local) in matching {
            if let Some(p) = previous.replace(local) {
                let copy =
                    Message { seq, topic: topic.as_str().to_owned(), from: from.clone(), body: body.clone(), retained };
                deliver(p, copy);
            }
        }
        if let Some(p) = previous {
            deliver(p, Message { seq, topic: topic.into_string(), from, body, retained });
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

    /// Messages dropped because the inbox held [`INBOX`] unread ones.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
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

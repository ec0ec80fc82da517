//! Subscriptions by pattern (pub/sub, issue 13): a tree of topic segments where each node keeps
//! the connections whose pattern ends there, or ends there with `>`; `*` is a child of its own.
//! A publication walks the tree once along its topic's segments and collects each matching
//! connection once, however many of its patterns match. Each connection's subscriptions are also
//! kept by id, to unsubscribe one and to drop them all when it closes. Bounded per connection.
//! The `pub` frames queued are counted in the server's metrics.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use bytes::Bytes;
use orb_proto::topic::{Pattern, Topic};
use orb_proto::{Envelope, Kind};

use super::delivery::Outbox;
use crate::metrics::Metrics;

/// One tree node: subscribers (by connection id, with how to reach them, `V`) whose pattern
/// ends here, or ends here with `>`.
struct Node<V> {
    children: HashMap<String, Node<V>>,
    star: Option<Box<Node<V>>>,
    here: HashMap<u64, Entry<V>>,
    rest: HashMap<u64, Entry<V>>,
}

impl<V> Default for Node<V> {
    fn default() -> Self {
        Node { children: HashMap::new(), star: None, here: HashMap::new(), rest: HashMap::new() }
    }
}

/// A connection at a node: how to reach it, and how many of its patterns end there.
struct Entry<V> {
    value: V,
    patterns: usize,
}

impl<V: Clone> Node<V> {
    fn is_empty(&self) -> bool {
        self.children.is_empty() && self.star.is_none() && self.here.is_empty() && self.rest.is_empty()
    }

    fn insert<'a>(&mut self, mut segments: impl Iterator<Item = &'a str>, conn: u64, value: &V) {
        let slot = match segments.next() {
            None => &mut self.here,
            Some(">") => &mut self.rest,
            Some("*") => return self.star.get_or_insert_with(Box::default).insert(segments, conn, value),
            Some(seg) => return self.children.entry(seg.to_owned()).or_default().insert(segments, conn, value),
        };
        slot.entry(conn).or_insert_with(|| Entry { value: value.clone(), patterns: 0 }).patterns += 1;
    }

    /// Removes one pattern of `conn`; prunes nodes left empty.
    fn remove<'a>(&mut self, mut segments: impl Iterator<Item = &'a str>, conn: u64) {
        let slot = match segments.next() {
            None => &mut self.here,
            Some(">") => &mut self.rest,
            Some("*") => {
                if let Some(star) = &mut self.star {
                    star.remove(segments, conn);
                    if star.is_empty() {
                        self.star = None;
                    }
                }
                return;
            }
            Some(seg) => {
                if let Some(child) = self.children.get_mut(seg) {
                    child.remove(segments, conn);
                    if child.is_empty() {
                        self.children.remove(seg);
                    }
                }
                return;
            }
        };
        if let Some(entry) = slot.get_mut(&conn) {
            entry.patterns -= 1;
            if entry.patterns == 0 {
                slot.remove(&conn);
            }
        }
    }

    /// Adds the connections whose patterns match `segments`; `root`: this is the tree's root,
    /// where wildcards do not match a `$` segment (see `orb_proto::topic`).
    fn collect(&self, segments: &[&str], out: &mut HashMap<u64, V>, root: bool) {
        let Some((first, rest)) = segments.split_first() else {
            add(&self.here, out);
            return;
        };
        let wildcards = !(root && first.starts_with('$'));
        if wildcards {
            add(&self.rest, out);
        }
        if let Some(child) = self.children.get(*first) {
            child.collect(rest, out, false);
        }
        if let Some(star) = self.star.as_ref().filter(|_| wildcards) {
            star.collect(rest, out, false);
        }
    }
}

fn add<V: Clone>(entries: &HashMap<u64, Entry<V>>, out: &mut HashMap<u64, V>) {
    for (conn, e) in entries {
        out.entry(*conn).or_insert_with(|| e.value.clone());
    }
}

/// Why a subscription was refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SubscribeError {
    /// The connection holds its limit of subscriptions.
    TooMany(usize),
}

/// Every subscription of every connection.
pub(crate) struct Topics {
    tree: RwLock<Node<Outbox>>,
    /// Each connection's subscriptions by the id it gave them.
    by_conn: Mutex<HashMap<u64, HashMap<String, Pattern>>>,
    /// Subscriptions held, read without a lock: a publication with no subscriber anywhere (a
    /// job's progress, most of the time) costs one atomic load.
    held: AtomicUsize,
    /// Where the `pub` frames queued are counted.
    metrics: Arc<Metrics>,
}

impl Topics {
    /// No subscriptions yet; publications counted in `metrics`.
    pub(crate) fn new(metrics: Arc<Metrics>) -> Topics {
        Topics { tree: RwLock::default(), by_conn: Mutex::default(), held: AtomicUsize::new(0), metrics }
    }

    /// Subscribes `outbox`'s connection to `pattern` under `id` (replacing what that id named),
    /// unless it holds `max` subscriptions already; `first` runs once it is allowed, before the
    /// subscription takes effect (it queues the retained publications, so they come first).
    pub(crate) fn subscribe(
        &self,
        outbox: &Outbox,
        id: &str,
        pattern: Pattern,
        max: usize,
        first: impl FnOnce(),
    ) -> Result<(), SubscribeError> {
        let mut by_conn = self.by_conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let subs = by_conn.entry(outbox.conn).or_default();
        if !subs.contains_key(id) && subs.len() >= max {
            return Err(SubscribeError::TooMany(max));
        }
        first();
        let mut tree = self.tree.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(old) = subs.insert(id.to_owned(), pattern.clone()) {
            tree.remove(old.segments(), outbox.conn);
        } else {
            self.held.fetch_add(1, Ordering::Relaxed);
        }
        tree.insert(pattern.segments(), outbox.conn, outbox);
        Ok(())
    }

    /// Ends subscription `id` of connection `conn`; false when it has none by that id.
    pub(crate) fn unsubscribe(&self, conn: u64, id: &str) -> bool {
        let mut by_conn = self.by_conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Some(pattern) = by_conn.get_mut(&conn).and_then(|subs| subs.remove(id)) else { return false };
        self.held.fetch_sub(1, Ordering::Relaxed);
        self.tree.write().unwrap_or_else(std::sync::PoisonError::into_inner).remove(pattern.segments(), conn);
        true
    }

    /// Ends every subscription of connection `conn` (it closed).
    pub(crate) fn drop_connection(&self, conn: u64) {
        let subs = self.by_conn.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&conn);
        if let Some(subs) = subs {
            self.held.fetch_sub(subs.len(), Ordering::Relaxed);
            let mut tree = self.tree.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            for pattern in subs.values() {
                tree.remove(pattern.segments(), conn);
            }
        }
    }

    /// The connections subscribed to `topic`, each once.
    pub(crate) fn matching(&self, topic: &Topic) -> Vec<Outbox> {
        if self.held.load(Ordering::Relaxed) == 0 {
            return Vec::new();
        }
        let segments: Vec<&str> = topic.as_str().split('.').collect();
        let mut out = HashMap::new();
        self.tree.read().unwrap_or_else(std::sync::PoisonError::into_inner).collect(&segments, &mut out, true);
        out.into_values().collect()
    }

    /// Queues one `pub` frame (`topic`, `from`, the body `body` makes) for every connection
    /// subscribed to `topic`, encoded once per codec; the body is made only when someone is
    /// subscribed. Returns how many connections it was queued for.
    pub(crate) fn publish(&self, topic: &Topic, from: &str, body: impl FnOnce() -> Option<Bytes>) -> usize {
        let subscribers = self.matching(topic);
        if subscribers.is_empty() {
            return 0;
        }
        let mut env = Envelope::new(Kind::Pub);
        env.topic = Some(topic.as_str().to_owned());
        env.from = Some(from.to_owned());
        env.body = body();
        let mut frames: [Option<Bytes>; 2] = [None, None];
        let mut bytes = 0;
        let queued = subscribers
            .into_iter()
            .filter(|outbox| {
                let frame =
                    frames[crate::jobs::codec_slot(outbox.codec)].get_or_insert_with(|| outbox.codec.encode(&env));
                let len = frame.len() as u64;
                outbox.deliver(frame.clone()).is_ok_and(|()| {
                    bytes += len;
                    true
                })
            })
            .count();
        self.metrics.sent_many(Kind::Pub, queued as u64, bytes);
        queued
    }

    /// Subscriptions held now, over all connections.
    pub(crate) fn count(&self) -> usize {
        self.held.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn matching(tree: &Node<()>, topic: &str) -> Vec<u64> {
        let segments: Vec<&str> = topic.split('.').collect();
        let mut out = HashMap::new();
        tree.collect(&segments, &mut out, true);
        let mut conns: Vec<u64> = out.into_keys().collect();
        conns.sort_unstable();
        conns
    }

    #[test]
    fn a_connection_is_found_once_and_removed_patterns_are_gone() {
        let mut tree = Node::default();
        tree.insert("a.*".split('.'), 1, &());
        tree.insert("a.>".split('.'), 1, &());
        tree.insert("a.b".split('.'), 2, &());
        assert_eq!(matching(&tree, "a.b"), [1, 2], "once per connection");
        assert_eq!(matching(&tree, "a.b.c"), [1]);
        assert!(matching(&tree, "a").is_empty());
        tree.remove("a.*".split('.'), 1);
        assert_eq!(matching(&tree, "a.b"), [1, 2], "a.> still matches");
        tree.remove("a.>".split('.'), 1);
        tree.remove("a.b".split('.'), 2);
        assert!(tree.is_empty(), "pruned");
    }

    proptest! {
        /// The tree finds exactly the connections a pattern-by-pattern check finds.
        #[test]
        fn the_tree_agrees_with_matching_each_pattern(
            subs in prop::collection::vec(
                (0u64..4, prop::collection::vec(prop::sample::select(vec!["a", "b", "*", "$orb"]), 1..4), any::<bool>()),
                0..12,
            ),
            topic in prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "$orb"]), 1..5),
        ) {
            let mut tree = Node::default();
            let mut patterns = Vec::new();
            for (conn, segs, tail) in subs {
                let mut segs = segs;
                if tail {
                    segs.push(">");
                }
                let text = segs.join(".");
                tree.insert(text.split('.'), conn, &());
                patterns.push((conn, Pattern::parse(&text).unwrap()));
            }
            let topic = Topic::parse(&topic.join(".")).unwrap();
            let mut expected: Vec<u64> = patterns.iter().filter(|(_, p)| p.matches(&topic)).map(|(c, _)| *c).collect();
            expected.sort_unstable();
            expected.dedup();
            prop_assert_eq!(matching(&tree, topic.as_str()), expected);
        }
    }
}

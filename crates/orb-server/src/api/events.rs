//! `GET /v1/events?pattern=P`: the publications on topics matching `P` (default `$orb.>`:
//! presence and job progress) as Server-Sent Events, one `pub` event each whose data is
//! `{"topic", "from", "body", "retained"}` (the retained publications `P` matches come first).
//! The stream subscribes through `Broker::subscribe` like any subscriber, with a delivery queue of
//! its own bounded as a connection's (`limits.outbound_queue`, `outbound_queue_bytes`): a client
//! that reads too slowly is cut off (slow consumer), never the publishers held up. Its
//! subscription ends when the client goes away.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use bytes::Bytes;
use futures_util::Stream;
use orb_io::queue::{Batch, QueueRx};
use orb_proto::{Codec, Envelope};
use serde::Deserialize;

use super::Api;
use super::auth::Operator;
use super::error::ApiError;
use crate::Broker;
use crate::close::Closer;
use crate::router::delivery::Outbox;

/// `GET /v1/events` query.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct EventsQuery {
    /// Topic pattern (default `$orb.>`).
    #[serde(default)]
    pattern: Option<String>,
}

/// Ends the stream's subscription when the stream is dropped (the client went away).
struct Subscribed {
    broker: Broker,
    conn: u64,
}

impl Drop for Subscribed {
    fn drop(&mut self) {
        self.broker.connection_closed(self.conn);
    }
}

/// What the stream holds between events.
struct Feed {
    rx: QueueRx,
    closer: Closer,
    batch: Batch,
    pending: VecDeque<Bytes>,
    _subscribed: Subscribed,
}

/// `GET /v1/events?pattern=P`.
pub(crate) async fn stream(
    State(api): State<Arc<Api>>,
    Operator(who): Operator,
    query: Result<Query<EventsQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let Query(q) = query?;
    let pattern = q.pattern.unwrap_or_else(|| "$orb.>".to_owned());
    let broker = &api.shared.broker;
    let limits = broker.limits();
    let (tx, rx) =
        orb_io::queue::bounded(orb_io::queue::Limits::new(limits.outbound_queue, limits.outbound_queue_bytes));
    let outbox = Outbox {
        conn: broker.sessions().next_conn_id(),
        tx,
        closer: Closer::default(),
        codec: Codec::Json,
        max_frame: limits.max_frame,
    };
    broker.subscribe(&who, &outbox, "events", &pattern)?;
    let feed = Feed {
        rx,
        closer: outbox.closer.clone(),
        batch: Batch::default(),
        pending: VecDeque::new(),
        _subscribed: Subscribed { broker: broker.clone(), conn: outbox.conn },
    };
    let events = futures_util::stream::unfold(feed, |mut feed| async move {
        loop {
            if let Some(frame) = feed.pending.pop_front() {
                let event = event_of(&frame);
                return Some((Ok(event), feed));
            }
            tokio::select! {
                _ = feed.closer.closed() => return None,
                _ = feed.rx.recv_into(&mut feed.batch, 64, usize::MAX) => {
                    feed.pending.extend(feed.batch.frames().iter().cloned());
                    feed.batch.written();
                }
            }
        }
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// A publication (the JSON `pub` frame queued for the stream) as an SSE event.
fn event_of(frame: &Bytes) -> Event {
    let data = match Codec::Json.decode(frame) {
        Ok(Envelope { topic, from, retain, body, .. }) => {
            let body: serde_json::Value =
                body.and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or(serde_json::Value::Null);
            serde_json::json!({"topic": topic, "from": from, "body": body, "retained": retain.unwrap_or(false)})
        }
        Err(e) => serde_json::json!({"error": e.to_string()}),
    };
    Event::default().event("pub").json_data(data).unwrap_or_else(|_| Event::default().event("pub"))
}

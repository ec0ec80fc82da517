//! `GET /v1/events?pattern=P` and `GET /v1/events/ws?pattern=P`: the publications on topics
//! matching `P` (default `$orb.>`: presence and job progress) as Server-Sent Events (one `pub`
//! event each) or WebSocket text messages, each `{"topic", "from", "body", "retained"}` (the
//! retained publications `P` matches come first).
//! The stream subscribes through `Broker::subscribe` like any subscriber, with a delivery queue of
//! its own bounded as a connection's (`limits.outbound_queue`, `outbound_queue_bytes`): a client
//! that reads too slowly is cut off (slow consumer), never the publishers held up. Its
//! subscription ends when the client goes away; the stream ends when the server stops.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::response::Response;
use axum::response::sse::{Event, KeepAlive, Sse};
use bytes::Bytes;
use futures_util::Stream;
use orb_io::queue::{Batch, QueueRx};
use orb_proto::{Codec, Envelope};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::Api;
use super::auth::Operator;
use super::error::ApiError;
use super::openapi::refusals;
use crate::Broker;
use crate::close::Closer;
use crate::router::delivery::Outbox;

/// `GET /v1/events` and `GET /v1/events/ws` query.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct EventsQuery {
    /// Topic pattern (default `$orb.>`: presence and job progress): dot-separated segments, `*`
    /// one segment, `>` the rest; `$orb.` topics only when named; at most 256 bytes.
    #[serde(default)]
    #[param(min_length = 1, max_length = 256, example = "$orb.presence.>")]
    pattern: Option<String>,
}

/// One publication, as the event feeds carry it (the data of a `pub` Server-Sent Event, or one
/// WebSocket text message).
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct Publication {
    /// The topic it was published on.
    topic: Option<String>,
    /// Who published it: a device id, an operator session, `http` for the API, `$server`.
    from: Option<String>,
    /// Its body (JSON), null when none.
    #[schema(value_type = Value)]
    body: serde_json::Value,
    /// A retained publication the pattern matched when the feed started (these come first).
    retained: bool,
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

/// One subscriber's publications, in order.
struct Feed {
    rx: QueueRx,
    closer: Closer,
    shutdown: tokio_util::sync::CancellationToken,
    batch: Batch,
    pending: VecDeque<Bytes>,
    _subscribed: Subscribed,
}

impl Feed {
    /// Subscribes `who` to `pattern` (default `$orb.>`).
    fn open(api: &Api, who: &crate::identity::Requester, pattern: Option<String>) -> Result<Feed, ApiError> {
        let pattern = pattern.unwrap_or_else(|| "$orb.>".to_owned());
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
        broker.subscribe(who, &outbox, "events", &pattern)?;
        Ok(Feed {
            rx,
            closer: outbox.closer.clone(),
            shutdown: broker.shutdown_token().clone(),
            batch: Batch::default(),
            pending: VecDeque::new(),
            _subscribed: Subscribed { broker: broker.clone(), conn: outbox.conn },
        })
    }

    /// The next publication as `{"topic", "from", "body", "retained"}`; `None` once the
    /// subscriber was cut off or the server stops.
    async fn next(&mut self) -> Option<serde_json::Value> {
        loop {
            if let Some(frame) = self.pending.pop_front() {
                return Some(publication(&frame));
            }
            tokio::select! {
                _ = self.closer.closed() => return None,
                () = self.shutdown.cancelled() => return None,
                _ = self.rx.recv_into(&mut self.batch, 64, usize::MAX) => {
                    self.pending.extend(self.batch.frames().iter().cloned());
                    self.batch.written();
                }
            }
        }
    }
}

/// `GET /v1/events?pattern=P`: Server-Sent Events.
#[utoipa::path(
    get,
    path = "/v1/events",
    operation_id = "events",
    tag = "events",
    security(("bearer" = [])),
    params(EventsQuery),
    responses(
        (status = 200, content_type = "text/event-stream", body = String,
         description = "One `pub` event per publication on a topic the pattern matches, its data one `Publication` \
                        object as JSON; comments keep the connection alive. Endless: it ends when the client goes \
                        away, reads too slowly (`slow_consumer`) or the server stops"),
        EventsRefusals,
    )
)]
pub(crate) async fn stream(
    State(api): State<Arc<Api>>,
    Operator(who): Operator,
    query: Result<Query<EventsQuery>, QueryRejection>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let Query(q) = query?;
    let feed = Feed::open(&api, &who, q.pattern)?;
    let events = futures_util::stream::unfold(feed, |mut feed| async move {
        let data = feed.next().await?;
        let event = Event::default().event("pub").json_data(data).unwrap_or_else(|_| Event::default().event("pub"));
        Some((Ok(event), feed))
    });
    Ok(Sse::new(events).keep_alive(KeepAlive::default()))
}

/// `GET /v1/events/ws?pattern=P`: the same as WebSocket text messages (messages from the client
/// are ignored; a close ends it).
#[utoipa::path(
    get,
    path = "/v1/events/ws",
    operation_id = "events_ws",
    tag = "events",
    security(("bearer" = [])),
    params(EventsQuery),
    responses(
        (status = 101, description = "A WebSocket upgrade request (`Connection: upgrade`, `Upgrade: websocket`, \
                                      `Sec-WebSocket-Version: 13`, `Sec-WebSocket-Key`) becomes a WebSocket: one \
                                      text message per publication, a `Publication` object as JSON"),
        WebSocketRefusals,
    )
)]
pub(crate) async fn websocket(
    State(api): State<Arc<Api>>,
    Operator(who): Operator,
    query: Result<Query<EventsQuery>, QueryRejection>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query?;
    let upgrade = upgrade?;
    let mut feed = Feed::open(&api, &who, q.pattern)?;
    Ok(upgrade.on_upgrade(move |mut socket| async move {
        loop {
            tokio::select! {
                next = feed.next() => {
                    let Some(data) = next else { break };
                    if socket.send(Message::Text(data.to_string().into())).await.is_err() {
                        break;
                    }
                }
                incoming = socket.recv() => match incoming {
                    None | Some(Err(_) | Ok(Message::Close(_))) => break,
                    Some(Ok(_)) => {}
                },
            }
        }
        let _ = socket.send(Message::Close(None)).await;
    }))
}

/// A publication (the JSON `pub` frame queued for the feed) as the API shows it.
fn publication(frame: &Bytes) -> serde_json::Value {
    match Codec::Json.decode(frame) {
        Ok(Envelope { topic, from, retain, body, .. }) => {
            let body: serde_json::Value =
                body.and_then(|b| serde_json::from_slice(&b).ok()).unwrap_or(serde_json::Value::Null);
            let publication = Publication { topic, from, body, retained: retain.unwrap_or(false) };
            serde_json::to_value(publication).unwrap_or_else(|e| serde_json::json!({"error": e.to_string()}))
        }
        Err(e) => serde_json::json!({"error": e.to_string()}),
    }
}

refusals!(
    /// Refusals of `GET /v1/events`.
    EventsRefusals, true: BadRequest, BadTopic, TooManySubscriptions
);

refusals!(
    /// Refusals of `GET /v1/events/ws`: `bad_request` also for a request that is no WebSocket upgrade.
    WebSocketRefusals, true: BadRequest, BadTopic, TooManySubscriptions
);

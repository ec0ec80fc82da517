//! Publish and subscribe through the one door (issue 13): a client publishes a JSON body on a
//! topic; every connection subscribed to a matching pattern gets it once, as one `pub` frame
//! encoded once per codec in use and queued on the connection's bounded outbox (a full one is
//! closed as a slow consumer, as for commands: nobody else waits). Subscriptions live with their
//! connection (`router::topics`) and end with it. `$` topics (`$orb.` events and any other) are
//! the server's own: clients may subscribe to them, never publish. A publication may be retained (`router::retained`):
//! kept per topic, stored, and sent first to every new subscription it matches. A device's
//! publication on its own `telemetry.<id>.sys` is also kept as its latest telemetry
//! (`broker::telemetry`).

use bytes::Bytes;
use orb_proto::topic::{Pattern, Topic};
use orb_proto::{Envelope, ErrorBody, ErrorCode, Kind};
use orb_store::RetainedChange;
use tokio::sync::oneshot;

use super::{Action, Broker, RELAY_RESERVE, check_args};
use crate::identity::Requester;
use crate::router::delivery::Outbox;
use crate::router::retained::Kept;
use crate::router::topics::SubscribeError;

impl Broker {
    /// Publishes `body` (JSON, `None` for null) on `topic` as `who`. Returns how many
    /// connections it was queued for.
    ///
    /// # Errors
    /// `bad_topic`, `forbidden` (a `$orb.` topic, or the policy), `bad_body`, `frame_too_large`
    /// (a body that would not fit a subscriber's frame with the topic and sender added).
    pub fn publish(&self, who: &Requester, topic: &str, body: Option<Bytes>) -> Result<usize, ErrorBody> {
        let topic = self.check_publication(who, topic, body.as_ref())?;
        self.note_telemetry(who, &topic, body.as_ref(), chrono::Utc::now());
        Ok(self.fan_out(&topic, &who.identity.name, body))
    }

    /// Publishes a telemetry sample device `who` took offline at `at` and sent through its
    /// outbox (`$orb.telemetry`), on its `telemetry.<id>.sys`, as if it had published it then;
    /// it becomes the device's latest unless a later one is kept.
    ///
    /// # Errors
    /// As [`Broker::publish`] (the sample stays stored as a message).
    pub(super) fn publish_offline_sample(
        &self,
        who: &Requester,
        device: &str,
        body: Option<Bytes>,
        at: chrono::DateTime<chrono::Utc>,
    ) -> Result<usize, ErrorBody> {
        let topic = self.check_publication(who, &format!("telemetry.{device}.sys"), body.as_ref())?;
        self.note_telemetry(who, &topic, body.as_ref(), at);
        Ok(self.fan_out(&topic, &who.identity.name, body))
    }

    /// [`Broker::publish`], and `topic` retains `body` from now on (a `null` or absent body
    /// clears what it retained): new subscriptions it matches are sent it first. Returns how
    /// many connections it was queued for, and a receiver told once the change is committed to
    /// the store. Retained changes are applied, delivered and stored in one order.
    ///
    /// # Errors
    /// As [`Broker::publish`], and `too_many_retained` (`limits.max_retained`,
    /// `limits.max_retained_bytes`): then nothing is retained or delivered.
    pub fn publish_retained(
        &self,
        who: &Requester,
        topic: &str,
        body: Option<Bytes>,
    ) -> Result<(usize, oneshot::Receiver<Result<(), ErrorBody>>), ErrorBody> {
        let topic = self.check_publication(who, topic, body.as_ref())?;
        self.0.policy.check(&who.identity, &Action::Retain { topic: topic.as_str() })?;
        let from = who.identity.name.clone();
        let mut retained = self.0.retained.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let change = match body.as_ref().filter(|b| b.as_ref() != b"null") {
            None => {
                retained.clear(&topic);
                RetainedChange::Clear(topic.as_str().to_owned())
            }
            Some(b) => {
                let kept = Kept { body: b.clone(), from: from.clone(), at: chrono::Utc::now() };
                let limits = self.limits();
                retained.set(&topic, kept.clone(), limits.max_retained, limits.max_retained_bytes)?;
                RetainedChange::Set(orb_store::Retained {
                    topic: topic.as_str().to_owned(),
                    body: String::from_utf8_lossy(&kept.body).into_owned(),
                    sender: from.clone(),
                    at: kept.at,
                })
            }
        };
        let committed = self.0.retained_writer.write(change);
        self.note_telemetry(who, &topic, body.as_ref(), chrono::Utc::now());
        let delivered = self.fan_out(&topic, &from, body);
        drop(retained);
        Ok((delivered, committed))
    }

    /// Checks a publication: its topic, the policy, its body.
    fn check_publication(&self, who: &Requester, topic: &str, body: Option<&Bytes>) -> Result<Topic, ErrorBody> {
        let topic = Topic::parse(topic)?;
        if topic.is_reserved() {
            let msg = format!(
                "'{}': topics starting with $ ($orb, $orb.*, and any other) are published by the server only",
                orb_proto::excerpt(topic.as_str())
            );
            return Err(ErrorBody::new(ErrorCode::Forbidden, msg));
        }
        self.0.policy.check(&who.identity, &Action::Publish { topic: topic.as_str() })?;
        check_args(body)?;
        let room = self.limits().max_frame.saturating_sub(RELAY_RESERVE);
        if let Some(b) = body.filter(|b| b.len() > room) {
            let msg = format!("the body is {} bytes; a publication carries at most {room}", b.len());
            return Err(ErrorBody::new(ErrorCode::FrameTooLarge, msg));
        }
        Ok(topic)
    }

    /// A publication on the publisher's own `telemetry.<id>.sys` becomes its latest telemetry
    /// (`broker::telemetry`); other topics cost one prefix check.
    fn note_telemetry(&self, who: &Requester, topic: &Topic, body: Option<&Bytes>, at: chrono::DateTime<chrono::Utc>) {
        self.0.telemetry.note(&self.0.registry, &who.identity, topic.as_str(), body, at);
    }

    /// Publishes the server's own event `body` on `$orb.` topic `topic` (presence).
    pub(crate) fn publish_event(&self, topic: &str, body: &serde_json::Value) {
        match Topic::parse(topic) {
            Ok(topic) => {
                let body = Bytes::from(serde_json::to_vec(body).expect("a JSON value serialises"));
                self.fan_out(&topic, "$server", Some(body));
            }
            Err(e) => {
                tracing::warn!(topic = %orb_proto::excerpt(topic), "an event on a bad topic was not published: {}", e.message)
            }
        }
    }

    /// `$orb.presence.<id>`: device `id` connected (`reason` `None`) or disconnected for `reason`.
    pub(crate) fn publish_presence(&self, id: &orb_proto::DeviceId, reason: Option<&str>) {
        let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let body = match reason {
            None => serde_json::json!({"id": id.as_str(), "status": "online", "at": at}),
            Some(r) => serde_json::json!({"id": id.as_str(), "status": "offline", "reason": r, "at": at}),
        };
        self.publish_event(&format!("$orb.presence.{id}"), &body);
    }

    /// Publishes the last will `will` of `who`, whose connection ended without a `bye` (retained
    /// too when the will says so).
    pub(crate) fn publish_will(&self, who: &Requester, will: &orb_proto::message::Will) {
        let body = will.body.as_ref().map(|b| Bytes::copy_from_slice(b.0.get().as_bytes()));
        // Checked in the hello; its topic may have become unpublishable only by policy. The
        // store's commit of a retained will is not awaited: nobody waits for it (the writer
        // logs a store failure).
        let published = if will.retain {
            self.publish_retained(who, &will.topic, body).map(|(delivered, _committed)| delivered)
        } else {
            self.publish(who, &will.topic, body)
        };
        if let Err(e) = published {
            tracing::warn!(who = who.identity.name, code = %e.code, "a last will was not published: {}", e.message);
        }
    }

    /// Queues one `pub` frame for every connection subscribed to `topic`.
    fn fan_out(&self, topic: &Topic, from: &str, body: Option<Bytes>) -> usize {
        self.0.topics.publish(topic, from, || body)
    }

    /// Subscribes `outbox`'s connection to `pattern` under the client's `id` (a second
    /// subscription with the same id replaces the first). The retained publications it matches
    /// are queued first, by topic, each a `pub` with `retain` and `re` = `id` (for this
    /// subscription only), before anything published later.
    ///
    /// # Errors
    /// `bad_topic`, `forbidden`, `too_many_subscriptions` (`limits.max_subscriptions` per
    /// connection).
    pub fn subscribe(&self, who: &Requester, outbox: &Outbox, id: &str, pattern: &str) -> Result<Pattern, ErrorBody> {
        let pattern = Pattern::parse(pattern)?;
        self.0.policy.check(&who.identity, &Action::Subscribe { pattern: pattern.as_str() })?;
        let max = self.limits().max_subscriptions;
        // Held until the subscription takes effect: a retained publication is either among those
        // sent first or published after, live.
        let retained = self.0.retained.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Encoded before the subscriptions' lock is taken (only this one is held meanwhile).
        let frames: Vec<Bytes> = retained
            .matching(&pattern)
            .map(|(topic, kept)| {
                let mut env = Envelope::new(Kind::Pub);
                env.re = Some(id.to_owned());
                env.topic = Some(topic.as_str().to_owned());
                env.from = Some(kept.from.clone());
                env.retain = Some(true);
                env.body = Some(kept.body.clone());
                outbox.codec.encode(&env)
            })
            .collect();
        let send_retained = || {
            let (n, bytes) = (frames.len() as u64, frames.iter().map(|f| f.len() as u64).sum());
            if outbox.tx.send_burst(frames).is_err() {
                outbox.closer.close(crate::close::CloseReason::SlowConsumer);
            } else {
                self.0.metrics.sent_many(Kind::Pub, n, bytes);
            }
        };
        self.0.topics.subscribe(outbox, id, pattern.clone(), max, send_retained).map_err(
            |SubscribeError::TooMany(n)| {
                let msg =
                    format!("this connection holds {n} subscriptions, the most one may (limits.max_subscriptions)");
                ErrorBody::new(ErrorCode::TooManySubscriptions, msg)
            },
        )?;
        Ok(pattern)
    }

    /// Ends subscription `id` of connection `conn`; false when there was none.
    pub fn unsubscribe(&self, conn: u64, id: &str) -> bool {
        self.0.topics.unsubscribe(conn, id)
    }

    /// Connection `conn` closed: its subscriptions end.
    pub(crate) fn connection_closed(&self, conn: u64) {
        self.0.topics.drop_connection(conn);
    }

    /// Subscriptions held now, over all connections.
    pub fn subscriptions(&self) -> usize {
        self.0.topics.count()
    }

    /// Topics with a retained publication, and their bytes.
    pub fn retained(&self) -> (usize, usize) {
        self.0.retained.lock().unwrap_or_else(std::sync::PoisonError::into_inner).size()
    }
}

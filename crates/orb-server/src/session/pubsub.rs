//! `pub`, `sub` and `unsub` frames of a wire session as broker calls (pub/sub, issue 13): a
//! publication (answered with how many connections it reached when it has an `id`; a retained
//! one once it is committed), a subscription for this connection under the frame's `id`, and
//! its end (`re` names it).

use bytes::Bytes;
use orb_proto::{Envelope, ErrorBody, ErrorCode};

use super::run::Session;

impl Session {
    pub(super) fn on_pub(&mut self, env: Envelope) {
        if env.retain == Some(true) {
            return self.on_retained_pub(env);
        }
        let result = match env.topic.as_deref() {
            Some(topic) => self.shared.broker.publish(&self.requester, topic, env.body),
            None => Err(ErrorBody::new(ErrorCode::BadRequest, "pub needs a topic")),
        };
        match (env.id, result) {
            (Some(id), Ok(n)) => self.answer(&Envelope::reply_ok(id, json(&serde_json::json!({ "delivered": n })))),
            (Some(id), Err(e)) => self.reply_err(id, e),
            (None, Ok(_)) => {}
            (None, Err(e)) => self.answer(&Envelope::error(None, e.code, e.message)),
        }
    }

    /// A publication to retain: delivered now, answered once the store has it (it counts as an
    /// open command until then, so a client cannot run ahead of the store).
    fn on_retained_pub(&mut self, env: Envelope) {
        let result = match env.topic.as_deref() {
            Some(topic) => self.shared.broker.publish_retained(&self.requester, topic, env.body),
            None => Err(ErrorBody::new(ErrorCode::BadRequest, "pub needs a topic")),
        };
        let (delivered, committed) = match result {
            Ok(r) => r,
            Err(e) => {
                return match env.id {
                    Some(id) => self.reply_err(id, e),
                    None => self.answer(&Envelope::error(None, e.code, e.message)),
                };
            }
        };
        let open = self.requester.open_command();
        let outbox = self.outbox.clone();
        let metrics = std::sync::Arc::clone(self.shared.broker.metrics());
        self.shared.broker.tracker().spawn(async move {
            let stored = committed.await.unwrap_or_else(|_| {
                Err(ErrorBody::new(ErrorCode::ServerShutdown, "the server stopped before the publication was stored"))
            });
            let answer = match (env.id, stored) {
                (Some(id), Ok(())) => {
                    Envelope::reply_ok(id, json(&serde_json::json!({ "delivered": delivered, "retained": true })))
                }
                (Some(id), Err(e)) => Envelope::reply_error(id, e),
                (None, Ok(())) => return drop(open),
                (None, Err(e)) => Envelope::error(None, e.code, e.message),
            };
            if let Ok(len) = outbox.reply_env(&answer) {
                metrics.sent(answer.kind, len);
            }
            drop(open);
        });
    }

    pub(super) fn on_sub(&mut self, env: Envelope) {
        let Some(id) = env.id else {
            self.answer(&Envelope::error(None, ErrorCode::BadRequest, "sub needs an id (unsub names it)"));
            return;
        };
        let Some(pattern) = env.topic else {
            return self.reply_err(id, ErrorBody::new(ErrorCode::BadRequest, "sub needs a topic pattern"));
        };
        match self.shared.broker.subscribe(&self.requester, &self.outbox, &id, &pattern) {
            Ok(p) => self.answer(&Envelope::reply_ok(id, json(&serde_json::json!({ "subscribed": p.as_str() })))),
            Err(e) => self.reply_err(id, e),
        }
    }

    pub(super) fn on_unsub(&mut self, env: Envelope) {
        let Some(sub) = env.re else {
            let e = ErrorBody::new(ErrorCode::BadRequest, "unsub needs re: the id of the sub it ends");
            return match env.id {
                Some(id) => self.reply_err(id, e),
                None => self.answer(&Envelope::error(None, e.code, e.message)),
            };
        };
        let found = self.shared.broker.unsubscribe(self.outbox.conn, &sub);
        if let Some(id) = env.id {
            self.answer(&Envelope::reply_ok(id, json(&serde_json::json!({ "unsubscribed": found }))));
        }
    }
}

fn json(v: &serde_json::Value) -> Bytes {
    Bytes::from(serde_json::to_vec(v).expect("a JSON value serialises"))
}

//! Messages devices send from their durable outbox (a `cmd` with `msg`): checked, stored once per
//! (device, msg) and committed before they are acknowledged, then handed to the application
//! handler of their command, if the server has one. Adapters batch what arrives together into
//! one call, so many messages share one commit.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use orb_io::handler::{self, Context};
use orb_proto::{ErrorBody, ErrorCode};
use orb_store::{MessageLimits, NewMessage};
use tokio_util::sync::CancellationToken;

use super::{Action, Broker, check_args, check_command_name};
use crate::identity::Requester;

/// Longest message id, in bytes.
pub const MAX_MESSAGE_ID: usize = 64;

/// One message from a device's outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MessageSpec {
    /// The device's id for it, the same on every resend.
    pub msg: String,
    /// Command name.
    pub command: String,
    /// JSON body.
    pub body: Option<Bytes>,
    /// When the device created it.
    pub sent_at: DateTime<Utc>,
}

/// What became of a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    /// Stored now.
    New,
    /// Stored before (a resend): nothing written.
    Duplicate,
}

impl Broker {
    /// Stores `messages` from device `who`, in order, each once, committed before this returns;
    /// one answer per message. A refused message (bad id, reserved or bad command name, body
    /// not JSON, not a device) changes nothing; a store failure refuses them all with
    /// `store_unavailable` (the device sends them again). Each new message then goes to the
    /// application handler of its command, if there is one (its answer is logged, not sent).
    pub async fn store_messages(&self, who: &Requester, messages: Vec<MessageSpec>) -> Vec<Result<Stored, ErrorBody>> {
        let Some(device) = who.identity.device.clone() else {
            let e = ErrorBody::new(ErrorCode::BadRequest, "only devices send outbox messages (cmd with msg)");
            return messages.iter().map(|_| Err(e.clone())).collect();
        };
        let now = Utc::now();
        let mut answers: Vec<Result<Stored, ErrorBody>> = Vec::with_capacity(messages.len());
        let mut accepted = Vec::with_capacity(messages.len());
        for m in &messages {
            match self.check_message(who, m) {
                Ok(()) => {
                    accepted.push(NewMessage {
                        device: device.to_string(),
                        msg: m.msg.clone(),
                        command: m.command.clone(),
                        body: m.body.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()),
                        sent_at: m.sent_at,
                        received_at: now,
                    });
                    answers.push(Ok(Stored::New));
                }
                Err(e) => answers.push(Err(e)),
            }
        }
        if accepted.is_empty() {
            return answers;
        }
        let limits = self.limits();
        let keep = MessageLimits {
            max_messages: limits.max_messages_per_device as u64,
            max_bytes: limits.max_message_bytes_per_device as u64,
        };
        let fresh = match self.registry().store().store_messages(accepted, keep).await {
            Ok(fresh) => fresh,
            Err(e) => {
                let e = ErrorBody::new(ErrorCode::StoreUnavailable, format!("the message was not stored: {e}"));
                return answers.into_iter().map(|a| a.and(Err(e.clone()))).collect();
            }
        };
        let mut fresh = fresh.into_iter();
        let mut runs = Vec::new();
        for (i, (answer, m)) in answers.iter_mut().zip(&messages).enumerate() {
            if answer.is_err() {
                continue;
            }
            let new = fresh.next() == Some(true);
            if m.command == orb_proto::message::commands::SCHEDULES_RAN {
                // A local schedule's firing (checked above), stored as a job: also on a resend,
                // whose job id is the same, so a recording a crash cut short is completed.
                if let Ok(ran) = super::agent_schedules::check_local_run(m.body.as_ref()) {
                    self.record_local_run(&device, &m.msg, m.sent_at, now, &ran).await;
                    runs.push(i);
                }
            } else if m.command == orb_proto::message::commands::TELEMETRY {
                if new {
                    self.publish_stored_sample(who, device.as_str(), m, now);
                }
            } else if new {
                self.hand_to_handler(who, m);
            }
            if !new {
                *answer = Ok(Stored::Duplicate);
            }
        }
        // A run is acknowledged once its job is committed; else the device sends it again.
        if !runs.is_empty()
            && let Err(e) = self.registry().store().flush().await
        {
            let e = ErrorBody::new(ErrorCode::StoreUnavailable, format!("the run was not stored: {e}"));
            for i in runs {
                answers[i] = Err(e.clone());
            }
        }
        answers
    }

    fn check_message(&self, who: &Requester, m: &MessageSpec) -> Result<(), ErrorBody> {
        if m.msg.is_empty() || m.msg.len() > MAX_MESSAGE_ID || m.msg.chars().any(char::is_control) {
            return Err(ErrorBody::new(
                ErrorCode::BadRequest,
                format!("msg must be 1 to {MAX_MESSAGE_ID} bytes without control characters"),
            ));
        }
        let reports = [orb_proto::message::commands::SCHEDULES_RAN, orb_proto::message::commands::TELEMETRY];
        if m.command.starts_with(orb_proto::RESERVED_PREFIX) && !reports.contains(&m.command.as_str()) {
            return Err(ErrorBody::new(
                ErrorCode::BadRequest,
                format!("an outbox message may not use a {} command", orb_proto::RESERVED_PREFIX),
            ));
        }
        check_command_name(&m.command)?;
        check_args(m.body.as_ref())?;
        if let Some(body) = &m.body
            && serde_json::from_slice::<serde::de::IgnoredAny>(body).is_err()
        {
            return Err(ErrorBody::new(ErrorCode::BadBody, "the message body is not JSON"));
        }
        if m.command == orb_proto::message::commands::SCHEDULES_RAN {
            super::agent_schedules::check_local_run(m.body.as_ref())?;
        }
        if m.command == orb_proto::message::commands::TELEMETRY
            && m.body.as_ref().is_none_or(|b| b.iter().find(|c| !c.is_ascii_whitespace()) != Some(&b'{'))
        {
            let msg =
                format!("{}: the body must be the sample, a JSON object", orb_proto::message::commands::TELEMETRY);
            return Err(ErrorBody::new(ErrorCode::BadBody, msg));
        }
        self.0.policy.check(&who.identity, &Action::Call { command: &m.command })
    }

    /// Publishes a stored `$orb.telemetry` sample on the device's `telemetry.<id>.sys`, dated
    /// when the device took it (never later than now). A refusal (the access rules) leaves it
    /// stored and is logged.
    fn publish_stored_sample(
        &self,
        who: &Requester,
        device: &str,
        m: &MessageSpec,
        now: chrono::DateTime<chrono::Utc>,
    ) {
        let at = m.sent_at.min(now);
        if let Err(e) = self.publish_offline_sample(who, device, m.body.clone(), at) {
            tracing::debug!(
                device,
                msg = m.msg,
                code = e.code.as_str(),
                "an offline telemetry sample was not published: {}",
                e.message
            );
        }
    }

    /// Runs the application handler for a stored message on its own task (nothing when there
    /// is none: the message is kept in the store).
    fn hand_to_handler(&self, who: &Requester, m: &MessageSpec) {
        let Some(handler) = self.0.handlers.get(&m.command) else { return };
        let ctx = Context {
            cmd: m.command.clone(),
            from: who.identity.name.clone(),
            args: m.body.clone().unwrap_or_else(|| Bytes::from_static(b"null")),
            job: None,
            deadline: self.limits().default_request_deadline,
            cancel: CancellationToken::new(),
            progress: orb_io::handler::Progress::off(),
        };
        let msg = m.msg.clone();
        self.tracker().spawn(async move {
            let cmd = ctx.cmd.clone();
            if let Err(e) = handler::run(Some(handler), ctx).await {
                tracing::warn!(cmd, msg, error = %e.message, code = e.code.as_str(), "an outbox message's handler failed");
            }
        });
    }
}

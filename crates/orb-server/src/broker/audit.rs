//! The audit log's writing side (security, issue 15): which operator actions are recorded
//! ([`Audited`]), and [`Broker::audit`], which the broker's one door calls after each of them.
//! An entry is one [`orb_store::Record::Audit`] handed to the store's recorder without waiting
//! (never an awaited write on the caller's path); the store's writer appends it in its next
//! batch, and `services::audit` reads the log back.
//!
//! Recorded: actions of operators that came over the network (a wire session, the REST API, the
//! dashboard: a [`Requester`] with an [`Origin`](crate::identity::Origin)) that change
//! something, when done (`ok`) or refused as `forbidden`; and configuration reloads, as the host's.
//! Not recorded: reads, other refusals (a bad selector, an unknown job), plain requests to one
//! device that were sent (the programs' high-rate call path: only refused ones are recorded),
//! publications, agents' actions, the scheduler's firings (the schedule's creation was recorded)
//! and in-process callers.

use std::sync::atomic::{AtomicU64, Ordering};

use chrono::Utc;
use orb_proto::message::{Role, commands};
use orb_proto::tokens::Access;
use orb_proto::{ErrorBody, ErrorCode};
use orb_store::{AuditEntry, Record};

use super::Broker;
use crate::identity::Requester;

/// An action the audit log records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Audited {
    /// A job submitted (`orb send`, `POST /v1/jobs`, the dashboard).
    JobSubmit,
    /// A plain request to one device that the policy refused (one that is sent is not
    /// recorded: requests are the programs' high-rate call path, and the log would grow by one
    /// entry per call; jobs, `orb send`'s way, are recorded).
    RequestSend,
    /// A job cancelled.
    JobCancel,
    /// Schedules created, paused, resumed, removed.
    ScheduleCreate,
    SchedulePause,
    ScheduleResume,
    ScheduleRemove,
    /// The device registry changed.
    DeviceAdd,
    DeviceRemove,
    DeviceRevoke,
    DeviceTag,
    /// Operator tokens added or revoked.
    TokenAdd,
    TokenRevoke,
    /// An admin signal (`QUIT`, `RELOAD`, `LOG_ROTATE`; a `PING` changes nothing).
    Signal,
    /// The configuration (ACL, tokens, limits, groups, TLS files) reloaded.
    ConfigReload,
}

impl Audited {
    /// The name the log shows.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Audited::JobSubmit => "job.submit",
            Audited::RequestSend => "request.send",
            Audited::JobCancel => "job.cancel",
            Audited::ScheduleCreate => "schedule.create",
            Audited::SchedulePause => "schedule.pause",
            Audited::ScheduleResume => "schedule.resume",
            Audited::ScheduleRemove => "schedule.remove",
            Audited::DeviceAdd => "device.add",
            Audited::DeviceRemove => "device.remove",
            Audited::DeviceRevoke => "device.revoke",
            Audited::DeviceTag => "device.tag",
            Audited::TokenAdd => "token.add",
            Audited::TokenRevoke => "token.revoke",
            Audited::Signal => "server.signal",
            Audited::ConfigReload => "config.reload",
        }
    }

    /// The action a `$orb.` query is, when it changes something.
    pub(crate) fn of_query(name: &str) -> Option<Audited> {
        Some(match name {
            commands::JOBS_CANCEL => Audited::JobCancel,
            commands::SCHEDULES_CREATE => Audited::ScheduleCreate,
            commands::SCHEDULES_PAUSE => Audited::SchedulePause,
            commands::SCHEDULES_RESUME => Audited::ScheduleResume,
            commands::SCHEDULES_REMOVE => Audited::ScheduleRemove,
            commands::DEVICES_ADD => Audited::DeviceAdd,
            commands::DEVICES_REMOVE => Audited::DeviceRemove,
            commands::DEVICES_REVOKE => Audited::DeviceRevoke,
            commands::DEVICES_TAG => Audited::DeviceTag,
            commands::TOKENS_ADD => Audited::TokenAdd,
            commands::TOKENS_REVOKE => Audited::TokenRevoke,
            commands::SIGNAL => Audited::Signal,
            _ => return None,
        })
    }
}

/// Entries the store could not take (its writer's queue was full), counted for the log.
static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Whether `who`'s actions are recorded: an operator that came over the network.
pub(crate) fn recorded(who: &Requester) -> bool {
    who.origin().is_some() && who.identity.role == Role::Operator
}

impl Broker {
    /// Records that `who` did `action` to `target` (`detail`: a JSON object, or null), when the
    /// action is one to record: `who` is an operator that came over the network, and `result` is
    /// done or refused `forbidden`. Never waits.
    pub(crate) fn audit<T>(
        &self,
        who: &Requester,
        action: Audited,
        target: &str,
        detail: serde_json::Value,
        result: &Result<T, ErrorBody>,
    ) {
        let Some(origin) = who.origin().filter(|_| recorded(who)) else { return };
        let (outcome, detail) = match result {
            Ok(_) => ("ok", detail),
            Err(e) if e.code == ErrorCode::Forbidden => {
                let mut detail = detail;
                if let serde_json::Value::Object(map) = &mut detail {
                    map.insert("message".into(), e.message.clone().into());
                } else {
                    detail = serde_json::json!({ "message": e.message });
                }
                ("forbidden", detail)
            }
            Err(_) => return,
        };
        let id = &who.identity;
        let role = match (&id.token, id.access) {
            (Some(_), Some(access)) => access.as_str(),
            (None, None | Some(Access::Admin)) => "admin-token",
            (None, Some(access)) => access.as_str(),
            (Some(_), None) => "token",
        };
        self.append_audit(AuditEntry {
            at: Utc::now(),
            actor: id.name.clone(),
            role: role.to_owned(),
            source: origin.to_string(),
            action: action.as_str().to_owned(),
            target: target.to_owned(),
            outcome: outcome.to_owned(),
            detail: (!detail.is_null()).then(|| detail.to_string()),
        });
    }

    /// Records something the host did (a configuration reload), as `server` from `source`.
    pub(crate) fn audit_host(&self, action: Audited, source: &str, target: &str, detail: serde_json::Value) {
        self.append_audit(AuditEntry {
            at: Utc::now(),
            actor: "server".to_owned(),
            role: "host".to_owned(),
            source: source.to_owned(),
            action: action.as_str().to_owned(),
            target: target.to_owned(),
            outcome: "ok".to_owned(),
            detail: (!detail.is_null()).then(|| detail.to_string()),
        });
    }

    /// Hands `entry` to the store's writer without waiting. Entries it cannot take (its queue is
    /// full) are counted and logged instead: the 1st, 2nd, 4th, 8th, ... with their fields.
    fn append_audit(&self, entry: AuditEntry) {
        let Err(lost) = self.registry().recorder().offer(Record::Audit(entry)) else { return };
        let Record::Audit(entry) = *lost else { return };
        let dropped = DROPPED.fetch_add(1, Ordering::Relaxed) + 1;
        if dropped.is_power_of_two() {
            tracing::warn!(
                dropped,
                actor = entry.actor,
                action = entry.action,
                target = entry.target,
                source = entry.source,
                outcome = entry.outcome,
                "the store is behind; an audit entry was not stored"
            );
        }
    }
}

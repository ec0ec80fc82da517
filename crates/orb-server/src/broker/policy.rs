//! Who may do what: one place for every permission check the broker makes, so access rules
//! (ACLs, roles) extend this and nothing else. Today: operators (admin token) may do everything;
//! agents may call the server's application handlers only.

use orb_proto::message::Role;
use orb_proto::{ErrorBody, ErrorCode};

use crate::identity::Identity;

/// Something a client asks the broker to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action<'a> {
    /// Run `command` on every device `target` matches (a job).
    SubmitJob {
        /// Command name.
        command: &'a str,
        /// Selector.
        target: &'a str,
    },
    /// Send `command` to the one device `to` (a plain request).
    Request {
        /// Device id.
        to: &'a str,
        /// Command name.
        command: &'a str,
    },
    /// Call an application handler registered on the server.
    Call {
        /// Command name.
        command: &'a str,
    },
    /// Read or change the registry or the job history, or ask about the server (the `$orb.`
    /// queries).
    Query {
        /// The query's name (`$orb.devices.list`, ...).
        name: &'a str,
    },
    /// Send an admin message to the server process (`orb signal`).
    Signal,
    /// Publish on `topic` (never a `$orb.` one: those are refused before the policy).
    Publish {
        /// The topic.
        topic: &'a str,
    },
    /// Subscribe to `pattern`.
    Subscribe {
        /// The pattern.
        pattern: &'a str,
    },
}

/// The access policy.
#[derive(Debug, Clone, Default)]
pub struct Policy;

impl Policy {
    /// Whether `who` may do `action`.
    ///
    /// # Errors
    /// `forbidden` saying what would be needed.
    pub fn check(&self, who: &Identity, action: &Action<'_>) -> Result<(), ErrorBody> {
        let operator = who.role == Role::Operator;
        let forbidden = |what: String| {
            Err(ErrorBody::new(ErrorCode::Forbidden, format!("{what} need an operator session (admin token)")))
        };
        match action {
            Action::Call { .. } | Action::Publish { .. } => Ok(()),
            // The server's own events (`$orb.`: presence, jobs) are for operators.
            Action::Subscribe { pattern } if operator || !pattern.starts_with(orb_proto::topic::RESERVED) => Ok(()),
            Action::Subscribe { pattern } => Err(ErrorBody::new(
                ErrorCode::Forbidden,
                format!("subscriptions to {} need an operator session", orb_proto::excerpt(pattern)),
            )),
            _ if operator => Ok(()),
            Action::SubmitJob { .. } => forbidden("jobs".into()),
            Action::Request { .. } => forbidden("requests to devices".into()),
            Action::Query { name } => forbidden(format!("{} and the other $orb. queries", orb_proto::excerpt(name))),
            Action::Signal => forbidden("admin signals".into()),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use orb_proto::DeviceId;

    #[test]
    fn agents_may_only_call_handlers_and_operators_may_do_everything() {
        let p = Policy;
        let agent = Identity::device(DeviceId::new("cam-1").unwrap());
        let op = Identity::admin("op-1");
        let actions = [
            Action::SubmitJob { command: "ping", target: "*" },
            Action::Request { to: "cam-2", command: "ping" },
            Action::Query { name: "$orb.devices.list" },
            Action::Signal,
        ];
        for a in actions {
            assert_eq!(p.check(&agent, &a).unwrap_err().code, ErrorCode::Forbidden, "{a:?}");
            assert!(p.check(&op, &a).is_ok());
        }
        assert!(p.check(&agent, &Action::Call { command: "report" }).is_ok());
    }
}

//! A requester's right to reach each target of its job, judged again when a command leaves later
//! than the job's submission: a staged rollout's later batch, or a command held for a device
//! (a TTL) that is delivered when the device connects. A token revoked or an access rule
//! changed since the submission turns such a target `denied` (code `forbidden`), and nothing is
//! sent to it. Judged by the policy in force at that moment, with the registry's operator tags.

use std::sync::Arc;

use orb_proto::{ErrorBody, ErrorCode};

use super::policy::{Policy, Reach};
use crate::identity::Identity;
use crate::registry::Registry;

/// Who sent a command, and what the rules let it reach.
#[derive(Clone)]
pub(crate) struct Gate {
    policy: Arc<Policy>,
    registry: Arc<Registry>,
    who: Identity,
    command: String,
}

impl Gate {
    /// The gate for `who` sending `command`.
    pub(crate) fn new(policy: Arc<Policy>, registry: Arc<Registry>, who: Identity, command: String) -> Gate {
        Gate { policy, registry, who, command }
    }

    /// `None` while the rules let the requester send the command to `device`; else why not.
    pub(crate) fn refusal(&self, device: &str) -> Option<ErrorBody> {
        let sender = self.who.device.as_ref().and_then(|d| self.registry.get(d.as_str()));
        let reach = match self.policy.reach(&self.who, sender.as_deref(), &self.command) {
            Ok(reach) => reach,
            Err(e) => return Some(e),
        };
        match reach {
            Reach::Any => None,
            Reach::Only(_) if self.registry.get(device).is_some_and(|k| reach.allows(&k)) => None,
            Reach::Only(_) => Some(denied(&self.who.name, &self.command, device)),
        }
    }
}

/// The refusal of a target the requester's rules do not reach.
pub(crate) fn denied(who: &str, command: &str, device: &str) -> ErrorBody {
    ErrorBody::new(
        ErrorCode::Forbidden,
        format!(
            "{} may not send '{}' to {}: no access rule allows it",
            orb_proto::excerpt(who),
            orb_proto::excerpt(command),
            orb_proto::excerpt(device)
        ),
    )
}

//! Who asks the broker for something: an [`Identity`] (name, role, credential) that the policy
//! judges, and a [`Requester`], one per client (a wire session; later an API token), which also
//! holds that client's quota of running jobs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use orb_proto::message::Role;
use orb_proto::{DeviceId, ErrorBody, ErrorCode};

/// Who is asking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The name commands and the job history show: a device id, or an operator session's name
    /// (`op-3`).
    pub name: String,
    /// Agent (a device) or operator.
    pub role: Role,
    /// The device, for agents.
    pub device: Option<DeviceId>,
    /// Whether the credential was the admin token (full rights).
    pub admin: bool,
}

impl Identity {
    /// An operator holding the admin token, named `name`.
    pub fn admin(name: impl Into<String>) -> Identity {
        Identity { name: name.into(), role: Role::Operator, device: None, admin: true }
    }

    /// The device `id`, as an agent.
    pub fn device(id: DeviceId) -> Identity {
        Identity { name: id.to_string(), role: Role::Agent, device: Some(id), admin: false }
    }
}

/// One client of the broker: its identity and its running jobs.
#[derive(Debug, Clone)]
pub struct Requester {
    /// Who it is.
    pub identity: Identity,
    jobs: Arc<AtomicUsize>,
}

impl Requester {
    /// A client with no job running.
    pub fn new(identity: Identity) -> Requester {
        Requester { identity, jobs: Arc::new(AtomicUsize::new(0)) }
    }

    /// Jobs of this client still running.
    pub fn jobs_running(&self) -> usize {
        self.jobs.load(Ordering::Acquire)
    }

    /// Takes a slot for one more running job, under `limit` (0: unlimited).
    ///
    /// # Errors
    /// `too_many_jobs` at the limit.
    pub fn job_slot(&self, limit: usize) -> Result<JobSlot, ErrorBody> {
        let running = self.jobs.fetch_add(1, Ordering::AcqRel);
        let slot = JobSlot(Arc::clone(&self.jobs));
        if limit > 0 && running >= limit {
            return Err(ErrorBody::new(
                ErrorCode::TooManyJobs,
                format!("{} already has {limit} jobs running; wait for one to end", self.identity.name),
            ));
        }
        Ok(slot)
    }
}

/// One running job's place in its requester's quota; released when the job ends.
#[derive(Debug)]
pub struct JobSlot(Arc<AtomicUsize>);

impl Drop for JobSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn job_slots_are_limited_and_released() {
        let r = Requester::new(Identity::admin("op-1"));
        let a = r.job_slot(2).unwrap();
        let _b = r.job_slot(2).unwrap();
        assert_eq!(r.job_slot(2).unwrap_err().code, ErrorCode::TooManyJobs);
        assert_eq!(r.jobs_running(), 2, "a refused slot is given back");
        drop(a);
        assert!(r.job_slot(2).is_ok());
        assert!(r.job_slot(0).is_ok(), "0 is unlimited");
    }
}

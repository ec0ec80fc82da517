//! Who asks the broker for something: an [`Identity`] (name, role, credential) that the policy
//! judges, and a [`Requester`], one per client (a wire session; later an API token), which also
//! counts that client's running jobs (its quota) and its commands waiting for an answer (which
//! its adapter uses for backpressure), and says where the client is ([`Origin`], for the audit
//! log).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use orb_proto::message::Role;
use orb_proto::tokens::Access;
use orb_proto::{DeviceId, ErrorBody, ErrorCode};
use tokio::sync::Notify;

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
    /// What an operator's credential allows (`None` for agents).
    pub access: Option<Access>,
    /// The named operator token it came with, looked up on every check (`None`: the admin
    /// token, a device credential, or a custom authenticator's).
    pub token: Option<Arc<str>>,
}

impl Identity {
    /// An operator holding the admin token, named `name`.
    pub fn admin(name: impl Into<String>) -> Identity {
        Identity { name: name.into(), role: Role::Operator, device: None, access: Some(Access::Admin), token: None }
    }

    /// An operator holding the named token `token` with role `access`; its name is the token's.
    pub fn token(token: &str, access: Access) -> Identity {
        Identity {
            name: token.to_owned(),
            role: Role::Operator,
            device: None,
            access: Some(access),
            token: Some(Arc::from(token)),
        }
    }

    /// The device `id`, as an agent.
    pub fn device(id: DeviceId) -> Identity {
        Identity { name: id.to_string(), role: Role::Agent, device: Some(id), access: None, token: None }
    }

    /// What the store keeps of this identity's credential beside a held command or a schedule,
    /// so that the access rules judge it again when the command is delivered or the schedule
    /// fires: `token:NAME` (a named operator token, looked up then: a revoked one admits
    /// nothing), `device:ID` (an agent, judged by the `[[acl.peers]]` rules then), `agent` (an
    /// agent that is no device), or the role of an operator credential without a name
    /// (`admin`, `operator`, `viewer`).
    pub fn credential(&self) -> String {
        match (&self.token, &self.device, self.role) {
            (Some(token), _, _) => format!("{TOKEN_PREFIX}{token}"),
            (None, Some(device), Role::Agent) => format!("{DEVICE_PREFIX}{device}"),
            (None, None, Role::Agent) => AGENT.to_owned(),
            _ => self.access.unwrap_or(Access::Admin).as_str().to_owned(),
        }
    }

    /// The identity stored credential `credential` stands for ([`Identity::credential`]),
    /// named `name`; `None` when it is not one.
    pub fn from_credential(name: &str, credential: &str) -> Option<Identity> {
        let operator = |access, token: Option<&str>| Identity {
            name: name.to_owned(),
            role: Role::Operator,
            device: None,
            access: Some(access),
            token: token.map(Arc::from),
        };
        if let Some(token) = credential.strip_prefix(TOKEN_PREFIX) {
            // Its role is the token's, looked up on every check.
            return (!token.is_empty()).then(|| operator(Access::Operator, Some(token)));
        }
        if let Some(device) = credential.strip_prefix(DEVICE_PREFIX) {
            return DeviceId::new(device).ok().map(|id| Identity { name: name.to_owned(), ..Identity::device(id) });
        }
        if credential == AGENT {
            return Some(Identity {
                name: name.to_owned(),
                role: Role::Agent,
                device: None,
                access: None,
                token: None,
            });
        }
        Access::parse(credential).map(|access| operator(access, None))
    }
}

/// How [`Identity::credential`] writes a named operator token, a device, and an agent that is no
/// device.
const TOKEN_PREFIX: &str = "token:";
const DEVICE_PREFIX: &str = "device:";
const AGENT: &str = "agent";

/// Where a client's commands come from: the transport and the peer address it connected from.
/// The audit log records it as `VIA ADDR` (`tcp 10.0.0.5:53122`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin {
    /// `tcp`, `tls`, `ws`, `wss` (a wire session), `http` (the REST API) or `dashboard`.
    pub via: &'static str,
    /// The client's address.
    pub addr: SocketAddr,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.via, self.addr)
    }
}

/// One client of the broker: its identity, where it is, its running jobs and its open commands.
#[derive(Debug, Clone)]
pub struct Requester {
    /// Who it is.
    pub identity: Identity,
    /// Where it is; `None` for the server's own requesters (the scheduler's firings) and
    /// in-process callers, whose actions the audit log does not record.
    origin: Option<Origin>,
    counts: Arc<Counts>,
}

/// A client's counters, in one allocation (every connection has them).
#[derive(Debug, Default)]
struct Counts {
    jobs: AtomicUsize,
    open: AtomicUsize,
    /// Someone waits in `commands_below`: only then does an answer wake (a `Notify` wake takes a
    /// lock, which every reply would pay otherwise).
    waiting: std::sync::atomic::AtomicBool,
    answered: Notify,
}

impl Requester {
    /// A client with no job running and no command open.
    pub fn new(identity: Identity) -> Requester {
        Requester { identity, origin: None, counts: Arc::default() }
    }

    /// The same client (sharing its job quota and open commands) reached from `addr` over `via`.
    #[must_use]
    pub fn from_addr(self, via: &'static str, addr: SocketAddr) -> Requester {
        Requester { origin: Some(Origin { via, addr }), ..self }
    }

    /// Where the client is, when it came over the network.
    pub fn origin(&self) -> Option<Origin> {
        self.origin
    }

    /// Counts one more command waiting for its answer, until the ticket is dropped.
    pub fn open_command(&self) -> OpenCommand {
        self.counts.open.fetch_add(1, Ordering::AcqRel);
        OpenCommand(Arc::clone(&self.counts))
    }

    /// Commands waiting for their answer.
    pub fn commands_open(&self) -> usize {
        self.counts.open.load(Ordering::SeqCst)
    }

    /// Resolves once fewer than `limit` commands wait for their answer.
    ///
    /// # Cancel safety
    /// Cancel-safe.
    pub async fn commands_below(&self, limit: usize) {
        loop {
            let answered = self.counts.answered.notified();
            tokio::pin!(answered);
            answered.as_mut().enable();
            // Set before the count is read: an answer that decrements after this sees the flag;
            // one before it is seen in the count.
            self.counts.waiting.store(true, Ordering::SeqCst);
            if self.commands_open() < limit {
                self.counts.waiting.store(false, Ordering::SeqCst);
                return;
            }
            answered.await;
        }
    }

    /// Takes a slot for one more running job, under `limit` (0: unlimited).
    ///
    /// # Errors
    /// `too_many_jobs` at the limit.
    pub fn job_slot(&self, limit: usize) -> Result<JobSlot, ErrorBody> {
        let running = self.counts.jobs.fetch_add(1, Ordering::AcqRel);
        let slot = JobSlot(Arc::clone(&self.counts));
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
pub struct JobSlot(Arc<Counts>);

impl Drop for JobSlot {
    fn drop(&mut self) {
        self.0.jobs.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One command of a requester waiting for its answer; released when dropped (the answer was
/// queued, or will never come).
#[derive(Debug)]
pub struct OpenCommand(Arc<Counts>);

impl Drop for OpenCommand {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
        if self.0.waiting.load(Ordering::SeqCst) {
            self.0.answered.notify_waiters();
        }
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
        assert_eq!(r.job_slot(2).unwrap_err().code, ErrorCode::TooManyJobs, "a refused slot is given back");
        drop(a);
        assert!(r.job_slot(2).is_ok());
        assert!(r.job_slot(0).is_ok(), "0 is unlimited");
    }

    #[tokio::test]
    async fn open_commands_are_counted_until_answered() {
        let r = Requester::new(Identity::admin("op-1"));
        let a = r.open_command();
        let _b = r.open_command();
        assert_eq!(r.commands_open(), 2);
        let waiter = tokio::spawn({
            let r = r.clone();
            async move { r.commands_below(2).await }
        });
        tokio::task::yield_now().await;
        drop(a);
        waiter.await.unwrap();
        assert_eq!(r.commands_open(), 1);
    }

    #[test]
    fn credentials_round_trip_and_strangers_are_refused() {
        let nameless = Identity { name: "x".into(), role: Role::Agent, device: None, access: None, token: None };
        let custom = Identity { access: Some(Access::Viewer), ..Identity::admin("op-2") };
        for who in [
            Identity::admin("op-1"),
            Identity::token("ci", Access::Viewer),
            Identity::device(DeviceId::new("gw-1").unwrap()),
            nameless,
            custom,
        ] {
            let back = Identity::from_credential(&who.name, &who.credential()).unwrap();
            // A token's role is looked up when judged: only its name is kept.
            assert_eq!((back.role, back.device, back.token), (who.role, who.device.clone(), who.token.clone()));
            if who.token.is_none() {
                assert_eq!(back.access, who.access, "{}", who.credential());
            }
        }
        assert_eq!(Identity::token("ci", Access::Viewer).credential(), "token:ci");
        assert_eq!(Identity::device(DeviceId::new("gw-1").unwrap()).credential(), "device:gw-1");
        for stranger in ["", "root", "token:", "device:", "device:a b"] {
            assert!(Identity::from_credential("n", stranger).is_none(), "{stranger:?}");
        }
    }
}

//! Authentication of a `hello`: the [`Authenticator`] trait (device credentials and mTLS plug in
//! here later) and [`TokenAuth`], the two shared tokens (agent and admin) compared in constant time.
//! The session calls it once per connection; the resulting [`Principal`] decides what it may do.

use std::future::Future;
use std::pin::Pin;

use orb_proto::message::{Hello, Role};
use orb_proto::{DeviceId, ErrorBody, ErrorCode};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::Secret;

/// Who a connection is, once authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Agent (a device) or operator.
    pub role: Role,
    /// The device id, for agents.
    pub device: Option<DeviceId>,
    /// Whether the credential was the admin token (full rights).
    pub admin: bool,
}

/// Checks the credentials of a `hello`.
pub trait Authenticator: Send + Sync + 'static {
    /// Returns the principal, or an error body (`auth_failed`, `bad_id`, `forbidden`) sent to the client.
    fn authenticate<'a>(
        &'a self,
        hello: &'a Hello,
    ) -> Pin<Box<dyn Future<Output = Result<Principal, ErrorBody>> + Send + 'a>>;
}

/// The two shared tokens: agent (devices) and admin (operators; also accepted from devices).
///
/// Only SHA-256 digests are kept in memory, compared in constant time.
pub struct TokenAuth {
    digests: std::sync::RwLock<([u8; 32], [u8; 32])>,
}

impl TokenAuth {
    /// Builds the authenticator from the two tokens.
    pub fn new(admin: &Secret, agent: &Secret) -> TokenAuth {
        TokenAuth { digests: std::sync::RwLock::new((digest(admin.expose()), digest(agent.expose()))) }
    }

    /// Replaces both tokens (configuration reload); sessions already open stay open.
    pub fn set_tokens(&self, admin: &Secret, agent: &Secret) {
        *self.digests.write().unwrap_or_else(std::sync::PoisonError::into_inner) =
            (digest(admin.expose()), digest(agent.expose()));
    }

    fn check(&self, hello: &Hello) -> Result<Principal, ErrorBody> {
        let (admin, agent) = *self.digests.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let given = hello.token.as_deref().map(digest);
        let is_admin = given.is_some_and(|g| bool::from(g.ct_eq(&admin)));
        let is_agent = given.is_some_and(|g| bool::from(g.ct_eq(&agent)));
        match hello.role {
            Role::Operator if is_admin => Ok(Principal { role: Role::Operator, device: None, admin: true }),
            Role::Operator if is_agent => Err(ErrorBody::new(
                ErrorCode::Forbidden,
                "the agent token cannot open an operator session; use the admin token",
            )),
            Role::Agent if is_admin || is_agent => {
                let id = hello
                    .id
                    .as_deref()
                    .ok_or_else(|| ErrorBody::new(ErrorCode::BadId, "an agent hello needs an id"))?;
                let device = DeviceId::new(id).map_err(|e| ErrorBody::new(ErrorCode::BadId, e.to_string()))?;
                Ok(Principal { role: Role::Agent, device: Some(device), admin: is_admin })
            }
            _ if hello.token.is_none() => Err(ErrorBody::new(ErrorCode::AuthFailed, "hello carries no token")),
            _ => Err(ErrorBody::new(ErrorCode::AuthFailed, "token is not valid")),
        }
    }
}

impl Authenticator for TokenAuth {
    fn authenticate<'a>(
        &'a self,
        hello: &'a Hello,
    ) -> Pin<Box<dyn Future<Output = Result<Principal, ErrorBody>> + Send + 'a>> {
        Box::pin(std::future::ready(self.check(hello)))
    }
}

fn digest(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn hello(role: Role, token: Option<&str>, id: Option<&str>) -> Hello {
        Hello {
            version: 1,
            role,
            token: token.map(str::to_owned),
            id: id.map(str::to_owned),
            tags: Default::default(),
            commands: vec![],
            agent: None,
            codecs: vec![],
        }
    }

    fn auth() -> TokenAuth {
        TokenAuth::new(&Secret::new("admin-secret"), &Secret::new("agent-secret"))
    }

    #[test]
    fn tokens_map_to_roles() {
        let a = auth();
        assert!(a.check(&hello(Role::Operator, Some("admin-secret"), None)).unwrap().admin);
        let p = a.check(&hello(Role::Agent, Some("agent-secret"), Some("web-1"))).unwrap();
        assert_eq!(p.device.unwrap().as_str(), "web-1");
    }

    #[test]
    fn wrong_or_missing_credentials_are_refused_with_codes() {
        let a = auth();
        let code = |h: Hello| a.check(&h).unwrap_err().code;
        assert_eq!(code(hello(Role::Operator, Some("nope"), None)), ErrorCode::AuthFailed);
        assert_eq!(code(hello(Role::Operator, None, None)), ErrorCode::AuthFailed);
        assert_eq!(code(hello(Role::Operator, Some("agent-secret"), None)), ErrorCode::Forbidden);
        assert_eq!(code(hello(Role::Agent, Some("agent-secret"), None)), ErrorCode::BadId);
        assert_eq!(code(hello(Role::Agent, Some("agent-secret"), Some("a.b"))), ErrorCode::BadId);
    }
}

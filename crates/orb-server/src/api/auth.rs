//! Who calls: `Authorization: Bearer TOKEN`, checked by the server's [`Authenticator`] as an
//! operator `hello` with that token would be (so a custom authenticator governs the API too).
//! The admin token acts as the API's one requester; a named operator token acts as itself, with
//! its role (`viewer` reads only, `operator` within its rules); anything else is refused
//! `auth_failed` (401). Tokens are never read from the URL. A dashboard sign-in (its session cookie,
//! `crate::dashboard::logins`) also admits reads (`GET`), such as the event feeds the page
//! opens; whatever changes something needs the bearer token.
//!
//! [`Authenticator`]: crate::auth::Authenticator

use std::net::IpAddr;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::Method;
use axum::http::request::Parts;
use orb_proto::message::{Hello, Role};
use orb_proto::{ErrorBody, ErrorCode, PROTOCOL_VERSION};

use super::Api;
use super::error::ApiError;
use crate::identity::{Identity, Requester};
use crate::session::Shared;

/// An authenticated operator.
pub(crate) struct Operator(pub(crate) Requester);

/// Checks an operator credential as an operator `hello` carrying it would be checked: the
/// admin token, or a named operator token with its role. A wrong one counts against the caller's
/// address `ip` (slowed, then `rate_limited`). `admin` is the requester the admin token acts as.
///
/// # Errors
/// `auth_failed` for a token that is none of these, `forbidden` for a credential that is no
/// operator's (the agent token), `rate_limited` once the address failed too often.
pub(crate) async fn operator(
    shared: &Shared,
    token: &str,
    ip: Option<IpAddr>,
    admin: &Requester,
) -> Result<Requester, ErrorBody> {
    let hello = Hello {
        version: PROTOCOL_VERSION,
        role: Role::Operator,
        token: Some(token.to_owned()),
        secret: None,
        enroll: false,
        id: None,
        tags: Default::default(),
        commands: Vec::new(),
        schemas: Default::default(),
        agent: None,
        codecs: Vec::new(),
        durable: false,
        will: None,
    };
    let principal = match shared.auth.authenticate(&hello).await {
        Ok(p) => p,
        Err(e) if e.code == ErrorCode::AuthFailed => {
            let Some(ip) = ip else { return Err(e) };
            let limits = shared.broker.limits();
            return Err(shared.broker.admission().refuse_failed_auth(ip, &limits, e).await);
        }
        Err(e) => return Err(e),
    };
    if principal.role != Role::Operator {
        return Err(ErrorBody::new(ErrorCode::Forbidden, "this credential is no operator's"));
    }
    Ok(match (principal.token, principal.access) {
        (Some(name), Some(access)) => Requester::new(Identity::token(&name, access)),
        _ => admin.clone(),
    })
}

impl FromRequestParts<Arc<Api>> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<Api>) -> Result<Self, Self::Rejection> {
        let peer = parts.extensions.get::<crate::listener::http::Admitted>().map(|a| a.peer);
        let header = parts.headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let Some(token) = header.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim).filter(|t| !t.is_empty())
        else {
            if parts.method == Method::GET
                && let Some(who) = api.shared.logins.signed_in(&parts.headers)
            {
                return Ok(Operator(from(who, peer, "dashboard")));
            }
            let msg = "this endpoint needs an Authorization: Bearer TOKEN header (the admin token)";
            return Err(ApiError(ErrorBody::new(ErrorCode::AuthFailed, msg)));
        };
        let who = operator(&api.shared, token, peer.map(|p| p.ip()), &api.admin).await?;
        Ok(Operator(from(who, peer, "http")))
    }
}

/// `who` calling from `peer` over `via` (the audit log's source).
fn from(who: Requester, peer: Option<std::net::SocketAddr>, via: &'static str) -> Requester {
    match peer {
        Some(addr) => who.from_addr(via, addr),
        None => who,
    }
}

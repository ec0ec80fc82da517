//! Who calls: `Authorization: Bearer TOKEN`, checked by the server's [`Authenticator`] as an
//! operator `hello` with that token would be (so a custom authenticator governs the API too).
//! The admin token acts as the API's one requester; anything else is refused `auth_failed`
//! (401). Tokens are never read from the URL.
//!
//! [`Authenticator`]: crate::auth::Authenticator

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use orb_proto::message::{Hello, Role};
use orb_proto::{ErrorBody, ErrorCode, PROTOCOL_VERSION};

use super::Api;
use super::error::ApiError;
use crate::identity::Requester;

/// An authenticated operator.
pub(crate) struct Operator(pub(crate) Requester);

impl FromRequestParts<Arc<Api>> for Operator {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, api: &Arc<Api>) -> Result<Self, Self::Rejection> {
        let header = parts.headers.get(axum::http::header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        let Some(token) = header.and_then(|h| h.strip_prefix("Bearer ")).map(str::trim).filter(|t| !t.is_empty())
        else {
            let msg = "this endpoint needs an Authorization: Bearer TOKEN header (the admin token)";
            return Err(ApiError(ErrorBody::new(ErrorCode::AuthFailed, msg)));
        };
        let hello = Hello {
            version: PROTOCOL_VERSION,
            role: Role::Operator,
            token: Some(token.to_owned()),
            secret: None,
            enroll: false,
            id: None,
            tags: Default::default(),
            commands: Vec::new(),
            agent: None,
            codecs: Vec::new(),
            durable: false,
            will: None,
        };
        let principal = api.shared.auth.authenticate(&hello).await.map_err(ApiError)?;
        if principal.role != Role::Operator || !principal.admin {
            let msg = "the API takes the admin token (roles come with the security work)";
            return Err(ApiError(ErrorBody::new(ErrorCode::Forbidden, msg)));
        }
        Ok(Operator(api.admin.clone()))
    }
}

//! Operator tokens (security): named credentials with a role ([`Access`]), made with
//! `$orb.tokens.add` (`orb tokens add`), shown once, kept as their SHA-256 in the store and in
//! memory here. The authenticator looks a presented token up by its digest (then compares in
//! constant time); the policy looks the token's name up on every check, so a revocation takes
//! effect at the next command of every session and API call holding it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use orb_proto::tokens::{Access, TokenCreated, TokenInfo};
use orb_proto::{DeviceId, ErrorBody, ErrorCode};
use orb_store::{OperatorToken, Store, StoreError};
use subtle::ConstantTimeEq;

use crate::broker::services::rfc3339;
use crate::registry::{IssuedSecret, digest};

/// Tokens held at most (creating more is refused).
pub const MAX_TOKENS: usize = 10_000;

/// The server's operator tokens.
pub struct OperatorTokens {
    store: Arc<dyn Store>,
    held: RwLock<Held>,
}

#[derive(Default)]
struct Held {
    by_name: HashMap<String, OperatorToken>,
    by_digest: HashMap<[u8; 32], String>,
}

impl Held {
    fn insert(&mut self, token: OperatorToken) {
        self.by_digest.insert(token.hash, token.name.clone());
        self.by_name.insert(token.name.clone(), token);
    }
}

fn info(t: &OperatorToken) -> TokenInfo {
    TokenInfo {
        name: t.name.clone(),
        role: Access::parse(&t.role).unwrap_or(Access::Viewer),
        created_at: rfc3339(t.created_at),
        revoked_at: t.revoked_at.map(rfc3339),
    }
}

fn store_error(e: StoreError, name: &str) -> ErrorBody {
    match e {
        StoreError::Conflict(_) => ErrorBody::new(ErrorCode::IdTaken, format!("a token named {name} exists already")),
        StoreError::NotFound(_) => ErrorBody::new(ErrorCode::NotFound, format!("no token named {name}")),
        e => crate::registry::store_error(e),
    }
}

impl OperatorTokens {
    /// Loads the stored tokens. A stored role this server does not know admits nobody.
    ///
    /// # Errors
    /// The store's, when it cannot be read.
    pub async fn load(store: Arc<dyn Store>) -> Result<OperatorTokens, StoreError> {
        let mut held = Held::default();
        for t in store.tokens().await? {
            if Access::parse(&t.role).is_none() {
                tracing::warn!(
                    token = t.name,
                    role = t.role,
                    "an operator token has an unknown role; it admits nobody"
                );
                continue;
            }
            held.insert(t);
        }
        Ok(OperatorTokens { store, held: RwLock::new(held) })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Held> {
        self.held.read().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The name and role of a valid (not revoked) token `token`.
    pub fn check(&self, token: &str) -> Option<(String, Access)> {
        let given = digest(token);
        let held = self.read();
        let name = held.by_digest.get(&given)?;
        let t = held.by_name.get(name)?;
        let same: bool = t.hash.ct_eq(&given).into();
        (same && t.revoked_at.is_none()).then(|| (t.name.clone(), Access::parse(&t.role).unwrap_or(Access::Viewer)))
    }

    /// The role of the valid token named `name`, `None` once it is revoked (or gone).
    pub fn access(&self, name: &str) -> Option<Access> {
        let held = self.read();
        held.by_name.get(name).filter(|t| t.revoked_at.is_none()).and_then(|t| Access::parse(&t.role))
    }

    /// Makes a token named `name` with `role`, committed before it returns; the token is in the
    /// answer and nowhere else.
    ///
    /// # Errors
    /// `bad_id` (the name), `id_taken`, `bad_request` (too many tokens), `store_unavailable`.
    pub async fn add(&self, name: &str, role: Access) -> Result<TokenCreated, ErrorBody> {
        DeviceId::new(name).map_err(|e| ErrorBody::new(ErrorCode::BadId, format!("token name: {e}")))?;
        if self.read().by_name.len() >= MAX_TOKENS {
            let msg = format!("the server holds its maximum of {MAX_TOKENS} tokens; revoke or remove some first");
            return Err(ErrorBody::new(ErrorCode::BadRequest, msg));
        }
        let issued = IssuedSecret::generate();
        let token = OperatorToken {
            name: name.to_owned(),
            role: role.as_str().to_owned(),
            hash: issued.hash,
            created_at: chrono::Utc::now(),
            revoked_at: None,
        };
        self.store.add_token(token.clone()).await.map_err(|e| store_error(e, name))?;
        self.held.write().unwrap_or_else(std::sync::PoisonError::into_inner).insert(token);
        Ok(TokenCreated { name: name.to_owned(), role, token: issued.secret })
    }

    /// Revokes the token `name`, committed before it returns; it admits nobody from then on.
    ///
    /// # Errors
    /// `not_found`, `store_unavailable`.
    pub async fn revoke(&self, name: &str) -> Result<TokenInfo, ErrorBody> {
        let at = chrono::Utc::now();
        self.store.revoke_token(name, at).await.map_err(|e| store_error(e, name))?;
        let mut held = self.held.write().unwrap_or_else(std::sync::PoisonError::into_inner);
        let t = held.by_name.get_mut(name).ok_or_else(|| store_error(StoreError::NotFound(name.into()), name))?;
        t.revoked_at.get_or_insert(at);
        Ok(info(t))
    }

    /// Every token, revoked ones included, by name.
    pub fn list(&self) -> Vec<TokenInfo> {
        let held = self.read();
        let mut all: Vec<TokenInfo> = held.by_name.values().map(info).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }
}

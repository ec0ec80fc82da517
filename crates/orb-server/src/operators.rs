//! Operator tokens (security): named credentials with a role ([`Access`]), made with
//! `$orb.tokens.add` (`orb tokens add`), shown once, kept as their SHA-256 in the store and in
//! memory here. The authenticator looks a presented token up by its digest (then compares in
//! constant time); the policy looks the token's name up on every check, so a revocation takes
//! effect at the next command of every session and API call holding it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use orb_proto::tokens::{Access, MAX_TOKEN_LIFETIME_MS, TokenCreated, TokenInfo};
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
        expires_at: t.expires_at.map(rfc3339),
    }
}

/// Whether `t` admits anyone now: not revoked, not expired.
fn valid(t: &OperatorToken) -> bool {
    t.revoked_at.is_none() && t.expires_at.is_none_or(|at| chrono::Utc::now() < at)
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

    /// The name and role of a valid (not revoked, not expired) token `token`.
    pub fn check(&self, token: &str) -> Option<(String, Access)> {
        let given = digest(token);
        let held = self.read();
        let name = held.by_digest.get(&given)?;
        let t = held.by_name.get(name)?;
        let same: bool = t.hash.ct_eq(&given).into();
        (same && valid(t)).then(|| (t.name.clone(), Access::parse(&t.role).unwrap_or(Access::Viewer)))
    }

    /// The role of the valid token named `name`.
    ///
    /// # Errors
    /// Why it admits nothing: revoked, expired, or gone.
    pub fn access(&self, name: &str) -> Result<Access, String> {
        let held = self.read();
        match held.by_name.get(name) {
            Some(t) if valid(t) => {
                Access::parse(&t.role).ok_or_else(|| format!("the token {name} has an unknown role"))
            }
            Some(t) if t.revoked_at.is_some() => Err(format!("the token {name} was revoked; it admits nothing more")),
            Some(t) => Err(format!(
                "the token {name} expired at {}; it admits nothing more",
                t.expires_at.map(rfc3339).unwrap_or_default()
            )),
            None => Err(format!("the token {name} no longer exists")),
        }
    }

    /// Makes a token named `name` with `role`, expiring `expires_in_ms` after now (`None`:
    /// never), committed before it returns; the token is in the answer and nowhere else.
    ///
    /// # Errors
    /// `bad_id` (the name), `id_taken`, `bad_request` (too many tokens, a lifetime of 0 or
    /// beyond [`MAX_TOKEN_LIFETIME_MS`]), `store_unavailable`.
    pub async fn add(&self, name: &str, role: Access, expires_in_ms: Option<u64>) -> Result<TokenCreated, ErrorBody> {
        DeviceId::new(name).map_err(|e| ErrorBody::new(ErrorCode::BadId, format!("token name: {e}")))?;
        if let Some(ms) = expires_in_ms.filter(|ms| !(1..=MAX_TOKEN_LIFETIME_MS).contains(ms)) {
            let msg = format!("expires_in_ms = {ms}: a token lives 1 ms to {MAX_TOKEN_LIFETIME_MS} ms (ten years)");
            return Err(ErrorBody::new(ErrorCode::BadRequest, msg));
        }
        let created_at = chrono::Utc::now();
        let expires_at = expires_in_ms
            .and_then(|ms| i64::try_from(ms).ok())
            .and_then(|ms| created_at.checked_add_signed(chrono::Duration::milliseconds(ms)));
        if self.read().by_name.len() >= MAX_TOKENS {
            let msg = format!("the server holds its maximum of {MAX_TOKENS} tokens; revoke or remove some first");
            return Err(ErrorBody::new(ErrorCode::BadRequest, msg));
        }
        let issued = IssuedSecret::generate();
        let token = OperatorToken {
            name: name.to_owned(),
            role: role.as_str().to_owned(),
            hash: issued.hash,
            created_at,
            revoked_at: None,
            expires_at,
        };
        self.store.add_token(token.clone()).await.map_err(|e| store_error(e, name))?;
        self.held.write().unwrap_or_else(std::sync::PoisonError::into_inner).insert(token);
        Ok(TokenCreated { name: name.to_owned(), role, token: issued.secret, expires_at: expires_at.map(rfc3339) })
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

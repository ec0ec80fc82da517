//! Conformance cases for operator tokens: added (with or without an expiry), listed by name,
//! revoked (the first revocation time kept), a duplicate name or token refused, kept across a restart. Run per backend by
//! `conformance_tests!`.

use super::{Harness, t};
use crate::{OperatorToken, StoreError};

fn token(name: &str, role: &str, hash: u8) -> OperatorToken {
    let (name, role) = (name.into(), role.into());
    OperatorToken { name, role, hash: [hash; 32], created_at: t(1), revoked_at: None, expires_at: None }
}

/// Added, listed, refused twice, revoked once, kept across a restart.
pub async fn operator_tokens_are_added_revoked_and_kept(h: &Harness) {
    let store = h.store();
    assert!(store.tokens().await.unwrap().is_empty());
    store.add_token(OperatorToken { expires_at: Some(t(86_400_000)), ..token("zoe", "viewer", 2) }).await.unwrap();
    store.add_token(token("ci", "operator", 1)).await.unwrap();
    assert!(matches!(store.add_token(token("ci", "admin", 3)).await, Err(StoreError::Conflict(_))));
    assert!(matches!(store.add_token(token("other", "admin", 1)).await, Err(StoreError::Conflict(_))));
    store.revoke_token("ci", t(5)).await.unwrap();
    store.revoke_token("ci", t(9)).await.unwrap();
    assert!(matches!(store.revoke_token("nobody", t(5)).await, Err(StoreError::NotFound(_))));
    let want = vec![
        OperatorToken { revoked_at: Some(t(5)), ..token("ci", "operator", 1) },
        OperatorToken { expires_at: Some(t(86_400_000)), ..token("zoe", "viewer", 2) },
    ];
    assert_eq!(store.tokens().await.unwrap(), want);
    let store = h.reopen().await;
    assert_eq!(store.tokens().await.unwrap(), want, "committed, kept across a restart");
}

//! The operator tokens' services (`$orb.tokens.*`, admin only): make one (shown once), list them
//! (never the tokens), revoke one (every session and API call holding it is refused from its
//! next command on, since the policy looks the token up on each check).

use orb_proto::tokens::{TokenAdd, TokenCreated, TokenInfo, TokenRef};
use orb_proto::{ErrorBody, ErrorCode};

use crate::broker::{Action, Audited, Broker};
use crate::identity::Requester;
use crate::operators::OperatorTokens;

impl Broker {
    fn operator_tokens(&self, who: &Requester, name: &'static str) -> Result<&OperatorTokens, ErrorBody> {
        self.policy().check(&who.identity, &Action::Query { name })?;
        self.policy()
            .tokens()
            .map(AsRef::as_ref)
            .ok_or_else(|| ErrorBody::new(ErrorCode::Unsupported, "this server keeps no operator tokens"))
    }

    /// `$orb.tokens.add`: a new token with a role, committed before it is shown (once).
    ///
    /// # Errors
    /// `forbidden`, `bad_id` (the name), `id_taken`, `bad_request` (too many, a bad lifetime),
    /// `store_unavailable`.
    pub async fn token_add(&self, who: &Requester, a: TokenAdd) -> Result<TokenCreated, ErrorBody> {
        let (target, role) = (a.name.clone(), a.role);
        let result: Result<TokenCreated, ErrorBody> = async {
            self.operator_tokens(who, orb_proto::message::commands::TOKENS_ADD)?
                .add(&a.name, a.role, a.expires_in_ms)
                .await
        }
        .await;
        self.audit(who, Audited::TokenAdd, &target, serde_json::json!({ "role": role }), &result);
        result
    }

    /// `$orb.tokens.list`: every token, revoked ones included, by name.
    ///
    /// # Errors
    /// `forbidden`.
    pub fn tokens_list(&self, who: &Requester) -> Result<Vec<TokenInfo>, ErrorBody> {
        Ok(self.operator_tokens(who, orb_proto::message::commands::TOKENS_LIST)?.list())
    }

    /// `$orb.tokens.revoke`: the token admits nobody from now on.
    ///
    /// # Errors
    /// `forbidden`, `not_found`, `store_unavailable`.
    pub async fn token_revoke(&self, who: &Requester, r: &TokenRef) -> Result<TokenInfo, ErrorBody> {
        let result: Result<TokenInfo, ErrorBody> =
            async { self.operator_tokens(who, orb_proto::message::commands::TOKENS_REVOKE)?.revoke(&r.name).await }
                .await;
        self.audit(who, Audited::TokenRevoke, &r.name, serde_json::Value::Null, &result);
        result
    }
}

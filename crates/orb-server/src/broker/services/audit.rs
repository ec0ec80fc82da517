//! The audit log's reading service (`$orb.audit.list`, `GET /v1/audit`, admin only): the newest
//! entries, from a time on, read from the store after a flush (entries are written in batches,
//! by `broker::audit`). A stored detail that is no JSON value any more is answered as null.

use chrono::DateTime;
use orb_proto::audit::{AuditInfo, AuditQuery};
use orb_proto::message::commands;
use orb_proto::{ErrorBody, ErrorCode};
use orb_store::AuditRecord;

use super::{raw_json, rfc3339};
use crate::broker::{Action, Broker};
use crate::identity::Requester;
use crate::registry::store_error;

/// Entries listed when the query gives no limit.
pub(crate) const DEFAULT_LIMIT: u32 = 100;
/// The most entries one list returns.
pub(crate) const MAX_LIMIT: u32 = 1000;

impl Broker {
    /// `$orb.audit.list`: the newest entries (at or after `since`), newest first.
    ///
    /// # Errors
    /// `forbidden` (anyone but an admin), `bad_args` (`since` is no RFC 3339 time),
    /// `store_unavailable`.
    pub async fn audit_list(&self, who: &Requester, q: &AuditQuery) -> Result<Vec<AuditInfo>, ErrorBody> {
        self.policy().check(&who.identity, &Action::Query { name: commands::AUDIT_LIST })?;
        let since = q
            .since
            .as_deref()
            .map(|s| {
                DateTime::parse_from_rfc3339(s).map(|t| t.to_utc()).map_err(|e| {
                    let msg = format!("since = '{}' is no RFC 3339 time: {e}", orb_proto::excerpt(s));
                    ErrorBody::new(ErrorCode::BadArgs, msg)
                })
            })
            .transpose()?;
        let limit = q.limit.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT);
        let store = self.registry().store();
        store.flush().await.map_err(store_error)?;
        Ok(store.audit(since, limit).await.map_err(store_error)?.iter().map(audit_info).collect())
    }
}

fn audit_info(r: &AuditRecord) -> AuditInfo {
    let e = &r.entry;
    AuditInfo {
        id: r.id,
        at: rfc3339(e.at),
        actor: e.actor.clone(),
        role: e.role.clone(),
        source: e.source.clone(),
        action: e.action.clone(),
        target: e.target.clone(),
        outcome: e.outcome.clone(),
        detail: e.detail.as_deref().and_then(raw_json),
    }
}

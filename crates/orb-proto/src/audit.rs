//! The audit log's wire types (security): the arguments of `$orb.audit.list` (also the query of
//! `GET /v1/audit`) and one entry as it is answered. The server writes the entries; `orb audit`
//! prints them.

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// Arguments of [`crate::message::commands::AUDIT_LIST`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditQuery {
    /// Only entries at or after this RFC 3339 time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// At most this many entries, newest first (server default 100, at most 1000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

/// One entry of the audit log: who did what, to what, when, from where, and with what outcome.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AuditInfo {
    /// Its place in the log (larger is newer).
    pub id: i64,
    /// RFC 3339 UTC time.
    pub at: String,
    /// Who: an operator token's name, an admin-token session's name (`op-3`, `http`,
    /// `dashboard`), or `server` for the host's own actions.
    pub actor: String,
    /// The credential: `admin-token`, a token's role (`admin`, `operator`, `viewer`), or `host`.
    pub role: String,
    /// From where: transport and address (`tcp 10.0.0.5:53122`, `http ...`, `dashboard ...`), or
    /// `reload` for a configuration reload.
    pub source: String,
    /// What: `job.submit`, `request.send`, `job.cancel`, `schedule.create|pause|resume|remove`,
    /// `device.add|remove|revoke|tag`, `token.add|revoke`, `server.signal`, `config.reload`.
    pub action: String,
    /// What it was done to: a selector, a job, schedule or device id, a token name, a signal
    /// (empty when a refusal came before its arguments were read).
    pub target: String,
    /// `ok`, or `forbidden` for a refused attempt.
    pub outcome: String,
    /// More about it (a JSON object: the command, the job id, a refusal's message); null when
    /// nothing.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<Object>))]
    pub detail: Option<Box<RawValue>>,
}

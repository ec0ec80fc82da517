//! The typed services of the broker, one per `$orb.` query, shared by every adapter (the wire
//! protocol's `$orb.` commands through `queries`, the HTTP API later), so they can never
//! disagree: the device registry ([`devices`]), the job history ([`history`]), the server
//! itself ([`server`]) and the audit log ([`audit`]). Each checks the policy first; registry changes are committed to the store
//! before they return; reads flush the store's batched records first.

pub mod audit;
pub mod devices;
pub mod history;
pub mod schedules;
pub mod server;
pub mod tokens;

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;

/// RFC 3339 UTC with seconds, the form every listing uses.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// Stored JSON text as a raw value; `None` when it is not one JSON value the reader can take
/// (written by an older build before bodies were checked). One bad value never fails a listing.
pub(crate) fn raw_json(text: &str) -> Option<Box<RawValue>> {
    if orb_proto::body::check(text.as_bytes()).is_err() {
        return None;
    }
    RawValue::from_string(text.to_owned()).ok()
}

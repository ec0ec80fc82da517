//! The `$orb.devices.*` operator commands: list, show and count known devices; pre-register,
//! remove and revoke them; set operator tags. Registry changes are committed to the store before
//! they are answered; revoking or removing a connected device closes its session at once.

use chrono::{DateTime, Utc};
use orb_proto::message::DevicesQuery;
use orb_proto::registry::{
    ConnectionStats, DeviceAdd, DeviceCredential, DeviceDetail, DeviceRef, DeviceTags, DevicesSummary,
};
use orb_proto::{DeviceId, ErrorBody, ErrorCode};
use orb_store::Device;

use crate::builtin::to_value;
use crate::close::CloseReason;
use crate::registry::{IssuedSecret, store_error};
use crate::router::{DeviceRecord, Router, rfc3339};
use orb_io::handler::{Context as Request, HandlerResult};

/// `$orb.devices.list`: known devices (or only connected ones), optionally by selector.
pub async fn list(router: &Router, req: &Request) -> HandlerResult {
    let q: DevicesQuery = if req.args.as_ref() == b"null" { DevicesQuery::default() } else { req.args()? };
    let sel = q.selector.as_deref().map(|s| router.parse_selector(s)).transpose()?;
    to_value(&router.device_infos(sel.as_ref(), q.connected).await?)
}

/// `$orb.devices.show`: everything about one device (the store's inventory, flushed first).
pub async fn show(router: &Router, req: &Request) -> HandlerResult {
    let r: DeviceRef = req.args()?;
    let store = router.registry().store();
    store.flush().await.map_err(store_error)?;
    let device = store.device(&r.id).await.map_err(store_error)?.ok_or_else(|| unknown(&r.id))?;
    let live = router.device(&r.id);
    to_value(&detail(&device, live.as_ref().map(|s| s.record.as_ref())))
}

/// `$orb.devices.summary`: defined versus connected.
pub fn summary(router: &Router) -> HandlerResult {
    let (known, revoked) = router.registry().counts();
    to_value(&DevicesSummary { known, connected: router.counts().0, revoked })
}

/// `$orb.devices.add`: registers a device with a fresh secret, shown once.
pub async fn add(router: &Router, req: &Request) -> HandlerResult {
    let a: DeviceAdd = req.args()?;
    let id = DeviceId::new(&a.id).map_err(|e| ErrorBody::new(ErrorCode::BadId, e.to_string()))?;
    check_tags(a.tags.iter())?;
    let issued = IssuedSecret::generate();
    router.registry().add(&id, Some(issued.hash), a.tags).await?;
    to_value(&DeviceCredential { id: a.id, secret: issued.secret })
}

/// `$orb.devices.remove`: forgets a device and closes its session.
pub async fn remove(router: &Router, req: &Request) -> HandlerResult {
    let r: DeviceRef = req.args()?;
    router.registry().remove(&r.id).await?;
    close_session(router, &r.id, CloseReason::Removed);
    Ok(serde_json::json!({ "id": r.id }))
}

/// `$orb.devices.revoke`: disables the device's credential and closes its session.
pub async fn revoke(router: &Router, req: &Request) -> HandlerResult {
    let r: DeviceRef = req.args()?;
    let device = router.registry().revoke(&r.id).await?;
    close_session(router, &r.id, CloseReason::Revoked);
    to_value(&detail(&device, None))
}

/// `$orb.devices.tag`: sets and removes operator tags.
pub async fn tag(router: &Router, req: &Request) -> HandlerResult {
    let t: DeviceTags = req.args()?;
    check_tags(t.set.iter())?;
    static NO_VALUE: String = String::new();
    check_tags(t.remove.iter().map(|k| (k, &NO_VALUE)))?;
    let device = router.registry().set_operator_tags(&t.id, &t.set, &t.remove).await?;
    let live = router.device(&t.id);
    to_value(&detail(&device, live.as_ref().map(|s| s.record.as_ref())))
}

fn close_session(router: &Router, id: &str, reason: CloseReason) {
    if let Some(session) = router.device(id) {
        session.outbox.closer.close(reason);
    }
}

fn unknown(id: &str) -> ErrorBody {
    ErrorBody::new(ErrorCode::DeviceNotFound, format!("no device {id} is registered"))
}

/// Operator tags must be selectable (`tag:KEY=VALUE`); keys to remove only need a valid key.
fn check_tags<'a>(set: impl Iterator<Item = (&'a String, &'a String)>) -> Result<(), ErrorBody> {
    for (k, v) in set {
        orb_proto::check_tag(k, v)
            .map_err(|e| ErrorBody::new(ErrorCode::BadArgs, format!("tag {k}={v}: {}", e.message)))?;
    }
    Ok(())
}

/// Registry record plus live connection statistics.
fn detail(d: &Device, live: Option<&DeviceRecord>) -> DeviceDetail {
    let credential = match (d.revoked, d.secret_hash.is_some()) {
        (true, _) => "none",
        (false, true) => "secret",
        (false, false) => "token",
    };
    DeviceDetail {
        id: d.id.clone(),
        connected: live.is_some(),
        revoked: d.revoked,
        credential: credential.to_owned(),
        tags: d.tags(),
        reported_tags: d.reported_tags.clone(),
        operator_tags: d.operator_tags.clone(),
        agent_version: d.agent_version.clone(),
        commands: d.commands.clone(),
        registered_at: rfc3339(d.registered_at),
        first_seen: d.first_seen.map(rfc3339),
        last_seen: if live.is_some() { Some(rfc3339(Utc::now())) } else { d.last_seen.map(rfc3339) },
        last_remote_addr: d.last_remote_addr.clone(),
        user_agent: d.user_agent.clone(),
        connections: d.connections,
        flaps: d.flaps,
        connection: live.map(connection_stats),
    }
}

fn connection_stats(r: &DeviceRecord) -> ConnectionStats {
    use std::sync::atomic::Ordering::Relaxed;
    let s = &r.stats;
    let at = |ms: u64| (ms > 0).then(|| DateTime::from_timestamp_millis(ms as i64).map(rfc3339)).flatten();
    ConnectionStats {
        id: r.conn,
        remote_addr: r.remote_addr.to_string(),
        transport: r.transport.to_owned(),
        connected_at: rfc3339(r.connected_since),
        last_received: at(s.last_received_ms.load(Relaxed)),
        last_sent: at(s.last_sent_ms.load(Relaxed)),
        received_messages: s.received_messages.load(Relaxed),
        received_bytes: s.received_bytes.load(Relaxed),
        sent_messages: s.sent_messages.load(Relaxed),
        sent_bytes: s.sent_bytes.load(Relaxed),
        rtt_ms: r.rtt_ms(),
    }
}

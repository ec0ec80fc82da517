//! The device registry's services: list, show and count known devices; pre-register, remove and
//! revoke them; set operator tags. Registry changes are committed to the store before they
//! return; revoking or removing a connected device closes its session at once. `show` adds the
//! device's latest telemetry (kept in memory, `broker::telemetry`).

use chrono::{DateTime, Utc};
use orb_proto::message::{DeviceInfo, DevicesQuery};
use orb_proto::registry::{
    ConnectionStats, DeliveryCounts, DeviceAdd, DeviceCredential, DeviceDetail, DeviceMessage, DeviceRef, DeviceTags,
    DeviceTelemetry, DevicesSummary, HeldCommand, MessagesQuery,
};
use orb_proto::{DeviceId, ErrorBody, ErrorCode};
use orb_store::Device;

use super::rfc3339;
use crate::broker::tally::plus;
use crate::broker::{Action, Audited, Broker};
use crate::close::CloseReason;
use crate::identity::Requester;
use crate::registry::{IssuedSecret, store_error};
use crate::router::sessions::DeviceRecord;

impl Broker {
    fn may(&self, who: &Requester, name: &'static str) -> Result<(), ErrorBody> {
        self.policy().check(&who.identity, &Action::Query { name })
    }

    /// `$orb.devices.list`: known devices (or only connected ones), optionally by selector,
    /// sorted by id: the registry selects, the store (flushed first) describes.
    ///
    /// # Errors
    /// `forbidden`, `bad_selector`, `unknown_group`, `store_unavailable`.
    pub async fn devices_list(&self, who: &Requester, q: &DevicesQuery) -> Result<Vec<DeviceInfo>, ErrorBody> {
        self.may(who, "$orb.devices.list")?;
        let sel = q.selector.as_deref().map(|s| self.parse_selector(s)).transpose()?;
        let wanted: std::collections::HashSet<String> = self
            .registry()
            .matching(|k| sel.as_ref().is_none_or(|s| s.matches(k)))
            .iter()
            .filter(|k| !q.connected || self.sessions().is_connected(&k.id))
            .map(|k| k.id.clone())
            .collect();
        let store = self.registry().store();
        store.flush().await.map_err(store_error)?;
        let devices = store.devices().await.map_err(store_error)?;
        let held = store.queue_counts().await.map_err(store_error)?;
        Ok(devices
            .iter()
            .filter(|d| wanted.contains(&d.id))
            .map(|d| {
                let live = self.sessions().get(&d.id);
                let mut info = device_info(d, live.as_ref().map(|s| s.record.as_ref()));
                if q.schemas {
                    info.schemas.clone_from(&d.schemas);
                }
                info.held = held.get(&d.id).map_or(0, |c| c.queued + c.in_flight);
                info
            })
            .collect())
    }

    /// `$orb.devices.show`: everything about one device (the store's inventory, flushed first).
    ///
    /// # Errors
    /// `forbidden`, `device_not_found`, `store_unavailable`.
    pub async fn device_show(&self, who: &Requester, r: &DeviceRef) -> Result<DeviceDetail, ErrorBody> {
        self.may(who, "$orb.devices.show")?;
        let store = self.registry().store();
        store.flush().await.map_err(store_error)?;
        let (device, pending) = self.0.tally.read(&r.id, store.device(&r.id)).await;
        let device = device.map_err(store_error)?.ok_or_else(|| unknown(&r.id))?;
        let mut d = self.detail(&device);
        d.delivery.delivered = plus(d.delivery.delivered, pending.0);
        d.delivery.acknowledged = plus(d.delivery.acknowledged, pending.1);
        d.held = store
            .queued_for(&r.id, SHOWN_HELD)
            .await
            .map_err(store_error)?
            .into_iter()
            .map(|q| HeldCommand {
                job: q.command.job_id,
                command: q.command.command,
                queued_at: rfc3339(q.command.queued_at),
                expires_at: rfc3339(q.command.expires_at),
                attempts: q.attempts,
            })
            .collect();
        if let Some(counts) = store.queue_counts().await.map_err(store_error)?.get(&r.id) {
            d.delivery.queued = counts.queued;
            d.delivery.in_flight = counts.in_flight;
        }
        Ok(d)
    }

    /// `$orb.devices.messages`: a device's newest outbox messages, oldest first.
    ///
    /// # Errors
    /// `forbidden`, `device_not_found`, `store_unavailable`.
    pub async fn device_messages(&self, who: &Requester, q: &MessagesQuery) -> Result<Vec<DeviceMessage>, ErrorBody> {
        self.may(who, "$orb.devices.messages")?;
        let store = self.registry().store();
        store.flush().await.map_err(store_error)?;
        store.device(&q.id).await.map_err(store_error)?.ok_or_else(|| unknown(&q.id))?;
        let limit = q.limit.unwrap_or(MessagesQuery::DEFAULT_LIMIT).clamp(1, MessagesQuery::MAX_LIMIT);
        let stored = store.messages_for(&q.id, limit).await.map_err(store_error)?;
        Ok(stored
            .into_iter()
            .map(|m| DeviceMessage {
                msg: m.message.msg,
                command: m.message.command,
                body: m.message.body.as_deref().and_then(super::raw_json),
                // Milliseconds: a device may send many in one second, and their order shows.
                sent_at: m.message.sent_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                received_at: m.message.received_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            })
            .collect())
    }

    /// `$orb.devices.summary`: defined versus connected.
    ///
    /// # Errors
    /// `forbidden`.
    pub fn devices_summary(&self, who: &Requester) -> Result<DevicesSummary, ErrorBody> {
        self.may(who, "$orb.devices.summary")?;
        let (known, revoked) = self.registry().counts();
        Ok(DevicesSummary { known, connected: self.sessions().counts().0, revoked })
    }

    /// `$orb.devices.add`: registers a device with a fresh secret, shown once.
    ///
    /// # Errors
    /// `forbidden`, `bad_id`, `bad_args` (a tag), `device_exists`, `store_unavailable`.
    pub async fn device_add(&self, who: &Requester, a: DeviceAdd) -> Result<DeviceCredential, ErrorBody> {
        let (target, tags) = (a.id.clone(), serde_json::json!({ "tags": a.tags }));
        let result: Result<DeviceCredential, ErrorBody> = async {
            self.may(who, "$orb.devices.add")?;
            let id = DeviceId::new(&a.id).map_err(|e| ErrorBody::new(ErrorCode::BadId, e.to_string()))?;
            check_tags(a.tags.iter())?;
            let issued = IssuedSecret::generate();
            self.registry().add(&id, Some(issued.hash), a.tags).await?;
            Ok(DeviceCredential { id: a.id, secret: issued.secret })
        }
        .await;
        self.audit(who, Audited::DeviceAdd, &target, tags, &result);
        result
    }

    /// `$orb.devices.remove`: forgets a device and closes its session.
    ///
    /// # Errors
    /// `forbidden`, `device_not_found`, `store_unavailable`.
    pub async fn device_remove(&self, who: &Requester, r: DeviceRef) -> Result<DeviceRef, ErrorBody> {
        let target = r.id.clone();
        let result: Result<DeviceRef, ErrorBody> = async {
            self.may(who, "$orb.devices.remove")?;
            self.registry().remove(&r.id).await?;
            self.0.telemetry.forget(&r.id);
            self.sessions().close(&r.id, CloseReason::Removed);
            Ok(r)
        }
        .await;
        self.audit(who, Audited::DeviceRemove, &target, serde_json::Value::Null, &result);
        result
    }

    /// `$orb.devices.revoke`: disables the device's credential and closes its session.
    ///
    /// # Errors
    /// `forbidden`, `device_not_found`, `store_unavailable`.
    pub async fn device_revoke(&self, who: &Requester, r: &DeviceRef) -> Result<DeviceDetail, ErrorBody> {
        let result: Result<DeviceDetail, ErrorBody> = async {
            self.may(who, "$orb.devices.revoke")?;
            let device = self.registry().revoke(&r.id).await?;
            self.sessions().close(&r.id, CloseReason::Revoked);
            Ok(detail(&device, None))
        }
        .await;
        self.audit(who, Audited::DeviceRevoke, &r.id, serde_json::Value::Null, &result);
        result
    }

    /// `$orb.devices.tag`: sets and removes operator tags.
    ///
    /// # Errors
    /// `forbidden`, `bad_args` (a tag), `device_not_found`, `store_unavailable`.
    pub async fn device_tag(&self, who: &Requester, t: &DeviceTags) -> Result<DeviceDetail, ErrorBody> {
        let result: Result<DeviceDetail, ErrorBody> = async {
            self.may(who, "$orb.devices.tag")?;
            check_tags(t.set.iter())?;
            static NO_VALUE: String = String::new();
            check_tags(t.remove.iter().map(|k| (k, &NO_VALUE)))?;
            let device = self.registry().set_operator_tags(&t.id, &t.set, &t.remove).await?;
            // Its tags decide which agent-local schedules it runs and what settings it is told.
            if let Ok(id) = orb_proto::DeviceId::new(&device.id) {
                self.push_agent_settings(&id);
                self.sync_agent_schedules(Some(id));
            }
            Ok(self.detail(&device))
        }
        .await;
        self.audit(who, Audited::DeviceTag, &t.id, serde_json::json!({ "set": t.set, "remove": t.remove }), &result);
        result
    }

    fn detail(&self, d: &Device) -> DeviceDetail {
        let live = self.sessions().get(&d.id);
        let mut detail = detail(d, live.as_ref().map(|s| s.record.as_ref()));
        detail.telemetry = self.telemetry(&d.id).and_then(|t| {
            let value = serde_json::from_slice(&t.body).ok()?;
            Some(DeviceTelemetry { at: t.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true), value })
        });
        detail
    }
}

/// Held commands `$orb.devices.show` lists at most.
const SHOWN_HELD: u32 = 100;

fn unknown(id: &str) -> ErrorBody {
    ErrorBody::new(ErrorCode::DeviceNotFound, format!("no device {} is registered", orb_proto::excerpt(id)))
}

/// Operator tags must be selectable (`tag:KEY=VALUE`); keys to remove only need a valid key.
fn check_tags<'a>(set: impl Iterator<Item = (&'a String, &'a String)>) -> Result<(), ErrorBody> {
    for (k, v) in set {
        orb_proto::check_tag(k, v).map_err(|e| {
            ErrorBody::new(
                ErrorCode::BadArgs,
                format!("tag {}={}: {}", orb_proto::excerpt(k), orb_proto::excerpt(v), e.message),
            )
        })?;
    }
    Ok(())
}

/// The inventory line of a stored device, with its live session when connected.
pub fn device_info(d: &Device, live: Option<&DeviceRecord>) -> DeviceInfo {
    DeviceInfo {
        id: d.id.clone(),
        connected: live.is_some(),
        tags: d.tags(),
        remote_addr: live.map(|r| r.remote_addr.to_string()).or_else(|| d.last_remote_addr.clone()),
        connected_since: live.map(|r| rfc3339(r.connected_since)),
        agent_version: d.agent_version.clone(),
        transport: live.map(|r| r.transport.to_owned()).or_else(|| d.transport.clone()),
        commands: d.commands.clone(),
        schemas: Default::default(),
        rtt_ms: live.and_then(DeviceRecord::rtt_ms),
        revoked: d.revoked,
        last_seen: if live.is_some() { Some(rfc3339(Utc::now())) } else { d.last_seen.map(rfc3339) },
        held: 0,
    }
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
        schemas: d.schemas.clone(),
        registered_at: rfc3339(d.registered_at),
        first_seen: d.first_seen.map(rfc3339),
        last_seen: if live.is_some() { Some(rfc3339(Utc::now())) } else { d.last_seen.map(rfc3339) },
        last_remote_addr: d.last_remote_addr.clone(),
        user_agent: d.user_agent.clone(),
        connections: d.connections,
        flaps: d.flaps,
        connection: live.map(connection_stats),
        held: Vec::new(),
        delivery: DeliveryCounts { delivered: d.delivered, acknowledged: d.acknowledged, ..DeliveryCounts::default() },
        telemetry: None,
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

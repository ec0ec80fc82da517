//! Typed bodies of the device registry's operator commands (`$orb.devices.*`): inventory detail,
//! summary counts, pre-registration, removal, revocation and operator tags, and the latest
//! telemetry a device published ([`DeviceTelemetry`], summarised by [`SysGlance`]). The server answers
//! them from its registry and store; the CLI renders them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Arguments naming one device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceRef {
    /// Device id.
    pub id: String,
}

/// Arguments of [`crate::message::commands::DEVICES_ADD`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceAdd {
    /// The new device's id.
    pub id: String,
    /// Operator tags to set from the start.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

/// A device's credential, shown once: when `orb devices add` registers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceCredential {
    /// Device id.
    pub id: String,
    /// The device secret (the server keeps only its SHA-256).
    pub secret: String,
}

/// Arguments of [`crate::message::commands::DEVICES_TAG`]: operator tags to set and to remove.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceTags {
    /// Device id.
    pub id: String,
    /// Tags to set (key to value).
    #[serde(default)]
    pub set: BTreeMap<String, String>,
    /// Tag keys to remove.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// Result of [`crate::message::commands::DEVICES_SUMMARY`]: defined versus connected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevicesSummary {
    /// Devices the registry knows (every device ever seen or added, minus removed ones).
    pub known: u64,
    /// Devices with a live session now.
    pub connected: u64,
    /// Known devices whose credential is revoked.
    pub revoked: u64,
}

/// Everything known about one device: the registry record plus, when connected, its live link.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceDetail {
    /// Device id.
    pub id: String,
    /// Whether a session is connected now.
    pub connected: bool,
    /// Whether an operator revoked its credential.
    pub revoked: bool,
    /// How it authenticates: `secret` (its own), `token` (the shared agent token; a v1 agent) or
    /// `none` (revoked).
    pub credential: String,
    /// Effective tags: reported ones, overridden by operator ones.
    pub tags: BTreeMap<String, String>,
    /// Tags the agent reported in its last hello.
    pub reported_tags: BTreeMap<String, String>,
    /// Tags set by operators.
    pub operator_tags: BTreeMap<String, String>,
    /// Agent software reported in its last hello.
    pub agent_version: Option<String>,
    /// Commands it declared in its last hello.
    pub commands: Vec<String>,
    /// JSON Schemas of the arguments of some of those commands, by command name, from its last
    /// hello (the device checks arguments against them: `invalid_args`). Absent means none.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, Object>))]
    pub schemas: BTreeMap<String, serde_json::Value>,
    /// RFC 3339 UTC: when it was registered (enrolled or added).
    pub registered_at: String,
    /// RFC 3339 UTC: its first connection.
    pub first_seen: Option<String>,
    /// RFC 3339 UTC: the last time it was heard from (now, within a minute, when connected).
    pub last_seen: Option<String>,
    /// Peer address of its last connection.
    pub last_remote_addr: Option<String>,
    /// The user agent of its last connection: the WebSocket `User-Agent` header, else the agent software.
    pub user_agent: Option<String>,
    /// Connections since it was registered.
    pub connections: u64,
    /// Reconnections within a minute of the previous disconnection.
    pub flaps: u64,
    /// The live connection, when connected.
    pub connection: Option<ConnectionStats>,
    /// Commands held for it (jobs sent with a TTL), oldest first, at most 100. Absent from
    /// servers before held commands existed: read as none.
    #[serde(default)]
    pub held: Vec<HeldCommand>,
    /// Held commands for it, counted: waiting, handed over and not settled, delivered in all,
    /// answered in all. Absent from older servers: read as zeros.
    #[serde(default)]
    pub delivery: DeliveryCounts,
    /// The latest system metrics the device published on `telemetry.<id>.sys` since the
    /// server started; `null` when none. Absent from older servers: read as none.
    #[serde(default)]
    pub telemetry: Option<DeviceTelemetry>,
}

/// A device's latest telemetry sample, as the server received it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceTelemetry {
    /// RFC 3339 UTC time, with milliseconds, the server received it.
    pub at: String,
    /// The published JSON body: the agent's `sys.info` object (docs/agent-commands.md).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub value: serde_json::Value,
}

/// The few figures of a `sys.info` object (a telemetry sample) that one-line summaries show,
/// read leniently: a missing or mistyped figure is `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SysGlance {
    /// CPU usage, percent of all CPUs.
    pub cpu_percent: Option<f64>,
    /// Load averages over one, five and fifteen minutes.
    pub load_avg: Option<[f64; 3]>,
    /// Memory used and total, in bytes.
    pub memory: Option<(u64, u64)>,
}

impl SysGlance {
    /// Reads the figures of `v`.
    pub fn of(v: &serde_json::Value) -> SysGlance {
        let load = &v["load_avg"];
        let mem = &v["memory"];
        SysGlance {
            cpu_percent: v["cpu_percent"].as_f64(),
            load_avg: match (load["one"].as_f64(), load["five"].as_f64(), load["fifteen"].as_f64()) {
                (Some(a), Some(b), Some(c)) => Some([a, b, c]),
                _ => None,
            },
            memory: mem["used_bytes"].as_u64().zip(mem["total_bytes"].as_u64()),
        }
    }

    /// CPU as `12%`, or `-`.
    pub fn cpu_text(&self) -> String {
        self.cpu_percent.map_or_else(|| "-".to_owned(), |c| format!("{c:.0}%"))
    }

    /// Memory as `1.2/7.8 GiB` (used of total), or `-`.
    pub fn memory_text(&self) -> String {
        const GIB: f64 = 1024.0 * 1024.0 * 1024.0;
        self.memory.map_or_else(
            || "-".to_owned(),
            |(used, total)| format!("{:.1}/{:.1} GiB", used as f64 / GIB, total as f64 / GIB),
        )
    }
}

/// A device's held commands counted ("sent vs acknowledged").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeliveryCounts {
    /// Waiting for delivery.
    pub queued: u64,
    /// Handed over, outcome not settled yet.
    pub in_flight: u64,
    /// Deliveries since registration (redeliveries included).
    pub delivered: u64,
    /// Deliveries the device answered since registration.
    pub acknowledged: u64,
}

/// A command held for a device (a job sent with a TTL): waiting for it, or handed over and not
/// answered yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeldCommand {
    /// The job.
    pub job: String,
    /// Command name.
    pub command: String,
    /// RFC 3339 UTC time it was held.
    pub queued_at: String,
    /// RFC 3339 UTC time its TTL passes.
    pub expires_at: String,
    /// Times it was handed to the device (0: still waiting).
    pub attempts: u64,
}

/// Statistics of a live connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ConnectionStats {
    /// Connection id (the welcome's `session`).
    pub id: u64,
    /// Peer address.
    pub remote_addr: String,
    /// `tcp` or `ws`.
    pub transport: String,
    /// RFC 3339 UTC time the connection was established.
    pub connected_at: String,
    /// RFC 3339 UTC time of the last frame received from the device.
    pub last_received: Option<String>,
    /// RFC 3339 UTC time of the last frame written to the device.
    pub last_sent: Option<String>,
    /// Frames received.
    pub received_messages: u64,
    /// Bytes received (frame payloads).
    pub received_bytes: u64,
    /// Frames sent.
    pub sent_messages: u64,
    /// Bytes sent (frame payloads).
    pub sent_bytes: u64,
    /// Last measured round-trip time, in milliseconds.
    pub rtt_ms: Option<f64>,
}

/// Arguments of [`crate::message::commands::DEVICES_MESSAGES`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessagesQuery {
    /// Device id.
    pub id: String,
    /// The newest this many (default [`MessagesQuery::DEFAULT_LIMIT`], at most
    /// [`MessagesQuery::MAX_LIMIT`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u32>,
}

impl MessagesQuery {
    /// Messages answered when the query names no limit.
    pub const DEFAULT_LIMIT: u32 = 100;
    /// Most messages one answer holds.
    pub const MAX_LIMIT: u32 = 10_000;
}

/// A message a device sent from its durable outbox, as stored by the server.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeviceMessage {
    /// The device's id for the message (unique per device).
    pub msg: String,
    /// Command name.
    pub command: String,
    /// JSON body, as sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<Box<serde_json::value::RawValue>>,
    /// RFC 3339 UTC time, with milliseconds, the device created it (its clock).
    pub sent_at: String,
    /// RFC 3339 UTC time, with milliseconds, the server stored it.
    pub received_at: String,
}

//! Typed bodies of the protocol's structured messages (handshake, jobs, operator queries), the
//! limits a hello must respect ([`Hello::check`]) and the names of the reserved `$orb.` server
//! commands. Command arguments and results stay raw JSON.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

use crate::envelope::{ErrorBody, Status};
use crate::error::ErrorCode;
use crate::text::excerpt;

/// Reserved server command names (operator queries), answered by the server itself.
pub mod commands {
    /// List devices, optionally filtered by a selector. Args: [`super::DevicesQuery`]; result: array of [`super::DeviceInfo`].
    pub const DEVICES_LIST: &str = "$orb.devices.list";
    /// Resolve a selector without sending anything (dry run). Args: [`super::ResolveQuery`]; result: [`super::Resolved`].
    pub const SELECTOR_RESOLVE: &str = "$orb.selector.resolve";
    /// Server identity and counters. Args: none; result: [`super::ServerInfo`].
    pub const SERVER_INFO: &str = "$orb.server.info";
    /// An admin message (`QUIT`, `RELOAD`, `LOG_ROTATE`, `PING`). Args: [`super::SignalRequest`].
    pub const SIGNAL: &str = "$orb.signal";
    /// Everything known about one device. Args: [`crate::registry::DeviceRef`]; result: [`crate::registry::DeviceDetail`].
    pub const DEVICES_SHOW: &str = "$orb.devices.show";
    /// Known and connected device counts. Args: none; result: [`crate::registry::DevicesSummary`].
    pub const DEVICES_SUMMARY: &str = "$orb.devices.summary";
    /// Pre-register a device. Args: [`crate::registry::DeviceAdd`]; result: [`crate::registry::DeviceCredential`].
    pub const DEVICES_ADD: &str = "$orb.devices.add";
    /// Forget a device (closes its session). Args: [`crate::registry::DeviceRef`]; result: `{"id": ...}`.
    pub const DEVICES_REMOVE: &str = "$orb.devices.remove";
    /// Disable a device's credential and close its session. Args: [`crate::registry::DeviceRef`];
    /// result: [`crate::registry::DeviceDetail`].
    pub const DEVICES_REVOKE: &str = "$orb.devices.revoke";
    /// Set or remove operator tags. Args: [`crate::registry::DeviceTags`]; result: [`crate::registry::DeviceDetail`].
    pub const DEVICES_TAG: &str = "$orb.devices.tag";
    /// A device's newest messages from its durable outbox, oldest first. Args:
    /// [`crate::registry::MessagesQuery`]; result: array of [`crate::registry::DeviceMessage`].
    pub const DEVICES_MESSAGES: &str = "$orb.devices.messages";
    /// Recent jobs, newest first. Args: [`crate::history::JobsQuery`]; result: array of [`crate::history::JobInfo`].
    pub const JOBS_LIST: &str = "$orb.jobs.list";
    /// One job with every target's result. Args: [`crate::history::JobRef`]; result: [`crate::history::JobDetail`].
    pub const JOBS_SHOW: &str = "$orb.jobs.show";
    /// Cancel a job's pending targets. Args: [`crate::history::JobRef`]; result: [`crate::history::JobCancelled`].
    pub const JOBS_CANCEL: &str = "$orb.jobs.cancel";
    /// Store a schedule. Args: [`crate::schedule::ScheduleCreate`]; result: [`crate::schedule::ScheduleInfo`].
    pub const SCHEDULES_CREATE: &str = "$orb.schedules.create";
    /// Every stored schedule, by id. No args; result: array of [`crate::schedule::ScheduleInfo`].
    pub const SCHEDULES_LIST: &str = "$orb.schedules.list";
    /// One schedule. Args: [`crate::schedule::ScheduleRef`]; result: [`crate::schedule::ScheduleInfo`].
    pub const SCHEDULES_SHOW: &str = "$orb.schedules.show";
    /// Stop a schedule firing until resumed. Args: [`crate::schedule::ScheduleRef`]; result: [`crate::schedule::ScheduleInfo`].
    pub const SCHEDULES_PAUSE: &str = "$orb.schedules.pause";
    /// Let a paused schedule fire again, from its next firing time after now. Args: [`crate::schedule::ScheduleRef`]; result: [`crate::schedule::ScheduleInfo`].
    pub const SCHEDULES_RESUME: &str = "$orb.schedules.resume";
    /// Remove a schedule (the jobs it fired stay). Args: [`crate::schedule::ScheduleRef`]; result: [`crate::schedule::ScheduleInfo`] as it was.
    pub const SCHEDULES_REMOVE: &str = "$orb.schedules.remove";
    /// Server to device (a request to an agent that declares it): the agent-local schedules the
    /// device runs, all of them; it keeps exactly these. Args: [`crate::schedule::AgentSchedules`];
    /// result: `{"schedules": N}`.
    pub const SCHEDULES_SYNC: &str = "$orb.schedules.sync";
    /// Device to server, through its outbox: one firing of an agent-local schedule. Body:
    /// [`crate::schedule::ScheduleRan`]; stored as a job of one target, linked to the schedule.
    pub const SCHEDULES_RAN: &str = "$orb.schedules.ran";
    /// Device to server, through its outbox: a system-telemetry sample the device took while
    /// disconnected. Body: the sample (a JSON object, as published on `telemetry.<id>.sys`); the
    /// server publishes it there once stored.
    pub const TELEMETRY: &str = "$orb.telemetry";
    /// Make an operator token (admin only), shown once. Args: [`crate::tokens::TokenAdd`]; result:
    /// [`crate::tokens::TokenCreated`].
    pub const TOKENS_ADD: &str = "$orb.tokens.add";
    /// The operator tokens (admin only), never the tokens themselves. Result: an array of
    /// [`crate::tokens::TokenInfo`].
    pub const TOKENS_LIST: &str = "$orb.tokens.list";
    /// Revoke an operator token (admin only): its sessions are closed at once. Args:
    /// [`crate::tokens::TokenRef`]; result: [`crate::tokens::TokenInfo`].
    pub const TOKENS_REVOKE: &str = "$orb.tokens.revoke";
    /// The audit log (admin only): operator actions that changed something, newest first. Args:
    /// [`crate::audit::AuditQuery`]; result: an array of [`crate::audit::AuditInfo`].
    pub const AUDIT_LIST: &str = "$orb.audit.list";
}

/// Who a connection is: a device (a target of jobs) or an operator (CLI, scripts; never a target).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// A device: needs an id, is listed by `orb devices`, receives commands.
    Agent,
    /// An operator tool: submits jobs and queries; needs the admin token.
    Operator,
}

/// Body of `hello`, the client's first frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// Protocol version the client speaks (this build: [`crate::PROTOCOL_VERSION`]).
    pub version: u32,
    /// What the client is.
    pub role: Role,
    /// Shared credential: the agent (enrollment) token for role agent, the admin token for role
    /// operator. A device that holds its own secret sends `secret` instead.
    #[serde(default)]
    pub token: Option<String>,
    /// The device's own secret, issued by the server at enrollment (or by `orb devices add`).
    /// Once an id has a secret, only that secret may connect as that id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// The agent keeps a device secret when the server issues one (new ids registered with the
    /// agent token). Without it (v1 agents) a new id is registered without a secret and keeps
    /// connecting with the shared token. An agent hello with `enroll` and no `id` asks the server
    /// to assign an id.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub enroll: bool,
    /// Device id (required for role agent).
    #[serde(default)]
    pub id: Option<String>,
    /// Tags the device reports about itself (`role=web`).
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// Command names the device has handlers for.
    #[serde(default)]
    pub commands: Vec<String>,
    /// JSON Schemas of the arguments of some declared commands (command name to schema: a
    /// JSON object or boolean). The device checks arguments against them before its handler
    /// runs (`invalid_args`); the server keeps them with the declared commands. Every key must
    /// be in `commands`; at most [`MAX_HELLO_SCHEMA_BYTES`] in all.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub schemas: BTreeMap<String, RawJson>,
    /// Free-form software name and version, e.g. `orb-agent/0.1.0`.
    #[serde(default)]
    pub agent: Option<String>,
    /// Envelope codecs the client speaks, most preferred first (`["msgpack", "json"]`); the server
    /// answers with its choice in [`Welcome::codec`]. Empty (or absent): JSON.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub codecs: Vec<String>,
    /// The agent keeps a durable journal of the held commands it runs (keyed by job id): a held
    /// command delivered again (a higher `attempt`) is answered from it, never run twice. The
    /// server redelivers a held command whose answer was lost only to an agent that says so;
    /// for others it ends `interrupted`.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub durable: bool,
    /// A last will: published by the server if this connection ends without a `bye` (the
    /// process died, the link broke, it stopped answering).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub will: Option<Will>,
}

/// Bytes a last will's body may have.
pub const MAX_WILL_BODY: usize = 64 * 1024;

/// A last will ([`Hello::will`]): a publication the server makes for a client that vanished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Will {
    /// The topic (not under `$orb.`).
    pub topic: String,
    /// The body (JSON), null when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<RawJson>,
    /// Also keep it as the topic's retained publication (the client must be allowed to retain
    /// there); absent: false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub retain: bool,
}

/// JSON kept as written, compared by its text.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RawJson(pub Box<RawValue>);

impl PartialEq for RawJson {
    fn eq(&self, other: &RawJson) -> bool {
        self.0.get() == other.0.get()
    }
}

impl Eq for RawJson {}

/// Most tags a hello may report.
pub const MAX_HELLO_TAGS: usize = 64;
/// Most command names a hello may declare.
pub const MAX_HELLO_COMMANDS: usize = 256;
/// Longest command name a hello may declare, in bytes.
pub const MAX_COMMAND_NAME: usize = 128;
/// Longest `agent` (software name and version) a hello may carry, in bytes.
pub const MAX_AGENT_NAME: usize = 128;
/// Most codecs a hello may offer.
pub const MAX_CODECS: usize = 8;
/// Longest codec name a hello may offer, in bytes.
pub const MAX_CODEC_NAME: usize = 16;
/// Longest `token` or `secret` a hello may carry, in bytes.
pub const MAX_CREDENTIAL: usize = 256;
/// Bytes of JSON Schemas ([`Hello::schemas`]) a hello may carry in all, as written.
pub const MAX_HELLO_SCHEMA_BYTES: usize = 64 * 1024;

impl Hello {
    /// Holds the hello to the protocol's limits, before anything in it is stored or compared:
    /// at most [`MAX_HELLO_TAGS`] tags, each one a tag an operator could set
    /// ([`crate::check_tag`]), so every tag a device reports can be selected; at most
    /// [`MAX_HELLO_COMMANDS`] command names of 1 to [`MAX_COMMAND_NAME`] bytes without
    /// whitespace or control characters; `agent` at most [`MAX_AGENT_NAME`] bytes; at most
    /// [`MAX_CODECS`] codec names of at most [`MAX_CODEC_NAME`] bytes; `token` and `secret` at
    /// most [`MAX_CREDENTIAL`] bytes. Counts are checked before the items they count.
    ///
    /// # Errors
    /// `bad_request` naming the first problem found. A message echoes at most a short
    /// [`excerpt`] of the offending input, escaped, and never a credential.
    pub fn check(&self) -> Result<(), ErrorBody> {
        let bad = |message: String| Err(ErrorBody::new(ErrorCode::BadRequest, message));
        if self.tags.len() > MAX_HELLO_TAGS {
            return bad(format!("hello has {} tags, more than {MAX_HELLO_TAGS}", self.tags.len()));
        }
        for (key, value) in &self.tags {
            if let Err(e) = crate::check_tag(key, value) {
                return bad(format!("hello tag '{}={}': {e}", echo(key), echo(value)));
            }
        }
        if self.commands.len() > MAX_HELLO_COMMANDS {
            return bad(format!("hello has {} commands, more than {MAX_HELLO_COMMANDS}", self.commands.len()));
        }
        for name in &self.commands {
            let problem = if name.is_empty() {
                "is empty"
            } else if name.len() > MAX_COMMAND_NAME {
                &format!("is longer than {MAX_COMMAND_NAME} bytes")
            } else if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
                "contains whitespace or a control character"
            } else {
                continue;
            };
            return bad(format!("hello command name '{}' {problem}", echo(name)));
        }
        self.check_schemas()?;
        if let Some(will) = &self.will {
            let topic = crate::topic::Topic::parse(&will.topic)
                .map_err(|e| ErrorBody::new(ErrorCode::BadRequest, format!("hello will: {}", e.message)))?;
            if topic.is_reserved() {
                return bad(format!("hello will topic '{}' is the server's (it starts with $)", echo(&will.topic)));
            }
            if let Some(body) = &will.body {
                let text = body.0.get();
                if text.len() > MAX_WILL_BODY {
                    return bad(format!("hello will body is {} bytes, more than {MAX_WILL_BODY}", text.len()));
                }
                crate::body::check(text.as_bytes())
                    .map_err(|e| ErrorBody::new(ErrorCode::BadRequest, format!("hello will body: {e}")))?;
            }
        }
        if let Some(agent) = self.agent.as_deref().filter(|a| a.len() > MAX_AGENT_NAME) {
            return bad(format!("hello agent '{}' is longer than {MAX_AGENT_NAME} bytes", echo(agent)));
        }
        if self.codecs.len() > MAX_CODECS {
            return bad(format!("hello offers {} codecs, more than {MAX_CODECS}", self.codecs.len()));
        }
        if let Some(codec) = self.codecs.iter().find(|c| c.len() > MAX_CODEC_NAME) {
            return bad(format!("hello codec name '{}' is longer than {MAX_CODEC_NAME} bytes", echo(codec)));
        }
        // Credentials are never echoed, not even in part.
        for (field, value) in [("token", &self.token), ("secret", &self.secret)] {
            if value.as_ref().is_some_and(|v| v.len() > MAX_CREDENTIAL) {
                return bad(format!("hello {field} is longer than {MAX_CREDENTIAL} bytes"));
            }
        }
        Ok(())
    }
}

impl Hello {
    /// [`Hello::schemas`]: each one for a declared command, a JSON object or boolean within the
    /// body limits, at most [`MAX_HELLO_SCHEMA_BYTES`] in all. Whether each is a valid JSON
    /// Schema is for whoever compiles it (the server, at the handshake).
    fn check_schemas(&self) -> Result<(), ErrorBody> {
        let bad = |message: String| Err(ErrorBody::new(ErrorCode::BadRequest, message));
        let total: usize = self.schemas.values().map(|s| s.0.get().len()).sum();
        if total > MAX_HELLO_SCHEMA_BYTES {
            return bad(format!("hello schemas are {total} bytes in all, more than {MAX_HELLO_SCHEMA_BYTES}"));
        }
        for (name, schema) in &self.schemas {
            if !self.commands.iter().any(|c| c == name) {
                return bad(format!(
                    "hello schema for '{}': the command is not among the declared commands",
                    echo(name)
                ));
            }
            let text = schema.0.get();
            if !(text.starts_with('{') || text == "true" || text == "false") {
                return bad(format!("hello schema for '{}' is not a JSON object or boolean", echo(name)));
            }
            crate::body::check(text.as_bytes()).map_err(|e| {
                ErrorBody::new(ErrorCode::BadRequest, format!("hello schema for '{}': {e}", echo(name)))
            })?;
        }
        Ok(())
    }
}

/// How [`Hello::check`] shows refused input: a short prefix, with control characters escaped
/// so that the message stays one readable line.
fn echo(s: &str) -> String {
    excerpt(s).escape_debug().to_string()
}

/// Body of `welcome`, the server's answer to a good hello.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// Protocol version the server will speak on this connection.
    pub version: u32,
    /// The client's id: the device id, or a generated operator session name.
    pub id: String,
    /// Connection id, unique within this server process.
    pub session: u64,
    /// Interval at which the client should send `ping` when otherwise idle.
    pub heartbeat_ms: u64,
    /// Silence after which either side may consider the link dead.
    pub heartbeat_timeout_ms: u64,
    /// Largest frame the server accepts, in bytes.
    pub max_frame: u64,
    /// Server software name and version.
    pub server: String,
    /// The envelope codec of every frame after this welcome, in both directions (`json` or
    /// `msgpack`, see [`crate::Codec`]). The server sends it when the hello listed `codecs` and
    /// leaves it out otherwise (an empty string here), so a client that did not ask gets the
    /// welcome of protocol v1 unchanged; an absent field reads as `json`.
    #[serde(default = "json_codec", skip_serializing_if = "String::is_empty")]
    pub codec: String,
    /// A device secret issued by this handshake (enrollment): the agent must keep it and present
    /// it as `secret` from now on, because the shared token no longer connects as this id. Sent once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Whether the server knew this device before this connection (agents only).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub known: bool,
    /// RFC 3339 UTC time the server first saw this device (agents only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_seen: Option<String>,
    /// Settings the server pushes to this agent (its `[[fleet.agents]]` rules that match the
    /// device); absent when none match. Later `config` frames replace them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<crate::agent_config::AgentSettings>,
}

fn json_codec() -> String {
    crate::Codec::Json.as_str().to_owned()
}

/// Body of `bye`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Bye {
    /// Why the connection closes (a close reason such as `server_shutdown`).
    pub reason: String,
    /// When to reconnect, if the sender suggests a delay.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconnect_after_ms: Option<u64>,
}

/// Body of the `ack` that accepts a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobAccepted {
    /// The job id (also in the envelope's `job` field).
    pub job: String,
    /// Devices the command was dispatched to, in id order.
    pub targets: Vec<String>,
    /// The job's deadline in milliseconds.
    pub deadline_ms: u64,
    /// Devices the selector matched that were not targeted because they were not connected
    /// (`select: online`); 0 otherwise. Absent from servers before it existed: read as 0.
    #[serde(default)]
    pub skipped: u64,
}

/// Which of the known devices a job's selector matches it targets: the envelope's `select`
/// field on a `cmd` with `target`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Select {
    /// Every matched device; those that are not connected end at once as `offline`. The default
    /// (the field absent).
    #[default]
    All,
    /// Only the matched devices connected now; the others are skipped (counted in
    /// [`JobAccepted::skipped`], given no outcome).
    Online,
    /// Exactly one of the matched devices connected now that declares the command (or declared
    /// nothing): the one with the fewest such commands in flight; if it disconnects before
    /// answering, the command goes to another. Matched devices that are not connected are counted
    /// in [`JobAccepted::skipped`]; the connected ones not picked are not.
    One,
}

impl Select {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Select::All => "all",
            Select::Online => "online",
            Select::One => "one",
        }
    }

    /// Parses the envelope's `select` field: absent is [`Select::All`].
    ///
    /// # Errors
    /// `bad_request` naming the value for anything but `all`, `online` and `one`.
    pub fn from_wire(value: Option<&str>) -> Result<Select, ErrorBody> {
        match value {
            None | Some("all") => Ok(Select::All),
            Some("online") => Ok(Select::Online),
            Some("one") => Ok(Select::One),
            Some(other) => Err(ErrorBody::new(
                ErrorCode::BadRequest,
                format!("unknown select '{}': expected 'all', 'online' or 'one'", excerpt(other)),
            )),
        }
    }
}

/// Body of the `reply` that ends a job: how many targets ended in each status (every status listed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct JobSummary {
    /// The job id.
    pub job: String,
    /// Count per status, every status present (zero when none).
    pub summary: BTreeMap<Status, u64>,
    /// Matched devices that were not targeted because they were not connected (`select:
    /// online`, as in the ack); absent when none were.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub skipped: u64,
    /// Why a batched job stopped starting batches (its failures passed the abort threshold);
    /// absent when it did not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aborted: Option<String>,
}

/// Body of the `event` (without `device`) that a batched job sends its requester as each batch
/// starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct BatchStarted {
    /// The batch's number, from 1.
    pub batch: u32,
    /// How many batches the job has.
    pub batches: u32,
    /// How many targets this batch runs on.
    pub targets: u32,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl JobSummary {
    /// A summary with every status at zero.
    pub fn empty(job: String) -> JobSummary {
        JobSummary { job, summary: Status::ALL.iter().map(|s| (*s, 0)).collect(), skipped: 0, aborted: None }
    }
}

/// One target's outcome, as `orb send --json` prints it (one object per line).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct TargetResult {
    /// Device id.
    pub device: String,
    /// Outcome.
    pub status: Status,
    /// The handler's result (JSON) when `status` is `ok`, else null.
    #[cfg_attr(feature = "openapi", schema(value_type = Value))]
    pub result: Option<Box<RawValue>>,
    /// Code and message when the target did not succeed, else null.
    pub error: Option<ErrorBody>,
    /// Milliseconds from dispatch to answer; null when nothing was answered.
    pub elapsed_ms: Option<u64>,
    /// An answer that arrived after the deadline (job history only): kept beside the `timeout`
    /// the requester was told, never replacing it. Absent when there was none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub late: Option<LateAnswer>,
}

/// An answer that arrived after its job's deadline, as the job history shows it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LateAnswer {
    /// What the answer was: `ok`, `error`, or `timeout` (the device gave up at its deadline).
    pub status: Status,
    /// The result (JSON) when `status` is `ok`, else null.
    #[cfg_attr(feature = "openapi", schema(value_type = Value))]
    pub result: Option<Box<RawValue>>,
    /// Code and message of an error answer, else null.
    pub error: Option<ErrorBody>,
    /// RFC 3339 UTC time it arrived.
    pub at: String,
}

/// Arguments of [`commands::DEVICES_LIST`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DevicesQuery {
    /// Only devices matching this selector (all when absent).
    #[serde(default)]
    pub selector: Option<String>,
    /// Only connected devices (default: every known device, connected or not).
    #[serde(default)]
    pub connected: bool,
    /// With each device's argument schemas ([`DeviceInfo::schemas`]); left out by default, as a
    /// device may declare up to 64 KiB of them. Absent means `false`; a server that does not
    /// know the field sends none.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub schemas: bool,
}

/// One device as the inventory lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct DeviceInfo {
    /// Device id.
    pub id: String,
    /// Whether a session is connected now.
    pub connected: bool,
    /// Tags (key to value).
    pub tags: BTreeMap<String, String>,
    /// Peer address of the live connection.
    pub remote_addr: Option<String>,
    /// RFC 3339 UTC time the live connection was established.
    pub connected_since: Option<String>,
    /// The agent software reported in hello.
    pub agent_version: Option<String>,
    /// `tcp` or `ws`.
    pub transport: Option<String>,
    /// Commands the device declared it handles.
    pub commands: Vec<String>,
    /// JSON Schemas of the arguments of some of those commands, by command name, as declared
    /// in its last hello. Only when the query asked for them ([`DevicesQuery::schemas`]); absent
    /// means none (or not asked).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    #[cfg_attr(feature = "openapi", schema(value_type = BTreeMap<String, Object>))]
    pub schemas: BTreeMap<String, serde_json::Value>,
    /// Last measured round-trip time of the live connection, in milliseconds.
    #[serde(default)]
    pub rtt_ms: Option<f64>,
    /// Whether an operator revoked the device's credential.
    #[serde(default)]
    pub revoked: bool,
    /// RFC 3339 UTC time the device was last heard from.
    #[serde(default)]
    pub last_seen: Option<String>,
    /// Commands held for it (jobs sent with a TTL), waiting or handed over and not answered yet.
    #[serde(default)]
    pub held: u64,
}

/// Arguments of [`commands::SELECTOR_RESOLVE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolveQuery {
    /// The selector to resolve.
    pub selector: String,
}

/// Result of [`commands::SELECTOR_RESOLVE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resolved {
    /// The selector in canonical form, groups not expanded.
    pub selector: String,
    /// Matching devices, in id order.
    pub devices: Vec<String>,
}

/// Result of [`commands::SERVER_INFO`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// Server software name and version.
    pub server: String,
    /// Protocol version.
    pub version: u32,
    /// Connected agent sessions.
    pub agents: u64,
    /// Connected operator sessions.
    pub operators: u64,
    /// Devices the registry knows, connected or not.
    #[serde(default)]
    pub devices_known: u64,
    /// Jobs currently waiting for answers.
    pub jobs_in_flight: u64,
    /// RFC 3339 UTC start time.
    pub started_at: String,
    /// Closed sessions since start, per close reason.
    #[serde(default)]
    pub closed: BTreeMap<String, u64>,
    /// Whether the server is draining (stopping gracefully).
    #[serde(default)]
    pub draining: bool,
}

/// Arguments of [`commands::SIGNAL`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignalRequest {
    /// The message: `QUIT`, `RELOAD`, `LOG_ROTATE` or `PING` (case-insensitive).
    pub message: String,
    /// Optional `name=value` parameters.
    #[serde(default)]
    pub params: BTreeMap<String, String>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn select_parses_its_wire_names_and_refuses_anything_else_naming_it() {
        assert_eq!(Select::from_wire(None).unwrap(), Select::All);
        for s in [Select::All, Select::Online, Select::One] {
            assert_eq!(Select::from_wire(Some(s.as_str())).unwrap(), s);
        }
        let e = Select::from_wire(Some("Online")).unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert_eq!(e.message, "unknown select 'Online': expected 'all', 'online' or 'one'");
    }

    #[test]
    fn an_ack_without_skipped_reads_as_none_skipped() {
        let a: JobAccepted = serde_json::from_str(r#"{"job":"j","targets":["a"],"deadline_ms":5}"#).unwrap();
        assert_eq!(a.skipped, 0);
    }

    #[test]
    fn a_v1_welcome_without_codec_means_json_and_an_empty_codec_is_not_sent() {
        let v1 = concat!(
            r#"{"version":1,"id":"web-1","session":17,"heartbeat_ms":15000,"heartbeat_timeout_ms":45000,"#,
            r#""max_frame":1048576,"server":"orb/0.1.0"}"#
        );
        let w: Welcome = serde_json::from_str(v1).unwrap();
        assert_eq!(w.codec, "json");
        let unasked = Welcome { codec: String::new(), ..w.clone() };
        assert_eq!(serde_json::to_string(&unasked).unwrap(), v1, "unchanged for a client that did not ask");
        let chosen = Welcome { codec: "msgpack".into(), ..w };
        assert!(serde_json::to_string(&chosen).unwrap().ends_with(r#","codec":"msgpack"}"#));
    }

    fn hello() -> Hello {
        serde_json::from_str(
            r#"{"version":1,"role":"agent","token":"t","id":"web-1","tags":{"role":"web","os.version":"14.2"},
                "commands":["echo","$orb.x","service.restart"],"agent":"orb-agent/0.1.0","codecs":["msgpack","json"]}"#,
        )
        .unwrap()
    }

    #[track_caller]
    fn refused(h: &Hello, says: &str) {
        let e = h.check().unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(e.message.contains(says), "{:?} lacks {says:?}", e.message);
        assert!(e.message.len() < 300, "a short message: {} bytes", e.message.len());
        assert!(!e.message.ends_with('.') && e.message.starts_with("hello "), "{:?}", e.message);
    }

    #[test]
    fn a_hello_within_the_limits_passes() {
        assert_eq!(hello().check(), Ok(()));
        let mut h = hello();
        h.tags = (0..MAX_HELLO_TAGS).map(|i| (format!("k{i}"), "v".repeat(256))).collect();
        h.commands = (0..MAX_HELLO_COMMANDS).map(|i| format!("{i}{}", "c".repeat(MAX_COMMAND_NAME - 3))).collect();
        h.agent = Some("a".repeat(MAX_AGENT_NAME));
        h.codecs = vec!["c".repeat(MAX_CODEC_NAME); MAX_CODECS];
        h.token = Some("t".repeat(MAX_CREDENTIAL));
        h.secret = Some("s".repeat(MAX_CREDENTIAL));
        assert_eq!(h.check(), Ok(()));
        let empty: Hello = serde_json::from_str(r#"{"version":1,"role":"operator"}"#).unwrap();
        assert_eq!(empty.check(), Ok(()));
    }

    #[test]
    fn too_many_tags_or_a_tag_no_selector_could_select_is_refused() {
        let mut h = hello();
        h.tags = (0..=MAX_HELLO_TAGS).map(|i| (format!("k{i}"), "v".into())).collect();
        refused(&h, "65 tags, more than 64");
        for (k, v, says) in [
            ("ro le", "x", "hello tag 'ro le=x': invalid character ' ' in tag key"),
            ("", "x", "empty tag key"),
            ("role", "web 1", "invalid character ' ' in tag value"),
            ("role", "a,b", "invalid character ','"),
            ("a=b", "c", "invalid character '='"),
        ] {
            let mut h = hello();
            h.tags.insert(k.into(), v.into());
            refused(&h, says);
        }
        let mut h = hello();
        h.tags.insert("k".repeat(65), "v".into());
        refused(&h, "tag key is longer than 64");
        let mut h = hello();
        h.tags.insert("k".into(), "v".repeat(1 << 20));
        refused(&h, &format!("hello tag 'k={}…': tag value is longer than 256", "v".repeat(64)));
    }

    fn raw(text: &str) -> RawJson {
        RawJson(RawValue::from_string(text.to_owned()).unwrap())
    }

    #[test]
    fn schemas_for_declared_commands_within_the_limit_pass() {
        let h: Hello = serde_json::from_str(
            r#"{"version":1,"role":"agent","id":"a","commands":["set","ping"],"schemas":{"set":{"type":"object"},"ping":true}}"#,
        )
        .unwrap();
        assert_eq!(h.schemas.len(), 2);
        assert_eq!(h.check(), Ok(()));
        let text = serde_json::to_string(&h).unwrap();
        assert!(text.contains(r#""schemas":{"ping":true,"set":{"type":"object"}}"#), "{text}");
        assert!(!serde_json::to_string(&hello()).unwrap().contains("schemas"), "absent when there are none");
        let mut h = hello();
        h.schemas
            .insert("echo".into(), raw(&format!(r#"{{"description":"{}"}}"#, "x".repeat(MAX_HELLO_SCHEMA_BYTES - 20))));
        assert_eq!(h.check(), Ok(()));
    }

    #[test]
    fn a_schema_for_an_undeclared_command_too_large_or_not_a_schema_is_refused() {
        let mut h = hello();
        h.schemas.insert("reboot".into(), raw("{}"));
        refused(&h, "hello schema for 'reboot': the command is not among the declared commands");
        let mut h = hello();
        h.schemas
            .insert("echo".into(), raw(&format!(r#"{{"description":"{}"}}"#, "x".repeat(MAX_HELLO_SCHEMA_BYTES / 2))));
        h.schemas.insert(
            "service.restart".into(),
            raw(&format!(r#"{{"description":"{}"}}"#, "x".repeat(MAX_HELLO_SCHEMA_BYTES / 2))),
        );
        refused(&h, "bytes in all, more than 65536");
        for text in ["[1]", "\"s\"", "3", "null"] {
            let mut h = hello();
            h.schemas.insert("echo".into(), raw(text));
            refused(&h, "hello schema for 'echo' is not a JSON object or boolean");
        }
        let mut h = hello();
        h.schemas.insert("echo".into(), raw(&format!("{}true{}", r#"{"not":"#.repeat(70), "}".repeat(70))));
        refused(&h, "hello schema for 'echo': ");
    }

    #[test]
    fn too_many_commands_or_a_bad_command_name_is_refused() {
        let mut h = hello();
        h.commands = (0..=MAX_HELLO_COMMANDS).map(|i| format!("c{i}")).collect();
        refused(&h, "257 commands, more than 256");
        for (name, says) in [
            (String::new(), "command name '' is empty"),
            ("c".repeat(MAX_COMMAND_NAME + 1), "is longer than 128 bytes"),
            ("c".repeat(1 << 20), &format!("'{}…' is longer than 128 bytes", "c".repeat(64))),
            ("two words".into(), "'two words' contains whitespace or a control character"),
            ("tab\tbed".into(), "'tab\\tbed' contains whitespace"),
            ("nl\n".into(), "'nl\\n' contains"),
            ("nbsp\u{a0}".into(), "contains whitespace"),
            ("esc\u{1b}[2J".into(), "'esc\\u{1b}[2J' contains"),
        ] {
            let mut h = hello();
            h.commands.push(name);
            refused(&h, says);
        }
        // Exactly the limit is fine, in bytes: 64 two-byte characters.
        let mut h = hello();
        h.commands.push("é".repeat(MAX_COMMAND_NAME / 2));
        assert_eq!(h.check(), Ok(()));
    }

    #[test]
    fn a_long_agent_codecs_or_credentials_are_refused() {
        let mut h = hello();
        h.agent = Some("a".repeat(MAX_AGENT_NAME + 1));
        refused(&h, "hello agent 'aaaa");
        refused(&h, "is longer than 128 bytes");
        let mut h = hello();
        h.codecs = vec!["json".into(); MAX_CODECS + 1];
        refused(&h, "9 codecs, more than 8");
        let mut h = hello();
        h.codecs.push("x".repeat(MAX_CODEC_NAME + 1));
        refused(&h, "codec name 'xxxxxxxxxxxxxxxxx' is longer than 16 bytes");
        let mut h = hello();
        h.token = Some("t".repeat(MAX_CREDENTIAL + 1));
        refused(&h, "hello token is longer than 256 bytes");
        let mut h = hello();
        h.secret = Some("s".repeat(1 << 20));
        refused(&h, "hello secret is longer than 256 bytes");
        assert!(!h.check().unwrap_err().message.contains("sss"), "credentials are never echoed");
    }

    #[test]
    fn a_hello_without_codecs_is_the_v1_hello() {
        let v1 = r#"{"version":1,"role":"agent","token":"t","id":"web-1"}"#;
        let h: Hello = serde_json::from_str(v1).unwrap();
        assert!(h.codecs.is_empty());
        assert!(!serde_json::to_string(&h).unwrap().contains("codecs"));
        let h: Hello = serde_json::from_str(r#"{"version":1,"role":"agent","codecs":["msgpack","json"]}"#).unwrap();
        assert_eq!(h.codecs, ["msgpack", "json"]);
    }
}

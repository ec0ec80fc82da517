//! The server's configuration. [`ServerConfig`] is the typed form [`crate::ServerBuilder`]
//! takes (sub-structs are handed down to the modules that use them); [`file`](mod@file) is its schema as
//! the `orb.toml` file writes it (serde, unknown keys refused) with the one `validate` that turns
//! it into a `ServerConfig`, reporting every problem at once. The binary only layers the file,
//! the environment and its flags onto that schema.

pub mod file;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub use orb_io::secret::Secret;
/// `[tls]`: the server's certificate and key, the client CA; re-read on every reload.
pub use orb_io::tls::ServerTls as TlsConfig;
use orb_proto::{DEFAULT_HTTP_PORT, DEFAULT_MAX_FRAME, DEFAULT_TCP_PORT, Selector};

/// The default of [`ServerConfig::restart_grace`].
pub const DEFAULT_RESTART_GRACE: Duration = Duration::from_secs(45);

/// Everything a server needs to start.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// TCP listener for agents and clients (default `127.0.0.1:7700`).
    pub listen: SocketAddr,
    /// HTTP listener: WebSocket at `/v1/ws`, health (default `127.0.0.1:7780`).
    pub http: SocketAddr,
    /// Data folder (default `./orb-data`): generated tokens and the node id live here.
    pub data_dir: PathBuf,
    /// This server's node id (`None`: `DATA/node.id`, generated on first start).
    pub node_id: Option<String>,
    /// Operator token; generated into `DATA/admin.token` when absent.
    pub admin_token: Option<Secret>,
    /// Agent (enrollment) token; generated into `DATA/agent.token` when absent.
    pub agent_token: Option<Secret>,
    /// Named selectors for `group:NAME`, as selector source text.
    pub groups: BTreeMap<String, String>,
    /// Limits and timers.
    pub limits: Limits,
    /// Where the registry and job history are kept, and for how long.
    pub store: StoreConfig,
    /// Time jobs in flight get to finish on a graceful stop ([`crate::Server::shutdown`]).
    pub grace: Duration,
    /// `[scheduler] restart_grace`: after a start, the longest that firings due before it wait
    /// for the devices connected before the restart to come back (the wait ends as soon as they
    /// all have). Default 45 s: agents' default reconnect backoff ceiling (`agent.backoff_max`,
    /// 30 s) and a heartbeat interval more.
    pub restart_grace: Duration,
    /// What agents may do beyond answering commands (`[acl]`).
    pub acl: AclConfig,
    /// TLS on both listeners (`[tls]`): with it, the TCP port speaks `tls://` only and the HTTP
    /// port `https://` and `wss://` only. `None`: plain TCP and HTTP.
    pub tls: Option<TlsConfig>,
    /// The HTTP port's options (`[http]`; its address is [`ServerConfig::http`]).
    pub http_options: HttpConfig,
    /// Settings pushed to agents (`[fleet]`).
    pub fleet: FleetConfig,
}

/// `[http]`: options of the HTTP port (its address is `server.http`). Hot-reloaded.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// `GET /metrics` is served without a token (default `false`: the admin token, like the
    /// REST API). For a scraper on a trusted network that cannot send a bearer token.
    pub metrics_public: bool,
    /// Browser origins (`https://host[:port]`) whose pages may call the API (CORS). Default none:
    /// the dashboard is served by this port itself and needs none.
    pub cors_origins: Vec<String>,
}

/// `[acl]`: what agents may do beyond answering commands and calling the server's handlers
/// (operators with the admin token may do everything). Hot-reloaded. An empty list allows
/// nothing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AclConfig {
    /// Topic patterns agents may publish on (`{id}`: the device's own id as a whole segment).
    /// Default `[">"]`: any topic outside `$orb.`.
    pub agent_publish: Vec<String>,
    /// Topic patterns on which agents may also keep (or clear) the retained publication, which
    /// every later subscriber gets. Default `[]`: none (retained publications are server-wide
    /// state; operators set them).
    pub agent_retain: Vec<String>,
    /// Patterns agents may subscribe within (a subscription must fall inside one of them).
    /// Default `[">"]`: anything outside `$orb.`.
    pub agent_subscribe: Vec<String>,
    /// Device-to-device commands: none unless a rule allows them.
    pub peers: Vec<PeerRuleConfig>,
    /// What tokens with the `operator` role may send and schedule: nothing unless a rule
    /// allows it.
    pub operators: Vec<OperatorRuleConfig>,
    /// Whether devices without a secret of their own may connect with the shared agent token
    /// alone (v1 agents). Default `false`: a known device connects only with its own secret, and
    /// a new one only by enrolling (`enroll: true`, keeping the secret it is issued), so holding
    /// the shared token is not enough to take over a device.
    pub token_devices: bool,
}

impl Default for AclConfig {
    fn default() -> Self {
        AclConfig {
            agent_publish: vec![">".into()],
            agent_retain: Vec::new(),
            agent_subscribe: vec![">".into()],
            peers: Vec::new(),
            operators: Vec::new(),
            token_devices: false,
        }
    }
}

/// `[fleet]`: settings the server pushes to agents (protocol `welcome.config` and the `config`
/// frame). Hot-reloaded: a reload pushes the changed settings to the agents connected.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FleetConfig {
    /// The rules, in order: every rule whose selector matches a device applies, a later one's
    /// values over an earlier one's (`exec_allow` patterns add up).
    pub agents: Vec<AgentRuleConfig>,
}

/// One `[[fleet.agents]]` rule: what agents matching `select` are told.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentRuleConfig {
    /// Selector of the devices the rule is for (ids, reported and operator-set tags, groups).
    pub select: String,
    /// How often they publish system metrics (`10s`; `0` or `off`: not at all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry_interval: Option<String>,
    /// Which parts of the metrics they publish (`cpu`, `load`, `memory`, `swap`, `disks`, `network`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry_metrics: Option<Vec<String>>,
    /// Their log filter (`debug`, `info,orb_client=debug`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    /// Argv patterns added to their `exec` allow list where they accept additions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exec_allow: Vec<String>,
}

/// `[[acl.peers]]`: devices matching `from` may send `commands` to devices matching `to`
/// (selectors match ids and operator-set tags only, never tags a device reports).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerRuleConfig {
    /// Selector of the senders.
    pub from: String,
    /// Selector of the devices they may send to.
    pub to: String,
    /// Command names: `NAME`, `PREFIX*`, or `*` for any.
    pub commands: Vec<String>,
}

/// One `[[acl.operators]]` rule: tokens with the `operator` role (all of them, or those named in
/// `tokens`) may send `commands` to the devices `to` matches (by id and operator-set tags).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorRuleConfig {
    /// Token names the rule is for; empty or absent: every token with the `operator` role.
    #[serde(default)]
    pub tokens: Vec<String>,
    /// Selector of the devices they may send to.
    pub to: String,
    /// Command names: `NAME`, `PREFIX*`, or `*` for any.
    pub commands: Vec<String>,
}

/// The store: which database, and the retention of the job history and the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreConfig {
    /// `sqlite:PATH` or `postgres://...`; `None`: SQLite at `DATA/orb.db`.
    pub url: Option<String>,
    /// Jobs older than this are deleted (with their results).
    pub job_retention: Duration,
    /// At most this many jobs are kept (the oldest go first).
    pub job_retention_count: u64,
    /// Audit log entries older than this are deleted.
    pub audit_retention: Duration,
    /// At most this many audit log entries are kept (the oldest go first).
    pub audit_retention_count: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: None,
            job_retention: Duration::from_secs(30 * 24 * 3600),
            job_retention_count: 100_000,
            audit_retention: Duration::from_secs(365 * 24 * 3600),
            audit_retention_count: 1_000_000,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], DEFAULT_TCP_PORT)),
            http: SocketAddr::from(([127, 0, 0, 1], DEFAULT_HTTP_PORT)),
            data_dir: PathBuf::from("orb-data"),
            node_id: None,
            admin_token: None,
            agent_token: None,
            groups: BTreeMap::new(),
            limits: Limits::default(),
            store: StoreConfig::default(),
            grace: Duration::from_secs(10),
            restart_grace: DEFAULT_RESTART_GRACE,
            acl: AclConfig::default(),
            tls: None,
            http_options: HttpConfig::default(),
            fleet: FleetConfig::default(),
        }
    }
}

impl ServerConfig {
    /// The settings that differ between `self` (in force) and `new` but only take effect after a
    /// restart, by their configuration key.
    pub fn restart_required(&self, new: &ServerConfig) -> Vec<&'static str> {
        let mut keys = Vec::new();
        let mut check = |key, differs: bool| {
            if differs {
                keys.push(key);
            }
        };
        check("server.listen", self.listen != new.listen);
        check("server.http", self.http != new.http);
        check("server.data", self.data_dir != new.data_dir);
        check("server.node_id", self.node_id != new.node_id);
        check("store.url", self.store.url != new.store.url);
        // Certificates, key and client CA are re-read on reload; turning TLS on or off is not.
        check("tls", self.tls.is_some() != new.tls.is_some());
        keys
    }

    /// A configuration for tests: both listeners on `127.0.0.1:0`, data in `data_dir`, fixed
    /// tokens, and no rate limits (tests enroll and connect many devices from one address at
    /// once, and some agents answer thousands of requests a second).
    pub fn for_tests(data_dir: PathBuf) -> ServerConfig {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir,
            node_id: None,
            admin_token: Some(Secret::new("test-admin-token-0123456789")),
            agent_token: Some(Secret::new("test-agent-token-0123456789")),
            groups: BTreeMap::new(),
            limits: Limits {
                enrollments_per_ip: 0,
                auth_failures_per_ip: 0,
                agent_messages_per_second: 0,
                agent_connections_per_second: 0,
                ..Limits::default()
            },
            store: StoreConfig::default(),
            grace: Duration::from_secs(10),
            restart_grace: DEFAULT_RESTART_GRACE,
            // Many tests speak the v1 handshake by hand (the shared token, no enrollment); the
            // default's refusal has tests of its own.
            acl: AclConfig { token_devices: true, ..AclConfig::default() },
            http_options: HttpConfig::default(),
            tls: None,
            fleet: FleetConfig::default(),
        }
    }
}

/// Parses the named groups: every name a valid id, every selector valid, no group referring to
/// itself through others. Every problem is reported.
///
/// # Errors
/// The problems, one message each.
pub fn parse_groups(groups: &BTreeMap<String, String>) -> Result<BTreeMap<String, Selector>, Vec<String>> {
    let mut out = BTreeMap::new();
    let mut problems = Vec::new();
    for (name, text) in groups {
        if orb_proto::DeviceId::new(name).is_err() {
            problems
                .push(format!("group name '{}' must match [A-Za-z0-9][A-Za-z0-9_-]{{0,63}}", orb_proto::excerpt(name)));
        }
        match Selector::parse(text) {
            Ok(sel) => {
                out.insert(name.clone(), sel);
            }
            Err(e) => problems.push(format!("'groups.{name}' = \"{}\": {e}", orb_proto::excerpt(text))),
        }
    }
    for name in out.keys() {
        if let Ok(probe) = Selector::parse(&format!("group:{name}"))
            && let Err(e) = probe.expand_groups(&|n| out.get(n).cloned())
        {
            problems.push(format!("'groups.{name}': {e}"));
        }
    }
    if problems.is_empty() { Ok(out) } else { Err(problems) }
}

/// Limits and timers, with the defaults documented in `docs/operations.md`.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest frame accepted, in bytes (checked before allocating).
    pub max_frame: usize,
    /// Frames queued for one connection before it is closed as a slow consumer.
    pub outbound_queue: usize,
    /// Bytes queued for one connection before it is closed as a slow consumer (a single frame
    /// up to `max_frame` is always admitted into an empty queue).
    pub outbound_queue_bytes: usize,
    /// Time allowed for the first frame (`hello`).
    pub handshake_timeout: Duration,
    /// Interval announced to clients for their pings.
    pub heartbeat: Duration,
    /// Silence after which the server closes a connection.
    pub heartbeat_timeout: Duration,
    /// Deadline of a job when the command carries none.
    pub default_job_deadline: Duration,
    /// Deadline of a plain request when the command carries none.
    pub default_request_deadline: Duration,
    /// Longest deadline a command may ask for.
    pub max_deadline: Duration,
    /// Time a closing connection gets to write what is queued and its goodbye.
    pub close_linger: Duration,
    /// Connections in total (0: unlimited).
    pub max_connections: usize,
    /// Connections per source IP address (0: unlimited).
    pub max_connections_per_ip: usize,
    /// Commands a session has sent to the server or to one device (forms 1 and 2) that are not
    /// answered yet; at the limit the server stops reading from the session until one is
    /// answered (backpressure, not an error).
    pub max_inflight_requests: usize,
    /// Jobs one session may have running at once (0: unlimited); more are refused with
    /// `too_many_jobs`.
    pub max_inflight_jobs: usize,
    /// Bytes of a job's results the server buffers for a requester that reads them slower than
    /// they come; beyond, the requester's stream ends with `lagged` (the job runs on and its
    /// results are stored).
    pub job_buffer_bytes: usize,
    /// New device ids one source address may enroll per second, in bursts of as many (0:
    /// unlimited); more get `rate_limited`.
    pub enrollments_per_ip: u32,
    /// Failed authentications one source address may make per minute: past half of it each
    /// refusal waits a second, past all of it further failing attempts get `rate_limited`
    /// (valid credentials are always admitted). 0: unlimited.
    pub auth_failures_per_ip: u32,
    /// Frames an agent session may send per second after its hello, in bursts of as many (0:
    /// unlimited). Beyond, the server stops reading from the session until the rate allows
    /// (backpressure: nothing is dropped or refused). Applies to open sessions at their next
    /// heartbeat after a reload.
    pub agent_messages_per_second: u32,
    /// The same for operator sessions (admin and operator tokens); 0 (the default): unlimited.
    pub operator_messages_per_second: u32,
    /// New agent sessions the server admits per second, all addresses together, in bursts of as
    /// many (0: unlimited); more hellos get `rate_limited` (agents retry with backoff). Operator
    /// hellos are not counted, nor hellos refused before they authenticated.
    pub agent_connections_per_second: u32,
    /// Longest TTL a job may ask for (its command waits that long for offline targets).
    pub max_ttl: Duration,
    /// Commands one device's queue may hold; more get `queue_full`.
    pub max_queued_per_device: usize,
    /// Bytes (command, arguments, sender) one device's queue may hold; more get `queue_full`.
    pub max_queued_bytes_per_device: usize,
    /// Schedules the server stores; more get `too_many_schedules`.
    pub max_schedules: usize,
    /// Bytes of one schedule (spec, selector, command, arguments, creator); more get
    /// `too_many_schedules`.
    pub max_schedule_bytes: usize,
    /// Subscriptions (pub/sub patterns) one connection may hold; more get
    /// `too_many_subscriptions`.
    pub max_subscriptions: usize,
    /// Topics with a retained publication the server keeps; a new one beyond gets
    /// `too_many_retained`.
    pub max_retained: usize,
    /// Bytes (topic, body, publisher) of all retained publications; beyond, `too_many_retained`.
    /// Also what one subscription may be sent at once when it starts.
    pub max_retained_bytes: usize,
    /// Messages from its outbox the server keeps per device (the newest; older ones are
    /// deleted as new ones arrive, and a resend of a deleted one would be stored again).
    pub max_messages_per_device: usize,
    /// Bytes (id, command name, body) of outbox messages the server keeps per device (the
    /// newest within it).
    pub max_message_bytes_per_device: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_frame: DEFAULT_MAX_FRAME,
            outbound_queue: 1024,
            outbound_queue_bytes: 16 * 1024 * 1024,
            handshake_timeout: Duration::from_secs(10),
            heartbeat: Duration::from_secs(15),
            heartbeat_timeout: Duration::from_secs(45),
            default_job_deadline: Duration::from_secs(10),
            default_request_deadline: Duration::from_secs(30),
            max_deadline: Duration::from_secs(24 * 3600),
            close_linger: Duration::from_secs(1),
            max_connections: 0,
            max_connections_per_ip: 0,
            max_inflight_requests: 256,
            max_inflight_jobs: 64,
            job_buffer_bytes: 8 * 1024 * 1024,
            enrollments_per_ip: 50,
            auth_failures_per_ip: 30,
            agent_messages_per_second: 1000,
            operator_messages_per_second: 0,
            agent_connections_per_second: 1000,
            max_ttl: Duration::from_secs(7 * 24 * 3600),
            max_queued_per_device: 1000,
            max_queued_bytes_per_device: 16 * 1024 * 1024,
            max_schedules: 10_000,
            max_schedule_bytes: 64 * 1024,
            max_subscriptions: 1000,
            max_retained: 10_000,
            max_retained_bytes: 16 * 1024 * 1024,
            max_messages_per_device: 10_000,
            max_message_bytes_per_device: 16 * 1024 * 1024,
        }
    }
}

//! The server's part of `orb.toml`: sections `[server]`, `[limits]`, `[shutdown]`, `[scheduler]`,
//! `[store]`, `[acl]`, `[http]`, `[tls]`, `[groups]` and `[fleet]` as the file writes them (durations as text like `10s`, addresses as text), with
//! serde defaults and unknown keys refused. [`ServerFile::validate`] turns them into a
//! [`ServerConfig`], reporting every problem at once. Secrets (tokens, the store URL's password)
//! serialize redacted, so `orb config show` prints this schema as is.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};

use super::{AclConfig, FleetConfig, HttpConfig, Limits, Secret, ServerConfig, StoreConfig, TlsConfig, parse_groups};

/// `[server]`: listeners, data folder, node id, credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSection {
    /// TCP listener.
    pub listen: String,
    /// HTTP listener (WebSocket, health).
    pub http: String,
    /// Data folder.
    pub data: String,
    /// This server's node id (default: generated into `DATA/node.id`).
    pub node_id: Option<String>,
    /// Operator token.
    pub admin_token: Option<Secret>,
    /// File holding the operator token.
    pub admin_token_file: Option<String>,
    /// Agent token.
    pub agent_token: Option<Secret>,
    /// File holding the agent token.
    pub agent_token_file: Option<String>,
    /// Log every frame in and out at TRACE level (read by the binary's logging).
    pub trace: bool,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: "127.0.0.1:7700".into(),
            http: "127.0.0.1:7780".into(),
            data: "orb-data".into(),
            node_id: None,
            admin_token: None,
            admin_token_file: None,
            agent_token: None,
            agent_token_file: None,
            trace: false,
        }
    }
}

/// `[limits]`: sizes, counts and timers (see [`Limits`] for each one's meaning).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSection {
    /// Largest frame in bytes.
    pub max_frame: u64,
    /// Frames queued per connection.
    pub outbound_queue: u64,
    /// Bytes queued per connection.
    pub outbound_queue_bytes: u64,
    /// Time allowed for `hello` (and for an HTTP request's headers).
    pub handshake_timeout: String,
    /// Ping interval announced to clients.
    pub heartbeat: String,
    /// Silence after which a connection is closed.
    pub heartbeat_timeout: String,
    /// Connections in total (0: unlimited).
    pub max_connections: u64,
    /// Connections per source IP address (0: unlimited).
    pub max_connections_per_ip: u64,
    /// Commands a session may have open (forms 1 and 2) before the server stops reading it.
    pub max_inflight_requests: u64,
    /// Jobs a session may have running (0: unlimited).
    pub max_inflight_jobs: u64,
    /// Bytes of job results buffered for a requester that reads slowly.
    pub job_buffer_bytes: u64,
    /// New device ids per source address per second (0: unlimited).
    pub enrollments_per_ip: u32,
    /// Failed authentications per source address per minute before further failures are refused (0: unlimited).
    pub auth_failures_per_ip: u32,
    /// Frames an agent session may send per second (0: unlimited).
    pub agent_messages_per_second: u32,
    /// Frames an operator session may send per second (0: unlimited).
    pub operator_messages_per_second: u32,
    /// New agent sessions per second, server-wide (0: unlimited).
    pub agent_connections_per_second: u32,
    /// Deadline of a job that names none.
    pub job_deadline: String,
    /// Deadline of a plain request that names none.
    pub request_deadline: String,
    /// Longest deadline a command may ask for.
    pub max_deadline: String,
    /// Longest TTL a job may ask for.
    pub max_ttl: String,
    /// Commands one device's queue may hold.
    pub max_queued_per_device: u64,
    /// Bytes one device's queue may hold.
    pub max_queued_bytes_per_device: u64,
    /// Schedules stored.
    pub max_schedules: u64,
    /// Bytes of one schedule.
    pub max_schedule_bytes: u64,
    /// Subscriptions one connection may hold.
    pub max_subscriptions: u64,
    /// Topics with a retained publication.
    pub max_retained: u64,
    /// Bytes of all retained publications.
    pub max_retained_bytes: u64,
    /// Outbox messages kept per device.
    pub max_messages_per_device: u64,
    /// Bytes of outbox messages kept per device.
    pub max_message_bytes_per_device: u64,
}

impl Default for LimitsSection {
    fn default() -> Self {
        // The file's spelling of `Limits::default()` (a test keeps the two in step).
        let l = Limits::default();
        LimitsSection {
            max_frame: l.max_frame as u64,
            outbound_queue: l.outbound_queue as u64,
            outbound_queue_bytes: l.outbound_queue_bytes as u64,
            handshake_timeout: "10s".into(),
            heartbeat: "15s".into(),
            heartbeat_timeout: "45s".into(),
            max_connections: l.max_connections as u64,
            max_connections_per_ip: l.max_connections_per_ip as u64,
            max_inflight_requests: l.max_inflight_requests as u64,
            max_inflight_jobs: l.max_inflight_jobs as u64,
            job_buffer_bytes: l.job_buffer_bytes as u64,
            enrollments_per_ip: l.enrollments_per_ip,
            auth_failures_per_ip: l.auth_failures_per_ip,
            agent_messages_per_second: l.agent_messages_per_second,
            operator_messages_per_second: l.operator_messages_per_second,
            agent_connections_per_second: l.agent_connections_per_second,
            job_deadline: "10s".into(),
            request_deadline: "30s".into(),
            max_deadline: "24h".into(),
            max_ttl: "7d".into(),
            max_queued_per_device: l.max_queued_per_device as u64,
            max_queued_bytes_per_device: l.max_queued_bytes_per_device as u64,
            max_schedules: l.max_schedules as u64,
            max_schedule_bytes: l.max_schedule_bytes as u64,
            max_subscriptions: l.max_subscriptions as u64,
            max_retained: l.max_retained as u64,
            max_retained_bytes: l.max_retained_bytes as u64,
            max_messages_per_device: l.max_messages_per_device as u64,
            max_message_bytes_per_device: l.max_message_bytes_per_device as u64,
        }
    }
}

/// `[shutdown]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShutdownSection {
    /// Time in-flight jobs get to finish on a graceful stop.
    pub grace: String,
}

impl Default for ShutdownSection {
    fn default() -> Self {
        ShutdownSection { grace: "10s".into() }
    }
}

/// `[scheduler]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerSection {
    /// After a start, the longest that firings due before it wait for the devices that were
    /// connected to come back.
    pub restart_grace: String,
}

impl Default for SchedulerSection {
    fn default() -> Self {
        SchedulerSection { restart_grace: "45s".into() }
    }
}

/// The longest `scheduler.restart_grace`.
const MAX_RESTART_GRACE: Duration = Duration::from_secs(3600);

/// `[store]`: where the device registry and job history live, and how long jobs and audit log
/// entries are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    /// `sqlite:PATH` or `postgres://USER@HOST:PORT/DB`; empty: SQLite at `DATA/orb.db`.
    /// Serialized with its password redacted.
    #[serde(serialize_with = "redacted_url")]
    pub url: String,
    /// Jobs older than this are deleted with their results.
    pub job_retention: String,
    /// At most this many jobs are kept (the oldest go first).
    pub job_retention_count: u64,
    /// Audit log entries older than this are deleted.
    pub audit_retention: String,
    /// At most this many audit log entries are kept (the oldest go first).
    pub audit_retention_count: u64,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            url: String::new(),
            job_retention: "30d".into(),
            job_retention_count: 100_000,
            audit_retention: "365d".into(),
            audit_retention_count: 1_000_000,
        }
    }
}

/// `[tls]`: TLS on both listeners when `cert` and `key` are set (paths to PEM files, re-read on
/// every reload).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsSection {
    /// The server's certificate chain (PEM, leaf first); empty: no TLS.
    pub cert: String,
    /// The server's private key (PEM).
    pub key: String,
    /// CA certificates (PEM) client certificates are verified against; empty: none asked for.
    pub client_ca: String,
    /// Refuse clients without a certificate from `client_ca`.
    pub require_client_cert: bool,
}

impl TlsSection {
    /// The typed form: `None` without a certificate; every problem in `p`. The files are read
    /// once to check them (the server reads them again when it starts or reloads).
    fn validate(&self, problems: &mut Vec<String>) -> Option<TlsConfig> {
        let path = |s: &str| (!s.trim().is_empty()).then(|| PathBuf::from(s.trim()));
        let (cert, key, client_ca) = (path(&self.cert), path(&self.key), path(&self.client_ca));
        let (cert, key) = match (cert, key) {
            (Some(c), Some(k)) => (c, k),
            (None, None) => {
                if client_ca.is_some() || self.require_client_cert {
                    problems.push("'tls.client_ca' and 'tls.require_client_cert' need 'tls.cert' and 'tls.key'".into());
                }
                return None;
            }
            (Some(_), None) => {
                problems.push("'tls.cert' needs 'tls.key' (the certificate's private key)".into());
                return None;
            }
            (None, Some(_)) => {
                problems.push("'tls.key' needs 'tls.cert' (the certificate it belongs to)".into());
                return None;
            }
        };
        if self.require_client_cert && client_ca.is_none() {
            problems.push(
                "'tls.require_client_cert' needs 'tls.client_ca' (the CA client certificates must chain to)".into(),
            );
            return None;
        }
        let tls = TlsConfig { cert, key, client_ca, require_client_cert: self.require_client_cert };
        match tls.load() {
            Ok(_) => Some(tls),
            Err(e) => {
                problems.push(format!("'tls': {e}"));
                None
            }
        }
    }
}

fn redacted_url<S: Serializer>(url: &str, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&orb_store::redact_url(url))
}

/// The server's sections of the configuration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerFile {
    /// `[server]`.
    pub server: ServerSection,
    /// `[limits]`.
    pub limits: LimitsSection,
    /// `[shutdown]`.
    pub shutdown: ShutdownSection,
    /// `[scheduler]`.
    pub scheduler: SchedulerSection,
    /// `[store]`.
    pub store: StoreSection,
    /// `[groups]`: NAME = "selector".
    pub groups: BTreeMap<String, String>,
    /// `[acl]`.
    pub acl: AclConfig,
    /// `[http]`.
    pub http: HttpConfig,
    /// `[tls]`.
    pub tls: TlsSection,
    /// `[fleet]`: settings pushed to agents.
    pub fleet: FleetConfig,
}

/// Collects problems while typing values.
struct Problems(Vec<String>);

impl Problems {
    fn duration(&mut self, key: &str, text: &str) -> Duration {
        match humantime::parse_duration(text) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                self.0.push(format!("'{key}' must be above zero"));
                Duration::from_secs(1)
            }
            Err(e) => {
                self.0.push(format!(
                    "'{key}' = \"{}\" is not a duration like 10s or 500ms: {e}",
                    orb_proto::excerpt(text)
                ));
                Duration::from_secs(1)
            }
        }
    }

    fn addr(&mut self, key: &str, text: &str) -> SocketAddr {
        text.parse().unwrap_or_else(|_| {
            self.0.push(format!("'{key}' = \"{}\" is not an address like 127.0.0.1:7700", orb_proto::excerpt(text)));
            SocketAddr::from(([127, 0, 0, 1], 0))
        })
    }

    fn size(&mut self, key: &str, value: u64, min: u64, max: u64) -> usize {
        if !(min..=max).contains(&value) {
            self.0.push(format!("'{key}' = {value} must be between {min} and {max}"));
        }
        usize::try_from(value).unwrap_or(usize::MAX)
    }

    fn secret(&mut self, key: &str, value: &Option<Secret>, file: &Option<String>) -> Option<Secret> {
        match (value, file) {
            (Some(_), Some(_)) => {
                self.0.push(format!("give 'server.{key}' or 'server.{key}_file', not both"));
                None
            }
            (Some(v), None) => Some(v.clone()),
            (None, Some(path)) => match std::fs::read_to_string(path) {
                Ok(t) if !t.trim().is_empty() => Some(Secret::new(t.trim())),
                Ok(_) => {
                    self.0.push(format!("'server.{key}_file': {path} is empty"));
                    None
                }
                Err(e) => {
                    self.0.push(format!("'server.{key}_file': cannot read {path}: {e}"));
                    None
                }
            },
            (None, None) => None,
        }
    }
}

/// The most a size limit may be set to: 1 GiB.
const MAX_SIZE: u64 = 1 << 30;
/// The longest deadline that may be configured.
const MAX_DEADLINE: Duration = Duration::from_secs(30 * 24 * 3600);
/// The most a count limit may be set to.
const MAX_COUNT: u64 = 1 << 24;

impl ServerFile {
    /// Types and checks every value; token files are read. Returns the server's configuration
    /// or every problem found, each naming its key.
    ///
    /// # Errors
    /// The problems, one message each.
    pub fn validate(&self) -> Result<ServerConfig, Vec<String>> {
        let mut p = Problems(Vec::new());
        let l = &self.limits;
        let limits = Limits {
            max_frame: p.size("limits.max_frame", l.max_frame, 1024, 64 * 1024 * 1024),
            outbound_queue: p.size("limits.outbound_queue", l.outbound_queue, 1, MAX_COUNT),
            outbound_queue_bytes: p.size("limits.outbound_queue_bytes", l.outbound_queue_bytes, 1024, MAX_SIZE),
            handshake_timeout: p.duration("limits.handshake_timeout", &l.handshake_timeout),
            heartbeat: p.duration("limits.heartbeat", &l.heartbeat),
            heartbeat_timeout: p.duration("limits.heartbeat_timeout", &l.heartbeat_timeout),
            default_job_deadline: p.duration("limits.job_deadline", &l.job_deadline),
            default_request_deadline: p.duration("limits.request_deadline", &l.request_deadline),
            max_deadline: p.duration("limits.max_deadline", &l.max_deadline),
            max_connections: p.size("limits.max_connections", l.max_connections, 0, MAX_COUNT),
            max_connections_per_ip: p.size("limits.max_connections_per_ip", l.max_connections_per_ip, 0, MAX_COUNT),
            max_inflight_requests: p.size("limits.max_inflight_requests", l.max_inflight_requests, 1, MAX_COUNT),
            max_inflight_jobs: p.size("limits.max_inflight_jobs", l.max_inflight_jobs, 0, MAX_COUNT),
            job_buffer_bytes: p.size("limits.job_buffer_bytes", l.job_buffer_bytes, 1024, MAX_SIZE),
            enrollments_per_ip: l.enrollments_per_ip,
            auth_failures_per_ip: l.auth_failures_per_ip,
            agent_messages_per_second: l.agent_messages_per_second,
            operator_messages_per_second: l.operator_messages_per_second,
            agent_connections_per_second: l.agent_connections_per_second,
            max_ttl: p.duration("limits.max_ttl", &l.max_ttl),
            max_queued_per_device: p.size("limits.max_queued_per_device", l.max_queued_per_device, 1, MAX_COUNT),
            max_queued_bytes_per_device: p.size(
                "limits.max_queued_bytes_per_device",
                l.max_queued_bytes_per_device,
                1024,
                MAX_SIZE,
            ),
            max_schedules: p.size("limits.max_schedules", l.max_schedules, 0, MAX_COUNT),
            max_schedule_bytes: p.size("limits.max_schedule_bytes", l.max_schedule_bytes, 1024, MAX_SIZE),
            max_subscriptions: p.size("limits.max_subscriptions", l.max_subscriptions, 1, MAX_COUNT),
            max_retained: p.size("limits.max_retained", l.max_retained, 0, MAX_COUNT),
            max_retained_bytes: p.size("limits.max_retained_bytes", l.max_retained_bytes, 1024, MAX_SIZE),
            max_messages_per_device: p.size("limits.max_messages_per_device", l.max_messages_per_device, 1, MAX_COUNT),
            max_message_bytes_per_device: p.size(
                "limits.max_message_bytes_per_device",
                l.max_message_bytes_per_device,
                1024,
                MAX_SIZE,
            ),
            ..Limits::default()
        };
        for (key, d) in [
            ("limits.job_deadline", limits.default_job_deadline),
            ("limits.request_deadline", limits.default_request_deadline),
            ("limits.max_deadline", limits.max_deadline),
            ("limits.max_ttl", limits.max_ttl),
        ] {
            if d > MAX_DEADLINE {
                p.0.push(format!("'{key}' must be at most 30 days"));
            }
        }
        if limits.heartbeat_timeout <= limits.heartbeat {
            p.0.push("'limits.heartbeat_timeout' must be longer than 'limits.heartbeat'".into());
        }
        let s = &self.server;
        let listen = p.addr("server.listen", &s.listen);
        let http = p.addr("server.http", &s.http);
        if let Some(id) = &s.node_id
            && let Err(e) = crate::node::NodeId::new(id)
        {
            p.0.push(format!("'server.node_id': {e}"));
        }
        let admin_token = p.secret("admin_token", &s.admin_token, &s.admin_token_file);
        let agent_token = p.secret("agent_token", &s.agent_token, &s.agent_token_file);
        let st = &self.store;
        let url = (!st.url.trim().is_empty()).then(|| st.url.trim().to_owned());
        if let Some(u) = &url
            && let Err(e) = orb_store::StoreUrl::parse(u)
        {
            p.0.push(format!("'store.url': {e}"));
        }
        if st.job_retention_count == 0 {
            p.0.push("'store.job_retention_count' must be at least 1".into());
        }
        if st.audit_retention_count == 0 {
            p.0.push("'store.audit_retention_count' must be at least 1".into());
        }
        let store = StoreConfig {
            url,
            job_retention: p.duration("store.job_retention", &st.job_retention),
            job_retention_count: st.job_retention_count,
            audit_retention: p.duration("store.audit_retention", &st.audit_retention),
            audit_retention_count: st.audit_retention_count,
        };
        let grace = p.duration("shutdown.grace", &self.shutdown.grace);
        let restart_grace = p.duration("scheduler.restart_grace", &self.scheduler.restart_grace);
        if restart_grace > MAX_RESTART_GRACE {
            p.0.push("'scheduler.restart_grace' must be at most 1h".into());
        }
        let tls = self.tls.validate(&mut p.0);
        match parse_groups(&self.groups) {
            Ok(groups) => {
                if let Err(problems) = crate::broker::Acl::compile(&self.acl, &groups) {
                    p.0.extend(problems);
                }
                if let Err(problems) = crate::broker::FleetRules::compile(&self.fleet, &groups) {
                    p.0.extend(problems);
                }
            }
            Err(problems) => p.0.extend(problems),
        }
        p.0.extend(crate::listener::cors::problems(&self.http.cors_origins));
        if !p.0.is_empty() {
            return Err(p.0);
        }
        Ok(ServerConfig {
            listen,
            http,
            data_dir: PathBuf::from(&s.data),
            node_id: s.node_id.clone(),
            admin_token,
            agent_token,
            groups: self.groups.clone(),
            limits,
            store,
            grace,
            restart_grace,
            acl: self.acl.clone(),
            http_options: self.http.clone(),
            tls,
            fleet: self.fleet.clone(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_default_file_is_the_default_configuration() {
        let cfg = ServerFile::default().validate().unwrap();
        let d = ServerConfig::default();
        assert_eq!((cfg.listen, cfg.http, cfg.grace), (d.listen, d.http, d.grace));
        assert_eq!(cfg.restart_grace, d.restart_grace);
        assert_eq!(format!("{:?}", cfg.limits), format!("{:?}", d.limits));
        assert_eq!(cfg.store, d.store);
    }

    #[test]
    fn every_problem_is_reported_at_once_naming_its_key() {
        let mut f = ServerFile::default();
        f.server.listen = "nowhere".into();
        f.server.admin_token = Some(Secret::new("a"));
        f.server.admin_token_file = Some("/x".into());
        f.limits.heartbeat = "soon".into();
        f.limits.outbound_queue = 0;
        f.limits.max_frame = 10;
        f.store.url = "mysql://x".into();
        f.groups.insert("cams".into(), "cam-*(".into());
        f.groups.insert("a.b".into(), "*".into());
        f.scheduler.restart_grace = "2h".into();
        let all = f.validate().unwrap_err().join("\n");
        for key in [
            "server.listen",
            "admin_token",
            "limits.heartbeat",
            "limits.outbound_queue",
            "limits.max_frame",
            "store.url",
            "groups.cams",
            "'a.b'",
            "'scheduler.restart_grace' must be at most 1h",
        ] {
            assert!(all.contains(key), "{key} missing from:\n{all}");
        }
    }

    #[test]
    fn secrets_and_the_store_password_serialize_redacted() {
        let mut f = ServerFile::default();
        f.server.admin_token = Some(Secret::new("hunter2-hunter2"));
        f.store.url = "postgres://orb:p?ss@db.example/orb".into();
        let shown = toml::to_string(&f).unwrap();
        assert!(!shown.contains("hunter2") && !shown.contains("p?ss"), "{shown}");
        assert!(shown.contains("postgres://orb:<redacted>@db.example/orb"), "{shown}");
    }

    #[test]
    fn tls_needs_a_certificate_with_its_key_and_a_client_ca_for_required_client_certificates() {
        let problems = |t: TlsSection| {
            let f = ServerFile { tls: t, ..ServerFile::default() };
            f.validate().err().unwrap_or_default().join("\n")
        };
        assert!(ServerFile::default().validate().unwrap().tls.is_none());
        let e = problems(TlsSection { cert: "c.pem".into(), ..TlsSection::default() });
        assert!(e.contains("'tls.cert' needs 'tls.key'"), "{e}");
        let e = problems(TlsSection { require_client_cert: true, ..TlsSection::default() });
        assert!(e.contains("need 'tls.cert'"), "{e}");
        let e = problems(TlsSection {
            cert: "c.pem".into(),
            key: "k.pem".into(),
            require_client_cert: true,
            ..TlsSection::default()
        });
        assert!(e.contains("needs 'tls.client_ca'"), "{e}");
        let e =
            problems(TlsSection { cert: "/nonexistent/c.pem".into(), key: "k.pem".into(), ..TlsSection::default() });
        assert!(e.contains("'tls': cannot read certificate /nonexistent/c.pem"), "{e}");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e = toml::from_str::<ServerFile>("[limits]\noutbound_queu = 1\n").unwrap_err();
        assert!(e.to_string().contains("outbound_queu"), "{e}");
        let e = toml::from_str::<ServerFile>("[http]\nmetrics_publik = true\n").unwrap_err();
        assert!(e.to_string().contains("metrics_publik"), "{e}");
    }

    #[test]
    fn metrics_are_private_unless_the_http_section_says_public() {
        assert!(!ServerFile::default().validate().unwrap().http_options.metrics_public);
        let f: ServerFile = toml::from_str("[http]\nmetrics_public = true\n").unwrap();
        assert!(f.validate().unwrap().http_options.metrics_public);
    }
}

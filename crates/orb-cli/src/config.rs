//! The configuration file (`orb.toml`) and its layering: built-in defaults, then the file
//! (`--config`, `$ORB_CONFIG`, `/etc/orb/orb.toml`), then `ORB_<SECTION>__<KEY>` environment
//! variables, then command-line flags. [`Layers::finish`] reports every problem at once; the result is
//! turned into typed settings for `orb serve` ([`Settings::server_config`]) and `orb agent`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// The commented default configuration printed by `orb config default`.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// Where daemons look for a configuration file when neither `--config` nor `$ORB_CONFIG` is given.
pub const SYSTEM_CONFIG: &str = "/etc/orb/orb.toml";

/// `[server]`: listeners, data folder, credentials.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerSection {
    /// TCP listener.
    pub listen: String,
    /// HTTP listener (WebSocket, health).
    pub http: String,
    /// Data folder.
    pub data: String,
    /// Operator token (secret).
    pub admin_token: Option<String>,
    /// File holding the operator token.
    pub admin_token_file: Option<String>,
    /// Agent token (secret).
    pub agent_token: Option<String>,
    /// File holding the agent token.
    pub agent_token_file: Option<String>,
    /// Log every frame in and out at TRACE level.
    pub trace: bool,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            listen: "127.0.0.1:7700".into(),
            http: "127.0.0.1:7780".into(),
            data: "orb-data".into(),
            admin_token: None,
            admin_token_file: None,
            agent_token: None,
            agent_token_file: None,
            trace: false,
        }
    }
}

/// `[limits]`: sizes, counts and timers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LimitsSection {
    /// Largest frame in bytes.
    pub max_frame: u64,
    /// Frames queued per connection before it is closed as a slow consumer.
    pub outbound_queue: u64,
    /// Time allowed for `hello`.
    pub handshake_timeout: String,
    /// Ping interval announced to clients.
    pub heartbeat: String,
    /// Silence after which a connection is closed.
    pub heartbeat_timeout: String,
    /// Connections in total (0: unlimited).
    pub max_connections: u64,
    /// Connections per source IP address (0: unlimited).
    pub max_connections_per_ip: u64,
    /// Jobs in flight per agent session (0: unlimited). Operators are not limited.
    pub max_inflight_jobs: u64,
    /// Deadline of a job that names none.
    pub job_deadline: String,
    /// Deadline of a plain request that names none.
    pub request_deadline: String,
    /// Longest deadline a command may ask for.
    pub max_deadline: String,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_frame: 1_048_576,
            outbound_queue: 1024,
            handshake_timeout: "10s".into(),
            heartbeat: "15s".into(),
            heartbeat_timeout: "45s".into(),
            max_connections: 0,
            max_connections_per_ip: 0,
            max_inflight_jobs: 64,
            job_deadline: "10s".into(),
            request_deadline: "30s".into(),
            max_deadline: "24h".into(),
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

/// `[store]`: where the device registry and job history live, and how long jobs are kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreSection {
    /// `sqlite:PATH` or `postgres://USER@HOST:PORT/DB`; empty: SQLite at `DATA/orb.db`.
    pub url: String,
    /// Jobs older than this are deleted with their results.
    pub job_retention: String,
    /// At most this many jobs are kept (the oldest go first).
    pub job_retention_count: u64,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection { url: String::new(), job_retention: "30d".into(), job_retention_count: 100_000 }
    }
}

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// Filter directive (`info`, `orb_server=debug`); `ORB_LOG` and `-v` override it.
    pub level: String,
    /// Log file (reopened on SIGHUP and `LOG_ROTATE`); stderr when absent.
    pub file: Option<String>,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection { level: "info".into(), file: None }
    }
}

/// `[agent]`: what `orb agent` connects to and reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AgentSection {
    /// Server URLs, tried in order (backup brokers after the first).
    pub server: Vec<String>,
    /// Device id.
    pub id: Option<String>,
    /// Agent token (secret).
    pub token: Option<String>,
    /// File holding the agent token.
    pub token_file: Option<String>,
    /// File holding the device secret (`orb devices add`); `credentials.json` in `data` otherwise.
    pub secret_file: Option<String>,
    /// Reported tags.
    pub tags: BTreeMap<String, String>,
    /// The agent's data folder (default `./orb-agent/<id>`, `./orb-agent/default` without an id).
    pub data: Option<String>,
    /// First reconnect delay.
    pub backoff_min: String,
    /// Longest reconnect delay.
    pub backoff_max: String,
    /// Stop trying after this long without a connection (never when absent).
    pub give_up_after: Option<String>,
    /// Time running commands get to finish on SIGTERM.
    pub grace: String,
}

impl Default for AgentSection {
    fn default() -> Self {
        AgentSection {
            server: vec!["tcp://127.0.0.1:7700".into()],
            id: None,
            token: None,
            token_file: None,
            secret_file: None,
            tags: BTreeMap::new(),
            data: None,
            backoff_min: "250ms".into(),
            backoff_max: "30s".into(),
            give_up_after: None,
            grace: "10s".into(),
        }
    }
}

/// The whole file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FileConfig {
    /// `[server]`.
    pub server: ServerSection,
    /// `[limits]`.
    pub limits: LimitsSection,
    /// `[shutdown]`.
    pub shutdown: ShutdownSection,
    /// `[store]`.
    pub store: StoreSection,
    /// `[log]`.
    pub log: LogSection,
    /// `[agent]`.
    pub agent: AgentSection,
    /// `[groups]`: NAME = "selector".
    pub groups: BTreeMap<String, String>,
}

/// Keys whose values are secrets: redacted by `orb config show`.
const SECRET_KEYS: &[(&str, &str)] = &[("server", "admin_token"), ("server", "agent_token"), ("agent", "token")];

/// Sections whose keys are free-form (any key allowed).
const FREE_SECTIONS: &[&str] = &["groups"];

/// Every known key per section, taken from a sample with every optional key set.
fn known_keys() -> BTreeMap<String, Vec<String>> {
    let mut sample = FileConfig::default();
    sample.server.admin_token = Some(String::new());
    sample.server.admin_token_file = Some(String::new());
    sample.server.agent_token = Some(String::new());
    sample.server.agent_token_file = Some(String::new());
    sample.log.file = Some(String::new());
    sample.agent.id = Some(String::new());
    sample.agent.token = Some(String::new());
    sample.agent.token_file = Some(String::new());
    sample.agent.secret_file = Some(String::new());
    sample.agent.data = Some(String::new());
    sample.agent.give_up_after = Some(String::new());
    let table = toml::Table::try_from(&sample).unwrap_or_default();
    table
        .into_iter()
        .map(|(section, v)| {
            let keys = v.as_table().map(|t| t.keys().cloned().collect()).unwrap_or_default();
            (section, keys)
        })
        .collect()
}

/// One layer's values, as TOML, with where they came from for error messages.
#[derive(Debug, Default)]
pub struct Layers {
    merged: toml::Table,
    origin: BTreeMap<(String, String), String>,
    problems: Vec<String>,
}

impl Layers {
    /// Starts from the built-in defaults.
    pub fn defaults() -> Layers {
        let merged = toml::Table::try_from(FileConfig::default()).unwrap_or_default();
        Layers { merged, ..Layers::default() }
    }

    /// Adds a TOML file. Syntax errors and unknown keys are recorded as problems.
    pub fn file(&mut self, path: &Path) {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                self.problems.push(format!("cannot read {}: {e}", path.display()));
                return;
            }
        };
        self.text(&text, &path.display().to_string());
    }

    /// Adds TOML text from `origin`.
    pub fn text(&mut self, text: &str, origin: &str) {
        let table: toml::Table = match toml::from_str(text) {
            Ok(t) => t,
            Err(e) => {
                self.problems.push(format!("{origin}: {}", e.to_string().trim()));
                return;
            }
        };
        for (section, value) in table {
            let Some(entries) = value.as_table() else {
                self.problems.push(format!("{origin}: '{section}' must be a [section]"));
                continue;
            };
            for (key, v) in entries {
                self.set(&section, key, v.clone(), origin);
            }
        }
    }

    /// Adds `ORB_<SECTION>__<KEY>` variables from `vars`. Variables without `__` (`ORB_SERVER`,
    /// `ORB_TOKEN`, `ORB_LOG`, ...) and `ORB_TEST_*` / `ORB_BENCH_*` are not configuration.
    pub fn env(&mut self, vars: impl IntoIterator<Item = (String, String)>) {
        for (name, raw) in vars {
            let Some(rest) = name.strip_prefix("ORB_") else { continue };
            if rest.starts_with("TEST_") || rest.starts_with("BENCH_") {
                continue;
            }
            let Some((section, key)) = rest.split_once("__") else { continue };
            let value = parse_env_value(&raw);
            self.set(&section.to_ascii_lowercase(), &key.to_ascii_lowercase(), value, &format!("environment {name}"));
        }
    }

    /// Sets one key (a command-line flag, or a layer above).
    pub fn set(&mut self, section: &str, key: &str, value: toml::Value, origin: &str) {
        let known = known_keys();
        let free = FREE_SECTIONS.contains(&section);
        match known.get(section) {
            None if !free => {
                self.problems.push(format!("{origin}: unknown section [{section}] (key '{section}.{key}')"));
                return;
            }
            Some(keys) if !free && !keys.iter().any(|k| k == key) => {
                self.problems.push(format!("{origin}: unknown key '{section}.{key}'"));
                return;
            }
            _ => {}
        }
        let entry = self.merged.entry(section.to_owned()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let Some(t) = entry.as_table_mut() {
            t.insert(key.to_owned(), value);
        }
        self.origin.insert((section.to_owned(), key.to_owned()), origin.to_owned());
    }

    /// Type-checks every key on its own (so every wrong type is reported), then validates the
    /// whole, with wrongly typed keys left out (so their problems do not hide the others).
    /// Returns the typed settings or every problem found.
    pub fn finish(mut self) -> Result<Settings, Vec<String>> {
        let mut mistyped = Vec::new();
        for (section, value) in &self.merged {
            let Some(entries) = value.as_table() else { continue };
            for (key, v) in entries {
                let mut one = toml::Table::new();
                let mut inner = toml::Table::new();
                inner.insert(key.clone(), v.clone());
                one.insert(section.clone(), toml::Value::Table(inner));
                if let Err(e) = toml::Value::Table(one).try_into::<FileConfig>() {
                    let origin = self.origin.get(&(section.clone(), key.clone())).map_or("default", String::as_str);
                    self.problems.push(format!("{origin}: '{section}.{key}': {}", e.message().trim()));
                    mistyped.push((section.clone(), key.clone()));
                }
            }
        }
        for (section, key) in &mistyped {
            if let Some(t) = self.merged.get_mut(section).and_then(toml::Value::as_table_mut) {
                t.remove(key);
            }
        }
        let file: FileConfig = match toml::Value::Table(self.merged).try_into() {
            Ok(f) => f,
            Err(e) => {
                self.problems.push(e.to_string());
                return Err(self.problems);
            }
        };
        match validate(file) {
            Ok(settings) if self.problems.is_empty() => Ok(settings),
            Ok(_) => Err(self.problems),
            Err(more) => {
                self.problems.extend(more);
                Err(self.problems)
            }
        }
    }
}

/// An environment value: TOML when it parses as a TOML value (numbers, booleans, arrays,
/// quoted strings), else the raw string.
fn parse_env_value(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_owned()))
}

/// Typed, validated settings.
#[derive(Debug, Clone)]
// The agent-only build reads only the agent's part.
#[cfg_attr(not(feature = "server"), allow(dead_code))]
pub struct Settings {
    /// The merged file form (for `orb config show`).
    pub file: FileConfig,
    /// Parsed listen address.
    pub listen: SocketAddr,
    /// Parsed HTTP address.
    pub http: SocketAddr,
    /// Limits.
    pub limits: TypedLimits,
    /// Shutdown grace.
    pub grace: Duration,
    /// Agent reconnect and stop settings.
    pub agent: TypedAgent,
    /// The store.
    pub store: TypedStore,
}

/// `[store]` as typed values.
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "server"), allow(dead_code))]
pub struct TypedStore {
    /// The store URL (checked); `None`: SQLite in the data folder.
    pub url: Option<String>,
    /// See [`StoreSection`].
    pub job_retention: Duration,
    /// See [`StoreSection`].
    pub job_retention_count: u64,
}

/// Checks a store URL. Only a build with the server has the store to check it against; the
/// agent-only build never opens one.
fn check_store_url(url: &str) -> Result<(), String> {
    #[cfg(feature = "server")]
    return orb_store::StoreUrl::parse(url).map(|_| ()).map_err(|e| e.to_string());
    #[cfg(not(feature = "server"))]
    {
        let _ = url;
        Ok(())
    }
}

/// A store URL with its passwords replaced by `<redacted>`: the one in `scheme://user:password@host/...`
/// and any `password=...` parameter of the query string (`postgres://orb@h/db?password=...`);
/// other text as is.
fn redact_url_password(url: &str) -> String {
    const SHOWN: &str = "<redacted>";
    let url = redact_query_password(url, SHOWN);
    let Some((scheme, rest)) = url.split_once("://") else { return url };
    // The user information ends at the last `@` before the query (a password may hold `@` or `/`).
    // Without one there, a `?` may be part of the password: look further, unless a `/` already
    // ended the host.
    let before_query = &rest[..rest.find('?').unwrap_or(rest.len())];
    let at = before_query.rfind('@').or_else(|| if before_query.contains('/') { None } else { rest.rfind('@') });
    let Some((userinfo, host)) = at.map(|i| (&rest[..i], &rest[i + 1..])) else { return url };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:{SHOWN}@{host}"),
        None => url,
    }
}

/// Every `password=VALUE` parameter (after `?` or `&`, any case) with VALUE replaced by `shown`.
fn redact_query_password(url: &str, shown: &str) -> String {
    const KEY: &str = "password=";
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    while let Some(i) = rest.find(['?', '&']) {
        let (head, tail) = rest.split_at(i + 1);
        out.push_str(head);
        rest = tail;
        if rest.get(..KEY.len()).is_some_and(|k| k.eq_ignore_ascii_case(KEY)) {
            out.push_str(&rest[..KEY.len()]);
            out.push_str(shown);
            let end = rest.find(['&', '#']).unwrap_or(rest.len());
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    out
}

/// `[limits]` as typed values.
#[derive(Debug, Clone)]
#[cfg_attr(not(feature = "server"), allow(dead_code))]
pub struct TypedLimits {
    /// See [`LimitsSection`].
    pub max_frame: usize,
    /// See [`LimitsSection`].
    pub outbound_queue: usize,
    /// See [`LimitsSection`].
    pub handshake_timeout: Duration,
    /// See [`LimitsSection`].
    pub heartbeat: Duration,
    /// See [`LimitsSection`].
    pub heartbeat_timeout: Duration,
    /// See [`LimitsSection`].
    pub max_connections: usize,
    /// See [`LimitsSection`].
    pub max_connections_per_ip: usize,
    /// See [`LimitsSection`].
    pub max_inflight_jobs: usize,
    /// See [`LimitsSection`].
    pub job_deadline: Duration,
    /// See [`LimitsSection`].
    pub request_deadline: Duration,
    /// See [`LimitsSection`].
    pub max_deadline: Duration,
}

/// `[agent]` timers as typed values.
#[derive(Debug, Clone)]
pub struct TypedAgent {
    /// First reconnect delay.
    pub backoff_min: Duration,
    /// Longest reconnect delay.
    pub backoff_max: Duration,
    /// Give up after this long without a connection.
    pub give_up_after: Option<Duration>,
    /// Grace for running commands on SIGTERM.
    pub grace: Duration,
}

fn validate(file: FileConfig) -> Result<Settings, Vec<String>> {
    let mut p = Vec::new();
    let mut dur = |name: &str, v: &str| -> Duration {
        match humantime::parse_duration(v) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                p.push(format!("'{name}' must be above zero"));
                Duration::from_secs(1)
            }
            Err(e) => {
                p.push(format!("'{name}' = \"{v}\" is not a duration like 10s or 500ms: {e}"));
                Duration::from_secs(1)
            }
        }
    };
    let l = &file.limits;
    let limits = TypedLimits {
        max_frame: usize::try_from(l.max_frame).unwrap_or(usize::MAX),
        outbound_queue: usize::try_from(l.outbound_queue).unwrap_or(usize::MAX),
        handshake_timeout: dur("limits.handshake_timeout", &l.handshake_timeout),
        heartbeat: dur("limits.heartbeat", &l.heartbeat),
        heartbeat_timeout: dur("limits.heartbeat_timeout", &l.heartbeat_timeout),
        max_connections: usize::try_from(l.max_connections).unwrap_or(usize::MAX),
        max_connections_per_ip: usize::try_from(l.max_connections_per_ip).unwrap_or(usize::MAX),
        max_inflight_jobs: usize::try_from(l.max_inflight_jobs).unwrap_or(usize::MAX),
        job_deadline: dur("limits.job_deadline", &l.job_deadline),
        request_deadline: dur("limits.request_deadline", &l.request_deadline),
        max_deadline: dur("limits.max_deadline", &l.max_deadline),
    };
    let grace = dur("shutdown.grace", &file.shutdown.grace);
    let st = &file.store;
    let store = TypedStore {
        url: (!st.url.trim().is_empty()).then(|| st.url.trim().to_owned()),
        job_retention: dur("store.job_retention", &st.job_retention),
        job_retention_count: st.job_retention_count,
    };
    let a = &file.agent;
    let agent = TypedAgent {
        backoff_min: dur("agent.backoff_min", &a.backoff_min),
        backoff_max: dur("agent.backoff_max", &a.backoff_max),
        give_up_after: a.give_up_after.as_deref().map(|g| dur("agent.give_up_after", g)),
        grace: dur("agent.grace", &a.grace),
    };
    let addr = |p: &mut Vec<String>, name: &str, v: &str| -> SocketAddr {
        v.parse().unwrap_or_else(|_| {
            p.push(format!("'{name}' = \"{v}\" is not an address like 127.0.0.1:7700"));
            SocketAddr::from(([127, 0, 0, 1], 0))
        })
    };
    let listen = addr(&mut p, "server.listen", &file.server.listen);
    let http = addr(&mut p, "server.http", &file.server.http);
    if !(1024..=64 * 1024 * 1024).contains(&l.max_frame) {
        p.push(format!("'limits.max_frame' = {} must be between 1024 and 67108864", l.max_frame));
    }
    if l.outbound_queue == 0 {
        p.push("'limits.outbound_queue' must be at least 1".into());
    }
    if limits.heartbeat_timeout <= limits.heartbeat {
        p.push("'limits.heartbeat_timeout' must be longer than 'limits.heartbeat'".into());
    }
    if agent.backoff_max < agent.backoff_min {
        p.push("'agent.backoff_max' must not be shorter than 'agent.backoff_min'".into());
    }
    let s = &file.server;
    if s.admin_token.is_some() && s.admin_token_file.is_some() {
        p.push("give 'server.admin_token' or 'server.admin_token_file', not both".into());
    }
    if s.agent_token.is_some() && s.agent_token_file.is_some() {
        p.push("give 'server.agent_token' or 'server.agent_token_file', not both".into());
    }
    if a.token.is_some() && a.token_file.is_some() {
        p.push("give 'agent.token' or 'agent.token_file', not both".into());
    }
    for (name, sel) in &file.groups {
        if orb_proto::DeviceId::new(name).is_err() {
            p.push(format!("group name '{name}' must match [A-Za-z0-9][A-Za-z0-9_-]{{0,63}}"));
        }
        if let Err(e) = orb_proto::Selector::parse(sel) {
            p.push(format!("'groups.{name}' = \"{sel}\": {e}"));
        }
    }
    if tracing_subscriber::EnvFilter::try_new(&file.log.level).is_err() {
        p.push(format!("'log.level' = \"{}\" is not a log filter like info or orb_server=debug", file.log.level));
    }
    if let Some(url) = &store.url
        && let Err(e) = check_store_url(url)
    {
        p.push(format!("'store.url': {e}"));
    }
    if st.job_retention_count == 0 {
        p.push("'store.job_retention_count' must be at least 1".into());
    }
    if a.server.is_empty() {
        p.push("'agent.server' needs at least one URL".into());
    }
    for u in &a.server {
        if let Err(e) = orb_client::ServerUrl::parse(u) {
            p.push(format!("'agent.server': {e}"));
        }
    }
    if let Some(id) = &a.id
        && let Err(e) = orb_proto::DeviceId::new(id)
    {
        p.push(format!("'agent.id': {e}"));
    }
    if p.is_empty() { Ok(Settings { file, listen, http, limits, grace, agent, store }) } else { Err(p) }
}

impl Settings {
    /// The server library's configuration.
    ///
    /// # Errors
    /// A message when a token file cannot be read.
    #[cfg(feature = "server")]
    pub fn server_config(&self) -> Result<orb_server::ServerConfig, String> {
        use orb_server::Secret;
        let s = &self.file.server;
        let secret = |v: &Option<String>, f: &Option<String>| -> Result<Option<Secret>, String> {
            if let Some(v) = v {
                return Ok(Some(Secret::new(v.clone())));
            }
            match f {
                None => Ok(None),
                Some(path) => std::fs::read_to_string(path)
                    .map(|t| Some(Secret::new(t.trim())))
                    .map_err(|e| format!("cannot read token file {path}: {e}")),
            }
        };
        let l = &self.limits;
        Ok(orb_server::ServerConfig {
            listen: self.listen,
            http: self.http,
            data_dir: PathBuf::from(&s.data),
            admin_token: secret(&s.admin_token, &s.admin_token_file)?,
            agent_token: secret(&s.agent_token, &s.agent_token_file)?,
            groups: self.file.groups.clone(),
            store: orb_server::StoreConfig {
                url: self.store.url.clone(),
                job_retention: self.store.job_retention,
                job_retention_count: self.store.job_retention_count,
            },
            limits: orb_server::Limits {
                max_frame: l.max_frame,
                outbound_queue: l.outbound_queue,
                handshake_timeout: l.handshake_timeout,
                heartbeat: l.heartbeat,
                heartbeat_timeout: l.heartbeat_timeout,
                default_job_deadline: l.job_deadline,
                default_request_deadline: l.request_deadline,
                max_deadline: l.max_deadline,
                max_connections: l.max_connections,
                max_connections_per_ip: l.max_connections_per_ip,
                max_inflight_per_agent: l.max_inflight_jobs,
                ..orb_server::Limits::default()
            },
        })
    }

    /// The store for people to read: its URL with any password redacted, or the default.
    #[cfg(feature = "server")]
    pub fn store_display(&self) -> String {
        self.store.url.as_deref().map_or_else(|| "sqlite (DATA/orb.db)".to_owned(), redact_url_password)
    }

    /// The merged configuration as TOML with secrets replaced by `<redacted>`.
    pub fn redacted_toml(&self) -> String {
        let mut table = toml::Table::try_from(&self.file).unwrap_or_default();
        for (section, key) in SECRET_KEYS {
            if let Some(v) = table.get_mut(*section).and_then(|s| s.as_table_mut()).and_then(|t| t.get_mut(*key)) {
                *v = toml::Value::String("<redacted>".into());
            }
        }
        if let Some(v) = table.get_mut("store").and_then(|s| s.as_table_mut()).and_then(|t| t.get_mut("url"))
            && let Some(url) = v.as_str()
        {
            *v = toml::Value::String(redact_url_password(url));
        }
        toml::to_string(&table).unwrap_or_default()
    }
}

/// The configuration file to read: `--config`, else `$ORB_CONFIG`, else `/etc/orb/orb.toml`
/// when it exists.
pub fn config_path(flag: Option<&Path>) -> Option<PathBuf> {
    if let Some(p) = flag {
        return Some(p.to_path_buf());
    }
    if let Some(p) = std::env::var_os("ORB_CONFIG").filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let system = PathBuf::from(SYSTEM_CONFIG);
    system.exists().then_some(system)
}

/// Defaults, then the file (if any), then the process environment.
pub fn layered(file: Option<&Path>) -> Layers {
    let mut layers = Layers::defaults();
    if let Some(f) = file {
        layers.file(f);
    }
    layers.env(std::env::vars());
    layers
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_commented_default_file_is_the_default() {
        let parsed: FileConfig = toml::from_str(DEFAULT_TOML).unwrap();
        assert_eq!(parsed, FileConfig::default());
        let mut l = Layers::defaults();
        l.text(DEFAULT_TOML, "default.toml");
        assert!(l.finish().is_ok());
    }

    #[test]
    fn every_key_is_documented_in_the_default_file() {
        for (section, keys) in known_keys() {
            assert!(DEFAULT_TOML.contains(&format!("[{section}]")), "[{section}] missing");
            for k in keys {
                let documented =
                    DEFAULT_TOML.contains(&format!("{k} =")) || DEFAULT_TOML.contains(&format!("[{section}.{k}]"));
                assert!(documented, "{section}.{k} missing from default.toml");
            }
        }
    }

    #[test]
    fn all_problems_are_reported_at_once() {
        let mut l = Layers::defaults();
        l.text(
            "[server]\nlisen = \"x\"\nlisten = 5\n[limits]\nheartbeat = \"soon\"\noutbound_queue = 0\n[bogus]\na = 1\n[groups]\ncams = \"cam-*(\"\n",
            "orb.toml",
        );
        let problems = l.finish().unwrap_err();
        let all = problems.join("\n");
        assert!(all.contains("unknown key 'server.lisen'"), "{all}");
        assert!(all.contains("unknown section [bogus]"), "{all}");
        assert!(all.contains("'server.listen'"), "{all}");
        assert!(all.contains("invalid type"), "the cause of a type error is given: {all}");
        // Type errors do not hide the checks of the other keys.
        assert!(all.contains("limits.heartbeat"), "{all}");
        assert!(all.contains("outbound_queue"), "{all}");
        assert!(all.contains("groups.cams"), "{all}");
        assert_eq!(problems.len(), 6, "{all}");

        let mut l = Layers::defaults();
        l.text("[limits]\nheartbeat = \"soon\"\noutbound_queue = 0\n[groups]\ncams = \"cam-*(\"\n", "orb.toml");
        let all = l.finish().unwrap_err().join("\n");
        assert!(all.contains("limits.heartbeat"), "{all}");
        assert!(all.contains("outbound_queue"), "{all}");
        assert!(all.contains("groups.cams"), "{all}");
    }

    #[test]
    fn env_overrides_the_file_and_other_orb_variables_are_ignored() {
        let mut l = Layers::defaults();
        l.text("[limits]\noutbound_queue = 8\n", "orb.toml");
        l.env([
            ("ORB_LIMITS__OUTBOUND_QUEUE".to_owned(), "16".to_owned()),
            ("ORB_SERVER__LISTEN".to_owned(), "127.0.0.1:9000".to_owned()),
            ("ORB_GROUPS__CAMS".to_owned(), "cam-*".to_owned()),
            ("ORB_SERVER".to_owned(), "tcp://x:1".to_owned()),
            ("ORB_TOKEN".to_owned(), "t".to_owned()),
            ("ORB_TEST_POSTGRES_URL".to_owned(), "postgres://".to_owned()),
            ("ORB_BENCH_NATS__URL".to_owned(), "nats://".to_owned()),
            ("ORB_LOG".to_owned(), "debug".to_owned()),
            ("HOME".to_owned(), "/root".to_owned()),
        ]);
        let s = l.finish().unwrap();
        assert_eq!(s.limits.outbound_queue, 16);
        assert_eq!(s.listen.port(), 9000);
        assert_eq!(s.file.groups["cams"], "cam-*");
    }

    #[test]
    fn unknown_env_keys_are_named() {
        let mut l = Layers::defaults();
        l.env([("ORB_LIMITS__OUTBOUND_QUEU".to_owned(), "1".to_owned())]);
        let all = l.finish().unwrap_err().join("\n");
        assert!(all.contains("ORB_LIMITS__OUTBOUND_QUEU"), "{all}");
        assert!(all.contains("limits.outbound_queu"), "{all}");
    }

    #[test]
    fn secrets_are_redacted_in_show() {
        let mut l = Layers::defaults();
        l.text("[server]\nadmin_token = \"hunter2-hunter2\"\n[agent]\ntoken = \"s3cret-s3cret\"\n", "orb.toml");
        l.env([("ORB_STORE__URL".to_owned(), "postgres://orb:pg-pass-word@db.example:5432/orb".to_owned())]);
        let settings = l.finish().unwrap();
        let shown = settings.redacted_toml();
        assert!(!shown.contains("hunter2"));
        assert!(!shown.contains("s3cret"));
        assert!(!shown.contains("pg-pass-word"), "{shown}");
        assert!(shown.contains("postgres://orb:<redacted>@db.example:5432/orb"), "{shown}");
        assert_eq!(settings.store.url.as_deref(), Some("postgres://orb:pg-pass-word@db.example:5432/orb"));
        assert_eq!(redact_url_password("sqlite:orb.db"), "sqlite:orb.db");
        assert_eq!(redact_url_password("postgres://orb@h/db"), "postgres://orb@h/db");
    }

    #[test]
    fn store_url_passwords_are_redacted_in_the_user_information_and_the_query() {
        let cases = [
            ("postgres://orb:pw@h:5432/db", "postgres://orb:<redacted>@h:5432/db"),
            ("postgres://orb:p@ss/w@h/db", "postgres://orb:<redacted>@h/db"),
            ("postgres://orb:p?ss@h/db", "postgres://orb:<redacted>@h/db"),
            ("postgres://orb@h/db?password=pw", "postgres://orb@h/db?password=<redacted>"),
            (
                "postgresql://h/db?user=orb&Password=p@w&sslmode=require",
                "postgresql://h/db?user=orb&Password=<redacted>&sslmode=require",
            ),
            ("postgres://u:a@h/db?password=b#frag", "postgres://u:<redacted>@h/db?password=<redacted>#frag"),
            ("postgres://h/db?user=a@b&password=x", "postgres://h/db?user=a@b&password=<redacted>"),
            ("postgres://h/db?passwords=kept&x=password=kept", "postgres://h/db?passwords=kept&x=password=kept"),
            ("postgres://h/db?password=", "postgres://h/db?password=<redacted>"),
            ("sqlite:orb.db", "sqlite:orb.db"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_url_password(url), shown, "{url}");
        }
        let mut l = Layers::defaults();
        l.env([("ORB_STORE__URL".to_owned(), "postgres://orb@db.example/orb?password=pg-pass-word".to_owned())]);
        let shown = l.finish().unwrap().redacted_toml();
        assert!(!shown.contains("pg-pass-word") && shown.contains("?password=<redacted>"), "{shown}");
    }

    #[test]
    fn the_store_defaults_to_sqlite_in_the_data_folder_and_a_bad_url_is_a_problem() {
        let s = Layers::defaults().finish().unwrap();
        assert_eq!(s.store.url, None);
        assert_eq!(s.store.job_retention, Duration::from_secs(30 * 86_400));
        assert_eq!(s.store.job_retention_count, 100_000);
        let mut l = Layers::defaults();
        l.text("[store]\njob_retention = \"12h\"\njob_retention_count = 0\n", "orb.toml");
        l.set("store", "url", toml::Value::String("mysql://x".into()), "command line");
        let all = l.finish().unwrap_err().join("\n");
        assert!(all.contains("store.job_retention_count"), "{all}");
        #[cfg(feature = "server")]
        assert!(all.contains("'store.url'") && all.contains("mysql://x"), "{all}");
    }
}

//! The configuration file (`orb.toml`) and its layering: built-in defaults, then the file
//! (`--config`, `$ORB_CONFIG`, `/etc/orb/orb.toml`), then `ORB_<SECTION>__<KEY>` environment
//! variables, then command-line flags. [`Layers::finish`] reports every problem at once. The
//! server's sections (`[server]`, `[limits]`, `[shutdown]`, `[scheduler]`, `[store]`, `[acl]`,
//! `[http]`, `[tls]`, `[groups]`, `[fleet]`) are
//! `orb_server`'s schema and its `validate`; this module adds only `[log]`, `[agent]` and
//! `[client]`, and layers. The agent-only build carries the server's sections unread. Client
//! commands find their file differently ([`client_config_path`]) and read only `[client]`
//! ([`Layers::client`]).

use orb_client::durable::{DurableLimits, JournalLimits, OutboxLimits};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use orb_io::secret::Secret;
use serde::{Deserialize, Serialize};

/// The commented default configuration printed by `orb config default`.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// Where daemons look for a configuration file when neither `--config` nor `$ORB_CONFIG` is given.
pub const SYSTEM_CONFIG: &str = "/etc/orb/orb.toml";

/// The client's configuration file in the user's folder ([`user_dir`]).
pub const USER_CONFIG: &str = "config.toml";

/// The server's sections: its schema in a build with the server, unread tables in the agent-only
/// build (which has no server to configure).
#[cfg(feature = "server")]
mod server_sections {
    pub use orb_server::config::AclConfig as AclSection;
    pub use orb_server::config::FleetConfig as FleetSection;
    pub use orb_server::config::HttpConfig as HttpSection;
    pub use orb_server::config::file::{
        LimitsSection, SchedulerSection, ServerSection, ShutdownSection, StoreSection, TlsSection,
    };
}
#[cfg(not(feature = "server"))]
mod server_sections {
    pub type ServerSection = toml::Table;
    pub type LimitsSection = toml::Table;
    pub type ShutdownSection = toml::Table;
    pub type SchedulerSection = toml::Table;
    pub type StoreSection = toml::Table;
    pub type AclSection = toml::Table;
    pub type FleetSection = toml::Table;
    pub type HttpSection = toml::Table;
    pub type TlsSection = toml::Table;
}
use server_sections::{
    AclSection, FleetSection, HttpSection, LimitsSection, SchedulerSection, ServerSection, ShutdownSection,
    StoreSection, TlsSection,
};

/// The sections that belong to the server.
const SERVER_SECTIONS: &[&str] =
    &["server", "limits", "shutdown", "scheduler", "store", "acl", "http", "tls", "groups", "fleet"];

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
    /// Agent token.
    pub token: Option<Secret>,
    /// File holding the agent token.
    pub token_file: Option<String>,
    /// File holding the device secret (`orb devices add`); `credentials.json` in `data` otherwise.
    pub secret_file: Option<String>,
    /// Reported tags.
    pub tags: BTreeMap<String, String>,
    /// The agent's data folder (default `./orb-agent/<id>`, `./orb-agent/default` without an id).
    pub data: Option<String>,
    /// CA certificate for `tls://` and `wss://` servers (default: the system's trust store).
    pub ca_cert: Option<String>,
    /// Client certificate (mTLS): it authenticates this device.
    pub cert: Option<String>,
    /// The client certificate's private key.
    pub key: Option<String>,
    /// First reconnect delay.
    pub backoff_min: String,
    /// Longest reconnect delay.
    pub backoff_max: String,
    /// Stop trying after this long without a connection (never when absent).
    pub give_up_after: Option<String>,
    /// Time running commands get to finish on SIGTERM.
    pub grace: String,
    /// Journal entries (held commands run) older than this are forgotten.
    pub journal_max_age: String,
    /// Journal entries kept at most.
    pub journal_max_entries: u64,
    /// Messages the outbox holds at most.
    pub outbox_max_messages: u64,
    /// Bytes the outbox holds at most.
    pub outbox_max_bytes: u64,
    /// Last will: the topic the server publishes on when the agent's connection ends without a
    /// goodbye (`{id}` is the device id); none when absent.
    pub will_topic: Option<String>,
    /// The will's body: JSON, a bare word taken as a JSON string (default
    /// `{"id": ID, "status": "lost"}`). A number or boolean from the environment is taken as JSON.
    #[serde(deserialize_with = "json_text")]
    pub will_body: Option<String>,
    /// Also keep the will as the topic's retained message (cleared by the agent each time it
    /// connects); the server's `acl.agent_retain` must allow it.
    pub will_retain: bool,
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
            ca_cert: None,
            cert: None,
            key: None,
            backoff_min: "250ms".into(),
            backoff_max: "30s".into(),
            give_up_after: None,
            grace: "10s".into(),
            journal_max_age: "8d".into(),
            journal_max_entries: JournalLimits::default().max_entries,
            outbox_max_messages: OutboxLimits::default().max_messages,
            outbox_max_bytes: OutboxLimits::default().max_bytes,
            will_topic: None,
            will_body: None,
            will_retain: false,
        }
    }
}

/// `[telemetry]`: the system metrics `orb agent` publishes on `telemetry.<id>.sys`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetrySection {
    /// How often: a duration (at least 100ms), or `0` / `off` for never (the number 0 too, as
    /// `ORB_TELEMETRY__INTERVAL=0` gives it).
    #[serde(deserialize_with = "text_or_zero")]
    pub interval: String,
    /// Which parts of the metrics are published: `cpu`, `load`, `memory`, `swap`, `disks`,
    /// `network` (default all); hostname, OS and uptimes always are.
    pub metrics: Vec<String>,
}

/// JSON text: a string as written, or a number or boolean (as `ORB_AGENT__WILL_BODY=30` gives
/// it) as its JSON form.
fn json_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Integer(i64),
        Float(f64),
        Bool(bool),
    }
    Ok(Option::<Raw>::deserialize(d)?.map(|raw| match raw {
        Raw::Text(s) => s,
        Raw::Integer(n) => n.to_string(),
        Raw::Float(x) => serde_json::Number::from_f64(x).map_or_else(|| "null".to_owned(), |n| n.to_string()),
        Raw::Bool(b) => b.to_string(),
    }))
}

/// A string, or the number 0 read as `"0"`.
fn text_or_zero<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Number(i64),
    }
    match Raw::deserialize(d)? {
        Raw::Text(s) => Ok(s),
        Raw::Number(0) => Ok("0".to_owned()),
        Raw::Number(n) => Err(serde::de::Error::custom(format!(
            "{n} is not a duration like \"60s\"; 0 or \"off\" turns telemetry off"
        ))),
    }
}

impl Default for TelemetrySection {
    fn default() -> Self {
        TelemetrySection {
            interval: "60s".into(),
            metrics: orb_proto::agent_config::TELEMETRY_METRICS.iter().map(|m| (*m).to_owned()).collect(),
        }
    }
}

/// `[client]`: where client commands (`send`, `devices`, `jobs`, `signal`) connect when no flag,
/// environment variable or context says. Never a token: only the file holding it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClientSection {
    /// Server URL.
    pub server: Option<String>,
    /// File holding the admin token.
    pub token_file: Option<String>,
    /// The context to use when neither `--context`, `ORB_CONTEXT` nor `orb context use` names one.
    pub context: Option<String>,
}

impl ClientSection {
    /// What is wrong with the section's values: the key and a message naming it, for each.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        if let Some(u) = &self.server
            && let Err(e) = orb_client::ServerUrl::parse(u)
        {
            p.push(("server", format!("'client.server': {e}")));
        }
        if self.token_file.as_deref().is_some_and(str::is_empty) {
            p.push(("token_file", "'client.token_file' must not be empty".into()));
        }
        if let Some(c) = &self.context
            && let Err(e) = crate::context::store::check_name(c)
        {
            p.push(("context", format!("'client.context': {e}")));
        }
        p
    }
}

/// `[exec]`: the agent's `exec` built-in, off while `allow` is empty (checked by
/// [`crate::exec::Policy::load`]).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExecSection {
    /// Allowed argv patterns (`"uname -s"`, `"echo *"`).
    pub allow: Vec<String>,
    /// The user commands run as (the agent's own when absent).
    pub run_as: Option<String>,
    /// Bytes kept of each of stdout and stderr.
    pub max_output: u64,
    /// Add the `exec_allow` patterns the server pushes (`[[fleet.agents]]`) to `allow`; `exec` is
    /// declared then even while `allow` is empty.
    pub accept_server_additions: bool,
}

impl Default for ExecSection {
    fn default() -> Self {
        ExecSection { allow: Vec::new(), run_as: None, max_output: 65536, accept_server_additions: false }
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
    /// `[scheduler]`.
    pub scheduler: SchedulerSection,
    /// `[store]`.
    pub store: StoreSection,
    /// `[log]`.
    pub log: LogSection,
    /// `[agent]`.
    pub agent: AgentSection,
    /// `[telemetry]`.
    pub telemetry: TelemetrySection,
    /// `[client]`.
    pub client: ClientSection,
    /// `[exec]`: the agent's `exec` built-in.
    pub exec: ExecSection,
    /// `[acl]`: what agents may do beyond answering.
    pub acl: AclSection,
    /// `[http]`: options of the HTTP port.
    pub http: HttpSection,
    /// `[tls]`: the server's certificate, key and client CA.
    pub tls: TlsSection,
    /// `[groups]`: NAME = "selector".
    pub groups: BTreeMap<String, String>,
    /// `[fleet]`: settings the server pushes to agents (`[[fleet.agents]]`).
    pub fleet: FleetSection,
}

/// Sections whose keys are free-form (any key allowed): the groups, and in the agent-only build
/// the server's sections, which it does not read.
fn free_section(section: &str) -> bool {
    section == "groups" || (!cfg!(feature = "server") && SERVER_SECTIONS.contains(&section))
}

/// Every known key per section, taken from a sample with every optional key set.
fn known_keys() -> BTreeMap<String, Vec<String>> {
    let mut sample = FileConfig::default();
    #[cfg(feature = "server")]
    {
        sample.server.node_id = Some(String::new());
        sample.server.admin_token = Some(Secret::default());
        sample.server.admin_token_file = Some(String::new());
        sample.server.agent_token = Some(Secret::default());
        sample.server.agent_token_file = Some(String::new());
    }
    sample.log.file = Some(String::new());
    sample.agent.id = Some(String::new());
    sample.agent.token = Some(Secret::default());
    sample.agent.token_file = Some(String::new());
    sample.agent.secret_file = Some(String::new());
    sample.agent.data = Some(String::new());
    sample.agent.ca_cert = Some(String::new());
    sample.agent.cert = Some(String::new());
    sample.agent.key = Some(String::new());
    sample.agent.give_up_after = Some(String::new());
    sample.agent.will_topic = Some(String::new());
    sample.agent.will_body = Some(String::new());
    sample.exec.run_as = Some(String::new());
    sample.client.server = Some(String::new());
    sample.client.token_file = Some(String::new());
    sample.client.context = Some(String::new());
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
        let free = free_section(section);
        match known.get(section) {
            None if !free && !SERVER_SECTIONS.contains(&section) => {
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

    /// Only `[client]`, for client commands: unknown sections and keys anywhere are problems (as
    /// for every command), but the other sections are neither type-checked nor validated here —
    /// they are the server's and the agent's (validating the server's would read its token
    /// files, which an operator need not be able to read). Returns the section with the origin
    /// (file or variable) of each key set, or every problem found.
    pub fn client(mut self) -> Result<ClientSettings, Vec<String>> {
        let mut table = self.merged.remove("client").and_then(|v| v.as_table().cloned()).unwrap_or_default();
        let origin = |origins: &BTreeMap<(String, String), String>, key: &str| {
            origins.get(&("client".to_owned(), key.to_owned())).map_or_else(|| "default".to_owned(), Clone::clone)
        };
        // Each key on its own, so every wrong type is reported; wrongly typed keys are then left
        // out so the checks of the others still run.
        let mut mistyped = Vec::new();
        for (key, v) in &table {
            let mut one = toml::Table::new();
            one.insert(key.clone(), v.clone());
            if let Err(e) = toml::Value::Table(one).try_into::<ClientSection>() {
                self.problems.push(format!("{}: 'client.{key}': {}", origin(&self.origin, key), e.message().trim()));
                mistyped.push(key.clone());
            }
        }
        for key in &mistyped {
            table.remove(key);
        }
        let section: ClientSection = match toml::Value::Table(table).try_into() {
            Ok(s) => s,
            Err(e) => {
                self.problems.push(e.to_string());
                return Err(self.problems);
            }
        };
        for (key, p) in section.problems() {
            self.problems.push(format!("{}: {p}", origin(&self.origin, key)));
        }
        if !self.problems.is_empty() {
            return Err(self.problems);
        }
        let origins = self.origin.into_iter().filter(|((s, _), _)| s == "client").map(|((_, k), o)| (k, o)).collect();
        Ok(ClientSettings { section, origins })
    }
}

/// The `[client]` section in force, with where each key came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientSettings {
    /// The merged section.
    pub section: ClientSection,
    /// Key → its origin: the file's path or `environment ORB_CLIENT__KEY`.
    pub origins: BTreeMap<String, String>,
}

impl ClientSettings {
    /// Where `key` was set (`""` when it was not).
    pub fn origin(&self, key: &str) -> &str {
        self.origins.get(key).map_or("", String::as_str)
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
pub struct Settings {
    /// The merged file form (for `orb config show`).
    pub file: FileConfig,
    /// The server's configuration.
    #[cfg(feature = "server")]
    pub server: orb_server::ServerConfig,
    /// Agent reconnect and stop settings.
    pub agent: TypedAgent,
    /// The agent's `exec` built-in; `None` (off) while `[exec] allow` is empty.
    pub exec: Option<std::sync::Arc<crate::exec::Policy>>,
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
    /// Bounds of the journal and the outbox in `agent.db`.
    pub durable: DurableLimits,
    /// `[telemetry] interval`: how often the agent publishes its metrics (`None`: never).
    pub telemetry: Option<Duration>,
    /// The last will, checked (`agent.will_topic`, `agent.will_body`).
    pub will: Option<WillSpec>,
}

/// A last will as configured: its topic may name `{id}`, the device id, which the body does
/// too when none is given ([`WillSpec::resolve`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WillSpec {
    /// The topic, `{id}` not yet replaced.
    pub topic: String,
    /// The body as JSON text; `None`: `{"id": ID, "status": "lost"}`.
    pub body: Option<String>,
    /// Kept as the topic's retained message too.
    pub retain: bool,
}

/// Stands in for `{id}` when a will's topic is checked before the id is known.
const ID_PLACEHOLDER: &str = "id";

impl WillSpec {
    /// Checks `agent.will_topic` and `agent.will_body`: a topic (with `{id}` standing for the
    /// device id) outside `$orb.`, a body that is JSON (a bare word a JSON string) within
    /// [`orb_proto::message::MAX_WILL_BODY`], and no body without a topic.
    fn check(topic: Option<&str>, body: Option<&str>, retain: bool) -> Result<Option<WillSpec>, Vec<String>> {
        let mut p = Vec::new();
        let body =
            body.map(|b| crate::input::json_value(Some(b), "'agent.will_body'")).transpose().unwrap_or_else(|e| {
                p.push(e.message);
                None
            });
        if let Some(b) = body.as_ref().filter(|b| b.len() > orb_proto::message::MAX_WILL_BODY) {
            p.push(format!(
                "'agent.will_body' is {} bytes; a will's body has at most {}",
                b.len(),
                orb_proto::message::MAX_WILL_BODY
            ));
        }
        let Some(topic) = topic else {
            if body.is_some() {
                p.push("'agent.will_body' needs 'agent.will_topic' (--will-topic)".to_owned());
            }
            if retain {
                p.push("'agent.will_retain' needs 'agent.will_topic' (--will-topic)".to_owned());
            }
            return if p.is_empty() { Ok(None) } else { Err(p) };
        };
        match orb_proto::topic::Topic::parse(&topic.replace("{id}", ID_PLACEHOLDER)) {
            Ok(t) if t.is_reserved() => {
                p.push(format!("'agent.will_topic' = \"{topic}\": topics starting with $ are the server's own"));
            }
            Ok(_) => {}
            Err(e) => p.push(format!("'agent.will_topic' = \"{topic}\": {}", e.message)),
        }
        if !p.is_empty() {
            return Err(p);
        }
        let body = body.map(|b| String::from_utf8_lossy(&b).into_owned());
        Ok(Some(WillSpec { topic: topic.to_owned(), body, retain }))
    }

    /// The will of device `id`: `{id}` replaced in the topic, the default body filled in.
    ///
    /// # Errors
    /// The id is needed (`{id}` in the topic, or the default body) but not known yet (an agent
    /// enrolling without an id, which the server assigns).
    pub fn resolve(&self, id: Option<&str>) -> Result<orb_proto::message::Will, String> {
        let needs_id = self.topic.contains("{id}") || self.body.is_none();
        let id = match id {
            Some(id) => id,
            None if needs_id => {
                return Err("the last will names the device id, which the server assigns only when the agent \
                            enrolls: give --id, or a --will-topic without {id} and a --will-body"
                    .to_owned());
            }
            None => "",
        };
        let body = self.body.clone().unwrap_or_else(|| serde_json::json!({"id": id, "status": "lost"}).to_string());
        let body = serde_json::value::RawValue::from_string(body).map_err(|e| format!("'agent.will_body': {e}"))?;
        Ok(orb_proto::message::Will {
            topic: self.topic.replace("{id}", id),
            body: Some(orb_proto::message::RawJson(body)),
            retain: self.retain,
        })
    }
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
    let a = &file.agent;
    let agent = TypedAgent {
        backoff_min: dur("agent.backoff_min", &a.backoff_min),
        backoff_max: dur("agent.backoff_max", &a.backoff_max),
        give_up_after: a.give_up_after.as_deref().map(|g| dur("agent.give_up_after", g)),
        grace: dur("agent.grace", &a.grace),
        durable: DurableLimits {
            journal: JournalLimits {
                max_age: dur("agent.journal_max_age", &a.journal_max_age),
                max_entries: a.journal_max_entries,
            },
            outbox: OutboxLimits { max_messages: a.outbox_max_messages, max_bytes: a.outbox_max_bytes },
        },
        telemetry: crate::telemetry::parse_interval(&file.telemetry.interval).unwrap_or_else(|e| {
            p.push(e);
            None
        }),
        will: WillSpec::check(a.will_topic.as_deref(), a.will_body.as_deref(), a.will_retain).unwrap_or_else(
            |problems| {
                p.extend(problems);
                None
            },
        ),
    };
    p.extend(
        orb_proto::agent_config::metrics_problems(&file.telemetry.metrics)
            .into_iter()
            .map(|m| format!("'telemetry.metrics': {m}")),
    );
    for (name, v) in [
        ("agent.journal_max_entries", a.journal_max_entries),
        ("agent.outbox_max_messages", a.outbox_max_messages),
        ("agent.outbox_max_bytes", a.outbox_max_bytes),
    ] {
        if v == 0 {
            p.push(format!("'{name}' must be above zero"));
        }
    }
    if agent.backoff_max < agent.backoff_min {
        p.push("'agent.backoff_max' must not be shorter than 'agent.backoff_min'".into());
    }
    if a.token.is_some() && a.token_file.is_some() {
        p.push("give 'agent.token' or 'agent.token_file', not both".into());
    }
    if tracing_subscriber::EnvFilter::try_new(&file.log.level).is_err() {
        p.push(format!("'log.level' = \"{}\" is not a log filter like info or orb_server=debug", file.log.level));
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
    p.extend(file.client.problems().into_iter().map(|(_, m)| m));
    let exec = crate::exec::Policy::load(&file.exec).unwrap_or_else(|problems| {
        p.extend(problems);
        None
    });
    #[cfg(feature = "server")]
    let server = orb_server::config::file::ServerFile {
        server: file.server.clone(),
        limits: file.limits.clone(),
        shutdown: file.shutdown.clone(),
        scheduler: file.scheduler.clone(),
        store: file.store.clone(),
        acl: file.acl.clone(),
        http: file.http.clone(),
        tls: file.tls.clone(),
        groups: file.groups.clone(),
        fleet: file.fleet.clone(),
    }
    .validate()
    .map_err(|problems| p.extend(problems));
    #[cfg(feature = "server")]
    let Ok(server) = server else { return Err(p) };
    if !p.is_empty() {
        return Err(p);
    }
    Ok(Settings {
        file,
        #[cfg(feature = "server")]
        server,
        agent,
        exec: exec.map(std::sync::Arc::new),
    })
}

impl Settings {
    /// The store for people to read: its URL with any password redacted, or the default.
    #[cfg(feature = "server")]
    pub fn store_display(&self) -> String {
        self.server.store.url.as_deref().map_or_else(|| "sqlite (DATA/orb.db)".to_owned(), orb_store::redact_url)
    }

    /// The merged configuration as TOML; secrets print as `<redacted>` (their serialized form).
    /// The agent-only build shows only the sections it reads.
    pub fn redacted_toml(&self) -> String {
        let mut table = toml::Table::try_from(&self.file).unwrap_or_default();
        if cfg!(feature = "server") {
            return toml::to_string(&table).unwrap_or_default();
        }
        table.retain(|section, _| !SERVER_SECTIONS.contains(&section));
        format!(
            "# This agent-only build does not read the server's sections ({}).\n{}",
            SERVER_SECTIONS.join(", "),
            toml::to_string(&table).unwrap_or_default()
        )
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

/// The user's configuration folder, home of the client's `config.toml` and of contexts:
/// `$XDG_CONFIG_HOME/orb` when that variable holds an absolute path (the XDG rule), else
/// `$HOME/.config/orb`; `None` when neither is set.
pub fn user_dir_from(xdg_config_home: Option<&std::ffi::OsStr>, home: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    if let Some(x) = xdg_config_home.map(Path::new).filter(|p| p.is_absolute()) {
        return Some(x.join("orb"));
    }
    home.filter(|h| !h.is_empty()).map(|h| Path::new(h).join(".config").join("orb"))
}

/// [`user_dir_from`] the process environment.
pub fn user_dir() -> Option<PathBuf> {
    user_dir_from(std::env::var_os("XDG_CONFIG_HOME").as_deref(), std::env::var_os("HOME").as_deref())
}

/// The configuration file of client commands: `--config`, else `$ORB_CONFIG`, else
/// `USER_DIR/config.toml` when it exists, else `/etc/orb/orb.toml` when this user may read it (on
/// a server's host it is often readable by root only, and an operator's `orb send` must not
/// fail on it).
pub fn client_config_path(
    flag: Option<&Path>,
    orb_config: Option<&std::ffi::OsStr>,
    user_dir: Option<&Path>,
    system: &Path,
) -> Option<PathBuf> {
    if let Some(p) = flag {
        return Some(p.to_path_buf());
    }
    if let Some(p) = orb_config.filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(p));
    }
    let user = user_dir.map(|d| d.join(USER_CONFIG)).filter(|p| p.exists());
    user.or_else(|| std::fs::File::open(system).is_ok().then(|| system.to_path_buf()))
}

/// The `[client]` settings of client commands: defaults, the file [`client_config_path`] finds
/// (if any), then `ORB_CLIENT__*` (and every other `ORB_<SECTION>__<KEY>`, checked for unknown keys).
///
/// # Errors
/// Every problem found.
pub fn client_settings(flag: Option<&Path>) -> Result<ClientSettings, Vec<String>> {
    let path = client_config_path(
        flag,
        std::env::var_os("ORB_CONFIG").as_deref(),
        user_dir().as_deref(),
        Path::new(SYSTEM_CONFIG),
    );
    layered(path.as_deref()).client()
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
    fn the_telemetry_interval_is_a_duration_or_off_from_the_file_and_the_environment() {
        let interval = |text: &str, env: &[(&str, &str)]| {
            let mut l = Layers::defaults();
            l.text(text, "orb.toml");
            l.env(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
            l.finish().map(|s| s.agent.telemetry)
        };
        assert_eq!(interval("", &[]).unwrap(), Some(Duration::from_secs(60)), "the default");
        assert_eq!(interval("[telemetry]\ninterval = \"200ms\"\n", &[]).unwrap(), Some(Duration::from_millis(200)));
        assert_eq!(interval("[telemetry]\ninterval = \"off\"\n", &[]).unwrap(), None);
        assert_eq!(interval("[telemetry]\ninterval = 0\n", &[]).unwrap(), None);
        assert_eq!(interval("", &[("ORB_TELEMETRY__INTERVAL", "0")]).unwrap(), None);
        assert_eq!(interval("", &[("ORB_TELEMETRY__INTERVAL", "5m")]).unwrap(), Some(Duration::from_secs(300)));
        for bad in ["[telemetry]\ninterval = 5\n", "[telemetry]\ninterval = \"5ms\"\n", "[telemetry]\nevery = \"1s\"\n"]
        {
            let problems = interval(bad, &[]).unwrap_err();
            assert!(problems.iter().any(|p| p.contains("telemetry.")), "{bad}: {problems:?}");
        }
    }

    #[test]
    fn a_last_will_comes_from_the_file_or_the_environment_and_is_checked() {
        let will = |text: &str, env: &[(&str, &str)]| {
            let mut l = Layers::defaults();
            l.text(text, "orb.toml");
            l.env(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
            l.finish().map(|s| s.agent.will)
        };
        assert_eq!(will("", &[]).unwrap(), None, "no will by default");
        let spec = will("[agent]\nwill_topic = \"status.{id}\"\n", &[]).unwrap().unwrap();
        let w = spec.resolve(Some("gw-1")).unwrap();
        assert_eq!(w.topic, "status.gw-1");
        assert!(!w.retain, "not retained unless asked");
        assert_eq!(w.body.unwrap().0.get(), r#"{"id":"gw-1","status":"lost"}"#, "the default body");
        let spec = will("", &[("ORB_AGENT__WILL_TOPIC", "s"), ("ORB_AGENT__WILL_RETAIN", "true")]).unwrap().unwrap();
        assert!(spec.resolve(Some("gw-1")).unwrap().retain);
        assert!(spec.resolve(None).unwrap_err().contains("--id"), "the id is needed and unknown");
        let env = [("ORB_AGENT__WILL_TOPIC", "status.all"), ("ORB_AGENT__WILL_BODY", r#"{"gone": true}"#)];
        let spec = will("", &env).unwrap().unwrap();
        let w = spec.resolve(None).unwrap();
        assert_eq!((w.topic.as_str(), w.body.unwrap().0.get()), ("status.all", r#"{"gone":true}"#));
        let spec = will("", &[("ORB_AGENT__WILL_TOPIC", "s"), ("ORB_AGENT__WILL_BODY", "30")]).unwrap().unwrap();
        assert_eq!(spec.body.as_deref(), Some("30"), "a number from the environment is JSON");
        let spec = will("[agent]\nwill_topic = \"s\"\nwill_body = \"gone\"\n", &[]).unwrap().unwrap();
        assert_eq!(spec.body.as_deref(), Some(r#""gone""#), "a bare word is a JSON string");
        for (bad, says) in [
            ("[agent]\nwill_body = \"1\"\n", "'agent.will_body' needs 'agent.will_topic'"),
            ("[agent]\nwill_retain = true\n", "'agent.will_retain' needs 'agent.will_topic'"),
            ("[agent]\nwill_topic = \"s\"\nwill_body = \"{\"\n", "'agent.will_body' is not valid JSON"),
            ("[agent]\nwill_topic = \"$orb.x\"\n", "'agent.will_topic' = \"$orb.x\""),
            ("[agent]\nwill_topic = \"a..b\"\n", "'agent.will_topic' = \"a..b\""),
            ("[agent]\nwill_topic = \"a.>\"\n", "'agent.will_topic' = \"a.>\""),
        ] {
            let problems = will(bad, &[]).unwrap_err().join("\n");
            assert!(problems.contains(says), "{bad}: {problems}");
        }
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
    #[cfg(feature = "server")]
    fn acl_rules_are_read_and_checked() {
        let mut l = Layers::defaults();
        l.text(
            "[acl]\nagent_publish = [\"telemetry.{id}.>\"]\n[[acl.peers]]\nfrom = \"ctl-*\"\nto = \"group:workers\"\ncommands = [\"*\"]\n[groups]\nworkers = \"w-*\"\n",
            "orb.toml",
        );
        let settings = l.finish().unwrap();
        assert_eq!(settings.server.acl.agent_publish, ["telemetry.{id}.>"]);
        assert_eq!(settings.server.acl.peers[0].to, "group:workers");
        let mut l = Layers::defaults();
        l.text("[[acl.peers]]\nfrom = \"ctl-*\"\nto = \"group:nope\"\ncommands = []\n", "orb.toml");
        let all = l.finish().unwrap_err().join("\n");
        assert!(all.contains("acl.peers[0].to") && all.contains("acl.peers[0].commands"), "{all}");
    }

    #[test]
    #[cfg(feature = "server")]
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
        #[cfg(feature = "server")]
        {
            assert_eq!(s.server.limits.outbound_queue, 16);
            assert_eq!(s.server.listen.port(), 9000);
        }
        assert_eq!(s.file.groups["cams"], "cam-*");
    }

    #[cfg(feature = "server")]
    #[test]
    fn tls_keys_come_from_the_file_and_the_environment_and_bad_files_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let ca = orb_io::tls::dev::DevCa::generate("test").unwrap();
        let server = ca.server(&[]).unwrap();
        let (crt, key, ca_crt) = (dir.path().join("s.crt"), dir.path().join("s.key"), dir.path().join("ca.crt"));
        std::fs::write(&crt, &server.cert_pem).unwrap();
        std::fs::write(&key, &server.key_pem).unwrap();
        std::fs::write(&ca_crt, &ca.ca.cert_pem).unwrap();
        let mut l = Layers::defaults();
        l.text(&format!("[tls]\ncert = \"{}\"\nkey = \"{}\"\n", crt.display(), key.display()), "orb.toml");
        l.env([
            ("ORB_TLS__CLIENT_CA".to_owned(), ca_crt.display().to_string()),
            ("ORB_TLS__REQUIRE_CLIENT_CERT".to_owned(), "true".to_owned()),
            // The clients' variables are not configuration keys.
            ("ORB_CA_CERT".to_owned(), "/nowhere".to_owned()),
            ("ORB_CERT".to_owned(), "/nowhere".to_owned()),
            ("ORB_KEY".to_owned(), "/nowhere".to_owned()),
        ]);
        let tls = l.finish().unwrap().server.tls.unwrap();
        assert_eq!((tls.cert, tls.key, tls.client_ca), (crt, key.clone(), Some(ca_crt)));
        assert!(tls.require_client_cert);
        let mut l = Layers::defaults();
        l.env([("ORB_TLS__CERT".to_owned(), "/nowhere/s.crt".to_owned())]);
        l.env([("ORB_TLS__KEY".to_owned(), key.display().to_string())]);
        let all = l.finish().unwrap_err().join("\n");
        assert!(all.contains("'tls': cannot read certificate /nowhere/s.crt"), "{all}");
    }

    #[test]
    #[cfg(feature = "server")]
    fn metrics_public_comes_from_the_http_section_or_the_environment() {
        assert!(!Layers::defaults().finish().unwrap().server.http_options.metrics_public);
        let mut l = Layers::defaults();
        l.text("[http]\nmetrics_public = true\n", "orb.toml");
        assert!(l.finish().unwrap().server.http_options.metrics_public);
        let mut l = Layers::defaults();
        l.env([("ORB_HTTP__METRICS_PUBLIC".to_owned(), "true".to_owned())]);
        assert!(l.finish().unwrap().server.http_options.metrics_public);
        let mut l = Layers::defaults();
        l.text("[http]\nmetrics = true\n", "orb.toml");
        let all = l.finish().unwrap_err().join("\n");
        assert!(all.contains("http.metrics"), "{all}");
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
        l.env([("ORB_STORE__URL".to_owned(), "postgres://orb:p?ss-word@db.example:5432/orb".to_owned())]);
        let settings = l.finish().unwrap();
        let shown = settings.redacted_toml();
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(!shown.contains("p?ss-word"), "{shown}");
        #[cfg(feature = "server")]
        {
            assert!(shown.contains("postgres://orb:<redacted>@db.example:5432/orb"), "{shown}");
            assert_eq!(settings.server.store.url.as_deref(), Some("postgres://orb:p?ss-word@db.example:5432/orb"));
            assert_eq!(settings.server.admin_token.as_ref().map(|t| t.expose()), Some("hunter2-hunter2"));
        }
        assert_eq!(settings.file.agent.token.as_ref().map(|t| t.expose()), Some("s3cret-s3cret"));
    }

    #[test]
    #[cfg(feature = "server")]
    fn the_store_defaults_to_sqlite_in_the_data_folder_and_a_bad_url_is_a_problem() {
        let s = Layers::defaults().finish().unwrap();
        assert_eq!(s.file.store.url, "");
        assert_eq!(s.server.store.url, None);
        assert_eq!(s.server.store.job_retention, Duration::from_secs(30 * 86_400));
        assert_eq!(s.server.store.job_retention_count, 100_000);
        let mut l = Layers::defaults();
        l.text("[store]\njob_retention = \"12h\"\njob_retention_count = 0\n", "orb.toml");
        l.set("store", "url", toml::Value::String("mysql://x".into()), "command line");
        let all = l.finish().unwrap_err().join("\n");
        assert!(all.contains("store.job_retention_count"), "{all}");
        assert!(all.contains("'store.url'") && all.contains("mysql://x"), "{all}");
    }

    #[test]
    fn client_commands_find_their_file_at_the_flag_orb_config_the_user_folder_then_the_system() {
        let root = tempfile::tempdir().unwrap();
        let user = root.path().join("user");
        let system = root.path().join("orb.toml");
        let flag = Path::new("/flag.toml");
        let env = std::ffi::OsStr::new("/env.toml");
        let find = |f, e, u: Option<&Path>| client_config_path(f, e, u, &system);
        assert_eq!(find(Some(flag), Some(env), Some(&user)), Some(flag.to_path_buf()));
        assert_eq!(find(None, Some(env), Some(&user)), Some(PathBuf::from(env)));
        // The last two only when they exist; an empty ORB_CONFIG is unset.
        assert_eq!(find(None, Some(std::ffi::OsStr::new("")), Some(&user)), None);
        std::fs::write(&system, "").unwrap();
        assert_eq!(find(None, None, Some(&user)), Some(system.clone()));
        std::fs::create_dir_all(&user).unwrap();
        std::fs::write(user.join(USER_CONFIG), "").unwrap();
        assert_eq!(find(None, None, Some(&user)), Some(user.join(USER_CONFIG)));
        assert_eq!(find(None, None, None), Some(system));
    }

    #[test]
    fn the_user_folder_is_xdg_config_home_when_absolute_else_home_dot_config() {
        let os = |s: &'static str| Some(std::ffi::OsStr::new(s));
        assert_eq!(user_dir_from(os("/x"), os("/home/me")), Some(PathBuf::from("/x/orb")));
        assert_eq!(user_dir_from(os("relative"), os("/home/me")), Some(PathBuf::from("/home/me/.config/orb")));
        assert_eq!(user_dir_from(os(""), os("/home/me")), Some(PathBuf::from("/home/me/.config/orb")));
        assert_eq!(user_dir_from(None, os("")), None);
        assert_eq!(user_dir_from(None, None), None);
    }

    #[test]
    fn the_client_section_is_read_with_origins_and_other_sections_are_not_validated() {
        let mut l = Layers::defaults();
        // A server section a client must not validate (its token file is unreadable here).
        l.text(
            "[server]\nadmin_token_file = \"/nonexistent/admin.token\"\n[client]\nserver = \"tcp://h:1\"\n",
            "orb.toml",
        );
        l.env([("ORB_CLIENT__TOKEN_FILE".to_owned(), "/t".to_owned())]);
        let c = l.client().unwrap();
        assert_eq!(c.section.server.as_deref(), Some("tcp://h:1"));
        assert_eq!(c.section.token_file.as_deref(), Some("/t"));
        assert_eq!(c.origin("server"), "orb.toml");
        assert_eq!(c.origin("token_file"), "environment ORB_CLIENT__TOKEN_FILE");
        assert_eq!(c.origin("context"), "");

        let mut l = Layers::defaults();
        l.text("[client]\nserver = 5\ncontext = \"../x\"\ntoken = \"t\"\n[clinet]\na = 1\n", "orb.toml");
        let all = l.client().unwrap_err().join("\n");
        assert!(all.contains("orb.toml: 'client.server'"), "{all}");
        assert!(all.contains("orb.toml: 'client.context'"), "{all}");
        assert!(all.contains("unknown key 'client.token'"), "{all}");
        assert!(all.contains("unknown section [clinet]"), "{all}");
        // `orb config check` reports the same values.
        let mut l = Layers::defaults();
        l.text("[client]\nserver = \"http://x\"\ncontext = \"a b\"\n", "orb.toml");
        let all = l.finish().unwrap_err().join("\n");
        assert!(all.contains("'client.server'") && all.contains("'client.context'"), "{all}");
    }
}

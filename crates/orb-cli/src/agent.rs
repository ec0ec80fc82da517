//! `orb agent`: merge the `[agent]` configuration with flags, lock the agent's data folder,
//! connect with its saved credential (or enroll with the agent token and save the one the server
//! issues), keep a permanent connection (backup servers, backoff with jitter) and answer the
//! built-in commands (`ping`, `echo`, `sys.info`, `sleep`, and `exec` when `[exec] allow` lists
//! commands) and publish its system metrics (`crate::telemetry`, `[telemetry] interval`).
//! SIGTERM/SIGINT let running commands finish (up to the grace period), send their results, and
//! exit 0.

use std::fs::File;
use std::path::{Path, PathBuf};

use orb_client::durable::AgentStore;
use orb_client::{Backoff, ClientConfig, Context, Handlers, LinkEvent, Persistent, ServerUrl};
use orb_proto::{DeviceId, ErrorBody, ErrorCode};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

use crate::cli::AgentArgs;
use crate::config::{self, Settings};
use crate::connect::{self, TokenKind};
use crate::credentials::{self, Credentials};
use crate::exit::{self, Failure};
use crate::logging;
use crate::pushed::{self, Applier};
use crate::sysmetrics::SysMetrics;
use crate::telemetry;

/// The agent software name sent in hello.
pub const AGENT_NAME: &str = concat!("orb-agent/", env!("CARGO_PKG_VERSION"));

/// The built-in command handlers every `orb agent` has; `sys.info` answers from `metrics`.
/// `sleep` declares the JSON Schema of the shapes it takes ([`sleep_schema`]).
pub fn builtin_handlers(metrics: SysMetrics) -> Handlers {
    let handlers = Handlers::new()
        .on("ping", |_c: Context| async { Ok(serde_json::json!({"pong": true})) })
        .on("echo", |c: Context| async move {
            serde_json::from_slice::<serde_json::Value>(&c.args)
                .map_err(|e| ErrorBody::new(ErrorCode::BadArgs, format!("echo: {e}")))
        })
        .on("sys.info", move |_c: Context| {
            let metrics = metrics.clone();
            async move { Ok(metrics.sample().await) }
        });
    handlers
        .on_with_schema("sleep", sleep_schema(), |c: Context| async move {
            let wait = sleep_args(&c)?;
            tokio::select! {
                () = tokio::time::sleep(wait) => Ok(serde_json::json!({"slept_ms": wait.as_millis() as u64})),
                () = c.cancel.cancelled() => Err(ErrorBody::new(ErrorCode::Cancelled, "sleep: the job was cancelled")),
            }
        })
        .expect("the sleep schema is valid (a unit test compiles it)")
}

/// The shapes `sleep` takes: whole milliseconds up to 24 hours, bare or as `{"ms": N}`, or a
/// duration string. Whether the string parses (and is at most 24 hours) is the handler's check
/// (`bad_args`): a schema cannot say it.
fn sleep_schema() -> serde_json::Value {
    let max = MAX_SLEEP.as_millis() as u64;
    serde_json::json!({
        "description": "milliseconds (1500 or {\"ms\": 1500}) or a duration string (\"2s\", \"1m 30s\"), at most 24h",
        "anyOf": [
            {"type": "integer", "minimum": 0, "maximum": max},
            {"type": "string", "minLength": 1},
            {
                "type": "object",
                "properties": {"ms": {"type": "integer", "minimum": 0, "maximum": max}},
                "required": ["ms"],
                "additionalProperties": false
            }
        ]
    })
}

/// The built-in handlers, `agent.config` (what `settings` applies), and `exec` when the
/// configuration allows commands or accepts the server's additions (so `exec` is declared in
/// hello only then, and the server refuses it to other agents: `unknown_command`).
fn agent_handlers(metrics: SysMetrics, settings: std::sync::Arc<Applier>) -> Handlers {
    let exec = settings.exec();
    let handlers = builtin_handlers(metrics).on(AGENT_CONFIG, move |_c: Context| {
        let settings = std::sync::Arc::clone(&settings);
        async move { Ok(settings.effective()) }
    });
    match exec {
        Some(policy) => handlers
            .on_with_schema("exec", crate::exec::schema(), move |c: Context| {
                let policy = std::sync::Arc::clone(&policy.borrow());
                async move { crate::exec::call(&policy, c).await }
            })
            .expect("the exec schema is valid (a unit test compiles it)"),
        None => handlers,
    }
}

/// The built-in that answers the agent's effective configuration.
pub const AGENT_CONFIG: &str = "agent.config";

/// The longest `sleep` (24h): the server's default `max_deadline`, beyond which no job waits anyway.
const MAX_SLEEP: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// `sleep` takes milliseconds (`1500` or `{"ms": 1500}`) or a duration (`"2s"`), at most
/// [`MAX_SLEEP`]; for trying deadlines, cancels and drains.
fn sleep_args(c: &Context) -> Result<std::time::Duration, ErrorBody> {
    let bad = |m: String| ErrorBody::new(ErrorCode::BadArgs, format!("sleep: {m}"));
    let millis = |n: &serde_json::Number| {
        n.as_u64()
            .map(std::time::Duration::from_millis)
            .ok_or_else(|| bad("milliseconds must be a whole number".into()))
    };
    let wait = match c.args::<serde_json::Value>()? {
        serde_json::Value::Number(n) => millis(&n)?,
        serde_json::Value::String(s) => humantime::parse_duration(&s).map_err(|e| bad(format!("'{s}': {e}")))?,
        serde_json::Value::Object(o) if o.len() == 1 && o.get("ms").is_some_and(serde_json::Value::is_number) => {
            millis(o["ms"].as_number().expect("checked to be a number"))?
        }
        other => {
            let shown = orb_proto::excerpt(&other.to_string()).to_string();
            return Err(bad(format!(
                "expected milliseconds (1500 or {{\"ms\": 1500}}) or a duration like \"2s\", got {shown}"
            )));
        }
    };
    if wait > MAX_SLEEP {
        return Err(bad(format!("at most 24h ({} s asked)", wait.as_secs())));
    }
    Ok(wait)
}

/// Takes the exclusive lock on `dir/agent.lock`, so two agents never share one data folder.
fn lock_data_dir(dir: &Path) -> Result<File, Failure> {
    crate::private_file::create_dir(dir)
        .map_err(|e| Failure::new(exit::CONFIG, format!("cannot create agent data folder {}: {e}", dir.display())))?;
    let path = dir.join("agent.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Failure::new(exit::CONFIG, format!("cannot open {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => {
            Err(Failure::new(exit::TEMPFAIL, format!("another agent is running with data folder {}", dir.display())))
        }
        Err(std::fs::TryLockError::Error(e)) => {
            Err(Failure::new(exit::CONFIG, format!("cannot lock {}: {e}", path.display())))
        }
    }
}

/// Loads the configuration layers and applies the flags.
fn load(args: &AgentArgs, config_flag: Option<&Path>) -> Result<Settings, Failure> {
    let mut layers = config::layered(config::config_path(config_flag).as_deref());
    let flag = "command line";
    let s = |v: &str| toml::Value::String(v.to_owned());
    if !args.server.is_empty() {
        let list = args.server.iter().map(|u| s(u.trim())).collect();
        layers.set("agent", "server", toml::Value::Array(list), flag);
    }
    if let Some(v) = &args.token {
        layers.set("agent", "token", s(v), flag);
    }
    if let Some(v) = &args.token_file {
        layers.set("agent", "token_file", s(&v.display().to_string()), flag);
    }
    if let Some(v) = &args.secret_file {
        layers.set("agent", "secret_file", s(&v.display().to_string()), flag);
    }
    if let Some(v) = &args.id {
        layers.set("agent", "id", s(v), flag);
    }
    if !args.tags.is_empty() {
        let tags = crate::input::pairs(&args.tags, "tag")?;
        let table = tags.into_iter().map(|(k, v)| (k, toml::Value::String(v))).collect();
        layers.set("agent", "tags", toml::Value::Table(table), flag);
    }
    if let Some(v) = &args.data {
        layers.set("agent", "data", s(&v.display().to_string()), flag);
    }
    if let Some(v) = args.give_up_after {
        layers.set("agent", "give_up_after", s(&humantime::format_duration(v).to_string()), flag);
    }
    if let Some(v) = &args.log_file {
        layers.set("log", "file", s(&v.display().to_string()), flag);
    }
    for (key, v) in [("ca_cert", &args.ca_cert), ("cert", &args.cert), ("key", &args.key)] {
        if let Some(v) = v {
            layers.set("agent", key, s(&v.display().to_string()), flag);
        }
    }
    for (key, v) in [("will_topic", &args.will_topic), ("will_body", &args.will_body)] {
        if let Some(v) = v {
            layers.set("agent", key, s(v), flag);
        }
    }
    if args.will_retain {
        layers.set("agent", "will_retain", toml::Value::Boolean(true), flag);
    }
    layers.finish().map_err(|p| Failure::new(exit::CONFIG, format!("invalid configuration:\n  {}", p.join("\n  "))))
}

/// Who the agent connects as: a device credential (saved, or from `secret_file`), or the agent
/// token asking to enroll (with the configured id, or none for the server to assign).
struct Identity {
    id: Option<String>,
    secret: Option<String>,
    token: Option<String>,
}

/// Chooses the identity: `credentials.json` in `data` first, then `secret_file`, else enrollment
/// with the agent token.
fn identity(settings: &Settings, urls: &[ServerUrl], data: &Path, id: Option<&DeviceId>) -> Result<Identity, Failure> {
    let a = &settings.file.agent;
    let config = |m: String| Failure::new(exit::CONFIG, m);
    if let Some(saved) = credentials::load(data).map_err(config)? {
        if let Some(id) = id
            && id.as_str() != saved.id
        {
            return Err(config(format!(
                "--id {id} differs from the id {} saved in {}: use the data folder of {id}, or leave out --id",
                saved.id,
                credentials::path(data).display()
            )));
        }
        return Ok(Identity { id: Some(saved.id), secret: Some(saved.secret), token: None });
    }
    if let Some(f) = &a.secret_file {
        let Some(id) = id else {
            return Err(Failure::usage("--secret-file needs --id (the id it was issued for)"));
        };
        let secret = std::fs::read_to_string(f)
            .map_err(|e| config(format!("cannot read secret file {f}: {e}")))?
            .trim()
            .to_owned();
        if secret.is_empty() {
            return Err(config(format!("secret file {f} is empty")));
        }
        return Ok(Identity { id: Some(id.to_string()), secret: Some(secret), token: None });
    }
    let token = match (&a.token, &a.token_file) {
        (Some(t), _) => Some(t.expose().to_owned()),
        (None, Some(f)) => Some(
            std::fs::read_to_string(f)
                .map_err(|e| config(format!("cannot read token file {f}: {e}")))?
                .trim()
                .to_owned(),
        ),
        (None, None) => connect::local_token(&urls[0], TokenKind::Agent)?,
    };
    Ok(Identity { id: id.map(ToString::to_string), secret: None, token })
}

/// The message for a refusal that retrying cannot fix (or the last error after giving up), with
/// what to do about it. Refusals of this device's credential exit 77 (denied).
fn refusal(e: orb_client::ClientError, id: Option<&str>, data: &Path, with_secret: bool) -> Failure {
    let id = id.unwrap_or("ID");
    let hint = match e.code() {
        Some(ErrorCode::IdTaken) => format!(
            "; this data folder ({}) has no credential for {id}; use the folder it enrolled with, \
             or `orb devices rm {id}` to re-enroll",
            data.display()
        ),
        Some(ErrorCode::Revoked) => format!(
            "; an operator revoked device {id}: to enroll it again, run `orb devices rm {id}` and delete {}",
            credentials::path(data).display()
        ),
        Some(ErrorCode::DeviceNotFound) => format!(
            "; the server does not know device {id} (removed, or its store was reset): delete {} to enroll again",
            credentials::path(data).display()
        ),
        Some(ErrorCode::AuthFailed) if with_secret => format!("; {}", secret_refused_hint(data)),
        Some(ErrorCode::IdMismatch) => {
            "; a client certificate names its device: run the agent with that --id, or without --id".to_owned()
        }
        _ => String::new(),
    };
    let denied = matches!(
        e.code(),
        Some(ErrorCode::IdTaken | ErrorCode::Revoked | ErrorCode::DeviceNotFound | ErrorCode::IdMismatch)
    );
    let mut f = Failure::from(e);
    if denied {
        f.code = exit::DENIED;
    }
    f.message.push_str(&hint);
    f
}

/// What to do when a server answers this device's secret with `auth_failed` (which it also does
/// for an unknown or revoked id, without saying which).
fn secret_refused_hint(data: &Path) -> String {
    format!(
        "the server refused this device's secret: if the device was removed or revoked, delete {} and enroll again",
        credentials::path(data).display()
    )
}

/// A retained will says the device vanished: each time the agent is connected (again), it clears
/// it (a retained `null`, which subscribers also get live), so a later subscriber does not take a
/// device that is back for lost.
async fn clear_retained_will(
    mut current: tokio::sync::watch::Receiver<Option<orb_client::Client>>,
    topic: String,
    stop: CancellationToken,
) {
    loop {
        let client = current.borrow_and_update().clone();
        if let Some(client) = client {
            let null = bytes::Bytes::from_static(b"null");
            match client.publish_retained(&topic, null, std::time::Duration::from_secs(15)).await {
                Ok(_) => tracing::debug!(topic, "the retained last will cleared"),
                Err(e) => tracing::warn!(topic, "the retained last will was not cleared: {e}"),
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            changed = current.changed() => if changed.is_err() { return },
        }
    }
}

/// Cancels `stop` on SIGTERM or SIGINT.
fn cancel_on_signals(stop: &CancellationToken) -> Result<(), Failure> {
    let mut term = signal(SignalKind::terminate()).map_err(|e| Failure::new(exit::SOFTWARE, e.to_string()))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| Failure::new(exit::SOFTWARE, e.to_string()))?;
    let stopper = stop.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        stopper.cancel();
    });
    Ok(())
}

/// `--standalone`: telemetry as JSON lines until SIGINT/SIGTERM (exit 0), under the id given,
/// the one saved in `data`, or the host name.
async fn standalone(args: &AgentArgs, id: Option<&DeviceId>, data: &Path, applier: &Applier) -> Result<u8, Failure> {
    let plan = applier.telemetry();
    if plan.borrow().every.is_none() {
        return Err(Failure::new(
            exit::CONFIG,
            "telemetry is off ([telemetry] interval = 0): --standalone would have nothing to do",
        ));
    }
    let saved = credentials::load(data).ok().flatten().map(|c| c.id);
    let host = || {
        let name = sysinfo::System::host_name().ok()?;
        DeviceId::new(name.split('.').next()?).ok().map(|d| d.to_string())
    };
    let id = id.map(ToString::to_string).or(saved).or_else(host).unwrap_or_else(|| "standalone".to_owned());
    let sink = crate::standalone::Sink::open(args.telemetry_file.as_deref()).map_err(|e| {
        let file = args.telemetry_file.as_deref().unwrap_or(Path::new("-")).display().to_string();
        Failure::new(exit::CONFIG, format!("cannot open --telemetry-file {file}: {e}"))
    })?;
    let stop = CancellationToken::new();
    cancel_on_signals(&stop)?;
    tracing::info!(id, "standalone: writing telemetry without a server");
    crate::standalone::run(&id, SysMetrics::open(), plan, sink, stop)
        .await
        .map_err(|e| Failure::new(exit::SOFTWARE, format!("cannot write telemetry: {e}")))?;
    tracing::info!("agent stopped");
    Ok(exit::OK)
}

/// Runs the agent until SIGINT/SIGTERM (exit 0) or until it gives up (exit 69).
pub async fn run(args: AgentArgs, config_flag: Option<&Path>, verbose: u8) -> Result<u8, Failure> {
    let settings = load(&args, config_flag)?;
    let env_log = std::env::var("ORB_LOG").ok();
    let log_pinned_by = match (&env_log, verbose) {
        (Some(_), _) => Some("ORB_LOG"),
        (None, 0) => None,
        (None, _) => Some("-v"),
    };
    let directive = env_log.unwrap_or_else(|| match verbose {
        0 => settings.file.log.level.clone(),
        1 => "debug".into(),
        _ => "trace".into(),
    });
    let log = logging::init(&directive, settings.file.log.file.as_deref().map(Path::new))
        .map_err(|e| Failure::new(exit::CONFIG, e))?;
    let a = &settings.file.agent;
    let id = a.id.as_deref().map(DeviceId::new).transpose().map_err(|e| Failure::usage(e.to_string()))?;
    let urls: Vec<ServerUrl> = a
        .server
        .iter()
        .map(|u| ServerUrl::parse(u))
        .collect::<Result<_, _>>()
        .map_err(|e| Failure::usage(e.to_string()))?;
    let data = a.data.as_ref().map_or_else(
        || PathBuf::from("orb-agent").join(id.as_ref().map_or("default", DeviceId::as_str)),
        PathBuf::from,
    );
    // The agent's own settings, then what the server pushed last time, then what it pushes now.
    let local = pushed::Local {
        telemetry: telemetry::Plan {
            every: settings.agent.telemetry,
            metrics: settings.file.telemetry.metrics.as_slice().into(),
        },
        log_level: if log_pinned_by.is_some() { directive } else { settings.file.log.level.clone() },
        log_pinned_by,
        exec_allow: settings.file.exec.allow.clone(),
        exec: settings.exec.clone(),
    };
    let applier = std::sync::Arc::new(Applier::new(local, data.clone(), log));
    applier.load_saved();
    if args.standalone {
        return standalone(&args, id.as_ref(), &data, &applier).await;
    }
    let _lock = lock_data_dir(&data)?;
    let who = identity(&settings, &urls, &data, id.as_ref())?;
    let enroll = who.secret.is_none();
    // Updated when the server issues a credential: from then on the agent connects with it.
    let mut shown_id = who.id.clone();
    let mut with_secret = !enroll;

    let will = settings.agent.will.as_ref().map(|w| w.resolve(who.id.as_deref()));
    let will = will.transpose().map_err(|m| Failure::new(exit::CONFIG, m))?;
    if let Some(w) = &will {
        tracing::info!(topic = w.topic, "last will: published on {} if this agent vanishes", w.topic);
    }
    // A retained will is cleared each time the agent connects (below).
    let retained_will = will.as_ref().filter(|w| w.retain).map(|w| w.topic.clone());
    let mut base = ClientConfig::agent(urls[0].clone(), who.token, String::new());
    base.will = will;
    base.id = who.id;
    base.secret = who.secret;
    base.enroll = enroll;
    base.tags = a.tags.clone();
    base.agent = AGENT_NAME.to_owned();
    base.tls = orb_client::ClientTls {
        ca_cert: a.ca_cert.as_ref().map(PathBuf::from),
        cert: a.cert.as_ref().map(PathBuf::from),
        key: a.key.as_ref().map(PathBuf::from),
    };
    // The files are read now (a bad one is exit 78), and again at every connect (renewed ones
    // are used on the next reconnect).
    for url in &urls {
        connect::check_tls(url, &base.tls)?;
    }
    let backoff = Backoff {
        min: settings.agent.backoff_min,
        max: settings.agent.backoff_max,
        give_up_after: settings.agent.give_up_after,
    };
    let store_path = data.join("agent.db");
    let store = AgentStore::open(&store_path, settings.agent.durable)
        .await
        .map_err(|e| Failure::new(exit::CONFIG, format!("{e}; the agent keeps its journal and outbox there")))?;
    if let Some(policy) = &settings.exec {
        let additions = if policy.accepts_additions() { ", and the server may add patterns" } else { "" };
        tracing::info!(
            patterns = policy.pattern_count(),
            accepts_additions = policy.accepts_additions(),
            "exec is on: [exec] allow lists {} command patterns{additions}",
            policy.pattern_count()
        );
    }
    let metrics = SysMetrics::open();
    let handlers = agent_handlers(metrics.clone(), std::sync::Arc::clone(&applier));
    let outbox = store.outbox().clone();
    let link = Persistent::new(base, urls, handlers, backoff).durable(store);
    let current = link.current();
    let stop = CancellationToken::new();
    tokio::spawn(pushed::follow(std::sync::Arc::clone(&applier), link.current(), stop.child_token()));
    tokio::spawn(telemetry::run(metrics, link.current(), applier.telemetry(), Some(outbox), stop.child_token()));
    if let Some(topic) = retained_will {
        tokio::spawn(clear_retained_will(link.current(), topic, stop.child_token()));
    }
    cancel_on_signals(&stop)?;

    // Set when an issued credential could not be saved: the agent stops (it could not connect
    // again as this device).
    let mut unsaved: Option<Failure> = None;
    let outcome = link
        .run(&stop, |event| match event {
            LinkEvent::Enrolled { url, id, secret } => {
                shown_id = Some(id.clone());
                with_secret = true;
                let c = Credentials {
                    id: id.clone(),
                    secret,
                    server: Some(url),
                    enrolled_at: Some(chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                };
                match credentials::save(&data, &c) {
                    Ok(()) => tracing::info!(id, file = %credentials::path(&data).display(), "enrolled as {id}"),
                    Err(e) => {
                        let message = format!(
                            "enrolled as {id} but cannot save the credential to {}: {e}; the agent stops. \
                             Fix the folder, then run `orb devices rm {id}` and start the agent again",
                            credentials::path(&data).display()
                        );
                        tracing::error!("{message}");
                        unsaved = Some(Failure::new(exit::CONFIG, message));
                        stop.cancel();
                    }
                }
            }
            LinkEvent::Connected { url, id, known, first_seen } => {
                if unsaved.is_some() {
                    return;
                }
                if known {
                    let first = first_seen.as_deref().unwrap_or("at an unknown time");
                    tracing::info!(id, first_seen = first, "welcomed back, first seen {first}");
                }
                tracing::info!(server = %url, id, "agent connected");
            }
            LinkEvent::Lost { url, reason } => match reason.as_str() {
                // `run` returns the matching error next; the agent stops.
                "revoked" | "removed" => {
                    tracing::error!(server = %url, reason, "the server ended this device's session")
                }
                _ => tracing::warn!(server = %url, reason, "connection lost; reconnecting"),
            },
            LinkEvent::Failed { url, error, code, retry_in } => {
                let retry_in_ms = retry_in.as_millis() as u64;
                if with_secret && code == Some(ErrorCode::AuthFailed) {
                    let hint = secret_refused_hint(&data);
                    tracing::warn!(server = %url, error, retry_in_ms, "cannot connect: {hint}");
                } else {
                    tracing::warn!(server = %url, error, retry_in_ms, "cannot connect");
                }
            }
        })
        .await;
    if let Err(e) = outcome {
        return Err(refusal(e, shown_id.as_deref(), &data, with_secret));
    }
    let live = current.borrow().clone();
    if let Some(failure) = unsaved {
        if let Some(client) = live {
            client.close().await;
        }
        return Err(failure);
    }
    // Stopping: let running commands finish and send their results.
    if let Some(client) = live {
        let running = client.running_commands();
        if running > 0 {
            tracing::info!(running, grace_ms = settings.agent.grace.as_millis() as u64, "finishing running commands");
        }
        if !client.drain(settings.agent.grace).await {
            tracing::warn!("grace period over; unfinished commands were abandoned");
        }
    }
    tracing::info!("agent stopped");
    Ok(exit::OK)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use orb_client::handler;

    use super::*;

    fn ctx(cmd: &str, args: &str, deadline: Duration) -> Context {
        Context {
            cmd: cmd.into(),
            from: "op-1".into(),
            args: Bytes::copy_from_slice(args.as_bytes()),
            job: Some("job-1".into()),
            deadline,
            cancel: CancellationToken::new(),
            progress: orb_client::handler::Progress::off(),
        }
    }

    async fn call(c: Context) -> Result<serde_json::Value, ErrorBody> {
        handler::run(builtin_handlers(SysMetrics::open()).get(&c.cmd), c).await
    }

    #[test]
    fn sleep_takes_milliseconds_or_a_duration() {
        let wait = |args: &str| sleep_args(&ctx("sleep", args, Duration::from_secs(1)));
        assert_eq!(wait("1500").unwrap(), Duration::from_millis(1500));
        assert_eq!(wait(r#"{"ms": 20}"#).unwrap(), Duration::from_millis(20));
        assert_eq!(wait(r#""2s""#).unwrap(), Duration::from_secs(2));
        assert_eq!(wait(r#""24h""#).unwrap(), MAX_SLEEP);
        for bad in
            ["-1", "1.5", r#""soon""#, "null", "[1]", r#"{"ms": "1"}"#, r#"{"ms": 1, "x": 2}"#, r#""25h""#, "86400001"]
        {
            let e = wait(bad).unwrap_err();
            assert_eq!(e.code, ErrorCode::BadArgs, "{bad}: {e:?}");
            assert!(e.message.starts_with("sleep: "), "{bad}: {}", e.message);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_answers_how_long_it_slept() {
        let v = call(ctx("sleep", "250", Duration::from_secs(10))).await.unwrap();
        assert_eq!(v, serde_json::json!({"slept_ms": 250}));
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_stops_when_the_job_is_cancelled() {
        let c = ctx("sleep", r#""1h""#, Duration::from_secs(7200));
        let cancel = c.cancel.clone();
        let running = tokio::spawn(call(c));
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!running.is_finished(), "sleep ended before it was cancelled");
        cancel.cancel();
        let e = running.await.unwrap().unwrap_err();
        assert_eq!(e.code, ErrorCode::Cancelled);
    }

    #[tokio::test(start_paused = true)]
    async fn sleep_past_the_deadline_is_a_timeout() {
        let started = tokio::time::Instant::now();
        let e = call(ctx("sleep", r#""1h""#, Duration::from_secs(5))).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::Timeout);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
    }

    fn applier(exec: &config::ExecSection) -> std::sync::Arc<Applier> {
        let local = pushed::Local {
            telemetry: telemetry::Plan { every: None, metrics: Vec::new().into() },
            log_level: "info".into(),
            log_pinned_by: None,
            exec_allow: exec.allow.clone(),
            exec: crate::exec::Policy::load(exec).unwrap().map(std::sync::Arc::new),
        };
        let data = std::env::temp_dir().join(format!("orb-agent-test-{}", std::process::id()));
        std::sync::Arc::new(Applier::new(local, data, logging::LogHandle::detached()))
    }

    #[test]
    fn exec_is_declared_only_when_commands_are_allowed_or_the_server_may_add_them() {
        let handlers = |exec: config::ExecSection| agent_handlers(SysMetrics::open(), applier(&exec)).names();
        let builtins = ["agent.config", "echo", "ping", "sleep", "sys.info"];
        assert_eq!(handlers(config::ExecSection::default()), builtins);
        let with_exec = ["agent.config", "echo", "exec", "ping", "sleep", "sys.info"];
        let allowed = config::ExecSection { allow: vec!["uname -s".into()], ..config::ExecSection::default() };
        assert_eq!(handlers(allowed), with_exec);
        let accepting = config::ExecSection { accept_server_additions: true, ..config::ExecSection::default() };
        assert_eq!(handlers(accepting), with_exec);
    }

    #[tokio::test]
    async fn ping_echo_and_sys_info_answer_as_documented() {
        let d = Duration::from_secs(5);
        assert_eq!(call(ctx("ping", "null", d)).await.unwrap(), serde_json::json!({"pong": true}));
        let v = serde_json::json!({"hello": ["world", 1, null]});
        assert_eq!(call(ctx("echo", &v.to_string(), d)).await.unwrap(), v);
        let info = call(ctx("sys.info", "null", d)).await.unwrap();
        let mut keys: Vec<&str> = info.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        // The full shape is the collector's test (`sysmetrics`): here, the command answers it.
        for key in ["agent_uptime_s", "agent_version", "arch", "clock", "hostname", "os", "os_version", "uptime_s"] {
            assert!(keys.contains(&key), "{key} missing: {keys:?}");
        }
        for key in ["cpu_percent", "cpus", "load_avg", "memory", "swap", "disks", "network"] {
            assert!(keys.contains(&key), "{key} missing: {keys:?}");
        }
        assert_eq!(info["agent_version"], AGENT_NAME);
        assert_eq!(info["os"], std::env::consts::OS);
    }
}

//! `orb serve`: merge the configuration layers, start the broker, tell systemd it is ready, then
//! react to signals and admin messages until stopped: SIGTERM/SIGINT/`QUIT` drain and exit 0 (a
//! second signal forces the exit), SIGHUP/`RELOAD` reload what can change live (TLS certificates
//! included), SIGHUP and `LOG_ROTATE` reopen the log file.

use std::path::Path;

use orb_server::{AdminMessage, AdminRequest, Server, ServerBuilder, ServerError};
use tokio::signal::unix::{SignalKind, signal};

use crate::cli::ServeArgs;
use crate::config::{self, Layers, Settings};
use crate::exit::{self, Failure};
use crate::logging::{self, LogHandle};

/// Applies the flags of `orb serve` on top of the other layers.
fn apply_flags(layers: &mut Layers, args: &ServeArgs) -> Result<(), Failure> {
    let s = |v: &str| toml::Value::String(v.to_owned());
    let p = |v: &Path| toml::Value::String(v.display().to_string());
    let flag = "command line";
    if let Some(v) = &args.listen {
        layers.set("server", "listen", s(v), flag);
    }
    if let Some(v) = &args.http {
        layers.set("server", "http", s(v), flag);
    }
    if let Some(v) = &args.data {
        layers.set("server", "data", p(v), flag);
    }
    if let Some(v) = &args.store {
        layers.set("store", "url", s(v), flag);
    }
    if let Some(v) = &args.admin_token {
        layers.set("server", "admin_token", s(v), flag);
    }
    if let Some(v) = &args.admin_token_file {
        layers.set("server", "admin_token_file", p(v), flag);
    }
    if let Some(v) = &args.agent_token {
        layers.set("server", "agent_token", s(v), flag);
    }
    if let Some(v) = &args.agent_token_file {
        layers.set("server", "agent_token_file", p(v), flag);
    }
    if args.trace {
        layers.set("server", "trace", toml::Value::Boolean(true), flag);
    }
    if let Some(v) = &args.log_file {
        layers.set("log", "file", p(v), flag);
    }
    if let Some(v) = &args.tls_cert {
        layers.set("tls", "cert", p(v), flag);
    }
    if let Some(v) = &args.tls_key {
        layers.set("tls", "key", p(v), flag);
    }
    if let Some(v) = &args.tls_client_ca {
        layers.set("tls", "client_ca", p(v), flag);
    }
    if args.require_client_cert {
        layers.set("tls", "require_client_cert", toml::Value::Boolean(true), flag);
    }
    for (name, sel) in crate::input::pairs(&args.groups, "group")? {
        layers.set("groups", &name, s(&sel), flag);
    }
    Ok(())
}

/// Loads every layer; all problems are reported together (exit 78).
fn load(config_flag: Option<&Path>, args: &ServeArgs) -> Result<Settings, Failure> {
    let mut layers = config::layered(config::config_path(config_flag).as_deref());
    apply_flags(&mut layers, args)?;
    layers
        .finish()
        .map_err(|problems| Failure::new(exit::CONFIG, format!("invalid configuration:\n  {}", problems.join("\n  "))))
}

fn log_directive(settings: &Settings, verbose: u8) -> String {
    if let Ok(d) = std::env::var("ORB_LOG") {
        return d;
    }
    let base = match verbose {
        0 => settings.file.log.level.clone(),
        1 => "debug".into(),
        _ => "trace".into(),
    };
    if settings.file.server.trace {
        format!(
            "{base},orb_server::session=trace,orb_server::router=trace,orb_server::broker=trace,orb_server::jobs=trace"
        )
    } else {
        base
    }
}

/// Raises the open-file soft limit to the hard limit and logs both.
fn raise_nofile() {
    let before = rlimit::getrlimit(rlimit::Resource::NOFILE).ok();
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(now) => {
            tracing::info!(soft_before = before.map(|b| b.0), soft = now, hard = before.map(|b| b.1), "open-file limit")
        }
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
}

/// Runs the server until it is stopped.
pub async fn run(args: ServeArgs, config_flag: Option<&Path>, verbose: u8) -> Result<u8, Failure> {
    let settings = load(config_flag, &args)?;
    let log = logging::init(&log_directive(&settings, verbose), settings.file.log.file.as_deref().map(Path::new))
        .map_err(|e| Failure::new(exit::CONFIG, e))?;
    raise_nofile();
    let server_config = settings.server.clone();
    // Before the banner and READY=1: a SIGHUP (`systemctl reload`) or SIGTERM sent as soon as the
    // server looks ready must find the handlers, not the default action (which kills the process).
    let signals =
        |k| signal(k).map_err(|e| Failure::new(exit::SOFTWARE, format!("cannot install signal handler: {e}")));
    let (mut term, mut int, mut hup) =
        (signals(SignalKind::terminate())?, signals(SignalKind::interrupt())?, signals(SignalKind::hangup())?);
    let data = server_config.data_dir.clone();
    let mut server = ServerBuilder::new(server_config).start().await.map_err(|e| match e {
        ServerError::Bind { .. } => Failure::new(exit::UNREACHABLE, e.to_string()),
        // The database is down or unreachable: a service problem, not a configuration one.
        ServerError::Store(orb_store::StoreError::Unavailable(_)) => Failure::new(exit::UNREACHABLE, e.to_string()),
        ServerError::DataDirLocked { .. } | ServerError::Store(orb_store::StoreError::Locked { .. }) => {
            Failure::new(exit::TEMPFAIL, e.to_string())
        }
        _ => Failure::new(exit::CONFIG, e.to_string()),
    })?;
    let (tcp, ws) = if server.tls_enabled() { ("tls", "wss") } else { ("tcp", "ws") };
    eprintln!(
        "orb server: agents {tcp}://{}  websocket {ws}://{}/v1/ws  data {}  store {}",
        server.tcp_addr(),
        server.http_addr(),
        data.display(),
        settings.store_display()
    );
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Ready]);
    let mut admin = server.take_admin_requests();

    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = hup.recv() => {
                // Failures are logged by `reload`; the old configuration stays in force.
                let _ = reload(&server, config_flag, &args, &log, verbose);
                if let Err(e) = log.reopen() { tracing::error!(error = %e, "log reopen failed"); }
            }
            Some(req) = recv(&mut admin) => {
                if handle_admin(&server, req, config_flag, &args, &log, verbose) {
                    break;
                }
            }
        }
    }
    let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
    let grace = settings.server.grace;
    tracing::info!(grace_ms = grace.as_millis() as u64, "stopping: draining in-flight jobs");
    let drain = server.drain(grace);
    tokio::pin!(drain);
    tokio::select! {
        graceful = &mut drain => {
            if graceful { tracing::info!("stopped gracefully") } else { tracing::warn!("stopped after the grace period with work unfinished") }
            Ok(exit::OK)
        }
        _ = term.recv() => forced(),
        _ = int.recv() => forced(),
    }
}

fn forced() -> Result<u8, Failure> {
    tracing::warn!("second stop signal: exiting immediately");
    Err(Failure::new(exit::FAILED, "stopped immediately by a second signal"))
}

async fn recv(rx: &mut Option<tokio::sync::mpsc::Receiver<AdminRequest>>) -> Option<AdminRequest> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Answers one admin message; returns true when the server must stop.
fn handle_admin(
    server: &Server,
    req: AdminRequest,
    config_flag: Option<&Path>,
    args: &ServeArgs,
    log: &LogHandle,
    verbose: u8,
) -> bool {
    let (result, stop) = match req.message {
        AdminMessage::Quit => (Ok(serde_json::json!({"stopping": true})), true),
        AdminMessage::Reload => (reload(server, config_flag, args, log, verbose), false),
        AdminMessage::LogRotate => (
            log.reopen()
                .map(|()| serde_json::json!({"reopened": true}))
                .map_err(|e| orb_proto::ErrorBody::new(orb_proto::ErrorCode::Internal, e)),
            false,
        ),
    };
    let _ = req.reply.send(result);
    stop
}

/// Re-reads the configuration and applies what can change live: log filter, limits, tokens,
/// groups, the TLS certificate, key and client CA. Connections stay up. Invalid configuration (a
/// TLS file that cannot be used among it) changes nothing.
fn reload(
    server: &Server,
    config_flag: Option<&Path>,
    args: &ServeArgs,
    log: &LogHandle,
    verbose: u8,
) -> Result<serde_json::Value, orb_proto::ErrorBody> {
    let bad = |m: String| {
        tracing::error!(error = %m, "reload refused; configuration unchanged");
        orb_proto::ErrorBody::new(orb_proto::ErrorCode::BadRequest, m)
    };
    let settings = load(config_flag, args).map_err(|f| bad(f.message))?;
    let reloaded = server.reload(settings.server.clone()).map_err(|e| bad(e.to_string()))?;
    log.set_filter(&log_directive(&settings, verbose)).map_err(bad)?;
    if reloaded.restart_required.is_empty() {
        tracing::info!("configuration reloaded");
    } else {
        tracing::warn!(
            restart_required = reloaded.restart_required.join(", "),
            "configuration reloaded except settings that need a restart"
        );
    }
    Ok(serde_json::json!({"reloaded": true, "restart_required": reloaded.restart_required}))
}

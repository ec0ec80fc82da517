//! `orb agent`: lock the agent's data folder, connect as a device, answer the built-in commands
//! (`ping`, `echo`, `sys.info`) until stopped; reconnect with backoff when the link drops.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use orb_client::{Client, ClientConfig, ClientError, Context, Handlers};
use orb_proto::{DeviceId, ErrorBody, ErrorCode};

use crate::cli::AgentArgs;
use crate::connect::{self, TokenKind};
use crate::exit::{self, Failure};
use crate::input;

/// The agent software name sent in hello.
pub const AGENT_NAME: &str = concat!("orb-agent/", env!("CARGO_PKG_VERSION"));

/// The built-in command handlers every `orb agent` has.
pub fn builtin_handlers() -> Handlers {
    let started = std::time::Instant::now();
    Handlers::new()
        .on("ping", |_c: Context| async {
            Ok(serde_json::json!({"pong": true}))
        })
        .on("echo", |c: Context| async move {
            serde_json::from_slice::<serde_json::Value>(&c.args)
                .map_err(|e| ErrorBody::new(ErrorCode::BadArgs, format!("echo: {e}")))
        })
        .on("sys.info", move |_c: Context| async move {
            Ok(sys_info(started))
        })
}

/// Hostname, OS, architecture, agent version, uptimes and the agent's clock.
fn sys_info(started: std::time::Instant) -> serde_json::Value {
    serde_json::json!({
        "hostname": sysinfo::System::host_name().ok(),
        "os": std::env::consts::OS,
        "os_version": sysinfo::System::long_os_version().ok(),
        "arch": std::env::consts::ARCH,
        "agent_version": AGENT_NAME,
        "uptime_s": sysinfo::System::uptime().ok(),
        "agent_uptime_s": started.elapsed().as_secs(),
        "clock": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    })
}

/// Takes the exclusive lock on `dir/agent.lock`, so two agents never share one data folder.
fn lock_data_dir(dir: &Path) -> Result<File, Failure> {
    std::fs::create_dir_all(dir).map_err(|e| {
        Failure::new(
            exit::CONFIG,
            format!("cannot create agent data folder {}: {e}", dir.display()),
        )
    })?;
    let path = dir.join("agent.lock");
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| Failure::new(exit::CONFIG, format!("cannot open {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Failure::new(
            exit::FAILED,
            format!(
                "another agent is running with data folder {}",
                dir.display()
            ),
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(Failure::new(
            exit::CONFIG,
            format!("cannot lock {}: {e}", path.display()),
        )),
    }
}

/// Runs the agent until SIGINT/SIGTERM (exit 0).
pub async fn run(args: AgentArgs) -> Result<u8, Failure> {
    let id = DeviceId::new(&args.id).map_err(|e| Failure::usage(e.to_string()))?;
    let tags = input::pairs(&args.tags, "tag")?;
    let url = connect::url(&args.connect)?;
    let token = connect::token(&args.connect, &url, TokenKind::Agent)?;
    let data = args
        .data
        .clone()
        .unwrap_or_else(|| PathBuf::from("orb-agent").join(id.as_str()));
    let _lock = lock_data_dir(&data)?;

    let mut cfg = ClientConfig::agent(url.clone(), token, id.as_str());
    cfg.tags = tags;
    cfg.agent = AGENT_NAME.to_owned();
    let handlers = builtin_handlers();
    let stop = Arc::new(tokio::sync::Notify::new());
    tokio::spawn(notify_on_signal(Arc::clone(&stop)));

    let mut backoff = Duration::from_millis(250);
    let max_backoff = Duration::from_secs(30);
    let mut ever_connected = false;
    loop {
        let attempt = tokio::select! {
            () = stop.notified() => return Ok(exit::OK),
            r = Client::connect(cfg.clone(), handlers.clone()) => r,
        };
        match attempt {
            Ok(client) => {
                ever_connected = true;
                backoff = Duration::from_millis(250);
                tracing::info!(server = %url, id = %id, "agent connected");
                tokio::select! {
                    () = stop.notified() => {
                        client.close().await;
                        tracing::info!("agent stopped");
                        return Ok(exit::OK);
                    }
                    reason = client.closed() => tracing::warn!(reason, "connection lost; reconnecting"),
                }
            }
            Err(e @ ClientError::Refused(_)) => return Err(e.into()),
            Err(e) if !ever_connected && backoff >= max_backoff => return Err(e.into()),
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "cannot connect")
            }
        }
        tokio::select! {
            () = stop.notified() => return Ok(exit::OK),
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(max_backoff);
    }
}

/// Wakes `stop` on SIGINT or SIGTERM.
pub async fn notify_on_signal(stop: Arc<tokio::sync::Notify>) {
    let Ok(mut term) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
    else {
        return;
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    stop.notify_one();
}

//! `orb serve`: build the server configuration from flags, start the broker, run until SIGINT or
//! SIGTERM, then stop gracefully.

use std::path::Path;
use std::sync::Arc;

use orb_server::{Secret, ServerBuilder, ServerConfig, ServerError};

use crate::cli::ServeArgs;
use crate::exit::{self, Failure};
use crate::input;

fn secret(value: Option<&String>, file: Option<&Path>) -> Result<Option<Secret>, Failure> {
    if let Some(v) = value {
        return Ok(Some(Secret::new(v.clone())));
    }
    let Some(path) = file else { return Ok(None) };
    let s = std::fs::read_to_string(path).map_err(|e| {
        Failure::new(
            exit::CONFIG,
            format!("cannot read token file {}: {e}", path.display()),
        )
    })?;
    Ok(Some(Secret::new(s.trim())))
}

/// Runs the server until a stop signal.
pub async fn run(args: ServeArgs) -> Result<u8, Failure> {
    let config = ServerConfig {
        listen: args.listen,
        http: args.http,
        data_dir: args.data.clone(),
        admin_token: secret(args.admin_token.as_ref(), args.admin_token_file.as_deref())?,
        agent_token: secret(args.agent_token.as_ref(), args.agent_token_file.as_deref())?,
        groups: input::pairs(&args.groups, "group")?,
        ..ServerConfig::default()
    };
    let server = ServerBuilder::new(config)
        .start()
        .await
        .map_err(|e| match e {
            ServerError::Config(_) => Failure::new(exit::CONFIG, e.to_string()),
            ServerError::Bind { .. } => Failure::new(exit::UNREACHABLE, e.to_string()),
            ServerError::DataDir { .. } => Failure::new(exit::CONFIG, e.to_string()),
        })?;
    eprintln!(
        "orb server: agents tcp://{}  websocket ws://{}/v1/ws  data {}",
        server.tcp_addr(),
        server.http_addr(),
        args.data.display()
    );
    let stop = Arc::new(tokio::sync::Notify::new());
    tokio::spawn(crate::agent::notify_on_signal(Arc::clone(&stop)));
    stop.notified().await;
    tracing::info!("stopping: closing listeners and sessions");
    server.shutdown().await;
    Ok(exit::OK)
}

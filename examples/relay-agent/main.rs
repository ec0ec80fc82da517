//! Device-to-device commands with `orb-client`: an agent that, asked `relay`, sends a command to
//! other devices through the broker (a job, the same machinery as `orb send`: selector, deadline,
//! "any one of") and answers with their results. The job goes out on the agent's own connection
//! (the live [`orb_client::Client`] of its [`Persistent`] link), so the server knows it comes from
//! this device and allows it only where an `[[acl.peers]]` rule lets this device send that command
//! to those devices: without one it is refused `forbidden` (deny by default), and `relay` answers
//! that error. A rule's `from` and `to` match ids and operator-set tags only.
//!
//! ```text
//! # orb.toml of the server (orb serve --config orb.toml):
//! [[acl.peers]]
//! from = "relay-1"            # better: a tag only an operator sets (orb devices tag relay-1 role=relay)
//! to = "w-*"
//! commands = ["echo", "sys.info"]
//!
//! cargo run -p orb-examples --bin relay-agent -- --server tcp://127.0.0.1:7700 \
//!     --token-file orb-data/agent.token --id relay-1
//! orb send relay-1 relay '{"target": "w-*", "command": "echo", "args": {"n": 1}}'
//! orb send relay-1 relay '{"target": "w-*", "command": "sys.info", "one": true}'
//! orb send relay-1 relay '{"target": "db-1", "command": "echo"}'   # forbidden: no rule reaches db-1
//! ```

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use bytes::Bytes;
use clap::Parser;
use orb_client::{Backoff, Client, ClientConfig, ClientError, Context, Handlers, JobRequest, JobUpdate};
use orb_client::{LinkEvent, Persistent, Select, ServerUrl};
use orb_proto::{ErrorBody, ErrorCode};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(about = "An agent that relays commands to other devices (device-to-device, [[acl.peers]])")]
struct Args {
    /// The server, e.g. tcp://127.0.0.1:7700 or ws://127.0.0.1:7780/v1/ws.
    #[arg(long)]
    server: ServerUrl,
    /// The server's agent token (the first run enrolls with it).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// This device's id.
    #[arg(long)]
    id: String,
    /// Where the device secret is kept (default: ./ID.secret).
    #[arg(long)]
    secret_file: Option<PathBuf>,
}

/// `relay`'s arguments: the job to send.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Relay {
    /// Target selector (`w-1`, `w-*`, `tag:role=worker`, `group:workers`).
    target: String,
    /// The command to run there.
    command: String,
    /// Its arguments (any JSON; null when absent).
    #[serde(default)]
    args: Value,
    /// Exactly one of the matching connected devices (`orb send --one`).
    #[serde(default)]
    one: bool,
}

/// The JSON Schema of `relay`'s arguments (checked before the handler runs).
fn relay_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "target": {"type": "string", "minLength": 1},
            "command": {"type": "string", "minLength": 1},
            "args": {},
            "one": {"type": "boolean"}
        },
        "required": ["target", "command"],
        "additionalProperties": false
    })
}

/// Time kept back from the `relay` command's own deadline, so its answer (with the results)
/// still arrives in time.
const MARGIN: Duration = Duration::from_millis(500);

/// The `relay` handler: the job goes out on the connection `link` holds now.
///
/// # Errors
/// A schema that does not compile (it is a constant: never, as the example's test shows).
fn handlers(link: watch::Receiver<Option<Client>>) -> Result<Handlers, orb_client::SchemaError> {
    Handlers::new().on_with_schema("relay", relay_schema(), move |c: Context| {
        let mut link = link.clone();
        async move {
            // The command came on the connection, which the link publishes a moment after its
            // welcome: wait for it (bounded by the command's deadline).
            let live = tokio::time::timeout(c.deadline, async { link.wait_for(Option::is_some).await.ok()?.clone() });
            let client = live
                .await
                .ok()
                .flatten()
                .ok_or_else(|| ErrorBody::new(ErrorCode::HandlerError, "relay: not connected"))?;
            let relay: Relay = c.args()?;
            let args = Bytes::from(serde_json::to_vec(&relay.args).expect("a JSON value serialises"));
            let deadline = c.deadline.saturating_sub(MARGIN).max(Duration::from_millis(100));
            let mut job = JobRequest::new(relay.target, relay.command).args(args).deadline(deadline);
            if relay.one {
                job = job.select(Select::One);
            }
            // Refused jobs (`forbidden` where no [[acl.peers]] rule allows them, `no_match`,
            // `unknown_command`, ...) are this command's answer, code and message unchanged.
            let mut job = client.submit(job).await.map_err(refusal)?;
            let mut results = Vec::new();
            while let Some(update) = job.next().await {
                match update {
                    JobUpdate::Result(r) => results.push(json!({
                        "device": r.device, "status": r.status, "result": r.result, "error": r.error,
                    })),
                    JobUpdate::Done(done) => {
                        return Ok(json!({"job": done.job, "results": results, "summary": done.summary}));
                    }
                    JobUpdate::Batch(_) | JobUpdate::Progress { .. } => {}
                }
            }
            Err(ErrorBody::new(ErrorCode::HandlerError, "relay: the connection closed before the job ended"))
        }
    })
}

/// The server's refusal as it came, anything else as `handler_error`.
fn refusal(e: ClientError) -> ErrorBody {
    match e {
        ClientError::Remote(body) | ClientError::Refused(body) => body,
        other => ErrorBody::new(ErrorCode::HandlerError, format!("relay: {other}")),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let secret_file = args.secret_file.clone().unwrap_or_else(|| PathBuf::from(format!("{}.secret", args.id)));
    let secret = std::fs::read_to_string(&secret_file).ok().map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    let token = match &args.token_file {
        Some(path) => Some(
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?.trim().to_owned(),
        ),
        None => None,
    };
    if secret.is_none() && token.is_none() {
        anyhow::bail!("the first run needs --token-file (the server's agent token) to enroll");
    }
    let mut config = ClientConfig::agent(args.server.clone(), token, args.id.clone());
    config.enroll = secret.is_none();
    config.secret = secret;
    config.agent = "relay-example/0.1.0".into();

    // The handler reads the live connection from the link, which exists only once the link
    // does: a watch channel set from the link's own.
    let (live_tx, live_rx) = watch::channel(None);
    let link = Persistent::new(config, vec![args.server], handlers(live_rx)?, Backoff::default());
    let mut current = link.current();
    tokio::spawn(async move {
        while current.changed().await.is_ok() {
            live_tx.send_replace(current.borrow_and_update().clone());
        }
    });
    let stop = CancellationToken::new();
    tokio::spawn({
        let stop = stop.clone();
        async move {
            let _ = tokio::signal::ctrl_c().await;
            stop.cancel();
        }
    });
    let mut saved = Ok(());
    link.run(&stop, |event| match event {
        LinkEvent::Enrolled { secret, .. } => {
            saved = std::fs::write(&secret_file, format!("{secret}\n"))
                .with_context(|| format!("keeping the device secret in {}", secret_file.display()));
            if saved.is_err() {
                stop.cancel();
            }
        }
        LinkEvent::Connected { url, id, .. } => println!("relay {id} connected to {url}"),
        LinkEvent::Lost { reason, .. } => eprintln!("link lost ({reason}); reconnecting"),
        LinkEvent::Failed { error, retry_in, .. } => {
            eprintln!("cannot connect ({error}); next try in {:.1} s", retry_in.as_secs_f64());
        }
    })
    .await?;
    saved
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_compiles() {
        assert!(handlers(watch::channel(None).1).is_ok());
    }
}

//! A custom agent in Rust, built on `orb-client`: a thermostat with two commands,
//! `thermostat.read` and `thermostat.set`, on a permanent connection that reconnects with backoff.
//! The first run enrolls with the server's agent token and keeps the device secret it is issued
//! in `--secret-file`; later runs connect with that secret. Commands arrive from the server,
//! their handlers run here, and each result goes back as the command's reply. `thermostat.set`
//! declares a JSON Schema for its arguments: `orb commands` shows it, and arguments that do not
//! match it are answered `invalid_args` (naming the path at fault) before the handler runs.
//!
//! ```text
//! cargo run -p orb-examples --bin custom-agent -- --server tcp://127.0.0.1:7700 \
//!     --token-file orb-data/agent.token --id thermo-1
//! orb send thermo-1 thermostat.set '{"celsius": 21.5}'
//! orb send thermo-1 thermostat.read
//! orb send thermo-1 thermostat.set '{"celsius": 99}'   # invalid_args: /celsius: 99 is greater ...
//! ```

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use clap::Parser;
use orb_client::{Backoff, ClientConfig, Context, Handlers, LinkEvent, Persistent, ServerUrl};
use orb_proto::{ErrorBody, ErrorCode};
use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// The range `thermostat.set` accepts, in degrees Celsius.
const SETPOINT: std::ops::RangeInclusive<f64> = 5.0..=30.0;

#[derive(Parser)]
#[command(about = "A thermostat agent: orb-client with two command handlers")]
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

/// `thermostat.set`'s arguments.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetPoint {
    celsius: f64,
}

/// The JSON Schema of `thermostat.set`'s arguments: `{"celsius": N}` within [`SETPOINT`].
fn setpoint_schema() -> serde_json::Value {
    json!({
        "type": "object",
        "properties": {"celsius": {"type": "number", "minimum": SETPOINT.start(), "maximum": SETPOINT.end()}},
        "required": ["celsius"],
        "additionalProperties": false
    })
}

/// The two handlers, sharing the set point.
///
/// # Errors
/// A schema that does not compile (it is a constant: never, as the example's test shows).
fn handlers(setpoint: Arc<Mutex<f64>>) -> Result<Handlers, orb_client::SchemaError> {
    let read = Arc::clone(&setpoint);
    Handlers::new()
        .on("thermostat.read", move |_c: Context| {
            let celsius = *read.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            async move { Ok(json!({ "celsius": celsius })) }
        })
        // The schema is checked before this handler runs: it only sees `{"celsius": N}` within
        // the range, so decoding cannot fail here (the `bad_args` stays as a guard).
        .on_with_schema("thermostat.set", setpoint_schema(), move |c: Context| {
            let setpoint = Arc::clone(&setpoint);
            async move {
                let want: SetPoint = serde_json::from_slice(&c.args)
                    .map_err(|e| ErrorBody::new(ErrorCode::BadArgs, format!("thermostat.set: {e}")))?;
                let mut now = setpoint.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let was = std::mem::replace(&mut *now, want.celsius);
                Ok(json!({ "celsius": want.celsius, "was": was }))
            }
        })
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
    config.agent = "thermostat-example/0.1.0".into();

    let link = Persistent::new(config, vec![args.server], handlers(Arc::new(Mutex::new(20.0)))?, Backoff::default());
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
            // Kept before anything else: the shared token no longer connects as this id.
            saved = std::fs::write(&secret_file, format!("{secret}\n"))
                .with_context(|| format!("keeping the device secret in {}", secret_file.display()));
            if saved.is_err() {
                stop.cancel();
            }
        }
        LinkEvent::Connected { url, id, .. } => println!("thermostat {id} connected to {url}"),
        LinkEvent::Lost { reason, .. } => eprintln!("link lost ({reason}); reconnecting"),
        LinkEvent::Failed { error, retry_in, .. } => {
            eprintln!("cannot connect ({error}); next try in {:.1} s", retry_in.as_secs_f64());
        }
    })
    .await?;
    saved
}

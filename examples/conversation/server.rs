//! The server side of the eventdispatcher seed's scripted conversation, built on orb's
//! libraries: an embedded orb server (`orb-server`) and an operator connection to it
//! (`orb-client`). Whenever a device comes online (the server's presence events on
//! `$orb.presence.<id>`, plus those connected before it listened) it runs the script with it:
//!
//! ```text
//! server  HI      ->  client  DAD
//! server  CLIMB   ->  client  TOP
//! server  WHO     ->  client  MOM
//! server  BYE     ->  client  quits
//! ```
//!
//! Each line is a request to the device; its reply is the client's answer. Start it before or
//! after `conversation-client`: the client keeps trying to connect until the server is there, and
//! the server talks to whoever is connected when it starts listening.
//!
//! ```text
//! cargo run -p orb-examples --bin conversation-server -- --listen 127.0.0.1:7710
//! cargo run -p orb-examples --bin conversation-client -- --server tcp://127.0.0.1:7710
//! ```

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use bytes::Bytes;
use clap::Parser;
use orb_client::{Client, ClientConfig, Handlers};
use orb_proto::message::{DeviceInfo, DevicesQuery, commands};
use orb_server::{Secret, ServerBuilder, ServerConfig};
use serde_json::Value;

/// What the server says, and what it expects the client to answer.
const SCRIPT: [(&str, &str); 4] = [("HI", "DAD"), ("CLIMB", "TOP"), ("WHO", "MOM"), ("BYE", "quit")];
/// How long the client has for each answer.
const ANSWER: Duration = Duration::from_secs(10);

#[derive(Parser)]
#[command(about = "The conversation's server: an embedded orb server that talks to each client")]
struct Args {
    /// Where agents connect (TCP).
    #[arg(long, default_value = "127.0.0.1:7710")]
    listen: SocketAddr,
    /// The agent token clients enroll with (an example's fixed token: not for production).
    #[arg(long, default_value = "conversation-agent-token")]
    agent_token: String,
    /// The data folder (default: a temporary one, deleted at exit).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Exit after this many conversations (default: run until Ctrl-C).
    #[arg(long)]
    conversations: Option<u32>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let scratch = tempfile::tempdir()?;
    let data = args.data.clone().unwrap_or_else(|| scratch.path().to_path_buf());
    let admin = format!("conversation-admin-{}", std::process::id());
    let config = ServerConfig {
        listen: args.listen,
        http: SocketAddr::from(([127, 0, 0, 1], 0)),
        admin_token: Some(Secret::new(admin.clone())),
        agent_token: Some(Secret::new(args.agent_token.clone())),
        data_dir: data,
        ..ServerConfig::default()
    };
    let server = ServerBuilder::new(config).start().await.context("starting the orb server")?;
    println!("server: listening on tcp://{}", server.tcp_addr());

    // The operator connection the server talks through: presence first, then who is there.
    let url = format!("tcp://{}", server.tcp_addr()).parse()?;
    let op = Client::connect(ClientConfig::operator(url, Some(admin)), Handlers::new()).await?;
    let mut presence = op.subscribe("$orb.presence.>", ANSWER).await?;
    let connected: Vec<DeviceInfo> = op
        .call_json(commands::DEVICES_LIST, &DevicesQuery { selector: None, connected: true, schemas: false }, ANSWER)
        .await?;

    let (done_tx, mut done) = tokio::sync::mpsc::unbounded_channel();
    let mut greeted = HashSet::new();
    let mut talk = |id: String| {
        // A device is talked to once per run, however it was noticed.
        if greeted.insert(id.clone()) {
            let (op, done_tx) = (op.clone(), done_tx.clone());
            tokio::spawn(async move {
                let outcome = converse(&op, &id).await;
                let _ = done_tx.send((id, outcome));
            });
        }
    };
    connected.into_iter().for_each(|d| talk(d.id));

    let mut finished = 0;
    let mut failed = 0;
    loop {
        tokio::select! {
            message = presence.next() => {
                let Some(message) = message else { bail!("the presence subscription ended") };
                let event: Value = serde_json::from_slice(&message.body).unwrap_or(Value::Null);
                if event["status"] == "online"
                    && let Some(id) = event["id"].as_str()
                {
                    talk(id.to_owned());
                }
            }
            Some((id, outcome)) = done.recv() => {
                finished += 1;
                if let Err(e) = outcome {
                    failed += 1;
                    eprintln!("server: the conversation with {id} failed: {e:#}");
                }
                if args.conversations.is_some_and(|n| finished >= n) {
                    break;
                }
            }
            _ = tokio::signal::ctrl_c() => break,
        }
    }
    op.close().await;
    server.shutdown().await;
    if failed > 0 {
        bail!("{failed} of {finished} conversations failed");
    }
    Ok(())
}

/// Runs the script with device `id`: each line a request, each reply checked.
async fn converse(op: &Client, id: &str) -> anyhow::Result<()> {
    for (say, expect) in SCRIPT {
        println!("server -> {id}: {say}");
        let reply = op.request(id, say, Bytes::from_static(b"null"), ANSWER).await?;
        let answer: String = serde_json::from_slice(&reply).context("the client's answer is not a JSON string")?;
        println!("{id} -> server: {answer}");
        if answer != expect {
            bail!("expected {expect} after {say}, got {answer}");
        }
    }
    Ok(())
}

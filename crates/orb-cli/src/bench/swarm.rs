//! The simulated agents of a benchmark, run as their own process (`orb bench-swarm`) so the
//! server is measured alone. The orb side uses `orb-client` agents; the NATS side async-nats
//! connections that subscribe to one subject and answer to the request's inbox. Prints
//! `ready N` on stdout once every connection is up, then runs until stdin closes.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use orb_client::{Backoff, Client, ClientConfig, Context, Handlers, Persistent, ServerUrl};
use tokio::io::AsyncReadExt;
use tokio_util::sync::CancellationToken;

use crate::exit::{self, Failure};

/// NATS subject the fan-out agents subscribe to.
pub const NATS_FANOUT: &str = "orb-bench.fanout";
/// NATS subject of the request/reply responder.
pub const NATS_RR: &str = "orb-bench.rr";
/// Connections per loopback source address before moving to the next (ephemeral ports run out
/// near 28,000 per address pair).
const PER_SOURCE: usize = 20_000;
/// Connections opened at once.
const CONNECT_BATCH: usize = 256;

/// Which broker the swarm talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Side {
    /// orb agents (orb-client).
    Orb,
    /// NATS subscribers (async-nats).
    Nats,
}

/// `orb bench-swarm` arguments.
#[derive(Debug, clap::Args)]
pub struct SwarmArgs {
    /// Broker URL (tcp://… for orb, nats://… for NATS).
    #[arg(long)]
    pub server: String,
    /// Which broker.
    #[arg(long, value_enum)]
    pub side: Side,
    /// Number of agents.
    #[arg(long)]
    pub agents: usize,
    /// Agent id prefix (ids are PREFIX0, PREFIX1, …).
    #[arg(long, default_value = "a-")]
    pub prefix: String,
    /// Agent token (orb).
    #[arg(long, default_value = "")]
    pub token: String,
    /// Keep reconnecting after the server goes away (storm scenario).
    #[arg(long)]
    pub persistent: bool,
    /// Envelope codec for orb agents.
    #[arg(long, default_value = "json")]
    pub codec: String,
    /// NATS role: `fanout` (everyone subscribes to one subject) or `rr` (one responder).
    #[arg(long, default_value = "fanout")]
    pub nats_role: String,
}

/// The local address for connection `i`: none (the kernel's choice, which can share ports across
/// destinations) for the first [`PER_SOURCE`], then 127.0.0.2, 127.0.0.3, ...
fn source_addr(i: usize) -> Option<IpAddr> {
    let block = i / PER_SOURCE;
    (block > 0).then(|| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1 + u8::try_from(block).unwrap_or(u8::MAX - 1))))
}

fn handlers() -> Handlers {
    Handlers::new().on("ping", |_c: Context| async { Ok(serde_json::json!({"pong": true})) }).on(
        "echo",
        |c: Context| async move {
            serde_json::from_slice(&c.args)
                .map_err(|e| orb_proto::ErrorBody::new(orb_proto::ErrorCode::BadArgs, e.to_string()))
        },
    )
}

/// Runs the swarm until stdin closes.
pub async fn run(args: SwarmArgs) -> Result<u8, Failure> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let fail = |m: String| Failure::new(exit::FAILED, format!("bench-swarm: {m}"));
    let stop = CancellationToken::new();
    let mut keep: Vec<Box<dyn std::any::Any + Send>> = Vec::with_capacity(args.agents);
    match args.side {
        Side::Orb => {
            let url = ServerUrl::parse(&args.server).map_err(|e| fail(e.to_string()))?;
            let codec = args.codec.clone();
            let configs: Vec<ClientConfig> = (0..args.agents)
                .map(|i| {
                    let mut c =
                        ClientConfig::agent(url.clone(), Some(args.token.clone()), format!("{}{i}", args.prefix));
                    // Ids are reused across trials and rounds: connect as v1 agents (shared token,
                    // no device secret), or every reconnect would be refused `id_taken`.
                    c.enroll = false;
                    c.bind = source_addr(i);
                    c.connect_timeout = Duration::from_secs(60);
                    crate::bench::set_codec(&mut c, &codec);
                    c
                })
                .collect();
            if args.persistent {
                let backoff =
                    Backoff { min: Duration::from_millis(50), max: Duration::from_secs(1), give_up_after: None };
                let mut watchers = Vec::with_capacity(args.agents);
                for c in configs {
                    let link =
                        std::sync::Arc::new(Persistent::new(c.clone(), vec![c.url.clone()], handlers(), backoff));
                    let mut current = link.current();
                    let s = stop.clone();
                    let l = std::sync::Arc::clone(&link);
                    tokio::spawn(async move { l.run(&s, |_| {}).await });
                    watchers.push(tokio::spawn(async move { current.wait_for(Option::is_some).await.is_ok() }));
                    keep.push(Box::new(link));
                }
                for w in watchers {
                    if !w.await.unwrap_or(false) {
                        return Err(fail("an agent never connected".into()));
                    }
                }
            } else {
                let clients: Vec<Result<Client, orb_client::ClientError>> = futures_util::stream::iter(configs)
                    .map(|c| Client::connect(c, handlers()))
                    .buffer_unordered(CONNECT_BATCH)
                    .collect()
                    .await;
                for c in clients {
                    keep.push(Box::new(c.map_err(|e| fail(e.to_string()))?));
                }
            }
        }
        Side::Nats => {
            let rr = args.nats_role == "rr";
            let subject = if rr { NATS_RR } else { NATS_FANOUT };
            let results: Vec<Result<async_nats::Client, String>> = futures_util::stream::iter(0..args.agents)
                .map(|_| {
                    let server = args.server.clone();
                    async move {
                        let client = async_nats::ConnectOptions::new()
                            .connection_timeout(Duration::from_secs(60))
                            .connect(server)
                            .await
                            .map_err(|e| e.to_string())?;
                        let mut sub = client.subscribe(subject).await.map_err(|e| e.to_string())?;
                        client.flush().await.map_err(|e| e.to_string())?;
                        let replier = client.clone();
                        tokio::spawn(async move {
                            let pong = Bytes::from_static(br#"{"pong":true}"#);
                            while let Some(msg) = sub.next().await {
                                if let Some(reply) = msg.reply {
                                    let body = if rr { msg.payload } else { pong.clone() };
                                    let _ = replier.publish(reply, body).await;
                                }
                            }
                        });
                        Ok(client)
                    }
                })
                .buffer_unordered(CONNECT_BATCH)
                .collect()
                .await;
            for r in results {
                keep.push(Box::new(r.map_err(fail)?));
            }
        }
    }
    outln!("ready {}", keep.len());
    // Run until the parent closes our stdin (or kills us).
    let mut buf = [0u8; 64];
    let mut stdin = tokio::io::stdin();
    while let Ok(n) = stdin.read(&mut buf).await {
        if n == 0 {
            break;
        }
    }
    stop.cancel();
    drop(keep);
    Ok(exit::OK)
}

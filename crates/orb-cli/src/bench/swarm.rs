//! The simulated agents of a benchmark, run as their own process (`orb bench-swarm`) so the
//! server is measured alone. The orb side uses `orb-client` agents; the NATS side async-nats
//! connections that subscribe to one subject and answer to the request's inbox. Prints
//! `ready N` on stdout once every connection is up, then runs until stdin closes.
//!
//! With `--pubsub` (either side) every connection subscribes to [`PUBSUB_TOPIC`] instead, and
//! what its subscribers received is reported on stdout, the same way for both brokers (see
//! [`crate::bench::pubsub`]): `burst B MIN MAX DISORDER` once every subscriber has the message
//! that ends burst B (MIN and MAX: messages of the trial they hold; DISORDER: messages seen out
//! of order, all trials), `probe P US,US,...` once every subscriber has probe P (each one's
//! delivery latency in microseconds), `lost WHY` when a subscription ends.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use orb_client::{Backoff, Client, ClientConfig, Context, Handlers, Persistent, ServerUrl};
use tokio::io::AsyncReadExt;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::exit::{self, Failure};

/// NATS subject the fan-out agents subscribe to.
pub const NATS_FANOUT: &str = "orb-bench.fanout";
/// NATS subject of the request/reply responder.
pub const NATS_RR: &str = "orb-bench.rr";
/// Topic (orb) and subject (NATS) of `orb bench pubsub`.
pub const PUBSUB_TOPIC: &str = "orb-bench.pubsub.data";
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
    /// Subscribe every connection (either side) to the pub/sub bench topic and report what
    /// arrives on stdout (`orb bench pubsub`).
    #[arg(long)]
    pub pubsub: bool,
    /// CA certificate of a tls:// server (`orb bench --tls`).
    #[arg(long)]
    pub ca_cert: Option<std::path::PathBuf>,
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
    if args.pubsub && args.persistent {
        return Err(fail("--pubsub and --persistent do not go together".into()));
    }
    let reports = args.pubsub.then(|| {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(tally_reports(rx, args.agents, stop.clone()));
        tx
    });
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
                    c.tls.ca_cert.clone_from(&args.ca_cert);
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
                let clients: Vec<Result<Client, String>> = futures_util::stream::iter(configs)
                    .map(|c| {
                        let reports = reports.clone();
                        let stop = stop.clone();
                        async move {
                            let client = Client::connect(c, handlers()).await.map_err(|e| e.to_string())?;
                            if let Some(reports) = reports {
                                orb_subscriber(&client, reports, stop).await?;
                            }
                            Ok(client)
                        }
                    })
                    .buffer_unordered(CONNECT_BATCH)
                    .collect()
                    .await;
                for c in clients {
                    keep.push(Box::new(c.map_err(fail)?));
                }
            }
        }
        Side::Nats if args.pubsub => {
            let results: Vec<Result<async_nats::Client, String>> = futures_util::stream::iter(0..args.agents)
                .map(|_| {
                    let (server, reports, stop) = (args.server.clone(), reports.clone(), stop.clone());
                    async move {
                        let client = async_nats::ConnectOptions::new()
                            .connection_timeout(Duration::from_secs(60))
                            .connect(server)
                            .await
                            .map_err(|e| e.to_string())?;
                        if let Some(reports) = reports {
                            nats_subscriber(&client, reports, stop).await?;
                        }
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

/// What one subscriber of `orb bench pubsub` tells the swarm's tally.
#[derive(Debug)]
enum Report {
    /// It received the message that ends burst `burst`, holding `got` messages of this trial,
    /// after `disorder` messages seen out of order so far.
    Burst { burst: u64, got: u64, disorder: u64 },
    /// It received latency probe `probe`, `us` microseconds after it was published.
    Probe { probe: u64, us: u64 },
    /// A body that is not one of the bench's.
    Malformed,
    /// Its subscription ended.
    Ended(String),
}

/// One subscriber's count of the current trial, the same code for both brokers.
#[derive(Default)]
struct Tally {
    got: u64,
    next: u64,
    disorder: u64,
}

impl Tally {
    /// Counts one received body; what to report, if anything. `now_us`: when it arrived.
    fn on(&mut self, body: &[u8], now_us: u64) -> Option<Report> {
        let Some((kind, n, x)) = crate::bench::pubsub::parse(body) else { return Some(Report::Malformed) };
        match kind {
            crate::bench::pubsub::DATA | crate::bench::pubsub::LAST => {
                // Message 1 starts a trial.
                if n == 1 {
                    self.got = 0;
                    self.next = 1;
                }
                if n != self.next {
                    self.disorder += 1;
                }
                self.next = n + 1;
                self.got += 1;
                (kind == crate::bench::pubsub::LAST).then_some(Report::Burst {
                    burst: x,
                    got: self.got,
                    disorder: self.disorder,
                })
            }
            crate::bench::pubsub::PROBE => Some(Report::Probe { probe: n, us: now_us.saturating_sub(x) }),
            _ => Some(Report::Malformed),
        }
    }
}

/// Subscribes an orb connection to [`PUBSUB_TOPIC`] and counts what arrives, until `stop`.
async fn orb_subscriber(
    client: &Client,
    reports: mpsc::UnboundedSender<Report>,
    stop: CancellationToken,
) -> Result<(), String> {
    let mut sub = client.subscribe(PUBSUB_TOPIC, Duration::from_secs(60)).await.map_err(|e| e.to_string())?;
    let client = client.clone();
    tokio::spawn(async move {
        let bodies = futures_util::stream::unfold(&mut sub, |s| async move { s.next().await.map(|m| (m.body, s)) });
        if !tally_until_stopped(Box::pin(bodies), &reports, &stop).await {
            let why = format!("orb subscription ended ({}), {} dropped", client.closed().await, sub.dropped());
            let _ = reports.send(Report::Ended(why));
        }
    });
    Ok(())
}

/// Counts the message bodies of one subscription, reporting as [`Tally`] says, until `stop`
/// (true) or the subscription ends (false): the same loop for both brokers.
async fn tally_until_stopped(
    mut bodies: impl futures_util::Stream<Item = Bytes> + Unpin,
    reports: &mpsc::UnboundedSender<Report>,
    stop: &CancellationToken,
) -> bool {
    let mut tally = Tally::default();
    loop {
        let body = tokio::select! {
            () = stop.cancelled() => return true,
            b = bodies.next() => b,
        };
        let Some(body) = body else { return stop.is_cancelled() };
        if let Some(report) = tally.on(&body, crate::bench::pubsub::now_us()) {
            let _ = reports.send(report);
        }
    }
}

/// Subscribes a NATS connection to [`PUBSUB_TOPIC`] and counts what arrives, until `stop`.
/// Returns once the server has the subscription: a message this connection publishes to
/// itself after subscribing has come back (NATS handles one connection's operations in order).
async fn nats_subscriber(
    client: &async_nats::Client,
    reports: mpsc::UnboundedSender<Report>,
    stop: CancellationToken,
) -> Result<(), String> {
    let sub = client.subscribe(PUBSUB_TOPIC).await.map_err(|e| e.to_string())?;
    let inbox = client.new_inbox();
    let mut check = client.subscribe(inbox.clone()).await.map_err(|e| e.to_string())?;
    client.publish(inbox, Bytes::new()).await.map_err(|e| e.to_string())?;
    client.flush().await.map_err(|e| e.to_string())?;
    match tokio::time::timeout(Duration::from_secs(60), check.next()).await {
        Ok(Some(_)) => {}
        _ => return Err("NATS did not confirm a subscription within 60 s".into()),
    }
    let _ = check.unsubscribe().await;
    tokio::spawn(async move {
        if !tally_until_stopped(sub.map(|m| m.payload), &reports, &stop).await {
            let _ = reports.send(Report::Ended("NATS subscription ended".into()));
        }
    });
    Ok(())
}

/// Gathers the subscribers' reports and prints a line once all `n` have reported a burst or a
/// probe (module documentation), until `stop`.
async fn tally_reports(mut rx: mpsc::UnboundedReceiver<Report>, n: usize, stop: CancellationToken) {
    use std::collections::HashMap;
    let mut bursts: HashMap<u64, (usize, u64, u64, u64)> = HashMap::new();
    let mut probes: HashMap<u64, Vec<u64>> = HashMap::new();
    loop {
        let report = tokio::select! {
            () = stop.cancelled() => return,
            r = rx.recv() => r,
        };
        let Some(report) = report else { return };
        match report {
            Report::Burst { burst, got, disorder } => {
                let e = bursts.entry(burst).or_insert((0, u64::MAX, 0, 0));
                *e = (e.0 + 1, e.1.min(got), e.2.max(got), e.3 + disorder);
                if e.0 == n {
                    let (_, min, max, disorder) = *e;
                    bursts.remove(&burst);
                    outln!("burst {burst} {min} {max} {disorder}");
                }
            }
            Report::Probe { probe, us } => {
                let v = probes.entry(probe).or_insert_with(|| Vec::with_capacity(n));
                v.push(us);
                if v.len() == n {
                    let v = probes.remove(&probe).unwrap_or_default();
                    let list: Vec<String> = v.iter().map(u64::to_string).collect();
                    outln!("probe {probe} {}", list.join(","));
                }
            }
            Report::Malformed => outln!("lost a body that is not the bench's"),
            Report::Ended(why) => outln!("lost {why}"),
        }
    }
}

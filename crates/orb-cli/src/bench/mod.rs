//! `orb bench`: end-to-end measurements of a real server, optionally side by side with NATS on
//! the same machine in the same run. The server runs as a child process (or embedded, or
//! external), the simulated agents in another child process (`orb bench-swarm`), and time is
//! measured at the requester, here. Scenarios: [`fanout`], [`rr`], [`idle`], [`storm`], [`held`],
//! [`pubsub`].

mod fanout;
mod held;
mod idle;
pub mod proc;
pub mod pubsub;
mod rr;
mod stats;
mod storm;
pub mod swarm;

use std::process::Command;
use std::time::Duration;

use orb_client::{Client, ClientConfig, Handlers, ServerUrl};

use crate::exit::{self, Failure};
use proc::ChildGuard;

/// `orb bench` scenarios.
#[derive(Debug, clap::Subcommand)]
pub enum BenchCommand {
    /// One command (a job) to N agents, all replies back: time to first and last reply.
    #[command(after_help = crate::help::BENCH_FANOUT)]
    Fanout {
        /// Number of agents.
        #[arg(long, default_value_t = 1000)]
        agents: usize,
        /// Measured trials (after one warm-up).
        #[arg(long, default_value_t = 5)]
        trials: usize,
        /// Send the job with this TTL: every target's command is held (committed) before the
        /// ack and delivered through its device's queue (compare with the same run without).
        #[arg(long, value_parser = crate::cli::parse_duration, value_name = "DURATION")]
        ttl: Option<Duration>,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Unicast request/reply to one agent: throughput and latency.
    #[command(after_help = crate::help::BENCH_RR)]
    Rr {
        /// Requests in flight at once.
        #[arg(long, default_value_t = 1)]
        inflight: usize,
        /// Requests per trial.
        #[arg(long, default_value_t = 20_000)]
        count: usize,
        /// Measured trials (after one warm-up).
        #[arg(long, default_value_t = 5)]
        trials: usize,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// N idle connections: server memory per connection, agent memory per process.
    #[command(after_help = crate::help::BENCH_IDLE)]
    Idle {
        /// Number of idle agent connections.
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// N agents reconnect at once after the server restarts: time until all are back.
    #[command(after_help = crate::help::BENCH_STORM)]
    Storm {
        /// Number of agents.
        #[arg(long, default_value_t = 1000)]
        agents: usize,
        /// Measured restarts.
        #[arg(long, default_value_t = 5)]
        trials: usize,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// One job with a TTL to N offline devices: held commands committed per second (to the ack).
    #[command(after_help = crate::help::BENCH_HELD)]
    Held {
        /// Number of registered, offline devices.
        #[arg(long, default_value_t = 10_000)]
        devices: usize,
        /// Measured jobs.
        #[arg(long, default_value_t = 5)]
        trials: usize,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// One publisher, N subscribers of its topic: publish throughput and delivery latency.
    #[command(after_help = crate::help::BENCH_PUBSUB)]
    Pubsub {
        /// Number of subscriber connections.
        #[arg(long, default_value_t = 100)]
        subscribers: usize,
        /// Messages published per trial [default: 1,000,000 / subscribers, within 1,000..=100,000].
        #[arg(long)]
        messages: Option<usize>,
        /// Latency probes per trial: one message at a time, the next once every subscriber has it.
        #[arg(long, default_value_t = 100)]
        probes: usize,
        /// Measured trials (after one warm-up).
        #[arg(long, default_value_t = 5)]
        trials: usize,
        #[command(flatten)]
        common: CommonArgs,
    },
}

/// Options every scenario takes.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Use an already running server (needs --token and --agent-token).
    #[arg(long, conflicts_with = "embedded")]
    pub server: Option<String>,
    /// Run the server inside this process instead of a child process.
    #[arg(long)]
    pub embedded: bool,
    /// Admin token of the server given with --server.
    #[arg(long, env = "ORB_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Agent token of the server given with --server.
    #[arg(long)]
    pub agent_token: Option<String>,
    /// Also run the same workload against NATS (at $ORB_BENCH_NATS_URL, default nats://127.0.0.1:4222).
    #[arg(long, value_name = "PEER")]
    pub vs: Option<Peer>,
    /// Alternate the orb side and the peer side this many times, pooling their trials, so that a
    /// burst of background load does not land on one side only.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=20))]
    pub rounds: u32,
    /// Envelope codec of the orb agents and requester: json or msgpack.
    #[arg(long, default_value = "json")]
    pub codec: String,
    /// Print one JSON object as the last line.
    #[arg(long)]
    pub json: bool,
    /// Run the server with TLS (a development certificate made for the run) and connect the
    /// requester and the agents over tls://.
    #[arg(long, conflicts_with = "server")]
    pub tls: bool,
}

/// A broker to compare with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Peer {
    /// The NATS server at `ORB_BENCH_NATS_URL`.
    Nats,
}

/// The NATS URL for comparisons.
fn nats_url() -> String {
    std::env::var("ORB_BENCH_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

pub(crate) fn fail(m: impl std::fmt::Display) -> Failure {
    Failure::new(exit::FAILED, format!("bench: {m}"))
}

/// Applies `--codec` (checked by [`check_codec`]) to a client configuration.
pub fn set_codec(cfg: &mut ClientConfig, codec: &str) {
    cfg.codec = orb_proto::Codec::from_name(codec).unwrap_or(orb_proto::Codec::Json);
}

/// Refuses a `--codec` this build does not speak.
fn check_codec(codec: &str) -> Result<(), Failure> {
    match orb_proto::Codec::from_name(codec) {
        Some(_) => Ok(()),
        None => Err(Failure::usage(format!("unknown codec '{codec}': use json or msgpack"))),
    }
}

/// The server under test and how to reach it.
pub struct Target {
    /// Agent and operator URL.
    pub url: String,
    /// Admin token.
    pub admin: String,
    /// Agent token.
    pub agent: String,
    /// The child server, when we started one.
    pub child: Option<ChildGuard>,
    embedded: Option<orb_server::Server>,
    data: Option<tempfile::TempDir>,
    port: u16,
    codec: String,
    /// With `--tls`: the folder holding the run's CA and server certificate.
    tls: Option<tempfile::TempDir>,
}

impl Target {
    /// Starts (or connects to) the server the options name.
    pub async fn start(common: &CommonArgs) -> Result<Target, Failure> {
        let _ = rlimit::increase_nofile_limit(u64::MAX);
        if let Some(url) = &common.server {
            let (Some(admin), Some(agent)) = (common.token.clone(), common.agent_token.clone()) else {
                return Err(Failure::usage("--server needs --token (admin) and --agent-token"));
            };
            return Ok(Target {
                url: url.clone(),
                admin,
                agent,
                child: None,
                embedded: None,
                data: None,
                port: 0,
                codec: common.codec.clone(),
                tls: None,
            });
        }
        let data = proc::temp_dir()?;
        let tls = match common.tls {
            true => {
                let dir = proc::temp_dir()?;
                proc::write_dev_certs(dir.path())?;
                Some(dir)
            }
            false => None,
        };
        let (admin, agent) = ("bench-admin-token-0123456789".to_owned(), "bench-agent-token-0123456789".to_owned());
        if common.embedded {
            let mut cfg = orb_server::ServerConfig::for_tests(data.path().to_path_buf());
            cfg.admin_token = Some(orb_server::Secret::new(admin.clone()));
            cfg.agent_token = Some(orb_server::Secret::new(agent.clone()));
            cfg.tls = tls.as_ref().map(|d| orb_server::config::TlsConfig {
                cert: d.path().join("server.crt"),
                key: d.path().join("server.key"),
                client_ca: None,
                require_client_cert: false,
            });
            let server = orb_server::ServerBuilder::new(cfg).start().await.map_err(fail)?;
            let scheme = if tls.is_some() { "tls" } else { "tcp" };
            let url = format!("{scheme}://{}", server.tcp_addr());
            let port = server.tcp_addr().port();
            return Ok(Target {
                url,
                admin,
                agent,
                child: None,
                embedded: Some(server),
                data: Some(data),
                port,
                codec: common.codec.clone(),
                tls,
            });
        }
        let port = proc::free_port()?;
        let (child, url) = proc::start_server(data.path(), port, &admin, &agent, tls.as_ref().map(|d| d.path()))?;
        Ok(Target {
            url,
            admin,
            agent,
            child: Some(child),
            embedded: None,
            data: Some(data),
            port,
            codec: common.codec.clone(),
            tls,
        })
    }

    /// Where the server runs, for the report.
    pub fn mode(&self) -> &'static str {
        match (&self.child, &self.embedded) {
            (Some(_), _) => "child process",
            (None, Some(_)) => "embedded",
            (None, None) => "external",
        }
    }

    /// The server's process id, when it can be measured.
    pub fn pid(&self) -> Option<u32> {
        match (&self.child, &self.embedded) {
            (Some(c), _) => Some(c.pid()),
            (None, Some(_)) => Some(std::process::id()),
            (None, None) => None,
        }
    }

    /// Kills the child server and starts a new one on the same port and data folder.
    pub fn restart(&mut self) -> Result<(), Failure> {
        let (Some(child), Some(data)) = (self.child.as_mut(), self.data.as_ref()) else {
            return Err(Failure::usage("restarting needs a child server (no --server, no --embedded)"));
        };
        child.kill();
        let tls = self.tls.as_ref().map(|d| d.path());
        let (child, url) = proc::start_server(data.path(), self.port, &self.admin, &self.agent, tls)?;
        self.child = Some(child);
        self.url = url;
        Ok(())
    }

    /// An operator connection.
    pub async fn operator(&self) -> Result<Client, Failure> {
        let url = ServerUrl::parse(&self.url).map_err(fail)?;
        let mut cfg = ClientConfig::operator(url, Some(self.admin.clone()));
        cfg.tls.ca_cert = self.ca_cert();
        set_codec(&mut cfg, &self.codec);
        Client::connect(cfg, Handlers::new()).await.map_err(fail)
    }

    /// Starts `n` orb agents named `PREFIX0..` in a swarm process; returns once all are connected.
    pub fn orb_swarm(&self, n: usize, prefix: &str, persistent: bool) -> Result<ChildGuard, Failure> {
        let mut cmd = self.orb_swarm_command(n, prefix)?;
        if persistent {
            cmd.arg("--persistent");
        }
        swarm_ready(cmd, n)
    }

    /// Starts `n` orb agents in a swarm process, each subscribed to the pub/sub bench topic;
    /// returns once all are subscribed.
    pub fn orb_pubsub_swarm(&self, n: usize) -> Result<ChildGuard, Failure> {
        let mut cmd = self.orb_swarm_command(n, "ps-")?;
        cmd.arg("--pubsub");
        swarm_ready(cmd, n)
    }

    /// The run's CA certificate, with `--tls`.
    pub fn ca_cert(&self) -> Option<std::path::PathBuf> {
        self.tls.as_ref().map(|d| d.path().join("ca.crt"))
    }

    fn orb_swarm_command(&self, n: usize, prefix: &str) -> Result<Command, Failure> {
        let mut cmd = Command::new(proc::orb_exe()?);
        cmd.args(["bench-swarm", "--side", "orb", "--server", &self.url, "--token", &self.agent])
            .args(["--agents", &n.to_string(), "--prefix", prefix, "--codec", &self.codec])
            .env("ORB_LOG", "error");
        if let Some(ca) = self.ca_cert() {
            cmd.arg("--ca-cert").arg(ca);
        }
        Ok(cmd)
    }
}

/// Starts `n` NATS subscribers in a swarm process (`role`: fanout or rr).
pub fn nats_swarm(n: usize, role: &str) -> Result<ChildGuard, Failure> {
    let mut cmd = Command::new(proc::orb_exe()?);
    cmd.args(["bench-swarm", "--side", "nats", "--server", &nats_url(), "--agents", &n.to_string()])
        .args(["--nats-role", role])
        .env("ORB_LOG", "error");
    swarm_ready(cmd, n)
}

/// Starts `n` NATS connections in a swarm process, each subscribed to the pub/sub bench subject;
/// returns once the server has every subscription.
pub fn nats_pubsub_swarm(n: usize) -> Result<ChildGuard, Failure> {
    let mut cmd = Command::new(proc::orb_exe()?);
    cmd.args(["bench-swarm", "--side", "nats", "--server", &nats_url(), "--agents", &n.to_string(), "--pubsub"])
        .env("ORB_LOG", "error");
    swarm_ready(cmd, n)
}

fn swarm_ready(cmd: Command, n: usize) -> Result<ChildGuard, Failure> {
    let child = ChildGuard::spawn(cmd, true)?;
    let limit = Duration::from_secs(60 + (n as u64) / 100);
    child.wait_line("ready", limit)?;
    Ok(child)
}

/// Connects the requester to NATS.
pub async fn nats_client() -> Result<async_nats::Client, Failure> {
    let url = nats_url();
    async_nats::connect(&url).await.map_err(|e| fail(format!("cannot reach NATS at {url}: {e}")))
}

/// Runs a scenario.
pub async fn run(cmd: BenchCommand) -> Result<u8, Failure> {
    let common = match &cmd {
        BenchCommand::Fanout { common, .. }
        | BenchCommand::Rr { common, .. }
        | BenchCommand::Idle { common, .. }
        | BenchCommand::Storm { common, .. }
        | BenchCommand::Held { common, .. }
        | BenchCommand::Pubsub { common, .. } => common,
    };
    check_codec(&common.codec)?;
    match cmd {
        BenchCommand::Fanout { agents, trials, ttl, common } => fanout::run(agents, trials.max(1), ttl, &common).await,
        BenchCommand::Rr { inflight, count, trials, common } => {
            rr::run(inflight.max(1), count.max(1), trials.max(1), &common).await
        }
        BenchCommand::Idle { connections, common } => idle::run(connections.max(1), &common).await,
        BenchCommand::Storm { agents, trials, common } => storm::run(agents.max(1), trials.max(1), &common).await,
        BenchCommand::Held { devices, trials, common } => held::run(devices.max(1), trials.max(1), &common).await,
        BenchCommand::Pubsub { subscribers, messages, probes, trials, common } => {
            let subscribers = subscribers.max(1);
            let messages = messages.unwrap_or_else(|| pubsub::default_messages(subscribers)).max(1);
            pubsub::run(subscribers, messages, probes.max(1), trials.max(1), &common).await
        }
    }
}

/// Prints a report: human lines, then (with `--json`) one JSON object.
pub fn report(common: &CommonArgs, lines: &[String], json: &serde_json::Value) {
    if common.json {
        for l in lines {
            eprintln!("{l}");
        }
        outln!("{json}");
    } else {
        for l in lines {
            outln!("{l}");
        }
    }
}

/// Milliseconds of a duration as f64.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

//! The command-line model (clap derive): every sub-command, flag and environment variable.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// orb: run commands on a fleet of machines and collect one result per machine.
#[derive(Debug, Parser)]
#[command(name = "orb", version, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// More logging (-v debug, -vv trace). `ORB_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

const EXIT_CODES: &str = "Exit codes: 0 ok; 1 a target failed or nothing matched; 2 usage error; \
69 server unreachable; 77 authentication or permission refused; 78 bad configuration.";

/// The sub-commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the broker: agents on TCP (7700), HTTP + WebSocket (7780), data in ./orb-data.
    #[cfg(feature = "server")]
    Serve(ServeArgs),
    /// Run an agent: connect to the server and answer commands (ping, echo, sys.info).
    Agent(AgentArgs),
    /// Send a command to every device a selector matches and print one result per device.
    Send(SendArgs),
    /// List connected devices.
    Devices(DevicesArgs),
    /// Start an embedded server with in-process agents, run a few jobs, print the results.
    #[cfg(feature = "server")]
    Demo(DemoArgs),
}

/// Where the server is and how to authenticate; shared by every client command.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// Server URL: tcp://HOST:PORT or ws://HOST:PORT/v1/ws.
    #[arg(long, env = "ORB_SERVER", default_value = "tcp://127.0.0.1:7700")]
    pub server: String,
    /// Token (admin token for operator commands, agent token for agents). On loopback, read from
    /// ./orb-data when not given.
    #[arg(long, env = "ORB_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the token.
    #[arg(long, env = "ORB_TOKEN_FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
}

/// `orb serve`.
#[cfg(feature = "server")]
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TCP address for agents and clients.
    #[arg(long, default_value = "127.0.0.1:7700")]
    pub listen: std::net::SocketAddr,
    /// HTTP address (WebSocket at /v1/ws, health at /v1/health).
    #[arg(long, default_value = "127.0.0.1:7780")]
    pub http: std::net::SocketAddr,
    /// Data folder (tokens are generated here on first start).
    #[arg(long, default_value = "orb-data")]
    pub data: PathBuf,
    /// Operator token (default: generated into DATA/admin.token).
    #[arg(long, hide_env_values = true)]
    pub admin_token: Option<String>,
    /// File holding the operator token.
    #[arg(long, conflicts_with = "admin_token")]
    pub admin_token_file: Option<PathBuf>,
    /// Agent token (default: generated into DATA/agent.token).
    #[arg(long, hide_env_values = true)]
    pub agent_token: Option<String>,
    /// File holding the agent token.
    #[arg(long, conflicts_with = "agent_token")]
    pub agent_token_file: Option<PathBuf>,
    /// A named selector for `group:NAME`, as NAME=SELECTOR (repeatable).
    #[arg(long = "group", value_name = "NAME=SELECTOR")]
    pub groups: Vec<String>,
}

/// `orb agent`.
#[derive(Debug, Args)]
pub struct AgentArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// This device's id: [A-Za-z0-9][A-Za-z0-9_-]{0,63}.
    #[arg(long)]
    pub id: String,
    /// A tag reported to the server, as KEY=VALUE (repeatable).
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
    /// The agent's own state folder (default ./orb-agent/ID), locked while the agent runs.
    #[arg(long)]
    pub data: Option<PathBuf>,
}

/// `orb send`.
#[derive(Debug, Args)]
pub struct SendArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Target selector: '*', ids, globs, tag:K=V, group:NAME, and/or/not, parentheses.
    pub target: String,
    /// Command name.
    pub command: String,
    /// Arguments as JSON; a bare word is taken as a JSON string.
    pub args: Option<String>,
    /// Deadline: a target that has not answered by then is `timeout`.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub wait: Duration,
    /// One JSON object per target per line, then a summary line.
    #[arg(long)]
    pub json: bool,
    /// Show which devices match; send nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `orb devices`.
#[derive(Debug, Args)]
pub struct DevicesArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Only devices matching this selector.
    pub selector: Option<String>,
    /// Print one JSON array.
    #[arg(long)]
    pub json: bool,
}

/// `orb demo`.
#[cfg(feature = "server")]
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Number of in-process agents.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=5000))]
    pub agents: u32,
}

/// Parses `10s`, `500ms`, `2m`, `1h 30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s)
        .map_err(|e| format!("'{s}' is not a duration like 10s or 500ms: {e}"))?;
    if d.is_zero() {
        return Err("the duration must be above zero".into());
    }
    Ok(d)
}

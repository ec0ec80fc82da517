//! The command-line model (clap derive): every sub-command, flag and environment variable.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// orb: run commands on a fleet of machines and collect one result per machine.
#[derive(Debug, Parser)]
#[command(name = "orb", version = VERSION, about, after_help = EXIT_CODES)]
pub struct Cli {
    /// More logging (-v debug, -vv trace). `ORB_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Configuration file (default: $ORB_CONFIG, then /etc/orb/orb.toml when it exists).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// `orb --version`: the package version and the git revision it was built from.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("ORB_GIT_REVISION"), ")");

const EXIT_CODES: &str = "Exit codes: 0 ok; 1 a target failed or nothing matched; 2 usage error; \
69 server (or its database) unreachable; 75 temporary failure (the data folder is in use); \
77 authentication or permission refused; 78 bad configuration; \
130 interrupted (orb send detached from its job, or cancelled it).";

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
    /// List known devices (online, offline, revoked); show, add, remove, revoke and tag them.
    Devices(DevicesArgs),
    /// List recent jobs; show one job's results; cancel a running job.
    Jobs(JobsArgs),
    /// Start an embedded server with in-process agents, run a few jobs, print the results.
    #[cfg(feature = "server")]
    Demo(DemoArgs),
    /// Send one admin message to a server: QUIT, RELOAD, LOG_ROTATE or PING.
    Signal(SignalArgs),
    /// Print, check or show the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Measure a real server end to end (fanout, rr, idle, storm), optionally against NATS.
    #[cfg(feature = "server")]
    #[command(subcommand)]
    Bench(crate::bench::BenchCommand),
    /// The simulated agents of `orb bench` (started by it; not for direct use).
    #[cfg(feature = "server")]
    #[command(hide = true)]
    BenchSwarm(crate::bench::swarm::SwarmArgs),
    /// Print version information (`--json`: protocol version and features too).
    Version {
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) generated from this command line definition.
    Man,
}

/// `orb config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the commented default configuration.
    Default,
    /// Validate a configuration file and report every problem at once (exit 78 when invalid).
    Check {
        /// The file to check.
        file: PathBuf,
    },
    /// Print the configuration in force: defaults, file, ORB_<SECTION>__<KEY> variables.
    Show {
        /// Merge every layer (the default and only mode; secrets are redacted).
        #[arg(long)]
        effective: bool,
    },
}

/// Where the server is and how to authenticate; shared by every client command.
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// Server URL: tcp://HOST:PORT or ws://HOST:PORT/v1/ws.
    #[arg(long, env = "ORB_SERVER", default_value = "tcp://127.0.0.1:7700", global = true)]
    pub server: String,
    /// Token (admin token for operator commands, agent token for agents). On loopback, read from
    /// ./orb-data when not given.
    #[arg(long, env = "ORB_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// File holding the token.
    #[arg(long, env = "ORB_TOKEN_FILE", conflicts_with = "token", global = true)]
    pub token_file: Option<PathBuf>,
}

/// `orb serve`. Flags override the configuration file and environment.
#[cfg(feature = "server")]
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// TCP address for agents and clients [default: 127.0.0.1:7700].
    #[arg(long)]
    pub listen: Option<String>,
    /// HTTP address: WebSocket at /v1/ws, health at /v1/health [default: 127.0.0.1:7780].
    #[arg(long)]
    pub http: Option<String>,
    /// Data folder; tokens are generated here on first start [default: orb-data].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Store: sqlite:PATH or postgres://USER@HOST:PORT/DB [default: sqlite in DATA/orb.db].
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
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
    /// Log every frame in and out at TRACE level.
    #[arg(long)]
    pub trace: bool,
    /// Write logs to this file (reopened on SIGHUP and LOG_ROTATE) instead of stderr.
    #[arg(long)]
    pub log_file: Option<PathBuf>,
}

/// `orb agent`. Flags override the `[agent]` section of the configuration file and environment.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Server URL(s): repeat or comma-separate; later ones are backups [default: tcp://127.0.0.1:7700].
    #[arg(long, env = "ORB_SERVER", value_delimiter = ',')]
    pub server: Vec<String>,
    /// Agent token. On loopback, read from ./orb-data/agent.token when not given.
    #[arg(long, env = "ORB_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// File holding the agent token.
    #[arg(long, env = "ORB_TOKEN_FILE", conflicts_with = "token")]
    pub token_file: Option<PathBuf>,
    /// This device's id: [A-Za-z0-9][A-Za-z0-9_-]{0,63}. Without it (and without a saved
    /// credential) the server assigns one when the agent enrolls.
    #[arg(long)]
    pub id: Option<String>,
    /// File holding this device's secret (printed by `orb devices add ID`); needs --id. Not
    /// needed once DATA/credentials.json holds the credential.
    #[arg(long, value_name = "FILE")]
    pub secret_file: Option<PathBuf>,
    /// A tag reported to the server, as KEY=VALUE (repeatable).
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
    /// The agent's own state folder, locked while the agent runs; its credentials.json holds the
    /// device id and secret once enrolled [default: ./orb-agent/ID, ./orb-agent/default without --id].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Exit (code 69) after this long without a connection [default: never].
    #[arg(long, value_parser = parse_duration)]
    pub give_up_after: Option<Duration>,
    /// Write logs to this file instead of stderr.
    #[arg(long)]
    pub log_file: Option<PathBuf>,
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
    /// Only devices connected now: the others are skipped (counted in the summary), so a
    /// registered device that is not running does not fail every '*'.
    #[arg(long)]
    pub online: bool,
}

/// `orb signal`.
#[derive(Debug, Args)]
pub struct SignalArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// QUIT (graceful stop), RELOAD (configuration), LOG_ROTATE (reopen the log file) or PING.
    pub message: String,
    /// Parameters as NAME=VALUE.
    #[arg(value_name = "NAME=VALUE")]
    pub params: Vec<String>,
}

/// `orb devices`: the list (no sub-command), or one of the sub-commands.
#[derive(Debug, Args)]
pub struct DevicesArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Only devices matching this selector.
    pub selector: Option<String>,
    /// JSON output: the list as one array, other answers as one object.
    #[arg(long, global = true)]
    pub json: bool,
    /// Only devices connected now.
    #[arg(long)]
    pub connected: bool,
    /// Only the counts: known, connected, revoked.
    #[arg(long, conflicts_with_all = ["selector", "connected"])]
    pub summary: bool,
    #[command(subcommand)]
    pub action: Option<DevicesCommand>,
}

/// `orb devices ...` sub-commands.
#[derive(Debug, Subcommand)]
pub enum DevicesCommand {
    /// Everything known about one device: identity, credential, tags with their source,
    /// inventory, live connection statistics.
    Show {
        /// Device id.
        id: String,
    },
    /// Pre-register a device and print its credential (shown only this once).
    Add {
        /// The new device's id.
        id: String,
        /// An operator tag, as KEY=VALUE (repeatable).
        #[arg(long = "tag", value_name = "KEY=VALUE")]
        tags: Vec<String>,
    },
    /// Forget a device: its record, tags and credential (a running agent is disconnected).
    #[command(alias = "remove")]
    Rm {
        /// Device id.
        id: String,
    },
    /// Disable a device's credential and close its session now; it cannot connect again.
    Revoke {
        /// Device id.
        id: String,
    },
    /// Set operator tags (they win over tags the agent reports).
    Tag {
        /// Device id.
        id: String,
        /// Tags as KEY=VALUE.
        #[arg(value_name = "KEY=VALUE", required = true)]
        tags: Vec<String>,
    },
    /// Remove operator tags.
    Untag {
        /// Device id.
        id: String,
        /// Tag keys.
        #[arg(value_name = "KEY", required = true)]
        keys: Vec<String>,
    },
}

/// `orb jobs`: recent jobs (no sub-command), or one of the sub-commands.
#[derive(Debug, Args)]
pub struct JobsArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// JSON output: the list as one array, other answers as one object.
    #[arg(long, global = true)]
    pub json: bool,
    /// At most this many jobs, newest first [server default: 50].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: Option<u32>,
    #[command(subcommand)]
    pub action: Option<JobsCommand>,
}

/// `orb jobs ...` sub-commands.
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// One job: its command and state, every target's result, the targets still pending.
    Show {
        /// Job id, or a unique prefix of it.
        id: String,
    },
    /// Cancel a job: pending targets become `cancelled`, agents running it are told to stop.
    Cancel {
        /// Job id, or a unique prefix of it.
        id: String,
    },
}

/// `orb demo`.
#[cfg(feature = "server")]
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Number of in-process agents (at least 3: one per role).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(3..=5000))]
    pub agents: u32,
}

/// Parses `10s`, `500ms`, `2m`, `1h 30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("'{s}' is not a duration like 10s or 500ms: {e}"))?;
    if d.is_zero() {
        return Err("the duration must be above zero".into());
    }
    Ok(d)
}

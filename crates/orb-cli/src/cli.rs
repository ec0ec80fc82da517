//! The command-line model (clap derive): every sub-command, flag and environment variable.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// orb: run commands on a fleet of machines and collect one result per machine.
#[derive(Debug, Parser)]
#[command(name = "orb", version = VERSION, about, after_help = crate::help::TOP)]
pub struct Cli {
    /// More logging (-v debug, -vv trace). `ORB_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Configuration file (default: $ORB_CONFIG, then for client commands
    /// ~/.config/orb/config.toml, then /etc/orb/orb.toml, each when it exists).
    #[arg(long, global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// `orb --version`: the package version and the git revision it was built from.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("ORB_GIT_REVISION"), ")");

/// The sub-commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the broker: agents on TCP (7700), HTTP + WebSocket (7780), data in ./orb-data.
    #[cfg(feature = "server")]
    #[command(after_help = crate::help::SERVE)]
    Serve(ServeArgs),
    /// Run an agent: connect to the server and answer commands (ping, echo, sleep, sys.info, agent.config; exec when allowed).
    #[command(after_help = crate::help::AGENT)]
    Agent(AgentArgs),
    /// Send a command to every device a selector matches and print one result per device.
    #[command(after_help = crate::help::SEND, mut_arg("output", |a| a.help(SEND_OUTPUT)))]
    Send(Box<SendArgs>),
    /// List known devices (online, offline, revoked); show, add, remove, revoke and tag them.
    #[command(after_help = crate::help::DEVICES)]
    Devices(DevicesArgs),
    /// List recent jobs; show one job's results; cancel a running job.
    #[command(after_help = crate::help::JOBS)]
    Jobs(JobsArgs),
    /// Operator tokens with roles (admin, operator, viewer): add one (shown once), list, revoke.
    #[command(after_help = crate::help::TOKENS)]
    Tokens(TokensArgs),
    /// What the devices handle: each declared command with how many devices declare it.
    #[command(after_help = crate::help::COMMANDS)]
    Commands(CommandsArgs),
    /// The audit log: who changed what, when and from where (admin only), newest first.
    #[command(after_help = crate::help::AUDIT)]
    Audit(AuditArgs),
    /// Start an embedded server with in-process agents, run a few jobs, print the results.
    #[cfg(feature = "server")]
    #[command(after_help = crate::help::DEMO)]
    Demo(DemoArgs),
    /// Publish one message on a topic (its subscribers get it once each).
    #[command(after_help = crate::help::PUB)]
    Pub(PubArgs),
    /// Print the messages published on topics matching a pattern as they arrive.
    #[command(after_help = crate::help::SUB)]
    Sub(SubArgs),
    /// Print the server's own events as they happen: devices coming and going ($orb.>).
    #[command(after_help = crate::help::TAIL)]
    Tail(TailArgs),
    /// Send one admin message to a server: QUIT, RELOAD, LOG_ROTATE or PING.
    #[command(after_help = crate::help::SIGNAL)]
    Signal(SignalArgs),
    /// Stored schedules: list, show, pause, resume, rm; preview when a cron or interval fires.
    #[command(subcommand, after_help = crate::help::SCHEDULE)]
    Schedule(ScheduleCommand),
    /// Named servers with their token files (add, use, ls, show, rm), like `nats context`.
    #[command(subcommand)]
    #[command(after_help = crate::help::CONTEXT)]
    Context(ContextCommand),
    /// Print, check or show the configuration.
    #[command(subcommand, after_help = crate::help::CONFIG)]
    Config(ConfigCommand),
    /// Certificates for TLS: `orb cert dev` makes a development CA, server and client certificates.
    #[cfg(feature = "server")]
    #[command(subcommand, after_help = crate::help::CERT)]
    Cert(CertCommand),
    /// Measure a real server end to end (fanout, rr, idle, storm), optionally against NATS.
    #[cfg(feature = "server")]
    #[command(subcommand, after_help = crate::help::BENCH)]
    Bench(crate::bench::BenchCommand),
    /// The simulated agents of `orb bench` (started by it; not for direct use).
    #[cfg(feature = "server")]
    #[command(hide = true)]
    BenchSwarm(crate::bench::swarm::SwarmArgs),
    /// Check durability: SIGKILL the server and agents at random, then verify nothing was lost, run twice or reordered.
    #[cfg(feature = "server")]
    #[command(after_help = crate::help::CRASHCHECK)]
    Crashcheck(crate::crashcheck::CrashArgs),
    /// The agent `orb crashcheck` starts and kills (started by it; not for direct use).
    #[cfg(feature = "server")]
    #[command(hide = true)]
    CrashcheckAgent(crate::crashcheck::agent::CrashAgentArgs),
    /// Print version information (`--json`: protocol version and features too).
    #[command(after_help = crate::help::VERSION)]
    Version {
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    #[command(after_help = crate::help::COMPLETIONS)]
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) of orb or of one sub-command, or write every page to a folder.
    #[command(after_help = crate::help::MAN)]
    Man(ManArgs),
}

/// `orb cert ...`.
#[cfg(feature = "server")]
#[derive(Debug, Subcommand)]
pub enum CertCommand {
    /// Make a development CA (ca.crt, ca.key), a server certificate (server.crt, server.key) for
    /// localhost, 127.0.0.1, ::1 and each --host, and a client certificate per --client ID.
    #[command(after_help = crate::help::CERT_DEV)]
    Dev(CertDevArgs),
}

/// `orb cert dev`.
#[cfg(feature = "server")]
#[derive(Debug, Args)]
pub struct CertDevArgs {
    /// The folder to write into (created if missing). A ca.crt and ca.key already there are
    /// reused, so clients can be added later.
    #[arg(long, value_name = "DIR", default_value = "orb-certs")]
    pub out: PathBuf,
    /// Another name (DNS name or IP address) for the server certificate (repeatable).
    #[arg(long = "host", value_name = "NAME")]
    pub hosts: Vec<String>,
    /// Also make client-ID.crt and client-ID.key for device ID (repeatable): CN ID, URI SAN
    /// urn:orb:device:ID.
    #[arg(long = "client", value_name = "ID")]
    pub clients: Vec<String>,
    /// Replace server and client files that exist (never the CA).
    #[arg(long)]
    pub force: bool,
}

/// `orb config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the commented default configuration.
    #[command(after_help = crate::help::CONFIG_DEFAULT)]
    Default,
    /// Validate a configuration file and report every problem at once (exit 78 when invalid).
    #[command(after_help = crate::help::CONFIG_CHECK)]
    Check {
        /// The file to check.
        file: PathBuf,
    },
    /// Print the configuration in force: defaults, file, ORB_<SECTION>__<KEY> variables.
    #[command(after_help = crate::help::CONFIG_SHOW)]
    Show {
        /// Merge every layer (the default and only mode; secrets are redacted).
        #[arg(long)]
        effective: bool,
    },
}

/// Where the server is and how to authenticate; shared by every client command. Each setting
/// comes from the first that gives it of: these flags, the environment, the context, the
/// configuration file's `[client]`, the default (see `orb context --help`).
#[derive(Debug, Clone, Args)]
pub struct ConnectArgs {
    /// Server URL: tcp://HOST:PORT, tls://HOST:PORT, ws://HOST:PORT/v1/ws or wss://HOST:PORT/v1/ws.
    /// Else $ORB_SERVER, the context's, [client] server, or tcp://127.0.0.1:7700.
    #[arg(long, global = true, value_name = "URL")]
    pub server: Option<String>,
    /// Admin token (visible to other local users in `ps`: prefer --token-file). Else $ORB_TOKEN,
    /// $ORB_TOKEN_FILE, the context's token file, [client] token_file, or for a loopback server
    /// ./orb-data/admin.token.
    #[arg(long, global = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// File holding the admin token.
    #[arg(long, conflicts_with = "token", global = true, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Use this context (`orb context ls`). Else $ORB_CONTEXT, the one `orb context use`
    /// selected, or [client] context.
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// The configuration file given with the global `--config` (copied here by `main`).
    #[arg(skip)]
    pub config: Option<PathBuf>,
}

/// TLS settings of a client (`tls://` and `wss://` servers): whom to trust and what to present.
#[derive(Debug, Clone, Default, Args)]
pub struct TlsArgs {
    /// CA certificate (PEM) the server's certificate must chain to, for tls:// and wss:// [default:
    /// the context's, else the system's trust store].
    #[arg(long, global = true, env = "ORB_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) to present (mTLS); needs --key.
    #[arg(long, global = true, env = "ORB_CERT", value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, global = true, env = "ORB_KEY", value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
}

impl Command {
    /// The connection settings of a client command, if this is one.
    pub fn connect_mut(&mut self) -> Option<&mut ConnectArgs> {
        match self {
            Command::Send(a) => Some(&mut a.connect),
            Command::Devices(a) => Some(&mut a.connect),
            Command::Tokens(a) => Some(&mut a.connect),
            Command::Audit(a) => Some(&mut a.connect),
            Command::Commands(a) => Some(&mut a.connect),
            Command::Jobs(a) => Some(&mut a.connect),
            Command::Signal(a) => Some(&mut a.connect),
            Command::Pub(a) => Some(&mut a.connect),
            Command::Sub(a) => Some(&mut a.follow.connect),
            Command::Tail(a) => Some(&mut a.follow.connect),
            Command::Schedule(ScheduleCommand::List(a)) => Some(&mut a.connect),
            Command::Schedule(
                ScheduleCommand::Show(a)
                | ScheduleCommand::Pause(a)
                | ScheduleCommand::Resume(a)
                | ScheduleCommand::Rm(a),
            ) => Some(&mut a.connect),
            _ => None,
        }
    }
}

/// `orb context ...`: named servers with their token files, like `nats context`.
#[derive(Debug, Subcommand)]
pub enum ContextCommand {
    /// Save a context: a server URL, the file holding its admin token, a description.
    #[command(after_help = crate::help::CONTEXT_ADD)]
    Add(ContextAddArgs),
    /// Make NAME the context client commands use ($ORB_CONTEXT and --context still win).
    #[command(after_help = crate::help::CONTEXT_USE)]
    Use {
        /// Context name.
        name: String,
    },
    /// List the contexts; `*` marks the one in force.
    #[command(alias = "list", after_help = crate::help::CONTEXT_LS)]
    Ls {
        /// The list as one JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Show one context (default: the one in force) and whether its token file is readable.
    #[command(after_help = crate::help::CONTEXT_SHOW)]
    Show {
        /// Context name.
        name: Option<String>,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Delete a context (its token file is left alone).
    #[command(alias = "remove", after_help = crate::help::CONTEXT_RM)]
    Rm {
        /// Context name.
        name: String,
    },
}

/// `orb context add`.
#[derive(Debug, Args)]
pub struct ContextAddArgs {
    /// Context name: [A-Za-z0-9][A-Za-z0-9_.-]{0,63}.
    pub name: String,
    /// Server URL: tcp://HOST:PORT, tls://HOST:PORT, ws://HOST:PORT/v1/ws or wss://HOST:PORT/v1/ws.
    #[arg(long, value_name = "URL")]
    pub server: String,
    /// File holding the admin token; its absolute path is saved, never the token.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// CA certificate (PEM) for a tls:// or wss:// server; its absolute path is saved.
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) to present; its absolute path is saved. Needs --key.
    #[arg(long, value_name = "FILE", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM); its absolute path is saved.
    #[arg(long, value_name = "FILE", requires = "cert")]
    pub key: Option<PathBuf>,
    /// A line of text shown by `orb context ls`.
    #[arg(long, value_name = "TEXT")]
    pub description: Option<String>,
    /// Replace a context of that name.
    #[arg(long)]
    pub force: bool,
    /// Also make it the context in use (as `orb context use NAME`).
    #[arg(long = "use")]
    pub select: bool,
    /// Refused: a context keeps the path of a token file, never a token (use --token-file).
    #[arg(long, hide = true, value_name = "TOKEN")]
    pub token: Option<String>,
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
    /// Server certificate chain (PEM): with it (and --tls-key) both ports speak TLS only, the TCP
    /// port tls://, the HTTP port https:// and wss://. Re-read on SIGHUP.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// The server certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// CA certificate (PEM) client certificates are verified against (mTLS); a verified
    /// certificate authenticates the device it names.
    #[arg(long, value_name = "FILE")]
    pub tls_client_ca: Option<PathBuf>,
    /// Refuse clients without a certificate from --tls-client-ca.
    #[arg(long)]
    pub require_client_cert: bool,
}

/// `orb agent`. Flags override the `[agent]` section of the configuration file and environment.
#[derive(Debug, Args)]
pub struct AgentArgs {
    /// Server URL(s): tcp://, tls://, ws:// or wss://; repeat or comma-separate; later ones are
    /// backups [default: tcp://127.0.0.1:7700].
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
    /// CA certificate (PEM) the server's certificate must chain to, for tls:// and wss://
    /// [default: the system's trust store].
    #[arg(long, env = "ORB_CA_CERT", value_name = "FILE")]
    pub ca_cert: Option<PathBuf>,
    /// Client certificate (PEM) to present (mTLS): it authenticates this device (URI SAN
    /// urn:orb:device:ID, else CN), so no token is needed. Needs --key.
    #[arg(long, env = "ORB_CERT", value_name = "FILE")]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, env = "ORB_KEY", value_name = "FILE")]
    pub key: Option<PathBuf>,
    /// Run without a server: sample the machine every [telemetry] interval and write one JSON
    /// line per sample to stdout (or --telemetry-file); no connection, no commands.
    #[arg(long)]
    pub standalone: bool,
    /// With --standalone: append the JSON lines to FILE instead of writing them to stdout.
    #[arg(long, value_name = "FILE", requires = "standalone")]
    pub telemetry_file: Option<PathBuf>,
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
    #[arg(long, visible_alias = "timeout", default_value = "10s", value_parser = parse_duration)]
    pub wait: Duration,
    #[command(flatten)]
    pub output: crate::output::OutputArgs,
    /// Hold the command for targets that are not connected, up to this long: it is delivered
    /// when they connect (their status is `queued` meanwhile; `orb jobs wait ID` follows them),
    /// or they end `expired` [default: not held: such targets end `offline`].
    #[arg(long, value_parser = parse_duration, value_name = "DURATION")]
    pub ttl: Option<Duration>,
    /// Show which devices match; send nothing.
    #[arg(long, conflicts_with = "async_")]
    pub dry_run: bool,
    /// Print the job id once the server accepted the job and return; the job runs on (follow it
    /// with `orb jobs wait ID`).
    #[arg(long = "async")]
    pub async_: bool,
    /// Only devices connected now: the others are skipped (counted in the summary), so a
    /// registered device that is not running does not fail every '*'.
    #[arg(long)]
    pub online: bool,
    /// Exactly one of the matching connected devices: the one with the fewest such commands in
    /// flight. If it disconnects before answering, the command goes to another.
    #[arg(long, conflicts_with_all = ["online", "ttl", "when", "splay", "batch"])]
    pub one: bool,
    #[command(flatten)]
    pub rollout: RolloutArgs,
    #[command(flatten)]
    pub when: WhenArgs,
    /// IANA time zone for --cron and a local --at (default: this machine's zone).
    #[arg(long, value_name = "ZONE", requires = "when", help_heading = "Scheduling")]
    pub tz: Option<String>,
    /// Firings missed while no server ran: skip (default) or run-once (fire once when it is back).
    #[arg(long, value_name = "POLICY", requires = "when", help_heading = "Scheduling")]
    pub missed: Option<String>,
    /// Run the schedule on each matching device, by its own clock, also while it is disconnected
    /// (devices that match later get it too); each run's result reaches the server through the
    /// device's outbox and is listed by `orb jobs --schedule ID`. With --missed, "no server ran"
    /// reads "the agent did not run".
    /// It repeats: --at and --in are refused.
    #[arg(
        long,
        requires = "when",
        conflicts_with_all = ["ttl", "splay", "batch", "at", "in_"],
        help_heading = "Scheduling"
    )]
    pub on_agent: bool,
    /// Show what commands report while they run (exec: their output lines), on stderr, prefixed
    /// by device (`web-1 | line`; JSON objects with --json/-o jsonl): auto (table output to a
    /// terminal), on (always; `--progress` alone), off. Best effort: lines may be dropped.
    #[arg(long, value_enum, value_name = "WHEN", default_value = "auto", num_args = 0..=1, default_missing_value = "on")]
    pub progress: ProgressMode,
}

/// When `orb send` asks for and shows its targets' progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProgressMode {
    /// In table formats, when stderr is a terminal.
    Auto,
    /// Always.
    On,
    /// Never.
    Off,
}

/// How `orb send`'s job reaches its targets: all at once (without these), spread over a window,
/// or a batch at a time (also for each firing of a schedule).
#[derive(Debug, Clone, Default, Args)]
pub struct RolloutArgs {
    /// Spread the dispatch over DURATION (up to 1day): each device waits its own stable offset
    /// within the window, so thousands do not answer at once (with --batch: within each batch).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, help_heading = "Rollout")]
    pub splay: Option<Duration>,
    /// Run on N targets (25) or P% of them (10%) at a time; the next batch starts when every
    /// target of one has an outcome. Progress shows the batch.
    #[arg(long, value_name = "N|P%", value_parser = parse_batch, help_heading = "Rollout")]
    pub batch: Option<orb_proto::rollout::BatchSize>,
    /// Wait DURATION between one batch's end and the next one's start.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "batch", help_heading = "Rollout")]
    pub batch_wait: Option<Duration>,
    /// Stop once more than P% of the targets that ran failed (error or timeout), checked as each
    /// batch ends: the targets not started end cancelled.
    #[arg(long, value_name = "P%", value_parser = parse_abort, requires = "batch", help_heading = "Rollout")]
    pub abort_on_failure: Option<u8>,
}

fn parse_batch(s: &str) -> Result<orb_proto::rollout::BatchSize, String> {
    s.parse().map_err(|e: orb_proto::ErrorBody| e.message)
}

fn parse_abort(s: &str) -> Result<u8, String> {
    orb_proto::rollout::parse_abort_pct(s).map_err(|e| e.message)
}

/// When `orb send` runs its job: now (without these), or later as a schedule stored on the
/// server, which fires it through the same door (`orb schedule list`).
#[derive(Debug, Clone, Default, Args)]
#[group(id = "when", multiple = false, conflicts_with_all = ["async_", "online"])]
pub struct WhenArgs {
    /// Run it once at TIME, RFC 3339 (2026-12-24T18:00:00+01:00) or local YYYY-MM-DD HH:MM[:SS]
    /// in --tz: stores a schedule and prints its id.
    #[arg(long, value_name = "TIME", help_heading = "Scheduling")]
    pub at: Option<String>,
    /// Run it once after DURATION (90s, 10m, 2h): stores a schedule and prints its id.
    #[arg(long = "in", value_name = "DURATION", help_heading = "Scheduling")]
    pub in_: Option<String>,
    /// Run it every DURATION (1s to 365days), the first time one interval from now.
    #[arg(long, value_name = "DURATION", help_heading = "Scheduling")]
    pub every: Option<String>,
    /// Run it on a crontab schedule: 5 fields (minute hour day-of-month month day-of-week), 6
    /// with seconds first, or @daily, @hourly, ... (`orb schedule preview` shows the times).
    #[arg(long, value_name = "EXPR", help_heading = "Scheduling")]
    pub cron: Option<String>,
}

/// What `-o` means for `orb send`.
const SEND_OUTPUT: &str = "Output format: table (default: a row per target as its result arrives), wide (nothing \
cut), json (one object per target per line, then the summary line), yaml (one document per target, then the \
summary), name (the device ids)";

/// `orb pub`.
#[derive(Debug, Args)]
pub struct PubArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Topic: dot-separated segments (telemetry.gw-1.cpu); no wildcards, not under $orb.
    pub topic: String,
    /// Body as JSON; a bare word is taken as a JSON string [default: null].
    pub body: Option<String>,
    /// Keep it as the topic's retained message (stored): every later subscription that matches
    /// gets it first. A null body clears the topic's retained message.
    #[arg(long)]
    pub retain: bool,
}

/// `orb sub`.
#[derive(Debug, Args)]
pub struct SubArgs {
    /// Pattern: a topic whose segments may be * (exactly one) and whose last may be > (the
    /// rest): telemetry.*.cpu, telemetry.>, $orb.> (the server's events).
    pub pattern: String,
    #[command(flatten)]
    pub follow: FollowArgs,
}

/// `orb tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    #[command(flatten)]
    pub follow: FollowArgs,
}

/// How `orb sub` and `orb tail` follow messages: where from, until when, printed how.
#[derive(Debug, Args)]
pub struct FollowArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Stop after N messages (exit 0; 1 if the timeout comes first).
    #[arg(long, value_name = "N")]
    pub count: Option<u64>,
    /// Stop after DURATION (exit 0 without --count).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    #[command(flatten)]
    pub output: crate::output::OutputArgs,
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

/// `orb tokens`: the list (no sub-command), or one of the sub-commands.
#[derive(Debug, Args)]
pub struct TokensArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Output: the list as a table, one JSON array, YAML or names; a new token as text, one
    /// JSON object, YAML or the token alone.
    #[command(flatten)]
    pub output: crate::output::OutputArgs,
    #[command(subcommand)]
    pub action: Option<TokensCommand>,
}

/// `orb commands`: the commands the matching devices declare.
#[derive(Debug, Args)]
pub struct CommandsArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Only devices matching this selector (default: every known device).
    pub selector: Option<String>,
    /// Output: a table, a wide table (with the device ids), one JSON array, YAML or the command
    /// names.
    #[command(flatten)]
    pub output: crate::output::OutputArgs,
    /// Only devices connected now.
    #[arg(long)]
    pub connected: bool,
}

/// `orb audit`: the audit log's newest entries.
#[derive(Debug, Args)]
pub struct AuditArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Output: a table, a wide table (with the details), one JSON array, YAML or the entries'
    /// ids.
    #[command(flatten)]
    pub output: crate::output::OutputArgs,
    /// Only entries from this time on: RFC 3339 (2025-06-01T08:00:00Z) or a duration back from
    /// now (1h, 7d).
    #[arg(long, value_name = "TIME|DURATION", value_parser = parse_since)]
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    /// At most this many entries (1 to 1000), newest first [server default: 100].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: Option<u32>,
}

/// Parses `--since`: an RFC 3339 time, or a duration back from now.
fn parse_since(s: &str) -> Result<chrono::DateTime<chrono::Utc>, String> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.to_utc());
    }
    let d = humantime::parse_duration(s)
        .map_err(|_| format!("'{s}' is neither an RFC 3339 time (2025-06-01T08:00:00Z) nor a duration (1h, 7d)"))?;
    let d = chrono::Duration::from_std(d).map_err(|e| format!("'{s}': {e}"))?;
    chrono::Utc::now().checked_sub_signed(d).ok_or_else(|| format!("'{s}' reaches before the earliest time"))
}

/// `orb tokens ...` sub-commands.
#[derive(Debug, Subcommand)]
pub enum TokensCommand {
    /// Make a token with a role and print it (shown only this once; the server keeps its hash).
    #[command(after_help = crate::help::TOKENS_ADD)]
    Add {
        /// The token's name (the job history shows it as the requester).
        name: String,
        /// admin (everything), operator (send and schedule where [[acl.operators]] rules allow,
        /// cancel, read) or viewer (read only).
        #[arg(long, value_parser = ["admin", "operator", "viewer"])]
        role: String,
        /// The token expires this long after it is made (e.g. 2h, 30d; at most ten years);
        /// without it, it never expires.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        expires: Option<Duration>,
    },
    /// Revoke a token: it admits nobody from its next command on.
    #[command(after_help = crate::help::TOKENS_REVOKE)]
    Revoke {
        /// The token's name.
        name: String,
    },
}

/// `orb devices`: the list (no sub-command), or one of the sub-commands.
#[derive(Debug, Args)]
pub struct DevicesArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Only devices matching this selector.
    pub selector: Option<String>,
    /// Output: the list as a table, wide table, one JSON array, YAML or ids; other answers as
    /// text, one JSON object, YAML or the id.
    #[command(flatten)]
    pub output: crate::output::OutputArgs,
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
    #[command(after_help = crate::help::DEVICES_SHOW)]
    Show {
        /// Device id.
        id: String,
    },
    /// A device's newest messages from its durable outbox, oldest first.
    #[command(after_help = crate::help::DEVICES_MESSAGES)]
    Messages {
        /// Device id.
        id: String,
        /// Show the newest N (at most 10000).
        #[arg(long, short = 'n', default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        limit: u32,
    },
    /// Pre-register a device and print its credential (shown only this once).
    #[command(after_help = crate::help::DEVICES_ADD)]
    Add {
        /// The new device's id.
        id: String,
        /// An operator tag, as KEY=VALUE (repeatable).
        #[arg(long = "tag", value_name = "KEY=VALUE")]
        tags: Vec<String>,
    },
    /// Forget devices: their records, tags and credentials (running agents are disconnected).
    #[command(alias = "remove", after_help = crate::help::DEVICES_RM)]
    Rm {
        #[command(flatten)]
        bulk: BulkArgs,
    },
    /// Disable devices' credentials and close their sessions now; they cannot connect again.
    #[command(after_help = crate::help::DEVICES_REVOKE)]
    Revoke {
        #[command(flatten)]
        bulk: BulkArgs,
    },
    /// Set operator tags (they win over tags the agent reports).
    #[command(after_help = crate::help::DEVICES_TAG)]
    Tag {
        #[command(flatten)]
        bulk: BulkArgs,
        /// Tags as KEY=VALUE.
        #[arg(value_name = "KEY=VALUE", required = true)]
        tags: Vec<String>,
    },
    /// Remove operator tags.
    #[command(after_help = crate::help::DEVICES_UNTAG)]
    Untag {
        #[command(flatten)]
        bulk: BulkArgs,
        /// Tag keys.
        #[arg(value_name = "KEY", required = true)]
        keys: Vec<String>,
    },
}

/// The devices a registry change applies to: one id, or a selector over the known devices.
#[derive(Debug, Clone, Args)]
pub struct BulkArgs {
    /// A device id, or a selector ('cam-*', 'tag:site=lab', ...) over every known device.
    #[arg(value_name = "ID|SELECTOR")]
    pub selector: String,
    /// List the devices the change would apply to; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Apply without asking, however many devices match (rm and revoke ask above 1, tag and
    /// untag above 10; without a terminal to ask on, they refuse instead).
    #[arg(long, short = 'y')]
    pub yes: bool,
}

/// `orb jobs`: recent jobs (no sub-command), or one of the sub-commands.
#[derive(Debug, Args)]
pub struct JobsArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Output: the list as a table, wide table, one JSON array, YAML or full ids; one job as
    /// its results (table), one JSON object or YAML.
    #[command(flatten)]
    pub output: crate::output::OutputArgs,
    /// At most this many jobs (1 to 999), newest first [server default: 50].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=999))]
    pub limit: Option<u32>,
    /// Only the jobs this schedule fired (id or unique prefix; also of a schedule removed, or a
    /// one-shot that fired: its jobs name it).
    #[arg(long, value_name = "ID")]
    pub schedule: Option<String>,
    #[command(subcommand)]
    pub action: Option<JobsCommand>,
}

/// `orb jobs ...` sub-commands.
#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// One job: its command and state, every target's result, the targets still pending.
    #[command(after_help = crate::help::JOBS_SHOW)]
    Show {
        /// Job id, or a unique prefix of it.
        id: String,
        /// Stream the rest of a running job like `orb send` and exit with its exit code.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Wait for a job: print its results (those known, then the rest as they come) and exit
    /// like `orb send` would (0 every target ok, 1 otherwise). Same as `show --follow`.
    #[command(after_help = crate::help::JOBS_WAIT)]
    Wait {
        /// Job id, or a unique prefix of it.
        id: String,
    },
    /// Cancel a job: pending targets become `cancelled`, agents running it are told to stop.
    #[command(after_help = crate::help::JOBS_CANCEL)]
    Cancel {
        /// Job id, or a unique prefix of it.
        id: String,
    },
}

/// `orb schedule ...`. Sub-commands that talk to a server will flatten [`ConnectArgs`] into
/// their own args (and join [`Command::connect_mut`]); `preview` runs locally.
#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// Stored schedules: id, next firing, how often it fired, command and selector.
    #[command(alias = "ls", after_help = crate::help::SCHEDULE_LIST)]
    List(ScheduleListArgs),
    /// One schedule in full (id or unique prefix).
    #[command(after_help = crate::help::SCHEDULE_SHOW)]
    Show(ScheduleIdArgs),
    /// Stop a schedule firing until it is resumed.
    #[command(after_help = crate::help::SCHEDULE_PAUSE)]
    Pause(ScheduleIdArgs),
    /// Let a paused schedule fire again, from its next firing time after now; a one-shot whose
    /// time passed meanwhile fires now (--missed run-once) or ends (skip: exit 1, it says why).
    #[command(after_help = crate::help::SCHEDULE_RESUME)]
    Resume(ScheduleIdArgs),
    /// Remove a schedule (the jobs it fired stay in the history).
    #[command(alias = "remove", after_help = crate::help::SCHEDULE_RM)]
    Rm(ScheduleIdArgs),
    /// Print the next firing times of a cron expression or an interval; contacts no server and
    /// stores nothing.
    #[command(after_help = crate::help::SCHEDULE_PREVIEW)]
    Preview(SchedulePreviewArgs),
}

/// `orb schedule list`.
#[derive(Debug, Args)]
pub struct ScheduleListArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    #[command(flatten)]
    pub output: crate::output::OutputArgs,
}

/// `orb schedule show|pause|resume|rm ID`.
#[derive(Debug, Args)]
pub struct ScheduleIdArgs {
    #[command(flatten)]
    pub connect: ConnectArgs,
    /// Schedule id or a unique prefix of it.
    pub id: String,
    #[command(flatten)]
    pub output: crate::output::OutputArgs,
}

/// How a recurring schedule repeats: exactly one of `--cron` and `--every`.
#[derive(Debug, Clone, Args)]
#[group(required = true, multiple = false)]
pub struct RepeatArgs {
    /// Crontab expression: 5 fields (minute hour day-of-month month day-of-week), 6 with seconds
    /// first, or @yearly, @monthly, @weekly, @daily, @hourly; evaluated in the --tz zone.
    #[arg(long, value_name = "EXPR")]
    pub cron: Option<String>,
    /// Fixed interval from 1s to 365days (90s, 5m, 1h 30m, 2days), anchored at --from.
    #[arg(long, value_name = "DURATION")]
    pub every: Option<String>,
}

/// `orb schedule preview`.
#[derive(Debug, Args)]
pub struct SchedulePreviewArgs {
    #[command(flatten)]
    pub repeat: RepeatArgs,
    /// IANA time zone (Europe/Berlin, America/New_York, UTC) that --cron is evaluated in,
    /// local --from times are read in and times are shown in [default: this machine's zone:
    /// $TZ, else the system setting; a $TZ that is no IANA name, such as CET-1CEST, is warned
    /// about].
    #[arg(long, value_name = "ZONE")]
    pub tz: Option<String>,
    /// Start: list firings strictly after this time, RFC 3339 (2026-03-29T00:00:00+01:00) or
    /// local YYYY-MM-DD HH:MM[:SS] in the --tz zone; may be in the past [default: now].
    #[arg(long, value_name = "TIME")]
    pub from: Option<String>,
    /// How many firing times to print.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = preview_count)]
    pub count: usize,
    /// One JSON array of UTC times (RFC 3339), nothing else.
    #[arg(long)]
    pub json: bool,
}

/// `--count`: 1 to [`orb_schedule::MAX_PREVIEW`].
fn preview_count(s: &str) -> Result<usize, String> {
    let max = orb_schedule::MAX_PREVIEW;
    match s.parse::<usize>() {
        Ok(n) if (1..=max).contains(&n) => Ok(n),
        Ok(_) => Err(format!("must be 1 to {max} (the most orb schedule preview prints)")),
        Err(_) => Err(format!("'{s}' is not a number from 1 to {max}")),
    }
}

/// `orb demo`.
#[cfg(feature = "server")]
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Number of in-process agents (at least 3: one per role).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(3..=5000))]
    pub agents: u32,
}

/// `orb man`.
#[derive(Debug, Args)]
pub struct ManArgs {
    /// The sub-command whose page to print, e.g. `send` or `devices show` [default: orb itself].
    #[arg(value_name = "SUBCOMMAND", conflicts_with = "out")]
    pub command: Vec<String>,
    /// Write every page (orb.1, orb-send.1, orb-devices-show.1, ...) into this folder instead.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
}

/// Parses `10s`, `500ms`, `2m`, `1h 30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s).map_err(|e| format!("'{s}' is not a duration like 10s or 500ms: {e}"))?;
    if d.is_zero() {
        return Err("the duration must be above zero".into());
    }
    Ok(d)
}

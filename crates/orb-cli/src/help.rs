//! Help texts shown after the options of `--help` and in the man pages (Examples, Exit codes, the
//! agent's built-in commands), and [`command`]: the clap command with the help adjustments the
//! derive cannot express.
//!
//! Each text is a list of sections: a line ending in `:` at the left margin starts one (the man
//! pages turn it into a `.SH` heading), indented lines are its body. Keep every example to flags
//! that exist: `tests/help.rs` renders every sub-command's help.

use clap::{Command, CommandFactory, FromArgMatches};

use crate::cli::Cli;

/// The exit codes every sub-command uses (the README's "Exit codes" says the same); a macro so
/// that [`TOP`] can include it with `concat!`.
macro_rules! exit_codes {
    () => {
        "\
Exit codes:
  0    ok
  1    failed: a target was not ok, nothing matched, or the server answered with an error
       (device_not_found, job_not_found, ...)
  2    usage: an unknown flag or sub-command, a missing argument, a bad selector, JSON argument,
       KEY=VALUE or client --server URL, a command no target declares, a schedule orb schedule
       refuses (invalid_cron, unknown_zone, ...) (nothing was sent)
  69   unavailable: the server (or its database) cannot be reached, or the URL names the wrong
       port; orb serve cannot listen; orb agent gave up (--give-up-after)
  70   internal error
  75   temporary: the data folder is in use by another orb serve or orb agent
  77   refused: a wrong or missing token, a revoked or unknown device credential
  78   configuration: an invalid setting (in the file, an ORB_<SECTION>__<KEY> variable or a flag of
       orb serve / orb agent), an unreadable token file
  130  interrupted: Ctrl-C (orb send detached from its job, or cancelled it)
  141  stdout was closed early (orb send ... | head -1)"
    };
}

/// `orb --help`: a short tour, then the exit codes.
pub const TOP: &str = concat!(
    "\
Examples:
  orb serve                                   # server: agents on 127.0.0.1:7700, data in ./orb-data
  orb agent --id web-1 --tag role=web         # an agent; from the server's folder it needs no token
  orb send '*' ping                           # every device: one result each, then a summary
  orb send 'tag:role=web' sys.info --json     # one JSON line per device as results arrive
  orb devices                                 # every known device, online or not
  orb jobs                                    # recent jobs; orb jobs show ID for one
  orb man send                                # the manual page of one sub-command

",
    exit_codes!()
);

/// `orb serve`.
#[cfg(feature = "server")]
pub const SERVE: &str = "\
Examples:
  orb serve                                   # TCP :7700, HTTP :7780 on 127.0.0.1, data ./orb-data
  orb serve --listen 0.0.0.0:7700 --http 0.0.0.0:7780     # reachable from other machines
  orb serve --config orb.toml                 # settings from a file (see orb config default)
  orb serve --data /var/lib/orb --log-file /var/log/orb/orb.log
  orb serve --store postgres://orb@db.example/orb         # PostgreSQL instead of SQLite
  orb serve --group cameras='cam-* and tag:kind=camera'   # selectable as group:cameras
  orb serve --admin-token-file /etc/orb/admin.token --agent-token-file /etc/orb/agent.token
  orb serve --tls-cert certs/server.crt --tls-key certs/server.key    # tls://, https://, wss://
  orb serve --tls-cert certs/server.crt --tls-key certs/server.key --tls-client-ca certs/ca.crt";

/// `orb agent`: the built-in commands, then examples.
pub const AGENT: &str = "\
Built-in commands:
  Arguments are JSON (orb send takes a bare word as a JSON string); docs/agent-commands.md has more.
  ping       no arguments             -> {\"pong\": true}
  echo       any JSON value           -> the same value
  sleep      milliseconds (1500 or {\"ms\": 1500}) or a duration (\"2s\"), at most 24h
                                      -> {\"slept_ms\": N}; `cancelled` when the job is cancelled,
                                         `timeout` when its deadline comes first
  sys.info   no arguments             -> {\"hostname\", \"os\", \"os_version\", \"arch\", \"agent_version\",
                                          \"uptime_s\", \"agent_uptime_s\", \"clock\", \"cpu_percent\", \"cpus\",
                                          \"load_avg\", \"memory\", \"swap\", \"disks\", \"network\"}
  agent.config  no arguments          -> the settings in force (telemetry, log level, exec) and
                                         their source: the agent's file or the server's push
  exec       {\"cmd\": [\"uname\", \"-s\"], \"timeout\": \"30s\", \"stdin\": \"...\"}; off until [exec] allow
             lists argv patterns (\"echo *\"); no shell, clean environment, process group killed
                                      -> {\"exit_code\", \"signal\", \"stdout\", \"stderr\", \"truncated\"};
                                         `not_allowed`, `exit_status` (non-zero exit)

Telemetry:
  The same object is published on telemetry.<id>.sys every [telemetry] interval (default 60s;
  0 or \"off\": never; [telemetry] metrics picks the parts); `orb devices show ID` shows the latest.
  A server's [[fleet.agents]] rules may push another interval and metrics, a log level and exec
  patterns (those only with [exec] accept_server_additions = true); applied without a restart.

Examples:
  orb agent --id web-1 --tag role=web --tag region=eu    # token from ./orb-data on loopback
  orb agent                                   # no id: the server assigns one when the agent enrolls
  orb agent --server tcp://a.example:7700,tcp://b.example:7700 --token-file agent.token --id web-1
  orb agent --server ws://orb.example:7780/v1/ws --token-file agent.token --id cam-7
  orb agent --server tls://orb.example:7700 --ca-cert ca.crt --token-file agent.token --id web-1
  orb agent --server tls://orb.example:7700 --ca-cert ca.crt --cert cam-1.crt --key cam-1.key
  orb agent --id gw-7 --secret-file gw-7.secret          # pre-registered with orb devices add gw-7
  orb agent --id web-1 --give-up-after 5m     # exit 69 after 5 minutes without a connection
  orb agent --id gw-1 --will-topic 'status.{id}'   # last will, published if the agent vanishes
  orb agent --standalone --telemetry-file /var/log/orb-telemetry.jsonl   # no server: metrics only";

/// `orb send`.
pub const SEND: &str = "\
Examples:
  orb send '*' ping                           # every device: live progress, results, a summary
  orb send web-1 sys.info                     # one device
  orb send 'tag:role=web and not web-3' echo '{\"hello\":\"world\"}'
  orb send 'cam-*' sleep 2s --wait 5s         # a bare word is a JSON string: \"2s\"
  orb send group:cameras sys.info --json | jq -c 'select(.status == \"error\")'
  orb send 'web-*' sys.info --dry-run         # which devices match; nothing is sent
  orb send '*' sys.info -o yaml               # also: -o wide (nothing cut), json, name (ids)
  orb send '*' ping --timeout 3s --no-headers # --timeout is --wait
  orb send '*' sleep 60000 --async --wait 2m  # prints the job id and returns: orb jobs wait ID
  orb send 'cam-*' sys.info --ttl 1h          # offline cameras get it when they connect (queued)
  orb send '*' backup --cron '0 2 * * *' --tz Europe/Berlin   # every night at 02:00: a schedule
  orb send gw-1 reboot --at '2026-12-24 18:00'  # once, at a local time (also --in 2h, --every 30s)

Selectors:
  '*', ids (web-1,web-2), globs (cam-*), tag:KEY=VALUE, group:NAME, combined with and, or, not and
  parentheses (not binds tighter than and, and tighter than or). Quote them: the shell expands * and ().";

/// `orb devices`.
pub const DEVICES: &str = "\
Examples:
  orb devices                                 # every known device: online, offline, revoked
  orb devices 'tag:role=web' --connected      # connected devices with tag role=web
  orb devices --summary                       # the counts: known, connected, revoked
  orb devices --json                          # the list as one JSON array (or -o yaml, -o name)
  orb devices | awk '{print $1}'              # piped, the table is plain columns: prints the ids
  orb devices show web-1                      # one device in detail
  orb devices add gw-7 --tag site=lab         # pre-register a device; prints its credential once
  orb devices tag web-1 rack=3                # operator tags (also: untag, revoke, rm)
  orb devices tag 'cam-*' site=lab --dry-run  # which devices a change would apply to";

/// `orb devices show`.
pub const DEVICES_SHOW: &str = "\
Examples:
  orb devices show web-1
  orb devices show web-1 --json | jq .tags";

/// `orb devices messages`.
pub const DEVICES_MESSAGES: &str = "\
Messages an agent sent from its durable outbox (orb_client::durable::Outbox::send): each stored
once by the server, in the order the agent sent them, kept up to limits.max_messages_per_device.

Examples:
  orb devices messages gw-7
  orb devices messages gw-7 --limit 1000 --json | jq -c '.[] | {sent_at, body}'";

/// `orb devices add`.
pub const DEVICES_ADD: &str = "\
Examples:
  orb devices add gw-7 --tag site=lab --tag kind=gateway
  orb devices add gw-7 --json > credentials.json    # exactly the agent's DATA/credentials.json
  orb agent --data DATA                       # then, on the device, with that file in DATA";

/// `orb tokens`.
pub const TOKENS: &str = "\
Examples:
  orb tokens add ci --role operator      # prints the token once; give it to the CI job
  orb tokens add wall --role viewer      # read-only: a wall screen's dashboard sign-in
  orb tokens                             # names, roles, when made, when revoked
  orb tokens revoke ci                   # refused from its next command on
  ORB_TOKEN=0f3a...9c orb send 'tag:env=staging' deploy   # as the token ci";

/// `orb commands`.
pub const COMMANDS: &str = "\
Examples:
  orb commands                           # every command the known devices declare, with counts
  orb commands 'tag:role=camera' --connected -o wide   # which connected cameras handle what
  orb commands --json | jq -r '.[].command'";

/// `orb audit`.
pub const AUDIT: &str = "\
Examples:
  orb audit                              # the newest 100 actions: when, who, from where, what
  orb audit --since 1h                   # what changed in the last hour
  orb audit --since 2025-06-01T08:00:00Z --limit 1000 --json > audit.json
  orb audit -o wide                      # with each action's details (command, job id, refusal)";

/// `orb tokens add`.
pub const TOKENS_ADD: &str = "\
Examples:
  orb tokens add ci --role operator      # sends what [[acl.operators]] rules allow
  orb tokens add wall --role viewer -o name > wall.token
  orb tokens add deploy-42 --role operator --expires 2h   # admits nobody after two hours";

/// `orb tokens revoke`.
pub const TOKENS_REVOKE: &str = "\
Examples:
  orb tokens revoke ci                   # its sessions are refused from their next command on";

/// `orb devices rm`.
pub const DEVICES_RM: &str = "\
Examples:
  orb devices rm web-3                        # record, tags, credential; its agent is disconnected
  orb devices rm dev-b2c22d6c5f46 --json
  orb devices rm 'tag:site=old' --dry-run     # list what a selector would remove
  orb devices rm 'tag:site=old' --yes         # more than one device: asks first unless --yes";

/// `orb devices revoke`.
pub const DEVICES_REVOKE: &str = "\
Examples:
  orb devices revoke cam-7                    # it cannot connect again (rm forgets it)
  orb devices revoke 'cam-*' --yes            # every matching known device";

/// `orb devices tag`.
pub const DEVICES_TAG: &str = "\
Examples:
  orb devices tag web-1 rack=3                # wins over a rack tag the agent reports
  orb devices tag web-1 rack=3 owner=ops
  orb devices tag 'tag:role=web' tier=front   # a selector: asks first above 10 devices";

/// `orb devices untag`.
pub const DEVICES_UNTAG: &str = "\
Examples:
  orb devices untag web-1 rack
  orb devices untag web-1 rack owner
  orb devices untag 'cam-*' site --yes";

/// `orb jobs`.
pub const JOBS: &str = "\
Examples:
  orb jobs                                    # the newest jobs (50 unless --limit)
  orb jobs --limit 10 --json                  # one JSON array
  orb jobs show 0198c2f1                      # one job, by id or a unique prefix of it
  orb jobs wait 0198c2f1                      # the rest of a running job; exits like orb send
  orb jobs -o wide                            # full ids, times, requester
  orb jobs cancel 0198c2f1                    # stop a running job
  orb jobs --schedule 01a24c88                # the jobs a schedule fired";

/// `orb jobs show`.
pub const JOBS_SHOW: &str = "\
Examples:
  orb jobs show 0198c2f1                      # a unique prefix of the id is enough
  orb jobs show 0198c2f1 --json | jq -c '.results[] | select(.status != \"ok\")'
  orb jobs show 0198c2f1 --follow             # like orb jobs wait";

/// `orb jobs wait`.
pub const JOBS_WAIT: &str = "\
Examples:
  orb send '*' sys.info --async               # prints the job id
  orb jobs wait 0198c2f1                      # its results as they come, then the summary
  orb jobs wait 0198c2f1 --json               # JSON lines, as orb send --json prints them";

/// `orb jobs cancel`.
pub const JOBS_CANCEL: &str = "\
Examples:
  orb jobs cancel 0198c2f1                    # pending targets become cancelled
  orb jobs cancel 0198c2f1 --json";

/// `orb schedule`.
pub const SCHEDULE: &str = "\
Schedules are made with orb send --at, --in, --every or --cron; the server stores them and fires
each firing once, as a job (orb jobs lists them, requester schedule:ID).

Examples:
  orb send '*' backup --cron '0 2 * * *' --tz Europe/Berlin   # prints the schedule's id
  orb schedule list                           # id, next firing, times fired, command, selector
  orb schedule show 0198c2f1                  # one in full (id or unique prefix)
  orb schedule pause 0198c2f1                 # also: resume, rm
  orb schedule preview --cron '0 9 * * MON-FRI' --tz Europe/Berlin   # the next 10 firings
  orb schedule preview --every 90m --count 3 --json";

/// `orb schedule show`.
pub const SCHEDULE_SHOW: &str = "\
Examples:
  orb schedule show 01a24c88-4358             # id or unique prefix
  orb schedule show 01a24c88 --json | jq .next_fire_at";

/// `orb schedule pause`.
pub const SCHEDULE_PAUSE: &str = "\
Examples:
  orb schedule pause 01a24c88                 # no firing until orb schedule resume";

/// `orb schedule resume`.
pub const SCHEDULE_RESUME: &str = "\
Examples:
  orb schedule resume 01a24c88                # fires again from its next time after now";

/// `orb schedule rm`.
pub const SCHEDULE_RM: &str = "\
Examples:
  orb schedule rm 01a24c88                    # the jobs it fired stay in orb jobs";

/// `orb schedule list`.
pub const SCHEDULE_LIST: &str = "\
Examples:
  orb schedule list
  orb schedule list --json | jq -r '.[] | select(.last_error != null) | .id'";

/// `orb schedule preview`.
pub const SCHEDULE_PREVIEW: &str = "\
Output:
  One line per firing: the time in the zone, with its offset, then in UTC.
    2026-03-29T03:00:00+02:00  (2026-03-29T01:00:00Z)
  --json prints one array of the UTC times: [\"2026-03-29T01:00:00Z\", ...].

Cron:
  Fields accept numbers, names (JAN, MON), lists, ranges, */n steps, and L, W, #. When both
  day-of-month and day-of-week are restricted, a day matching either fires (as in Vixie cron).
  Daylight saving time, where the clock skips or repeats an hour:
  - second, minute and hour single values (30 2 * * *): a skipped time fires once, when the clock
    resumes (03:00); a repeated time fires once, on its first pass
  - second, minute or hour starting with * (*/30 * * * *, 0 * * * *): skipped times do not fire;
    repeated times fire on both passes
  - any other (30 2,14 * * *): skipped times do not fire; repeated times fire once

Examples:
  orb schedule preview --cron '0 9 * * MON-FRI' --tz Europe/Berlin   # weekdays, 09:00 in Berlin
  orb schedule preview --cron '30 2 * * *' --tz Europe/Berlin --from '2026-03-28 12:00'
  orb schedule preview --cron '0 0 L * *' --count 12    # midnight on the last day of each month
  orb schedule preview --every 90m --from 2026-06-01T08:00:00Z --count 3
  orb schedule preview --cron @hourly --json | jq -r '.[0]'    # the next firing, in UTC";

/// `orb context`: where client settings come from, and examples.
pub const CONTEXT: &str = "\
Each setting of a client command (send, devices, jobs, signal) comes from the first of: the flags
--server, --token, --token-file; the environment ORB_SERVER, ORB_TOKEN, ORB_TOKEN_FILE; the context
(--context, else ORB_CONTEXT, else the one `orb context use` selected, else [client] context); the
configuration file's [client] section (--config, $ORB_CONFIG, $XDG_CONFIG_HOME/orb/config.toml or
~/.config/orb/config.toml, /etc/orb/orb.toml); the default tcp://127.0.0.1:7700 with, for a loopback
server, ./orb-data/admin.token. Contexts live in $XDG_CONFIG_HOME/orb/contexts/NAME.toml (else
~/.config/orb/contexts/), the selected one's name in $XDG_CONFIG_HOME/orb/context.

Examples:
  orb context add prod --server tcp://orb.example:7700 --token-file ~/.config/orb/prod.token --use
  orb context ls                              # * marks the context in force
  orb send '*' ping --context lab             # another context for one command
  ORB_CONTEXT=lab orb devices                 # or for a shell session";

/// `orb context add`.
pub const CONTEXT_ADD: &str = "\
Examples:
  orb context add prod --server tcp://orb.example:7700 --token-file ~/.config/orb/prod.token
  orb context add lab --server ws://lab.example:7780/v1/ws --token-file lab.token --use
  orb context add secure --server tls://orb.example:7700 --token-file prod.token --ca-cert ca.crt
  orb context add prod --server tcp://orb2.example:7700 --token-file prod.token --force";

/// `orb context use`.
pub const CONTEXT_USE: &str = "\
Examples:
  orb context use prod";

/// `orb context ls`.
pub const CONTEXT_LS: &str = "\
Examples:
  orb context ls
  orb context ls --json";

/// `orb context show`.
pub const CONTEXT_SHOW: &str = "\
Examples:
  orb context show                            # the context in force
  orb context show lab --json";

/// `orb context rm`.
pub const CONTEXT_RM: &str = "\
Examples:
  orb context rm lab                          # its token file is left alone";

/// `orb signal`.
pub const SIGNAL: &str = "\
Examples:
  orb signal PING                             # is the server up
  orb signal RELOAD                           # re-read the configuration, as SIGHUP does
  orb signal LOG_ROTATE                       # reopen the log file
  orb signal QUIT --server tcp://orb.example:7700 --token-file admin.token   # drain and stop";

/// `orb pub`.
pub const PUB: &str = "\
Examples:
  orb pub telemetry.gw-1.temp '{\"c\": 21.5}'    # every subscriber of a matching pattern gets it once
  orb pub alerts.door open                     # a bare word is a JSON string
  orb pub config.gw-1.rate 30 --retain         # kept: every later subscriber gets it first
  orb pub config.gw-1.rate null --retain       # clears the topic's retained message
  orb pub sensors.gw-1.offset -1.5             # a negative number is a body, not a flag
Topics starting with $ are the server's own ($orb.presence.*, $orb.job.*, any other $ topic):
clients may not publish there (exit 2, nothing sent).";

/// `orb sub`.
pub const SUB: &str = "\
Examples:
  orb sub 'telemetry.>'                        # everything under telemetry: TOPIC  BODY per line
  orb sub 'telemetry.*.temp' --json --count 5  # one object per line (topic, body, retained, ...)
  orb sub 'config.>' --count 3                 # retained messages come first and count too
  orb sub 'alerts.>' --timeout 30s             # stop after 30 s
  orb sub 'config.>'                           # retained ones end with (retained): sent first
A pattern starting with * or > does not match $orb. topics: name them ($orb.>) to see the server's events.
Nothing is skipped silently: output read too slowly (10000 messages behind) loses messages, and
each gap is reported where it is (stderr; a {\"dropped\": N} line with --json); then exit 1.";

/// `orb tail`.
pub const TAIL: &str = "\
Examples:
  orb tail                                     # TIME  gw-1 online, TIME  gw-1 offline (reason)
  orb tail --json                              # one object per line: topic, body, from, seq
  orb sub '$orb.presence.gw-*'                 # only some devices' comings and goings
Jobs read: TIME  job J: gw-1 ok (3 ms), then TIME  job J: ended, 1 ok (moves of --one jobs too).";

/// `orb cert`.
#[cfg(feature = "server")]
pub const CERT: &str = "\
Examples:
  orb cert dev                                # ./orb-certs: ca, server (localhost, 127.0.0.1, ::1)
  orb cert dev --host orb.example --client cam-1 --client cam-2";

/// `orb cert dev`.
#[cfg(feature = "server")]
pub const CERT_DEV: &str = "\
Examples:
  orb cert dev                                # ./orb-certs: ca.crt, ca.key, server.crt, server.key
  orb cert dev --host orb.example --host 10.0.0.5         # more names for the server certificate
  orb cert dev --client cam-1                 # later: the CA in ./orb-certs is reused
  orb cert dev --client cam-1 --force         # replace client-cam-1.crt and .key

For development and trials: the CA key sits beside the certificates it signs. Keys are written
with mode 0600. docs/security.md shows the serve, agent and send commands that use them.";

/// `orb config`.
pub const CONFIG: &str = "\
Examples:
  orb config default > orb.toml               # every setting with its default, commented
  orb config check orb.toml                   # every problem at once; exit 78 when invalid
  orb config show                             # the configuration in force, secrets redacted
  ORB_LIMITS__MAX_FRAME=4194304 orb config show    # a variable overrides the file";

/// `orb config default`.
pub const CONFIG_DEFAULT: &str = "\
Examples:
  orb config default > /etc/orb/orb.toml";

/// `orb config check`.
pub const CONFIG_CHECK: &str = "\
Examples:
  orb config check /etc/orb/orb.toml && systemctl reload orb";

/// `orb config show`.
pub const CONFIG_SHOW: &str = "\
Examples:
  orb config show
  orb --config orb.toml config show";

/// `orb demo`.
#[cfg(feature = "server")]
pub const DEMO: &str = "\
Examples:
  orb demo                                    # 50 in-process agents
  orb demo --agents 500";

/// `orb bench`.
#[cfg(feature = "server")]
pub const BENCH: &str = "\
Examples:
  orb bench fanout --agents 10000 --vs nats   # against the NATS server at $ORB_BENCH_NATS_URL
  orb bench rr --inflight 64 --count 50000
  orb bench idle --connections 19000
  orb bench storm --agents 1000 --json
  orb bench pubsub --subscribers 1000 --vs nats";

/// `orb bench fanout`.
#[cfg(feature = "server")]
pub const BENCH_FANOUT: &str = "\
Examples:
  orb bench fanout --agents 1000
  orb bench fanout --agents 10000 --vs nats --rounds 3
  orb bench fanout --agents 10000 --ttl 1h      # every command held (committed) before the ack
  orb bench fanout --server tcp://orb.example:7700 --token \"$ADMIN\" --agent-token \"$AGENT\"";

/// `orb bench rr`.
#[cfg(feature = "server")]
pub const BENCH_RR: &str = "\
Examples:
  orb bench rr --inflight 64 --count 50000
  orb bench rr --codec msgpack --vs nats --json
  orb bench rr --inflight 64 --count 50000 --tls   # over tls:// (a certificate made for the run)";

/// `orb bench idle`.
#[cfg(feature = "server")]
pub const BENCH_IDLE: &str = "\
Examples:
  orb bench idle --connections 19000
  orb bench idle --connections 1000 --embedded";

/// `orb bench storm`.
#[cfg(feature = "server")]
pub const BENCH_STORM: &str = "\
Examples:
  orb bench storm --agents 1000 --trials 3";

/// `orb bench held`.
#[cfg(feature = "server")]
pub const BENCH_HELD: &str = "\
Examples:
  orb bench held --devices 10000 --trials 5   # held commands committed per second";

/// `orb bench pubsub`.
#[cfg(feature = "server")]
pub const BENCH_PUBSUB: &str = "\
Examples:
  orb bench pubsub --subscribers 100
  orb bench pubsub --subscribers 1000 --rounds 3 --vs nats
  orb bench pubsub --subscribers 10 --messages 50000 --probes 500 --codec msgpack --json

One connection publishes, N connections (a separate process) subscribe to its topic. Per trial:
--messages bodies of 100 bytes published as fast as the window allows (a burst of 256 starts once
every subscriber has the burst two before it: no slow-consumer close with default limits), timed
until every subscriber has all of them (deliveries per second = messages x N / time); then
--probes messages one at a time, each stamped with the publisher's clock and timed by every
subscriber on arrival (delivery latency; \"last of N\": until the last subscriber had it). With --vs
nats the same pacing, bodies and reporting against NATS.";

/// `orb crashcheck`.
#[cfg(feature = "server")]
pub const CRASHCHECK: &str = "\
Starts `orb serve` and several agents as processes in a temporary folder, submits numbered
commands with a TTL while the agents send numbered events through their outboxes, SIGKILLs the
server and agents at moments drawn from a seed, and checks what the processes recorded: 0 lost,
0 executed twice, 0 reordered, 0 unexpected (interrupted commands are counted). Exit 0 when it
passed, 1 when it found an anomaly (the folder is then kept).

Examples:
  orb crashcheck                              # 5 kill cycles, 2000 commands, 2000 events
  ORB_CRASH_SEED=42 orb crashcheck            # replay a kill schedule
  orb crashcheck --long --json                # 30 cycles, 20000 commands, 20000 events";

/// `orb version`.
pub const VERSION: &str = "\
Examples:
  orb version
  orb version --json | jq .protocol_version";

/// `orb completions`.
pub const COMPLETIONS: &str = "\
Examples:
  orb completions bash > /etc/bash_completion.d/orb
  orb completions zsh > \"${fpath[1]}/_orb\"
  orb completions fish > ~/.config/fish/completions/orb.fish";

/// `orb man`.
pub const MAN: &str = "\
Examples:
  orb man | man -l -                          # this page: orb(1)
  orb man send | man -l -                     # one sub-command's page
  orb man devices show | man -l -
  orb man --out /usr/local/share/man/man1     # every page: orb.1, orb-send.1, orb-devices-show.1";

/// The command line definition as shown and parsed: an environment variable that is not set is
/// shown as `[env: NAME]` instead of clap's `[env: NAME=]`, which reads as \"set, but empty\".
pub fn command() -> Command {
    tidy_env(Cli::command())
}

/// Parses the process's arguments with [`command`] (exits with 2 and a message on bad usage).
pub fn parse() -> Cli {
    let mut matches = command().get_matches();
    Cli::from_arg_matches_mut(&mut matches).unwrap_or_else(|e| e.format(&mut command()).exit())
}

fn tidy_env(cmd: Command) -> Command {
    cmd.mut_args(|arg| {
        let unset = arg.get_env().is_some_and(|name| std::env::var_os(name).is_none_or(|v| v.is_empty()));
        if unset { arg.hide_env_values(true) } else { arg }
    })
    .mut_subcommands(tidy_env)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_definition_is_consistent() {
        command().debug_assert();
    }

    /// Splits a shell line into words (single and double quotes, no expansion), up to a comment,
    /// a pipe, a redirection or `&&`.
    fn shell_words(line: &str) -> Vec<String> {
        let mut words = Vec::new();
        let mut word: Option<String> = None;
        let mut quote: Option<char> = None;
        for c in line.chars() {
            match (quote, c) {
                (Some(q), c) if c == q => quote = None,
                (Some(_), c) => word.get_or_insert_default().push(c),
                (None, '\'' | '"') => {
                    quote = Some(c);
                    word.get_or_insert_default();
                }
                (None, c) if c.is_whitespace() => words.extend(word.take()),
                (None, '#' | '|' | '>' | '&') if word.is_none() => return words,
                (None, c) => word.get_or_insert_default().push(c),
            }
        }
        assert!(quote.is_none(), "unbalanced quote in: {line}");
        words.extend(word);
        words
    }

    #[test]
    fn shell_words_follow_the_quotes() {
        assert_eq!(
            shell_words(r#"orb send 'a and b' echo '{"x":1}'  # c"#),
            ["orb", "send", "a and b", "echo", r#"{"x":1}"#]
        );
        assert_eq!(shell_words(r#"orb man | man -l -"#), ["orb", "man"]);
        assert_eq!(shell_words(r#"orb x --token "$(cat t)" > f"#), ["orb", "x", "--token", "$(cat t)"]);
    }

    /// Every example of every help text (`orb ...` lines under `Examples:`): where it is shown
    /// with the line, and its words.
    fn examples(cmd: &Command, found: &mut Vec<(String, String, Vec<String>)>) {
        let name = cmd.get_name().to_owned();
        if let Some(text) = cmd.get_after_help() {
            let text = text.to_string();
            let section = text.lines().skip_while(|l| *l != "Examples:").skip(1).take_while(|l| l.starts_with(' '));
            for line in section {
                // `VAR=value orb ...` sets a variable for one command.
                let words: Vec<String> =
                    shell_words(line).into_iter().skip_while(|w| w.contains('=') && !w.starts_with("orb")).collect();
                assert_eq!(
                    words.first().map(String::as_str),
                    Some("orb"),
                    "{name}: example not starting with orb: {line}"
                );
                found.push((name.clone(), line.to_owned(), words));
            }
        }
        for sub in cmd.get_subcommands() {
            examples(sub, found);
        }
    }

    #[test]
    fn every_example_parses_with_the_flags_that_exist() {
        let mut found = Vec::new();
        examples(&command(), &mut found);
        assert!(found.len() > 50, "only {} examples found", found.len());
        for (name, line, words) in found {
            if let Err(e) = command().try_get_matches_from(&words) {
                panic!("example of {name} does not parse:\n{line}\n{words:?}\n{e}");
            }
        }
    }

    #[test]
    fn example_lines_fit_a_terminal() {
        let mut found = Vec::new();
        examples(&command(), &mut found);
        let long: Vec<&str> =
            found.iter().map(|(_, line, _)| line.as_str()).filter(|l| l.chars().count() > 100).collect();
        assert!(long.is_empty(), "example lines over 100 characters:\n{}", long.join("\n"));
    }
}

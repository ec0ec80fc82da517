//! Shared helpers for the end-to-end tests: the built `orb` binary run as real child processes
//! over real sockets on 127.0.0.1 with OS-chosen ports.
//!
//! Every child gets a clean environment (no `ORB_*` variables) and runs in a temporary folder,
//! so nothing from the developer's shell or an `./orb-data` folder leaks into a test. Long-running
//! children (`orb serve`, `orb agent`) live in a [`Proc`] guard that kills and reaps them on drop;
//! their stderr is drained by a thread (so a chatty child never blocks on a full pipe) and
//! printed when the test fails.
#![allow(dead_code)] // each test binary uses a different subset

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

/// The operator token given to `orb serve --admin-token`.
pub const ADMIN: &str = "e2e-admin-token-0123456789abcdef";
/// The agent token given to `orb serve --agent-token`.
pub const AGENT: &str = "e2e-agent-token-0123456789abcdef";
/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_orb");

/// How long a child may take to print its banner or to exit after being asked to.
pub const STARTUP: Duration = Duration::from_secs(10);
/// Upper bound for one-shot commands (a hung command fails the test instead of hanging it).
pub const ONE_SHOT: Duration = Duration::from_secs(60);

/// The user configuration folder (`XDG_CONFIG_HOME`) of every child started in `cwd`: contexts
/// and the client's `config.toml` are in `config_home(cwd)/orb`.
pub fn config_home(cwd: &Path) -> PathBuf {
    std::path::absolute(cwd.join("config-home")).unwrap()
}

/// A `std::process::Command` for `orb`, in `cwd`, with a clean environment: every `ORB_*`
/// variable (`ORB_SERVER`, `ORB_TOKEN`, `ORB_TOKEN_FILE`, `ORB_LOG`, `ORB_CONFIG`,
/// `ORB_CONTEXT`, ...) removed, and `XDG_CONFIG_HOME` inside `cwd` ([`config_home`]), so no test
/// reads or writes the developer's `~/.config/orb`.
pub fn orb(cwd: &Path) -> Command {
    let mut c = Command::new(BIN);
    c.current_dir(cwd).stdin(Stdio::null()).env("XDG_CONFIG_HOME", config_home(cwd));
    for v in ["ORB_SERVER", "ORB_TOKEN", "ORB_TOKEN_FILE", "ORB_LOG", "ORB_CONFIG", "ORB_CONTEXT"] {
        c.env_remove(v);
    }
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("ORB_") {
            c.env_remove(name);
        }
    }
    c
}

/// An `assert_cmd` command for a one-shot `orb` invocation (bounded by [`ONE_SHOT`]).
pub fn orb_cmd(cwd: &Path) -> assert_cmd::Command {
    let mut c = assert_cmd::Command::from_std(orb(cwd));
    c.timeout(ONE_SHOT);
    c
}

/// A running child process, killed and reaped on drop.
pub struct Proc {
    name: String,
    child: Child,
    /// Every stderr line so far (printed if the test panics).
    log: Arc<Mutex<Vec<String>>>,
    /// Stderr lines as they arrive; disconnected at end of file (the process exited).
    lines: mpsc::Receiver<String>,
}

impl Proc {
    /// Spawns `cmd` with stderr piped and drained, stdout discarded.
    pub fn spawn(name: impl Into<String>, mut cmd: Command) -> Proc {
        cmd.stdout(Stdio::null());
        Proc::spawn_piped(name, cmd)
    }

    /// Spawns `cmd` with stderr piped and drained; stdout as `cmd` says (see [`Proc::with_stdout`]).
    fn spawn_piped(name: impl Into<String>, mut cmd: Command) -> Proc {
        let name = name.into();
        let mut child = cmd.stderr(Stdio::piped()).spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (tx, lines) = mpsc::channel();
        let thread_log = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                thread_log.lock().unwrap().push(line.clone());
                // The receiver may be gone (guard dropped); keep draining regardless.
                let _ = tx.send(line);
            }
        });
        Proc { name, child, log, lines }
    }

    /// Spawns `cmd` with its stdout lines delivered through the returned [`StdoutLines`].
    pub fn with_stdout(name: impl Into<String>, mut cmd: Command) -> (Proc, StdoutLines) {
        cmd.stdout(Stdio::piped());
        let mut p = Proc::spawn_piped(name, cmd);
        let stdout = p.child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line);
            }
        });
        (p, StdoutLines(rx))
    }

    /// Spawns `cmd` with its stdout piped and handed back unread: the child blocks once the pipe
    /// is full, as behind a slow reader, until the test reads it.
    pub fn with_unread_stdout(name: impl Into<String>, mut cmd: Command) -> (Proc, std::process::ChildStdout) {
        cmd.stdout(Stdio::piped());
        let mut p = Proc::spawn_piped(name, cmd);
        let stdout = p.child.stdout.take().unwrap();
        (p, stdout)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (at most `timeout`) for a stderr line satisfying `pred` and returns it.
    pub fn wait_for_line(&mut self, timeout: Duration, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if pred(&line) => return line,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    panic!("{}: expected line not seen within {timeout:?}", self.name)
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    panic!("{}: exited ({status:?}) before printing the expected line", self.name)
                }
            }
        }
    }

    /// Waits (at most `timeout`) for the process to exit, i.e. for its stderr to close, and
    /// returns its status.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(_) => {}
                Err(RecvTimeoutError::Disconnected) => return self.child.wait().unwrap(),
                Err(RecvTimeoutError::Timeout) => {
                    panic!("{}: still running after {timeout:?}", self.name)
                }
            }
        }
    }

    /// Everything the process printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("----- stderr of {} -----\n{}", self.name, self.stderr());
        }
    }
}

/// A child's stdout lines as they arrive (see [`Proc::with_stdout`]).
pub struct StdoutLines(mpsc::Receiver<String>);

impl StdoutLines {
    /// The next stdout line, waiting at most `timeout`; `None` at end of file.
    pub fn next(&self, timeout: Duration) -> Option<String> {
        match self.0.recv_timeout(timeout) {
            Ok(l) => Some(l),
            Err(RecvTimeoutError::Disconnected) => None,
            Err(RecvTimeoutError::Timeout) => panic!("no stdout line within {timeout:?}"),
        }
    }

    /// Every remaining line until end of file (the process exited), each waited for at most `timeout`.
    pub fn rest(&self, timeout: Duration) -> Vec<String> {
        std::iter::from_fn(|| self.next(timeout)).collect()
    }
}

/// A running `orb serve` on OS-chosen ports, with its own temporary folder (also the working
/// folder of every child the test starts through it).
pub struct Server {
    /// The server process (dropped before `dir`, so its data folder outlives it).
    pub proc: Proc,
    /// `tcp://127.0.0.1:PORT`.
    pub tcp: String,
    /// `ws://127.0.0.1:PORT/v1/ws`.
    pub ws: String,
    /// The temporary folder: working folder for children; server data in `server-data`.
    pub dir: TempDir,
}

impl Server {
    /// Starts `orb serve` with the fixed test tokens.
    pub fn start() -> Server {
        Server::start_in(tempfile::tempdir().unwrap())
    }

    /// Kills the server (SIGKILL: nothing flushed on the way out) and starts it again on the
    /// same data folder, on new ports.
    pub fn restart(self) -> Server {
        let Server { proc, dir, .. } = self;
        drop(proc);
        Server::start_in(dir)
    }

    fn start_in(dir: TempDir) -> Server {
        let data = dir.path().join("server-data");
        let mut cmd = orb(dir.path());
        cmd.arg("serve").args(["--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--data"]).arg(&data).args([
            "--admin-token",
            ADMIN,
            "--agent-token",
            AGENT,
        ]);
        Server::spawn(dir, cmd)
    }

    /// Starts `cmd` (an `orb serve` invocation) and waits for its address banner.
    pub fn spawn(dir: TempDir, cmd: Command) -> Server {
        let mut proc = Proc::spawn("orb serve", cmd);
        let banner = proc.wait_for_line(STARTUP, |l| l.starts_with("orb server: agents "));
        let (tcp, ws) = parse_banner(&banner);
        Server { proc, tcp, ws, dir }
    }

    /// The working folder for children.
    pub fn cwd(&self) -> &Path {
        self.dir.path()
    }

    /// A data folder for agent `id` inside the test's folder.
    pub fn agent_data(&self, id: &str) -> PathBuf {
        self.dir.path().join("agents").join(id)
    }

    /// Starts `orb agent` over TCP with the agent token, id and `KEY=VALUE` tags.
    pub fn agent(&self, id: &str, tags: &[&str]) -> Proc {
        self.agent_at(&self.tcp, id, tags)
    }

    /// Starts `orb agent` against `url` (TCP or WebSocket).
    pub fn agent_at(&self, url: &str, id: &str, tags: &[&str]) -> Proc {
        let mut cmd = orb(self.cwd());
        cmd.args(["agent", "--server", url, "--token", AGENT, "--id", id]);
        for t in tags {
            cmd.args(["--tag", t]);
        }
        cmd.arg("--data").arg(self.agent_data(id));
        Proc::spawn(format!("orb agent {id}"), cmd)
    }

    /// A one-shot operator command (`send`, `devices`) against the TCP listener with the admin
    /// token; further arguments follow.
    pub fn client(&self, sub: &str) -> assert_cmd::Command {
        self.client_at(sub, &self.tcp)
    }

    /// Like [`Server::client`] against `url`.
    pub fn client_at(&self, sub: &str, url: &str) -> assert_cmd::Command {
        let mut c = orb_cmd(self.cwd());
        c.args([sub, "--server", url, "--token", ADMIN]);
        c
    }

    /// Waits until every id in `ids` is listed as connected.
    pub fn wait_connected(&self, ids: &[&str]) {
        wait_connected(self.cwd(), &self.tcp, Some(ADMIN), ids);
    }
}

/// Parses `orb server: agents tcp://A  websocket ws://B/v1/ws  data DIR`.
pub fn parse_banner(line: &str) -> (String, String) {
    let words: Vec<&str> = line.split_whitespace().collect();
    let after = |key: &str| -> String {
        let i = words.iter().position(|w| *w == key).unwrap_or_else(|| panic!("no '{key}' in banner: {line}"));
        words.get(i + 1).unwrap_or_else(|| panic!("nothing after '{key}' in banner: {line}")).to_string()
    };
    let tcp = after("agents");
    let ws = after("websocket");
    assert!(tcp.starts_with("tcp://127.0.0.1:"), "banner: {line}");
    assert!(ws.starts_with("ws://127.0.0.1:") && ws.ends_with("/v1/ws"), "banner: {line}");
    (tcp, ws)
}

/// Polls `orb devices --json` (at most 100 times, 50 ms apart) until every id in `ids` is
/// connected. A separate process has no event to await, so this is the one poll the tests use.
pub fn wait_connected(cwd: &Path, server: &str, token: Option<&str>, ids: &[&str]) {
    let mut last = String::new();
    for _ in 0..100 {
        let mut cmd = orb_cmd(cwd);
        cmd.args(["devices", "--server", server, "--json"]).timeout(STARTUP);
        if let Some(t) = token {
            cmd.args(["--token", t]);
        }
        let out = cmd.output().unwrap_or_else(|e| panic!("`orb devices` did not finish: {e}"));
        if out.status.success() {
            let list: Value = serde_json::from_slice(&out.stdout).unwrap();
            let connected = |id: &str| list.as_array().unwrap().iter().any(|d| d["id"] == id && d["connected"] == true);
            if ids.iter().all(|id| connected(id)) {
                return;
            }
        }
        last = format!(
            "exit {:?}, stdout {}, stderr {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("devices {ids:?} not connected after 100 polls; last `orb devices`: {last}");
}

/// Stdout as text.
pub fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// Stderr as text.
pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Each stdout line parsed as JSON.
pub fn json_lines(out: &Output) -> Vec<Value> {
    stdout(out).lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"))).collect()
}

/// The sorted keys of a JSON object.
pub fn keys(v: &Value) -> Vec<String> {
    let mut k: Vec<String> = v.as_object().unwrap_or_else(|| panic!("not an object: {v}")).keys().cloned().collect();
    k.sort();
    k
}

/// Asserts `v` is a result line with exactly the documented keys and returns its device id.
pub fn assert_result_shape(v: &Value) -> String {
    assert_eq!(keys(v), ["device", "elapsed_ms", "error", "result", "status"], "result line: {v}");
    v["device"].as_str().unwrap().to_owned()
}

/// Asserts `v` is a summary line (`job` and all eight statuses) and returns the counts.
pub fn assert_summary_shape(v: &Value) -> serde_json::Map<String, Value> {
    assert_eq!(keys(v), ["job", "summary"], "summary line: {v}");
    assert!(v["job"].as_str().is_some_and(|j| !j.is_empty()), "job id: {v}");
    let summary = v["summary"].as_object().unwrap().clone();
    let mut statuses: Vec<&str> = summary.keys().map(String::as_str).collect();
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        ["cancelled", "denied", "error", "expired", "offline", "ok", "queued", "timeout"],
        "summary line: {v}"
    );
    assert!(summary.values().all(Value::is_u64), "counts: {v}");
    summary
}

/// Upper bound for waiting on one event (a stderr line, an exit, a poll to converge): a broken
/// build fails within this instead of hanging.
pub const EVENT: Duration = Duration::from_secs(20);

/// Agent reconnect timers small enough for tests (`ORB_AGENT__BACKOFF_*`).
pub const FAST_BACKOFF: [(&str, &str); 2] = [("ORB_AGENT__BACKOFF_MIN", "50ms"), ("ORB_AGENT__BACKOFF_MAX", "200ms")];

/// A port on 127.0.0.1 that was free a moment ago: bound to port 0, read, released. Another
/// process could take it in between; tests that must reuse one port (restarts, agents started
/// before their server) accept that tiny race.
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// `orb serve` in `dir` with the test tokens, data in `dir/server-data`, TCP on `listen` and
/// HTTP on an OS-chosen port. Add flags and `ORB_*` variables before spawning it.
pub fn serve_cmd(dir: &Path, listen: &str) -> Command {
    let mut cmd = orb(dir);
    cmd.arg("serve").args(["--listen", listen, "--http", "127.0.0.1:0", "--data"]).arg(dir.join("server-data")).args([
        "--admin-token",
        ADMIN,
        "--agent-token",
        AGENT,
    ]);
    cmd
}

/// `orb agent` in `cwd` with the agent token, id `id`, servers `urls` (a comma list) and data in
/// `cwd/agents/ID`, with fast reconnects ([`FAST_BACKOFF`]).
pub fn agent_cmd(cwd: &Path, urls: &str, id: &str) -> Command {
    let mut cmd = orb(cwd);
    cmd.args(["agent", "--server", urls, "--token", AGENT, "--id", id]).arg("--data").arg(cwd.join("agents").join(id));
    cmd.envs(FAST_BACKOFF);
    cmd
}

/// Sends signal `sig` (`TERM`, `KILL`, `STOP`, `CONT`, `HUP`, ...) to process `pid`.
pub fn send_signal(pid: u32, sig: &str) {
    let status = Command::new("kill").args([format!("-{sig}"), pid.to_string()]).status().unwrap();
    assert!(status.success(), "kill -{sig} {pid} failed: {status:?}");
}

/// `orb devices --json` once: the list, or `None` when the command failed.
pub fn devices(cwd: &Path, server: &str, token: Option<&str>) -> Option<Vec<Value>> {
    let mut cmd = orb_cmd(cwd);
    cmd.args(["devices", "--server", server, "--json"]).timeout(STARTUP);
    if let Some(t) = token {
        cmd.args(["--token", t]);
    }
    let out = cmd.output().unwrap_or_else(|e| panic!("`orb devices` did not finish: {e}"));
    if !out.status.success() {
        return None;
    }
    Some(serde_json::from_slice::<Value>(&out.stdout).unwrap().as_array().unwrap().clone())
}

/// Polls `orb devices --json` (at most 100 times, 50 ms apart) until `id` is no longer listed as
/// connected (known devices stay listed, offline).
pub fn wait_disconnected(cwd: &Path, server: &str, token: Option<&str>, id: &str) {
    let mut last = None;
    for _ in 0..100 {
        last = devices(cwd, server, token);
        if last.as_ref().is_some_and(|l| l.iter().all(|d| d["id"] != id || d["connected"] == false)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("device {id} still connected (or devices failed) after 100 polls; last list: {last:?}");
}

/// Polls (at most 100 times, 50 ms apart) until `check` holds; for state with no event to await
/// (a file appearing, a counter). Panics naming `what` otherwise.
pub fn poll_until(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..100 {
        if check() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what}: not reached after 100 polls");
}

/// A one-shot command running in the background (e.g. an `orb send` waiting for a slow job while
/// the test acts on the server); its output is collected by [`Background::wait`].
pub struct Background {
    what: String,
    rx: mpsc::Receiver<std::io::Result<Output>>,
}

impl Background {
    /// Starts `cmd` on a thread; the command is killed if it runs longer than [`EVENT`].
    pub fn start(what: impl Into<String>, mut cmd: assert_cmd::Command) -> Background {
        let (tx, rx) = mpsc::channel();
        cmd.timeout(EVENT);
        std::thread::spawn(move || {
            let _ = tx.send(cmd.output());
        });
        Background { what: what.into(), rx }
    }

    /// Waits (at most [`EVENT`] plus a little) for the command's output.
    pub fn wait(self) -> Output {
        match self.rx.recv_timeout(EVENT + Duration::from_secs(2)) {
            Ok(Ok(out)) => out,
            Ok(Err(e)) => panic!("{}: {e}", self.what),
            Err(_) => panic!("{}: no output within {EVENT:?}", self.what),
        }
    }
}

impl Server {
    /// Starts `orb serve` on OS-chosen ports after `configure` added flags or `ORB_*` variables.
    pub fn start_with(configure: impl FnOnce(&mut Command, &Path)) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = serve_cmd(dir.path(), "127.0.0.1:0");
        configure(&mut cmd, dir.path());
        Server::spawn(dir, cmd)
    }

    /// Starts `orb agent` with id `id` against this server after `configure` adjusted it.
    pub fn agent_with(&self, id: &str, configure: impl FnOnce(&mut Command)) -> Proc {
        let mut cmd = agent_cmd(self.cwd(), &self.tcp, id);
        configure(&mut cmd);
        Proc::spawn(format!("orb agent {id}"), cmd)
    }

    /// The connected devices (`orb devices --json`).
    pub fn devices(&self) -> Vec<Value> {
        devices(self.cwd(), &self.tcp, Some(ADMIN)).expect("`orb devices` succeeds")
    }

    /// Waits until `id` is no longer listed.
    pub fn wait_disconnected(&self, id: &str) {
        wait_disconnected(self.cwd(), &self.tcp, Some(ADMIN), id);
    }

    /// `orb signal MESSAGE` against this server.
    pub fn signal(&self, message: &str) -> Output {
        self.client("signal").arg(message).output().unwrap()
    }
}

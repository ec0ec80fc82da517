//! Process plumbing for benchmarks: child processes (`orb serve`, the agent swarm) with their
//! stderr/stdout followed line by line, and CPU time and resident memory read from `/proc`.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use crate::exit::{self, Failure};

/// A child process killed (and reaped) on drop.
pub struct ChildGuard {
    child: Child,
    lines: mpsc::Receiver<String>,
    stdin: Option<ChildStdin>,
}

impl ChildGuard {
    /// Starts `cmd` with stdin piped and its `watch` stream ("stdout" or "stderr") read line by line.
    pub fn spawn(mut cmd: Command, watch_stdout: bool) -> Result<ChildGuard, Failure> {
        cmd.stdin(Stdio::piped());
        if watch_stdout {
            cmd.stdout(Stdio::piped()).stderr(Stdio::inherit());
        } else {
            cmd.stderr(Stdio::piped()).stdout(Stdio::null());
        }
        let mut child = cmd.spawn().map_err(|e| fail(format!("cannot start {cmd:?}: {e}")))?;
        let (tx, lines) = mpsc::channel();
        let reader: Box<dyn std::io::Read + Send> = if watch_stdout {
            Box::new(child.stdout.take().ok_or_else(|| fail("no stdout".into()))?)
        } else {
            Box::new(child.stderr.take().ok_or_else(|| fail("no stderr".into()))?)
        };
        std::thread::spawn(move || {
            for line in BufReader::new(reader).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Ok(ChildGuard { child, lines, stdin })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (at most `limit`) for a line containing `needle`; returns it.
    pub fn wait_line(&self, needle: &str, limit: Duration) -> Result<String, Failure> {
        let deadline = std::time::Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return Ok(line),
                Ok(_) => {}
                Err(_) => return Err(fail(format!("no '{needle}' from child {} within {limit:?}", self.pid()))),
            }
        }
    }

    /// Hands the lines still to come to async code: a thread forwards them to the returned
    /// channel (which ends when the child's stream does). [`ChildGuard::wait_line`] sees none
    /// afterwards.
    pub fn follow(&mut self) -> tokio::sync::mpsc::UnboundedReceiver<String> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let lines = std::mem::replace(&mut self.lines, mpsc::channel().1);
        std::thread::spawn(move || {
            while let Ok(line) = lines.recv() {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        rx
    }

    /// The exit status, when the process has ended by itself.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Kills the process at once (SIGKILL) and reaps it.
    pub fn kill(&mut self) {
        self.stdin = None;
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

fn fail(m: String) -> Failure {
    Failure::new(exit::FAILED, format!("bench: {m}"))
}

/// This binary, to start children of it.
pub fn orb_exe() -> Result<std::path::PathBuf, Failure> {
    std::env::current_exe().map_err(|e| fail(format!("cannot find the orb binary: {e}")))
}

/// CPU time (user + system) of process `pid`, from `/proc/PID/stat` (USER_HZ = 100).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// Resident set size of process `pid` in bytes, from `/proc/PID/status`.
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// A free TCP port on 127.0.0.1 (bound then released; a tiny race is acceptable for benches).
pub fn free_port() -> Result<u16, Failure> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| fail(e.to_string()))?;
    l.local_addr().map(|a| a.port()).map_err(|e| fail(e.to_string()))
}

/// A temporary folder for a child server's data.
pub fn temp_dir() -> Result<tempfile::TempDir, Failure> {
    tempfile::tempdir().map_err(|e| fail(e.to_string()))
}

/// `orb serve` as a child on 127.0.0.1:`port` with default configuration and a fresh data folder;
/// with `tls`, the folder holding `server.crt` and `server.key` ([`write_dev_certs`]): then it
/// speaks `tls://`.
pub fn start_server(
    data: &Path,
    port: u16,
    admin: &str,
    agent: &str,
    tls: Option<&Path>,
) -> Result<(ChildGuard, String), Failure> {
    let mut cmd = Command::new(orb_exe()?);
    cmd.arg("serve")
        .args(["--listen", &format!("127.0.0.1:{port}"), "--http", "127.0.0.1:0"])
        .arg("--data")
        .arg(data)
        .args(["--admin-token", admin, "--agent-token", agent])
        .env("ORB_LOG", "warn")
        // The swarm enrolls thousands of devices from one address: no enrollment rate limit; it
        // connects them all at once, and one agent answers as fast as it can: no agent rates.
        .env("ORB_LIMITS__ENROLLMENTS_PER_IP", "0")
        .env("ORB_LIMITS__AGENT_CONNECTIONS_PER_SECOND", "0")
        .env("ORB_LIMITS__AGENT_MESSAGES_PER_SECOND", "0")
        // Its devices connect with the shared token alone, like v1 agents, keeping no secrets.
        .env("ORB_ACL__TOKEN_DEVICES", "true")
        .env_remove("ORB_CONFIG");
    if let Some(dir) = tls {
        cmd.arg("--tls-cert").arg(dir.join("server.crt")).arg("--tls-key").arg(dir.join("server.key"));
    }
    let child = ChildGuard::spawn(cmd, false)?;
    let line = child.wait_line("orb server: agents ", Duration::from_secs(20))?;
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("tcp://") || w.starts_with("tls://"))
        .ok_or_else(|| fail(format!("unexpected server line: {line}")))?
        .to_owned();
    Ok((child, url))
}

/// Writes a development CA (`ca.crt`) and a server certificate for 127.0.0.1 (`server.crt`,
/// `server.key`) into `dir`, for `orb bench --tls`.
pub fn write_dev_certs(dir: &Path) -> Result<(), Failure> {
    let ca = orb_io::tls::dev::DevCa::generate("orb bench CA").map_err(|e| fail(e.to_string()))?;
    let server = ca.server(&[]).map_err(|e| fail(e.to_string()))?;
    for (name, text) in [("ca.crt", &ca.ca.cert_pem), ("server.crt", &server.cert_pem), ("server.key", &server.key_pem)]
    {
        crate::private_file::write(dir, name, text.as_bytes()).map_err(|e| fail(e.to_string()))?;
    }
    Ok(())
}

//! Runs one allowed command line: no shell, a clean environment, in its own process group, which
//! is killed when the command ends, and when its run is dropped (timeout, cancel, deadline);
//! standard output and error are captured, each up to a cap, and, when the requester asked for
//! progress, streamed line by line as it comes (`{"stream": "stdout", "line": "..."}`).

use std::os::unix::process::ExitStatusExt as _;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};

use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use orb_client::handler::Progress;
use orb_proto::{ErrorBody, ErrorCode};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWriteExt as _};

use super::Policy;
use super::args::ExecArgs;

/// The whole environment of a command: `PATH` alone, the usual system folders.
pub const PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How a command ended and what it wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Its exit status; `None` when a signal ended it.
    pub exit_code: Option<i32>,
    /// The signal that ended it (`SIGKILL`), when one did.
    pub signal: Option<String>,
    /// Standard output, lossy UTF-8, at most the cap.
    pub stdout: String,
    /// Standard error, lossy UTF-8, at most the cap.
    pub stderr: String,
    /// Whether either output was cut at the cap.
    pub truncated: bool,
}

/// A command's process group, killed (SIGKILL) once: when the command ends, or on drop.
struct Group {
    pgid: Pid,
    killed: AtomicBool,
}

impl Group {
    fn kill(&self) {
        if self.killed.swap(true, Ordering::SeqCst) {
            return;
        }
        match killpg(self.pgid, Signal::SIGKILL) {
            // ESRCH: nothing is left in the group.
            Ok(()) | Err(Errno::ESRCH) => {}
            Err(e) => tracing::warn!(pgid = self.pgid.as_raw(), "exec: cannot kill the process group: {e}"),
        }
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The longest line streamed as progress, in bytes; the rest of a longer line is not streamed
/// (the result keeps it, within its cap).
pub const MAX_LINE: usize = 1024;

/// Runs `args.argv` as `policy` says and waits for it to end (callers bound the wait: dropping
/// the future kills the process group). Each output line goes to `progress` as it comes (a
/// no-op unless the requester asked).
///
/// # Errors
/// `handler_error` when the program cannot be started (not found, not executable, `run_as`
/// refused) or waited for.
pub async fn run(args: &ExecArgs, policy: &Policy, progress: &Progress) -> Result<Outcome, ErrorBody> {
    let program = &args.argv[0];
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(&args.argv[1..])
        .env_clear()
        .env("PATH", PATH)
        .current_dir("/")
        .stdin(if args.stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(user) = &policy.run_as {
        // std drops the supplementary groups when a root agent switches user.
        cmd.uid(user.uid).gid(user.gid);
    }
    let failed = |what: &str, e: std::io::Error| {
        ErrorBody::new(ErrorCode::HandlerError, orb_proto::bounded(format!("exec: {what} {program}: {e}")))
    };
    let mut child = cmd.spawn().map_err(|e| failed("cannot start", e))?;
    let pid = child.id().and_then(|p| i32::try_from(p).ok()).ok_or_else(|| {
        ErrorBody::new(ErrorCode::HandlerError, format!("exec: {program} started without a process id"))
    })?;
    let group = Group { pgid: Pid::from_raw(pid), killed: AtomicBool::new(false) };
    let input = child.stdin.take();
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let feed = async {
        if let (Some(mut w), Some(text)) = (input, args.stdin.as_deref()) {
            // A command that exits without reading its input closes the pipe: not an error.
            let _ = w.write_all(text.as_bytes()).await;
        }
    };
    let waiting = async {
        let status = child.wait().await;
        // What the command left running in its group does not outlive it (and holds no pipe open).
        group.kill();
        status
    };
    let cap = policy.max_output;
    let (status, (), (out, out_cut), (err, err_cut)) = tokio::join!(
        waiting,
        feed,
        capture(stdout, cap, Lines::new("stdout", progress)),
        capture(stderr, cap, Lines::new("stderr", progress))
    );
    let status = status.map_err(|e| failed("cannot wait for", e))?;
    Ok(Outcome {
        exit_code: status.code(),
        signal: status.signal().map(|n| Signal::try_from(n).map_or_else(|_| format!("signal {n}"), |s| s.to_string())),
        stdout: String::from_utf8_lossy(&out).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
        truncated: out_cut || err_cut,
    })
}

/// Reads `pipe` to its end, keeping the first `cap` bytes; the rest is read and discarded (so
/// the command never blocks on a full pipe), and every line goes to `lines` as it comes.
/// Returns the bytes kept and whether any were not.
async fn capture(pipe: Option<impl AsyncRead + Unpin>, cap: usize, mut lines: Lines<'_>) -> (Vec<u8>, bool) {
    let Some(mut pipe) = pipe else { return (Vec::new(), false) };
    let mut kept = Vec::new();
    let mut cut = false;
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                lines.feed(&buf[..n]);
                let room = cap.saturating_sub(kept.len());
                cut |= n > room;
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    lines.finish();
    (kept, cut)
}

/// One output stream cut into lines for `progress`: each line (without its `\n`, at most
/// [`MAX_LINE`] bytes of it, lossy UTF-8) is sent as `{"stream", "line"}` when its end is read;
/// a last line without one when the stream ends. Nothing is kept when progress is off.
struct Lines<'p> {
    stream: &'static str,
    progress: &'p Progress,
    line: Vec<u8>,
}

impl<'p> Lines<'p> {
    fn new(stream: &'static str, progress: &'p Progress) -> Lines<'p> {
        Lines { stream, progress, line: Vec::new() }
    }

    fn feed(&mut self, mut bytes: &[u8]) {
        if !self.progress.is_on() {
            return;
        }
        while !bytes.is_empty() {
            let end = bytes.iter().position(|b| *b == b'\n');
            let part = &bytes[..end.unwrap_or(bytes.len())];
            let room = MAX_LINE.saturating_sub(self.line.len());
            self.line.extend_from_slice(&part[..part.len().min(room)]);
            match end {
                Some(i) => {
                    self.send();
                    bytes = &bytes[i + 1..];
                }
                None => break,
            }
        }
    }

    fn finish(&mut self) {
        if !self.line.is_empty() {
            self.send();
        }
    }

    fn send(&mut self) {
        let line = String::from_utf8_lossy(&self.line);
        self.progress.send(&serde_json::json!({ "stream": self.stream, "line": line }));
        self.line.clear();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn policy(max_output: usize) -> Policy {
        Policy { allow: Vec::new(), own: 0, accepts_additions: false, run_as: None, max_output }
    }

    fn args(argv: &[&str], stdin: Option<&str>) -> ExecArgs {
        ExecArgs {
            argv: argv.iter().map(|s| (*s).to_owned()).collect(),
            timeout: super::super::args::DEFAULT_TIMEOUT,
            stdin: stdin.map(str::to_owned),
        }
    }

    #[tokio::test]
    async fn output_and_exit_code_are_captured() {
        let o = run(&args(&["sh", "-c", "echo out; echo err >&2; exit 3"], None), &policy(1024), &Progress::off())
            .await
            .unwrap();
        assert_eq!(
            o,
            Outcome {
                exit_code: Some(3),
                signal: None,
                stdout: "out\n".into(),
                stderr: "err\n".into(),
                truncated: false
            }
        );
    }

    #[tokio::test]
    async fn stdin_is_written_and_the_environment_is_only_path() {
        let o = run(&args(&["cat"], Some("line 1\nline 2")), &policy(1024), &Progress::off()).await.unwrap();
        assert_eq!(o.stdout, "line 1\nline 2");
        let o = run(&args(&["env"], None), &policy(1024), &Progress::off()).await.unwrap();
        assert_eq!(o.stdout, format!("PATH={PATH}\n"));
    }

    #[tokio::test]
    async fn output_past_the_cap_is_cut_and_marked() {
        let o = run(&args(&["sh", "-c", "head -c 100000 /dev/zero | tr '\\0' x"], None), &policy(10), &Progress::off())
            .await
            .unwrap();
        assert_eq!(o.stdout, "x".repeat(10));
        assert!(o.truncated);
        assert_eq!(o.exit_code, Some(0));
    }

    #[tokio::test]
    async fn a_signal_death_has_no_exit_code_and_names_the_signal() {
        let o = run(&args(&["sh", "-c", "kill -TERM $$"], None), &policy(10), &Progress::off()).await.unwrap();
        assert_eq!((o.exit_code, o.signal.as_deref()), (None, Some("SIGTERM")));
    }

    #[tokio::test]
    async fn lines_stream_as_progress_when_asked_cut_at_the_line_limit() {
        let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = std::sync::Arc::clone(&got);
        let progress = Progress::new(move |body| {
            sink.lock().unwrap().push(serde_json::from_slice::<serde_json::Value>(&body).unwrap());
            true
        });
        let script =
            format!("echo one; echo two >&2; head -c {} /dev/zero | tr '\\0' y; echo; printf last", MAX_LINE + 5);
        let o = run(&args(&["sh", "-c", &script], None), &policy(4096), &progress).await.unwrap();
        assert!(o.stdout.starts_with("one\n"), "the result keeps the output: {}", o.stdout);
        let got = got.lock().unwrap().clone();
        let of = |stream: &str| -> Vec<String> {
            got.iter().filter(|v| v["stream"] == stream).map(|v| v["line"].as_str().unwrap().to_owned()).collect()
        };
        assert_eq!(of("stdout"), ["one".to_owned(), "y".repeat(MAX_LINE), "last".to_owned()]);
        assert_eq!(of("stderr"), ["two"]);
        assert_eq!(progress.dropped(), 0);
    }

    #[tokio::test]
    async fn a_missing_program_is_a_handler_error() {
        let e = run(&args(&["no-such-program-orb"], None), &policy(10), &Progress::off()).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::HandlerError);
        assert!(e.message.contains("cannot start no-such-program-orb"), "{}", e.message);
    }
}

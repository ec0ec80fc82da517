//! `orb agent --standalone`: an agent without a server (autofact's serverless mode). It samples
//! the machine every telemetry interval — its `[telemetry]` section, or what a server pushed
//! last (kept in its data folder, `crate::pushed`) — and writes one JSON line per sample,
//! `{"topic": "telemetry.<id>.sys", "at": RFC 3339, "body": {...}}` (the shape `orb sub --json`
//! prints), to stdout or appended to a file. Nothing else runs: no connection, no commands.

use std::io::Write;
use std::path::Path;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::sysmetrics::SysMetrics;
use crate::telemetry::{self, Plan};

/// Where the lines go.
pub enum Sink {
    /// Standard output.
    Stdout,
    /// A file, opened for appending.
    File(std::fs::File),
}

impl Sink {
    /// Stdout, or `path` opened for appending (created when missing).
    ///
    /// # Errors
    /// When the file cannot be opened.
    pub fn open(path: Option<&Path>) -> std::io::Result<Sink> {
        match path {
            None => Ok(Sink::Stdout),
            Some(p) => std::fs::OpenOptions::new().create(true).append(true).open(p).map(Sink::File),
        }
    }

    /// Writes one line and flushes it, so a reader (`tail -f`) sees whole lines as they come.
    fn line(&mut self, line: &[u8]) -> std::io::Result<()> {
        match self {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(line)?;
                out.write_all(b"\n")?;
                out.flush()
            }
            Sink::File(f) => {
                let mut buf = Vec::with_capacity(line.len() + 1);
                buf.extend_from_slice(line);
                buf.push(b'\n');
                f.write_all(&buf)
            }
        }
    }
}

/// Samples and writes until `stop`; `plan` may change while it runs (none while telemetry is
/// off). The first sample is taken at once.
///
/// # Errors
/// When a line cannot be written (a closed pipe, a full disk).
pub async fn run(
    id: &str,
    metrics: SysMetrics,
    mut plan: watch::Receiver<Plan>,
    mut sink: Sink,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let topic = telemetry::topic(id);
    let mut next = Some(tokio::time::Instant::now());
    loop {
        let tick = telemetry::until(next);
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            changed = plan.changed() => {
                if changed.is_ok() {
                    next = plan.borrow_and_update().every.map(|every| tokio::time::Instant::now() + every);
                }
            }
            () = tick => {
                let mut body = metrics.sample().await;
                telemetry::keep_metrics(&mut body, &plan.borrow().metrics);
                let at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
                let line = serde_json::json!({"topic": topic, "at": at, "body": body});
                sink.line(line.to_string().as_bytes())?;
                next = plan.borrow().every.map(|every| tokio::time::Instant::now() + every);
            }
        }
    }
}

//! Logging: a tracing subscriber writing to stderr or a log file, whose filter can be replaced
//! and whose file can be reopened while running (SIGHUP, `RELOAD`, `LOG_ROTATE`), so logrotate
//! works without copytruncate.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::reload;
use tracing_subscriber::util::SubscriberInitExt;

/// Where log lines go: stderr, or a file that can be reopened.
#[derive(Clone)]
// Only the server reopens its log file.
#[cfg_attr(not(feature = "server"), allow(dead_code))]
enum Sink {
    Stderr,
    File { path: PathBuf, file: Arc<Mutex<File>> },
}

/// The writer handed to tracing for each event.
pub struct SinkWriter(Sink);

impl Write for SinkWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &self.0 {
            Sink::Stderr => io::stderr().write(buf),
            Sink::File { file, .. } => file.lock().unwrap_or_else(std::sync::PoisonError::into_inner).write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match &self.0 {
            Sink::Stderr => io::stderr().flush(),
            Sink::File { file, .. } => file.lock().unwrap_or_else(std::sync::PoisonError::into_inner).flush(),
        }
    }
}

impl<'a> MakeWriter<'a> for Sink {
    type Writer = SinkWriter;
    fn make_writer(&'a self) -> Self::Writer {
        SinkWriter(self.clone())
    }
}

/// Controls the running logger (the server reloads and reopens it; agents only install it).
#[derive(Clone)]
#[cfg_attr(not(feature = "server"), allow(dead_code))]
pub struct LogHandle {
    filter: reload::Handle<EnvFilter, tracing_subscriber::Registry>,
    sink: Sink,
}

fn open(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Installs the global logger with `directive` (e.g. `info`), writing to `file` or stderr.
///
/// # Errors
/// When the log file cannot be opened or the directive is not a valid filter.
pub fn init(directive: &str, file: Option<&Path>) -> Result<LogHandle, String> {
    let filter = EnvFilter::try_new(directive).map_err(|e| format!("bad log filter '{directive}': {e}"))?;
    let (filter_layer, handle) = reload::Layer::new(filter);
    let (sink, ansi) = match file {
        Some(p) => {
            let f = open(p).map_err(|e| format!("cannot open log file {}: {e}", p.display()))?;
            (Sink::File { path: p.to_path_buf(), file: Arc::new(Mutex::new(f)) }, false)
        }
        None => {
            let ansi = std::io::IsTerminal::is_terminal(&io::stderr()) && std::env::var_os("NO_COLOR").is_none();
            (Sink::Stderr, ansi)
        }
    };
    let fmt = tracing_subscriber::fmt::layer().with_writer(sink.clone()).with_ansi(ansi);
    // A second init (tests, demo inside a process that logs) keeps the first logger.
    let _ = tracing_subscriber::registry().with(filter_layer).with(fmt).try_init();
    Ok(LogHandle { filter: handle, sink })
}

#[cfg_attr(not(feature = "server"), allow(dead_code))]
impl LogHandle {
    /// A handle to a logger that is not installed (tests): replacing its filter fails.
    #[cfg(test)]
    pub fn detached() -> LogHandle {
        let (_layer, filter) = reload::Layer::<EnvFilter, tracing_subscriber::Registry>::new(EnvFilter::new("info"));
        LogHandle { filter, sink: Sink::Stderr }
    }

    /// Replaces the filter (configuration reload, or a level the server pushes to an agent).
    ///
    /// # Errors
    /// When the directive is invalid; the old filter stays.
    pub fn set_filter(&self, directive: &str) -> Result<(), String> {
        let filter = EnvFilter::try_new(directive).map_err(|e| format!("bad log filter '{directive}': {e}"))?;
        self.filter.reload(filter).map_err(|e| e.to_string())
    }

    /// Reopens the log file at its path (after logrotate moved it). No-op on stderr.
    ///
    /// # Errors
    /// When the file cannot be opened; logging continues to the old file.
    pub fn reopen(&self) -> Result<(), String> {
        if let Sink::File { path, file } = &self.sink {
            let fresh = open(path).map_err(|e| format!("cannot reopen log file {}: {e}", path.display()))?;
            *file.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
        }
        Ok(())
    }
}

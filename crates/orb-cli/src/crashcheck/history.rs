//! The histories the crash checker judges, written by the processes under test themselves
//! (never by the journal or outbox under test) and read back by [`super::checker`]: in each
//! agent's folder, `executed.log` (one line `N` per handler run, appended with O_APPEND and
//! fsync before the handler replies) and `events.log` (`intend N` before an outbox send, `sent N`
//! once the send returned, each fsynced).

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

/// The handler's record of the commands it ran.
pub fn executed_path(agent_dir: &Path) -> PathBuf {
    agent_dir.join("executed.log")
}

/// The event generator's record of the events it meant to send and those the outbox took.
pub fn events_path(agent_dir: &Path) -> PathBuf {
    agent_dir.join("events.log")
}

/// A file lines are appended to, each on disk (fsync) before [`AppendLog::record`] returns.
pub struct AppendLog {
    file: File,
}

impl AppendLog {
    /// Opens (creating) `path` for appending.
    ///
    /// # Errors
    /// When the file cannot be opened.
    pub fn open(path: &Path) -> std::io::Result<AppendLog> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(AppendLog { file })
    }

    /// Appends `line` in one write and waits until it is on disk.
    ///
    /// # Errors
    /// When the write or the fsync fails.
    pub fn record(&mut self, line: &str) -> std::io::Result<()> {
        self.file.write_all(format!("{line}\n").as_bytes())?;
        self.file.sync_data()
    }
}

/// What an agent's event generator recorded.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Events {
    /// Events it was about to hand to the outbox (a kill may have come before or after).
    pub intended: BTreeSet<u64>,
    /// Events the outbox accepted (committed on the agent's disk).
    pub sent: BTreeSet<u64>,
}

impl Events {
    /// The next event to generate after a restart: one past every event ever intended, so an
    /// event whose send a kill interrupted is never sent a second time under the same number.
    pub fn next(&self) -> u64 {
        self.intended.last().map_or(1, |n| n + 1)
    }
}

/// The numbers in `executed.log`, in file order (empty when the file does not exist).
///
/// # Errors
/// A line that is not a number (a torn write would show here).
pub fn read_executed(path: &Path) -> Result<Vec<u64>, String> {
    lines(path)?.iter().map(|l| number(path, l)).collect()
}

/// The events in `events.log` (empty when the file does not exist).
///
/// # Errors
/// A line that is neither `intend N` nor `sent N`.
pub fn read_events(path: &Path) -> Result<Events, String> {
    let mut events = Events::default();
    for line in lines(path)? {
        match line.split_once(' ') {
            Some(("intend", n)) => events.intended.insert(number(path, n)?),
            Some(("sent", n)) => events.sent.insert(number(path, n)?),
            _ => return Err(format!("{}: unexpected line {line:?}", path.display())),
        };
    }
    Ok(events)
}

fn lines(path: &Path) -> Result<Vec<String>, String> {
    match std::fs::read_to_string(path) {
        Ok(text) => {
            if !text.is_empty() && !text.ends_with('\n') {
                return Err(format!("{}: the last line is incomplete (a torn write)", path.display()));
            }
            Ok(text.lines().map(str::to_owned).collect())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

fn number(path: &Path, text: &str) -> Result<u64, String> {
    text.parse().map_err(|_| format!("{}: {text:?} is not a number", path.display()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn logs_read_back_what_was_recorded() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_executed(&executed_path(dir.path())).unwrap(), Vec::<u64>::new());
        let mut log = AppendLog::open(&executed_path(dir.path())).unwrap();
        for n in [1, 2, 2, 5] {
            log.record(&n.to_string()).unwrap();
        }
        assert_eq!(read_executed(&executed_path(dir.path())).unwrap(), [1, 2, 2, 5]);

        let mut events = AppendLog::open(&events_path(dir.path())).unwrap();
        for line in ["intend 1", "sent 1", "intend 2"] {
            events.record(line).unwrap();
        }
        let read = read_events(&events_path(dir.path())).unwrap();
        assert_eq!(read.intended, BTreeSet::from([1, 2]));
        assert_eq!(read.sent, BTreeSet::from([1]));
        assert_eq!(read.next(), 3);
        assert_eq!(Events::default().next(), 1);
    }

    #[test]
    fn damaged_logs_are_reported_not_guessed() {
        let dir = tempfile::tempdir().unwrap();
        let path = executed_path(dir.path());
        std::fs::write(&path, "1\n2").unwrap();
        assert!(read_executed(&path).unwrap_err().contains("incomplete"));
        std::fs::write(&path, "1\nx\n").unwrap();
        assert!(read_executed(&path).unwrap_err().contains("not a number"));
        let events = events_path(dir.path());
        std::fs::write(&events, "sent 1\nlost 2\n").unwrap();
        assert!(read_events(&events).unwrap_err().contains("unexpected line"));
    }
}

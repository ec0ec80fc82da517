//! The agent's durable state in one SQLite file (`agent.db` in its data folder; WAL,
//! `synchronous=FULL`, so a write that returned survives a crash or power loss): the
//! [`Journal`] of held commands it ran (effectively-once execution), the [`Outbox`] of
//! messages it sent that the server has not acknowledged yet, and the [`LocalSchedules`] it runs
//! on its own clock. [`AgentStore::open`] opens them;
//! the client hands them to each connection ([`crate::ClientConfig::journal`], [`crate::Persistent`]).

mod journal;
mod outbox;
mod schedules;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};

pub use journal::{Journal, JournalLimits, Journaled};
pub(crate) use outbox::OutboxMessage;
pub use outbox::{Outbox, OutboxLimits, Receipt};
pub use schedules::{LocalSchedule, LocalSchedules};

/// Why the agent's durable state failed.
#[derive(Debug, thiserror::Error)]
pub enum DurableError {
    /// The file could not be opened or migrated.
    #[error("cannot open {path}: {reason}")]
    Open {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// A read or write failed (disk full, I/O error).
    #[error("agent store: {0}")]
    Storage(String),
    /// The outbox holds its limit of bytes or messages: the new message was refused (nothing
    /// already accepted is dropped).
    #[error("{0}")]
    Full(String),
    /// The message cannot be sent (not JSON, empty command name, too large).
    #[error("{0}")]
    Invalid(String),
    /// The store was closed.
    #[error("the agent store is closed")]
    Closed,
}

impl From<sqlx::Error> for DurableError {
    fn from(e: sqlx::Error) -> Self {
        DurableError::Storage(e.to_string())
    }
}

/// Bounds of the agent store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DurableLimits {
    /// The journal's.
    pub journal: JournalLimits,
    /// The outbox's.
    pub outbox: OutboxLimits,
}

/// The agent's durable state: its journal and its outbox, in one file.
#[derive(Debug, Clone)]
pub struct AgentStore {
    journal: Journal,
    outbox: Outbox,
    schedules: LocalSchedules,
}

/// How long a write waits for SQLite's lock (only this process writes; the agent's data folder
/// is locked by `orb agent`).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

impl AgentStore {
    /// Opens (creating when missing) the store at `path` and applies its migrations.
    ///
    /// # Errors
    /// [`DurableError::Open`] when the file cannot be opened, is not an agent store, or does not
    /// read back WAL and `synchronous=FULL`.
    pub async fn open(path: &Path, limits: DurableLimits) -> Result<AgentStore, DurableError> {
        let fail = |reason: String| DurableError::Open { path: path.to_owned(), reason };
        let options = SqliteConnectOptions::from_str("sqlite://")
            .map_err(|e| fail(e.to_string()))?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(BUSY_TIMEOUT);
        // One connection: every write is serialised anyway, and the outbox batches its own.
        let pool =
            SqlitePoolOptions::new().max_connections(1).connect_with(options).await.map_err(|e| fail(e.to_string()))?;
        sqlx::migrate!("./migrations").run(&pool).await.map_err(|e| fail(e.to_string()))?;
        check_durability(&pool).await.map_err(fail)?;
        let journal = Journal::new(pool.clone(), limits.journal);
        journal.prune(chrono::Utc::now()).await?;
        let schedules = LocalSchedules::new(pool.clone());
        let outbox = Outbox::start(pool, limits.outbox).await?;
        Ok(AgentStore { journal, outbox, schedules })
    }

    /// The journal of held commands.
    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// The outbox.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// The schedules this device runs on its own clock.
    pub fn schedules(&self) -> &LocalSchedules {
        &self.schedules
    }
}

/// Reads back WAL and `synchronous=FULL` (2): what "durable" promises rests on both.
async fn check_durability(pool: &SqlitePool) -> Result<(), String> {
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(pool).await.map_err(|e| e.to_string())?;
    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous").fetch_one(pool).await.map_err(|e| e.to_string())?;
    if !mode.eq_ignore_ascii_case("wal") || sync != 2 {
        return Err(format!("journal_mode={mode} synchronous={sync}; the agent needs wal and 2 (FULL)"));
    }
    Ok(())
}

/// Milliseconds since the Unix epoch.
pub(crate) fn ms(at: chrono::DateTime<chrono::Utc>) -> i64 {
    at.timestamp_millis()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_store_is_wal_with_synchronous_full_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.db");
        let store = AgentStore::open(&path, DurableLimits::default()).await.unwrap();
        check_durability(&store.journal.pool).await.unwrap();
        drop(store);
        AgentStore::open(&path, DurableLimits::default()).await.unwrap();
    }

    #[tokio::test]
    async fn a_file_that_is_not_an_agent_store_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.db");
        std::fs::write(&path, b"not a database, just some bytes that are long enough").unwrap();
        let e = AgentStore::open(&path, DurableLimits::default()).await.unwrap_err();
        assert!(matches!(&e, DurableError::Open { .. }), "{e:?}");
        assert!(e.to_string().contains("agent.db"), "{e}");
    }
}

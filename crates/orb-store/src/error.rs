//! Store errors: typed for the cases callers act on (not found, conflict, ambiguous prefix, bad
//! URL, a database in use); database failures are carried as text, so no driver type leaks
//! through the API.

/// How many of the jobs an ambiguous prefix matches [`StoreError::Ambiguous`] names.
pub const AMBIGUOUS_CANDIDATES: usize = 10;

/// What went wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The device or job does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// The device or job exists already.
    #[error("{0} already exists")]
    Conflict(String),
    /// A job id prefix matches more than one job.
    #[error("job id prefix '{prefix}' matches {count} jobs: {}{}; give more characters", candidates.join(", "), if *count > candidates.len() as u64 { ", ..." } else { "" })]
    Ambiguous {
        /// The prefix given.
        prefix: String,
        /// How many jobs it matches (at least 2).
        count: u64,
        /// The first of them in id order (at most [`AMBIGUOUS_CANDIDATES`]).
        candidates: Vec<String>,
    },
    /// The store URL is not one this build understands.
    #[error("bad store url '{url}': {reason}")]
    BadUrl {
        /// The URL as given (passwords redacted).
        url: String,
        /// Why it is refused.
        reason: String,
    },
    /// Another store holds the SQLite database: its lock file beside it (`PATH.lock`) is locked,
    /// by another orb server (or another store of this process) that has the database open.
    #[error("another orb server is using the database {} (its lock {}.lock is held)", path.display(), path.display())]
    Locked {
        /// The database file (its real path, symbolic links resolved).
        path: std::path::PathBuf,
    },
    /// The database could not be reached, read or written (or its schema could not be migrated).
    #[error("store unavailable: {0}")]
    Unavailable(String),
}

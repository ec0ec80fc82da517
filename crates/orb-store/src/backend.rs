//! The two dialects behind the one SQL implementation: connecting (SQLite file, its lock and
//! pragmas; PostgreSQL pool and a fast-failing probe), pool sizes, and the embedded migrations.
//! What it returns, [`Pools`], goes to the writer (`writer.rs`) and the readers (`query.rs`).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Mutex, Once, PoisonError};
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::Migrator;
use sqlx::{AnyConnection, AnyPool, ConnectOptions, Connection, Executor};

use crate::{StoreError, StoreUrl};

/// SQLite connections that serve reads (WAL lets them run beside the writer).
const SQLITE_READERS: u32 = 4;
/// PostgreSQL connections, shared by readers and the writer (one per batch).
const POSTGRES_POOL: u32 = 8;
/// How long opening a PostgreSQL connection may take before the store is unavailable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a caller waits for a free pooled connection.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long SQLite waits on a lock held by another process before giving up.
const BUSY_TIMEOUT_MS: u32 = 5_000;

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// The embedded migrations of `backend`.
#[cfg(feature = "testkit")]
pub(crate) fn migrations(backend: Backend) -> &'static Migrator {
    match backend {
        Backend::Sqlite => &SQLITE_MIGRATIONS,
        Backend::Postgres => &POSTGRES_MIGRATIONS,
    }
}

/// Which database engine a store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Backend {
    /// An embedded SQLite file.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

impl Backend {
    /// `sqlite` or `postgres`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }
}

/// Connections of an open store. For SQLite, `write` holds the single writing connection and
/// `read` the readers; for PostgreSQL both are the same pool.
pub(crate) struct Pools {
    /// The engine.
    pub(crate) backend: Backend,
    /// Where reads go.
    pub(crate) read: AnyPool,
    /// Where the writer takes its connection for each batch.
    pub(crate) write: AnyPool,
    /// The durability settings read back from the writer's connection at open
    /// ([`crate::Store::durability`]).
    pub(crate) durability: String,
    /// SQLite: the database's lock, held while the store is open (see [`lock_database`]);
    /// released by [`Pools::close`], or when the store is dropped. `None` for PostgreSQL, which
    /// several nodes share.
    lock: Mutex<Option<File>>,
}

impl Pools {
    /// Closes every connection, then releases the database's lock: the next store to open it
    /// finds every connection of this one closed.
    pub(crate) async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
        let lock = self.lock.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(file) = lock
            && let Err(e) = file.unlock()
        {
            // Closing the file (dropping it) releases the lock all the same.
            tracing::debug!(error = %e, "unlocking the database");
        }
    }
}

/// A database failure as the API reports it (no driver type leaks).
pub(crate) fn unavailable(e: sqlx::Error) -> StoreError {
    match e {
        sqlx::Error::PoolClosed => StoreError::Unavailable("the store is closed".to_owned()),
        e => StoreError::Unavailable(e.to_string()),
    }
}

/// Connects and migrates.
pub(crate) async fn connect(url: &StoreUrl) -> Result<Pools, StoreError> {
    install_drivers();
    match url {
        StoreUrl::Sqlite(path) => connect_sqlite(path, url).await,
        StoreUrl::Postgres(text) => connect_postgres(text, url).await,
    }
}

/// Registers sqlx's drivers with the `Any` driver (once per process).
pub(crate) fn install_drivers() {
    static DRIVERS: Once = Once::new();
    DRIVERS.call_once(sqlx::any::install_default_drivers);
}

/// Opens (creating when missing) a SQLite file: WAL, `synchronous=FULL`, foreign keys on.
async fn connect_sqlite(path: &Path, url: &StoreUrl) -> Result<Pools, StoreError> {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        StoreError::Unavailable(format!("cannot {what} {}: {e}", url.redacted()))
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| fail(&format!("create the folder {} for", dir.display()), &e))?;
    }
    // Before the database is touched: one store per database, whichever folder names it.
    let lock = lock_database(path)?;
    create_private_file(path).map(drop).map_err(|e| fail("create", &e))?;
    let path = std::path::absolute(path).map_err(|e| fail("resolve", &e))?;
    let url_text = sqlx::sqlite::SqliteConnectOptions::new().filename(&path).to_url_lossy();
    let options = AnyConnectOptions::from_url(&url_text).map_err(|e| fail("open", &e))?;

    let write = sqlite_pool(1, true).connect_with(options.clone()).await.map_err(|e| fail("open", &e))?;
    SQLITE_MIGRATIONS.run(&write).await.map_err(|e| fail("migrate", &e))?;
    let read = sqlite_pool(SQLITE_READERS, false).connect_with(options).await.map_err(|e| fail("open", &e))?;
    let durability = sqlite_durability(&write).await.map_err(|e| fail("check", &e))?;
    Ok(Pools { backend: Backend::Sqlite, read, write, durability, lock: Mutex::new(Some(lock)) })
}

/// Reads back what the writer's connection commits with: WAL, and `synchronous=FULL` (2), so a
/// commit that returned is on disk. Anything else is refused: acknowledged means on disk.
async fn sqlite_durability(write: &AnyPool) -> Result<String, String> {
    use sqlx::Row;
    let mut conn = write.acquire().await.map_err(|e| e.to_string())?;
    let mode: String = sqlx::query("PRAGMA journal_mode")
        .fetch_one(&mut *conn)
        .await
        .and_then(|r| r.try_get(0))
        .map_err(|e| e.to_string())?;
    let sync: i64 = sqlx::query("PRAGMA synchronous")
        .fetch_one(&mut *conn)
        .await
        .and_then(|r| r.try_get(0))
        .map_err(|e| e.to_string())?;
    if !mode.eq_ignore_ascii_case("wal") || sync != 2 {
        return Err(format!("its durability: journal_mode={mode} synchronous={sync}, orb needs wal and 2 (FULL)"));
    }
    Ok("journal_mode=wal synchronous=FULL".to_owned())
}

/// Takes the exclusive lock on `DATABASE.lock` beside the SQLite database at `path` (its folder
/// exists), creating the lock file when missing. Two servers with different data folders could
/// otherwise open one database (`--store sqlite:...`), and the second would end the first one's
/// running jobs at start. The lock is the operating system's (`flock`, `LockFileEx`): it goes
/// with the process, so a crash leaves no stale lock, and the file left behind means nothing.
/// The path is resolved first (symbolic links of the folder or the file), so every name of
/// one database leads to the same lock.
///
/// # Errors
/// [`StoreError::Locked`] when another store (in this process or another) holds it;
/// [`StoreError::Unavailable`] naming the lock file when it cannot be created or locked.
fn lock_database(path: &Path) -> Result<File, StoreError> {
    let fail = |what: &str, at: &Path, e: &dyn std::fmt::Display| {
        StoreError::Unavailable(format!("cannot {what} {}: {e}", at.display()))
    };
    let real = real_path(path).map_err(|e| fail("resolve", path, &e))?;
    let mut name = real.clone().into_os_string();
    name.push(".lock");
    let lock_path = PathBuf::from(name);
    let file = create_private_file(&lock_path).map_err(|e| fail("create the lock", &lock_path, &e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked { path: real }),
        Err(std::fs::TryLockError::Error(e)) => Err(fail("lock", &lock_path, &e)),
    }
}

/// `path` with symbolic links resolved: the file's when it exists, else its folder's (which
/// exists) joined with the file name.
fn real_path(path: &Path) -> std::io::Result<PathBuf> {
    if path.exists() {
        return std::fs::canonicalize(path);
    }
    let name = path.file_name().ok_or_else(|| std::io::Error::other("the path names no file"))?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    Ok(std::fs::canonicalize(dir)?.join(name))
}

/// Opens a file (the database, its lock), creating it readable by its owner only when it does
/// not exist yet.
fn create_private_file(path: &Path) -> std::io::Result<File> {
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut open, 0o600);
    open.open(path)
}

/// SQLite pool options; `writer` also switches the file to WAL (a persistent setting).
fn sqlite_pool(size: u32, writer: bool) -> AnyPoolOptions {
    AnyPoolOptions::new().max_connections(size).acquire_timeout(ACQUIRE_TIMEOUT).after_connect(move |conn, _meta| {
        Box::pin(async move {
            if writer {
                conn.execute("PRAGMA journal_mode = WAL").await?;
            }
            conn.execute("PRAGMA synchronous = FULL").await?;
            conn.execute("PRAGMA foreign_keys = ON").await?;
            conn.execute(sqlx::AssertSqlSafe(format!("PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}"))).await?;
            Ok(())
        })
    })
}

/// Connects to PostgreSQL. One probe connection first: the pool retries a refused connection
/// until its timeout and then only says it timed out, the probe names the real cause.
async fn connect_postgres(text: &str, url: &StoreUrl) -> Result<Pools, StoreError> {
    let fail =
        |e: &dyn std::fmt::Display| StoreError::Unavailable(format!("cannot connect to {}: {e}", url.redacted()));
    let options = AnyConnectOptions::from_str(text).map_err(|e| fail(&e))?;
    let probe = tokio::time::timeout(CONNECT_TIMEOUT, AnyConnection::connect_with(&options))
        .await
        .map_err(|_| fail(&format!("no answer within {} s", CONNECT_TIMEOUT.as_secs())))?
        .map_err(|e| fail(&e))?;
    if let Err(e) = probe.close().await {
        tracing::debug!(error = %e, "closing the probe connection");
    }
    let pool = AnyPoolOptions::new()
        .max_connections(POSTGRES_POOL)
        .acquire_timeout(ACQUIRE_TIMEOUT)
        // Whatever the database's default, orb's commits wait for the WAL flush.
        .after_connect(|conn, _meta| {
            Box::pin(async move { conn.execute("SET synchronous_commit = on").await.map(drop) })
        })
        .connect_with(options)
        .await
        .map_err(|e| fail(&e))?;
    let durability = postgres_durability(&pool).await.map_err(|e| fail(&e))?;
    POSTGRES_MIGRATIONS
        .run(&pool)
        .await
        .map_err(|e| StoreError::Unavailable(format!("cannot migrate {}: {e}", url.redacted())))?;
    Ok(Pools { backend: Backend::Postgres, read: pool.clone(), write: pool, durability, lock: Mutex::new(None) })
}

/// Reads back `synchronous_commit` (must not be `off`: a commit that returned is flushed) and
/// `fsync` (when `off`, the database server itself does not make commits durable: a warning,
/// since that is the database operator's choice, often a throw-away test database).
async fn postgres_durability(pool: &AnyPool) -> Result<String, String> {
    use sqlx::Row;
    let mut conn = pool.acquire().await.map_err(|e| e.to_string())?;
    let mut show = async |name: &str| -> Result<String, String> {
        let sql = format!("SHOW {name}");
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_one(&mut *conn)
            .await
            .and_then(|r| r.try_get(0))
            .map_err(|e| e.to_string())
    };
    let commit = show("synchronous_commit").await?;
    let fsync = show("fsync").await?;
    if commit.eq_ignore_ascii_case("off") {
        return Err("synchronous_commit is off on this connection; orb needs it on".to_owned());
    }
    if fsync.eq_ignore_ascii_case("off") {
        tracing::warn!("the PostgreSQL server runs with fsync=off: commits orb acknowledges may be lost in a crash");
    }
    Ok(format!("synchronous_commit={commit} fsync={fsync}"))
}

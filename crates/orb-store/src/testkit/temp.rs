//! Throwaway databases for tests: [`TempSqlite`] (a file in a temporary folder) and
//! [`TempPostgres`] (a fresh database on the server named by `ORB_TEST_POSTGRES_URL`, dropped
//! afterwards, even when the test panics). Used by [`Harness`](super::Harness) and by other
//! crates' tests.

use sqlx::{AnyConnection, Connection};

use crate::StoreUrl;

/// The variable naming the PostgreSQL server tests may create databases on.
pub const POSTGRES_URL_VAR: &str = "ORB_TEST_POSTGRES_URL";

/// A SQLite database file in a temporary folder, deleted on drop.
pub struct TempSqlite {
    dir: tempfile::TempDir,
}

impl TempSqlite {
    /// Creates the temporary folder (the database file is created by `open`).
    ///
    /// # Panics
    /// When no temporary folder can be created.
    pub fn new() -> TempSqlite {
        TempSqlite { dir: tempfile::tempdir().expect("creating a temporary folder") }
    }

    /// `sqlite:<dir>/orb.db`.
    pub fn url(&self) -> StoreUrl {
        StoreUrl::in_data_dir(self.dir.path())
    }

    /// The temporary folder.
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }
}

impl Default for TempSqlite {
    fn default() -> Self {
        TempSqlite::new()
    }
}

/// A fresh PostgreSQL database `orb_test_<random hex>`, dropped by [`TempPostgres::drop_db`]
/// or, failing that, on drop.
pub struct TempPostgres {
    admin_url: String,
    name: String,
    url: String,
    dropped: bool,
}

impl TempPostgres {
    /// Creates the database; `None` when `ORB_TEST_POSTGRES_URL` is unset or empty.
    ///
    /// # Panics
    /// When the variable is unset but `CI=true` (PostgreSQL tests must not be skipped in CI),
    /// and when the server refuses to create the database.
    pub async fn create() -> Option<TempPostgres> {
        let admin_url = match std::env::var(POSTGRES_URL_VAR) {
            Ok(url) if !url.trim().is_empty() => url.trim().to_owned(),
            _ => {
                let ci = std::env::var("CI").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
                assert!(!ci, "{POSTGRES_URL_VAR} is required under CI=true (PostgreSQL tests may not be skipped)");
                return None;
            }
        };
        crate::backend::install_drivers();
        let name = format!("orb_test_{:016x}", rand::random::<u64>());
        let url = with_database(&admin_url, &name);
        let mut conn = AnyConnection::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("connecting to {POSTGRES_URL_VAR}: {e}"));
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut conn)
            .await
            .unwrap_or_else(|e| panic!("creating database {name}: {e}"));
        drop(conn.close().await);
        Some(TempPostgres { admin_url, name, url, dropped: false })
    }

    /// The URL of the fresh database.
    ///
    /// # Panics
    /// Never for a URL `create` accepted (it is a `postgres://` URL).
    pub fn url(&self) -> StoreUrl {
        StoreUrl::parse(&self.url).expect("a postgres url")
    }

    /// The database name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Drops the database (connections still open to it are ended).
    pub async fn drop_db(mut self) {
        self.dropped = true;
        if let Err(e) = drop_database(&self.admin_url, &self.name).await {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

impl Drop for TempPostgres {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        // Not dropped explicitly (a test panicked): clean up on a thread with its own runtime,
        // since this may run inside an async context that must not be blocked on.
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build();
            match runtime {
                Ok(rt) => rt.block_on(drop_database(&admin_url, &name)).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            }
        });
        match cleanup.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => eprintln!("could not drop test database {}: {e}", self.name),
            Err(_) => eprintln!("could not drop test database {}: the cleanup thread panicked", self.name),
        }
    }
}

async fn drop_database(admin_url: &str, name: &str) -> Result<(), sqlx::Error> {
    let mut conn = AnyConnection::connect(admin_url).await?;
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")))
        .execute(&mut conn)
        .await?;
    conn.close().await
}

/// `url` with its database (path) replaced by `name`, keeping user, host and parameters.
fn with_database(url: &str, name: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgres", url));
    let (rest, params) = match rest.split_once('?') {
        Some((rest, params)) => (rest, Some(params)),
        None => (rest, None),
    };
    let authority = rest.split('/').next().unwrap_or_default();
    match params {
        Some(params) => format!("{scheme}://{authority}/{name}?{params}"),
        None => format!("{scheme}://{authority}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_only_the_database() {
        assert_eq!(with_database("postgres://u@h:5432/test", "x"), "postgres://u@h:5432/x");
        assert_eq!(with_database("postgres://u:p@h/test?sslmode=disable", "x"), "postgres://u:p@h/x?sslmode=disable");
        assert_eq!(with_database("postgresql://h", "x"), "postgresql://h/x");
    }
}

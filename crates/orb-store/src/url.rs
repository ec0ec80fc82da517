//! Store URLs: `sqlite:PATH` (or `sqlite://PATH`) for the embedded database, `postgres://...`
//! (or `postgresql://...`) for PostgreSQL. Parsed up front so a typo is a configuration error.

use std::path::PathBuf;

use crate::StoreError;

/// Which backend to open, and where. Its `Debug` output hides a PostgreSQL password.
#[derive(Clone, PartialEq, Eq)]
pub enum StoreUrl {
    /// SQLite database file (created when missing).
    Sqlite(PathBuf),
    /// PostgreSQL connection URL.
    Postgres(String),
}

impl StoreUrl {
    /// The default: `orb.db` in the data folder.
    pub fn in_data_dir(data_dir: &std::path::Path) -> StoreUrl {
        StoreUrl::Sqlite(data_dir.join("orb.db"))
    }

    /// Parses a store URL.
    ///
    /// # Errors
    /// [`StoreError::BadUrl`] naming what is wrong.
    pub fn parse(text: &str) -> Result<StoreUrl, StoreError> {
        let bad = |reason: &str| StoreError::BadUrl { url: redact(text), reason: reason.to_owned() };
        let text = text.trim();
        if let Some(rest) = text.strip_prefix("sqlite:") {
            let path = rest.strip_prefix("//").unwrap_or(rest);
            let path = path.split('?').next().unwrap_or_default();
            if path.is_empty() {
                return Err(bad("a sqlite url needs a file path: sqlite:PATH"));
            }
            if path == ":memory:" {
                return Err(bad("an in-memory database would forget everything at exit; give a file path"));
            }
            return Ok(StoreUrl::Sqlite(PathBuf::from(path)));
        }
        if text.starts_with("postgres://") || text.starts_with("postgresql://") {
            let after = text.split_once("://").map(|(_, r)| r).unwrap_or_default();
            if after.is_empty() || after.starts_with('/') && after.len() == 1 {
                return Err(bad("a postgres url needs a host: postgres://USER@HOST:PORT/DATABASE"));
            }
            return Ok(StoreUrl::Postgres(text.to_owned()));
        }
        Err(bad("expected sqlite:PATH or postgres://USER@HOST:PORT/DATABASE"))
    }

    /// The URL for logs and errors, password replaced by `***`.
    pub fn redacted(&self) -> String {
        match self {
            StoreUrl::Sqlite(p) => format!("sqlite:{}", p.display()),
            StoreUrl::Postgres(u) => redact(u),
        }
    }
}

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreUrl::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            StoreUrl::Postgres(url) => f.debug_tuple("Postgres").field(&redact(url)).finish(),
        }
    }
}

/// Replaces the password of `scheme://user:password@host` with `***`.
fn redact(url: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let base = match base.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((userinfo, host)) => match userinfo.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
                None => base.to_owned(),
            },
            None => base.to_owned(),
        },
        None => base.to_owned(),
    };
    let Some(query) = query else { return base };
    let params: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
            _ => p.to_owned(),
        })
        .collect();
    format!("{base}?{}", params.join("&"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_backends() {
        assert_eq!(StoreUrl::parse("sqlite:data/orb.db").unwrap(), StoreUrl::Sqlite("data/orb.db".into()));
        assert_eq!(StoreUrl::parse("sqlite:///var/lib/orb.db").unwrap(), StoreUrl::Sqlite("/var/lib/orb.db".into()));
        let pg = "postgres://orb@127.0.0.1:5432/orb";
        assert_eq!(StoreUrl::parse(pg).unwrap(), StoreUrl::Postgres(pg.into()));
    }

    #[test]
    fn refuses_what_it_cannot_open_and_hides_passwords() {
        for bad in ["", "mysql://x", "sqlite:", "sqlite::memory:", "postgres://", "orb.db"] {
            assert!(matches!(StoreUrl::parse(bad), Err(StoreError::BadUrl { .. })), "{bad}");
        }
        let e = StoreUrl::parse("redis://u:hunter2@h").unwrap_err().to_string();
        assert!(!e.contains("hunter2"), "{e}");
        assert_eq!(StoreUrl::Postgres("postgres://u:pw@h/db".into()).redacted(), "postgres://u:***@h/db");
        assert_eq!(StoreUrl::Postgres("postgres://u:p@ss@h/db".into()).redacted(), "postgres://u:***@h/db");
        assert_eq!(
            StoreUrl::Postgres("postgres://u@h/db?sslmode=disable&Password=x".into()).redacted(),
            "postgres://u@h/db?sslmode=disable&Password=***"
        );
        let debug = format!("{:?}", StoreUrl::Postgres("postgres://u:hunter2@h/db".into()));
        assert_eq!(debug, r#"Postgres("postgres://u:***@h/db")"#);
    }
}

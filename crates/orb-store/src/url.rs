//! Store URLs: `sqlite:PATH` (or `sqlite://PATH`) for the embedded database, `postgres://...`
//! (or `postgresql://...`) for PostgreSQL. Parsed up front so a typo is a configuration error.
//! [`redact_url`] is the one way orb shows a store URL (logs, errors, `orb config show`).

use std::path::PathBuf;

use crate::StoreError;

/// Which backend to open, and where. Its `Debug` output hides a PostgreSQL password
/// ([`redact_url`]).
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
        let bad = |reason: &str| StoreError::BadUrl { url: redact_url(text), reason: reason.to_owned() };
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

    /// The URL for logs and errors, its passwords replaced by `<redacted>` ([`redact_url`]).
    pub fn redacted(&self) -> String {
        match self {
            StoreUrl::Sqlite(p) => format!("sqlite:{}", p.display()),
            StoreUrl::Postgres(u) => redact_url(u),
        }
    }
}

impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreUrl::Sqlite(path) => f.debug_tuple("Sqlite").field(path).finish(),
            StoreUrl::Postgres(url) => f.debug_tuple("Postgres").field(&redact_url(url)).finish(),
        }
    }
}

/// What a redacted password shows.
const REDACTED: &str = "<redacted>";

/// `url` with its passwords replaced by `<redacted>`, other text as is: the password of the
/// user information (`scheme://user:password@host/...`) and the value of every `password=`
/// parameter of the query string (`?password=...` or `&password=...`, the key in any case).
/// Takes any text: a store URL as given, before or without parsing it.
///
/// A password may hold characters a URL should percent-encode but people type as they are:
/// `@`, `/` and `?`. So the user information ends at the *last* `@` before the query; when no
/// `@` comes before a `?`, the `?` may be in the password, and the last `@` anywhere ends it,
/// unless a `/` before that `?` already ended the host (then an `@` further on belongs to the
/// query: `postgres://h/db?user=a@b`).
pub fn redact_url(url: &str) -> String {
    let url = redact_query_password(url);
    let Some((scheme, rest)) = url.split_once("://") else { return url };
    let before_query = &rest[..rest.find('?').unwrap_or(rest.len())];
    let at = before_query.rfind('@').or_else(|| if before_query.contains('/') { None } else { rest.rfind('@') });
    let Some((userinfo, host)) = at.map(|i| (&rest[..i], &rest[i + 1..])) else { return url };
    match userinfo.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:{REDACTED}@{host}"),
        None => url,
    }
}

/// `url` with the value of every `password=VALUE` parameter (right after a `?` or `&`, the key
/// in any case) replaced by `<redacted>`; the value ends at the next `&` or `#`.
fn redact_query_password(url: &str) -> String {
    const KEY: &str = "password=";
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    while let Some(i) = rest.find(['?', '&']) {
        let (head, tail) = rest.split_at(i + 1);
        out.push_str(head);
        rest = tail;
        if rest.get(..KEY.len()).is_some_and(|k| k.eq_ignore_ascii_case(KEY)) {
            out.push_str(&rest[..KEY.len()]);
            out.push_str(REDACTED);
            rest = &rest[rest.find(['&', '#']).unwrap_or(rest.len())..];
        }
    }
    out.push_str(rest);
    out
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
        for (text, secret) in [
            ("redis://u:hunter2@h", "hunter2"),
            ("mysql://u:p?ss/w@h/db", "p?ss"),
            ("postgres://", "unused"),
            ("orb.db?password=hunter3", "hunter3"),
        ] {
            let e = StoreUrl::parse(text).unwrap_err();
            let StoreError::BadUrl { url, .. } = &e else { panic!("{e:?}") };
            assert_eq!(url, &redact_url(text));
            assert!(!e.to_string().contains(secret), "{e}");
        }
        assert_eq!(StoreUrl::Postgres("postgres://u:pw@h/db".into()).redacted(), "postgres://u:<redacted>@h/db");
        assert_eq!(StoreUrl::Postgres("postgres://u:p@ss@h/db".into()).redacted(), "postgres://u:<redacted>@h/db");
        assert_eq!(StoreUrl::Postgres("postgres://u:p?ss@h/db".into()).redacted(), "postgres://u:<redacted>@h/db");
        assert_eq!(
            StoreUrl::Postgres("postgres://u@h/db?sslmode=disable&Password=x".into()).redacted(),
            "postgres://u@h/db?sslmode=disable&Password=<redacted>"
        );
        assert_eq!(StoreUrl::Sqlite("data/orb.db".into()).redacted(), "sqlite:data/orb.db");
        for (url, shown) in [
            ("postgres://u:hunter2@h/db", "postgres://u:<redacted>@h/db"),
            ("postgres://u:p?ss@h/db", "postgres://u:<redacted>@h/db"),
            ("postgres://u@h/db?password=hunter2", "postgres://u@h/db?password=<redacted>"),
        ] {
            assert_eq!(format!("{:?}", StoreUrl::Postgres(url.into())), format!("Postgres({shown:?})"));
        }
    }

    /// The cases of the CLI's `orb config show`, which redacted store URLs itself before
    /// this function (`store_url_passwords_are_redacted_in_the_user_information_and_the_query`
    /// and `secrets_are_redacted_in_show`), and the one `StoreUrl` missed (`u:p?ss@`).
    #[test]
    fn passwords_are_redacted_in_the_user_information_and_the_query() {
        let cases = [
            ("postgres://orb:pw@h:5432/db", "postgres://orb:<redacted>@h:5432/db"),
            ("postgres://orb:p@ss/w@h/db", "postgres://orb:<redacted>@h/db"),
            ("postgres://orb:p?ss@h/db", "postgres://orb:<redacted>@h/db"),
            ("postgres://u:p?ss@h/db", "postgres://u:<redacted>@h/db"),
            ("postgres://orb@h/db?password=pw", "postgres://orb@h/db?password=<redacted>"),
            (
                "postgresql://h/db?user=orb&Password=p@w&sslmode=require",
                "postgresql://h/db?user=orb&Password=<redacted>&sslmode=require",
            ),
            ("postgres://u:a@h/db?password=b#frag", "postgres://u:<redacted>@h/db?password=<redacted>#frag"),
            ("postgres://h/db?user=a@b&password=x", "postgres://h/db?user=a@b&password=<redacted>"),
            ("postgres://h/db?passwords=kept&x=password=kept", "postgres://h/db?passwords=kept&x=password=kept"),
            ("postgres://h/db?password=", "postgres://h/db?password=<redacted>"),
            ("sqlite:orb.db", "sqlite:orb.db"),
            // From `secrets_are_redacted_in_show`.
            ("postgres://orb:pg-pass-word@db.example:5432/orb", "postgres://orb:<redacted>@db.example:5432/orb"),
            (
                "postgres://orb@db.example/orb?password=pg-pass-word",
                "postgres://orb@db.example/orb?password=<redacted>",
            ),
            ("postgres://orb@h/db", "postgres://orb@h/db"),
        ];
        for (url, shown) in cases {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }
}

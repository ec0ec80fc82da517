//! Where contexts are kept: `DIR/contexts/NAME.toml`, one per context (server URL, token file,
//! description), and `DIR/context`, the name `orb context use` selected; DIR is the user's
//! configuration folder ([`crate::config::user_dir`]). Files are written atomically with mode 0600
//! (folders created 0700). A context never holds a token, only the path of a file holding one.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The folder (inside DIR) holding one `NAME.toml` per context.
const CONTEXTS: &str = "contexts";
/// The file (inside DIR) naming the selected context.
const SELECTED: &str = "context";
/// Longest description kept.
pub const MAX_DESCRIPTION: usize = 200;

/// One context: what `contexts/NAME.toml` holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    /// Server URL (`tcp://HOST:PORT` or `ws://HOST:PORT/v1/ws`).
    pub server: String,
    /// File holding the admin token (absolute when written by `orb context add`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// Free text shown by `orb context ls`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// CA certificate for a `tls://` or `wss://` server (absolute path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
    /// Client certificate to present (absolute path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// The client certificate's key (absolute path).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

/// Checks a context name: `[A-Za-z0-9][A-Za-z0-9_.-]{0,63}` (so it is always a plain file name).
///
/// # Errors
/// A message saying what a name may hold.
pub fn check_name(name: &str) -> Result<(), String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if first_ok && rest_ok && name.len() <= 64 {
        Ok(())
    } else {
        Err(format!("'{name}' is not a context name: 1 to 64 of A-Z a-z 0-9 _ . -, starting with a letter or digit"))
    }
}

/// The contexts in one configuration folder.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// The contexts kept in `dir` (created on the first write).
    pub fn new(dir: impl Into<PathBuf>) -> Store {
        Store { dir: dir.into() }
    }

    /// The file of context `name`.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(CONTEXTS).join(format!("{name}.toml"))
    }

    /// The file naming the selected context.
    pub fn selection_path(&self) -> PathBuf {
        self.dir.join(SELECTED)
    }

    /// Every context's name, sorted. Files that are not `VALID-NAME.toml` are not contexts and
    /// are skipped (an editor's backup, a temporary file).
    ///
    /// # Errors
    /// A message naming the folder when it exists but cannot be read.
    pub fn names(&self) -> Result<Vec<String>, String> {
        let folder = self.dir.join(CONTEXTS);
        let entries = match std::fs::read_dir(&folder) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(format!("cannot read {}: {e}", folder.display())),
        };
        let mut names: Vec<String> = entries
            .filter_map(Result::ok)
            .filter_map(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".toml")).map(str::to_owned))
            .filter(|n| check_name(n).is_ok())
            .collect();
        names.sort();
        Ok(names)
    }

    /// Context `name`; `Ok(None)` when there is none (or `name` is not a valid name).
    ///
    /// # Errors
    /// A message naming the file when it cannot be read or is not a context.
    pub fn load(&self, name: &str) -> Result<Option<Context>, String> {
        if check_name(name).is_err() {
            return Ok(None);
        }
        let file = self.path(name);
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
        };
        let c: Context = toml::from_str(&text).map_err(|e| {
            format!(
                "{} is not a context (server, token_file, description, ca_cert, cert, key): {}",
                file.display(),
                e.message()
            )
        })?;
        Ok(Some(c))
    }

    /// Writes context `name` (replacing one of that name).
    ///
    /// # Errors
    /// A message naming the file when it cannot be written.
    pub fn save(&self, name: &str, c: &Context) -> Result<(), String> {
        check_name(name)?;
        let body = toml::to_string(c).map_err(|e| format!("cannot encode context {name}: {e}"))?;
        let text =
            format!("# orb context '{name}', written by `orb context add`. Never a token: only its file.\n{body}");
        crate::private_file::write(&self.dir.join(CONTEXTS), &format!("{name}.toml"), text.as_bytes())
            .map_err(|e| format!("cannot write {}: {e}", self.path(name).display()))
    }

    /// Deletes context `name`; `Ok(false)` when there was none.
    ///
    /// # Errors
    /// A message naming the file when it cannot be removed.
    pub fn remove(&self, name: &str) -> Result<bool, String> {
        if check_name(name).is_err() {
            return Ok(false);
        }
        let file = self.path(name);
        match std::fs::remove_file(&file) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(format!("cannot remove {}: {e}", file.display())),
        }
    }

    /// The name `orb context use` selected, if any (whether or not that context still exists).
    ///
    /// # Errors
    /// A message naming the file when it cannot be read or does not hold a context name.
    pub fn selected(&self) -> Result<Option<String>, String> {
        let file = self.selection_path();
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
        };
        let name = text.trim();
        if name.is_empty() {
            return Ok(None);
        }
        check_name(name).map_err(|e| format!("{}: {e}", file.display()))?;
        Ok(Some(name.to_owned()))
    }

    /// Selects context `name`, or clears the selection with `None`.
    ///
    /// # Errors
    /// A message naming the file when it cannot be written or removed.
    pub fn select(&self, name: Option<&str>) -> Result<(), String> {
        let file = self.selection_path();
        match name {
            Some(name) => {
                check_name(name)?;
                crate::private_file::write(&self.dir, SELECTED, format!("{name}\n").as_bytes())
                    .map_err(|e| format!("cannot write {}: {e}", file.display()))
            }
            None => match std::fs::remove_file(&file) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(format!("cannot remove {}: {e}", file.display())),
            },
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    fn prod() -> Context {
        Context {
            server: "tcp://10.0.0.5:7700".into(),
            token_file: Some("/etc/orb/admin.token".into()),
            description: Some("production".into()),
            ..Context::default()
        }
    }

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn names_follow_the_documented_pattern() {
        for good in ["a", "prod", "eu-west.1", "A_b-9", &"x".repeat(64)] {
            assert!(check_name(good).is_ok(), "{good}");
        }
        for bad in ["", ".hidden", "-x", "_x", "a/b", "..", "a b", "é", "prod.toml/", &"x".repeat(65)] {
            let e = check_name(bad).unwrap_err();
            assert!(e.contains("not a context name"), "{bad}: {e}");
        }
    }

    #[test]
    fn saved_contexts_are_private_listed_and_read_back() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::new(root.path().join("orb"));
        assert_eq!(store.names().unwrap(), Vec::<String>::new());
        assert_eq!(store.load("prod").unwrap(), None);
        store.save("prod", &prod()).unwrap();
        let lab =
            Context { server: "ws://lab:7780/v1/ws".into(), token_file: None, description: None, ..Context::default() };
        store.save("lab", &lab).unwrap();
        assert_eq!(store.names().unwrap(), ["lab", "prod"]);
        assert_eq!(store.load("prod").unwrap(), Some(prod()));
        assert_eq!(store.load("lab").unwrap(), Some(lab));
        assert_eq!(mode(&store.path("prod")), 0o600);
        assert_eq!(mode(&root.path().join("orb")), 0o700);
        assert_eq!(mode(&root.path().join("orb").join("contexts")), 0o700);
        // Replacing leaves no temporary file behind; stray files are not contexts.
        store.save("prod", &Context { description: None, ..prod() }).unwrap();
        std::fs::write(root.path().join("orb/contexts/prod.toml~"), "x").unwrap();
        std::fs::write(root.path().join("orb/contexts/.x.toml"), "x").unwrap();
        assert_eq!(store.names().unwrap(), ["lab", "prod"]);
        assert_eq!(store.load("prod").unwrap().unwrap().description, None);
        assert!(store.remove("prod").unwrap());
        assert!(!store.remove("prod").unwrap());
        assert_eq!(store.names().unwrap(), ["lab"]);
    }

    #[test]
    fn the_selection_is_a_private_file_naming_the_context() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::new(root.path());
        assert_eq!(store.selected().unwrap(), None);
        store.select(Some("prod")).unwrap();
        assert_eq!(store.selected().unwrap().as_deref(), Some("prod"));
        assert_eq!(std::fs::read_to_string(store.selection_path()).unwrap(), "prod\n");
        assert_eq!(mode(&store.selection_path()), 0o600);
        store.select(None).unwrap();
        store.select(None).unwrap();
        assert_eq!(store.selected().unwrap(), None);
        assert!(store.select(Some("../etc")).is_err());
        std::fs::write(store.selection_path(), "../../etc/passwd\n").unwrap();
        let e = store.selected().unwrap_err();
        assert!(e.contains("not a context name") && e.contains("context"), "{e}");
    }

    #[test]
    fn a_bad_context_file_is_named_and_an_invalid_name_is_never_a_path() {
        let root = tempfile::tempdir().unwrap();
        let store = Store::new(root.path());
        store.save("x", &prod()).unwrap();
        std::fs::write(store.path("x"), "server = \"tcp://a:1\"\ntoken = \"hunter2\"\n").unwrap();
        let e = store.load("x").unwrap_err();
        assert!(e.contains("x.toml") && e.contains("token") && !e.contains("hunter2"), "{e}");
        assert_eq!(store.load("../x").unwrap(), None);
        assert!(store.save("../x", &prod()).is_err());
        assert!(!store.remove("../x").unwrap());
    }
}

//! The agent's device credential in its data folder: `credentials.json` holding the id and secret
//! the server issued at enrollment (or that `orb devices add` printed), written atomically and
//! private to the user (folder 0700, file 0600).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file name inside the agent's data folder.
pub const FILE: &str = "credentials.json";

/// What `credentials.json` holds. Only `id` and `secret` are needed (a hand-provisioned file
/// may have just those two).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Credentials {
    /// Device id.
    pub id: String,
    /// Device secret.
    pub secret: String,
    /// The server URL it enrolled with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    /// RFC 3339 UTC time of the enrollment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrolled_at: Option<String>,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("id", &self.id)
            .field("secret", &"<redacted>")
            .field("server", &self.server)
            .field("enrolled_at", &self.enrolled_at)
            .finish()
    }
}

/// The path of the credential file in `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Reads `dir/credentials.json`; `Ok(None)` when there is none.
///
/// # Errors
/// A message naming the file when it cannot be read or is not a credential (the secret is
/// never part of it).
pub fn load(dir: &Path) -> Result<Option<Credentials>, String> {
    let file = path(dir);
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read {}: {e}", file.display())),
    };
    let c: Credentials = serde_json::from_str(&text).map_err(|e| {
        // serde_json errors name the position, never the content.
        format!("{} is not a credential file like {{\"id\": \"...\", \"secret\": \"...\"}}: {e}", file.display())
    })?;
    if c.id.is_empty() || c.secret.is_empty() {
        return Err(format!("{}: 'id' and 'secret' must not be empty", file.display()));
    }
    Ok(Some(c))
}

/// Writes `dir/credentials.json` atomically: a temporary file created with mode 0600 in the same
/// folder, written and synced, renamed over the old one, then the folder synced.
///
/// # Errors
/// The I/O error (the message never contains the secret).
pub fn save(dir: &Path, c: &Credentials) -> std::io::Result<()> {
    let mut json = serde_json::to_vec_pretty(c).map_err(std::io::Error::other)?;
    json.push(b'\n');
    crate::private_file::write(dir, FILE, &json)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn sample() -> Credentials {
        Credentials {
            id: "dev-1".into(),
            secret: "s3cret-value".into(),
            server: Some("tcp://127.0.0.1:7700".into()),
            enrolled_at: Some("2026-01-01T00:00:00Z".into()),
        }
    }

    #[test]
    fn saved_credentials_are_private_and_read_back() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a").join("b");
        assert_eq!(load(&dir).unwrap(), None);
        save(&dir, &sample()).unwrap();
        assert_eq!(load(&dir).unwrap(), Some(sample()));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path(&dir)), 0o600);
        assert_eq!(mode(&dir), 0o700);
        // Overwriting leaves no temporary file behind.
        save(&dir, &Credentials { secret: "other".into(), ..sample() }).unwrap();
        let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, [std::ffi::OsString::from(FILE)]);
        assert_eq!(load(&dir).unwrap().unwrap().secret, "other");
    }

    #[test]
    fn a_hand_written_file_needs_only_id_and_secret_and_errors_hide_the_secret() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(path(dir.path()), r#"{"id":"dev-2","secret":"abc"}"#).unwrap();
        let c = load(dir.path()).unwrap().unwrap();
        assert_eq!((c.id.as_str(), c.secret.as_str(), c.server.as_deref()), ("dev-2", "abc", None));
        assert!(!format!("{c:?}").contains("abc"));
        std::fs::write(path(dir.path()), r#"{"id":"dev-2","secret":"hunter2" "#).unwrap();
        let e = load(dir.path()).unwrap_err();
        assert!(e.contains("credentials.json") && !e.contains("hunter2"), "{e}");
    }
}

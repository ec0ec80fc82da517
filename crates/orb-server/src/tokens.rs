//! The data folder's credentials: read explicit tokens, or generate `admin.token` and
//! `agent.token` (mode 0600) on first start so local use needs no setup.

use std::fs;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rand::RngCore;

use crate::config::Secret;
use crate::error::ServerError;

/// File name of the generated operator token inside the data folder.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";
/// File name of the generated agent token inside the data folder.
pub const AGENT_TOKEN_FILE: &str = "agent.token";

/// Returns `explicit` when given, else the token in `dir/file`, creating it with 32 random bytes
/// (hex) and mode 0600 when it does not exist.
///
/// # Errors
/// [`ServerError::DataDir`] when the folder or file cannot be read or written.
pub fn load_or_generate(dir: &Path, file: &str, explicit: Option<&Secret>) -> Result<Secret, ServerError> {
    if let Some(s) = explicit {
        if s.expose().len() < 16 {
            tracing::warn!(file, "token is shorter than 16 characters; use a long random token outside tests");
        }
        return Ok(s.clone());
    }
    let path = dir.join(file);
    let data_err = |e: std::io::Error| ServerError::DataDir { path: path.clone(), source: e };
    match fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() => return Ok(Secret::new(s.trim())),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(data_err(e)),
    }
    fs::create_dir_all(dir).map_err(data_err)?;
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let token = hex::encode(raw);
    let mut f =
        fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&path).map_err(data_err)?;
    f.write_all(format!("{token}\n").as_bytes()).map_err(data_err)?;
    tracing::info!(path = %path.display(), "generated token");
    Ok(Secret::new(token))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn generates_once_with_private_mode_then_reuses() {
        let dir = tempfile::tempdir().unwrap();
        let a = load_or_generate(dir.path(), ADMIN_TOKEN_FILE, None).unwrap();
        let b = load_or_generate(dir.path(), ADMIN_TOKEN_FILE, None).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.expose().len(), 64);
        let mode = fs::metadata(dir.path().join(ADMIN_TOKEN_FILE)).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn explicit_tokens_win_and_write_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let t = load_or_generate(dir.path(), AGENT_TOKEN_FILE, Some(&Secret::new("short"))).unwrap();
        assert_eq!(t.expose(), "short");
        assert!(!dir.path().join(AGENT_TOKEN_FILE).exists());
    }
}

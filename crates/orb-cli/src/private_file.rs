//! Files only their owner may read: folders created with mode 0700 and files written atomically
//! with mode 0600 — an agent's credentials, the CLI's contexts.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// Creates `dir` and its missing parents with mode 0700.
///
/// # Errors
/// The I/O error.
pub fn create_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Writes `dir/file` atomically and privately: a temporary file created with mode 0600 in `dir`
/// (created 0700 when missing), written and synced, renamed over the old one, then `dir` synced.
/// A reader sees the old content or the new, never a part.
///
/// # Errors
/// The I/O error (the temporary file is removed).
pub fn write(dir: &Path, file: &str, bytes: &[u8]) -> std::io::Result<()> {
    create_dir(dir)?;
    let tmp = dir.join(format!(".{file}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp)?;
        // The mode above is filtered by the umask and ignored for an existing file: set it outright.
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, dir.join(file))?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

//! This server's node id: names the jobs it owns in a shared store and the correlations it opens,
//! so several servers on one database (scale-out) never end or answer each other's work. Read from
//! the configuration, else from `DATA/node.id`, generated there on first start.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rand::RngCore;

use crate::error::ServerError;

/// File name of the generated node id inside the data folder.
pub const NODE_ID_FILE: &str = "node.id";

/// A node id: 1 to 32 characters of `A-Z a-z 0-9 _ -`, starting with a letter or digit (no `.`:
/// it is one segment of a correlation id).
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct NodeId(Arc<str>);

impl NodeId {
    /// Validates `s`.
    ///
    /// # Errors
    /// A message saying what is wrong.
    pub fn new(s: &str) -> Result<NodeId, String> {
        let ok_first = s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric());
        let ok_rest = s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if s.len() > 32 || !ok_first || !ok_rest {
            return Err(format!(
                "node id '{}' must be 1 to 32 characters of [A-Za-z0-9_-], starting with a letter or digit",
                orb_proto::excerpt(s)
            ));
        }
        Ok(NodeId(Arc::from(s)))
    }

    /// `n-` and 8 random hex digits.
    pub fn generate() -> NodeId {
        let mut raw = [0u8; 4];
        rand::rng().fill_bytes(&mut raw);
        NodeId(Arc::from(format!("n-{}", hex::encode(raw)).as_str()))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// `configured` when given, else the id in `DATA/node.id`, generated (and written) when the
    /// file does not exist.
    ///
    /// # Errors
    /// [`ServerError::DataDir`] when the file cannot be read or written, [`ServerError::Config`]
    /// when the stored or configured id is not valid.
    pub fn load_or_generate(data_dir: &Path, configured: Option<&str>) -> Result<NodeId, ServerError> {
        if let Some(id) = configured {
            return NodeId::new(id).map_err(|e| ServerError::Config(vec![e]));
        }
        let path = data_dir.join(NODE_ID_FILE);
        let io = |source| ServerError::DataDir { path: path.clone(), source };
        match std::fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => {
                return NodeId::new(text.trim())
                    .map_err(|e| ServerError::Config(vec![format!("{}: {e}", path.display())]));
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        std::fs::create_dir_all(data_dir).map_err(io)?;
        let id = NodeId::generate();
        std::fs::write(&path, format!("{id}\n")).map_err(io)?;
        tracing::info!(node = %id, path = %path.display(), "generated node id");
        Ok(id)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({})", &self.0)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_validated_and_a_generated_one_is_kept_in_the_data_folder() {
        assert!(NodeId::new("n-1a2b").is_ok());
        for bad in ["", "-x", "a.b", &"x".repeat(33), "a b"] {
            assert!(NodeId::new(bad).is_err(), "{bad}");
        }
        let dir = tempfile::tempdir().unwrap();
        let a = NodeId::load_or_generate(dir.path(), None).unwrap();
        let b = NodeId::load_or_generate(dir.path(), None).unwrap();
        assert_eq!(a, b);
        assert!(a.as_str().starts_with("n-"));
        assert_eq!(NodeId::load_or_generate(dir.path(), Some("edge-1")).unwrap().as_str(), "edge-1");
    }
}

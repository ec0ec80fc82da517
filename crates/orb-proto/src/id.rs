//! The device id newtype, [`DeviceId`]: validated, one topic segment, cheap to clone. A refused
//! id is echoed in the error only as a short, escaped [`excerpt`].

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::text::excerpt;

/// Words that may not be device ids because the CLI uses them as sub-commands (`orb devices show`).
pub const RESERVED_IDS: &[&str] = &["add", "rm", "revoke", "show", "tag", "untag", "and", "or", "not"];

/// Why a string is not a valid [`DeviceId`]. Each variant carries the refused id as a short
/// [`excerpt`] with control characters escaped, never the whole input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Empty string.
    #[error("device id is empty")]
    Empty,
    /// Longer than 64 bytes.
    #[error("device id '{0}' is longer than 64 characters")]
    TooLong(String),
    /// A character outside `[A-Za-z0-9_-]`, or a first character that is not alphanumeric.
    #[error("device id '{0}' must match [A-Za-z0-9][A-Za-z0-9_-]{{0,63}}")]
    BadChar(String),
    /// One of [`RESERVED_IDS`].
    #[error("device id '{0}' is a reserved word")]
    Reserved(String),
}

/// How an [`IdError`] shows the refused id: a short prefix, escaped so that a control character
/// in it cannot break a log line.
fn echo(s: &str) -> String {
    excerpt(s).escape_debug().to_string()
}

/// A device id: `[A-Za-z0-9][A-Za-z0-9_-]{0,63}`, never one of [`RESERVED_IDS`].
///
/// Cheap to clone (shared string), because the router and every job hold many of them.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct DeviceId(Arc<str>);

impl DeviceId {
    /// Validates `s` and wraps it.
    ///
    /// # Errors
    /// [`IdError`] naming what is wrong.
    pub fn new(s: &str) -> Result<DeviceId, IdError> {
        let bytes = s.as_bytes();
        let Some(first) = bytes.first() else {
            return Err(IdError::Empty);
        };
        if bytes.len() > 64 {
            return Err(IdError::TooLong(echo(s)));
        }
        let rest_ok = bytes[1..].iter().all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-');
        if !first.is_ascii_alphanumeric() || !rest_ok {
            return Err(IdError::BadChar(echo(s)));
        }
        if RESERVED_IDS.contains(&s) {
            return Err(IdError::Reserved(echo(s)));
        }
        Ok(DeviceId(Arc::from(s)))
    }

    /// The id as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DeviceId({})", &self.0)
    }
}

impl std::borrow::Borrow<str> for DeviceId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for DeviceId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DeviceId::new(s)
    }
}

impl<'de> Deserialize<'de> for DeviceId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        DeviceId::new(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn valid_ids_are_accepted() {
        for s in ["web-1", "a", "A_b-9", &"x".repeat(64)] {
            assert_eq!(DeviceId::new(s).map(|d| d.to_string()), Ok(s.to_string()));
        }
    }

    #[test]
    fn invalid_ids_say_why() {
        assert_eq!(DeviceId::new(""), Err(IdError::Empty));
        assert!(matches!(DeviceId::new(&"x".repeat(65)), Err(IdError::TooLong(_))));
        assert!(matches!(DeviceId::new("web.1"), Err(IdError::BadChar(_))));
        assert!(matches!(DeviceId::new("-web"), Err(IdError::BadChar(_))));
        assert!(matches!(DeviceId::new("web 1"), Err(IdError::BadChar(_))));
        assert!(matches!(DeviceId::new("show"), Err(IdError::Reserved(_))));
    }

    #[test]
    fn a_huge_bad_id_is_echoed_as_a_short_prefix() {
        let mib = 1 << 20;
        for (s, want) in [
            ("x".repeat(mib), "longer than 64"),
            (format!("{}!", "x".repeat(mib)), "longer than 64"),
            ("é".repeat(mib), "longer than 64"),
        ] {
            let msg = DeviceId::new(&s).unwrap_err().to_string();
            assert!(msg.len() < 200, "{} bytes", msg.len());
            assert!(
                msg.contains(want) && msg.contains(&format!("{}…", &s[..s.char_indices().nth(64).unwrap().0])),
                "{msg}"
            );
        }
        let msg = DeviceId::new(&format!("-{}", "y".repeat(40))).unwrap_err().to_string();
        assert_eq!(msg, format!("device id '-{}' must match [A-Za-z0-9][A-Za-z0-9_-]{{0,63}}", "y".repeat(40)));
    }

    #[test]
    fn control_characters_in_a_refused_id_are_escaped() {
        let msg = DeviceId::new("web\n1\x1b[31m").unwrap_err().to_string();
        assert!(!msg.contains('\n') && !msg.contains('\x1b'), "{msg:?}");
        assert!(msg.contains("web\\n1\\u{1b}[31m"), "{msg:?}");
    }
}

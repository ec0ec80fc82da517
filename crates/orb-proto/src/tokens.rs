//! Operator tokens and their roles (security): the arguments and results of `$orb.tokens.add`,
//! `$orb.tokens.list` and `$orb.tokens.revoke`, and [`Access`], what an operator credential may
//! do: `admin` everything, `operator` send and schedule within the rules of `[[acl.operators]]`,
//! `viewer` read only.

use serde::{Deserialize, Serialize};

/// What an operator credential may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    /// Everything: the admin token and tokens made with this role.
    Admin,
    /// Read everything; send commands, schedule and publish where `[[acl.operators]]` rules allow;
    /// cancel jobs and change schedules. Never the registry, tokens or signals.
    Operator,
    /// Read only: devices, jobs, schedules, the server, the event feeds.
    Viewer,
}

impl Access {
    /// Every role.
    pub const ALL: [Access; 3] = [Access::Admin, Access::Operator, Access::Viewer];

    /// The wire name, e.g. `viewer`.
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Admin => "admin",
            Access::Operator => "operator",
            Access::Viewer => "viewer",
        }
    }

    /// Parses a wire name.
    pub fn parse(s: &str) -> Option<Access> {
        Access::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

impl std::fmt::Display for Access {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Arguments of `$orb.tokens.add`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenAdd {
    /// The token's name (the id rule: letters, digits, `-`, `_`, `.`-free), shown in the job
    /// history as the requester.
    pub name: String,
    /// Its role.
    pub role: Access,
    /// It expires this many milliseconds after it is made (1 to [`MAX_TOKEN_LIFETIME_MS`]);
    /// absent: never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_ms: Option<u64>,
}

/// The longest lifetime `$orb.tokens.add` gives a token: ten years.
pub const MAX_TOKEN_LIFETIME_MS: u64 = 10 * 365 * 24 * 3600 * 1000;

/// Result of `$orb.tokens.add`: the token itself, shown this once (the server keeps its SHA-256).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenCreated {
    /// The token's name.
    pub name: String,
    /// Its role.
    pub role: Access,
    /// The token: 64 hex characters.
    pub token: String,
    /// RFC 3339 UTC expiry time; absent: it never expires.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
}

/// One token as `$orb.tokens.list` shows it (never the token).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenInfo {
    /// The token's name.
    pub name: String,
    /// Its role.
    pub role: Access,
    /// RFC 3339 UTC creation time.
    pub created_at: String,
    /// RFC 3339 UTC revocation time; null while it is valid.
    pub revoked_at: Option<String>,
    /// RFC 3339 UTC expiry time (it admits nobody from then on); null: never.
    #[serde(default)]
    pub expires_at: Option<String>,
}

/// Arguments of `$orb.tokens.revoke`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRef {
    /// The token's name.
    pub name: String,
}

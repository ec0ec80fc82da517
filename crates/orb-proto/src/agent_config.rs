//! Settings a server pushes to its agents (`[[fleet.agents]]` rules in the server's
//! configuration): the body of `welcome.config` and of the `config` frame, checked against the
//! protocol's bounds here so the server refuses a bad rule when it loads its configuration and an
//! agent never applies one. The agent merges them with its own configuration (`orb agent`).

use serde::{Deserialize, Serialize};

use crate::argv::Pattern;

/// The measured parts of a telemetry sample that `telemetry_metrics` can choose; identity keys
/// (hostname, OS, uptimes, clock) are always sent.
pub const TELEMETRY_METRICS: &[&str] = &["cpu", "load", "memory", "swap", "disks", "network"];

/// Most `exec_allow` patterns pushed to one agent.
pub const MAX_EXEC_ALLOW: usize = 256;
/// Longest `exec_allow` pattern, in bytes.
pub const MAX_PATTERN_LEN: usize = 1024;
/// Longest `log_level` directive, in bytes.
pub const MAX_LOG_LEVEL_LEN: usize = 256;
/// Largest settings object a server pushes to one agent, as JSON, in bytes.
pub const MAX_SETTINGS_BYTES: usize = 64 * 1024;
/// Shortest pushed telemetry interval (other than 0, off), in milliseconds.
pub const MIN_TELEMETRY_INTERVAL_MS: u64 = 100;
/// Longest pushed telemetry interval: one day, in milliseconds.
pub const MAX_TELEMETRY_INTERVAL_MS: u64 = 24 * 3600 * 1000;

/// What a server pushes to one agent. Every member is optional; an absent one leaves the agent's
/// own setting in force. A `config` frame carries the whole set, replacing the one before (so
/// `{}` returns the agent to its own configuration).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct AgentSettings {
    /// How often the agent publishes its system metrics, in milliseconds; 0 turns telemetry off.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry_interval_ms: Option<u64>,
    /// Which parts of the system metrics it publishes ([`TELEMETRY_METRICS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub telemetry_metrics: Option<Vec<String>>,
    /// Its log filter: a level (`debug`) or comma-separated `target=level` directives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_level: Option<String>,
    /// Argv patterns added to its `exec` allow list, where its own configuration accepts them
    /// (`[exec] accept_server_additions`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exec_allow: Vec<String>,
}

impl AgentSettings {
    /// Whether nothing is pushed (the agent's own configuration applies throughout).
    pub fn is_empty(&self) -> bool {
        *self == AgentSettings::default()
    }

    /// `later` over `self`: its values replace these, its `exec_allow` patterns are added (once
    /// each, in order).
    pub fn merge(&mut self, later: &AgentSettings) {
        if later.telemetry_interval_ms.is_some() {
            self.telemetry_interval_ms = later.telemetry_interval_ms;
        }
        if later.telemetry_metrics.is_some() {
            self.telemetry_metrics.clone_from(&later.telemetry_metrics);
        }
        if later.log_level.is_some() {
            self.log_level.clone_from(&later.log_level);
        }
        for p in &later.exec_allow {
            if !self.exec_allow.contains(p) {
                self.exec_allow.push(p.clone());
            }
        }
    }

    /// Every problem with the values, each naming its member.
    ///
    /// # Errors
    /// The problems, one message each.
    pub fn check(&self) -> Result<(), Vec<String>> {
        let mut p = Vec::new();
        if let Some(ms) = self.telemetry_interval_ms
            && ms != 0
            && !(MIN_TELEMETRY_INTERVAL_MS..=MAX_TELEMETRY_INTERVAL_MS).contains(&ms)
        {
            p.push(format!(
                "telemetry_interval_ms = {ms}: 0 (off) or {MIN_TELEMETRY_INTERVAL_MS} to {MAX_TELEMETRY_INTERVAL_MS}"
            ));
        }
        if let Some(metrics) = &self.telemetry_metrics {
            p.extend(metrics_problems(metrics));
        }
        if let Some(level) = &self.log_level
            && let Err(e) = check_log_level(level)
        {
            p.push(format!("log_level: {e}"));
        }
        if self.exec_allow.len() > MAX_EXEC_ALLOW {
            p.push(format!("exec_allow: {} patterns, at most {MAX_EXEC_ALLOW}", self.exec_allow.len()));
        }
        for (i, entry) in self.exec_allow.iter().enumerate() {
            if entry.len() > MAX_PATTERN_LEN {
                p.push(format!("exec_allow entry {i}: {} bytes, at most {MAX_PATTERN_LEN}", entry.len()));
            } else if let Err(e) = Pattern::parse(entry) {
                p.push(format!("exec_allow entry {i}: {e}"));
            }
        }
        let size = serde_json::to_vec(self).map_or(0, |v| v.len());
        if size > MAX_SETTINGS_BYTES {
            p.push(format!("{size} bytes of settings, at most {MAX_SETTINGS_BYTES}"));
        }
        if p.is_empty() { Ok(()) } else { Err(p) }
    }
}

/// Problems with a list of telemetry metric names: each must be one of [`TELEMETRY_METRICS`].
pub fn metrics_problems(metrics: &[String]) -> Vec<String> {
    metrics
        .iter()
        .filter(|m| !TELEMETRY_METRICS.contains(&m.as_str()))
        .map(|m| format!("telemetry metric '{}' is not one of {}", crate::excerpt(m), TELEMETRY_METRICS.join(", ")))
        .collect()
}

/// Checks a log filter: a level, or comma-separated directives `target=level` (targets of
/// letters, digits, `_` and `::`), the level one of `trace`, `debug`, `info`, `warn`, `error`,
/// `off`. A subset of what `tracing`'s filters read, so an agent can always apply it.
///
/// # Errors
/// What is wrong, naming the directive.
pub fn check_log_level(filter: &str) -> Result<(), String> {
    const LEVELS: &[&str] = &["trace", "debug", "info", "warn", "error", "off"];
    if filter.len() > MAX_LOG_LEVEL_LEN {
        return Err(format!("{} bytes, at most {MAX_LOG_LEVEL_LEN}", filter.len()));
    }
    if filter.trim().is_empty() {
        return Err("empty: give a level such as info".into());
    }
    for directive in filter.split(',') {
        let d = directive.trim();
        let (target, level) = match d.split_once('=') {
            Some((t, l)) => (Some(t), l),
            None => (None, d),
        };
        let shown = crate::excerpt(d);
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            return Err(format!("'{shown}': the level must be one of {}", LEVELS.join(", ")));
        }
        if let Some(t) = target {
            let ok = !t.is_empty()
                && t.split("::")
                    .all(|part| !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'));
            if !ok {
                return Err(format!("'{shown}': a target is a module path like orb_client::persistent"));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn settings(json: &str) -> AgentSettings {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn later_values_replace_earlier_ones_and_patterns_add_up() {
        let mut s = settings(r#"{"telemetry_interval_ms": 60000, "log_level": "info", "exec_allow": ["uptime"]}"#);
        s.merge(&settings(r#"{"telemetry_interval_ms": 5000, "exec_allow": ["df -h", "uptime"]}"#));
        assert_eq!(s.telemetry_interval_ms, Some(5000));
        assert_eq!(s.log_level.as_deref(), Some("info"));
        assert_eq!(s.exec_allow, ["uptime", "df -h"]);
        assert!(AgentSettings::default().is_empty() && !s.is_empty());
        // Unknown members are ignored (a newer server may push more).
        assert!(settings(r#"{"future": 1}"#).is_empty());
        assert_eq!(serde_json::to_string(&AgentSettings::default()).unwrap(), "{}");
    }

    #[test]
    fn every_bad_value_is_named() {
        let s = settings(
            r#"{"telemetry_interval_ms": 10, "telemetry_metrics": ["cpu", "gpu"], "log_level": "loud",
                "exec_allow": ["uname -s", "* x", ""]}"#,
        );
        let p = s.check().unwrap_err();
        assert_eq!(p.len(), 5, "{p:?}");
        assert!(p[0].starts_with("telemetry_interval_ms = 10"), "{p:?}");
        assert!(p[1].contains("'gpu'"), "{p:?}");
        assert!(p[2].starts_with("log_level: 'loud'"), "{p:?}");
        assert!(p[3].starts_with("exec_allow entry 1:"), "{p:?}");
        assert!(p[4].starts_with("exec_allow entry 2:"), "{p:?}");
        assert!(settings(r#"{"telemetry_interval_ms": 0, "telemetry_metrics": []}"#).check().is_ok());
        let many = AgentSettings { exec_allow: vec!["true".into(); MAX_EXEC_ALLOW + 1], ..AgentSettings::default() };
        assert!(many.check().unwrap_err()[0].contains("at most 256"));
    }

    #[test]
    fn log_levels_are_levels_or_target_directives() {
        for ok in ["info", "DEBUG", "warn,orb_client=debug", "orb_client::persistent=trace, off"] {
            assert_eq!(check_log_level(ok), Ok(()), "{ok}");
        }
        for bad in ["", "loud", "orb=", "=info", "a-b=info", "orb[span]=info", "x::=info", &"a".repeat(300)] {
            assert!(check_log_level(bad).is_err(), "{bad}");
        }
    }
}

//! The stored forms of a schedule: [`Spec`] (when it fires) and [`MissedPolicy`] (what happens to
//! firings missed while the server was down). Both are serde types; the scheduler persists them
//! with the schedule and hands them back to [`crate::next_after`] and [`crate::due`].

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ScheduleError;
use crate::cron::CronSchedule;

/// The shortest `--every` interval.
pub const MIN_EVERY: Duration = Duration::from_secs(1);

/// The longest `--every` interval, 365 days: longer periods are better said with `--cron`.
pub const MAX_EVERY: Duration = Duration::from_secs(365 * 24 * 60 * 60);

/// When a schedule fires. JSON: `{"kind": "at", "at": "2026-12-07T17:00:00Z"}`,
/// `{"kind": "every", "every_ms": 60000, "anchor": "…"}`, `{"kind": "cron", "expr": "0 9 * * 1-5", "tz": "Europe/Berlin"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Spec {
    /// Once, at `at` (`--at`, `--in`).
    At {
        /// The one firing (RFC 3339).
        #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
        at: DateTime<Utc>,
    },
    /// At `anchor + k·every` for every integer k ≥ 0 (`--every`). Anchored, so firings never
    /// drift however late each one is handled. With the anchor at creation time, the first
    /// firing after creation is one interval later.
    Every {
        /// The interval in milliseconds, within [`MIN_EVERY`]..=[`MAX_EVERY`] (1 s to 365 days).
        #[cfg_attr(feature = "openapi", schema(minimum = 1000, maximum = 31_536_000_000_u64))]
        every_ms: u64,
        /// The instant the grid of firings is laid from (RFC 3339).
        #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime))]
        anchor: DateTime<Utc>,
    },
    /// Whenever the wall clock in `tz` matches `expr` (`--cron`), with the DST rules described
    /// in [`crate::next_after`].
    Cron {
        /// A 5-field crontab expression, or 6 fields with seconds first, or an `@nickname`.
        expr: String,
        /// An IANA zone name, such as `Europe/Berlin` or `UTC`.
        tz: String,
    },
}

impl Spec {
    /// Checks a spec that did not come from the `parse_*` functions (read back from storage,
    /// or sent as JSON): the interval is in range, the cron expression and zone are valid and
    /// the expression fires at all. A past [`Spec::At`] is valid; it just never fires again.
    ///
    /// # Errors
    ///
    /// The error the matching `parse_*` function would have given.
    pub fn validate(&self) -> Result<(), ScheduleError> {
        match self {
            Self::At { .. } => Ok(()),
            Self::Every { every_ms, .. } => {
                let every = Duration::from_millis(*every_ms);
                every_ms_checked(every, &humantime::format_duration(every).to_string()).map(drop)
            }
            Self::Cron { expr, tz } => CronSchedule::parse(expr, tz).map(drop),
        }
    }
}

/// `every` in whole milliseconds, if it is a valid `--every` interval. `value` is the interval
/// as the user wrote it, for the error message.
pub(crate) fn every_ms_checked(every: Duration, value: &str) -> Result<u64, ScheduleError> {
    let refuse = |reason: &str| ScheduleError::InvalidDuration { value: value.to_owned(), reason: reason.to_owned() };
    if every.is_zero() {
        return Err(ScheduleError::ZeroInterval(value.to_owned()));
    }
    if every < MIN_EVERY {
        return Err(refuse("shorter than the minimum interval of 1s"));
    }
    if every > MAX_EVERY {
        return Err(refuse("longer than the maximum interval of 365days"));
    }
    if !every.subsec_nanos().is_multiple_of(1_000_000) {
        return Err(refuse("finer than a millisecond"));
    }
    // At most 365 days, so the product cannot overflow.
    Ok(every.as_secs() * 1000 + u64::from(every.subsec_millis()))
}

/// What happens to firings that fell due while the server was down (or too late to count as on
/// time; see [`crate::due`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum MissedPolicy {
    /// Drop missed firings; carry on at the next future one.
    #[default]
    Skip,
    /// If any firing was missed, fire once now (however many were missed), then carry on at the
    /// next future one.
    RunOnce,
}

impl MissedPolicy {
    /// `skip` or `run-once`: the CLI, config and stored form.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Skip => "skip",
            Self::RunOnce => "run-once",
        }
    }
}

impl fmt::Display for MissedPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for MissedPolicy {
    type Err = ScheduleError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "skip" => Ok(Self::Skip),
            "run-once" => Ok(Self::RunOnce),
            other => Err(ScheduleError::InvalidPolicy(other.to_owned())),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn spec_json_is_tagged_snake_case() {
        let anchor = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let every = Spec::Every { every_ms: 60_000, anchor };
        let json = serde_json::to_value(&every).unwrap();
        assert_eq!(json, serde_json::json!({"kind": "every", "every_ms": 60000, "anchor": "2026-01-01T00:00:00Z"}));
        assert_eq!(serde_json::from_value::<Spec>(json).unwrap(), every);

        let cron: Spec = serde_json::from_str(r#"{"kind":"cron","expr":"0 9 * * 1-5","tz":"UTC"}"#).unwrap();
        assert_eq!(cron, Spec::Cron { expr: "0 9 * * 1-5".into(), tz: "UTC".into() });
    }

    #[test]
    fn missed_policy_round_trips_through_str_and_serde() {
        assert_eq!(MissedPolicy::default(), MissedPolicy::Skip);
        for policy in [MissedPolicy::Skip, MissedPolicy::RunOnce] {
            assert_eq!(policy.as_str().parse::<MissedPolicy>().unwrap(), policy);
            let json = serde_json::to_string(&policy).unwrap();
            assert_eq!(json, format!("\"{policy}\""));
        }
        let err = "run_once".parse::<MissedPolicy>().unwrap_err();
        assert_eq!(err.code(), "invalid_policy");
        assert!(err.to_string().contains("`run_once`"), "{err}");
    }

    #[test]
    fn validate_refuses_what_parsing_would_refuse() {
        let anchor = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let every = |every_ms| Spec::Every { every_ms, anchor };
        assert!(every(1000).validate().is_ok());
        assert_eq!(every(0).validate().unwrap_err().code(), "zero_interval");
        assert_eq!(every(999).validate().unwrap_err().code(), "invalid_duration");
        let cron = |expr: &str, tz: &str| Spec::Cron { expr: expr.into(), tz: tz.into() };
        assert!(cron("*/5 * * * *", "UTC").validate().is_ok());
        assert_eq!(cron("0 0 30 2 *", "UTC").validate().unwrap_err().code(), "invalid_cron");
        assert_eq!(cron("* * * * *", "Mars/Olympus").validate().unwrap_err().code(), "unknown_zone");
    }
}

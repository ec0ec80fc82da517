//! [`ScheduleError`]: why a schedule was refused. Each variant has a stable [`ScheduleError::code`]
//! (for the API's error table) and a message that names the value, or the cron field, at fault.

use chrono::{DateTime, SecondsFormat, Utc};

/// A schedule that cannot be accepted. Nothing is stored when one of these is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// One field of a cron expression is invalid.
    #[error("cron field {position} ({name}) `{value}`: {reason}")]
    CronField {
        /// 1-based position of the field in the expression as written.
        position: usize,
        /// What the field means: `second`, `minute`, `hour`, `day of month`, `month`, `day of week`.
        name: &'static str,
        /// The field as written.
        value: String,
        /// What is wrong with it, and what the field allows.
        reason: String,
    },
    /// A cron expression that is wrong as a whole: field count, unknown `@nickname`, or it never
    /// fires (`0 0 30 2 *`).
    #[error("cron `{expr}`: {reason}")]
    Cron {
        /// The expression as written.
        expr: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A time zone name that is not in the IANA database.
    #[error("unknown time zone `{0}`: expected an IANA name such as Europe/Berlin, or UTC")]
    UnknownZone(String),
    /// A time that cannot be read, or a local time that does not exist in its zone.
    #[error("time `{value}`: {reason}")]
    InvalidTime {
        /// The time as written.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A one-shot time (`--at`, `--in`) that is not after now.
    #[error("time `{value}` ({}) is not after now ({})", rfc3339(.at), rfc3339(.now))]
    InThePast {
        /// The time as written.
        value: String,
        /// The instant it names.
        at: DateTime<Utc>,
        /// The instant it was checked against.
        now: DateTime<Utc>,
    },
    /// A zero duration for `--every` or `--in`.
    #[error("duration `{0}` is zero")]
    ZeroInterval(String),
    /// A duration that cannot be read or is out of the accepted range.
    #[error("duration `{value}`: {reason}")]
    InvalidDuration {
        /// The duration as written.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A missed-firing policy other than `skip` or `run-once`.
    #[error("missed-firing policy `{0}`: expected skip or run-once")]
    InvalidPolicy(String),
}

impl ScheduleError {
    /// The stable snake_case code of this error, as the API and `--json` output show it.
    pub fn code(&self) -> &'static str {
        match self {
            Self::CronField { .. } | Self::Cron { .. } => "invalid_cron",
            Self::UnknownZone(_) => "unknown_zone",
            Self::InvalidTime { .. } => "invalid_time",
            Self::InThePast { .. } => "in_the_past",
            Self::ZeroInterval(_) => "zero_interval",
            Self::InvalidDuration { .. } => "invalid_duration",
            Self::InvalidPolicy(_) => "invalid_policy",
        }
    }
}

/// RFC 3339 in UTC (`Z`), with a fraction only when the instant has one.
fn rfc3339(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn cron_field_message_names_position_field_and_value() {
        let e = ScheduleError::CronField {
            position: 2,
            name: "hour",
            value: "25".into(),
            reason: "number out of bounds; allowed 0-23".into(),
        };
        assert_eq!(e.code(), "invalid_cron");
        assert_eq!(e.to_string(), "cron field 2 (hour) `25`: number out of bounds; allowed 0-23");
    }

    #[test]
    fn in_the_past_message_shows_both_instants() {
        let e = ScheduleError::InThePast {
            value: "2026-01-01 10:00".into(),
            at: Utc.with_ymd_and_hms(2026, 1, 1, 9, 0, 0).unwrap(),
            now: Utc.with_ymd_and_hms(2026, 6, 1, 0, 0, 0).unwrap(),
        };
        assert_eq!(e.code(), "in_the_past");
        assert_eq!(
            e.to_string(),
            "time `2026-01-01 10:00` (2026-01-01T09:00:00Z) is not after now (2026-06-01T00:00:00Z)"
        );
    }
}

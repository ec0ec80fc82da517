//! The one table of stable error codes: their snake_case wire form, HTTP status and meaning.
//! Wire `error` frames, error results and (later) HTTP JSON bodies all use it; `docs/errors.md`
//! mirrors it and a test keeps the two in step.

use serde::{Deserialize, Serialize};

macro_rules! error_codes {
    ($($variant:ident = $wire:literal, $http:literal, $doc:literal;)*) => {
        /// A stable, documented reason for a refusal or a failed result.
        ///
        /// The wire and JSON form is the snake_case string; codes are never renamed or reused.
        /// Unknown codes from newer peers decode as [`ErrorCode::Other`] carrying the string.
        #[derive(Debug, Clone, PartialEq, Eq, Hash)]
        pub enum ErrorCode {
            $(#[doc = $doc] $variant,)*
            /// A code this build does not know (sent by a newer peer or a custom handler).
            Other(String),
        }

        impl ErrorCode {
            /// Every known code, in documentation order.
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The wire form, e.g. `unknown_command`.
            pub fn as_str(&self) -> &str {
                match self {
                    $(ErrorCode::$variant => $wire,)*
                    ErrorCode::Other(s) => s,
                }
            }

            /// The HTTP status the REST API answers with for this code.
            pub fn http_status(&self) -> u16 {
                match self {
                    $(ErrorCode::$variant => $http,)*
                    ErrorCode::Other(_) => 500,
                }
            }

            /// One line saying what the code means.
            pub fn description(&self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $doc,)*
                    ErrorCode::Other(_) => "a code this build does not know",
                }
            }

            /// Parses a wire string; unknown strings become [`ErrorCode::Other`].
            pub fn from_wire(s: &str) -> ErrorCode {
                match s {
                    $($wire => ErrorCode::$variant,)*
                    other => ErrorCode::Other(other.to_owned()),
                }
            }
        }
    };
}

error_codes! {
    BadFrame = "bad_frame", 400, "the frame is not a valid envelope (not JSON, not an object, missing kind, wrong field types)";
    FrameTooLarge = "frame_too_large", 413, "the frame is larger than the peer's maximum frame size";
    HandshakeRequired = "handshake_required", 400, "the first frame of a connection must be hello";
    HandshakeTimeout = "handshake_timeout", 408, "no hello arrived within the handshake timeout";
    UnsupportedVersion = "unsupported_version", 400, "the hello asks for a protocol version the server does not speak";
    AuthFailed = "auth_failed", 401, "the credentials in hello are missing or wrong";
    Forbidden = "forbidden", 403, "the credentials are valid but do not allow this action";
    BadRequest = "bad_request", 400, "a field the message kind requires is missing or invalid";
    BadId = "bad_id", 400, "a device id does not match `[A-Za-z0-9][A-Za-z0-9_-]{0,63}` or is reserved";
    BadSelector = "bad_selector", 400, "the target selector does not parse";
    UnknownGroup = "unknown_group", 400, "the selector names a group that is not configured";
    BadArgs = "bad_args", 400, "the command's arguments are not what the handler expects";
    InvalidArgs = "invalid_args", 400, "the command's arguments do not match the JSON Schema its device declared for them (checked before the handler runs); the message names the JSON Pointer path at fault and what is wrong";
    BadBody = "bad_body", 400, "a body (arguments or result) breaks the body limits: nested deeper than 64 levels, or a string with an unpaired surrogate escape";
    UnknownCommand = "unknown_command", 404, "no handler is registered for the command name; for a job: every target declared its commands and none declares this one (the message suggests the nearest declared name)";
    DeviceOffline = "device_offline", 404, "the device addressed by a request is not connected";
    NoMatch = "no_match", 404, "the target selector matches no device (with `select: online`: no connected device; the message says how many matched devices are offline)";
    Timeout = "timeout", 504, "no answer arrived before the deadline";
    HandlerError = "handler_error", 500, "the handler failed without giving a more specific code";
    HandlerPanicked = "handler_panicked", 500, "the handler panicked; the agent survived and reported it";
    NotAllowed = "not_allowed", 403, "the agent's configuration does not allow this command line (`exec` and its `[exec] allow` list); nothing was run";
    ExitStatus = "exit_status", 500, "the command the agent ran (`exec`) exited with a non-zero status or was killed by a signal; `error.data` holds its result (`exit_code`, `signal`, `stdout`, `stderr`, `truncated`)";
    Unsupported = "unsupported", 501, "the message kind is reserved for a later protocol feature";
    SlowConsumer = "slow_consumer", 503, "the connection's outbound queue was full, so it was closed";
    Lagged = "lagged", 503, "the requester read a job's results too slowly, so the server stopped sending them; the job runs on and its results are in the job history";
    ServerShutdown = "server_shutdown", 503, "the server is stopping; reconnect later";
    ShuttingDown = "shutting_down", 503, "the receiver is stopping and accepts no new commands";
    TooManyConnections = "too_many_connections", 503, "the server's connection limit (total or per address) is reached";
    TooManyJobs = "too_many_jobs", 429, "the client already has the maximum number of jobs in flight";
    RateLimited = "rate_limited", 429, "too many attempts in a short time: new device enrollments or failed authentications from this address, or new agent sessions on the whole server; try again later";
    Cancelled = "cancelled", 409, "the command was cancelled before it finished";
    QueueFull = "queue_full", 507, "the device's queue of held commands is full (count or bytes); this command was not queued";
    Expired = "expired", 410, "the command's TTL passed before its device connected; it never ran";
    Interrupted = "interrupted", 500, "the command was handed to the device, whose answer was lost (it disconnected, or the server restarted), or the agent stopped while running it (its journal says so); it is not run again";
    IdTaken = "id_taken", 409, "the device id is registered with its own secret; only that secret may connect as it";
    Revoked = "revoked", 403, "the device's credential was revoked by an operator";
    IdMismatch = "id_mismatch", 403, "the hello's id is not the device id its verified client certificate names (URI SAN `urn:orb:device:ID`, else CN)";
    TlsRequired = "tls_required", 426, "the port speaks TLS only: connect with tls:// (agent port) or wss:// and https:// (HTTP port)";
    DeviceNotFound = "device_not_found", 404, "no device with this id is registered";
    DeviceExists = "device_exists", 409, "a device with this id is already registered";
    JobNotFound = "job_not_found", 404, "no stored job has this id or id prefix";
    AmbiguousId = "ambiguous_id", 400, "the id prefix matches more than one job or schedule (the message lists up to 10 of them); give more characters";
    JobFinished = "job_finished", 409, "the job already finished, so there is nothing left to cancel";
    WrongNode = "wrong_node", 409, "the job is run by another server node sharing the store; ask that node";
    BadSchedule = "bad_schedule", 400, "the schedule cannot be stored: its time is in the past, its cron expression, zone or interval is invalid, or it never fires (the message names the value at fault)";
    BadRollout = "bad_rollout", 400, "the job's rollout options are invalid: a batch of 0, a percentage outside 0-100, a splay or batch wait above a day, or batch options without a batch size (the message names the value at fault)";
    ScheduleNotFound = "schedule_not_found", 404, "no stored schedule has this id or id prefix";
    TooManySchedules = "too_many_schedules", 507, "the server stores its maximum number of schedules (limits.max_schedules), or this one is larger than limits.max_schedule_bytes";
    BadTopic = "bad_topic", 400, "a topic or subscription pattern is malformed: an empty segment, whitespace, a wildcard inside a segment or in a topic to publish on, > not last, too long (the message names the segment)";
    TooManySubscriptions = "too_many_subscriptions", 429, "the connection holds its limit of subscriptions (limits.max_subscriptions)";
    TooManyRetained = "too_many_retained", 507, "the server retains its maximum number of topics (limits.max_retained) or bytes (limits.max_retained_bytes); this publication was not retained (nor delivered)";
    NotFound = "not_found", 404, "the HTTP API has no such endpoint";
    StoreUnavailable = "store_unavailable", 503, "the server could not read or write its store; the message says why";
    Internal = "internal", 500, "an unexpected server fault; the message says more";
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Ok(ErrorCode::from_wire(&s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_wire_form() {
        for code in ErrorCode::ALL {
            assert_eq!(&ErrorCode::from_wire(code.as_str()), code);
            let s = code.as_str();
            assert!(s.chars().all(|c| c.is_ascii_lowercase() || c == '_'), "{s} is snake_case");
        }
    }

    #[test]
    fn unknown_codes_are_kept_verbatim() {
        let c = ErrorCode::from_wire("disk_full");
        assert_eq!(c, ErrorCode::Other("disk_full".into()));
        assert_eq!(c.as_str(), "disk_full");
    }

    /// `docs/errors.md` holds this table row for row, in the same order: code, HTTP status and
    /// meaning, so neither can change without the other.
    #[test]
    fn docs_list_every_code_with_its_status_and_meaning_in_table_order() {
        let doc = include_str!("../../../docs/errors.md");
        let rows: Vec<&str> = doc.lines().filter(|l| l.starts_with("| `")).collect();
        let want: Vec<String> = ErrorCode::ALL
            .iter()
            .map(|c| format!("| `{}` | {} | {} |", c.as_str(), c.http_status(), c.description()))
            .collect();
        for (row, code) in want.iter().zip(ErrorCode::ALL) {
            assert!(doc.lines().any(|l| l == row), "docs/errors.md lacks the row of {code}: {row}");
        }
        assert_eq!(rows, want, "docs/errors.md lists the codes in table order, and only these");
    }

    #[test]
    fn codes_are_unique_and_statuses_are_http_errors() {
        let mut seen = std::collections::HashSet::new();
        for code in ErrorCode::ALL {
            assert!(seen.insert(code.as_str()), "{code} twice");
            assert!((400..600).contains(&code.http_status()), "{code}");
            assert!(!code.description().ends_with('.'), "{code}: no trailing period");
        }
    }

    #[test]
    fn the_limit_codes_have_their_statuses() {
        for (wire, status) in [("bad_body", 400), ("rate_limited", 429), ("lagged", 503)] {
            let code = ErrorCode::from_wire(wire);
            assert!(!matches!(code, ErrorCode::Other(_)), "{wire} is known");
            assert_eq!(code.http_status(), status, "{wire}");
        }
        assert_eq!(ErrorCode::BadBody.as_str(), "bad_body");
        assert_eq!(ErrorCode::RateLimited.as_str(), "rate_limited");
        assert_eq!(ErrorCode::Lagged.as_str(), "lagged");
    }
}

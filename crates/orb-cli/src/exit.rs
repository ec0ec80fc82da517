//! Exit codes (documented in the README and `orb --help`) and the [`Failure`] every command
//! returns to say which one applies.

use orb_client::ClientError;
use orb_proto::ErrorCode;

/// Success.
pub const OK: u8 = 0;
/// A target failed, nothing matched, or a general error.
pub const FAILED: u8 = 1;
/// Bad usage: bad selector, bad JSON, bad flag value.
pub const USAGE: u8 = 2;
/// The server could not be reached.
pub const UNREACHABLE: u8 = 69;
/// An internal error (e.g. the runtime could not start).
pub const SOFTWARE: u8 = 70;
/// A temporary failure: retrying later may work (e.g. another server holds the data folder).
#[cfg_attr(not(feature = "server"), allow(dead_code))]
pub const TEMPFAIL: u8 = 75;
/// Authentication or permission refused.
pub const DENIED: u8 = 77;
/// Invalid configuration.
pub const CONFIG: u8 = 78;
/// Interrupted by Ctrl-C (128 + SIGINT, as a shell reports it): `orb send` detached or cancelled.
pub const INTERRUPTED: u8 = 130;

/// A command's failure: the exit code and the message printed as `error: ...`.
#[derive(Debug)]
pub struct Failure {
    /// Exit code.
    pub code: u8,
    /// What went wrong.
    pub message: String,
}

impl Failure {
    /// A failure with `code`.
    pub fn new(code: u8, message: impl Into<String>) -> Failure {
        Failure { code, message: message.into() }
    }

    /// A usage error (exit 2).
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure::new(USAGE, message)
    }
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Failure {
        let code = match &e {
            ClientError::Unreachable { .. } | ClientError::WrongPort { .. } | ClientError::Tls { .. } => UNREACHABLE,
            ClientError::Refused(b) | ClientError::Remote(b) => match b.code {
                ErrorCode::AuthFailed
                | ErrorCode::Forbidden
                | ErrorCode::IdTaken
                | ErrorCode::Revoked
                | ErrorCode::IdMismatch => DENIED,
                // `unknown_command` refusing a whole job: no target declares the command (a typo,
                // answered with "did you mean"); nothing was sent.
                ErrorCode::BadSelector
                | ErrorCode::UnknownGroup
                | ErrorCode::BadArgs
                | ErrorCode::InvalidArgs
                | ErrorCode::BadId
                | ErrorCode::BadSchedule
                | ErrorCode::BadRollout
                | ErrorCode::UnknownCommand => USAGE,
                _ => FAILED,
            },
            _ => FAILED,
        };
        Failure::new(code, e.to_string())
    }
}

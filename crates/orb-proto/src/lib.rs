//! orb wire protocol v1, sans I/O: the [`Envelope`] every frame carries, its [`codec`]s (JSON, and
//! MessagePack negotiated in `hello` as a [`Codec`]; bodies are JSON bytes in both), the limits
//! a body must respect ([`body`]), typed bodies for the handshake and jobs ([`message`]), the
//! device registry ([`registry`]) and job history ([`history`]), schedules ([`schedule`]), job
//! rollouts ([`rollout`]), pub/sub topics ([`topic`]), stable [`ErrorCode`]s, device
//! ids ([`id`]), target [`selector`]s and short echoes of refused input ([`excerpt`]). The
//! server, the client library and the CLI all use this one crate, so the codec cannot drift
//! between them. Transports (TCP frames, WebSocket) live in the crates that do I/O.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod agent_config;
pub mod argv;
pub mod audit;
pub mod body;
pub mod codec;
pub mod envelope;
pub mod error;
pub mod history;
pub mod id;
pub mod message;
#[cfg(feature = "openapi")]
mod openapi;
pub mod registry;
pub mod rollout;
pub mod schedule;
pub mod selector;
pub mod text;
pub mod tokens;
pub mod topic;

pub use codec::{Codec, DecodeError, decode, encode};
pub use envelope::{Envelope, ErrorBody, Kind, Status};
pub use error::ErrorCode;
pub use id::{DeviceId, IdError};
pub use selector::{Selector, SelectorError, SelectorErrorKind, Subject, check_tag};
pub use text::{bounded, excerpt};

/// The protocol version this build speaks. A server accepts this version and the one before it.
pub const PROTOCOL_VERSION: u32 = 1;
/// The oldest protocol version a server of this build still accepts.
pub const MIN_PROTOCOL_VERSION: u32 = 1;
/// Default largest frame, in bytes, a peer accepts (length prefix excluded). Checked before allocating.
pub const DEFAULT_MAX_FRAME: usize = 1024 * 1024;
/// Default TCP port for agent connections.
pub const DEFAULT_TCP_PORT: u16 = 7700;
/// Default HTTP port (REST, WebSocket at [`WS_PATH`]).
pub const DEFAULT_HTTP_PORT: u16 = 7780;
/// Path of the WebSocket endpoint on the HTTP port.
pub const WS_PATH: &str = "/v1/ws";
/// Prefix of the command names reserved for the server's own operator queries.
pub const RESERVED_PREFIX: &str = "$orb.";

#[cfg(test)]
mod tests {
    use crate::message::{
        MAX_AGENT_NAME, MAX_CODEC_NAME, MAX_CODECS, MAX_COMMAND_NAME, MAX_CREDENTIAL, MAX_HELLO_COMMANDS,
        MAX_HELLO_SCHEMA_BYTES, MAX_HELLO_TAGS,
    };
    use crate::{DEFAULT_MAX_FRAME, body, selector, topic};

    /// The limits table of `docs/protocol.md` (section 10) states the parsers' fixed bounds with
    /// the values of their constants, so neither can change without the other.
    #[test]
    fn the_limits_table_states_each_parser_bound() {
        let doc = include_str!("../../../docs/protocol.md");
        let rows = [
            format!("| body | depth {}, ", body::MAX_BODY_DEPTH),
            format!(
                "| hello | {MAX_HELLO_TAGS} tags, {MAX_HELLO_COMMANDS} commands ({MAX_COMMAND_NAME} bytes each), \
                 {MAX_AGENT_NAME}-byte agent, {MAX_CODECS} codecs ({MAX_CODEC_NAME} bytes each), \
                 {MAX_CREDENTIAL}-byte `token` and `secret`, {} KiB of `schemas` ",
                MAX_HELLO_SCHEMA_BYTES / 1024
            ),
            format!(
                "| selector | {} bytes; parentheses and `not` nested at most {} deep |",
                selector::MAX_INPUT_LEN,
                selector::MAX_DEPTH
            ),
            format!("| topic or pattern | {} bytes, {} segments |", topic::MAX_TOPIC, topic::MAX_SEGMENTS),
            format!("| cron expression | {} bytes ", orb_schedule::MAX_CRON_LEN),
            format!("| frame payload | {DEFAULT_MAX_FRAME} bytes "),
        ];
        for row in rows {
            assert!(doc.lines().any(|l| l.starts_with(&row)), "docs/protocol.md section 10 lacks a row starting {row}");
        }
    }
}

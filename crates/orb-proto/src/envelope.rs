//! The envelope: the one shape of every frame in protocol v1. Routers read only these fields;
//! `body` is JSON carried as raw bytes and never decoded on the way through.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;

/// What a frame is for. See `docs/protocol.md` for who sends which kind and the fields each uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Client's first frame: version, credentials, id, tags, handled commands (body: [`crate::message::Hello`]).
    Hello,
    /// Server's answer to a good hello (body: [`crate::message::Welcome`]).
    Welcome,
    /// A command: to the server, to one device (`to`), or a job to a selector (`target`).
    Cmd,
    /// The answer to a `cmd` (`re` = its id): a result `body` or an `error`. Also ends a job.
    Reply,
    /// The server accepted a job: `re` = the cmd id, `job` = the job id, body lists the targets.
    Ack,
    /// Reserved: publish on a topic (a later protocol feature).
    Pub,
    /// Reserved: subscribe to a topic pattern (a later protocol feature).
    Sub,
    /// Reserved: cancel a subscription (a later protocol feature).
    Unsub,
    /// One target's outcome within a job, streamed to the requester (`re`, `job`, `device`, `status`).
    Event,
    /// Reserved: configuration pushed by the server (a later protocol feature).
    Config,
    /// Liveness probe; answered by `pong` with `re` = the ping's id.
    Ping,
    /// Answer to `ping`.
    Pong,
    /// A refusal: `error` holds code and message; `re` names the frame refused when there is one.
    Error,
    /// The sender is closing the connection; body may hold `reason` and `reconnect_after_ms`.
    Bye,
    /// Server to device: stop running the command whose id is `re` (a job id), its job was cancelled.
    Cancel,
    /// A kind this build does not know (sent by a newer peer); answered with `unsupported`.
    #[serde(other)]
    Unknown,
}

impl Kind {
    /// The wire name, e.g. `cmd`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Hello => "hello",
            Kind::Welcome => "welcome",
            Kind::Cmd => "cmd",
            Kind::Reply => "reply",
            Kind::Ack => "ack",
            Kind::Pub => "pub",
            Kind::Sub => "sub",
            Kind::Unsub => "unsub",
            Kind::Event => "event",
            Kind::Config => "config",
            Kind::Ping => "ping",
            Kind::Pong => "pong",
            Kind::Error => "error",
            Kind::Bye => "bye",
            Kind::Cancel => "cancel",
            Kind::Unknown => "unknown",
        }
    }

    /// Parses a wire name; a name this build does not know is [`Kind::Unknown`] (as in JSON).
    pub fn from_wire(s: &str) -> Kind {
        match s {
            "hello" => Kind::Hello,
            "welcome" => Kind::Welcome,
            "cmd" => Kind::Cmd,
            "reply" => Kind::Reply,
            "ack" => Kind::Ack,
            "pub" => Kind::Pub,
            "sub" => Kind::Sub,
            "unsub" => Kind::Unsub,
            "event" => Kind::Event,
            "config" => Kind::Config,
            "ping" => Kind::Ping,
            "pong" => Kind::Pong,
            "error" => Kind::Error,
            "bye" => Kind::Bye,
            "cancel" => Kind::Cancel,
            _ => Kind::Unknown,
        }
    }
}

/// The outcome of one target of a job. The set is fixed for every protocol feature to come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The device answered with a result.
    Ok,
    /// The device (or its handler) answered with an error.
    Error,
    /// The command was delivered but no answer arrived before the deadline.
    Timeout,
    /// The device was not connected, so the command was not delivered.
    Offline,
    /// The device is offline and the command waits for it (commands with a time to live).
    Queued,
    /// A queued command's time to live ran out before delivery.
    Expired,
    /// An access rule refused the command for this device.
    Denied,
    /// The job was cancelled before this device answered.
    Cancelled,
}

impl Status {
    /// Every status, in the order summaries print them.
    pub const ALL: [Status; 8] = [
        Status::Ok,
        Status::Error,
        Status::Timeout,
        Status::Offline,
        Status::Queued,
        Status::Expired,
        Status::Denied,
        Status::Cancelled,
    ];

    /// The wire name, e.g. `timeout`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Error => "error",
            Status::Timeout => "timeout",
            Status::Offline => "offline",
            Status::Queued => "queued",
            Status::Expired => "expired",
            Status::Denied => "denied",
            Status::Cancelled => "cancelled",
        }
    }

    /// Parses a wire name; `None` for anything outside the fixed set (a `bad_frame`).
    pub fn from_wire(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stable code and a human message: how every refusal and failed result is reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    /// Stable snake_case code (see `docs/errors.md`).
    pub code: ErrorCode,
    /// Human-readable detail: lowercase, no trailing period, names the thing.
    pub message: String,
}

impl ErrorBody {
    /// Builds an error body.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
        ErrorBody { code, message: message.into() }
    }
}

impl std::fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// One frame. Every field but `kind` is optional; which ones a kind uses is in `docs/protocol.md`.
/// Unknown fields in received frames are ignored, so newer peers may add fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    /// What the frame is for.
    pub kind: Kind,
    /// Sender-chosen id of this message (unique among the sender's open requests).
    pub id: Option<String>,
    /// The id of the message this one answers (reply, ack, event, pong, error).
    pub re: Option<String>,
    /// Command name (`cmd`).
    pub cmd: Option<String>,
    /// Target selector: makes a `cmd` a job.
    pub target: Option<String>,
    /// One device id: makes a `cmd` a plain request to that device.
    pub to: Option<String>,
    /// Who sent a command delivered to a device: a device id or `$server`.
    pub from: Option<String>,
    /// Relative deadline in milliseconds from when the receiver got the frame.
    pub deadline_ms: Option<u64>,
    /// Job id (ack, event, reply that ends a job; cmd delivered as part of a job).
    pub job: Option<String>,
    /// The device an `event` is about.
    pub device: Option<String>,
    /// A target's outcome (`event`).
    pub status: Option<Status>,
    /// Milliseconds from dispatch to answer (`event`).
    pub elapsed_ms: Option<u64>,
    /// Topic name (reserved for pub/sub).
    pub topic: Option<String>,
    /// Error code and message (`error`, failed `reply` or `event`).
    pub error: Option<ErrorBody>,
    /// Raw JSON bytes: command arguments, results, typed bodies of hello/welcome/ack/bye.
    pub body: Option<Bytes>,
}

impl Envelope {
    /// An envelope of `kind` with every other field empty.
    pub fn new(kind: Kind) -> Envelope {
        Envelope {
            kind,
            id: None,
            re: None,
            cmd: None,
            target: None,
            to: None,
            from: None,
            deadline_ms: None,
            job: None,
            device: None,
            status: None,
            elapsed_ms: None,
            topic: None,
            error: None,
            body: None,
        }
    }

    /// An `error` frame answering message `re` (if any).
    pub fn error(re: Option<String>, code: ErrorCode, message: impl Into<String>) -> Envelope {
        let mut e = Envelope::new(Kind::Error);
        e.re = re;
        e.error = Some(ErrorBody::new(code, message));
        e
    }

    /// A successful `reply` to `re` carrying `body` (raw JSON).
    pub fn reply_ok(re: String, body: Bytes) -> Envelope {
        let mut e = Envelope::new(Kind::Reply);
        e.re = Some(re);
        e.body = Some(body);
        e
    }

    /// A failed `reply` to `re`.
    pub fn reply_err(re: String, code: ErrorCode, message: impl Into<String>) -> Envelope {
        let mut e = Envelope::new(Kind::Reply);
        e.re = Some(re);
        e.error = Some(ErrorBody::new(code, message));
        e
    }

    /// Serialises a typed value as this envelope's body.
    ///
    /// # Panics
    /// Never for the crate's own message types: they serialise infallibly to JSON.
    pub fn with_json_body<T: Serialize>(mut self, value: &T) -> Envelope {
        let v = serde_json::to_vec(value).expect("message types serialise to JSON");
        self.body = Some(Bytes::from(v));
        self
    }

    /// Deserialises the body as `T`.
    ///
    /// # Errors
    /// `bad_request` when the body is absent or has the wrong shape.
    pub fn json_body<T: serde::de::DeserializeOwned>(&self) -> Result<T, ErrorBody> {
        let raw = self.body.as_deref().unwrap_or(b"null");
        serde_json::from_slice(raw).map_err(|e| {
            let msg = format!("{} body: {e}", self.kind.as_str());
            ErrorBody::new(ErrorCode::BadRequest, crate::text::bounded(&msg))
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn wire_names_parse_back_as_serde_reads_them() {
        for k in [
            Kind::Hello,
            Kind::Welcome,
            Kind::Cmd,
            Kind::Reply,
            Kind::Ack,
            Kind::Pub,
            Kind::Sub,
            Kind::Unsub,
            Kind::Event,
            Kind::Config,
            Kind::Ping,
            Kind::Pong,
            Kind::Error,
            Kind::Bye,
            Kind::Cancel,
            Kind::Unknown,
        ] {
            assert_eq!(Kind::from_wire(k.as_str()), k);
            let via_serde: Kind = serde_json::from_value(serde_json::json!(k.as_str())).unwrap();
            assert_eq!(via_serde, k);
        }
        assert_eq!(Kind::from_wire("teleport"), Kind::Unknown);
        assert_eq!(Kind::from_wire("Cmd"), Kind::Unknown, "kind names are case-sensitive");
        for s in Status::ALL {
            assert_eq!(Status::from_wire(s.as_str()), Some(s));
        }
        assert_eq!(Status::from_wire("unknown"), None);
    }
}

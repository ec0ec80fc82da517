//! The envelope: the one shape of every frame in protocol v1. Routers read only these fields;
//! `body` is JSON carried as raw bytes and never decoded on the way through.
//!
//! The fields are listed once, in a table (`envelope_fields!` below) that makes the struct and
//! the field-by-field walks both codecs use: a codec implements a writer and a reader per value
//! type (string, integer, status, error, body) and never names a field itself.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::error::ErrorCode;
use crate::text::bounded;

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
    /// Best-effort output of a command still running (`body`: any JSON): device to server with
    /// `re` = the command's id, server to requester with `re`, `job` and `device`. Sent only for
    /// commands whose requester asked (`progress: true` on the `cmd`); never stored.
    Progress,
    /// A kind this build does not know (sent by a newer peer); answered with `unsupported`.
    #[serde(other)]
    Unknown,
}

impl Kind {
    /// Every kind, `Unknown` last.
    pub const ALL: [Kind; 17] = [
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
        Kind::Progress,
        Kind::Unknown,
    ];

    /// The wire name, e.g. `cmd`.
    #[inline]
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
            Kind::Progress => "progress",
            Kind::Unknown => "unknown",
        }
    }

    /// Parses a wire name; a name this build does not know is [`Kind::Unknown`] (as in JSON).
    #[inline]
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
            "progress" => Kind::Progress,
            _ => Kind::Unknown,
        }
    }
}

/// The outcome of one target of a job. The set is fixed for every protocol feature to come.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
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
    #[inline]
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
    #[inline]
    pub fn from_wire(s: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stable code, a human message and optional data: how every refusal and failed result is
/// reported (`docs/protocol.md` section 3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// Stable snake_case code (see `docs/errors.md`).
    pub code: ErrorCode,
    /// Human-readable detail: lowercase, no trailing period, names the thing.
    pub message: String,
    /// Structured detail for programs (JSON-RPC 2.0's `data`): any one JSON value within the
    /// body limits of [`crate::body`], e.g. the result of a failed `exec`. Absent when none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(feature = "openapi", schema(value_type = Value))]
    pub data: Option<crate::message::RawJson>,
}

impl ErrorBody {
    /// Builds an error body without data.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ErrorBody {
        ErrorBody { code, message: message.into(), data: None }
    }

    /// The same error carrying `data` (one JSON value) as its structured detail; `null` is no
    /// data (the wire reads `"data": null` as absent).
    pub fn with_data(mut self, data: Box<serde_json::value::RawValue>) -> ErrorBody {
        self.data = (data.get() != "null").then_some(crate::message::RawJson(data));
        self
    }

    /// The data as JSON text, when there is some.
    pub fn data_json(&self) -> Option<&str> {
        self.data.as_ref().map(|d| d.0.get())
    }

    /// Bytes of text the error holds (message and data), for buffers that bound what they keep.
    pub fn weight(&self) -> usize {
        self.message.len() + self.data_json().map_or(0, str::len)
    }
}

impl std::fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// The envelope's field table: every field between `kind` (always first) and `body` (always
/// last), in wire order (`docs/protocol.md` section 3), each with its value type.
///
/// This is the only place that lists the fields. From it come the [`Envelope`] struct,
/// [`Envelope::new`], the walk that writes fields in order ([`Envelope::write_fields`]), the
/// names decoders look up ([`Field`]) and the step that stores a decoded value ([`Draft`]).
/// Both codecs go through those, so a field whose type is already in the table (a string, a
/// `u64`, a [`Status`], an [`ErrorBody`]) is added by adding one line here. A new value type
/// needs a [`FieldValue`] impl and a method in each codec's [`FieldWriter`] and [`FieldReader`].
macro_rules! envelope_fields {
    ($($(#[$doc:meta])* $field:ident: $ty:ty,)*) => {
        /// One frame. Every field but `kind` is optional; which ones a kind uses is in
        /// `docs/protocol.md`. Unknown fields in received frames are ignored, so newer peers may
        /// add fields.
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct Envelope {
            /// What the frame is for.
            pub kind: Kind,
            $($(#[$doc])* pub $field: Option<$ty>,)*
            /// Raw JSON bytes: command arguments, results, typed bodies of hello/welcome/ack/bye.
            pub body: Option<Bytes>,
        }

        impl Envelope {
            /// An envelope of `kind` with every other field empty.
            #[inline]
            pub fn new(kind: Kind) -> Envelope {
                Envelope { kind, $($field: None,)* body: None }
            }

            /// How many fields an encoder writes: `kind` and every field that is present.
            #[inline]
            pub(crate) fn field_count(&self) -> usize {
                1 $(+ usize::from(self.$field.is_some()))* + usize::from(self.body.is_some())
            }

            /// Hands `w` every present field in wire order: `kind` first, `body` last.
            #[inline]
            pub(crate) fn write_fields<W: FieldWriter>(&self, w: &mut W) {
                w.kind("kind", self.kind);
                $(if let Some(value) = &self.$field {
                    FieldValue::write(value, stringify!($field), w);
                })*
                if let Some(body) = &self.body {
                    w.body("body", body);
                }
            }
        }

        /// An envelope field as a decoder names it; its number is its bit in [`Draft`]'s set of
        /// fields seen. (Lowercase: the variants are the field names.)
        #[allow(non_camel_case_types)]
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub(crate) enum Field {
            kind,
            $($field,)*
            body,
        }

        impl Field {
            /// The field with wire name `name`; `None` for a field this build does not know.
            #[inline]
            pub(crate) fn of(name: &str) -> Option<Field> {
                Some(match name {
                    "kind" => Field::kind,
                    $(stringify!($field) => Field::$field,)*
                    "body" => Field::body,
                    _ => return None,
                })
            }

            /// The wire name.
            #[inline]
            pub(crate) fn name(self) -> &'static str {
                match self {
                    Field::kind => "kind",
                    $(Field::$field => stringify!($field),)*
                    Field::body => "body",
                }
            }
        }

        impl Draft<'_> {
            /// Stores the value `r` reads as `field`. Inlined into each decoder's loop, so the
            /// match compiles to a jump straight to the codec's reader for that type.
            #[inline(always)]
            fn set<R: FieldReader>(&mut self, field: Field, r: &mut R) -> Result<(), R::Error> {
                match field {
                    Field::kind => self.env.kind = r.kind()?,
                    $(Field::$field => self.env.$field = FieldValue::read(r)?,)*
                    Field::body => self.env.body = r.body()?,
                }
                Ok(())
            }
        }
    };
}

envelope_fields! {
    /// Sender-chosen id of this message (unique among the sender's open requests).
    id: String,
    /// The id of the message this one answers (reply, ack, event, pong, error).
    re: String,
    /// Command name (`cmd`).
    cmd: String,
    /// Target selector: makes a `cmd` a job.
    target: String,
    /// Which of the devices a job's selector matches it targets: `all` (absent) or `online`
    /// (see [`crate::message::Select`]).
    select: String,
    /// One device id: makes a `cmd` a plain request to that device.
    to: String,
    /// Who sent a command delivered to a device: a device id or `$server`.
    from: String,
    /// Relative deadline in milliseconds from when the receiver got the frame.
    deadline_ms: u64,
    /// How long a job's command may wait for a device that is not connected, in milliseconds
    /// (a `cmd` with `target`; absent: it does not wait).
    ttl_ms: u64,
    /// Milliseconds over which a job's dispatch is spread, per device (a `cmd` with `target`;
    /// see [`crate::rollout::Rollout`]).
    splay_ms: u64,
    /// Targets per batch of a job, a count (`"25"`) or a percentage (`"10%"`) (a `cmd` with
    /// `target`).
    batch: String,
    /// Milliseconds between one batch's end and the next one's start (a `cmd` with `batch`).
    batch_wait_ms: u64,
    /// Abort a batched job once more than this percentage of its finished targets failed (a
    /// `cmd` with `batch`).
    abort_on_failure_pct: u64,
    /// Job id (ack, event, reply that ends a job; cmd delivered as part of a job).
    job: String,
    /// Which delivery of a held command this is: 1, 2, ... (a `cmd` delivered from the queue).
    attempt: u64,
    /// A durable message's id, chosen by the sending agent and kept across resends (a `cmd` from
    /// an agent's outbox): the server stores each id once per device and answers a resend as a
    /// duplicate.
    msg: String,
    /// When the sender created the message, in milliseconds since the Unix epoch (a `cmd` from an
    /// agent's outbox: its original time, however late it is flushed).
    at_ms: u64,
    /// The device an `event` is about.
    device: String,
    /// A target's outcome (`event`).
    status: Status,
    /// Milliseconds from dispatch to answer (`event`).
    elapsed_ms: u64,
    /// Topic name (`pub`, `sub`).
    topic: String,
    /// A `pub` to keep as its topic's retained message (client to server); a retained message
    /// delivered when the subscription started (server to client).
    retain: bool,
    /// The requester wants the command's `progress` frames (a `cmd` from a requester); the server
    /// passes it on to the device in the `cmd` it delivers, which then may send them.
    progress: bool,
    /// Error code and message (`error`, failed `reply` or `event`).
    error: ErrorBody,
}

// The set of fields seen is a `u32`.
const _: () = assert!((Field::body as u32) < u32::BITS, "the envelope has more fields than Draft::seen has bits");

impl Envelope {
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

    /// A failed `reply` to `re` carrying `error` whole (its data included).
    pub fn reply_error(re: String, error: ErrorBody) -> Envelope {
        let mut e = Envelope::new(Kind::Reply);
        e.re = Some(re);
        e.error = Some(error);
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
    /// `bad_request` when the body is absent or has the wrong shape. The message wraps
    /// serde_json's, which may quote the body: it is cut to a few hundred characters.
    pub fn json_body<T: serde::de::DeserializeOwned>(&self) -> Result<T, ErrorBody> {
        let raw = self.body.as_deref().unwrap_or(b"null");
        serde_json::from_slice(raw)
            .map_err(|e| ErrorBody::new(ErrorCode::BadRequest, bounded(format!("{} body: {e}", self.kind.as_str()))))
    }
}

// === Field visitors: what the codecs implement ===

/// A codec's way of writing one frame, field by field, as [`Envelope::write_fields`] hands
/// them over (in wire order, absent fields skipped). `name` is the field's wire name.
pub(crate) trait FieldWriter {
    /// The `kind` field, always present and always first.
    fn kind(&mut self, name: &'static str, kind: Kind);
    /// A string field (a [`Status`] is written as its wire name).
    fn str(&mut self, name: &'static str, value: &str);
    /// A non-negative integer field.
    fn uint(&mut self, name: &'static str, value: u64);
    /// A boolean field.
    fn bool(&mut self, name: &'static str, value: bool);
    /// An `{"code", "message", "data"?}` field.
    fn error(&mut self, name: &'static str, value: &ErrorBody);
    /// The `body`, always last: JSON bytes copied verbatim.
    fn body(&mut self, name: &'static str, json: &Bytes);
}

/// A codec's way of reading the value of the field whose name it just read. Every method but
/// [`FieldReader::kind`] returns `Ok(None)` for the codec's null (`null`, `nil`): the same as
/// an absent field. A value of the wrong type is an error.
pub(crate) trait FieldReader {
    /// The codec's error.
    type Error;
    /// The error for a field that appears twice in one frame.
    fn duplicate(name: &'static str) -> Self::Error;
    /// The `kind`: a string, never null; a name this build does not know is [`Kind::Unknown`].
    fn kind(&mut self) -> Result<Kind, Self::Error>;
    /// A string.
    fn string(&mut self) -> Result<Option<String>, Self::Error>;
    /// A non-negative integer.
    fn uint(&mut self) -> Result<Option<u64>, Self::Error>;
    /// A boolean.
    fn bool(&mut self) -> Result<Option<bool>, Self::Error>;
    /// A [`Status`] wire name; a name outside the fixed set is an error.
    fn status(&mut self) -> Result<Option<Status>, Self::Error>;
    /// An error object: `code` and `message` strings, both required; `data` optional, one JSON
    /// value within the body limits.
    fn error(&mut self) -> Result<Option<ErrorBody>, Self::Error>;
    /// The body: one JSON value, returned as a slice of the frame (no copy).
    fn body(&mut self) -> Result<Option<Bytes>, Self::Error>;
}

/// A value type of the field table: how it goes through a [`FieldWriter`] and a [`FieldReader`].
pub(crate) trait FieldValue: Sized {
    /// Writes `self` as field `name`.
    fn write<W: FieldWriter>(&self, name: &'static str, w: &mut W);
    /// Reads a value (`None` for null).
    fn read<R: FieldReader>(r: &mut R) -> Result<Option<Self>, R::Error>;
}

impl FieldValue for String {
    #[inline]
    fn write<W: FieldWriter>(&self, name: &'static str, w: &mut W) {
        w.str(name, self);
    }

    #[inline]
    fn read<R: FieldReader>(r: &mut R) -> Result<Option<Self>, R::Error> {
        r.string()
    }
}

impl FieldValue for u64 {
    #[inline]
    fn write<W: FieldWriter>(&self, name: &'static str, w: &mut W) {
        w.uint(name, *self);
    }

    #[inline]
    fn read<R: FieldReader>(r: &mut R) -> Result<Option<Self>, R::Error> {
        r.uint()
    }
}

impl FieldValue for bool {
    #[inline]
    fn write<W: FieldWriter>(&self, name: &'static str, w: &mut W) {
        w.bool(name, *self);
    }

    #[inline]
    fn read<R: FieldReader>(r: &mut R) -> Result<Option<Self>, R::Error> {
        r.bool()
    }
}

impl FieldValue for Status {
    #[inline]
    fn write<W: FieldWriter>(&self, name: &'static str, w: &mut W) {
        w.str(name, self.as_str());
    }

    #[inline]
    fn read<R: FieldReader>(r: &mut R) -> Result<Option<Self>, R::Error> {
        r.status()
    }
}

impl FieldValue for ErrorBody {
    #[inline]
    fn write<W: FieldWriter>(&self, name: &'static str, w: &mut W) {
        w.error(name, self);
    }

    #[inline]
    fn read<R: FieldReader>(r: &mut R) -> Result<Option<Self>, R::Error> {
        r.error()
    }
}

/// An envelope being decoded, in place: the fields read so far go straight into `env` (an
/// envelope is a few hundred bytes: building it where the decoder returns it from saves
/// copies), and `seen` says which fields were read, so a second occurrence is an error even
/// when the first was null. Both decoders feed it one field at a time, in frame order.
pub(crate) struct Draft<'e> {
    env: &'e mut Envelope,
    /// Bit `Field as u32` is set once that field was read.
    seen: u32,
}

impl<'e> Draft<'e> {
    /// Starts decoding into `env`, which should be empty ([`Envelope::new`]).
    #[inline]
    pub(crate) fn new(env: &'e mut Envelope) -> Draft<'e> {
        Draft { env, seen: 0 }
    }

    /// Reads `field`'s value from `r` and stores it.
    ///
    /// # Errors
    /// `R::duplicate` when `field` was read before; else whatever `r` reports.
    #[inline(always)]
    pub(crate) fn read<R: FieldReader>(&mut self, field: Field, r: &mut R) -> Result<(), R::Error> {
        let bit = 1u32 << field as u32;
        if self.seen & bit != 0 {
            return Err(R::duplicate(field.name()));
        }
        self.seen |= bit;
        self.set(field, r)
    }

    /// Checks that the frame had everything an envelope needs: a `kind`.
    ///
    /// # Errors
    /// `missing("kind")` when the frame had no `kind`.
    #[inline]
    pub(crate) fn finish<E>(self, missing: impl FnOnce(&'static str) -> E) -> Result<(), E> {
        if self.seen & (1u32 << Field::kind as u32) == 0 {
            return Err(missing(Field::kind.name()));
        }
        Ok(())
    }
}

/// `part` as a zero-copy slice of `frame` when it lies inside `frame` (as a decoder's borrowed
/// body always does), else a copy: never a panic.
#[inline]
pub(crate) fn slice_of(frame: &Bytes, part: &[u8]) -> Bytes {
    let start = (part.as_ptr() as usize).wrapping_sub(frame.as_ptr() as usize);
    match start.checked_add(part.len()) {
        Some(end) if end <= frame.len() && !part.is_empty() => frame.slice(start..end),
        _ => Bytes::copy_from_slice(part),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_typed_body_of_the_wrong_shape_is_refused_with_a_short_message() {
        let long = "v".repeat(1 << 20);
        let hello = Envelope::new(Kind::Hello).with_json_body(&serde_json::json!({"version": long, "role": "agent"}));
        let e = hello.json_body::<crate::message::Hello>().unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(e.message.starts_with("hello body: invalid type: string"), "{}", &e.message[..100]);
        assert!(e.message.len() < 400, "{} bytes", e.message.len());
        let bad_role = Envelope::new(Kind::Hello).with_json_body(&serde_json::json!({"version": 1, "role": long}));
        assert!(bad_role.json_body::<crate::message::Hello>().unwrap_err().message.len() < 400);
        let short = Envelope::new(Kind::Bye).json_body::<crate::message::Bye>().unwrap_err();
        assert_eq!(short.message, "bye body: invalid type: null, expected struct Bye at line 1 column 4");
    }

    #[test]
    fn wire_names_parse_back_as_serde_reads_them() {
        for k in Kind::ALL {
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

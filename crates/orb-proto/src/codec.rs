//! Envelope codecs. [`Codec`] names the two encodings a connection can use, negotiated in
//! `hello`/`welcome`: JSON (this module's free functions [`encode`] and [`decode`], the default and
//! the encoding of the handshake itself) and MessagePack ([`msgpack`]). Either way only the envelope
//! changes: bodies stay JSON bytes, carried verbatim, so a router never decodes them.
//!
//! JSON encoding writes fields by hand so the raw JSON body is copied in as bytes, never re-parsed;
//! decoding borrows the body as a slice of the input frame (zero copy).

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::envelope::{Envelope, ErrorBody, Kind, Status};
use crate::error::ErrorCode;

pub mod msgpack;

/// Why a frame could not be decoded. Maps to `bad_frame` on the wire.
#[derive(Debug, thiserror::Error)]
#[error("frame is not a valid envelope: {0}")]
pub struct DecodeError(String);

/// An envelope encoding. The hello and welcome frames are always [`Codec::Json`]; every later frame
/// of a connection, in both directions, uses the codec named in `welcome.codec`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Codec {
    /// One JSON object per frame (`docs/protocol.md` section 3). What a peer gets unless both ask otherwise.
    #[default]
    Json,
    /// One MessagePack map per frame with the same field names; `body` is a bin holding the JSON bytes.
    MsgPack,
}

impl Codec {
    /// Every codec this build speaks. (Negotiation follows the client's order, not this one.)
    pub const ALL: [Codec; 2] = [Codec::MsgPack, Codec::Json];

    /// The name used in `hello.codecs` and `welcome.codec`: `json` or `msgpack`.
    pub fn as_str(self) -> &'static str {
        match self {
            Codec::Json => "json",
            Codec::MsgPack => "msgpack",
        }
    }

    /// Parses a codec name (exact, lowercase); `None` for a codec this build does not speak.
    pub fn from_name(name: &str) -> Option<Codec> {
        Codec::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// The server's choice for a client offering `offered` (its preference order): the first name
    /// this build speaks, else JSON. Unknown names are skipped, never an error.
    pub fn negotiate<S: AsRef<str>>(offered: &[S]) -> Codec {
        offered.iter().find_map(|name| Codec::from_name(name.as_ref())).unwrap_or(Codec::Json)
    }

    /// Encodes an envelope as one frame payload (no length prefix). The body is copied in verbatim.
    pub fn encode(&self, env: &Envelope) -> Bytes {
        match self {
            Codec::Json => encode(env),
            Codec::MsgPack => msgpack::encode(env),
        }
    }

    /// Encodes an envelope by appending it to `out`.
    pub fn encode_into(&self, env: &Envelope, out: &mut Vec<u8>) {
        match self {
            Codec::Json => encode_into(env, out),
            Codec::MsgPack => msgpack::encode_into(env, out),
        }
    }

    /// Decodes one frame payload; the body is a zero-copy slice of `frame`.
    ///
    /// # Errors
    /// [`DecodeError`] when the payload is not an envelope in this encoding.
    pub fn decode(&self, frame: &Bytes) -> Result<Envelope, DecodeError> {
        match self {
            Codec::Json => decode(frame),
            Codec::MsgPack => msgpack::decode(frame),
        }
    }
}

impl std::fmt::Display for Codec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl DecodeError {
    /// A decode error saying `message`, shortened: a parser's message may quote the whole input.
    pub(crate) fn new(message: String) -> DecodeError {
        DecodeError(crate::text::bounded(&message).into_owned())
    }

    /// The stable code to answer with.
    pub fn code(&self) -> ErrorCode {
        ErrorCode::BadFrame
    }
}

#[derive(Deserialize)]
struct Wire<'a> {
    kind: Kind,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    re: Option<String>,
    #[serde(default)]
    cmd: Option<String>,
    #[serde(default)]
    target: Option<String>,
    #[serde(default)]
    to: Option<String>,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    deadline_ms: Option<u64>,
    #[serde(default)]
    job: Option<String>,
    #[serde(default)]
    device: Option<String>,
    #[serde(default)]
    status: Option<Status>,
    #[serde(default)]
    elapsed_ms: Option<u64>,
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    error: Option<ErrorBody>,
    #[serde(default, borrow)]
    body: Option<&'a RawValue>,
}

/// Decodes one frame's payload (length prefix already removed).
///
/// The returned body is a slice of `frame`: no copy. Unknown fields are ignored; an unknown
/// `kind` decodes as [`Kind::Unknown`].
///
/// # Errors
/// [`DecodeError`] when the payload is not a JSON object of the envelope's shape.
pub fn decode(frame: &Bytes) -> Result<Envelope, DecodeError> {
    let w: Wire<'_> = serde_json::from_slice(frame).map_err(|e| DecodeError::new(e.to_string()))?;
    let body = w.body.map(|raw| frame.slice_ref(raw.get().as_bytes()));
    Ok(Envelope {
        kind: w.kind,
        id: w.id,
        re: w.re,
        cmd: w.cmd,
        target: w.target,
        to: w.to,
        from: w.from,
        deadline_ms: w.deadline_ms,
        job: w.job,
        device: w.device,
        status: w.status,
        elapsed_ms: w.elapsed_ms,
        topic: w.topic,
        error: w.error,
        body,
    })
}

/// Encodes an envelope as one frame payload (no length prefix).
///
/// The body must be valid JSON (it always is when it came from [`decode`] or from
/// `serde_json`); it is copied in verbatim.
pub fn encode(env: &Envelope) -> Bytes {
    let mut out = Vec::with_capacity(64 + env.body.as_ref().map_or(0, |b| b.len()));
    encode_into(env, &mut out);
    Bytes::from(out)
}

/// Encodes an envelope by appending it to `out`, so a writer can reuse one buffer.
pub fn encode_into(env: &Envelope, out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"kind\":\"");
    out.extend_from_slice(env.kind.as_str().as_bytes());
    out.push(b'"');
    str_field(out, "id", env.id.as_deref());
    str_field(out, "re", env.re.as_deref());
    str_field(out, "cmd", env.cmd.as_deref());
    str_field(out, "target", env.target.as_deref());
    str_field(out, "to", env.to.as_deref());
    str_field(out, "from", env.from.as_deref());
    num_field(out, "deadline_ms", env.deadline_ms);
    str_field(out, "job", env.job.as_deref());
    str_field(out, "device", env.device.as_deref());
    str_field(out, "status", env.status.map(Status::as_str));
    num_field(out, "elapsed_ms", env.elapsed_ms);
    str_field(out, "topic", env.topic.as_deref());
    if let Some(err) = &env.error {
        out.extend_from_slice(b",\"error\":{\"code\":");
        write_str(out, err.code.as_str());
        out.extend_from_slice(b",\"message\":");
        write_str(out, &err.message);
        out.push(b'}');
    }
    if let Some(body) = &env.body {
        out.extend_from_slice(b",\"body\":");
        out.extend_from_slice(body);
    }
    out.push(b'}');
}

fn str_field(out: &mut Vec<u8>, name: &str, value: Option<&str>) {
    if let Some(v) = value {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
        write_str(out, v);
    }
}

fn num_field(out: &mut Vec<u8>, name: &str, value: Option<u64>) {
    if let Some(v) = value {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
        out.extend_from_slice(v.to_string().as_bytes());
    }
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    // Fast path: nothing to escape.
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(&mut *out, s).expect("writing a str to a Vec cannot fail");
    }
}

/// Property-test generators shared by the JSON and MessagePack codec tests.
#[cfg(test)]
pub(crate) mod arb {
    use proptest::prelude::*;

    use crate::envelope::Kind;

    pub(crate) fn arb_kind() -> impl Strategy<Value = Kind> {
        prop::sample::select(vec![
            Kind::Hello,
            Kind::Welcome,
            Kind::Cmd,
            Kind::Reply,
            Kind::Ack,
            Kind::Event,
            Kind::Ping,
            Kind::Pong,
            Kind::Error,
            Kind::Bye,
            Kind::Cancel,
            Kind::Pub,
            Kind::Sub,
            Kind::Unsub,
            Kind::Config,
        ])
    }

    pub(crate) fn arb_json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            ".{0,12}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                prop::collection::btree_map("[a-z]{1,4}", inner, 0..4)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::codec::arb::{arb_json, arb_kind};
    use proptest::prelude::*;

    #[test]
    fn a_command_round_trips_with_its_raw_body() {
        let mut e = Envelope::new(Kind::Cmd);
        e.id = Some("7".into());
        e.cmd = Some("echo".into());
        e.target = Some("tag:role=web and not web-3".into());
        e.deadline_ms = Some(5000);
        e.body = Some(Bytes::from_static(br#"{"hello": "world", "n": [1, 2.5]}"#));
        let bytes = encode(&e);
        let back = decode(&bytes).unwrap();
        assert_eq!(back, e);
        // the body is carried verbatim, whitespace included
        assert!(bytes.windows(8).any(|w| w == br#""hello":"#));
    }

    #[test]
    fn unknown_fields_are_ignored_and_unknown_kinds_are_kept_as_unknown() {
        let f = Bytes::from_static(br#"{"kind":"teleport","id":"1","future":{"x":1}}"#);
        let e = decode(&f).unwrap();
        assert_eq!(e.kind, Kind::Unknown);
        assert_eq!(e.id.as_deref(), Some("1"));
    }

    #[test]
    fn garbage_is_a_decode_error() {
        for g in [&b"\x00\x01garbage"[..], b"[]", b"{}", b"{\"kind\":3}", b"{\"kind\":\"cmd\",\"body\":}"] {
            assert!(decode(&Bytes::copy_from_slice(g)).is_err(), "{g:?}");
        }
    }

    #[test]
    fn codec_names_round_trip_and_negotiation_picks_the_first_known() {
        for c in Codec::ALL {
            assert_eq!(Codec::from_name(c.as_str()), Some(c));
        }
        assert_eq!(Codec::from_name("MsgPack"), None, "names are exact");
        assert_eq!(Codec::negotiate(&["msgpack", "json"]), Codec::MsgPack);
        assert_eq!(Codec::negotiate(&["json", "msgpack"]), Codec::Json);
        assert_eq!(Codec::negotiate(&["cbor", "msgpack"]), Codec::MsgPack);
        assert_eq!(Codec::negotiate(&["cbor"]), Codec::Json);
        assert_eq!(Codec::negotiate::<&str>(&[]), Codec::Json);
        assert_eq!(Codec::default(), Codec::Json);
    }

    #[test]
    fn errors_encode_with_code_and_message() {
        let e = Envelope::error(Some("3".into()), ErrorCode::UnknownCommand, "no handler for \"x\"");
        let s = String::from_utf8(encode(&e).to_vec()).unwrap();
        assert_eq!(
            s,
            r#"{"kind":"error","re":"3","error":{"code":"unknown_command","message":"no handler for \"x\""}}"#
        );
    }

    proptest! {
        #[test]
        fn encode_then_decode_is_identity(
            kind in arb_kind(),
            id in proptest::option::of(".{0,20}"),
            re in proptest::option::of(".{0,20}"),
            cmd in proptest::option::of("[a-z.$]{1,16}"),
            deadline in proptest::option::of(any::<u64>()),
            status in proptest::option::of(prop::sample::select(Status::ALL.to_vec())),
            err in proptest::option::of(("[a-z_]{1,12}", ".{0,30}")),
            body in proptest::option::of(arb_json()),
        ) {
            let mut e = Envelope::new(kind);
            e.id = id; e.re = re; e.cmd = cmd; e.deadline_ms = deadline; e.status = status;
            e.error = err.map(|(c, m)| ErrorBody::new(ErrorCode::from_wire(&c), m));
            e.body = body.map(|b| Bytes::from(serde_json::to_vec(&b).unwrap()));
            let back = decode(&encode(&e)).unwrap();
            // `"body":null` is an absent body (protocol section 3), so it decodes as `None`.
            if e.body.as_deref() == Some(b"null") {
                e.body = None;
            }
            prop_assert_eq!(back, e);
        }

        #[test]
        fn decode_never_panics(data in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&Bytes::from(data));
        }
    }
}

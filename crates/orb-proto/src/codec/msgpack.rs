//! MessagePack codec for [`Envelope`]s, negotiated in `hello` (`docs/protocol.md` section 3.1).
//!
//! A frame is one MessagePack map with the JSON envelope's field names and value types (strings
//! as str, integers as non-negative ints, `error` as a two-entry map), written in the same order.
//! `body` is a **bin** holding the JSON bytes of the body, so bodies are JSON in every codec and a
//! router copies them without decoding. Decoding mirrors the JSON codec's rules: the payload is
//! exactly one map, `kind` is a required str (unknown names become [`Kind::Unknown`]), unknown
//! fields are skipped, `nil` is the same as an absent field, a field may not appear twice, and any
//! other type is a [`DecodeError`]. The body is returned as a zero-copy slice of the frame after
//! checking that it is one JSON value, so a body relayed to a JSON peer is always valid there.
//!
//! Both directions are written by hand against the MessagePack specification (no serde in the
//! hot path), per value type: which fields exist comes from the envelope's field table; the
//! tests check the result against `rmp-serde`, an independent implementation.

use bytes::Bytes;
use serde_json::value::RawValue;

use super::DecodeError;
use crate::envelope::{Draft, Envelope, ErrorBody, Field, FieldReader, FieldWriter, Kind, Status, slice_of};
use crate::error::ErrorCode;
use crate::text::excerpt;

/// Encodes an envelope as one MessagePack frame payload (no length prefix).
///
/// The body must be valid JSON (it always is when it came from a decoder or from `serde_json`);
/// it is copied in verbatim as a bin.
pub fn encode(env: &Envelope) -> Bytes {
    let mut out = Vec::with_capacity(96 + env.body.as_ref().map_or(0, |b| b.len()));
    encode_into(env, &mut out);
    Bytes::from(out)
}

/// Encodes an envelope by appending it to `out`.
///
/// Lengths are written as MessagePack allows them (up to `u32::MAX` bytes per string or body);
/// larger values cannot be framed on any orb transport anyway.
fn encode_into(env: &Envelope, out: &mut Vec<u8>) {
    write_map_len(out, env.field_count());
    env.write_fields(&mut MsgPackWriter(out));
}

/// Writes fields as MessagePack map entries: a str key, then the value.
struct MsgPackWriter<'a>(&'a mut Vec<u8>);

impl FieldWriter for MsgPackWriter<'_> {
    #[inline]
    fn kind(&mut self, name: &'static str, kind: Kind) {
        write_str(self.0, name);
        write_str(self.0, kind.as_str());
    }

    #[inline]
    fn str(&mut self, name: &'static str, value: &str) {
        write_str(self.0, name);
        write_str(self.0, value);
    }

    #[inline]
    fn uint(&mut self, name: &'static str, value: u64) {
        write_str(self.0, name);
        write_uint(self.0, value);
    }

    #[inline]
    fn bool(&mut self, name: &'static str, value: bool) {
        write_str(self.0, name);
        self.0.push(if value { 0xc3 } else { 0xc2 });
    }

    #[inline]
    fn error(&mut self, name: &'static str, value: &ErrorBody) {
        write_str(self.0, name);
        let data = value.data_json();
        write_map_len(self.0, 2 + usize::from(data.is_some()));
        write_str(self.0, "code");
        write_str(self.0, value.code.as_str());
        write_str(self.0, "message");
        write_str(self.0, &value.message);
        if let Some(json) = data {
            // Like `body`: a bin holding the JSON bytes.
            write_str(self.0, "data");
            write_bin(self.0, json.as_bytes());
        }
    }

    #[inline]
    fn body(&mut self, name: &'static str, json: &Bytes) {
        write_str(self.0, name);
        write_bin(self.0, json);
    }
}

/// A length as the 32-bit field MessagePack has at most (see [`encode_into`]).
fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

#[inline]
fn write_map_len(out: &mut Vec<u8>, n: usize) {
    match n {
        0..=15 => out.push(0x80 | n as u8),
        16..=0xffff => {
            out.push(0xde);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        _ => {
            out.push(0xdf);
            out.extend_from_slice(&len32(n).to_be_bytes());
        }
    }
}

#[inline]
fn write_str(out: &mut Vec<u8>, s: &str) {
    let n = s.len();
    match n {
        0..=31 => out.push(0xa0 | n as u8),
        32..=0xff => out.extend_from_slice(&[0xd9, n as u8]),
        0x100..=0xffff => {
            out.push(0xda);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        _ => {
            out.push(0xdb);
            out.extend_from_slice(&len32(n).to_be_bytes());
        }
    }
    out.extend_from_slice(s.as_bytes());
}

#[inline]
fn write_bin(out: &mut Vec<u8>, b: &[u8]) {
    let n = b.len();
    match n {
        0..=0xff => out.extend_from_slice(&[0xc4, n as u8]),
        0x100..=0xffff => {
            out.push(0xc5);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        _ => {
            out.push(0xc6);
            out.extend_from_slice(&len32(n).to_be_bytes());
        }
    }
    out.extend_from_slice(b);
}

#[inline]
fn write_uint(out: &mut Vec<u8>, v: u64) {
    match v {
        0..=0x7f => out.push(v as u8),
        0x80..=0xff => out.extend_from_slice(&[0xcc, v as u8]),
        0x100..=0xffff => {
            out.push(0xcd);
            out.extend_from_slice(&(v as u16).to_be_bytes());
        }
        0x1_0000..=0xffff_ffff => {
            out.push(0xce);
            out.extend_from_slice(&(v as u32).to_be_bytes());
        }
        _ => {
            out.push(0xcf);
            out.extend_from_slice(&v.to_be_bytes());
        }
    }
}

const NIL: u8 = 0xc0;

fn err(msg: impl Into<String>) -> DecodeError {
    DecodeError::new(msg)
}

/// Decodes one MessagePack frame payload (length prefix already removed).
///
/// The returned body is a slice of `frame`: no copy. Unknown fields are ignored; an unknown
/// `kind` decodes as [`Kind::Unknown`].
///
/// # Errors
/// [`DecodeError`] when the payload is not exactly one MessagePack map of the envelope's shape,
/// or the body is not one JSON value.
pub fn decode(frame: &Bytes) -> Result<Envelope, DecodeError> {
    let mut r = Reader { buf: frame, pos: 0 };
    let fields = r.map_len().map_err(|e| err(format!("a msgpack envelope must be a map: {}", e.0)))?;
    let mut env = Envelope::new(Kind::Unknown);
    let mut draft = Draft::new(&mut env);
    for _ in 0..fields {
        let name = r.str().map_err(|e| err(format!("field name: {}", e.0)))?;
        match Field::of(name) {
            Some(field) => draft.read(field, &mut MsgPackField { r: &mut r, frame, field })?,
            None => r.skip_value()?,
        }
    }
    if r.pos != frame.len() {
        return Err(err(format!("{} bytes after the envelope", frame.len() - r.pos)));
    }
    draft.finish(|name| err(format!("missing field `{name}`")))?;
    Ok(env)
}

/// The value of `field`, read from the map being decoded. Errors name the field.
struct MsgPackField<'r, 'f> {
    r: &'r mut Reader<'f>,
    frame: &'r Bytes,
    field: Field,
}

impl<'f> MsgPackField<'_, 'f> {
    /// `Ok(None)` after consuming a `nil`, else `read`'s value (a frame that ends here is
    /// `read`'s error to report).
    #[inline]
    fn value<T>(
        &mut self,
        read: impl FnOnce(&mut Reader<'f>) -> Result<T, DecodeError>,
    ) -> Result<Option<T>, DecodeError> {
        if self.r.buf.get(self.r.pos) == Some(&NIL) {
            self.r.pos += 1;
            return Ok(None);
        }
        read(self.r).map(Some).map_err(|e| self.wrap(e))
    }

    #[cold]
    fn wrap(&self, e: DecodeError) -> DecodeError {
        err(format!("field `{}`: {}", self.field.name(), e.0))
    }
}

impl FieldReader for MsgPackField<'_, '_> {
    type Error = DecodeError;

    fn duplicate(name: &'static str) -> DecodeError {
        err(format!("duplicate field `{name}`"))
    }

    #[inline]
    fn kind(&mut self) -> Result<Kind, DecodeError> {
        self.r.str().map(Kind::from_wire).map_err(|e| self.wrap(e))
    }

    #[inline]
    fn string(&mut self) -> Result<Option<String>, DecodeError> {
        self.value(Reader::string)
    }

    #[inline]
    fn uint(&mut self) -> Result<Option<u64>, DecodeError> {
        self.value(Reader::uint)
    }

    #[inline]
    fn bool(&mut self) -> Result<Option<bool>, DecodeError> {
        self.value(|r| match r.byte()? {
            0xc2 => Ok(false),
            0xc3 => Ok(true),
            m => Err(err(format!("expected true or false, found {}", describe(m)))),
        })
    }

    #[inline]
    fn status(&mut self) -> Result<Option<Status>, DecodeError> {
        self.value(|r| {
            let s = r.str()?;
            Status::from_wire(s).ok_or_else(|| err(format!("unknown status '{}'", excerpt(s).escape_debug())))
        })
    }

    fn error(&mut self) -> Result<Option<ErrorBody>, DecodeError> {
        self.value(Reader::error_body)
    }

    #[inline]
    fn body(&mut self) -> Result<Option<Bytes>, DecodeError> {
        let frame = self.frame;
        self.value(|r| {
            let body = r.bin()?;
            serde_json::from_slice::<&RawValue>(body).map_err(|e| err(format!("not one JSON value: {e}")))?;
            Ok(slice_of(frame, body))
        })
    }
}

/// A cursor over a frame. Every read checks the remaining length first, so truncated or hostile
/// input is an error, never a panic or an allocation sized by the input.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    #[inline]
    fn peek(&self) -> Result<u8, DecodeError> {
        self.buf.get(self.pos).copied().ok_or_else(|| err("unexpected end of frame"))
    }

    #[inline]
    fn byte(&mut self) -> Result<u8, DecodeError> {
        let b = self.peek()?;
        self.pos += 1;
        Ok(b)
    }

    #[inline]
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end =
            self.pos.checked_add(n).filter(|&e| e <= self.buf.len()).ok_or_else(|| err("unexpected end of frame"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    #[inline]
    fn be<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn len8(&mut self) -> Result<usize, DecodeError> {
        Ok(usize::from(self.byte()?))
    }

    fn len16(&mut self) -> Result<usize, DecodeError> {
        Ok(usize::from(u16::from_be_bytes(self.be()?)))
    }

    fn len32(&mut self) -> Result<usize, DecodeError> {
        usize::try_from(u32::from_be_bytes(self.be()?)).map_err(|_| err("length does not fit this platform"))
    }

    #[inline]
    fn map_len(&mut self) -> Result<usize, DecodeError> {
        match self.byte()? {
            m @ 0x80..=0x8f => Ok(usize::from(m & 0x0f)),
            0xde => self.len16(),
            0xdf => self.len32(),
            m => Err(err(format!("expected a map, found {}", describe(m)))),
        }
    }

    #[inline]
    fn str(&mut self) -> Result<&'a str, DecodeError> {
        let n = match self.byte()? {
            m @ 0xa0..=0xbf => usize::from(m & 0x1f),
            0xd9 => self.len8()?,
            0xda => self.len16()?,
            0xdb => self.len32()?,
            m => return Err(err(format!("expected a str, found {}", describe(m)))),
        };
        std::str::from_utf8(self.take(n)?).map_err(|_| err("str is not valid UTF-8"))
    }

    fn string(&mut self) -> Result<String, DecodeError> {
        self.str().map(str::to_owned)
    }

    #[inline]
    fn bin(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = match self.byte()? {
            0xc4 => self.len8()?,
            0xc5 => self.len16()?,
            0xc6 => self.len32()?,
            m => return Err(err(format!("expected a bin holding JSON, found {}", describe(m)))),
        };
        self.take(n)
    }

    /// A non-negative integer in any MessagePack integer encoding (as JSON: `-1` and `1.5` are errors).
    #[inline]
    fn uint(&mut self) -> Result<u64, DecodeError> {
        let negative = || err("expected a non-negative integer, found a negative one");
        match self.byte()? {
            m @ 0x00..=0x7f => Ok(u64::from(m)),
            0xcc => Ok(u64::from(self.byte()?)),
            0xcd => Ok(u64::from(u16::from_be_bytes(self.be()?))),
            0xce => Ok(u64::from(u32::from_be_bytes(self.be()?))),
            0xcf => Ok(u64::from_be_bytes(self.be()?)),
            0xd0 => u64::try_from(i8::from_be_bytes(self.be()?)).map_err(|_| negative()),
            0xd1 => u64::try_from(i16::from_be_bytes(self.be()?)).map_err(|_| negative()),
            0xd2 => u64::try_from(i32::from_be_bytes(self.be()?)).map_err(|_| negative()),
            0xd3 => u64::try_from(i64::from_be_bytes(self.be()?)).map_err(|_| negative()),
            0xe0..=0xff => Err(negative()),
            m => Err(err(format!("expected a non-negative integer, found {}", describe(m)))),
        }
    }

    /// `{"code": str, "message": str, "data": bin?}`: code and message required, `data` a bin
    /// holding one JSON value within the body limits (nil: absent), unknown members skipped, no
    /// repeats.
    fn error_body(&mut self) -> Result<ErrorBody, DecodeError> {
        let n = self.map_len()?;
        let (mut code, mut message) = (None, None);
        let mut data: Option<Option<Box<RawValue>>> = None;
        for _ in 0..n {
            let name = self.str()?;
            let slot = match name {
                "code" => &mut code,
                "message" => &mut message,
                "data" => {
                    if data.is_some() {
                        return Err(err("duplicate field `data`"));
                    }
                    data = Some(self.error_data()?);
                    continue;
                }
                _ => {
                    self.skip_value()?;
                    continue;
                }
            };
            if slot.is_some() {
                return Err(err(format!("duplicate field `{name}`")));
            }
            *slot = Some(self.str().map_err(|e| err(format!("`{name}`: {}", e.0)))?);
        }
        let code = code.ok_or_else(|| err("missing field `code`"))?;
        let message = message.ok_or_else(|| err("missing field `message`"))?;
        let e = ErrorBody::new(ErrorCode::from_wire(code), message);
        Ok(match data.flatten() {
            Some(data) => e.with_data(data),
            None => e,
        })
    }

    /// An error's `data`: nil (absent) or a bin holding one JSON value within the body limits.
    fn error_data(&mut self) -> Result<Option<Box<RawValue>>, DecodeError> {
        if self.peek()? == NIL {
            self.pos += 1;
            return Ok(None);
        }
        let json = self.bin().map_err(|e| err(format!("`data`: {}", e.0)))?;
        crate::body::error_data(json).map_err(|e| err(format!("`data`: {e}")))
    }

    /// Skips one value of any type (an unknown field). Iterative, so nesting depth cannot
    /// overflow the stack; every element costs at least one byte, so it ends within the frame.
    fn skip_value(&mut self) -> Result<(), DecodeError> {
        let mut pending: u64 = 1;
        while pending > 0 {
            pending -= 1;
            let m = self.byte()?;
            let (skip, items): (usize, u64) = match m {
                0x00..=0x7f | 0xc0 | 0xc2 | 0xc3 | 0xe0..=0xff => (0, 0),
                0x80..=0x8f => (0, 2 * u64::from(m & 0x0f)),
                0x90..=0x9f => (0, u64::from(m & 0x0f)),
                0xa0..=0xbf => (usize::from(m & 0x1f), 0),
                0xc4 | 0xd9 => (self.len8()?, 0),
                0xc5 | 0xda => (self.len16()?, 0),
                0xc6 | 0xdb => (self.len32()?, 0),
                0xc7 => (self.len8()?.saturating_add(1), 0),
                0xc8 => (self.len16()?.saturating_add(1), 0),
                0xc9 => (self.len32()?.saturating_add(1), 0),
                0xcc | 0xd0 => (1, 0),
                0xcd | 0xd1 => (2, 0),
                0xca | 0xce | 0xd2 => (4, 0),
                0xcb | 0xcf | 0xd3 => (8, 0),
                0xd4 => (2, 0),
                0xd5 => (3, 0),
                0xd6 => (5, 0),
                0xd7 => (9, 0),
                0xd8 => (17, 0),
                0xdc => (0, u64::from(u16::from_be_bytes(self.be()?))),
                0xdd => (0, u64::from(u32::from_be_bytes(self.be()?))),
                0xde => (0, 2 * u64::from(u16::from_be_bytes(self.be()?))),
                0xdf => (0, 2 * u64::from(u32::from_be_bytes(self.be()?))),
                0xc1 => return Err(err("0xc1 is not a msgpack value")),
            };
            self.take(skip)?;
            pending = pending.saturating_add(items);
        }
        Ok(())
    }
}

/// A MessagePack marker as an error message names it.
fn describe(m: u8) -> &'static str {
    match m {
        0x00..=0x7f | 0xcc..=0xd3 | 0xe0..=0xff => "an integer",
        0x80..=0x8f | 0xde | 0xdf => "a map",
        0x90..=0x9f | 0xdc | 0xdd => "an array",
        0xa0..=0xbf | 0xd9..=0xdb => "a str",
        0xc0 => "nil",
        0xc2 | 0xc3 => "a bool",
        0xc4..=0xc6 => "a bin",
        0xca | 0xcb => "a float",
        0xc7..=0xc9 | 0xd4..=0xd8 => "an ext",
        0xc1 => "the unused marker 0xc1",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;
    use serde::{Deserialize, Serialize};

    use super::*;
    use crate::codec::arb::{arb_envelope, every_field};

    /// The frame `{"kind":"ping","id":"hb-1"}` as documented in `docs/protocol.md` section 3.1.
    const PING_HEX: &str = "82a46b696e64a470696e67a26964a468622d31";
    /// `{"kind":"reply","re":"7","body":{"ok":1}}`, the section's second example (body as bin8).
    const REPLY_HEX: &str = "83a46b696e64a57265706c79a27265a137a4626f6479c4087b226f6b223a317d";

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    fn sample_cmd() -> Envelope {
        let mut e = Envelope::new(Kind::Cmd);
        e.id = Some("7".into());
        e.cmd = Some("echo".into());
        e.target = Some("tag:role=web and not web-3".into());
        e.deadline_ms = Some(5000);
        e.body = Some(Bytes::from_static(br#"{"hello": "world", "n": [1, 2.5]}"#));
        e
    }

    #[test]
    fn the_documented_frames_are_byte_exact() {
        let mut e = Envelope::new(Kind::Ping);
        e.id = Some("hb-1".into());
        assert_eq!(hex(&encode(&e)), PING_HEX);
        assert_eq!(decode(&Bytes::from(unhex(PING_HEX))).unwrap(), e);
        let e = Envelope::reply_ok("7".into(), Bytes::from_static(br#"{"ok":1}"#));
        assert_eq!(hex(&encode(&e)), REPLY_HEX);
        assert_eq!(decode(&Bytes::from(unhex(REPLY_HEX))).unwrap(), e);
        let doc = include_str!("../../../../docs/protocol.md");
        for h in [PING_HEX, REPLY_HEX] {
            // The doc's hex dumps hold these bytes (after the 4-byte length header).
            let spaced: Vec<String> = unhex(h).iter().map(|b| format!("{b:02x}")).collect();
            let dumped: String = doc
                .lines()
                .filter(|l| l.starts_with("000000"))
                .flat_map(|l| l.get(10..57).unwrap_or("").split_whitespace().map(str::to_owned).collect::<Vec<_>>())
                .collect::<Vec<_>>()
                .join("");
            assert!(dumped.contains(&spaced.join("")), "docs/protocol.md lacks the dump of {h}");
        }
    }

    #[test]
    fn a_command_round_trips_and_the_body_is_a_zero_copy_slice_of_the_frame() {
        let e = sample_cmd();
        let frame = encode(&e);
        let back = decode(&frame).unwrap();
        assert_eq!(back, e);
        // The body bytes live inside the frame: same allocation, no copy.
        let body = back.body.unwrap();
        let (f0, f1) = (frame.as_ptr() as usize, frame.as_ptr() as usize + frame.len());
        assert!((f0..f1).contains(&(body.as_ptr() as usize)), "body points into the frame");
        // ... and is carried verbatim (whitespace included) as a bin.
        assert!(frame.windows(body.len()).any(|w| w == &body[..]));
    }

    #[test]
    fn an_error_frame_round_trips() {
        let e = Envelope::error(Some("3".into()), ErrorCode::UnknownCommand, "no handler for \"x\" é");
        assert_eq!(decode(&encode(&e)).unwrap(), e);
        let e = Envelope::error(None, ErrorCode::Other("disk_full".into()), "");
        assert_eq!(decode(&encode(&e)).unwrap(), e);
    }

    /// An envelope as another MessagePack implementation would write it: a map with the JSON names
    /// (`rmp-serde` with named fields), the body as bin via a byte-buffer newtype.
    #[derive(Serialize, Deserialize, Debug, Default, PartialEq)]
    struct Foreign {
        kind: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        id: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        re: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cmd: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        deadline_ms: Option<u64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        status: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<BTreeMap<String, String>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        body: Option<Bin>,
    }

    #[derive(Debug, Default, PartialEq)]
    struct Bin(Vec<u8>);

    impl Serialize for Bin {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(&self.0)
        }
    }

    impl<'de> Deserialize<'de> for Bin {
        fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> serde::de::Visitor<'de> for V {
                type Value = Bin;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a bin")
                }
                fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Bin, E> {
                    Ok(Bin(v.to_vec()))
                }
            }
            d.deserialize_bytes(V)
        }
    }

    fn foreign_bytes(f: &Foreign) -> Bytes {
        Bytes::from(rmp_serde::to_vec_named(f).unwrap())
    }

    #[test]
    fn frames_from_another_implementation_decode() {
        let f = Foreign {
            kind: "event".into(),
            re: Some("9".into()),
            deadline_ms: Some(300),
            status: Some("error".into()),
            error: Some(BTreeMap::from([
                ("code".into(), "handler_error".into()),
                ("message".into(), "boom".into()),
                ("extra".into(), "ignored".into()),
            ])),
            body: Some(Bin(b"[1,2]".to_vec())),
            ..Foreign::default()
        };
        let e = decode(&foreign_bytes(&f)).unwrap();
        assert_eq!(e.kind, Kind::Event);
        assert_eq!(e.re.as_deref(), Some("9"));
        assert_eq!(e.deadline_ms, Some(300));
        assert_eq!(e.status, Some(Status::Error));
        assert_eq!(e.error, Some(ErrorBody::new(ErrorCode::HandlerError, "boom")));
        assert_eq!(e.body.as_deref(), Some(&b"[1,2]"[..]));
    }

    /// A `reply` whose error map holds `code`, `message` and then `data` written as `value`
    /// (raw MessagePack bytes).
    fn reply_with_error_data(value: &[u8]) -> Bytes {
        let mut f = Vec::new();
        write_map_len(&mut f, 2);
        write_str(&mut f, "kind");
        write_str(&mut f, "reply");
        write_str(&mut f, "error");
        write_map_len(&mut f, 3);
        write_str(&mut f, "code");
        write_str(&mut f, "exit_status");
        write_str(&mut f, "message");
        write_str(&mut f, "exited 3");
        write_str(&mut f, "data");
        f.extend_from_slice(value);
        Bytes::from(f)
    }

    fn bin(json: &[u8]) -> Vec<u8> {
        let mut b = Vec::new();
        write_bin(&mut b, json);
        b
    }

    #[test]
    fn error_data_is_a_bin_of_json_and_anything_else_is_a_bad_frame() {
        let e = decode(&reply_with_error_data(&bin(br#"{"exit_code":3}"#))).unwrap();
        let error = e.error.clone().unwrap();
        assert_eq!(error.data_json(), Some(r#"{"exit_code":3}"#));
        assert_eq!(decode(&encode(&e)).unwrap(), e);
        assert_eq!(crate::codec::decode(&crate::codec::encode(&e)).unwrap(), e, "the same through JSON");
        let nil = decode(&reply_with_error_data(&[NIL])).unwrap();
        assert_eq!(nil.error.unwrap().data, None, "nil is absent");
        let null = decode(&reply_with_error_data(&bin(b" null "))).unwrap();
        assert_eq!(null.error.unwrap().data, None, "JSON null is absent too, as in the JSON codec");
        let spaced = decode(&reply_with_error_data(&bin(b" [1, 2] "))).unwrap();
        assert_eq!(spaced.error.unwrap().data_json(), Some("[1, 2]"), "kept without surrounding whitespace");
        let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n)).into_bytes();
        assert!(decode(&reply_with_error_data(&bin(&deep(crate::body::MAX_BODY_DEPTH)))).is_ok());
        let mut as_str = Vec::new();
        write_str(&mut as_str, "{}");
        for (value, why) in [
            (as_str, "a str"),
            (bin(b"{"), "not JSON"),
            (bin(b"1 2"), "two values"),
            (bin(br#""\udc00""#), "a lone surrogate"),
            (bin(&deep(crate::body::MAX_BODY_DEPTH + 1)), "too deep"),
            (vec![0x01], "an int"),
        ] {
            let e = decode(&reply_with_error_data(&value)).unwrap_err();
            assert!(e.to_string().contains("`data`"), "{why}: {e}");
        }
        let mut twice = reply_with_error_data(&bin(b"1")).to_vec();
        // Claim four members and append a second `data`.
        let at = twice.iter().position(|&b| b == 0x83).unwrap();
        twice[at] = 0x84;
        write_str(&mut twice, "data");
        twice.extend_from_slice(&bin(b"2"));
        assert!(decode(&Bytes::from(twice)).unwrap_err().to_string().contains("duplicate field `data`"));
    }

    #[test]
    fn our_frames_read_back_with_another_implementation() {
        let e = sample_cmd();
        let f: Foreign = rmp_serde::from_slice(&encode(&e)).unwrap();
        assert_eq!(f.kind, "cmd");
        assert_eq!(f.id.as_deref(), Some("7"));
        assert_eq!(f.deadline_ms, Some(5000));
        assert_eq!(f.body.unwrap().0, e.body.unwrap().to_vec());
    }

    #[test]
    fn unknown_fields_are_skipped_nil_is_absent_and_unknown_kinds_are_kept_as_unknown() {
        /// A field of a later protocol version: nested arrays and maps, a float, nil, a bin.
        type Later = (Vec<BTreeMap<String, Vec<i64>>>, f64, Option<bool>, Bin);
        #[derive(Serialize)]
        struct Future {
            kind: &'static str,
            future: Later,
            id: &'static str,
            re: Option<String>,
            body: Option<Bin>,
        }
        let v = Future {
            kind: "teleport",
            future: (vec![BTreeMap::from([("x".into(), vec![-1, 1 << 40])])], 1.5, None, Bin(vec![0xc1, 0xff])),
            id: "1",
            re: None,
            body: None,
        };
        let e = decode(&Bytes::from(rmp_serde::to_vec_named(&v).unwrap())).unwrap();
        assert_eq!(e.kind, Kind::Unknown);
        assert_eq!(e.id.as_deref(), Some("1"));
        assert_eq!(e.re, None);
        assert_eq!(e.body, None);
    }

    /// The decoder never recurses (unknown fields are skipped with a counter) and never
    /// allocates what a header announces: a million nested arrays are skipped, and maps, strs and
    /// bins announcing four billion entries or bytes are errors at the end of the frame.
    #[test]
    fn nesting_and_lying_lengths_cost_neither_stack_nor_memory() {
        let n = 1_000_000;
        let mut f = vec![0x82, 0xa4, b'k', b'i', b'n', b'd', 0xa4, b'p', b'i', b'n', b'g', 0xa5];
        f.extend_from_slice(b"later");
        f.extend(std::iter::repeat_n(0x91, n));
        f.push(0xc0);
        assert_eq!(decode(&Bytes::from(f)).unwrap().kind, Kind::Ping);
        // A body nested a million levels deep is one JSON value: carried, for the body limits.
        let body = format!("{}{}", "[".repeat(n), "]".repeat(n));
        let mut f =
            vec![0x82, 0xa4, b'k', b'i', b'n', b'd', 0xa3, b'c', b'm', b'd', 0xa4, b'b', b'o', b'd', b'y', 0xc6];
        f.extend_from_slice(&u32::try_from(body.len()).unwrap().to_be_bytes());
        f.extend_from_slice(body.as_bytes());
        let e = decode(&Bytes::from(f)).unwrap();
        assert!(crate::body::check(e.body.as_deref().unwrap()).is_err());

        let max = u32::MAX.to_be_bytes();
        for lying in [
            [&[0xdf][..], &max[..]].concat(),
            [&[0x81, 0xdb][..], &max[..]].concat(),
            [&[0x81, 0xa4, b'k', b'i', b'n', b'd', 0xdb][..], &max[..]].concat(),
            [
                &[0x82, 0xa4, b'k', b'i', b'n', b'd', 0xa4, b'p', b'i', b'n', b'g', 0xa4, b'b', b'o', b'd', b'y', 0xc6]
                    [..],
                &max[..],
            ]
            .concat(),
            [&[0x82, 0xa4, b'k', b'i', b'n', b'd', 0xa4, b'p', b'i', b'n', b'g', 0xa1, b'x', 0xdd][..], &max[..]]
                .concat(),
        ] {
            let e = decode(&Bytes::from(lying.clone())).unwrap_err().to_string();
            assert!(e.contains("unexpected end of frame"), "{lying:02x?}: {e}");
        }
    }

    #[test]
    fn integers_in_any_width_and_signed_encodings_are_accepted_when_non_negative() {
        for (bytes, want) in [
            (&[0x05][..], 5u64),
            (&[0xcc, 0xff], 255),
            (&[0xcd, 0x01, 0x00], 256),
            (&[0xd0, 0x07], 7),
            (&[0xd3, 0, 0, 0, 0, 0, 0, 0, 9], 9),
            (&[0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff], u64::MAX),
        ] {
            let mut f = unhex("82a46b696e64a3636d64ab646561646c696e655f6d73");
            f.extend_from_slice(bytes);
            assert_eq!(decode(&Bytes::from(f)).unwrap().deadline_ms, Some(want), "{bytes:?}");
        }
    }

    #[test]
    fn malformed_frames_are_decode_errors() {
        let kind_cmd = "a46b696e64a3636d64"; // "kind": "cmd"
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("c0", "nil is not a map"),
            ("92a46b696e64a3636d64", "an array is not a map"),
            ("80", "no kind"),
            ("81a46b696e64c0", "nil kind"),
            ("81a46b696e6403", "integer kind"),
            ("81a46b696e6481a178a3636d64", "map kind"),
            (&format!("82{kind_cmd}{kind_cmd}"), "duplicate kind"),
            (&format!("83{kind_cmd}a26964a131a26964a132"), "duplicate id"),
            (&format!("82{kind_cmd}ab646561646c696e655f6d73a23130"), "deadline_ms as a str"),
            (&format!("82{kind_cmd}ab646561646c696e655f6d73ff"), "deadline_ms -1"),
            (&format!("82{kind_cmd}ab646561646c696e655f6d73d0ff"), "deadline_ms int8 -1"),
            (&format!("82{kind_cmd}ab646561646c696e655f6d73cb3ff8000000000000"), "deadline_ms 1.5"),
            (&format!("82{kind_cmd}a6737461747573a3626164"), "status outside the set"),
            (&format!("82{kind_cmd}a4626f6479a47b7d7d7d"), "body as str, not bin"),
            (&format!("82{kind_cmd}a4626f6479c4037b7b7b"), "body bin that is not JSON"),
            (&format!("82{kind_cmd}a4626f6479c400"), "empty body bin"),
            (&format!("82{kind_cmd}a4626f6479c4057b7d"), "body bin longer than the frame"),
            (&format!("82{kind_cmd}a4626f6479c4027b7d7b"), "bytes after the body"),
            (&format!("82{kind_cmd}a56572726f7281a4636f6465a178"), "error without message"),
            (&format!("82{kind_cmd}a56572726f72a178"), "error as a str"),
            (&format!("81{kind_cmd}00"), "trailing bytes"),
            (&format!("82{kind_cmd}03a131"), "integer field name"),
            (&format!("82{kind_cmd}a17adc"), "unknown field truncated"),
            (&format!("82{kind_cmd}a17ac1"), "unknown field with the unused marker"),
            (&format!("82{kind_cmd}a26964a2c328"), "id that is not UTF-8"),
            ("df", "truncated map32 length"),
            ("dfffffffff", "huge map with nothing in it"),
        ];
        for (h, why) in cases {
            assert!(decode(&Bytes::from(unhex(h))).is_err(), "{why}: {h}");
        }
        // Sanity: the prefix used above is itself valid.
        assert_eq!(decode(&Bytes::from(unhex(&format!("81{kind_cmd}")))).unwrap().kind, Kind::Cmd);
    }

    #[test]
    fn long_strings_and_bodies_use_the_wide_encodings() {
        let mut e = Envelope::new(Kind::Reply);
        e.re = Some("r".repeat(40)); // str8
        e.cmd = Some("c".repeat(300)); // str16
        e.target = Some("t".repeat(70_000)); // str32
        let body = format!("\"{}\"", "b".repeat(70_000)); // bin32
        e.body = Some(Bytes::from(body));
        e.deadline_ms = Some(u64::from(u32::MAX) + 1);
        e.elapsed_ms = Some(65_536);
        assert_eq!(decode(&encode(&e)).unwrap(), e);
        let mut e = Envelope::new(Kind::Reply);
        e.body = Some(Bytes::from(format!("\"{}\"", "b".repeat(300)))); // bin16
        assert_eq!(decode(&encode(&e)).unwrap(), e);
    }

    #[test]
    fn every_field_round_trips_and_agrees_with_json() {
        let e = every_field();
        let frame = encode(&e);
        assert_eq!(decode(&frame).unwrap(), e);
        // The same envelope through the JSON codec and back, then through this one: unchanged.
        let via_json = crate::codec::decode(&crate::codec::encode(&e)).unwrap();
        assert_eq!(decode(&encode(&via_json)).unwrap(), e);
        // Every field is in the map, in the JSON codec's order, and nothing else is.
        let v: rmpv_like::Value = rmp_serde::from_slice(&frame).unwrap();
        let rmpv_like::Value::Map(entries) = v else { panic!("a map") };
        let names: Vec<String> = entries
            .into_iter()
            .map(|(k, _)| match k {
                rmpv_like::Value::Str(s) => s,
                other => panic!("{other:?}"),
            })
            .collect();
        let json_names: Vec<String> = {
            let m: serde_json::Map<String, serde_json::Value> =
                serde_json::from_slice(&crate::codec::encode(&e)).unwrap();
            m.keys().cloned().collect()
        };
        assert_eq!(names.len(), 26);
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(sorted, json_names, "the same fields as JSON");
        assert_eq!(names.first().map(String::as_str), Some("kind"));
        assert_eq!(names.last().map(String::as_str), Some("body"));
    }

    #[test]
    fn nil_is_absent_for_every_field_but_kind_and_a_field_may_not_follow_its_nil() {
        let kind_cmd = "a46b696e64a3636d64"; // "kind": "cmd"
        let mut every_field_nil = Vec::new();
        for name in crate::codec::arb::every_field_names().into_iter().filter(|n| *n != "kind") {
            write_str(&mut every_field_nil, name);
            every_field_nil.push(NIL);
        }
        let every_field_nil = hex(&every_field_nil);
        // 26 fields: a map16 header.
        let frame = unhex(&format!("de001a{kind_cmd}{every_field_nil}"));
        assert_eq!(decode(&Bytes::from(frame)).unwrap(), Envelope::new(Kind::Cmd));
        let e = decode(&Bytes::from(unhex(&format!("83{kind_cmd}a26964c0a26964a131")))).unwrap_err();
        assert!(e.to_string().contains("duplicate field `id`"), "{e}");
    }

    proptest! {
        #[test]
        fn encode_then_decode_is_identity(e in arb_envelope()) {
            prop_assert_eq!(decode(&encode(&e)).unwrap(), e);
        }

        /// The two codecs carry the same envelope: JSON → envelope → MsgPack → envelope gives the
        /// envelope back, and so the same JSON bytes: what a server relaying between a JSON and a
        /// MsgPack peer does. (A JSON `"body":null` is an absent body, so it is compared decoded.)
        #[test]
        fn json_and_msgpack_agree(e in arb_envelope()) {
            let via_json = crate::codec::decode(&crate::codec::encode(&e)).unwrap();
            let via_msgpack = decode(&encode(&via_json)).unwrap();
            prop_assert_eq!(crate::codec::encode(&via_msgpack), crate::codec::encode(&via_json));
            prop_assert_eq!(via_msgpack, via_json);
        }

        /// Our frames are valid MessagePack to an independent implementation, field for field.
        #[test]
        fn another_implementation_reads_our_frames(e in arb_envelope()) {
            let v: rmpv_like::Value = rmp_serde::from_slice(&encode(&e)).unwrap();
            prop_assert_eq!(v.field("kind"), Some(rmpv_like::Value::Str(e.kind.as_str().to_owned())));
            prop_assert_eq!(v.field("id"), e.id.clone().map(rmpv_like::Value::Str));
            prop_assert_eq!(v.field("deadline_ms"), e.deadline_ms.map(rmpv_like::Value::U64));
            prop_assert_eq!(v.field("body"), e.body.as_ref().map(|b| rmpv_like::Value::Bin(b.to_vec())));
        }

        #[test]
        fn decode_never_panics(data in prop::collection::vec(any::<u8>(), 0..256)) {
            let _ = decode(&Bytes::from(data));
        }

        /// Mutations of valid frames (the interesting inputs: almost-envelopes) never panic either.
        #[test]
        fn decode_of_a_mutated_frame_never_panics(
            e in arb_envelope(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut f = encode(&e).to_vec();
            for (i, b) in edits {
                let i = i.index(f.len());
                f[i] = b;
            }
            let keep = cut.index(f.len() + 1);
            f.truncate(keep);
            let _ = decode(&Bytes::from(f));
        }
    }

    /// A generic MessagePack value read through serde, to check our frames with `rmp-serde`
    /// without depending on `rmpv`.
    mod rmpv_like {
        use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};

        #[derive(Debug, Clone, PartialEq)]
        pub enum Value {
            Nil,
            Bool(bool),
            U64(u64),
            I64(i64),
            F64(f64),
            Str(String),
            Bin(Vec<u8>),
            Array(Vec<Value>),
            Map(Vec<(Value, Value)>),
        }

        impl Value {
            /// The value of field `name` when `self` is a map with string keys.
            pub fn field(&self, name: &str) -> Option<Value> {
                match self {
                    Value::Map(m) => m.iter().find(|(k, _)| *k == Value::Str(name.to_owned())).map(|(_, v)| v.clone()),
                    _ => None,
                }
            }
        }

        impl<'de> Deserialize<'de> for Value {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Value, D::Error> {
                struct V;
                impl<'de> Visitor<'de> for V {
                    type Value = Value;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("any msgpack value")
                    }
                    fn visit_unit<E>(self) -> Result<Value, E> {
                        Ok(Value::Nil)
                    }
                    fn visit_none<E>(self) -> Result<Value, E> {
                        Ok(Value::Nil)
                    }
                    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
                        Ok(Value::Bool(v))
                    }
                    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
                        Ok(Value::U64(v))
                    }
                    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
                        Ok(u64::try_from(v).map_or(Value::I64(v), Value::U64))
                    }
                    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
                        Ok(Value::F64(v))
                    }
                    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
                        Ok(Value::Str(v.to_owned()))
                    }
                    fn visit_bytes<E>(self, v: &[u8]) -> Result<Value, E> {
                        Ok(Value::Bin(v.to_vec()))
                    }
                    fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Value, A::Error> {
                        let mut v = Vec::new();
                        while let Some(x) = a.next_element()? {
                            v.push(x);
                        }
                        Ok(Value::Array(v))
                    }
                    fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Value, A::Error> {
                        let mut v = Vec::new();
                        while let Some(kv) = a.next_entry()? {
                            v.push(kv);
                        }
                        Ok(Value::Map(v))
                    }
                }
                d.deserialize_any(V)
            }
        }
    }
}

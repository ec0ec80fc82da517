//! Envelope decoding with both codecs (`orb_proto::Codec`) over arbitrary bytes. Whatever
//! decodes must re-encode and decode to the same envelope in either codec (a body read from
//! MessagePack keeps its surrounding whitespace there, which JSON drops, and a JSON `null` body
//! reads as no body), its body must be one JSON value, and the body limits and a `hello` body's
//! checks must not panic on it. Decoding may not allocate more than a small multiple of the
//! frame, whatever lengths a MessagePack header announces.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use orb_proto::message::Hello;
use orb_proto::{Codec, Envelope, Kind};
use serde_json::value::RawValue;

/// Heap one input may use: frames are a few KiB (libFuzzer's `-max_len`).
const HEAP_BUDGET: usize = 8 << 20;

/// `env` as JSON carries it: body without surrounding whitespace, a `null` body as none.
fn as_json_carries_it(env: &Envelope) -> Envelope {
    let mut env = env.clone();
    env.body = env.body.take().and_then(|body| {
        let start = body.iter().position(|b| !b" \t\r\n".contains(b)).unwrap_or(body.len());
        let end = body.iter().rposition(|b| !b" \t\r\n".contains(b)).map_or(start, |i| i + 1);
        let trimmed = body.slice(start..end.max(start));
        (trimmed.as_ref() != b"null").then_some(trimmed)
    });
    env
}

fn check(codec: Codec, frame: &Bytes) {
    let Ok(env) = codec.decode(frame) else { return };
    if let Some(body) = &env.body {
        assert!(serde_json::from_slice::<&RawValue>(body).is_ok(), "{codec}: the body is one JSON value");
        let _ = orb_proto::body::check(body);
    }
    let json = Codec::Json.decode(&Codec::Json.encode(&env)).expect("an envelope re-encoded as JSON decodes");
    assert_eq!(json, as_json_carries_it(&env), "{codec} -> JSON round trip");
    let msgpack =
        Codec::MsgPack.decode(&Codec::MsgPack.encode(&env)).expect("an envelope re-encoded as MessagePack decodes");
    assert_eq!(msgpack, env, "{codec} -> MessagePack round trip");
    if env.kind == Kind::Hello
        && let Ok(hello) = env.json_body::<Hello>()
    {
        let _ = hello.check();
    }
}

fuzz_target!(|data: &[u8]| {
    let frame = Bytes::copy_from_slice(data);
    orb_fuzz::with_heap_budget(HEAP_BUDGET, || {
        check(Codec::Json, &frame);
        check(Codec::MsgPack, &frame);
    });
});

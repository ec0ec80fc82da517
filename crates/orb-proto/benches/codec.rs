//! Envelope codecs: `encode` and `decode` of the frames a broker handles most, with throughput in
//! bytes of encoded frame (length prefix excluded). Groups `encode`/`decode` are JSON;
//! `encode_msgpack`/`decode_msgpack` run the same frames through the MessagePack codec (body as a
//! bin of the same JSON bytes), so each case compares directly across the two.
//!
//! Run: `cargo bench -p orb-proto --bench codec`

use std::hint::black_box;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use orb_proto::{Codec, Envelope, Kind, Status, decode, encode};

const JOB_ID: &str = "0199a3f2-7c4e-7b1a-9d2e-5f6a7b8c9d0e";

/// The frame the server fans out to every target of a job: a `cmd` with a small JSON body.
fn job_cmd() -> Envelope {
    let mut e = Envelope::new(Kind::Cmd);
    e.id = Some(JOB_ID.into());
    e.job = Some(JOB_ID.into());
    e.cmd = Some("service.restart".into());
    e.from = Some("op-1".into());
    e.deadline_ms = Some(10_000);
    e.body = Some(Bytes::from_static(br#"{"unit":"nginx.service","mode":"graceful","drain_ms":500}"#));
    e
}

/// An agent's answer: `{"kind":"reply","re":"<uuid>","body":{"pong":true}}`.
fn agent_reply() -> Envelope {
    Envelope::reply_ok(JOB_ID.into(), Bytes::from_static(br#"{"pong":true}"#))
}

/// One target's outcome as streamed to the requester.
fn event() -> Envelope {
    let mut e = Envelope::new(Kind::Event);
    e.re = Some("7".into());
    e.job = Some(JOB_ID.into());
    e.device = Some("web-0417".into());
    e.status = Some(Status::Ok);
    e.elapsed_ms = Some(3);
    e.body = Some(Bytes::from_static(br#"{"pong":true}"#));
    e
}

/// A JSON body of exactly 4096 bytes: an array of small objects, padded with a string.
fn body_4k() -> Bytes {
    const TARGET: usize = 4096;
    let mut files = Vec::new();
    loop {
        let i = files.len();
        files.push(serde_json::json!({
            "path": format!("/etc/app/conf.d/{i:03}-service.toml"),
            "size": 1000 + i * 37,
            "mode": "0644",
            "sha256": format!("{:064x}", i * 0x9e37_79b9),
        }));
        let len = serde_json::to_vec(&serde_json::json!({"files": files, "note": ""})).expect("json").len();
        if len > TARGET - 200 {
            let note = "x".repeat(TARGET - len);
            let v = serde_json::to_vec(&serde_json::json!({"files": files, "note": note})).expect("json");
            assert_eq!(v.len(), TARGET);
            return Bytes::from(v);
        }
    }
}

/// A job `cmd` carrying a 4 KiB body (e.g. a configuration push).
fn cmd_4k() -> Envelope {
    let mut e = job_cmd();
    e.cmd = Some("config.apply".into());
    e.body = Some(body_4k());
    e
}

fn cases() -> Vec<(&'static str, Envelope)> {
    vec![("job_cmd", job_cmd()), ("reply", agent_reply()), ("event", event()), ("cmd_4k_body", cmd_4k())]
}

fn bench_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    for (name, env) in cases() {
        let len = encode(&env).len() as u64;
        g.throughput(Throughput::Bytes(len));
        g.bench_function(name, |b| b.iter(|| encode(black_box(&env))));
    }
    g.finish();
}

fn bench_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    for (name, env) in cases() {
        let frame = encode(&env);
        assert_eq!(decode(&frame).expect("round trip"), env);
        g.throughput(Throughput::Bytes(frame.len() as u64));
        g.bench_function(name, |b| b.iter(|| decode(black_box(&frame)).expect("valid frame")));
    }
    g.finish();
}

fn bench_encode_msgpack(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode_msgpack");
    for (name, env) in cases() {
        let len = Codec::MsgPack.encode(&env).len() as u64;
        g.throughput(Throughput::Bytes(len));
        g.bench_function(name, |b| b.iter(|| Codec::MsgPack.encode(black_box(&env))));
    }
    g.finish();
}

fn bench_decode_msgpack(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode_msgpack");
    for (name, env) in cases() {
        let frame = Codec::MsgPack.encode(&env);
        assert_eq!(Codec::MsgPack.decode(&frame).expect("round trip"), env);
        g.throughput(Throughput::Bytes(frame.len() as u64));
        g.bench_function(name, |b| b.iter(|| Codec::MsgPack.decode(black_box(&frame)).expect("valid frame")));
    }
    g.finish();
}

criterion_group!(benches, bench_encode, bench_decode, bench_encode_msgpack, bench_decode_msgpack);
criterion_main!(benches);

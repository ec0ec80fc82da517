//! `progress` end to end (protocol section 4.13): a handler's progress reaches a requester that
//! asked for it, before that target's result, over JSON and MessagePack, and never one that did
//! not ask (its device is not even told to send any); a requester whose queue is full loses
//! progress, counted in `orb_progress_dropped_total`, and is not closed: its job's results and
//! summary still come.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use orb_client::{Codec, Context, Handlers, JobRequest, JobUpdate};
use orb_proto::Status;
use orb_testkit::{RawTcp, TestServer, Transport, WAIT, finish_job, hello_json, within};
use serde_json::{Value, json};

/// `steps` reports three steps (when asked), then answers whether it was asked.
fn steps() -> Handlers {
    Handlers::new().on("steps", |c: Context| async move {
        let asked = c.progress.is_on();
        for step in 0..3 {
            assert_eq!(c.progress(&json!({ "step": step })), asked);
        }
        Ok(json!({ "asked": asked }))
    })
}

#[tokio::test]
async fn progress_reaches_a_requester_that_asked_and_not_one_that_did_not() {
    let server = TestServer::start().await;
    let mut m = server.agent_config(Transport::Tcp, "dev-m");
    m.codec = Codec::MsgPack;
    let _m = server.agent_with(m, steps()).await;
    let _j = server.agent(Transport::Ws, "dev-j", &[], steps()).await;

    for codec in [Codec::Json, Codec::MsgPack] {
        let mut cfg = server.operator_config(Transport::Tcp);
        cfg.codec = codec;
        let op = orb_client::Client::connect(cfg, Handlers::new()).await.unwrap();
        let request = JobRequest::new("dev-m,dev-j", "steps").deadline(WAIT).progress(true);
        let mut job = op.submit(request).await.unwrap();
        let mut progress: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        let mut results = BTreeMap::new();
        // Three progress frames and one result per target, then the summary.
        for _ in 0..=8 {
            match within("a job update", job.next()).await {
                Some(JobUpdate::Progress { device, body }) => {
                    assert!(!results.contains_key(&device), "{codec}: progress from {device} after its result");
                    progress.entry(device).or_default().push(serde_json::from_str(body.get()).unwrap());
                }
                Some(JobUpdate::Result(r)) => {
                    assert_eq!(r.status, Status::Ok, "{r:?}");
                    results.insert(r.device.clone(), serde_json::from_str::<Value>(r.result.unwrap().get()).unwrap());
                }
                Some(JobUpdate::Done(_)) => break,
                other => panic!("{codec}: {other:?}"),
            }
        }
        let want: Vec<Value> = (0..3).map(|step| json!({ "step": step })).collect();
        for device in ["dev-j", "dev-m"] {
            assert_eq!(progress.get(device), Some(&want), "{codec}: {progress:?}");
            assert_eq!(results[device], json!({"asked": true}), "{codec}");
        }

        // Without asking: no progress (finish_job fails on any), and the devices were not asked.
        let quiet = finish_job(op.submit(JobRequest::new("dev-m,dev-j", "steps").deadline(WAIT)).await.unwrap()).await;
        for device in ["dev-j", "dev-m"] {
            assert_eq!(quiet.ok_json(device), json!({"asked": false}), "{codec}");
        }
        op.close().await;
    }
}

#[tokio::test]
async fn progress_to_a_full_queue_is_dropped_and_counted_and_the_requester_stays() {
    let server = TestServer::start_with(|c| c.limits.outbound_queue_bytes = 256 * 1024, |b| b).await;
    // `flood` reports 32 KiB a time, 50 a second, until the test says stop (bounded).
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    let flood = Handlers::new().on("flood", move |c: Context| {
        let stop = Arc::clone(&flag);
        async move {
            let chunk = json!({ "line": "x".repeat(32 * 1024) });
            let mut sent = 0u32;
            for _ in 0..1500 {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                sent += u32::from(c.progress(&chunk));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok(json!({ "sent": sent }))
        }
    });
    let _agent = server.agent(Transport::Tcp, "dev", &[], flood).await;

    // A requester that does not read (a 4 KiB receive buffer): its queue fills up.
    let mut op = RawTcp::connect_small_buffer(server.server.tcp_addr()).await;
    op.send_json(&hello_json("operator", server.server.admin_token().expose(), None)).await.unwrap();
    assert_eq!(op.read_json().await.unwrap()["kind"], "welcome");
    let cmd = json!({"kind":"cmd","id":"1","cmd":"flood","target":"dev","deadline_ms":60000,"progress":true});
    op.send_json(&cmd).await.unwrap();

    let dropped = r#"orb_progress_dropped_total{reason="queue_full"}"#;
    let mut seen = 0.0;
    for _ in 0..1000 {
        seen = server.metric(dropped).await.unwrap_or(0.0);
        if seen >= 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(seen >= 1.0, "no progress was dropped");
    stop.store(true, Ordering::Release);

    // Reading now, the requester gets its ack, some progress, the result and the summary: it
    // was never closed as a slow consumer.
    let mut kinds = Vec::new();
    let summary = loop {
        let frame = op.read_json().await.unwrap_or_else(|| panic!("closed after {kinds:?}"));
        let kind = frame["kind"].as_str().unwrap().to_owned();
        assert_ne!(kind, "bye", "{frame}");
        if kind == "progress" {
            assert_eq!((&frame["re"], &frame["device"]), (&json!("1"), &json!("dev")), "{}", frame["kind"]);
        }
        kinds.push(kind.clone());
        if kind == "reply" {
            break frame;
        }
        assert!(kinds.len() < 5000, "too many frames");
    };
    assert_eq!(kinds.first().map(String::as_str), Some("ack"), "{kinds:?}");
    assert!(kinds.iter().any(|k| k == "progress"), "{kinds:?}");
    assert_eq!(summary["body"]["summary"]["ok"], 1, "{summary}");
    let event = kinds.iter().position(|k| k == "event").unwrap();
    assert!(kinds[event + 1..].iter().all(|k| k == "reply"), "no progress after the result: {kinds:?}");
    op.send_json(&json!({"kind":"ping","id":"p"})).await.unwrap();
    assert_eq!(op.read_json().await.unwrap()["kind"], "pong", "the session is open");
}

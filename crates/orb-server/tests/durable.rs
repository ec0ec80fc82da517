//! Durable agents (issue 11): a held command whose answer was lost is delivered again to an agent
//! with a journal, which answers from it and never runs it twice (also while the first run is
//! still going, and `interrupted` when it was started by an agent that died); an agent's outbox
//! reaches the server once, in order, with its original times, and the server drops resends.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use orb_client::durable::{AgentStore, DurableLimits, Journal};
use orb_client::{Backoff, ClientConfig, Context, Handlers, JobRequest, Persistent};
use orb_proto::history::JobDetail;
use orb_proto::message::commands;
use orb_proto::registry::DeviceMessage;
use orb_proto::{ErrorCode, Status};
use orb_testkit::{TestServer, Transport, call, stored_until, within};
use serde_json::json;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

async fn journal_in(dir: &tempfile::TempDir) -> AgentStore {
    AgentStore::open(&dir.path().join("agent.db"), DurableLimits::default()).await.unwrap()
}

/// An `echo` that says when it starts, waits to be released, and counts its runs.
struct Gated {
    handlers: Handlers,
    started: mpsc::UnboundedReceiver<()>,
    release: Arc<Notify>,
    runs: Arc<AtomicU64>,
}

impl Gated {
    fn new() -> Gated {
        let (started_tx, started) = mpsc::unbounded_channel();
        let (release, runs) = (Arc::new(Notify::new()), Arc::new(AtomicU64::new(0)));
        let (gate, count) = (Arc::clone(&release), Arc::clone(&runs));
        let handlers = Handlers::new().on("echo", move |c: Context| {
            let (started, gate, count) = (started_tx.clone(), Arc::clone(&gate), Arc::clone(&count));
            async move {
                count.fetch_add(1, Ordering::SeqCst);
                let _ = started.send(());
                gate.notified().await;
                c.args::<serde_json::Value>()
            }
        });
        Gated { handlers, started, release, runs }
    }

    fn runs(&self) -> u64 {
        self.runs.load(Ordering::SeqCst)
    }
}

/// A server where `dev-1` is known and offline, an operator, and the id of a job holding
/// `echo word` for `dev-1`.
async fn held_for_dev_1(word: &str) -> (TestServer, orb_client::Client, String) {
    let server = TestServer::start().await;
    server.known_but_offline("dev-1").await;
    let op = server.operator(Transport::Tcp).await;
    let job = within("the ack", op.submit(held_echo(word))).await.unwrap();
    let id = job.id().to_owned();
    (server, op, id)
}

/// Connects `dev-1` with `connect`, waits until attempt 1 of the held command started, then
/// closes the connection and waits until the server has seen it go.
async fn start_then_drop(
    server: &TestServer,
    gated: &mut Gated,
    connect: impl std::future::Future<Output = orb_client::Client>,
) {
    let agent = connect.await;
    within("attempt 1 starts", gated.started.recv()).await.unwrap();
    agent.close().await;
    server.wait_until_gone("dev-1").await;
}

fn held_echo(word: &str) -> JobRequest {
    JobRequest::new("dev-1", "echo")
        .args(Bytes::from(format!("\"{word}\"")))
        .deadline(Duration::from_secs(30))
        .ttl(Duration::from_secs(300))
}

fn durable_config(server: &TestServer, journal: &Journal) -> ClientConfig {
    let mut cfg = server.agent_config(Transport::Tcp, "dev-1");
    cfg.journal = Some(journal.clone());
    cfg
}

/// The journal's entry for `job` once it has an outcome (polled).
async fn journaled_outcome(journal: &Journal, job: &str) {
    for _ in 0..500 {
        if matches!(journal.begin(job, "echo").await.unwrap(), orb_client::durable::Journaled::Finished(_)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the journal never recorded the outcome of {job}");
}

#[tokio::test]
async fn an_answer_lost_with_the_connection_is_sent_from_the_journal_and_the_command_runs_once() {
    let (server, op, id) = held_for_dev_1("hi").await;
    let dir = tempfile::tempdir().unwrap();
    let store = journal_in(&dir).await;
    let mut gated = Gated::new();

    // Attempt 1 starts; the connection drops before the answer; the handler then finishes and
    // its outcome is journaled (the reply has nowhere to go).
    let connect = server.agent_with(durable_config(&server, store.journal()), gated.handlers.clone());
    start_then_drop(&server, &mut gated, connect).await;
    gated.release.notify_one();
    journaled_outcome(store.journal(), &id).await;

    // The agent comes back: the server delivers it again, the journal answers.
    let _agent = server.agent_with(durable_config(&server, store.journal()), gated.handlers.clone()).await;
    let d = settled(&op, &id).await;
    assert_eq!(d.results[0].status, Status::Ok, "{d:?}");
    assert_eq!(d.results[0].result.as_ref().map(|r| r.get()), Some(r#""hi""#));
    assert_eq!(gated.runs(), 1, "run exactly once");
}

#[tokio::test]
async fn a_redelivery_while_the_first_run_goes_on_waits_for_its_outcome() {
    let (server, op, id) = held_for_dev_1("slow").await;
    let dir = tempfile::tempdir().unwrap();
    let store = journal_in(&dir).await;
    let mut gated = Gated::new();
    let connect = server.agent_with(durable_config(&server, store.journal()), gated.handlers.clone());
    start_then_drop(&server, &mut gated, connect).await;

    // Reconnected while attempt 1 still runs: attempt 2 waits for it rather than answering
    // `interrupted` or running again.
    let _agent = server.agent_with(durable_config(&server, store.journal()), gated.handlers.clone()).await;
    let shown = stored_until(&op, &id, |d: &JobDetail| !d.results.is_empty()).await;
    assert_eq!(shown.results[0].status, Status::Queued);
    let mut redelivered = false;
    for _ in 0..500 {
        let d: orb_proto::registry::DeviceDetail = call(&op, commands::DEVICES_SHOW, json!({"id": "dev-1"})).await;
        if d.held.first().is_some_and(|h| h.attempts == 2) {
            redelivered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(redelivered, "attempt 2 was handed over while attempt 1 ran");
    gated.release.notify_one();
    let d = settled(&op, &id).await;
    assert_eq!(d.results[0].status, Status::Ok, "{d:?}");
    assert_eq!(gated.runs(), 1, "run exactly once");
}

#[tokio::test]
async fn a_command_an_earlier_agent_process_started_ends_interrupted_and_is_not_run() {
    let (server, op, id) = held_for_dev_1("lost").await;

    // The journal of an agent that died while running it: started, no outcome.
    let dir = tempfile::tempdir().unwrap();
    let store = journal_in(&dir).await;
    store.journal().begin(&id, "echo").await.unwrap();
    drop(store);
    let store = journal_in(&dir).await;

    let gated = Gated::new();
    let _agent = server.agent_with(durable_config(&server, store.journal()), gated.handlers.clone()).await;
    let d = settled(&op, &id).await;
    assert_eq!(d.results[0].status, Status::Error, "{d:?}");
    assert_eq!(d.results[0].error.as_ref().map(|e| e.code.clone()), Some(ErrorCode::Interrupted));
    assert_eq!(gated.runs(), 0, "not run again");
}

#[tokio::test]
async fn an_agent_without_a_journal_gets_interrupted_instead_of_a_second_delivery() {
    let (server, op, id) = held_for_dev_1("once").await;
    let mut gated = Gated::new();
    let connect = server.agent(Transport::Tcp, "dev-1", &[], gated.handlers.clone());
    start_then_drop(&server, &mut gated, connect).await;
    let _agent = server.agent(Transport::Tcp, "dev-1", &[], gated.handlers.clone()).await;
    let d = settled(&op, &id).await;
    assert_eq!(d.results[0].error.as_ref().map(|e| e.code.clone()), Some(ErrorCode::Interrupted), "{d:?}");
    assert_eq!(gated.runs(), 1);
    gated.release.notify_one();
}

#[tokio::test]
async fn the_outbox_reaches_the_server_once_in_order_with_its_original_times() {
    let handled = Arc::new(AtomicU64::new(0));
    let seen = Arc::clone(&handled);
    let server = TestServer::start_with(
        |_| {},
        |b| {
            b.handler("reading", move |_c: Context| {
                let seen = Arc::clone(&seen);
                async move {
                    seen.fetch_add(1, Ordering::SeqCst);
                    Ok(serde_json::Value::Null)
                }
            })
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let store = journal_in(&dir).await;
    // Sent while disconnected: on disk when `send` returns.
    let mut receipts = Vec::new();
    for n in 0..3 {
        receipts.push(store.outbox().send("reading", Bytes::from(format!(r#"{{"n":{n}}}"#))).await.unwrap());
    }
    let before = chrono::Utc::now();
    assert_eq!(store.outbox().len(), 3);

    let backoff = Backoff { min: Duration::from_millis(10), max: Duration::from_millis(100), give_up_after: None };
    let cfg = server.agent_config(Transport::Tcp, "dev-1");
    let link =
        Arc::new(Persistent::new(cfg.clone(), vec![cfg.url.clone()], Handlers::new(), backoff).durable(store.clone()));
    let stop = CancellationToken::new();
    let running = tokio::spawn({
        let (link, stop) = (Arc::clone(&link), stop.clone());
        async move { link.run(&stop, |_| {}).await }
    });
    for r in receipts {
        within("the server's acknowledgement", r.acknowledged()).await.unwrap();
    }
    assert!(store.outbox().is_empty(), "deleted once acknowledged");
    let op = server.operator(Transport::Tcp).await;
    let stored: Vec<DeviceMessage> = call(&op, commands::DEVICES_MESSAGES, json!({"id": "dev-1"})).await;
    let bodies: Vec<&str> = stored.iter().filter_map(|m| m.body.as_ref().map(|b| b.get())).collect();
    assert_eq!(bodies, [r#"{"n":0}"#, r#"{"n":1}"#, r#"{"n":2}"#]);
    for m in &stored {
        let sent = chrono::DateTime::parse_from_rfc3339(&m.sent_at).unwrap();
        let received = chrono::DateTime::parse_from_rfc3339(&m.received_at).unwrap();
        assert!(
            sent <= before && received.timestamp_millis() >= before.timestamp_millis(),
            "original time kept: {m:?}"
        );
    }
    assert_eq!(handled.load(Ordering::SeqCst), 3, "the server's handler got each once");

    // Sent while connected: flushed at once.
    let r = store.outbox().send("reading", Bytes::from_static(br#"{"n":3}"#)).await.unwrap();
    within("the acknowledgement", r.acknowledged()).await.unwrap();
    stop.cancel();
    running.await.unwrap().unwrap();
    let stored: Vec<DeviceMessage> = call(&op, commands::DEVICES_MESSAGES, json!({"id": "dev-1", "limit": 2})).await;
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[1].body.as_ref().map(|b| b.get()), Some(r#"{"n":3}"#));
}

#[tokio::test]
async fn the_server_answers_a_resent_message_as_a_duplicate_and_refuses_bad_ones() {
    let server = TestServer::start().await;
    let mut raw = server.raw_agent("dev-2").await;
    let message = |id: &str, msg: &str| json!({"kind": "cmd", "id": id, "cmd": "reading", "msg": msg, "at_ms": 1_764_979_200_000_u64, "body": {"v": 1}});
    assert_eq!(answer(&mut raw, message("1", "m-1")).await["body"], json!({"stored": true}));
    assert_eq!(answer(&mut raw, message("2", "m-1")).await["body"], json!({"duplicate": true}));
    let reserved = json!({"kind": "cmd", "id": "3", "cmd": "$orb.devices.list", "msg": "m-2"});
    assert_eq!(answer(&mut raw, reserved).await["error"]["code"], "bad_request");
    let too_long = message("4", &"x".repeat(65));
    assert_eq!(answer(&mut raw, too_long).await["error"]["code"], "bad_request");
    let to_device = json!({"kind": "cmd", "id": "5", "cmd": "reading", "msg": "m-3", "to": "dev-9"});
    assert_eq!(answer(&mut raw, to_device).await["error"]["code"], "bad_request");

    let op = server.operator(Transport::Tcp).await;
    let stored: Vec<DeviceMessage> = call(&op, commands::DEVICES_MESSAGES, json!({"id": "dev-2"})).await;
    assert_eq!(stored.len(), 1, "{stored:?}");
    assert_eq!((stored[0].msg.as_str(), stored[0].sent_at.as_str()), ("m-1", "2025-12-06T00:00:00.000Z"));
    // An operator has no outbox.
    let mut raw_op = server.raw_tcp().await;
    raw_op.send_json(&orb_testkit::hello_json("operator", server.server.admin_token().expose(), None)).await.unwrap();
    assert_eq!(within("welcome", raw_op.read_json()).await.unwrap()["kind"], "welcome");
    assert_eq!(answer(&mut raw_op, message("1", "m-9")).await["error"]["code"], "bad_request");
    let unknown = orb_testkit::refused(&op, commands::DEVICES_MESSAGES, json!({"id": "nobody"})).await;
    assert_eq!(unknown, ErrorCode::DeviceNotFound);
}

/// Sends `frame` and reads until its reply.
async fn answer(raw: &mut orb_testkit::RawTcp, frame: serde_json::Value) -> serde_json::Value {
    raw.send_json(&frame).await.unwrap();
    for _ in 0..100 {
        let r = within("an answer", raw.read_json()).await.unwrap();
        if r["kind"] == "reply" {
            return r;
        }
    }
    panic!("no reply to {frame}");
}

/// The stored job once its one target is settled (no longer `queued`). The job itself stays
/// running until its live part's deadline has passed too.
async fn settled(op: &orb_client::Client, job: &str) -> JobDetail {
    stored_until(op, job, |d| d.results.first().is_some_and(|r| r.status != Status::Queued)).await
}

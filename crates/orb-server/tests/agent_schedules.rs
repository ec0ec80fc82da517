//! Agent-local schedules (decision 0016) end to end: the server pushes a schedule to the durable
//! agents it matches (also to one that connects later), each runs it on its own clock, also
//! while no server runs, and its runs reach the job history through the outbox once the link is
//! back; removing the schedule removes it from the devices. The firing logic itself is tested
//! with an injected clock in `orb-client` (`durable/schedules.rs`).
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use chrono::Utc;
use orb_client::durable::{AgentStore, DurableLimits};
use orb_client::{Backoff, Client, Context, Handlers, JobRequest, Persistent};
use orb_proto::ErrorCode;
use orb_proto::history::{JobInfo, JobPhase};
use orb_proto::message::commands;
use orb_proto::schedule::ScheduleInfo;
use orb_testkit::{TestServer, Transport, call, within};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A durable agent `id` whose `stamp` tells the test each run; it runs until the token is
/// cancelled.
struct LocalAgent {
    store: AgentStore,
    runs: mpsc::UnboundedReceiver<String>,
    stop: CancellationToken,
    _dir: tempfile::TempDir,
}

impl LocalAgent {
    async fn start(server: &TestServer, id: &str) -> LocalAgent {
        let dir = tempfile::tempdir().unwrap();
        let store = AgentStore::open(&dir.path().join("agent.db"), DurableLimits::default()).await.unwrap();
        let (tx, runs) = mpsc::unbounded_channel();
        let handlers = Handlers::new().on("stamp", move |c: Context| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(c.from.clone());
                Ok(json!("stamped"))
            }
        });
        let backoff = Backoff { min: Duration::from_millis(20), max: Duration::from_millis(100), give_up_after: None };
        let cfg = server.agent_config(Transport::Tcp, id);
        let link = Persistent::new(cfg.clone(), vec![cfg.url.clone()], handlers, backoff).durable(store.clone());
        let stop = CancellationToken::new();
        let running = stop.clone();
        tokio::spawn(async move { link.run(&running, |_| {}).await });
        LocalAgent { store, runs, stop, _dir: dir }
    }

    /// Waits (bounded) until the agent keeps `n` local schedules.
    async fn holds(&self, n: usize) {
        for _ in 0..500 {
            if self.store.schedules().all().await.unwrap().len() == n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the agent does not hold {n} local schedules: {:?}", self.store.schedules().all().await.unwrap());
    }
}

impl Drop for LocalAgent {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// The schedule's runs in the history, once there are at least `n` done.
async fn runs_stored(op: &Client, schedule: &str, n: usize) -> Vec<JobInfo> {
    for _ in 0..500 {
        let jobs: Vec<JobInfo> = call(op, commands::JOBS_LIST, json!({ "schedule": schedule })).await;
        if jobs.iter().filter(|j| j.state == JobPhase::Done).count() >= n {
            return jobs;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("fewer than {n} runs of {schedule} stored");
}

#[tokio::test]
async fn an_agent_runs_its_schedule_on_its_own_clock_also_while_no_server_runs() {
    let server = TestServer::start().await;
    let mut agent = LocalAgent::start(&server, "la-1").await;
    let op = server.operator(Transport::Tcp).await;
    server.wait_for_agents(1).await;

    let spec = json!({"kind": "every", "every_ms": 1000, "anchor": Utc::now().to_rfc3339()});
    let created: ScheduleInfo = call(
        &op,
        commands::SCHEDULES_CREATE,
        json!({"target": "la-*", "command": "stamp", "spec": spec, "on_agent": true, "deadline_ms": 5000}),
    )
    .await;
    assert!(created.on_agent);
    assert_eq!(created.next_fire_at, None, "the server never fires it");
    agent.holds(1).await;
    assert_eq!(within("a local run", agent.runs.recv()).await.unwrap(), format!("schedule:{}", created.id));
    let stored = runs_stored(&op, &created.id, 1).await;
    let run = &stored[0];
    assert_eq!((run.selector.as_str(), run.command.as_str(), run.targets), ("la-1", "stamp", 1));
    assert_eq!(run.summary[&orb_proto::Status::Ok], 1);

    // No server: the agent keeps running it, and keeps the reports in its outbox.
    let tcp = server.server.tcp_addr();
    let down_from = Utc::now();
    let (server, down_to) = server
        .restart_after(
            async {
                for _ in 0..2 {
                    within("a run while no server runs", agent.runs.recv()).await.unwrap();
                }
                assert!(!agent.store.outbox().is_empty(), "kept for the server");
                Utc::now()
            },
            |c| c.listen = tcp,
        )
        .await;
    // Back: the runs made while it was down reach the history with their own times.
    let op = server.operator(Transport::Tcp).await;
    let mut offline_runs = 0;
    for _ in 0..500 {
        let jobs: Vec<JobInfo> = call(&op, commands::JOBS_LIST, json!({ "schedule": created.id })).await;
        offline_runs = jobs
            .iter()
            .filter(|j| {
                let at = chrono::DateTime::parse_from_rfc3339(&j.created_at).unwrap();
                at >= down_from && at <= down_to
            })
            .count();
        if offline_runs >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(offline_runs >= 2, "the runs made while the server was down are stored");

    // A device that matches later gets it when it connects; removing it removes it everywhere.
    let later = LocalAgent::start(&server, "la-2").await;
    later.holds(1).await;
    // Paused, the devices drop it; resumed, they run it again.
    let _: ScheduleInfo = call(&op, commands::SCHEDULES_PAUSE, json!({ "id": created.id })).await;
    agent.holds(0).await;
    later.holds(0).await;
    let _: ScheduleInfo = call(&op, commands::SCHEDULES_RESUME, json!({ "id": created.id })).await;
    agent.holds(1).await;
    later.holds(1).await;
    let _: ScheduleInfo = call(&op, commands::SCHEDULES_REMOVE, json!({ "id": created.id })).await;
    agent.holds(0).await;
    later.holds(0).await;
}

#[tokio::test]
async fn clients_may_not_send_the_servers_own_commands_to_devices() {
    let server = TestServer::start().await;
    let agent = LocalAgent::start(&server, "la-3").await;
    server.wait_for_agents(1).await;
    let op = server.operator(Transport::Tcp).await;
    let refused = op
        .submit(
            JobRequest::new("la-3", commands::SCHEDULES_SYNC).args(bytes::Bytes::from_static(b"{\"schedules\":[]}")),
        )
        .await;
    match refused {
        Err(orb_client::ClientError::Remote(e)) => assert_eq!(e.code, ErrorCode::BadRequest, "{e}"),
        other => panic!("not refused: {:?}", other.map(|j| j.accepted.clone())),
    }
    let e =
        op.request("la-3", commands::SCHEDULES_SYNC, bytes::Bytes::from_static(b"{}"), Duration::from_secs(5)).await;
    assert!(matches!(&e, Err(orb_client::ClientError::Remote(b)) if b.code == ErrorCode::BadRequest), "{e:?}");
    // A schedule run on agents repeats, and takes neither a rollout nor a TTL; no schedule runs
    // one of the server's own commands.
    let spec = json!({"kind": "every", "every_ms": 1000, "anchor": Utc::now().to_rfc3339()});
    let at = json!({"kind": "at", "at": (Utc::now() + chrono::Duration::hours(1)).to_rfc3339()});
    for (extra, code) in [
        (json!({"ttl_ms": 1000}), ErrorCode::BadSchedule),
        (json!({"rollout": {"batch": "1"}}), ErrorCode::BadSchedule),
        (json!({"spec": at}), ErrorCode::BadSchedule),
        (json!({"command": "$orb.schedules.sync"}), ErrorCode::BadRequest),
    ] {
        let mut create = json!({"target": "*", "command": "stamp", "spec": spec, "on_agent": true});
        create.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        assert_eq!(orb_testkit::refused(&op, commands::SCHEDULES_CREATE, create).await, code, "{extra}");
    }
    drop(agent);
}

#[tokio::test]
async fn a_resent_run_report_is_stored_once_and_never_in_the_future() {
    let server = TestServer::start().await;
    let mut raw = server.raw_agent("la-4").await;
    let future = (Utc::now() + chrono::Duration::days(30)).to_rfc3339();
    let report = |id: &str| {
        json!({"kind": "cmd", "id": id, "cmd": commands::SCHEDULES_RAN, "msg": "run-1", "at_ms": 1_764_979_200_000_u64,
               "body": {"schedule": "sch-x", "command": "stamp", "fired_at": future, "status": "ok",
                        "result": "stamped", "elapsed_ms": 3}})
    };
    for (id, answer) in [("1", json!({"stored": true})), ("2", json!({"duplicate": true}))] {
        raw.send_json(&report(id)).await.unwrap();
        let reply = within("the acknowledgement", raw.read_json()).await.unwrap();
        assert_eq!(reply["body"], answer, "{reply}");
    }
    let bad = json!({"kind": "cmd", "id": "3", "cmd": commands::SCHEDULES_RAN, "msg": "run-2",
                     "body": {"schedule": "sch-x", "command": "stamp", "fired_at": future, "status": "queued", "elapsed_ms": 1}});
    raw.send_json(&bad).await.unwrap();
    let reply = within("the refusal", raw.read_json()).await.unwrap();
    assert_eq!(reply["error"]["code"], "bad_body", "{reply}");

    let op = server.operator(Transport::Tcp).await;
    let runs: Vec<JobInfo> = call(&op, commands::JOBS_LIST, json!({ "schedule": "sch-x" })).await;
    assert_eq!(runs.len(), 1, "stored once: {runs:?}");
    let at = chrono::DateTime::parse_from_rfc3339(&runs[0].created_at).unwrap();
    assert!(at <= Utc::now(), "a run is never in the future: {at}");
    assert_eq!((runs[0].state, runs[0].summary[&orb_proto::Status::Ok]), (JobPhase::Done, 1));
}

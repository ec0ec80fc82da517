//! Session lifecycle: replacement of an agent by a newer session with the same id, an agent that
//! reconnects while a job is running, agents leaving, and graceful server shutdown.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use orb_client::{Client, ClientConfig, Context, Handlers, JobRequest};
use orb_proto::Status;
use orb_testkit::{TestServer, Transport, WAIT, basic_handlers, finish_job, within};
use serde_json::json;
use tokio::sync::mpsc;

const NULL: Bytes = Bytes::from_static(b"null");

/// Handlers answering `which` with `name`.
fn named(name: &'static str) -> Handlers {
    basic_handlers().on("which", move |_c: Context| async move { Ok(json!(name)) })
}

#[tokio::test]
async fn second_agent_with_the_same_id_replaces_the_first() {
    for (first_t, second_t) in
        [(Transport::Tcp, Transport::Tcp), (Transport::Tcp, Transport::Ws), (Transport::Ws, Transport::Tcp)]
    {
        let server = TestServer::start().await;
        let first = server.agent(first_t, "dup-1", &[("gen", "1")], named("first")).await;
        server.wait_for_agents(1).await;
        let second = server.agent(second_t, "dup-1", &[("gen", "2")], named("second")).await;
        let reason = within("the first session to close", first.closed()).await;
        assert!(reason.contains("replaced"), "{reason}");
        assert!(!second.is_closed());
        server.wait_for_agents(1).await;

        let op = server.operator(Transport::Tcp).await;
        let out =
            finish_job(op.submit(JobRequest::new("dup-1", "which").args(NULL).deadline(WAIT)).await.unwrap()).await;
        assert_eq!(out.ok_json("dup-1"), json!("second"));
        let res = op.request("dup-1", "which", NULL, WAIT).await.unwrap();
        assert_eq!(&res[..], br#""second""#);
        // The inventory shows the new session's tags.
        let list: serde_json::Value = op.call_json("$orb.devices.list", &json!(null), WAIT).await.unwrap();
        assert_eq!(list.as_array().unwrap().len(), 1);
        assert_eq!(list[0]["tags"]["gen"], "2");
    }
}

#[tokio::test]
async fn replaced_session_closing_does_not_unregister_its_successor() {
    let server = TestServer::start().await;
    let first = server.agent(Transport::Tcp, "dup-1", &[], named("first")).await;
    let second = server.agent(Transport::Tcp, "dup-1", &[], named("second")).await;
    within("the first session to close", first.closed()).await;
    // A third session with the same id replaces the second in turn; then the third leaves.
    let third = server.agent(Transport::Ws, "dup-1", &[], named("third")).await;
    let reason = within("the second session to close", second.closed()).await;
    assert!(reason.contains("replaced"), "{reason}");
    let op = server.operator(Transport::Tcp).await;
    let res = op.request("dup-1", "which", NULL, WAIT).await.unwrap();
    assert_eq!(&res[..], br#""third""#);
    server.wait_for_agents(1).await;
    third.close().await;
    server.wait_for_agents(0).await;
}

#[tokio::test]
async fn agent_reconnecting_mid_job_still_ends_the_job() {
    let server = TestServer::start().await;
    // The first session's handler tells the test it started, then never finishes.
    let (started_tx, mut started_rx) = mpsc::channel::<String>(4);
    let hang = basic_handlers().on("work", move |c: Context| {
        let started = started_tx.clone();
        async move {
            let _ = started.send(c.job.unwrap_or_default()).await;
            std::future::pending::<()>().await;
            Ok(json!(null))
        }
    });
    let first = server.agent(Transport::Tcp, "dev-1", &[], hang).await;
    let _steady = server
        .agent(
            Transport::Ws,
            "dev-2",
            &[],
            named("steady").on("work", |_c: Context| async move { Ok(json!("steady")) }),
        )
        .await;
    let op = server.operator(Transport::Tcp).await;

    let job = op
        .submit(JobRequest::new("dev-1,dev-2", "work").args(NULL).deadline(Duration::from_millis(800)))
        .await
        .unwrap();
    let job_id = job.id().to_owned();
    // The command reached the first session...
    let got = within("the first session to start the work", started_rx.recv()).await.unwrap();
    assert_eq!(got, job_id);
    // ...which then goes away, and the device comes back with a session that answers.
    first.close().await;
    within("the first session to close", first.closed()).await;
    let second = server
        .agent(
            Transport::Tcp,
            "dev-1",
            &[],
            basic_handlers().on("work", |_c: Context| async move { Ok(json!("back")) }),
        )
        .await;

    let out = finish_job(job).await;
    assert_eq!(out.ok_json("dev-2"), json!("steady"));
    // The job is not re-sent to the new session in v1, so dev-1 ends as a timeout; a
    // re-sending server would report the new session's answer instead.
    let r = out.result("dev-1");
    match r.status {
        Status::Timeout => assert!(r.result.is_none()),
        Status::Ok => assert_eq!(out.ok_json("dev-1"), json!("back")),
        other => panic!("dev-1 ended as {other}: {r:?}"),
    }

    // The reconnected device takes new jobs.
    let out = finish_job(op.submit(JobRequest::new("dev-1", "work").args(NULL).deadline(WAIT)).await.unwrap()).await;
    assert_eq!(out.ok_json("dev-1"), json!("back"));
    assert!(!second.is_closed());
}

#[tokio::test]
async fn target_that_disconnects_before_answering_times_out_and_others_are_unaffected() {
    let server = TestServer::start().await;
    let (started_tx, mut started_rx) = mpsc::channel::<()>(4);
    let hang = basic_handlers().on("work", move |_c: Context| {
        let started = started_tx.clone();
        async move {
            let _ = started.send(()).await;
            std::future::pending::<()>().await;
            Ok(json!(null))
        }
    });
    let leaver = server.agent(Transport::Ws, "leaver-1", &[], hang).await;
    let _stay = server
        .agent(Transport::Tcp, "stay-1", &[], basic_handlers().on("work", |_c: Context| async move { Ok(json!(1)) }))
        .await;
    let op = server.operator(Transport::Tcp).await;
    let job = op
        .submit(JobRequest::new("leaver-1,stay-1", "work").args(NULL).deadline(Duration::from_millis(500)))
        .await
        .unwrap();
    within("the work to start", started_rx.recv()).await.unwrap();
    leaver.close().await;
    server.wait_for_agents(1).await;
    let out = finish_job(job).await;
    assert_eq!(out.result("leaver-1").status, Status::Timeout);
    assert_eq!(out.ok_json("stay-1"), json!(1));
}

#[tokio::test]
async fn operator_leaving_mid_job_does_not_disturb_the_agents() {
    let server = TestServer::start().await;
    let agent = server.agent(Transport::Tcp, "dev-1", &[], basic_handlers()).await;
    let op = server.operator(Transport::Tcp).await;
    let job =
        op.submit(JobRequest::new("dev-1", "ping").args(NULL).deadline(Duration::from_millis(300))).await.unwrap();
    op.close().await;
    drop(job);
    within("the operator to close", op.closed()).await;
    // A new operator gets answers from the same agent.
    let op2 = server.operator(Transport::Ws).await;
    let out = finish_job(op2.submit(JobRequest::new("dev-1", "ping").args(NULL).deadline(WAIT)).await.unwrap()).await;
    assert_eq!(out.count(Status::Ok), 1);
    assert!(!agent.is_closed());
}

#[tokio::test]
async fn graceful_shutdown_closes_every_client_with_server_shutdown() {
    let server = TestServer::start().await;
    let tcp_agent = server.agent(Transport::Tcp, "dev-1", &[], basic_handlers()).await;
    let ws_agent = server.agent(Transport::Ws, "dev-2", &[], basic_handlers()).await;
    let tcp_op = server.operator(Transport::Tcp).await;
    let ws_op = server.operator(Transport::Ws).await;
    server.wait_for_agents(2).await;

    let graceful = within("the shutdown", server.server.shutdown()).await;
    assert!(graceful, "every server task ended within the grace period");
    for (name, c) in
        [("tcp agent", &tcp_agent), ("ws agent", &ws_agent), ("tcp operator", &tcp_op), ("ws operator", &ws_op)]
    {
        let reason = within("the client to close", c.closed()).await;
        assert!(reason.contains("server_shutdown"), "{name}: {reason}");
        assert!(c.is_closed());
    }
    // Requests on a closed client fail instead of hanging.
    let r = tcp_op.call("$orb.server.info", NULL, WAIT).await;
    assert!(matches!(r, Err(orb_client::ClientError::Closed(_))), "{r:?}");
    // Nobody can connect any more.
    let cfg = ClientConfig::operator(server.url(Transport::Tcp), Some(server.server.admin_token().expose().to_owned()));
    assert!(Client::connect(cfg, Handlers::new()).await.is_err());
    // Shutting down twice is harmless.
    within("the second shutdown", server.server.shutdown()).await;
}

/// An agent whose `work` handler never finishes, and an operator.
async fn stuck_job_setup() -> (TestServer, Client, Client) {
    let server = TestServer::start().await;
    let hang = basic_handlers().on("work", |_c: Context| async move {
        std::future::pending::<()>().await;
        Ok(json!(null))
    });
    let agent = server.agent(Transport::Tcp, "dev-1", &[], hang).await;
    let op = server.operator(Transport::Tcp).await;
    (server, agent, op)
}

#[tokio::test]
async fn shutdown_lets_a_job_in_flight_end_before_closing_sessions() {
    let (server, agent, op) = stuck_job_setup().await;
    let job =
        op.submit(JobRequest::new("dev-1", "work").args(NULL).deadline(Duration::from_millis(300))).await.unwrap();
    let (graceful, out) = within("the shutdown and the job", async {
        tokio::join!(server.server.drain(Duration::from_secs(5)), finish_job(job))
    })
    .await;
    assert!(graceful, "the job ended within the grace period");
    assert_eq!(out.result("dev-1").status, Status::Timeout);
    for c in [&agent, &op] {
        let reason = within("the client to close", c.closed()).await;
        assert!(reason.contains("server_shutdown"), "{reason}");
    }
}

#[tokio::test]
async fn shutdown_does_not_leave_a_job_running_past_the_grace_period() {
    let (server, agent, op) = stuck_job_setup().await;
    let _job =
        op.submit(JobRequest::new("dev-1", "work").args(NULL).deadline(Duration::from_secs(3600))).await.unwrap();
    assert_eq!(server.server.broker().jobs().in_flight(), 1);
    let graceful = within("the shutdown", server.server.drain(Duration::from_millis(300))).await;
    assert!(!graceful, "the job could not end within the grace period");
    for c in [&agent, &op] {
        let reason = within("the client to close", c.closed()).await;
        assert!(reason.contains("server_shutdown"), "{reason}");
    }
    // Its requester is gone, so the job ended with the sessions instead of waiting an hour.
    assert_eq!(server.server.broker().jobs().in_flight(), 0);
}

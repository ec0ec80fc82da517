//! The message and connection rates (issue 15) against a real server over loopback: an agent
//! sending faster than its message rate is read at that rate and loses nothing (every ping
//! answered, in order) while `orb_rate_limited_total{limit="messages"}` counts the frames delayed;
//! an operator is not limited by default; agent hellos beyond the connection rate get
//! `rate_limited` while operators are still admitted, hellos that fail authentication do not use
//! the rate up, and a refused agent library retries until it is admitted; a reloaded message rate
//! reaches open sessions. Nothing here measures wall-clock time: the assertions count frames,
//! refusals and metrics.
#![allow(clippy::unwrap_used)]

use orb_client::{Backoff, ClientConfig, Handlers, LinkEvent, Persistent};
use orb_testkit::{RawTcp, TestServer, hello_json, within};
use serde_json::json;
use tokio_util::sync::CancellationToken;

/// `orb_rate_limited_total{limit="LIMIT"}` as the server's `/metrics` shows it now.
async fn rate_limited(server: &TestServer, limit: &str) -> u64 {
    let series = format!("orb_rate_limited_total{{limit=\"{limit}\"}}");
    let value = server.metric(&series).await.unwrap_or_else(|| panic!("{series} missing from /metrics"));
    value as u64
}

/// Sends `n` pings at once, then reads until each has its pong; the ids in the order answered
/// (the server's own pings are skipped).
async fn ping_flood(raw: &mut RawTcp, n: usize) -> Vec<String> {
    for i in 0..n {
        raw.send_json(&json!({"kind": "ping", "id": format!("p{i}")})).await.unwrap();
    }
    let mut answered = Vec::new();
    while answered.len() < n {
        let f = raw.read_json().await.expect("the session stays open");
        match f["kind"].as_str() {
            Some("pong") => answered.push(f["re"].as_str().unwrap().to_owned()),
            Some("ping") => {}
            _ => panic!("unexpected frame {f}"),
        }
    }
    answered
}

#[tokio::test]
async fn an_agent_over_its_message_rate_is_slowed_but_loses_nothing_and_operators_are_not_limited() {
    const RATE: u32 = 20;
    const FRAMES: usize = 50;
    let server = TestServer::start_with(|c| c.limits.agent_messages_per_second = RATE, |b| b).await;
    let expected: Vec<String> = (0..FRAMES).map(|i| format!("p{i}")).collect();

    // An operator (unlimited by default) sends many times the agents' rate at once.
    let mut op = server.raw_tcp().await;
    op.send_json(&hello_json("operator", server.server.admin_token().expose(), None)).await.unwrap();
    assert_eq!(op.read_json().await.unwrap()["kind"], "welcome");
    let many: Vec<String> = (0..FRAMES * 4).map(|i| format!("p{i}")).collect();
    assert_eq!(ping_flood(&mut op, FRAMES * 4).await, many);
    assert_eq!(rate_limited(&server, "messages").await, 0, "an operator is not limited");

    // An agent gets its burst (a second's worth), then one frame per token: the frames beyond
    // the burst are each delayed, all are answered, in order.
    let mut agent = server.raw_agent("fast-1").await;
    assert_eq!(ping_flood(&mut agent, FRAMES).await, expected);
    let delayed = rate_limited(&server, "messages").await;
    let beyond = (FRAMES - RATE as usize) as u64;
    // Each frame beyond the burst waits, unless the bucket refilled while the server was busy.
    assert!((beyond / 2..=beyond).contains(&delayed), "{delayed} frames delayed, {beyond} beyond the burst");

    // The session is still usable afterwards.
    assert_eq!(ping_flood(&mut agent, 1).await, ["p0"]);
}

#[tokio::test]
async fn agent_hellos_beyond_the_connection_rate_are_refused_operators_admitted_and_agents_retry() {
    let server = TestServer::start_with(|c| c.limits.agent_connections_per_second = 1, |b| b).await;
    let token = server.server.agent_token().expose().to_owned();

    // A hello that fails authentication does not use the rate up.
    let mut bad = server.raw_tcp().await;
    bad.send_json(&hello_json("agent", "not-the-token", Some("bad-1"))).await.unwrap();
    assert_eq!(bad.expect_error().await, "auth_failed");

    // The one token of the second: the first agent is admitted, the next refused.
    let _first = server.raw_agent("first-1").await;
    let mut refused = server.raw_tcp().await;
    refused.send_json(&hello_json("agent", &token, Some("second-1"))).await.unwrap();
    let f = refused.read_json().await.unwrap();
    assert_eq!((f["kind"].as_str(), f["error"]["code"].as_str()), (Some("error"), Some("rate_limited")), "{f}");
    assert!(f["error"]["message"].as_str().unwrap().contains("try again"), "{f}");
    refused.expect_closed().await;
    assert_eq!(rate_limited(&server, "connections").await, 1);

    // Operators are not counted.
    let mut op = server.raw_tcp().await;
    op.send_json(&hello_json("operator", server.server.admin_token().expose(), None)).await.unwrap();
    assert_eq!(op.read_json().await.unwrap()["kind"], "welcome");

    // The agent library retries a refusal with backoff until the rate admits it.
    let mut cfg = ClientConfig::agent(server.url(orb_testkit::Transport::Tcp), Some(token), "second-1");
    cfg.enroll = true;
    let backoff = Backoff { min: std::time::Duration::from_millis(50), ..Backoff::default() };
    let link = Persistent::new(cfg.clone(), vec![cfg.url.clone()], Handlers::new(), backoff);
    let stop = CancellationToken::new();
    let mut events = Vec::new();
    let run = link.run(&stop, |e| {
        if matches!(e, LinkEvent::Connected { .. }) {
            stop.cancel();
        }
        events.push(e);
    });
    within("the agent's retries", run).await.unwrap();
    let refusals = rate_limited(&server, "connections").await;
    for e in &events[..events.len() - 2] {
        assert!(
            matches!(e, LinkEvent::Failed { code: Some(orb_proto::ErrorCode::RateLimited), .. }),
            "every failure before the connection is rate_limited: {events:?}"
        );
    }
    assert_eq!(refusals, 1 + (events.len() - 2) as u64, "{events:?}");
    assert!(matches!(events[events.len() - 2], LinkEvent::Enrolled { .. }), "{events:?}");
    assert!(matches!(events[events.len() - 1], LinkEvent::Connected { .. }), "{events:?}");
}

#[tokio::test]
async fn a_reloaded_message_rate_reaches_open_sessions_at_their_next_heartbeat() {
    let fast = |c: &mut orb_server::ServerConfig| {
        c.limits.heartbeat = std::time::Duration::from_millis(100);
        c.limits.heartbeat_timeout = std::time::Duration::from_secs(5);
    };
    let server = TestServer::start_with(fast, |b| b).await;
    let mut op = server.raw_tcp().await;
    op.send_json(&hello_json("operator", server.server.admin_token().expose(), None)).await.unwrap();
    assert_eq!(op.read_json().await.unwrap()["kind"], "welcome");
    assert_eq!(ping_flood(&mut op, 20).await.len(), 20);
    assert_eq!(rate_limited(&server, "messages").await, 0);

    let mut cfg = orb_server::ServerConfig::for_tests(server.data.path().to_path_buf());
    fast(&mut cfg);
    cfg.limits.operator_messages_per_second = 5;
    assert!(server.server.reload(cfg).unwrap().restart_required.is_empty());
    // Two of the server's pings later, a heartbeat has run since the reload.
    let mut pings = 0;
    while pings < 2 {
        if op.read_json().await.unwrap()["kind"] == "ping" {
            pings += 1;
        }
    }
    let expected: Vec<String> = (0..10).map(|i| format!("p{i}")).collect();
    assert_eq!(ping_flood(&mut op, 10).await, expected);
    let delayed = rate_limited(&server, "messages").await;
    assert!((1..=5).contains(&delayed), "{delayed} of 10 frames delayed at 5 a second");
}

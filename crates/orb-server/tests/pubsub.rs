//! Pub/sub over the wire (issue 13): publications reach every connection subscribed to a
//! matching pattern once, agents and operators alike, over both codecs; `$orb.` topics are the
//! server's (no client publishes there, wildcards do not reach them, agents may not subscribe);
//! bad topics and too many subscriptions are refused with their codes; a subscription ends when
//! dropped or with its connection; a subscriber that stops reading is closed as a slow consumer
//! without holding the publisher up. Retained publications go first to each new subscription
//! (to it alone), bounded in count, cleared by a null body, and kept across a restart.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use orb_client::{Client, ClientError, Codec, Message};
use orb_proto::ErrorCode;
use orb_testkit::{TestServer, Transport, WAIT, basic_handlers, within};

async fn next(sub: &mut orb_client::Subscription) -> Message {
    within("a message", sub.next()).await.expect("the subscription is open")
}

fn remote(r: Result<impl std::fmt::Debug, ClientError>) -> ErrorCode {
    match r {
        Err(ClientError::Remote(e)) => e.code,
        other => panic!("not refused by the server: {other:?}"),
    }
}

#[tokio::test]
async fn publications_reach_each_matching_connection_once() {
    let server = TestServer::start().await;
    let op = server.operator(Transport::Tcp).await;
    let agent = server.agent(Transport::Ws, "ps-1", &[], basic_handlers()).await;
    let mut cfg = server.operator_config(Transport::Tcp);
    cfg.codec = Codec::MsgPack;
    let packed = Client::connect(cfg, orb_client::Handlers::new()).await.unwrap();

    let mut all = op.subscribe("telemetry.>", WAIT).await.unwrap();
    let mut cpu = op.subscribe("telemetry.*.cpu", WAIT).await.unwrap();
    let mut on_agent = agent.subscribe("telemetry.ps-1.*", WAIT).await.unwrap();
    let mut on_msgpack = packed.subscribe("telemetry.>", WAIT).await.unwrap();

    // From an agent: the operator's connection gets it once (two of its patterns match, each
    // local subscription sees it), the agent's own and the MessagePack connection too.
    let n = agent.publish("telemetry.ps-1.cpu", Bytes::from_static(br#"{"load":0.5}"#), WAIT).await.unwrap();
    assert_eq!(n, 3, "three connections subscribed");
    for m in [next(&mut all).await, next(&mut cpu).await, next(&mut on_agent).await, next(&mut on_msgpack).await] {
        assert_eq!(
            (m.topic.as_str(), m.from.as_str(), &m.body[..]),
            ("telemetry.ps-1.cpu", "ps-1", &br#"{"load":0.5}"#[..])
        );
    }
    // Only what matches: `telemetry.*.cpu` does not see a memory reading.
    assert_eq!(op.publish("telemetry.ps-1.mem", Bytes::from_static(b"7"), WAIT).await.unwrap(), 3);
    let m = next(&mut all).await;
    assert_eq!((m.topic.as_str(), m.seq), ("telemetry.ps-1.mem", 2), "numbered per connection");
    assert!(cpu.take_pending().is_empty());
    assert_eq!(next(&mut on_agent).await.topic, "telemetry.ps-1.mem");
    assert_eq!(op.publish("other.topic", Bytes::from_static(b"null"), WAIT).await.unwrap(), 0);

    // Dropped, a subscription ends; the connection's others go on.
    drop(on_agent);
    drop(all);
    let n = agent.publish("telemetry.ps-1.cpu", Bytes::from_static(b"1"), WAIT).await.unwrap();
    assert_eq!(n, 2, "the operator (cpu) and the MessagePack client; the agent unsubscribed");
    assert_eq!(next(&mut cpu).await.body, Bytes::from_static(b"1"));
    // A closed connection's subscriptions end with it.
    packed.close().await;
    drop(on_msgpack);
    for _ in 0..500 {
        if server.server.broker().subscriptions() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(server.server.broker().subscriptions(), 1, "only the operator's cpu subscription is left");
}

#[tokio::test]
async fn the_servers_namespace_and_bad_input_are_refused() {
    let server = TestServer::start_with(|cfg| cfg.limits.max_subscriptions = 2, |b| b).await;
    let op = server.operator(Transport::Tcp).await;
    let agent = server.agent(Transport::Tcp, "ps-2", &[], basic_handlers()).await;

    assert_eq!(remote(op.publish("$orb.presence.ps-2", Bytes::from_static(b"1"), WAIT).await), ErrorCode::Forbidden);
    // Every `$` topic is the server's, `$orb` itself included, retained or not, for anyone.
    for topic in ["$orb", "$foo.x", "$SYS"] {
        assert_eq!(remote(op.publish(topic, Bytes::from_static(b"1"), WAIT).await), ErrorCode::Forbidden, "{topic}");
        let retained = op.publish_retained(topic, Bytes::from_static(b"1"), WAIT).await;
        assert_eq!(remote(retained), ErrorCode::Forbidden, "{topic}");
        assert_eq!(remote(agent.publish(topic, Bytes::from_static(b"1"), WAIT).await), ErrorCode::Forbidden, "{topic}");
    }
    assert_eq!(server.server.broker().retained(), (0, 0), "nothing was retained");
    assert_eq!(
        remote(agent.subscribe("$orb.>", WAIT).await),
        ErrorCode::Forbidden,
        "the server's events are for operators"
    );
    let mut everything = op.subscribe(">", WAIT).await.unwrap();
    let _events = op.subscribe("$orb.>", WAIT).await.unwrap();
    assert_eq!(remote(op.subscribe("more.>", WAIT).await), ErrorCode::TooManySubscriptions);
    for topic in ["a..b", "a.*", "a b", "", "a.>"] {
        assert_eq!(remote(op.publish(topic, Bytes::from_static(b"1"), WAIT).await), ErrorCode::BadTopic, "{topic:?}");
    }
    assert_eq!(remote(agent.subscribe("a.>.b", WAIT).await), ErrorCode::BadTopic);
    // A body past the limits is refused, never relayed.
    let deep = format!("{}{}", "[".repeat(100), "]".repeat(100));
    assert_eq!(remote(op.publish("deep", Bytes::from(deep), WAIT).await), ErrorCode::BadBody);
    assert_eq!(agent.publish("fine", Bytes::from_static(b"\"ok\""), WAIT).await.unwrap(), 1);
    assert_eq!(next(&mut everything).await.topic, "fine");
}

#[tokio::test]
async fn a_subscriber_that_stops_reading_is_closed_and_the_publisher_never_waits() {
    let server = TestServer::start().await;
    let op = server.operator(Transport::Tcp).await;
    let mut stalled = orb_testkit::RawTcp::connect_small_buffer(server.server.tcp_addr()).await;
    stalled.send_json(&orb_testkit::hello_json("operator", server.server.admin_token().expose(), None)).await.unwrap();
    let _welcome = within("welcome", stalled.read_json()).await;
    stalled.send_json(&serde_json::json!({"kind": "sub", "id": "1", "topic": "flood.>"})).await.unwrap();
    let _ack = within("the subscription", stalled.read_json()).await;
    let mut reader = op.subscribe("flood.>", WAIT).await.unwrap();

    // The raw connection reads nothing more: its queue fills and it is closed, while every
    // publication is answered at once and the reading subscriber gets them all.
    let body = Bytes::from(vec![b'1'; 60_000]);
    let mut reached = Vec::new();
    for i in 0..400 {
        reached.push(
            within("a publication's answer", op.publish(&format!("flood.{i}"), body.clone(), WAIT)).await.unwrap(),
        );
        assert_eq!(next(&mut reader).await.topic, format!("flood.{i}"));
    }
    assert_eq!(reached.first(), Some(&2));
    assert_eq!(reached.last(), Some(&1), "the stalled subscriber was closed: {reached:?}");
}

#[tokio::test]
async fn a_job_publishes_its_progress_for_subscribers() {
    let server = TestServer::start().await;
    let op = server.operator(Transport::Tcp).await;
    let _a = server.agent(Transport::Tcp, "jp-1", &[], basic_handlers()).await;
    server.known_but_offline("jp-2").await;
    let mut progress = op.subscribe("$orb.job.>", WAIT).await.unwrap();
    let job = op.submit(orb_client::JobRequest::new("jp-*", "ping")).await.unwrap();
    let id = job.id().to_owned();
    let outcome = orb_testkit::finish_job(job).await;
    let mut statuses = Vec::new();
    for _ in 0..2 {
        let m = next(&mut progress).await;
        assert_eq!((m.topic.clone(), m.from.as_str()), (format!("$orb.job.{id}"), "$server"));
        let v: serde_json::Value = serde_json::from_slice(&m.body).unwrap();
        statuses.push((v["device"].as_str().unwrap().to_owned(), v["status"].as_str().unwrap().to_owned()));
    }
    statuses.sort();
    assert_eq!(statuses, [("jp-1".to_owned(), "ok".to_owned()), ("jp-2".to_owned(), "offline".to_owned())]);
    let end: serde_json::Value = serde_json::from_slice(&next(&mut progress).await.body).unwrap();
    assert_eq!((end["ended"].as_bool(), end["summary"]["ok"].as_u64()), (Some(true), Some(1)));
    assert_eq!(outcome.count(orb_proto::Status::Ok), 1);
}

#[tokio::test]
async fn retained_publications_come_first_to_each_new_subscription_only() {
    let server = TestServer::start_with(
        |cfg| {
            cfg.limits.max_retained = 3;
            cfg.acl.agent_retain = vec!["cfg.>".into()];
        },
        |b| b,
    )
    .await;
    let op = server.operator(Transport::Tcp).await;
    let agent = server.agent(Transport::Ws, "rt-1", &[], basic_handlers()).await;
    let body = |s: &'static str| Bytes::from_static(s.as_bytes());
    let mut early = op.subscribe("cfg.>", WAIT).await.unwrap();
    // Retained from an agent and an operator; replaced; delivered live to `early` as well.
    assert_eq!(agent.publish_retained("cfg.b", body("1"), WAIT).await.unwrap(), 1);
    op.publish_retained("cfg.a", body(r#"{"v":1}"#), WAIT).await.unwrap();
    op.publish_retained("cfg.a", body(r#"{"v":2}"#), WAIT).await.unwrap();
    op.publish_retained("cfg.c.deep", body("[\"x\",\"y\"]"), WAIT).await.unwrap();
    for _ in 0..4 {
        assert!(!next(&mut early).await.retained, "live delivery is not marked retained");
    }
    assert_eq!(server.server.broker().retained().0, 3);
    // A fourth topic is refused, and not delivered; replacing one is fine.
    assert_eq!(remote(op.publish_retained("cfg.d", body("1"), WAIT).await), ErrorCode::TooManyRetained);
    op.publish_retained("cfg.b", body("2"), WAIT).await.unwrap();
    assert_eq!(next(&mut early).await.body, body("2"), "cfg.d never went out");

    // A new subscription gets the matching retained ones first, by topic, then live ones; the
    // connection's older subscription gets no second copy.
    let mut late = op.subscribe("cfg.*", WAIT).await.unwrap();
    op.publish("cfg.live", body("0"), WAIT).await.unwrap();
    let got: Vec<(String, bool, Bytes)> = {
        let mut v = Vec::new();
        for _ in 0..3 {
            let m = next(&mut late).await;
            v.push((m.topic, m.retained, m.body));
        }
        v
    };
    assert_eq!(
        got,
        [
            ("cfg.a".to_owned(), true, body(r#"{"v":2}"#)),
            ("cfg.b".to_owned(), true, body("2")),
            ("cfg.live".to_owned(), false, body("0")),
        ],
        "cfg.c.deep does not match cfg.*"
    );
    assert_eq!(next(&mut early).await.topic, "cfg.live");
    assert!(early.take_pending().is_empty(), "no retained copies for the older subscription");
    let m = {
        let mut from_agent = agent.subscribe("cfg.b", WAIT).await.unwrap();
        next(&mut from_agent).await
    };
    assert_eq!((m.from.as_str(), m.retained), (op.welcome().id.as_str(), true), "{m:?}");

    // A null body clears; the count frees up. Retained publications are stored: a restart
    // keeps them.
    op.publish_retained("cfg.b", body("null"), WAIT).await.unwrap();
    op.publish_retained("cfg.d", body("4"), WAIT).await.unwrap();
    drop((early, late, op, agent));
    let server = server.restart(|cfg| cfg.limits.max_retained = 3).await;
    let op = server.operator(Transport::Tcp).await;
    let mut sub = op.subscribe(">", WAIT).await.unwrap();
    let topics: Vec<String> = vec![next(&mut sub).await.topic, next(&mut sub).await.topic, next(&mut sub).await.topic];
    assert_eq!(topics, ["cfg.a", "cfg.c.deep", "cfg.d"]);
    assert!(sub.take_pending().is_empty());
}

#[tokio::test]
async fn a_subscription_is_a_stream_and_gives_what_is_pending_without_waiting() {
    use futures_util::StreamExt;
    let server = TestServer::start().await;
    let op = server.operator(Transport::Tcp).await;
    let publish = |topic: &'static str| {
        let op = op.clone();
        async move { op.publish(topic, Bytes::from_static(b"1"), WAIT).await.unwrap() }
    };

    let stream = op.subscribe("s.>", WAIT).await.unwrap();
    for topic in ["s.1", "s.2", "other", "s.3"] {
        publish(topic).await;
    }
    let got: Vec<Message> = within("three messages", stream.take(3).collect()).await;
    let topics: Vec<&str> = got.iter().map(|m| m.topic.as_str()).collect();
    assert_eq!(topics, ["s.1", "s.2", "s.3"]);
    assert!(got.windows(2).all(|w| w[0].seq < w[1].seq), "numbered in arrival order: {got:?}");
    assert!(got.iter().all(|m| !m.from.is_empty()), "the sender named: {got:?}");

    // Nothing waiting: an empty list at once. Then, once `p.end` is here (another subscription
    // on the same connection), everything published before it is waiting too.
    let mut pending = op.subscribe("p.>", WAIT).await.unwrap();
    assert!(pending.take_pending().is_empty());
    let mut end = op.subscribe("p.end", WAIT).await.unwrap();
    for topic in ["p.1", "p.2", "p.end"] {
        publish(topic).await;
    }
    next(&mut end).await;
    let topics: Vec<String> = pending.take_pending().into_iter().map(|m| m.topic).collect();
    assert_eq!(topics, ["p.1", "p.2", "p.end"]);
}

#[tokio::test]
async fn an_inbox_gives_a_program_its_commands_and_publications_in_one_numbered_loop() {
    use orb_client::{Inbox, What};
    let server = TestServer::start().await;
    let mut inbox = Inbox::new();
    let handlers = inbox.commands(basic_handlers(), ["greet", "ignore"]);
    let agent = server.agent(Transport::Tcp, "dev-1", &[], handlers).await;
    inbox.subscribe(agent.subscribe("news.>", WAIT).await.unwrap());
    let op = server.operator(Transport::Tcp).await;

    op.publish("news.1", Bytes::from_static(b"\"hello\""), WAIT).await.unwrap();
    let greet = {
        let op = op.clone();
        tokio::spawn(async move { op.request("dev-1", "greet", Bytes::from_static(b"{\"name\":\"ada\"}"), WAIT).await })
    };
    let mut first = within("the publication", inbox.next()).await.unwrap();
    assert_eq!(first.seq, 1);
    assert_eq!(first.what, What::Topic { topic: "news.1".into(), retained: false });
    assert_eq!(first.body_as::<String>().unwrap(), "hello");
    assert!(!first.reply(Ok(serde_json::json!(1))), "a publication has no one to answer");

    let mut command = within("the command", inbox.next()).await.unwrap();
    assert_eq!(command.seq, 2);
    assert!(matches!(&command.what, What::Command { name, .. } if name == "greet"), "{command:?}");
    assert!(!command.from.is_empty());
    let name: String = command.body_as::<serde_json::Value>().unwrap()["name"].as_str().unwrap().to_owned();
    assert!(command.reply(Ok(serde_json::json!(format!("hi {name}")))));
    let answer = within("the reply", greet).await.unwrap().unwrap();
    assert_eq!(&answer[..], br#""hi ada""#);

    // Nothing waiting: an empty list at once, without waiting.
    assert!(inbox.take_pending().is_empty());
    // A command the program drops unanswered is an error for its requester, never a hang.
    let ignored = {
        let op = op.clone();
        tokio::spawn(async move { op.request("dev-1", "ignore", Bytes::from_static(b"null"), WAIT).await })
    };
    let dropped = within("the command", inbox.next()).await.unwrap();
    assert_eq!(dropped.seq, 3);
    drop(dropped);
    assert_eq!(remote(within("the answer", ignored).await.unwrap()), ErrorCode::HandlerError);
    assert_eq!(inbox.dropped(), 0);
}

//! Presence and last will (issue 13): the server publishes `$orb.presence.<id>` when a device
//! connects and when it goes, with the reason; a client's last will is published when its
//! connection ends without a `bye` (killed, link lost), never on a normal close; a bad will is
//! refused in the hello.
#![allow(clippy::unwrap_used)]

use orb_client::{Client, Message, Subscription};
use orb_proto::message::{RawJson, Will};
use orb_testkit::{TestServer, Transport, WAIT, basic_handlers, within};
use serde_json::{Value, json};

async fn next(sub: &mut Subscription) -> Message {
    within("a message", sub.next()).await.expect("the subscription is open")
}

fn body(m: &Message) -> Value {
    serde_json::from_slice(&m.body).unwrap()
}

fn will(topic: &str, body: &str) -> Option<Will> {
    let body = serde_json::value::RawValue::from_string(body.to_owned()).unwrap();
    Some(Will { topic: topic.to_owned(), body: Some(RawJson(body)), retain: false })
}

#[tokio::test]
async fn presence_events_and_a_will_only_for_a_client_that_vanished() {
    let server = TestServer::start().await;
    let op = server.operator(Transport::Tcp).await;
    let mut presence = op.subscribe("$orb.presence.>", WAIT).await.unwrap();
    let mut wills = op.subscribe("wills.*", WAIT).await.unwrap();
    let mut everything = op.subscribe(">", WAIT).await.unwrap();

    // A normal close: online, then offline `peer_closed`, and no will.
    let mut cfg = server.agent_config(Transport::Tcp, "pr-1");
    cfg.will = will("wills.pr-1", r#"{"gone":"pr-1"}"#);
    let polite = Client::connect(cfg, basic_handlers()).await.unwrap();
    let m = next(&mut presence).await;
    assert_eq!((m.topic.as_str(), m.from.as_str()), ("$orb.presence.pr-1", "$server"));
    assert_eq!((body(&m)["id"].as_str(), body(&m)["status"].as_str()), (Some("pr-1"), Some("online")));
    polite.close().await;
    let m = next(&mut presence).await;
    assert_eq!((body(&m)["status"].as_str(), body(&m)["reason"].as_str()), (Some("offline"), Some("peer_closed")));

    // A connection dropped without a bye: offline `connection_lost`, and its will.
    let mut raw = server.raw_tcp().await;
    let mut hello = orb_testkit::hello_json("agent", server.server.agent_token().expose(), Some("pr-2"));
    hello["body"]["will"] = json!({"topic": "wills.pr-2", "body": {"gone": "pr-2"}});
    raw.send_json(&hello).await.unwrap();
    assert_eq!(within("welcome", raw.read_json()).await.unwrap()["kind"], "welcome");
    assert_eq!(body(&next(&mut presence).await)["status"], "online");
    drop(raw);
    let m = next(&mut wills).await;
    assert_eq!((m.topic.as_str(), m.from.as_str(), body(&m)), ("wills.pr-2", "pr-2", json!({"gone": "pr-2"})));
    let m = next(&mut presence).await;
    assert_eq!((body(&m)["id"].as_str(), body(&m)["reason"].as_str()), (Some("pr-2"), Some("connection_lost")));
    assert!(wills.take_pending().is_empty(), "pr-1 closed normally: no will");
    // `>` sees the will (a client topic) but none of the server's `$orb.` events.
    assert_eq!(next(&mut everything).await.topic, "wills.pr-2");
    // Frames keep their order on a connection: a marker published now comes next, so no $orb.
    // event (all published before it) reached `>`.
    op.publish("marker", bytes::Bytes::from_static(b"1"), WAIT).await.unwrap();
    assert_eq!(next(&mut everything).await.topic, "marker", "no $orb. event reached >");
}

#[tokio::test]
async fn a_bad_will_is_refused_in_the_hello() {
    let server = TestServer::start().await;
    for (topic, says) in [("$orb.presence.x", "the server's"), ("a..b", "segment 2 is empty")] {
        let mut cfg = server.agent_config(Transport::Tcp, "pr-3");
        cfg.will = will(topic, "1");
        let Err(e) = Client::connect(cfg, basic_handlers()).await else { panic!("{topic}: the hello was accepted") };
        assert!(e.to_string().contains(says), "{topic}: {e}");
    }
}

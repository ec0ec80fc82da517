//! Device telemetry (issue 16): a device's publication on its own `telemetry.<id>.sys` becomes
//! its latest telemetry in `$orb.devices.show`; another device's topic, an operator, another
//! topic or a `null` body change nothing; a removed device's telemetry goes with it.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use orb_proto::message::commands;
use orb_proto::registry::DeviceDetail;
use orb_testkit::{TestServer, Transport, WAIT, basic_handlers, call};
use serde_json::json;

async fn show(op: &orb_client::Client, id: &str) -> DeviceDetail {
    call(op, commands::DEVICES_SHOW, json!({"id": id})).await
}

#[tokio::test]
async fn a_devices_own_sys_topic_sets_its_latest_telemetry_and_nothing_else_does() {
    let server = TestServer::start().await;
    let op = server.operator(Transport::Tcp).await;
    let one = server.agent(Transport::Tcp, "tel-1", &[], basic_handlers()).await;
    let two = server.agent(Transport::Ws, "tel-2", &[], basic_handlers()).await;
    assert_eq!(show(&op, "tel-1").await.telemetry, None, "nothing published yet");

    let sample = json!({"cpu_percent": 12.5, "memory": {"total_bytes": 8, "used_bytes": 2, "available_bytes": 6}});
    let before = chrono::Utc::now();
    one.publish("telemetry.tel-1.sys", Bytes::from(sample.to_string()), WAIT).await.unwrap();
    let t = show(&op, "tel-1").await.telemetry.expect("tel-1 published its telemetry");
    assert_eq!(t.value, sample);
    let at = chrono::DateTime::parse_from_rfc3339(&t.at).unwrap();
    assert!(at >= before - chrono::Duration::milliseconds(1) && t.at.ends_with('Z'), "{}", t.at);

    // Another device's topic (the default ACL lets it publish there), an operator, another
    // topic of its own, a null body: none of them is anyone's telemetry.
    let forged = Bytes::from_static(br#"{"cpu_percent": 99}"#);
    two.publish("telemetry.tel-1.sys", forged.clone(), WAIT).await.unwrap();
    op.publish("telemetry.tel-1.sys", forged.clone(), WAIT).await.unwrap();
    op.publish("telemetry.tel-2.sys", forged.clone(), WAIT).await.unwrap();
    two.publish("telemetry.tel-2.cpu", forged.clone(), WAIT).await.unwrap();
    two.publish("telemetry.tel-2.sys.more", forged.clone(), WAIT).await.unwrap();
    one.publish("telemetry.tel-1.sys", Bytes::from_static(b"null"), WAIT).await.unwrap();
    assert_eq!(show(&op, "tel-1").await.telemetry.unwrap().value, sample, "still tel-1's own sample");
    assert_eq!(show(&op, "tel-2").await.telemetry, None);

    // The latest wins.
    two.publish("telemetry.tel-2.sys", Bytes::from_static(br#"{"cpu_percent": 1}"#), WAIT).await.unwrap();
    two.publish("telemetry.tel-2.sys", Bytes::from_static(br#"{"cpu_percent": 2}"#), WAIT).await.unwrap();
    assert_eq!(show(&op, "tel-2").await.telemetry.unwrap().value, json!({"cpu_percent": 2}));

    // Removed, a device's telemetry goes with it: registered again, it has none.
    let _: serde_json::Value = call(&op, commands::DEVICES_REMOVE, json!({"id": "tel-1"})).await;
    let _: serde_json::Value = call(&op, commands::DEVICES_ADD, json!({"id": "tel-1"})).await;
    assert_eq!(show(&op, "tel-1").await.telemetry, None);
}

//! End-to-end tests of `orb devices` and of the WebSocket transport, against a real
//! `orb serve` with real `orb agent` processes.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Server, json_lines, stderr, stdout};
use serde_json::{Value, json};

fn by_id<'a>(list: &'a Value, id: &str) -> &'a Value {
    list.as_array().unwrap().iter().find(|d| d["id"] == id).unwrap_or_else(|| panic!("{id} not listed: {list}"))
}

#[test]
fn devices_json_lists_every_agent_and_filters_by_selector() {
    let server = Server::start();
    let _agents = [server.agent("web-1", &["role=web", "region=eu"]), server.agent("db-1", &["role=db", "region=us"])];
    server.wait_connected(&["web-1", "db-1"]);

    let out = server.client("devices").arg("--json").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "one JSON array: {}", stdout(&out));
    let list = &lines[0];
    let ids: Vec<&str> = list.as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["db-1", "web-1"], "sorted by id");

    for (id, tags) in
        [("web-1", json!({"role": "web", "region": "eu"})), ("db-1", json!({"role": "db", "region": "us"}))]
    {
        let d = by_id(list, id);
        assert_eq!(d["connected"], true, "{d}");
        assert_eq!(d["tags"], tags, "{d}");
        let remote = d["remote_addr"].as_str().unwrap();
        assert!(remote.starts_with("127.0.0.1:"), "{d}");
        let since = d["connected_since"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(since).is_ok(), "connected_since is RFC 3339: {d}");
        let version = d["agent_version"].as_str().unwrap();
        assert!(version.starts_with("orb-agent/"), "{d}");
        assert_eq!(d["transport"], "tcp", "{d}");
    }

    let out = server.client("devices").args(["tag:role=db", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "{}", stdout(&out));
    let ids: Vec<&Value> = lines[0].as_array().unwrap().iter().map(|d| &d["id"]).collect();
    assert_eq!(ids, [&json!("db-1")]);

    // Nothing matching is an empty array, not an error.
    let out = server.client("devices").args(["tag:role=cache", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(json_lines(&out), [json!([])]);

    // Piped, the human form is plain columns: `orb devices | awk '{print $1}'` prints the
    // header and the ids; the count goes to stderr.
    let out = server.client("devices").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    let first: Vec<&str> = text.lines().filter_map(|l| l.split_whitespace().next()).collect();
    assert_eq!(first, ["ID", "db-1", "web-1"], "{text}");
    assert!(!text.contains('│') && !text.contains('─'), "no box borders when piped: {text}");
    assert!(stderr(&out).contains("2 device(s), 2 online"), "{}", stderr(&out));
    let out = server.client("devices").arg("--no-headers").output().unwrap();
    let first: Vec<String> =
        stdout(&out).lines().filter_map(|l| l.split_whitespace().next()).map(String::from).collect();
    assert_eq!(first, ["db-1", "web-1"]);
    let row = |text: &str, id: &str| text.lines().find(|l| l.starts_with(id)).map(|l| l.split_whitespace().count());
    let wide = server.client("devices").args(["-o", "wide"]).output().unwrap();
    assert!(row(&stdout(&wide), "web-1") > row(&text, "web-1"), "wide has more columns: {}", stdout(&wide));
    assert!(stdout(&wide).contains("127.0.0.1:"), "wide shows the address: {}", stdout(&wide));

    // `-o name` prints ids alone; `-o yaml` one YAML list; `-o json` is `--json`.
    let out = server.client("devices").args(["-o", "name"]).output().unwrap();
    assert_eq!(stdout(&out), "db-1\nweb-1\n");
    let out = server.client("devices").args(["-o", "yaml"]).output().unwrap();
    let yaml = stdout(&out);
    assert!(yaml.starts_with("---\n- id: db-1\n"), "{yaml}");
    assert!(yaml.contains("- id: web-1") && yaml.contains("connected: true"), "{yaml}");
    let out = server.client("devices").args(["-o", "json"]).output().unwrap();
    assert_eq!(json_lines(&out)[0].as_array().map(Vec::len), Some(2));
    let out = server.client("devices").args(["-o", "xml"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "an unknown format is a usage error");

    // A bad selector is a usage error.
    let out = server.client("devices").arg("web.1").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(&out));
}

#[test]
fn websocket_agents_and_clients_work_like_tcp_ones() {
    let server = Server::start();
    let ws = server.ws.clone();
    let _agents = [server.agent_at(&ws, "ws-1", &["role=web"]), server.agent("tcp-1", &["role=web"])];
    server.wait_connected(&["ws-1", "tcp-1"]);

    // The inventory says which transport each agent uses.
    let out = server.client("devices").arg("--json").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let list = &json_lines(&out)[0];
    assert_eq!(by_id(list, "ws-1")["transport"], "ws", "{list}");
    assert_eq!(by_id(list, "tcp-1")["transport"], "tcp", "{list}");

    // A job sent over TCP reaches the WebSocket agent, and one sent over WebSocket reaches both.
    for url in [server.tcp.as_str(), ws.as_str()] {
        let out = server.client_at("send", url).args(["*", "echo", r#"{"via":"test"}"#, "--json"]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{url}: stderr: {}", stderr(&out));
        let lines = json_lines(&out);
        assert_eq!(lines.len(), 3, "{url}: {}", stdout(&out));
        let mut devices = Vec::new();
        for r in &lines[..2] {
            devices.push(common::assert_result_shape(r));
            assert_eq!(r["status"], "ok", "{r}");
            assert_eq!(r["result"], json!({"via": "test"}), "{r}");
        }
        devices.sort();
        assert_eq!(devices, ["tcp-1", "ws-1"]);
        assert_eq!(common::assert_summary_shape(&lines[2])["ok"], 2);
    }

    // `orb devices` over WebSocket too.
    let out = server.client_at("devices", &ws).args(["ws-*", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let list = &json_lines(&out)[0];
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(by_id(list, "ws-1")["connected"], true);
}

#[test]
fn devices_json_lists_a_fleet_whose_answer_is_far_above_one_mebibyte() {
    use futures_util::StreamExt;
    use orb_client::{Client, ClientConfig, Handlers, ServerUrl};
    use orb_proto::message::commands;
    use orb_proto::registry::DeviceAdd;
    use std::time::Duration;

    const DEVICES: usize = 600;
    let server = Server::start();
    // Long operator tags make the list large with few registrations: about 2 KiB a device.
    let tags: std::collections::BTreeMap<String, String> =
        (0..8).map(|k| (format!("label{k}"), "x".repeat(250))).collect();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let url: ServerUrl = server.tcp.parse().unwrap();
        let op =
            Client::connect(ClientConfig::operator(url, Some(common::ADMIN.into())), Handlers::new()).await.unwrap();
        let calls = futures_util::stream::iter(0..DEVICES)
            .map(|i| {
                let (op, add) = (&op, DeviceAdd { id: format!("big-{i:05}"), tags: tags.clone() });
                async move {
                    let _: Value = op.call_json(commands::DEVICES_ADD, &add, Duration::from_secs(30)).await.unwrap();
                }
            })
            .buffer_unordered(64);
        calls.collect::<Vec<()>>().await;
        op.close().await;
    });

    let out = server.client("devices").arg("--json").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert!(out.stdout.len() > 1 << 20, "the answer exceeds the 1 MiB default frame: {} bytes", out.stdout.len());
    let list = &json_lines(&out)[0];
    let ids: Vec<&str> = list.as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), DEVICES);
    assert_eq!(ids.first(), Some(&"big-00000"));
    assert_eq!(ids.last(), Some(&format!("big-{:05}", DEVICES - 1).as_str()));
    assert_eq!(by_id(list, "big-00042")["tags"]["label7"].as_str().map(str::len), Some(250));
}

#[test]
fn an_agent_publishes_telemetry_at_its_configured_interval_and_devices_show_has_it() {
    let server = Server::start();
    let config = server.cwd().join("agent.toml");
    std::fs::write(&config, "[telemetry]\ninterval = \"200ms\"\n").unwrap();
    let _agent = server.agent_with("tel-1", |cmd| {
        cmd.arg("--config").arg(&config);
    });
    server.wait_connected(&["tel-1"]);
    let mut shown = Value::Null;
    common::poll_until("telemetry of tel-1 in `orb devices show`", || {
        let out = server.client("devices").args(["show", "tel-1", "--json"]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
        shown = serde_json::from_slice(&out.stdout).unwrap();
        !shown["telemetry"].is_null()
    });
    let value = &shown["telemetry"]["value"];
    assert_eq!(value["agent_version"], format!("orb-agent/{}", env!("CARGO_PKG_VERSION")), "{value}");
    for key in ["cpu_percent", "load_avg", "memory", "swap", "disks", "network", "uptime_s", "hostname", "os"] {
        assert!(value.get(key).is_some(), "{key} missing: {value}");
    }
    assert!(shown["telemetry"]["at"].as_str().unwrap().ends_with('Z'), "{shown}");
    // The human form has a telemetry section.
    let out = server.client("devices").args(["show", "tel-1"]).output().unwrap();
    let text = stdout(&out);
    assert!(text.contains("telemetry (telemetry.tel-1.sys)") && text.contains("memory"), "{text}");
}

//! `orb commands` from the binary: the commands the matching devices declare, with how many
//! devices declare each and how many of those are connected, in JSON, as a table and by name;
//! which commands carry an argument schema (the table's SCHEMA column), and the schemas in JSON.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Server, stderr, stdout};
use serde_json::{Value, json};

#[test]
fn the_commands_devices_declare_are_listed_with_their_devices() {
    let server = Server::start();
    let _a = server.agent("cam-1", &["role=camera"]);
    let _b = server.agent("web-1", &["role=web"]);
    server.wait_connected(&["cam-1", "web-1"]);

    let out = server.client("commands").arg("--json").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let rows: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let ping = rows.as_array().unwrap().iter().find(|r| r["command"] == "ping").unwrap();
    assert_eq!(ping, &json!({"command": "ping", "devices": ["cam-1", "web-1"], "connected": 2, "schemas": []}));
    // `orb agent` declares a schema for `sleep`: one, declared by both devices.
    let sleep = rows.as_array().unwrap().iter().find(|r| r["command"] == "sleep").unwrap();
    let schemas = sleep["schemas"].as_array().unwrap();
    assert_eq!(schemas.len(), 1, "{sleep}");
    assert_eq!(schemas[0]["devices"], json!(["cam-1", "web-1"]));
    assert!(schemas[0]["schema"]["anyOf"].is_array(), "{sleep}");

    let out = server.client("commands").output().unwrap();
    let table = stdout(&out);
    assert!(table.lines().next().unwrap().contains("SCHEMA"), "{table}");
    assert!(table.lines().any(|l| l.starts_with("sleep") && l.trim_end().ends_with("yes")), "{table}");
    assert!(table.lines().any(|l| l.starts_with("ping") && l.trim_end().ends_with('-')), "{table}");

    let out = server.client("commands").args(["tag:role=camera", "-o", "name"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().collect::<Vec<_>>(), ["agent.config", "echo", "ping", "sleep", "sys.info"]);

    let out = server.client("commands").args(["-o", "wide"]).output().unwrap();
    let table = stdout(&out);
    assert!(table.lines().next().unwrap().starts_with("COMMAND"), "{table}");
    assert!(table.lines().any(|l| l.starts_with("ping") && l.contains("cam-1,web-1")), "{table}");

    let bad = server.client("commands").arg("tag:").output().unwrap();
    assert_ne!(bad.status.code(), Some(0), "a bad selector is refused");
    assert!(stderr(&bad).contains("bad_selector") || stderr(&bad).contains("selector"), "{}", stderr(&bad));
}

//! End to end: settings a server pushes to `orb agent` from `[[fleet.agents]]` rules — in the
//! welcome, again after a configuration reload and after an operator changes a device's tags —
//! applied without a restart: the telemetry interval and metrics, the log level, and `exec`
//! patterns where the agent accepts them; `agent.config` answers what is in force.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Proc, Server, json_lines, poll_until, stderr, stdout};
use serde_json::{Value, json};

/// The server's rules: sensors publish every 300 ms, CPU only, log at debug and may run `echo`.
const RULES: &str = r#"
[[fleet.agents]]
select = "*"
log_level = "info"

[[fleet.agents]]
select = "tag:role=sensor"
telemetry_interval = "300ms"
telemetry_metrics = ["cpu"]
log_level = "debug"
exec_allow = ["echo *"]
"#;

/// Starts agent `id` with `config` as its `--config` and `tags`, and waits until it is connected.
fn agent(server: &Server, id: &str, config: &str, tags: &[&str]) -> Proc {
    let path = server.cwd().join(format!("{id}.toml"));
    std::fs::write(&path, config).unwrap();
    let agent = server.agent_with(id, |c| {
        c.arg("--config").arg(&path);
        for t in tags {
            c.args(["--tag", t]);
        }
    });
    server.wait_connected(&[id]);
    agent
}

/// `orb send ID COMMAND [ARGS] --json`: the one result line.
fn send(server: &Server, id: &str, command: &str, args: &[&str]) -> Value {
    let out = server.client("send").args([id, command]).args(args).arg("--json").output().unwrap();
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2, "stdout: {} stderr: {}", stdout(&out), stderr(&out));
    lines[0].clone()
}

/// What `agent.config` answers on `id`.
fn effective(server: &Server, id: &str) -> Value {
    let line = send(server, id, "agent.config", &[]);
    assert_eq!(line["status"], "ok", "{line}");
    line["result"].clone()
}

fn echo(server: &Server, id: &str) -> Value {
    send(server, id, "exec", &[&json!({"cmd": ["echo", "hi"]}).to_string()])
}

#[test]
fn pushed_settings_apply_at_once_and_follow_reloads_and_tag_changes() {
    let server = Server::start_with(|c, dir| {
        std::fs::write(dir.join("orb.toml"), RULES).unwrap();
        c.arg("--config").arg(dir.join("orb.toml"));
    });
    let accepting = "[exec]\naccept_server_additions = true\n[telemetry]\ninterval = \"1h\"\n";
    let _sensor = agent(&server, "s-1", accepting, &["role=sensor"]);
    let _web = agent(&server, "w-1", accepting, &[]);
    let _closed = agent(&server, "c-1", "[telemetry]\ninterval = \"1h\"\n", &["role=sensor"]);

    // The welcome told each agent its settings.
    let s = effective(&server, "s-1");
    assert_eq!(
        s["telemetry"],
        json!({"interval_ms": 300, "interval_source": "server", "metrics": ["cpu"], "metrics_source": "server"})
    );
    assert_eq!(s["log"], json!({"level": "debug", "source": "server"}));
    assert_eq!(s["exec"]["server_additions"], json!(["echo *"]), "{s}");
    let w = effective(&server, "w-1");
    assert_eq!(w["telemetry"]["interval_ms"], 3_600_000, "{w}");
    assert_eq!(w["telemetry"]["interval_source"], "agent", "{w}");
    assert_eq!(w["log"], json!({"level": "info", "source": "server"}));
    // An agent whose configuration does not accept additions declares no exec at all.
    let c = effective(&server, "c-1");
    assert_eq!(c["exec"]["enabled"], false, "{c}");
    assert_eq!(c["exec"]["ignored_server_additions"], json!(["echo *"]), "{c}");

    // The pushed pattern allows `echo` on the sensor only.
    let ran = echo(&server, "s-1");
    assert_eq!((&ran["status"], &ran["result"]["stdout"]), (&json!("ok"), &json!("hi\n")), "{ran}");
    let refused = echo(&server, "w-1");
    assert_eq!(refused["error"]["code"], "not_allowed", "{refused}");
    // c-1 declares no exec: the job is refused before anything is sent.
    let out = server.client("send").args(["c-1", "exec", r#"{"cmd": ["echo", "hi"]}"#]).output().unwrap();
    assert!(!out.status.success() && stderr(&out).contains("unknown_command"), "{}", stderr(&out));

    // Telemetry comes at the pushed interval with the pushed metrics only.
    poll_until("telemetry of s-1", || {
        let out = server.client("devices").args(["show", "s-1", "--json"]).output().unwrap();
        let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
        let value = &shown["telemetry"]["value"];
        value.get("cpus").is_some() && value.get("memory").is_none() && value.get("hostname").is_some()
    });

    // A reload pushes the changed settings to the agents connected; nothing restarts.
    let config = server.cwd().join("orb.toml");
    std::fs::write(&config, "[[fleet.agents]]\nselect = \"tag:role=sensor\"\ntelemetry_interval = \"off\"\n").unwrap();
    let out = server.signal("RELOAD");
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    poll_until("s-1 applies the reloaded settings", || effective(&server, "s-1")["telemetry"]["interval_ms"].is_null());
    let s = effective(&server, "s-1");
    assert_eq!(s["log"], json!({"level": "info", "source": "agent"}), "{s}");
    assert_eq!(s["exec"]["server_additions"], json!([]), "{s}");
    assert_eq!(echo(&server, "s-1")["error"]["code"], "not_allowed");
    let w = effective(&server, "w-1");
    assert_eq!(w["pushed"], json!({}), "{w}");

    // An operator tag makes w-1 a sensor: it is told at once.
    let out = server.client("devices").args(["tag", "w-1", "role=sensor"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    poll_until("w-1 applies the sensor settings", || {
        effective(&server, "w-1")["telemetry"]["interval_source"] == "server"
    });

    // The agent keeps what it was told last in its data folder, for a restart while offline.
    let saved = std::fs::read_to_string(server.agent_data("s-1").join("pushed-settings.json")).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&saved).unwrap(), json!({"telemetry_interval_ms": 0}));
}

#[test]
fn bad_rules_are_refused_naming_the_rule_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orb.toml");
    std::fs::write(
        &file,
        "[[fleet.agents]]\nselect = \"web-(\"\n\n[[fleet.agents]]\nselect = \"*\"\ntelemetry_metrics = [\"gpu\"]\nexec_allow = [\"* x\"]\n",
    )
    .unwrap();
    let out = common::orb_cmd(dir.path()).args(["config", "check"]).arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(78), "{}", stdout(&out));
    let err = format!("{}{}", stdout(&out), stderr(&out));
    for part in [
        "'fleet.agents[0].select'",
        "'fleet.agents[1]': telemetry metric 'gpu'",
        "'fleet.agents[1]': exec_allow entry 0",
    ] {
        assert!(err.contains(part), "{part} missing from: {err}");
    }
    std::fs::write(&file, "[[fleet.agents]]\nselect = \"*\"\ntelemetry_intervall = \"1s\"\n").unwrap();
    let out = common::orb_cmd(dir.path()).args(["config", "check"]).arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(78));
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(all.contains("telemetry_intervall"), "{all}");
}

//! End-to-end tests of the device registry from the binary: enrollment (credential saved 0600,
//! welcomed back after agent and server restarts, no token needed), impersonation refused
//! (`id_taken`, exit 77), `orb devices add` credentials used by an agent (`credentials.json` or
//! `--secret-file`), revoke closing the session for good, operator tags with their source,
//! `--summary` / `--connected`, and bad input changing nothing.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{
    ADMIN, AGENT, EVENT, FAST_BACKOFF, Proc, Server, free_port, json_lines, orb, send_signal, serve_cmd, stderr, stdout,
};
use serde_json::{Value, json};

fn connected(l: &str) -> bool {
    l.contains("agent connected")
}

/// `orb agent` against `server` with data in `data`, fast reconnects; `extra` flags follow
/// (`--token`, `--id`, ...). No token is given unless `extra` has one.
fn agent_cmd(server: &Server, data: &Path, extra: &[&str]) -> Command {
    let mut cmd = orb(server.cwd());
    cmd.args(["agent", "--server", &server.tcp]).arg("--data").arg(data).args(extra).envs(FAST_BACKOFF);
    cmd
}

fn spawn_agent(server: &Server, data: &Path, extra: &[&str]) -> Proc {
    Proc::spawn(format!("orb agent {}", data.display()), agent_cmd(server, data, extra))
}

fn credentials(data: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(data.join("credentials.json")).unwrap()).unwrap()
}

/// `orb devices ARGS... --json` as one parsed value (the command must succeed).
fn devices_json(server: &Server, args: &[&str]) -> Value {
    let out = server.client("devices").args(args).arg("--json").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "devices {args:?}: {}", stderr(&out));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "one JSON value: {}", stdout(&out));
    lines.into_iter().next().unwrap()
}

fn summary(server: &Server) -> Value {
    devices_json(server, &["--summary"])
}

/// Stops a process with SIGTERM and waits for a clean exit.
fn stop(p: &mut Proc) {
    send_signal(p.pid(), "TERM");
    let status = p.wait_exit(EVENT);
    assert!(status.success(), "{status:?}: {}", p.stderr());
}

#[test]
fn an_agent_without_an_id_enrolls_and_is_welcomed_back_after_agent_and_server_restarts() {
    let listen = format!("127.0.0.1:{}", free_port());
    let dir = tempfile::tempdir().unwrap();
    let cmd = serve_cmd(dir.path(), &listen);
    let mut server = Server::spawn(dir, cmd);
    let data = server.cwd().join("agent-data");

    let mut agent = spawn_agent(&server, &data, &["--token", AGENT]);
    let line = agent.wait_for_line(EVENT, |l| l.contains("enrolled as "));
    agent.wait_for_line(EVENT, connected);
    let saved = credentials(&data);
    let id = saved["id"].as_str().unwrap().to_owned();
    assert!(line.contains(&format!("enrolled as {id}")), "{line}");
    let mut fields: Vec<&String> = saved.as_object().unwrap().keys().collect();
    fields.sort();
    assert_eq!(fields, ["enrolled_at", "id", "secret", "server"], "{saved}");
    assert_eq!(saved["server"], server.tcp.as_str());
    assert!(chrono::DateTime::parse_from_rfc3339(saved["enrolled_at"].as_str().unwrap()).is_ok(), "{saved}");
    let secret = saved["secret"].as_str().unwrap().to_owned();
    assert!(secret.len() >= 32, "a high-entropy secret");
    assert!(!agent.stderr().contains(&secret), "the secret is never logged");
    let mode = |p: PathBuf| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(data.join("credentials.json")), 0o600);
    assert_eq!(mode(data.clone()), 0o700);
    server.wait_connected(&[&id]);

    // Restarted with no token and no id: the saved credential is enough.
    stop(&mut agent);
    let mut agent = spawn_agent(&server, &data, &[]);
    let back = agent.wait_for_line(EVENT, |l| l.contains("welcomed back"));
    assert!(back.contains("first seen"), "{back}");
    agent.wait_for_line(EVENT, connected);
    assert!(!agent.stderr().contains("enrolled as"), "no second enrollment: {}", agent.stderr());
    server.wait_connected(&[&id]);
    assert_eq!(summary(&server), json!({"known": 1, "connected": 1, "revoked": 0}));

    // The server restarts on the same port and data: the credential still works.
    stop(&mut server.proc);
    agent.wait_for_line(EVENT, |l| l.contains("connection lost"));
    let Server { proc, dir, .. } = server;
    drop(proc);
    let cmd = serve_cmd(dir.path(), &listen);
    let server = Server::spawn(dir, cmd);
    agent.wait_for_line(EVENT, |l| l.contains("welcomed back"));
    agent.wait_for_line(EVENT, connected);
    server.wait_connected(&[&id]);
    let out = server.client("send").args([&id, "ping", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json_lines(&out)[0]["result"], json!({"pong": true}));
    assert_eq!(credentials(&data), saved, "the credential file is unchanged");
}

#[test]
fn the_agent_token_cannot_take_over_an_enrolled_id() {
    let server = Server::start();
    let first_data = server.cwd().join("first");
    let mut first = spawn_agent(&server, &first_data, &["--token", AGENT, "--id", "web-1"]);
    first.wait_for_line(EVENT, connected);
    assert_eq!(credentials(&first_data)["id"], "web-1");

    // Same id, shared token, another folder: refused for good (no retrying), exit 77.
    let out = common::orb_cmd(server.cwd())
        .args(["agent", "--server", &server.tcp, "--token", AGENT, "--id", "web-1", "--data"])
        .arg(server.cwd().join("second"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(77), "stderr: {}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("id_taken"), "{err}");
    assert!(err.contains("has no credential for web-1") && err.contains("orb devices rm web-1"), "{err}");
    assert!(!server.cwd().join("second").join("credentials.json").exists());
    // The real device is unaffected.
    server.wait_connected(&["web-1"]);
    assert_eq!(devices_json(&server, &[]).as_array().unwrap().len(), 1);

    // Its own folder with another --id is a configuration error naming both ids.
    stop(&mut first);
    let out = common::orb_cmd(server.cwd())
        .args(["agent", "--server", &server.tcp, "--id", "web-2", "--data"])
        .arg(&first_data)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78), "stderr: {}", stderr(&out));
    assert!(stderr(&out).contains("web-2") && stderr(&out).contains("web-1"), "{}", stderr(&out));
}

#[test]
fn a_device_added_by_an_operator_connects_with_its_printed_credential() {
    let server = Server::start();
    let out = server.client("devices").args(["add", "cam-1", "--tag", "kind=camera", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let credential = &json_lines(&out)[0];
    assert_eq!(common::keys(credential), ["id", "secret"], "{credential}");
    assert!(stderr(&out).contains("shown only this once"), "{}", stderr(&out));

    // Pre-registered, not connected; the agent token cannot claim it.
    let listed = devices_json(&server, &[]);
    assert_eq!(listed[0]["id"], "cam-1");
    assert_eq!(listed[0]["connected"], false);
    assert_eq!(listed[0]["tags"], json!({"kind": "camera"}));
    let out = common::orb_cmd(server.cwd())
        .args(["agent", "--server", &server.tcp, "--token", AGENT, "--id", "cam-1", "--data"])
        .arg(server.cwd().join("thief"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(77), "stderr: {}", stderr(&out));

    // `--json` output is a credentials.json: the agent needs nothing else.
    let data = server.cwd().join("cam-1");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("credentials.json"), serde_json::to_vec(credential).unwrap()).unwrap();
    let mut agent = spawn_agent(&server, &data, &[]);
    agent.wait_for_line(EVENT, connected);
    server.wait_connected(&["cam-1"]);
    let detail = devices_json(&server, &["show", "cam-1"]);
    assert_eq!(detail["credential"], "secret", "{detail}");
    assert_eq!(detail["operator_tags"], json!({"kind": "camera"}), "{detail}");

    // The human form prints the secret once; `--secret-file` uses it.
    let out = server.client("devices").args(["add", "cam-2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = stdout(&out);
    let secret = text.lines().find_map(|l| l.strip_prefix("secret")).unwrap().trim().to_owned();
    let file = server.cwd().join("cam-2.secret");
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    let data2 = server.cwd().join("cam-2");
    let _agent2 = spawn_agent(&server, &data2, &["--id", "cam-2", "--secret-file", file.to_str().unwrap()]);
    server.wait_connected(&["cam-1", "cam-2"]);

    // Adding an existing id fails and changes nothing.
    let before = devices_json(&server, &["show", "cam-1"]);
    let out = server.client("devices").args(["add", "cam-1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("device_exists"), "{}", stderr(&out));
    let after = devices_json(&server, &["show", "cam-1"]);
    assert_eq!((&after["credential"], &after["connected"]), (&before["credential"], &json!(true)));
    drop(agent);
}

#[test]
fn revoke_closes_the_session_and_the_agent_can_never_reconnect() {
    let server = Server::start();
    let data = server.cwd().join("web-1");
    let mut agent = spawn_agent(&server, &data, &["--token", AGENT, "--id", "web-1"]);
    agent.wait_for_line(EVENT, connected);
    server.wait_connected(&["web-1"]);

    let out = server.client("devices").args(["revoke", "web-1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // The session closes at once with `bye` `revoked`: the agent stops, exit 77 with advice.
    let status = agent.wait_exit(EVENT);
    assert_eq!(status.code(), Some(77), "{}", agent.stderr());
    let err = agent.stderr();
    assert!(err.contains("revoked") && err.contains("orb devices rm web-1"), "{err}");
    let detail = devices_json(&server, &["show", "web-1"]);
    assert_eq!((&detail["revoked"], &detail["connected"]), (&json!(true), &json!(false)), "{detail}");
    assert_eq!(summary(&server), json!({"known": 1, "connected": 0, "revoked": 1}));

    // Restarting changes nothing, with or without the agent token: the saved secret is refused
    // (`auth_failed`, which does not say why; retried slowly, with a hint, until giving up).
    let again = agent_cmd(&server, &data, &["--token", AGENT, "--give-up-after", "1s"]).output().unwrap();
    assert_eq!(again.status.code(), Some(77), "{}", stderr(&again));
    assert_refused_secret(&stderr(&again), &data);
    let table = stdout(&server.client("devices").output().unwrap());
    assert!(table.contains("revoked"), "{table}");
}

/// The saved secret was refused: `auth_failed` with the hint to delete the credential (a server
/// that still tells `revoked` or `device_not_found` apart stops at once with its own hint).
fn assert_refused_secret(err: &str, data: &Path) {
    let file = data.join("credentials.json").display().to_string();
    if err.contains("auth_failed") {
        assert!(err.contains("the server refused this device's secret") && err.contains(&file), "{err}");
    } else {
        assert!(err.contains("revoked") || err.contains("device_not_found"), "{err}");
        assert!(err.contains(&file), "{err}");
    }
}

#[test]
fn removing_a_connected_device_stops_its_agent_and_its_credential_is_refused_afterwards() {
    let server = Server::start();
    let data = server.cwd().join("web-1");
    let mut agent = spawn_agent(&server, &data, &["--token", AGENT, "--id", "web-1"]);
    agent.wait_for_line(EVENT, connected);
    server.wait_connected(&["web-1"]);

    let out = server.client("devices").args(["rm", "web-1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // `bye` `removed`: the agent stops at once, exit 77, saying how to enroll again.
    let status = agent.wait_exit(EVENT);
    assert_eq!(status.code(), Some(77), "{}", agent.stderr());
    let err = agent.stderr();
    assert!(err.contains("device_not_found") && err.contains("removed"), "{err}");
    assert!(err.contains(&data.join("credentials.json").display().to_string()), "{err}");
    assert_eq!(summary(&server), json!({"known": 0, "connected": 0, "revoked": 0}));

    // Started again with the old credential: refused, never registered again.
    let again = agent_cmd(&server, &data, &["--give-up-after", "1s"]).output().unwrap();
    assert_eq!(again.status.code(), Some(77), "{}", stderr(&again));
    assert_refused_secret(&stderr(&again), &data);
    assert_eq!(summary(&server), json!({"known": 0, "connected": 0, "revoked": 0}));

    // Deleting the credential, as the hint says, enrolls it again.
    std::fs::remove_file(data.join("credentials.json")).unwrap();
    let mut agent = spawn_agent(&server, &data, &["--token", AGENT, "--id", "web-1"]);
    agent.wait_for_line(EVENT, connected);
    server.wait_connected(&["web-1"]);
    stop(&mut agent);
}

#[test]
fn a_refused_secret_is_retried_slowly_with_a_hint_in_the_log() {
    let server = Server::start();
    let out = server.client("devices").args(["add", "cam-1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let data = server.cwd().join("cam-1");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("credentials.json"), r#"{"id":"cam-1","secret":"not-the-issued-secret"}"#).unwrap();

    let mut agent = spawn_agent(&server, &data, &[]);
    let file = data.join("credentials.json").display().to_string();
    let hint = "the server refused this device's secret: if the device was removed or revoked, delete";
    let line = agent.wait_for_line(EVENT, |l| l.contains("auth_failed"));
    assert!(line.contains(hint) && line.contains(&format!("{file} and enroll again")), "{line}");
    // Retried at backoff_max (200 ms here), never given up.
    agent.wait_for_line(EVENT, |l| l.contains("auth_failed") && l.contains("retry_in_ms=200"));
    stop(&mut agent);
}

#[test]
fn operator_tags_win_over_reported_ones_and_show_their_source() {
    let server = Server::start();
    let _agent = server.agent("web-1", &["role=web", "region=eu"]);
    server.wait_connected(&["web-1"]);

    let out = server.client("devices").args(["tag", "web-1", "role=db", "owner=ops"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stdout(&out).contains("operator; agent reported role=web"), "{}", stdout(&out));
    let d = devices_json(&server, &["show", "web-1"]);
    assert_eq!(d["tags"], json!({"role": "db", "region": "eu", "owner": "ops"}), "{d}");
    assert_eq!(d["reported_tags"], json!({"role": "web", "region": "eu"}), "{d}");
    assert_eq!(d["operator_tags"], json!({"role": "db", "owner": "ops"}), "{d}");
    let ids = |v: Value| v.as_array().unwrap().iter().map(|d| d["id"].clone()).collect::<Vec<_>>();
    assert_eq!(ids(devices_json(&server, &["tag:owner=ops"])), [json!("web-1")]);

    let out = server.client("devices").args(["untag", "web-1", "role"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let d = devices_json(&server, &["show", "web-1"]);
    assert_eq!(d["tags"], json!({"role": "web", "region": "eu", "owner": "ops"}), "{d}");
    assert_eq!(d["operator_tags"], json!({"owner": "ops"}), "{d}");

    // The human detail has every section.
    let out = server.client("devices").args(["show", "web-1"]).output().unwrap();
    let text = stdout(&out);
    for want in ["device web-1", "status          online", "credential", "owner=ops", "inventory", "connection "] {
        assert!(text.contains(want), "{want:?} in:\n{text}");
    }
}

#[test]
fn summary_and_connected_distinguish_known_from_connected_devices() {
    let server = Server::start();
    let mut a = server.agent("web-1", &[]);
    let _b = server.agent("web-2", &[]);
    server.wait_connected(&["web-1", "web-2"]);
    stop(&mut a);
    server.wait_disconnected("web-1");
    let out = server.client("devices").args(["add", "db-1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    assert_eq!(summary(&server), json!({"known": 3, "connected": 1, "revoked": 0}));
    let out = server.client("devices").arg("--summary").output().unwrap();
    assert_eq!(stdout(&out).trim(), "known 3, connected 1 (revoked 0)");
    let all = devices_json(&server, &[]);
    let status: Vec<(String, bool)> =
        all.as_array().unwrap().iter().map(|d| (d["id"].as_str().unwrap().into(), d["connected"] == true)).collect();
    assert_eq!(status, [("db-1".into(), false), ("web-1".into(), false), ("web-2".into(), true)]);
    let web1 = &all[1];
    assert!(chrono::DateTime::parse_from_rfc3339(web1["last_seen"].as_str().unwrap()).is_ok(), "{web1}");
    let only = devices_json(&server, &["--connected"]);
    assert_eq!(only.as_array().unwrap().len(), 1, "{only}");
    assert_eq!(only[0]["id"], "web-2");
    let table = stdout(&server.client("devices").output().unwrap());
    assert!(table.contains("online") && table.contains("offline") && table.contains("LAST SEEN"), "{table}");
}

#[test]
fn bad_input_is_refused_clearly_and_changes_nothing() {
    let server = Server::start();
    let _agent = server.agent("web-1", &["role=web"]);
    server.wait_connected(&["web-1"]);
    let before = (summary(&server), devices_json(&server, &["show", "web-1"])["tags"].clone());

    for args in [
        vec!["show", "nope"],
        vec!["rm", "nope"],
        vec!["revoke", "nope"],
        vec!["tag", "nope", "a=b"],
        vec!["untag", "nope", "a"],
    ] {
        let out = server.client("devices").args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {}", stderr(&out));
        assert!(stderr(&out).contains("device_not_found"), "{args:?}: {}", stderr(&out));
    }
    // Malformed input is a usage error before connecting (nothing listens on port 1).
    for args in
        [vec!["tag", "web-1", "role"], vec!["tag", "web-1", "=x"], vec!["untag", "web-1", "a=b"], vec!["show", "web.1"]]
    {
        let out = common::orb_cmd(server.cwd())
            .args(["devices", "--server", "tcp://127.0.0.1:1", "--token", ADMIN])
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", stderr(&out));
    }
    let after = (summary(&server), devices_json(&server, &["show", "web-1"])["tags"].clone());
    assert_eq!(before, after);
}

#[test]
fn a_malformed_store_url_is_a_configuration_error_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = common::orb_cmd(dir.path());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--store", "mysql://orb:pw@h/db"]);
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(78), "stderr: {}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("store.url") && err.contains("sqlite:PATH or postgres://"), "{err}");
    assert!(!err.contains(":pw@"), "the password is not echoed: {err}");
    assert!(!dir.path().join("orb-data").join("orb.db").exists(), "nothing was created");

    // `orb config check` names it with the other problems.
    let file = dir.path().join("orb.toml");
    std::fs::write(&file, "[store]\nurl = \"sqlite:\"\njob_retention = \"soon\"\n").unwrap();
    let out = common::orb_cmd(dir.path()).args(["config", "check"]).arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("store.url") && text.contains("store.job_retention"), "{text}");

    // `config show --effective` hides a PostgreSQL password from the environment.
    let out = common::orb_cmd(dir.path())
        .args(["config", "show", "--effective"])
        .env("ORB_STORE__URL", "postgres://orb:pg-secret@db.example:5432/orb")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(!stdout(&out).contains("pg-secret"), "{}", stdout(&out));
    assert!(stdout(&out).contains("postgres://orb:<redacted>@db.example:5432/orb"), "{}", stdout(&out));
}

#[test]
fn bulk_changes_take_a_selector_list_with_dry_run_and_need_yes_without_a_terminal() {
    let server = Server::start();
    for id in ["cam-1", "cam-2", "cam-3", "gw-1"] {
        let out = server.client("devices").args(["add", id]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    }
    let tags = |id: &str| devices_json(&server, &["show", id])["operator_tags"].clone();

    // --dry-run lists the devices and changes nothing.
    let out = server.client("devices").args(["tag", "cam-*", "site=lab", "--dry-run"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "cam-1\ncam-2\ncam-3\n");
    assert!(stderr(&out).contains("3 device(s) match 'cam-*'; nothing was changed (would tag)"), "{}", stderr(&out));
    assert_eq!(tags("cam-1"), json!({}));

    // Tagging three devices needs no confirmation (the threshold is 10); each one is told.
    let out = server.client("devices").args(["tag", "cam-*", "site=lab", "-o", "name"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), "cam-1\ncam-2\ncam-3\n");
    for id in ["cam-1", "cam-2", "cam-3"] {
        assert_eq!(tags(id), json!({"site": "lab"}), "{id}");
    }
    assert_eq!(tags("gw-1"), json!({}));
    let out = server.client("devices").args(["untag", "tag:site=lab", "site", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json_lines(&out)[0].as_array().map(Vec::len), Some(3), "one array of the answers");
    assert_eq!(tags("cam-2"), json!({}));

    // Revoking or removing more than one device asks; without a terminal it refuses instead.
    let out = server.client("devices").args(["revoke", "cam-*"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("pass --yes"), "{}", stderr(&out));
    assert!(!devices_json(&server, &["show", "cam-1"])["revoked"].as_bool().unwrap());
    let out = server.client("devices").args(["revoke", "cam-*", "--yes"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(devices_json(&server, &["show", "cam-3"])["revoked"].as_bool().unwrap());
    let out = server.client("devices").args(["rm", "cam-*", "-y"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().count(), 3, "{}", stdout(&out));
    let left: Vec<Value> = server.devices().iter().map(|d| d["id"].clone()).collect();
    assert_eq!(left, [json!("gw-1")]);

    // One id needs no confirmation; a selector that matches nothing fails (exit 1).
    let out = server.client("devices").args(["rm", "gw-1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = server.client("devices").args(["rm", "cam-*", "--yes"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("no device matches 'cam-*'"), "{}", stderr(&out));
    let out = server.client("devices").args(["rm", "gw-1"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "an unknown id is the server's device_not_found: {}", stderr(&out));
}

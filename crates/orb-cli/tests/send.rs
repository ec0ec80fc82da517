//! End-to-end tests of `orb send`: a real `orb serve` and real `orb agent` processes on
//! 127.0.0.1, the operator command run as a one-shot process.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Server, assert_result_shape, assert_summary_shape, json_lines, stderr, stdout};
use serde_json::{Value, json};

/// A server with `web-1` (role=web) and `db-1` (role=db), both connected.
fn two_agents() -> (Server, Vec<common::Proc>) {
    let server = Server::start();
    let agents = vec![server.agent("web-1", &["role=web"]), server.agent("db-1", &["role=db"])];
    server.wait_connected(&["web-1", "db-1"]);
    (server, agents)
}

#[test]
fn ping_everyone_prints_one_json_line_per_target_then_a_summary() {
    let (server, _agents) = two_agents();
    let out = server.client("send").args(["*", "ping", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 3, "stdout: {}", stdout(&out));

    let mut devices: Vec<String> = lines[..2].iter().map(assert_result_shape).collect();
    devices.sort();
    assert_eq!(devices, ["db-1", "web-1"]);
    for r in &lines[..2] {
        assert_eq!(r["status"], "ok", "{r}");
        assert_eq!(r["result"], json!({"pong": true}), "{r}");
        assert!(r["error"].is_null(), "{r}");
        assert!(r["elapsed_ms"].is_u64(), "{r}");
    }

    let summary = assert_summary_shape(&lines[2]);
    for (status, n) in &summary {
        let want = if status == "ok" { 2 } else { 0 };
        assert_eq!(n, &Value::from(want), "{status} in {}", lines[2]);
    }
}

#[test]
fn echo_returns_its_arguments_and_bare_words_become_strings() {
    let server = Server::start();
    let _agents = [
        server.agent("web-1", &["role=web"]),
        server.agent("web-3", &["role=web"]),
        server.agent("db-1", &["role=db"]),
    ];
    server.wait_connected(&["web-1", "web-3", "db-1"]);

    let echo = |args: &str| -> Value {
        let out = server
            .client("send")
            .args(["tag:role=web and not web-3", "echo", args, "--wait", "5s", "--json"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
        let lines = json_lines(&out);
        assert_eq!(lines.len(), 2, "only web-1 matches: {}", stdout(&out));
        assert_eq!(assert_result_shape(&lines[0]), "web-1");
        assert_eq!(lines[0]["status"], "ok");
        assert_eq!(assert_summary_shape(&lines[1])["ok"], 1);
        lines[0]["result"].clone()
    };

    assert_eq!(echo(r#"{"hello":"world"}"#), json!({"hello": "world"}));
    assert_eq!(echo("hello"), json!("hello"));
    assert_eq!(echo("42"), json!(42));
}

#[test]
fn human_output_is_a_table_and_a_summary() {
    let (server, _agents) = two_agents();
    let out = server.client("send").args(["web-1", "ping"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("web-1"), "{text}");
    assert!(text.contains(r#"{"pong":true}"#), "{text}");
    assert!(text.contains("1 of 1 targets answered ok"), "{text}");
    assert!(!text.contains("db-1"), "{text}");
}

#[test]
fn failures_map_to_the_documented_exit_codes() {
    let (server, _agents) = two_agents();

    // A command no agent declares: refused before anything is sent, exit 2 (a usage mistake), no result lines.
    let out = server.client("send").args(["*", "reboot", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(&out));
    assert!(stderr(&out).contains("unknown_command: no target declares command 'reboot'"), "{}", stderr(&out));
    assert!(out.stdout.is_empty(), "stdout: {}", stdout(&out));

    // Every handler fails (bad arguments): exit 1, every line says error / bad_args.
    let out = server.client("send").args(["*", "sleep", "soon", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 3, "stdout: {}", stdout(&out));
    for r in &lines[..2] {
        assert_result_shape(r);
        assert_eq!(r["status"], "error", "{r}");
        assert_eq!(r["error"]["code"], "bad_args", "{r}");
        assert!(r["result"].is_null(), "{r}");
    }
    assert_eq!(assert_summary_shape(&lines[2])["error"], 2);

    // Nothing matches: exit 1 and a message.
    let out = server.client("send").args(["zzz-*", "ping"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no device matches"), "stderr: {}", stderr(&out));
    assert!(out.stdout.is_empty(), "stdout: {}", stdout(&out));

    // Usage errors: exit 2.
    let out = server.client("send").args(["web.1", "ping"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(&out));
    assert!(stderr(&out).contains("bad selector"), "{}", stderr(&out));
    let out = server.client("send").args(["*", "echo", "{bad"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(&out));
    assert!(stderr(&out).contains("JSON"), "{}", stderr(&out));
    let out = server.client("send").args(["*", "ping", "--wait", "soon"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(&out));

    // Nobody listening: exit 69.
    let out = server.client_at("send", "tcp://127.0.0.1:1").args(["*", "ping"]).output().unwrap();
    assert_eq!(out.status.code(), Some(69), "stderr: {}", stderr(&out));

    // Wrong token, or the agent token used by an operator: exit 77.
    for token in ["not-the-right-token-at-all", common::AGENT] {
        let out = common::orb_cmd(server.cwd())
            .args(["send", "--server", &server.tcp, "--token", token])
            .args(["*", "ping"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(77), "stderr: {}", stderr(&out));
    }
}

#[test]
fn dry_run_lists_matching_devices_and_sends_nothing() {
    let server = Server::start();
    let _agents = [
        server.agent("web-1", &["role=web"]),
        server.agent("web-2", &["role=web"]),
        server.agent("db-1", &["role=db"]),
    ];
    server.wait_connected(&["web-1", "web-2", "db-1"]);

    let out = server.client("send").args(["web-*", "sys.info", "--dry-run"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert_eq!(stdout(&out), "web-1\nweb-2\n");
    assert!(stderr(&out).contains("nothing was sent"), "stderr: {}", stderr(&out));

    let out = server.client("send").args(["web-*", "sys.info", "--dry-run", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let lines = json_lines(&out);
    assert_eq!(lines, [json!(["web-1", "web-2"])]);

    // A dry run that matches nothing fails like a real send would.
    let out = server.client("send").args(["zzz-*", "ping", "--dry-run", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "stderr: {}", stderr(&out));
    assert_eq!(json_lines(&out), [json!([])]);
}

#[test]
fn piped_results_are_whole_and_grouped_by_their_whole_value() {
    let server = Server::start();
    // In-process agents whose `clock` answers differ only after 80 characters.
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ids = ["a-1", "a-2", "a-3"];
    let _agents: Vec<orb_client::Client> = ids
        .iter()
        .map(|id| {
            let value = json!({"clock": format!("{}{}", "x".repeat(80), if *id == "a-3" { "b" } else { id })});
            let handlers = orb_client::Handlers::new().on("clock", move |_c: orb_client::Context| {
                let value = value.clone();
                async move { Ok(value) }
            });
            let url = orb_client::ServerUrl::parse(&server.tcp).unwrap();
            let cfg = orb_client::ClientConfig::agent(url, Some(common::AGENT.to_owned()), *id);
            rt.block_on(orb_client::Client::connect(cfg, handlers)).unwrap()
        })
        .collect();
    server.wait_connected(&ids);

    let out = server.client("send").args(["a-*", "clock", "--wait", "5s"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    let header: Vec<&str> = text.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["DEVICE", "STATUS", "ELAPSED", "RESULT", "/", "ERROR"], "{text}");
    // Three different values: three groups, each value whole (stdout is not a terminal).
    let groups: Vec<&str> = text.lines().filter(|l| l.contains(" × ")).map(str::trim).collect();
    assert_eq!(groups.len(), 3, "{text}");
    for id in ["a-1", "a-2", "b"] {
        let whole = format!(r#"1 × {{"clock":"{}{id}"}}"#, "x".repeat(80));
        assert!(groups.contains(&whole.as_str()), "{whole} in {text}");
    }
    for id in ids {
        assert!(text.lines().any(|r| r.starts_with(id) && r.split_whitespace().nth(1) == Some("ok")), "{id}: {text}");
    }
    assert!(!text.contains('…'), "nothing cut: {text}");
}

#[test]
fn output_formats_and_the_timeout_alias() {
    let (server, _agents) = two_agents();
    // YAML: one document per target, then the summary.
    let out = server.client("send").args(["*", "ping", "-o", "yaml", "--timeout", "5s"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.matches("---\n").count(), 3, "{text}");
    assert_eq!(text.matches("status: ok").count(), 2, "{text}");
    assert_eq!(text.matches("result:\n  pong: true").count(), 2, "results are YAML too: {text}");
    assert!(text.contains("summary:") && text.contains("job:"), "{text}");
    // Names: the device ids, one per line.
    let out = server.client("send").args(["*", "ping", "-o", "name"]).output().unwrap();
    let mut names: Vec<String> = stdout(&out).lines().map(String::from).collect();
    names.sort();
    assert_eq!(names, ["db-1", "web-1"]);
    // No headers: only the rows, the summary and the job line.
    let out = server.client("send").args(["web-1", "ping", "--no-headers"]).output().unwrap();
    let text = stdout(&out);
    assert!(text.starts_with("web-1 ") && !text.contains("DEVICE"), "{text}");
    // `--json` and `-o json` are the same; both together are a usage error.
    let out = server.client("send").args(["web-1", "ping", "-o", "json"]).output().unwrap();
    assert_eq!(json_lines(&out).len(), 2);
    let out = server.client("send").args(["web-1", "ping", "-o", "json", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(&out));
    let out = server.client("send").args(["web-1", "ping", "--timeout", "soon"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(&out));
}

#[test]
fn async_prints_the_job_id_and_jobs_wait_follows_it_to_the_end() {
    let (server, _agents) = two_agents();
    // A job still running when `jobs wait` starts: web-1 sleeps, db-1 does not know `sleep`...
    let out = server.client("send").args(["*", "sleep", "1500", "--async", "--wait", "20s"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let job = stdout(&out).trim().to_owned();
    assert_eq!(job.len(), 36, "the full job id alone: {job}");
    assert!(stderr(&out).contains(&format!("orb jobs wait {job}")), "{}", stderr(&out));

    let out = server.client("jobs").args(["wait", &job[..13], "--json"]).output().unwrap();
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 3, "two results, then the summary: {}", stdout(&out));
    let summary = assert_summary_shape(&lines[2]);
    assert_eq!(lines[2]["job"], job.as_str());
    let ok = summary["ok"].as_u64().unwrap();
    // `orb send`'s exit code: 0 only when every target answered ok.
    assert_eq!(out.status.code(), Some(if ok == 2 { 0 } else { 1 }), "{}", stdout(&out));
    assert_eq!(ok, 2, "both agents sleep: {}", stdout(&out));

    // `show --follow` of a finished job prints it all at once, in the table form.
    let out = server.client("jobs").args(["show", &job, "--follow"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains(&format!("job {job}: 2 of 2 targets answered ok")), "{text}");
    // `--async --json` prints what the server accepted.
    let out = server.client("send").args(["web-1", "ping", "--async", "--json"]).output().unwrap();
    let accepted = &json_lines(&out)[0];
    assert_eq!(accepted["targets"], json!(["web-1"]), "{accepted}");
    assert!(accepted["job"].is_string() && accepted["deadline_ms"].is_u64(), "{accepted}");
}

//! End to end: the `exec` built-in of `orb agent` with an `[exec]` configuration, through a real
//! `orb serve` and `orb send`: allowed and refused command lines, a failing command's result, a
//! timeout and a deadline killing the whole process group, the clean environment, the output cap,
//! and configurations refused at load.
#![allow(clippy::unwrap_used)]

mod common;

use std::process::Command;

use common::{Proc, Server, json_lines, stderr, stdout};
use serde_json::{Value, json};

/// The test agent's allow list (`sh` only here, to make a process group with children).
const CONFIG: &str = r#"[exec]
allow = ["echo *", "sh -c *", "false", "env", "id -u", "ls /nonexistent-orb", "seq *"]
max_output = 100
"#;

/// Writes `text` to `NAME.toml` in the server's folder and starts agent `id` with it as
/// `--config`, with an `ORB_TEST_*` variable (no configuration key) the commands must not see.
fn agent_with_config(server: &Server, id: &str, text: &str) -> Proc {
    let path = server.cwd().join(format!("{id}.toml"));
    std::fs::write(&path, text).unwrap();
    let agent = server.agent_with(id, |c| {
        c.arg("--config").arg(&path).env("ORB_TEST_EXEC_SECRET", "hunter2");
    });
    server.wait_connected(&[id]);
    agent
}

/// `orb send ID exec ARGS --json [EXTRA...]`: the one result line.
fn exec(server: &Server, id: &str, args: &Value, extra: &[&str]) -> Value {
    let out = server.client("send").args([id, "exec", &args.to_string(), "--json"]).args(extra).output().unwrap();
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2, "stdout: {} stderr: {}", stdout(&out), stderr(&out));
    lines[0].clone()
}

/// The ids of live processes whose command line is exactly `argv` (from /proc).
fn processes(argv: &[&str]) -> Vec<String> {
    let want: Vec<u8> = argv.iter().flat_map(|a| [a.as_bytes(), b"\0"].concat()).collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().bytes().all(|b| b.is_ascii_digit()))
        .filter(|e| std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c == want))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// The exec error's result, which `exit_status` carries as the error's `data`; its message is
/// the human text alone.
fn attached(error: &Value) -> Value {
    let message = error["message"].as_str().unwrap();
    assert!(!message.contains("result:"), "the result is data, not text: {message}");
    error["data"].clone()
}

#[test]
fn allowed_commands_run_and_answer_their_output() {
    let server = Server::start();
    let _agent = agent_with_config(&server, "dev", CONFIG);
    let r = exec(&server, "dev", &json!({"cmd": ["echo", "hi"]}), &[]);
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(
        r["result"],
        json!({"exit_code": 0, "signal": null, "stdout": "hi\n", "stderr": "", "truncated": false})
    );

    // stdin is fed; the output is capped at max_output (100) bytes per stream.
    let input = "x".repeat(150);
    let r = exec(&server, "dev", &json!({"cmd": ["sh", "-c", "cat; echo err >&2"], "stdin": input}), &[]);
    assert_eq!(r["status"], "ok", "{r}");
    assert_eq!(r["result"]["stdout"], "x".repeat(100));
    assert_eq!(r["result"]["stderr"], "err\n");
    assert_eq!(r["result"]["truncated"], true);

    // The environment holds PATH alone: nothing of the agent's (its ORB_* variables included).
    let r = exec(&server, "dev", &json!({"cmd": ["env"]}), &[]);
    assert_eq!(r["result"]["stdout"], "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n", "{r}");
}

#[test]
fn refused_and_failing_commands_answer_their_codes() {
    let server = Server::start();
    let _agent = agent_with_config(&server, "dev", CONFIG);
    let marker = server.cwd().join("ran");
    let r = exec(&server, "dev", &json!({"cmd": ["touch", marker.to_str().unwrap()]}), &[]);
    assert_eq!((&r["status"], &r["error"]["code"]), (&json!("error"), &json!("not_allowed")), "{r}");
    let r = exec(&server, "dev", &json!({"cmd": ["sh", "-x", "-c", "true"]}), &[]);
    assert_eq!(r["error"]["code"], "not_allowed", "{r}");
    assert!(!marker.exists(), "a refused command ran");

    let r = exec(&server, "dev", &json!({"cmd": ["false"]}), &[]);
    assert_eq!((&r["status"], &r["error"]["code"]), (&json!("error"), &json!("exit_status")), "{r}");
    assert_eq!(
        attached(&r["error"]),
        json!({"exit_code": 1, "signal": null, "stdout": "", "stderr": "", "truncated": false})
    );
    let args = json!({"cmd": ["ls", "/nonexistent-orb"]}).to_string();
    let out = server.client("send").args(["dev", "exec", &args, "--json"]).output().unwrap();
    let lines = json_lines(&out);
    let r = &lines[0];
    assert_eq!(r["error"]["code"], "exit_status", "{r}");
    let data = attached(&r["error"]);
    assert_eq!(data["exit_code"], 2, "{r}");
    assert!(data["stderr"].as_str().unwrap().contains("nonexistent-orb"), "{r}");
    // The job history keeps the data: `orb jobs show --json`, and the human view prints it.
    let job = lines[1]["job"].as_str().unwrap();
    let out = server.client("jobs").args(["show", job, "--json"]).output().unwrap();
    let detail: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(detail["results"][0]["error"], r["error"], "{detail}");
    let text = stdout(&server.client("jobs").args(["show", job]).output().unwrap());
    assert!(text.contains("exit_status: exec: 'ls /nonexistent-orb' exited with status 2 {"), "{text}");
    // A shape exec's schema refuses is answered before the handler runs, naming the path.
    let r = exec(&server, "dev", &json!({"cmd": ["echo"], "shell": true}), &[]);
    assert_eq!(r["error"]["code"], "invalid_args", "{r}");
    assert!(r["error"]["message"].as_str().unwrap().contains("'shell' was unexpected"), "{r}");
    let r = exec(&server, "dev", &json!({"cmd": ["echo", 3]}), &[]);
    assert_eq!(r["error"]["message"], "exec: /cmd/1: 3 is not of type \"string\"", "{r}");
    // What a schema cannot say stays the handler's own check.
    let r = exec(&server, "dev", &json!({"cmd": ["echo"], "timeout": "soon"}), &[]);
    assert_eq!(r["error"]["code"], "bad_args", "{r}");

    // An agent without [exec] does not declare exec: the server refuses the job.
    let _plain = server.agent("plain", &[]);
    server.wait_connected(&["plain"]);
    let out = server.client("send").args(["plain", "exec", r#"{"cmd":["echo","hi"]}"#, "--json"]).output().unwrap();
    assert_ne!(out.status.code(), Some(0));
    let text = format!("{}{}", stdout(&out), stderr(&out));
    assert!(text.contains("unknown_command"), "{text}");
}

#[test]
fn output_lines_stream_to_orb_send_on_stderr_when_asked() {
    let server = Server::start();
    let _agent = agent_with_config(&server, "dev", CONFIG);
    let args = json!({"cmd": ["seq", "3"]}).to_string();

    // Table output, --progress: `dev | line` on stderr, the results table on stdout.
    let out = server.client("send").args(["dev", "exec", &args, "--progress"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let err = stderr(&out);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("dev | ")).collect();
    assert_eq!(lines, ["dev | 1", "dev | 2", "dev | 3"], "stderr: {}", stderr(&out));
    assert!(!stdout(&out).contains("dev | "), "stdout stays the results: {}", stdout(&out));

    // --json --progress: JSON objects on stderr; stdout is the result and summary lines.
    let out = server.client("send").args(["dev", "exec", &args, "--json", "--progress", "on"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let progress: Vec<Value> =
        stderr(&out).lines().filter(|l| l.starts_with('{')).map(|l| serde_json::from_str(l).unwrap()).collect();
    let want: Vec<Value> =
        (1..=3).map(|n| json!({"device": "dev", "progress": {"stream": "stdout", "line": n.to_string()}})).collect();
    assert_eq!(progress, want, "stderr: {}", stderr(&out));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2, "{}", stdout(&out));
    assert_eq!(lines[0]["result"]["stdout"], "1\n2\n3\n");
    assert_eq!(lines[0]["result"]["progress_dropped"], 0, "{}", lines[0]);

    // Not a terminal and not asked (auto): nothing streamed, no progress_dropped.
    let r = exec(&server, "dev", &json!({"cmd": ["seq", "3"]}), &[]);
    assert_eq!(
        r["result"],
        json!({"exit_code": 0, "signal": null, "stdout": "1\n2\n3\n", "stderr": "", "truncated": false})
    );
    let out = server.client("send").args(["dev", "exec", &args, "--progress", "off"]).output().unwrap();
    assert!(!stderr(&out).contains("dev | "), "{}", stderr(&out));
}

#[test]
fn a_timeout_or_the_deadline_kills_the_whole_process_group() {
    let server = Server::start();
    let _agent = agent_with_config(&server, "dev", CONFIG);
    for (marker, args, extra, status) in [
        ("3017", json!({"cmd": ["sh", "-c", "sleep 3017 & sleep 3017"], "timeout": "1s"}), &[][..], "timeout"),
        ("3019", json!({"cmd": ["sh", "-c", "sleep 3019 & sleep 3019"]}), &["--wait", "1s"][..], "timeout"),
    ] {
        let r = exec(&server, "dev", &args, extra);
        assert_eq!(r["status"], status, "{r}");
        common::poll_until(&format!("no `sleep {marker}` left"), || processes(&["sleep", marker]).is_empty());
    }
}

#[test]
fn run_as_switches_user_when_the_agent_is_root() {
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout == b"0\n");
    let nobody = std::fs::read_to_string("/etc/passwd").is_ok_and(|p| p.lines().any(|l| l.starts_with("nobody:")));
    if !root || !nobody {
        eprintln!("skipped: needs root and a nobody user");
        return;
    }
    let server = Server::start();
    let _agent = agent_with_config(&server, "dev", &format!("{CONFIG}run_as = \"nobody\"\n"));
    let r = exec(&server, "dev", &json!({"cmd": ["id", "-u"]}), &[]);
    assert_eq!(r["status"], "ok", "{r}");
    let uid = std::fs::read_to_string("/etc/passwd")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("nobody:").and_then(|r| r.split(':').nth(1)).map(str::to_owned))
        .unwrap();
    assert_eq!(r["result"]["stdout"], format!("{uid}\n"));
}

#[test]
fn a_bad_exec_section_stops_the_agent_with_78_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for (text, says) in [
        (
            "[exec]\nallow = [\"echo *\"]\nrun_as = \"no-such-user-orb\"\n",
            "'exec.run_as' = \"no-such-user-orb\": no such user",
        ),
        ("[exec]\nallow = [\"echo *\", \"\"]\n", "'exec.allow' entry 1"),
        ("[exec]\nallow = [\"* -s\"]\n", "'exec.allow' entry 0: '* -s'"),
        ("[exec]\nallow = [\"ls -l*\"]\n", "'-l*'"),
    ] {
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, text).unwrap();
        let out =
            common::agent_cmd(dir.path(), "tcp://127.0.0.1:9", "dev").arg("--config").arg(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(78), "{text}: {}", stderr(&out));
        assert!(stderr(&out).contains(says), "{text}: {}", stderr(&out));
    }
}

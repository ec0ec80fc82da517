//! End-to-end tests of the job history from the binary: `orb jobs` / `orb jobs show --json`
//! after a send (the same per-target objects as `orb send --json`), id prefixes, `orb jobs cancel`
//! stopping a running `sleep` on the agent, and Ctrl-C during `orb send` (detach, then cancel).
#![allow(clippy::unwrap_used)]

mod common;

use common::{Background, EVENT, Proc, Server, json_lines, send_signal, stderr, stdout};
use serde_json::{Value, json};

fn jobs_json(server: &Server, args: &[&str]) -> Value {
    let out = server.client("jobs").args(args).arg("--json").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "jobs {args:?}: {}", stderr(&out));
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "one JSON value: {}", stdout(&out));
    lines.into_iter().next().unwrap()
}

fn by_device(mut v: Vec<Value>) -> Vec<Value> {
    v.sort_by(|a, b| a["device"].as_str().cmp(&b["device"].as_str()));
    v
}

#[test]
fn jobs_lists_a_sent_job_and_show_gives_the_same_results_as_send() {
    let server = Server::start();
    let _agents = [server.agent("web-1", &[]), server.agent("web-2", &[])];
    server.wait_connected(&["web-1", "web-2"]);

    let out = server.client("send").args(["*", "echo", r#"{"n":1}"#, "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let mut lines = json_lines(&out);
    let summary = lines.pop().unwrap();
    let job = summary["job"].as_str().unwrap().to_owned();
    let out = server.client("send").args(["web-1", "sleep", "soon"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    let list = jobs_json(&server, &[]);
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 2, "{list:?}");
    let first = &list[1];
    assert_eq!(first["id"], job.as_str(), "newest first: {list:?}");
    assert_eq!((&first["command"], &first["selector"], &first["state"]), (&json!("echo"), &json!("*"), &json!("done")));
    assert_eq!(first["args"], json!({"n": 1}));
    assert_eq!(first["targets"], 2);
    assert_eq!(first["summary"], summary["summary"], "{first}");
    for key in ["created_at", "deadline_at", "finished_at"] {
        assert!(chrono::DateTime::parse_from_rfc3339(first[key].as_str().unwrap()).is_ok(), "{key}: {first}");
    }
    assert_eq!(jobs_json(&server, &["--limit", "1"]).as_array().unwrap().len(), 1);

    // By a unique prefix: one object whose results are the lines `orb send --json` printed.
    let prefix = &job[..job.len() - 4];
    let detail = jobs_json(&server, &["show", prefix]);
    assert_eq!(common::keys(&detail), ["job", "pending", "results"]);
    assert_eq!(detail["job"], *first);
    assert_eq!(by_device(detail["results"].as_array().unwrap().clone()), by_device(lines));
    assert_eq!(detail["pending"], json!([]));

    // The human forms.
    let text = stdout(&server.client("jobs").output().unwrap());
    assert!(text.contains("echo") && text.contains("sleep"), "{text}");
    // Piped: plain columns, the short ids first, each a prefix that names one job.
    let short: Vec<String> =
        text.lines().skip(1).filter_map(|l| l.split_whitespace().next()).map(String::from).collect();
    assert_eq!(short.len(), 2, "{text}");
    for s in &short {
        let detail = jobs_json(&server, &["show", s]);
        assert!(detail["job"]["id"].as_str().unwrap().starts_with(s.as_str()), "{s}: {detail}");
    }
    let names = stdout(&server.client("jobs").args(["-o", "name"]).output().unwrap());
    assert_eq!(names.lines().nth(1), Some(job.as_str()), "-o name prints full ids: {names}");
    let text = stdout(&server.client("jobs").args(["show", &job]).output().unwrap());
    for want in [format!("job {job}"), r#"{"n":1}"#.to_owned(), "web-2".to_owned(), "2 × ".to_owned()] {
        assert!(text.contains(&want), "{want:?} in:\n{text}");
    }

    // A prefix shared by both jobs is ambiguous (the message lists them); an unknown one is not found.
    for (id, code) in [("0", "ambiguous_id"), ("ffffffff", "job_not_found")] {
        let out = server.client("jobs").args(["show", id]).output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{id}: {}", stderr(&out));
        assert!(stderr(&out).contains(code), "{id}: {}", stderr(&out));
    }
    let out = server.client("jobs").args(["show", "0"]).output().unwrap();
    assert!(stderr(&out).contains(&job), "the candidates are listed: {}", stderr(&out));
}

/// Starts `orb send * sleep 15000` in the background and returns it once the agent runs it, with
/// the job id (the newest running job).
fn start_sleep_job(server: &Server, agent: &mut Proc) -> (Background, String) {
    let send = Background::start("orb send sleep", {
        let mut c = server.client("send");
        c.args(["*", "sleep", "15000", "--wait", "18s", "--json"]);
        c
    });
    agent.wait_for_line(EVENT, |l| l.contains("frame") && l.contains("cmd=\"sleep\""));
    let list = jobs_json(server, &[]);
    let job = list.as_array().unwrap().iter().find(|j| j["state"] == "running").unwrap_or_else(|| panic!("{list}"));
    (send, job["id"].as_str().unwrap().to_owned())
}

#[test]
fn cancel_stops_the_running_handler_and_marks_the_target_cancelled() {
    let server = Server::start();
    let mut agent = server.agent_with("web-1", |c| {
        c.env("ORB_LOG", "info,orb_client=debug,orb_io::transport=trace");
    });
    server.wait_connected(&["web-1"]);
    let (send, job) = start_sleep_job(&server, &mut agent);

    let out = server.client("jobs").args(["cancel", &job[..job.len() - 2], "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(json_lines(&out), [json!({"job": job, "cancelled": ["web-1"]})]);
    // The agent's running handler was told.
    let line = agent.wait_for_line(EVENT, |l| l.contains("cancel received"));
    assert!(line.contains("found=true") && line.contains(&job), "{line}");

    // The waiting requester sees the target cancelled.
    let out = send.wait();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let lines = json_lines(&out);
    assert_eq!(lines[0]["status"], "cancelled", "{}", stdout(&out));
    assert_eq!(lines[1]["summary"]["cancelled"], 1, "{}", stdout(&out));
    let detail = jobs_json(&server, &["show", &job]);
    assert_eq!(detail["job"]["state"], "cancelled", "{detail}");
    assert_eq!(detail["results"][0]["status"], "cancelled", "{detail}");

    // Nothing is left to cancel.
    let out = server.client("jobs").args(["cancel", &job]).output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("job_finished"), "{}", stderr(&out));
    // The handler stopped: a drain does not wait out its grace period for a 15 s sleep.
    send_signal(agent.pid(), "TERM");
    assert!(agent.wait_exit(EVENT).success());
    assert!(!agent.stderr().contains("grace period over"), "{}", agent.stderr());
}

/// `orb send * sleep 15000` as a child with stdout and stderr read line by line; returns once
/// the job was accepted (a debug line) and the agent runs it.
fn interactive_send(server: &Server, agent: &mut Proc, json: bool) -> (Proc, common::StdoutLines) {
    let mut cmd = common::orb(server.cwd());
    cmd.args(["send", "--server", &server.tcp, "--token", common::ADMIN, "*", "sleep", "15000", "--wait", "18s"]);
    if json {
        cmd.arg("--json");
    }
    cmd.env("ORB_LOG", "orb=debug");
    let (mut send, out) = Proc::with_stdout("orb send", cmd);
    send.wait_for_line(EVENT, |l| l.contains("job accepted"));
    agent.wait_for_line(EVENT, |l| l.contains("frame") && l.contains("cmd=\"sleep\""));
    (send, out)
}

#[test]
fn ctrl_c_detaches_and_the_job_keeps_running() {
    let server = Server::start();
    let mut agent = server.agent_with("web-1", |c| {
        c.env("ORB_LOG", "info,orb_io::transport=trace");
    });
    server.wait_connected(&["web-1"]);
    let (mut send, out) = interactive_send(&server, &mut agent, false);

    send_signal(send.pid(), "INT");
    let line = send.wait_for_line(EVENT, |l| l.starts_with("detached from job"));
    let id = out.next(EVENT).unwrap();
    assert!(line.contains(&format!("orb jobs show {id}")) && line.contains("within 3 s"), "{line}");
    // No second Ctrl-C: it exits 130 after the 3 s window, the job still running.
    assert_eq!(send.wait_exit(EVENT).code(), Some(130), "{}", send.stderr());
    assert_eq!(out.rest(EVENT), Vec::<String>::new(), "only the id on stdout");
    let detail = jobs_json(&server, &["show", &id]);
    assert_eq!(detail["job"]["state"], "running", "{detail}");
    assert_eq!(detail["pending"], json!(["web-1"]), "{detail}");
    let out = server.client("jobs").args(["cancel", &id]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

#[test]
fn a_second_ctrl_c_cancels_the_detached_job() {
    let server = Server::start();
    let mut agent = server.agent_with("web-1", |c| {
        c.env("ORB_LOG", "info,orb_io::transport=trace");
    });
    server.wait_connected(&["web-1"]);
    let (mut send, out) = interactive_send(&server, &mut agent, true);

    send_signal(send.pid(), "INT");
    let detached: Value = serde_json::from_str(&out.next(EVENT).unwrap()).unwrap();
    assert_eq!(detached["detached"], true, "{detached}");
    let id = detached["job"].as_str().unwrap().to_owned();
    send.wait_for_line(EVENT, |l| l.starts_with("detached from job"));
    send_signal(send.pid(), "INT");
    let cancelled: Value = serde_json::from_str(&out.next(EVENT).unwrap()).unwrap();
    assert_eq!(cancelled, json!({"job": id, "cancelled": ["web-1"]}));
    assert_eq!(send.wait_exit(EVENT).code(), Some(130), "{}", send.stderr());
    let detail = jobs_json(&server, &["show", &id]);
    assert_eq!(detail["job"]["state"], "cancelled", "{detail}");
}

#[test]
fn a_third_ctrl_c_exits_at_once_while_the_cancel_waits_for_an_answer() {
    let server = Server::start();
    let mut agent = server.agent_with("web-1", |c| {
        c.env("ORB_LOG", "info,orb_io::transport=trace");
    });
    server.wait_connected(&["web-1"]);
    let (mut send, out) = interactive_send(&server, &mut agent, false);

    send_signal(send.pid(), "INT");
    send.wait_for_line(EVENT, |l| l.starts_with("detached from job"));
    let id = out.next(EVENT).unwrap();
    // A server that does not answer: the cancel call would wait up to 15 s.
    send_signal(server.proc.pid(), "STOP");
    send_signal(send.pid(), "INT");
    send.wait_for_line(EVENT, |l| l.starts_with("cancelling job"));
    let asked = std::time::Instant::now();
    send_signal(send.pid(), "INT");
    let status = send.wait_exit(EVENT);
    let took = asked.elapsed();
    send_signal(server.proc.pid(), "CONT");
    assert_eq!(status.code(), Some(130), "{}", send.stderr());
    assert!(took < std::time::Duration::from_secs(3), "exited after {took:?}: {}", send.stderr());
    assert!(send.stderr().contains(&format!("orb jobs cancel {id}")), "{}", send.stderr());
}

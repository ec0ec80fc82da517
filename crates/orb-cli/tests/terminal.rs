//! The operator CLI in a terminal: commands run in a pseudo-terminal (rexpect), as a person
//! sees them — rows as results arrive under a progress line with the job id and the time left,
//! colour, bordered tables, a confirmation prompt — and the same commands piped.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{Server, stderr, stdout};
use rexpect::process::WaitStatus;
use serde_json::json;
use tokio::sync::Notify;

/// How long the terminal session waits for each expected text.
const EXPECT_MS: u64 = 20_000;

/// In-process agents `p-1` (answers `work` at once) and `p-2` (answers when `release` is notified).
fn agents(server: &Server, rt: &tokio::runtime::Runtime, release: &Arc<Notify>) -> Vec<orb_client::Client> {
    ["p-1", "p-2"]
        .into_iter()
        .map(|id| {
            let release = Arc::clone(release);
            let handlers = orb_client::Handlers::new().on("work", move |_c: orb_client::Context| {
                let release = Arc::clone(&release);
                async move {
                    if id == "p-2" {
                        release.notified().await;
                    }
                    Ok(json!({"done": id}))
                }
            });
            let url = orb_client::ServerUrl::parse(&server.tcp).unwrap();
            let cfg = orb_client::ClientConfig::agent(url, Some(common::AGENT.to_owned()), id);
            rt.block_on(orb_client::Client::connect(cfg, handlers)).unwrap()
        })
        .collect()
}

/// `orb ARGS` in a pseudo-terminal of 120 columns (set with `stty`, as a terminal window would).
fn in_terminal(server: &Server, args: &[&str]) -> rexpect::session::PtySession {
    let mut cmd = common::orb(server.cwd());
    let program = cmd.get_program().to_owned();
    cmd = {
        let mut sh = std::process::Command::new("sh");
        sh.current_dir(server.cwd()).envs(cmd.get_envs().filter_map(|(k, v)| v.map(|v| (k, v))));
        for (k, v) in cmd.get_envs() {
            if v.is_none() {
                sh.env_remove(k);
            }
        }
        sh.args(["-c", "stty cols 120 rows 40 && exec \"$0\" \"$@\""]).arg(program);
        sh
    };
    cmd.args(args).args(["--server", &server.tcp, "--token", common::ADMIN]);
    cmd.env_remove("NO_COLOR").env("TERM", "xterm");
    rexpect::session::spawn_command(cmd, Some(EXPECT_MS)).unwrap()
}

/// `s` as the terminal session reads it: one char per byte.
fn raw(s: &str) -> String {
    s.bytes().map(char::from).collect()
}

fn exit_code(session: &rexpect::session::PtySession) -> i32 {
    match session.process().wait().unwrap() {
        WaitStatus::Exited(_, code) => code,
        other => panic!("not a normal exit: {other:?}"),
    }
}

#[test]
fn send_in_a_terminal_shows_rows_as_they_arrive_under_a_progress_line() {
    let server = Server::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let release = Arc::new(Notify::new());
    let _agents = agents(&server, &rt, &release);
    server.wait_connected(&["p-1", "p-2"]);

    let mut send = in_terminal(&server, &["send", "p-*", "work", "--wait", "60s"]);
    // p-1's row, its status in green, while p-2 is still working...
    send.exp_string("p-1").unwrap();
    send.exp_string("\x1b[32mok\x1b[0m").unwrap();
    send.exp_string(r#"{"done":"p-1"}"#).unwrap();
    // ...and the progress line: answers so far, the job id, the time left.
    let (_, progress) = send.exp_regex(r"1/2 answered  job [0-9a-f-]{36}  \d+s left").unwrap();
    let job = progress.split_whitespace().nth(3).unwrap().to_owned();
    release.notify_one();
    send.exp_string(r#"{"done":"p-2"}"#).unwrap();
    send.exp_string(&format!("job {job}: 2 of 2 targets answered ok")).unwrap();
    send.exp_eof().unwrap();
    assert_eq!(exit_code(&send), 0);

    // The same command piped: rows, summary and job line only; no colour, no progress.
    release.notify_one(); // p-2 answers the next `work` at once
    let out = server.client("send").args(["p-*", "work", "--wait", "60s"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    assert!(!text.contains('\x1b') && !stderr(&out).contains("answered  job"), "{text}");
    assert_eq!(text.lines().filter(|l| l.starts_with("p-")).count(), 2, "{text}");
    assert!(text.lines().last().unwrap().contains("2 of 2 targets answered ok"), "{text}");
}

#[test]
fn tables_have_borders_and_colour_in_a_terminal_and_bulk_changes_ask_first() {
    let server = Server::start();
    for id in ["cam-1", "cam-2", "cam-3"] {
        let out = server.client("devices").args(["add", id]).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    }
    let mut devices = in_terminal(&server, &["devices"]);
    devices.exp_string(&raw("│")).unwrap();
    devices.exp_string("cam-1").unwrap();
    devices.exp_string("offline").unwrap();
    devices.exp_eof().unwrap();
    assert_eq!(exit_code(&devices), 0);

    // Removing three devices asks; "n" changes nothing, "y" removes them.
    let mut rm = in_terminal(&server, &["devices", "rm", "cam-*"]);
    rm.exp_string("3 devices match 'cam-*' (cam-1, cam-2, cam-3). Remove them all? [y/N]").unwrap();
    rm.send_line("n").unwrap();
    rm.exp_string("nothing was changed").unwrap();
    rm.exp_eof().unwrap();
    assert_eq!(exit_code(&rm), 1);
    assert_eq!(server.devices().len(), 3);
    let mut rm = in_terminal(&server, &["devices", "rm", "cam-*"]);
    rm.exp_string("[y/N]").unwrap();
    rm.send_line("y").unwrap();
    rm.exp_string("device cam-3 removed").unwrap();
    rm.exp_eof().unwrap();
    assert_eq!(exit_code(&rm), 0);
    assert_eq!(server.devices().len(), 0);
}

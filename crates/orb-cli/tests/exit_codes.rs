//! End-to-end tests of the exit codes `orb --help` and the README document, sub-command by
//! sub-command: 2 usage, 69 unreachable, 75 data folder in use, 77 refused, 78 configuration.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::Output;

use common::{ADMIN, Server, agent_cmd, free_port, orb, orb_cmd, stderr, stdout};

/// Every client sub-command, with valid arguments; `--server` and `--token` are added per test.
const CLIENT_COMMANDS: &[&[&str]] = &[
    &["send", "*", "ping"],
    &["devices"],
    &["devices", "show", "web-1"],
    &["devices", "add", "gw-7"],
    &["devices", "rm", "web-1"],
    &["devices", "revoke", "web-1"],
    &["devices", "tag", "web-1", "rack=3"],
    &["devices", "untag", "web-1", "rack"],
    &["jobs"],
    &["jobs", "show", "0198c2f1"],
    &["jobs", "cancel", "0198c2f1"],
    &["signal", "PING"],
];

/// Asserts `out` exited with `code`, showing what the command printed otherwise.
fn assert_code(out: &Output, code: i32, what: &str) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "{what}: expected exit {code}\nstdout: {}\nstderr: {}",
        stdout(out),
        stderr(out)
    );
}

/// `orb ARGS --server URL --token TOKEN` in `cwd`.
fn client(cwd: &Path, args: &[&str], url: &str, token: &str) -> Output {
    orb_cmd(cwd).args(args).args(["--server", url, "--token", token]).output().unwrap()
}

#[test]
fn client_commands_exit_69_when_the_server_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    // Bound, then released: nothing listens there (tcp and ws alike).
    let port = free_port();
    for url in [format!("tcp://127.0.0.1:{port}"), format!("ws://127.0.0.1:{port}/v1/ws")] {
        for args in CLIENT_COMMANDS {
            let out = client(dir.path(), args, &url, ADMIN);
            let what = format!("orb {} --server {url}", args.join(" "));
            assert_code(&out, 69, &what);
            assert!(stderr(&out).contains("cannot reach"), "{what}: {}", stderr(&out));
            assert!(stdout(&out).is_empty(), "{what} printed a result: {}", stdout(&out));
        }
    }
}

#[test]
fn client_commands_exit_77_when_the_token_is_refused_and_78_when_the_token_file_is_unreadable() {
    let server = Server::start();
    for args in CLIENT_COMMANDS {
        let what = format!("orb {} --token wrong", args.join(" "));
        let out = client(server.cwd(), args, &server.tcp, "wrong-token-0123456789");
        assert_code(&out, 77, &what);
        assert!(stderr(&out).contains("auth_failed"), "{what}: {}", stderr(&out));

        let what = format!("orb {} --token-file missing", args.join(" "));
        let out = orb_cmd(server.cwd())
            .args(*args)
            .args(["--server", &server.tcp, "--token-file", "no-such-token-file"])
            .output()
            .unwrap();
        assert_code(&out, 78, &what);
        assert!(stderr(&out).contains("no-such-token-file"), "{what}: {}", stderr(&out));
    }
    // Nothing was changed by the refused commands.
    assert!(server.devices().is_empty(), "devices: {:?}", server.devices());
}

#[test]
fn client_commands_exit_2_on_bad_usage_and_change_nothing() {
    let server = Server::start();
    let _agent = server.agent("web-1", &["role=web"]);
    server.wait_connected(&["web-1"]);
    let bad: &[&[&str]] = &[
        &["send", "*", "ping", "--frobnicate"],
        &["send", "web-1 and (", "ping"],
        &["send", "*", "echo", "{not json"],
        &["send", "*", "ping", "--wait", "0s"],
        &["send", "*"],
        &["devices", "--frobnicate"],
        &["devices", "web-1 and ("],
        &["devices", "--summary", "web-*"],
        &["devices", "show"],
        &["devices", "show", "bad/id"],
        &["devices", "add", "gw-7", "--tag", "no-equals-sign"],
        &["devices", "tag", "web-1", "no-equals-sign"],
        &["devices", "untag", "web-1"],
        &["jobs", "--frobnicate"],
        &["jobs", "--limit", "0"],
        &["jobs", "show"],
        &["jobs", "cancel"],
        &["jobs", "frobnicate"],
        &["signal", "FROBNICATE"],
        &["signal", "PING", "no-equals-sign"],
        &["signal"],
    ];
    for args in bad {
        let out = client(server.cwd(), args, &server.tcp, ADMIN);
        let what = format!("orb {}", args.join(" "));
        assert_code(&out, 2, &what);
        assert!(stderr(&out).contains("error:"), "{what}: {}", stderr(&out));
    }
    // A server URL orb cannot use is a usage error too, for every client command.
    for args in CLIENT_COMMANDS {
        let out = client(server.cwd(), args, "http://127.0.0.1:1", ADMIN);
        let what = format!("orb {} --server http://...", args.join(" "));
        assert_code(&out, 2, &what);
        assert!(stderr(&out).contains("tcp://, tls://, ws:// or wss://"), "{what}: {}", stderr(&out));
    }

    // Nothing was sent, added, tagged or removed.
    let out = client(server.cwd(), &["jobs", "--json"], &server.tcp, ADMIN);
    assert_code(&out, 0, "orb jobs --json");
    assert_eq!(stdout(&out).trim(), "[]", "no job was created");
    let devices = server.devices();
    assert_eq!(devices.len(), 1, "devices: {devices:?}");
    assert_eq!(devices[0]["id"], "web-1");
    assert_eq!(devices[0]["connected"], true);
    assert_eq!(devices[0]["tags"], serde_json::json!({"role": "web"}), "tags unchanged");
}

/// A configuration file with an unknown key and a wrongly typed one.
fn bad_config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("bad.toml");
    std::fs::write(&path, "[server]\nbogus = 1\n[agent]\nbackoff_min = 5\n").unwrap();
    path
}

#[test]
fn a_bad_configuration_file_exits_78_for_serve_agent_and_config_check() {
    let dir = tempfile::tempdir().unwrap();
    let bad = bad_config(dir.path());
    let runs = [
        ("orb serve --config bad.toml", vec!["serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0"]),
        ("orb agent --config bad.toml", vec!["agent", "--id", "web-1", "--give-up-after", "1s"]),
        ("orb config show --config bad.toml", vec!["config", "show"]),
    ];
    for (what, args) in runs {
        let out = orb_cmd(dir.path()).args(&args).arg("--config").arg(&bad).output().unwrap();
        assert_code(&out, 78, what);
        assert!(stderr(&out).contains("server.bogus"), "{what}: {}", stderr(&out));
    }

    // Flags of serve and agent are the top layer of the configuration: a bad value there is a
    // configuration error too, reported with the file's problems.
    let runs = [
        ("orb serve --listen garbage", vec!["serve", "--listen", "garbage", "--http", "127.0.0.1:0"], "server.listen"),
        ("orb agent --id 'bad id'", vec!["agent", "--id", "bad id"], "agent.id"),
        (
            "orb agent --server http://...",
            vec!["agent", "--id", "web-1", "--server", "http://127.0.0.1:1"],
            "agent.server",
        ),
    ];
    for (what, args, key) in runs {
        let out = orb_cmd(dir.path()).args(&args).arg("--config").arg(&bad).output().unwrap();
        assert_code(&out, 78, what);
        let err = stderr(&out);
        assert!(err.contains(key) && err.contains("server.bogus"), "{what}: {err}");
    }
    assert!(!dir.path().join("orb-data").exists() && !dir.path().join("orb-agent").exists(), "nothing was created");

    let out = orb_cmd(dir.path()).args(["config", "check"]).arg(&bad).output().unwrap();
    assert_code(&out, 78, "orb config check bad.toml");
    let report = stdout(&out);
    assert!(report.contains("server.bogus") && report.contains("agent.backoff_min"), "every problem: {report}");
    let out = orb_cmd(dir.path()).args(["config", "check", "no-such-file.toml"]).output().unwrap();
    assert_code(&out, 78, "orb config check no-such-file.toml");

    // The commented default configuration checks clean.
    let out = orb_cmd(dir.path()).args(["config", "default"]).output().unwrap();
    assert_code(&out, 0, "orb config default");
    let good = dir.path().join("good.toml");
    std::fs::write(&good, &out.stdout).unwrap();
    let out = orb_cmd(dir.path()).args(["config", "check"]).arg(&good).output().unwrap();
    assert_code(&out, 0, "orb config check good.toml");
}

#[test]
fn a_second_server_or_agent_on_the_same_data_folder_exits_75() {
    let server = Server::start();
    let data = server.cwd().join("server-data");
    let out = orb_cmd(server.cwd())
        .args(["serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--data"])
        .arg(&data)
        .output()
        .unwrap();
    assert_code(&out, 75, "a second orb serve on the same data folder");
    assert!(stderr(&out).contains("data folder"), "{}", stderr(&out));

    let _first = server.agent("web-1", &[]);
    server.wait_connected(&["web-1"]);
    let mut second = agent_cmd(server.cwd(), &server.tcp, "web-1");
    second.args(["--give-up-after", "5s"]);
    let out = assert_cmd::Command::from_std(second).timeout(common::ONE_SHOT).output().unwrap();
    assert_code(&out, 75, "a second orb agent on the same data folder");
    assert!(stderr(&out).contains("another agent is running"), "{}", stderr(&out));
}

#[test]
fn serve_exits_69_when_it_cannot_listen() {
    let dir = tempfile::tempdir().unwrap();
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = orb_cmd(dir.path())
        .args(["serve", "--listen", &addr, "--http", "127.0.0.1:0", "--data", "server-data"])
        .output()
        .unwrap();
    assert_code(&out, 69, "orb serve on a port in use");
    assert!(stderr(&out).contains(&addr), "{}", stderr(&out));
}

#[test]
fn agent_gives_up_with_69_when_unreachable_and_77_when_refused() {
    let dir = tempfile::tempdir().unwrap();
    let closed = format!("tcp://127.0.0.1:{}", free_port());
    let mut cmd = agent_cmd(dir.path(), &closed, "web-1");
    cmd.args(["--give-up-after", "300ms"]);
    let out = assert_cmd::Command::from_std(cmd).timeout(common::ONE_SHOT).output().unwrap();
    assert_code(&out, 69, "orb agent --give-up-after against a closed port");
    assert!(stderr(&out).contains("cannot reach"), "{}", stderr(&out));

    let server = Server::start();
    let mut cmd = orb(server.cwd());
    cmd.args(["agent", "--server", &server.tcp, "--token", "wrong-token-0123456789", "--id", "web-2"])
        .arg("--data")
        .arg(server.agent_data("web-2"))
        .args(["--give-up-after", "300ms"])
        .envs(common::FAST_BACKOFF);
    let out = assert_cmd::Command::from_std(cmd).timeout(common::ONE_SHOT).output().unwrap();
    assert_code(&out, 77, "orb agent with a wrong token");
    assert!(stderr(&out).contains("auth_failed"), "{}", stderr(&out));
}

#[test]
fn serve_and_agent_exit_2_on_bad_usage() {
    let dir = tempfile::tempdir().unwrap();
    let bad: &[&[&str]] = &[
        &["serve", "--frobnicate"],
        &["serve", "--group", "no-equals-sign"],
        &["agent", "--frobnicate"],
        &["agent", "--id", "web-1", "--tag", "no-equals-sign"],
        &["agent", "--give-up-after", "soon"],
        &["config", "check"],
        &["config", "frobnicate"],
        &["man", "frobnicate"],
        &["man", "--out", "pages", "send"],
        &["completions", "tcsh"],
        &["demo", "--agents", "2"],
        &["frobnicate"],
    ];
    for args in bad {
        let out = orb_cmd(dir.path()).args(*args).output().unwrap();
        let what = format!("orb {}", args.join(" "));
        assert_code(&out, 2, &what);
        assert!(stderr(&out).contains("error:"), "{what}: {}", stderr(&out));
    }
    // Nothing was started or written: no data folder, no agent folder, no pages.
    let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert!(left.is_empty(), "files left behind: {left:?}");
}

#[test]
fn a_closed_stdout_exits_141_without_a_panic() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["completions", "bash"][..], &["man"], &["man", "send"], &["config", "default"], &["--help"]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let mut cmd = orb(dir.path());
        cmd.args(args).stdout(writer).stderr(std::process::Stdio::piped());
        let out = cmd.output().unwrap();
        let what = format!("orb {} | (closed)", args.join(" "));
        if args == ["--help"] {
            // clap prints help itself; it must not panic either.
            assert!(!stderr(&out).contains("panicked"), "{what}: {}", stderr(&out));
            continue;
        }
        assert_code(&out, 141, &what);
        assert!(!stderr(&out).contains("panicked"), "{what}: {}", stderr(&out));
    }
}

//! End-to-end tests of contexts and client configuration: `orb context add|use|ls|show|rm`
//! against a real server, `send` through a context from a folder other than the server's,
//! `--context` and `ORB_CONTEXT` overriding the selection, the `[client]` section, every token
//! source named when the server refuses it (exit 77), and unknown contexts (exit 78).
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{ADMIN, Server, config_home, json_lines, orb_cmd, stderr, stdout};
use serde_json::Value;

/// A folder other than the server's, holding a right and a wrong admin token file.
struct Operator {
    dir: tempfile::TempDir,
    good: PathBuf,
    bad: PathBuf,
}

impl Operator {
    fn new() -> Operator {
        let dir = tempfile::tempdir().unwrap();
        let good = dir.path().join("admin.token");
        let bad = dir.path().join("wrong.token");
        std::fs::write(&good, format!("{ADMIN}\n")).unwrap();
        std::fs::write(&bad, "not-the-admin-token\n").unwrap();
        for f in [&good, &bad] {
            std::fs::set_permissions(f, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        Operator { dir, good, bad }
    }

    fn cwd(&self) -> &Path {
        self.dir.path()
    }

    /// `orb ARGS...` in the operator's folder.
    fn orb(&self, args: &[&str]) -> assert_cmd::Command {
        let mut c = orb_cmd(self.cwd());
        c.args(args);
        c
    }

    /// `orb context add NAME --server URL --token-file FILE`, expected to succeed.
    fn add(&self, name: &str, server: &str, token_file: &Path) {
        let out =
            self.orb(&["context", "add", name, "--server", server, "--token-file"]).arg(token_file).output().unwrap();
        assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    }
}

/// `orb send '*' ping --json EXTRA...` with `cmd`'s environment; returns the exit code, stderr
/// and the JSON lines.
fn ping(mut cmd: assert_cmd::Command, extra: &[&str]) -> (Option<i32>, String, Vec<Value>) {
    let out = cmd.args(["send", "*", "ping", "--json"]).args(extra).output().unwrap();
    let lines = if out.status.success() { json_lines(&out) } else { Vec::new() };
    (out.status.code(), stderr(&out), lines)
}

fn list(op: &Operator) -> Vec<Value> {
    let out = op.orb(&["context", "ls", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    serde_json::from_slice::<Value>(&out.stdout).unwrap().as_array().unwrap().clone()
}

#[test]
fn contexts_are_added_used_listed_and_send_goes_through_the_selected_one_from_another_folder() {
    let server = Server::start();
    let _agent = server.agent("web-1", &[]);
    server.wait_connected(&["web-1"]);
    let op = Operator::new();
    assert!(list(&op).is_empty());

    let out = op
        .orb(&["context", "add", "prod", "--server", &server.tcp, "--description", "test fleet", "--token-file"])
        .arg("admin.token")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    op.add("lab", &server.ws, &op.bad);

    // Stored privately, with the token file's absolute path and never the token.
    let file = config_home(op.cwd()).join("orb").join("contexts").join("prod.toml");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains(&op.good.display().to_string()) && !text.contains(ADMIN), "{text}");
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);

    let l = list(&op);
    assert_eq!(l.len(), 2, "{l:?}");
    assert_eq!(l[1]["name"], "prod");
    assert_eq!(l[1]["server"], server.tcp.as_str());
    assert_eq!(l[1]["description"], "test fleet");
    assert_eq!(l[1]["token_file"], op.good.display().to_string());
    assert!(l.iter().all(|c| c["current"] == false), "{l:?}");

    let out = op.orb(&["context", "use", "prod"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let l = list(&op);
    assert_eq!((l[0]["current"].clone(), l[1]["current"].clone()), (Value::Bool(false), Value::Bool(true)));
    let out = op.orb(&["context", "ls"]).output().unwrap();
    let text = stdout(&out);
    assert!(text.lines().any(|l| l.starts_with("* prod") && l.contains("test fleet")), "{text}");
    assert!(text.lines().any(|l| l.starts_with("  lab")), "{text}");

    // No flag, no variable: the selected context's server and token.
    let (code, err, lines) = ping(orb_cmd(op.cwd()), &[]);
    assert_eq!(code, Some(0), "stderr: {err}");
    assert_eq!(lines[0]["device"], "web-1");
    assert_eq!(lines[0]["result"]["pong"], true);

    let out = op.orb(&["context", "show", "--json"]).output().unwrap();
    let shown: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((shown["name"].as_str(), shown["current"].as_bool()), (Some("prod"), Some(true)));
    assert_eq!(shown["token_file_status"], "readable");
    let out = op.orb(&["context", "show", "lab"]).output().unwrap();
    assert!(stdout(&out).contains("in use       no"), "{}", stdout(&out));

    // Removing the one in use clears the selection; the other stays.
    let out = op.orb(&["context", "rm", "prod"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let l = list(&op);
    assert_eq!(l.len(), 1);
    assert_eq!(l[0]["name"], "lab");
    assert!(!config_home(op.cwd()).join("orb").join("context").exists());
}

#[test]
fn the_flag_and_orb_context_override_the_selection_and_flags_and_environment_override_the_context() {
    let server = Server::start();
    let _agent = server.agent("web-1", &[]);
    server.wait_connected(&["web-1"]);
    let op = Operator::new();
    op.add("good", &server.tcp, &op.good);
    op.add("bad", &server.tcp, &op.bad);
    let out = op.orb(&["context", "use", "bad"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));

    let (code, err, _) = ping(orb_cmd(op.cwd()), &[]);
    assert_eq!(code, Some(77), "stderr: {err}");
    assert!(err.contains("context bad (token file"), "{err}");

    let mut c = orb_cmd(op.cwd());
    c.env("ORB_CONTEXT", "good");
    assert_eq!(ping(c, &[]).0, Some(0));
    assert_eq!(ping(orb_cmd(op.cwd()), &["--context=good"]).0, Some(0));
    let mut c = orb_cmd(op.cwd());
    c.env("ORB_CONTEXT", "bad").args(["devices", "--context", "good", "--json"]);
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "the flag wins over ORB_CONTEXT: {}", stderr(&out));
    let mut c = orb_cmd(op.cwd());
    c.env("ORB_CONTEXT", "good").args(["send", "--context", "bad", "*", "ping"]);
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(77), "stderr: {}", stderr(&out));

    // Flags and variables win over the context, each setting on its own.
    assert_eq!(ping(orb_cmd(op.cwd()), &["--token", ADMIN]).0, Some(0), "--token over the context's token file");
    let mut c = orb_cmd(op.cwd());
    c.env("ORB_TOKEN_FILE", &op.good);
    assert_eq!(ping(c, &[]).0, Some(0), "ORB_TOKEN_FILE over the context's token file");
    let mut c = orb_cmd(op.cwd());
    c.env("ORB_CONTEXT", "good").env("ORB_SERVER", "tcp://127.0.0.1:1");
    let (code, err, _) = ping(c, &[]);
    assert_eq!(code, Some(69), "ORB_SERVER over the context's server: {err}");
    assert!(err.contains("from ORB_SERVER"), "{err}");
}

#[test]
fn a_refused_token_names_its_source_and_what_to_do() {
    let server = Server::start();
    let op = Operator::new();
    let bad = op.bad.display().to_string();
    let refused = |mut c: assert_cmd::Command, source: &str| {
        let out = c.output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(77), "{source}: {err}");
        assert!(err.contains(&format!("token: {source}")), "{source}: {err}");
        assert!(err.contains("hint: "), "{source}: {err}");
        err
    };
    let at = || {
        let mut c = orb_cmd(op.cwd());
        c.args(["devices", "--server", &server.tcp]);
        c
    };

    let mut c = at();
    c.args(["--token", "wrong"]);
    refused(c, "--token flag");
    let mut c = at();
    c.arg("--token-file").arg(&op.bad);
    refused(c, &format!("--token-file {bad}"));
    let mut c = at();
    c.env("ORB_TOKEN", "wrong");
    refused(c, "ORB_TOKEN");
    let mut c = at();
    c.env("ORB_TOKEN_FILE", &op.bad);
    refused(c, &format!("ORB_TOKEN_FILE={bad}"));
    let err = refused(at(), "none");
    assert!(err.contains("no token given") && err.contains("orb context add"), "{err}");

    op.add("wrong", &server.tcp, &op.bad);
    let mut c = orb_cmd(op.cwd());
    c.args(["devices", "--context", "wrong"]);
    let err = refused(c, &format!("context wrong (token file {bad})"));
    assert!(err.contains("orb context add wrong"), "{err}");

    let config = op.cwd().join("client.toml");
    std::fs::write(&config, format!("[client]\nserver = \"{}\"\ntoken_file = \"{bad}\"\n", server.tcp)).unwrap();
    let mut c = orb_cmd(op.cwd());
    c.arg("devices").arg("--config").arg(&config);
    refused(c, &format!("[client] in {} (token file {bad})", config.display()));

    // The local server's token file, for a loopback server, when nothing else gives one.
    std::fs::create_dir(op.cwd().join("orb-data")).unwrap();
    std::fs::write(op.cwd().join("orb-data").join("admin.token"), "stale\n").unwrap();
    let err = refused(at(), "./orb-data/admin.token");
    assert!(err.contains("--token-file"), "{err}");
}

#[test]
fn an_unknown_context_is_a_configuration_error_naming_the_known_ones_and_mistakes_change_nothing() {
    let op = Operator::new();
    let unknown = |mut c: assert_cmd::Command, origin: &str| {
        let out = c.output().unwrap();
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(78), "{origin}: {err}");
        assert!(err.contains("'nope'") && err.contains(origin), "{origin}: {err}");
        err
    };
    let err = unknown(op.orb(&["send", "--context", "nope", "*", "ping"]), "--context");
    assert!(err.contains("no contexts yet"), "{err}");

    // Refused before anything is written: a bad name, a bad URL, a literal token, a missing file.
    let url = "tcp://127.0.0.1:1";
    for (args, code) in [
        (vec!["context", "add", "../x", "--server", url], 2),
        (vec!["context", "add", "x", "--server", "http://h"], 2),
        (vec!["context", "add", "x", "--server", url, "--token", "secret"], 2),
        (vec!["context", "add", "x", "--server", url, "--token-file", "missing.token"], 2),
        (vec!["context", "add", "x", "--server", url, "--description", "two\nlines"], 2),
    ] {
        let out = op.orb(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(code), "{args:?}: {}", stderr(&out));
    }
    assert!(!config_home(op.cwd()).exists(), "nothing written");

    op.add("prod", url, &op.good);
    op.add("lab", url, &op.good);
    let err = unknown(op.orb(&["devices", "--context", "nope"]), "--context");
    assert!(err.contains("known contexts: lab, prod"), "{err}");
    let mut c = op.orb(&["jobs"]);
    c.env("ORB_CONTEXT", "nope");
    unknown(c, "ORB_CONTEXT");
    unknown(op.orb(&["context", "use", "nope"]), "known contexts");
    unknown(op.orb(&["context", "rm", "nope"]), "known contexts");
    unknown(op.orb(&["context", "show", "nope"]), "known contexts");
    let out = op.orb(&["context", "add", "prod", "--server", "tcp://127.0.0.1:2"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "an existing context needs --force: {}", stderr(&out));
    assert_eq!(list(&op)[1]["server"], url);

    // A selected context removed by hand.
    op.orb(&["context", "use", "lab"]).assert().success();
    std::fs::remove_file(config_home(op.cwd()).join("orb").join("contexts").join("lab.toml")).unwrap();
    let out = op.orb(&["signal", "PING"]).output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(78), "{err}");
    assert!(err.contains("context 'lab' (selected by orb context use") && err.contains("select another"), "{err}");
}

#[test]
fn the_client_section_of_the_user_configuration_file_and_the_home_fallback() {
    let server = Server::start();
    let op = Operator::new();
    let dir = config_home(op.cwd()).join("orb");
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("config.toml");
    std::fs::write(&config, format!("[client]\nserver = \"{}\"\ntoken_file = \"{}\"\n", server.tcp, op.good.display()))
        .unwrap();
    let out = op.orb(&["devices", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "[client] in the user's config.toml: {}", stderr(&out));

    // [client] context names a context, whose values win over [client]'s own.
    op.add("wrong", &server.tcp, &op.bad);
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&config, format!("{text}context = \"wrong\"\n")).unwrap();
    let out = op.orb(&["devices"]).output().unwrap();
    assert_eq!(out.status.code(), Some(77), "stderr: {}", stderr(&out));
    assert!(stderr(&out).contains("token: context wrong"), "{}", stderr(&out));
    let out = op.orb(&["context", "ls"]).output().unwrap();
    assert!(stdout(&out).contains("* wrong"), "{}", stdout(&out));

    // Unknown keys and bad values are configuration errors naming the key.
    std::fs::write(&config, "[client]\nserver = \"http://x\"\ntokn_file = \"a\"\n").unwrap();
    let out = op.orb(&["devices"]).output().unwrap();
    assert_eq!(out.status.code(), Some(78), "stderr: {}", stderr(&out));
    let err = stderr(&out);
    assert!(err.contains("client.tokn_file") && err.contains("client.server"), "{err}");

    // Without XDG_CONFIG_HOME, contexts live in $HOME/.config/orb.
    let home = op.cwd().join("home");
    let mut c = op.orb(&["context", "add", "h", "--server", &server.tcp]);
    c.env_remove("XDG_CONFIG_HOME").env("HOME", &home);
    let out = c.output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert!(home.join(".config/orb/contexts/h.toml").exists());
}

#[test]
fn help_names_the_sources_without_claiming_unset_variables() {
    let dir = tempfile::tempdir().unwrap();
    let out = orb_cmd(dir.path()).args(["send", "--help"]).output().unwrap();
    let help = stdout(&out);
    for want in ["--context <NAME>", "$ORB_SERVER", "$ORB_CONTEXT", "./orb-data/admin.token"] {
        assert!(help.contains(want), "missing {want} in:\n{help}");
    }
    assert!(!help.contains("[env: ORB_SERVER="), "{help}");
    let out = orb_cmd(dir.path()).args(["context", "--help"]).output().unwrap();
    let help = stdout(&out);
    for want in ["add", "use", "ls", "show", "rm", "ORB_CONTEXT", "[client]"] {
        assert!(help.contains(want), "missing {want} in:\n{help}");
    }
}

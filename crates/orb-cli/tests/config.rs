//! End-to-end tests of the configuration commands and of configuration errors at the binary's
//! level: `orb config default|check|show --effective`, `ORB_<SECTION>__<KEY>` variables, exit 78
//! before binding, and the self-describing commands (`version --json`, `completions`, `man`).
#![allow(clippy::unwrap_used)]

mod common;

use common::{EVENT, Proc, orb, orb_cmd, stderr, stdout};
use serde_json::Value;

/// A file with four problems of different kinds.
const BAD: &str = r#"
[server]
lisen = "127.0.0.1:7700"

[limits]
outbound_queue = "x"

[shutdown]
grace = "forever"

[bogus]
a = 1
"#;

#[test]
fn the_default_file_passes_check() {
    let dir = tempfile::tempdir().unwrap();
    let out = orb_cmd(dir.path()).args(["config", "default"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("[server]") && text.contains("[limits]"), "{text}");
    let file = dir.path().join("orb.toml");
    std::fs::write(&file, &text).unwrap();

    let out = orb_cmd(dir.path()).args(["config", "check"]).arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stdout: {}\nstderr: {}", stdout(&out), stderr(&out));
    assert!(stdout(&out).contains("ok"), "{}", stdout(&out));
}

#[test]
fn check_reports_every_problem_at_once_with_exit_78() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, BAD).unwrap();
    let out = orb_cmd(dir.path()).args(["config", "check"]).arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(78), "stdout: {}\nstderr: {}", stdout(&out), stderr(&out));
    let all = format!("{}{}", stdout(&out), stderr(&out));
    for want in ["server.lisen", "[bogus]", "limits.outbound_queue", "shutdown.grace"] {
        assert!(all.contains(want), "problem {want:?} not named in:\n{all}");
    }
    assert!(stderr(&out).contains("4 problem(s)"), "{}", stderr(&out));
}

#[test]
fn serve_with_a_bad_file_exits_78_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, BAD).unwrap();
    let mut cmd = orb(dir.path());
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--config"]).arg(&file);
    let mut serve = Proc::spawn("orb serve (bad config)", cmd);
    let status = serve.wait_exit(EVENT);
    assert_eq!(status.code(), Some(78), "stderr: {}", serve.stderr());
    let err = serve.stderr();
    assert!(!err.contains("orb server: agents"), "it must not bind: {err}");
    for want in ["server.lisen", "[bogus]", "limits.outbound_queue", "shutdown.grace"] {
        assert!(err.contains(want), "problem {want:?} not named in:\n{err}");
    }
    assert!(!dir.path().join("orb-data").exists(), "nothing was created before the configuration was valid");
}

#[test]
fn unrelated_orb_variables_are_ignored_and_config_variables_apply() {
    let dir = tempfile::tempdir().unwrap();
    // An empty file, so a system-wide /etc/orb/orb.toml never takes part.
    let empty = dir.path().join("empty.toml");
    std::fs::write(&empty, "").unwrap();
    let show = || {
        let mut c = orb_cmd(dir.path());
        c.args(["config", "show", "--effective", "--config"]).arg(&empty);
        c
    };

    let out = show()
        .env("ORB_TEST_WHATEVER", "1")
        .env("ORB_BENCH_X", "2")
        .env("ORB_SERVER", "tcp://127.0.0.1:1")
        .env("ORB_LOG", "info")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert!(stdout(&out).contains("outbound_queue = 1024"), "{}", stdout(&out));

    let out = show().env("ORB_LIMITS__OUTBOUND_QUEUE", "77").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    assert!(stdout(&out).contains("outbound_queue = 77"), "{}", stdout(&out));

    let out = show().env("ORB_LIMITS__NOPE", "1").output().unwrap();
    assert_eq!(out.status.code(), Some(78), "stdout: {}\nstderr: {}", stdout(&out), stderr(&out));
    assert!(stderr(&out).contains("ORB_LIMITS__NOPE"), "{}", stderr(&out));
}

#[test]
fn show_redacts_secrets_from_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("orb.toml");
    std::fs::write(&file, "[server]\nadmin_token = \"hunter2-hunter2-hunter2\"\n[limits]\noutbound_queue = 64\n")
        .unwrap();
    let out = orb_cmd(dir.path()).args(["config", "show", "--effective", "--config"]).arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    assert!(!text.contains("hunter2"), "secret leaked:\n{text}");
    assert!(text.contains("admin_token = \"<redacted>\""), "{text}");
    assert!(text.contains("outbound_queue = 64"), "the file was applied:\n{text}");
}

#[test]
fn version_completions_and_man_page() {
    let dir = tempfile::tempdir().unwrap();
    let out = orb_cmd(dir.path()).args(["version", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let v: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["protocol_version"], 1, "{v}");
    assert!(v["git_revision"].as_str().is_some_and(|r| !r.is_empty()), "{v}");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"), "{v}");

    let out = orb_cmd(dir.path()).args(["completions", "bash"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let script = stdout(&out);
    assert!(script.contains("orb") && script.contains("complete"), "{script}");

    let out = orb_cmd(dir.path()).arg("man").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let page = stdout(&out);
    assert!(page.contains(".TH"), "not roff:\n{page}");
    assert!(page.contains("serve") && page.contains("agent"), "{page}");
}

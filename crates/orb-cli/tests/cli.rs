//! End-to-end tests of the self-contained commands: `orb demo`, `--version`, `--help`.
#![allow(clippy::unwrap_used)]

mod common;

use common::{orb_cmd, stderr, stdout};

#[test]
fn demo_runs_three_jobs_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let out = orb_cmd(dir.path()).args(["demo", "--agents", "10"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let text = stdout(&out);
    for want in [
        "10 agents connected",
        "$ orb send '*' sys.info",
        "sys.info",
        "echo",
        r#"{"hello":"world"}"#,
        "reboot",
        "unknown_command",
        "demo finished",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

#[test]
fn demo_rejects_an_agent_count_out_of_range() {
    let dir = tempfile::tempdir().unwrap();
    let out = orb_cmd(dir.path()).args(["demo", "--agents", "0"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(&out));
}

#[test]
fn version_and_help() {
    let dir = tempfile::tempdir().unwrap();
    let out = orb_cmd(dir.path()).arg("--version").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let version = stdout(&out);
    assert!(version.starts_with(&format!("orb {}", env!("CARGO_PKG_VERSION"))), "{version}");

    let out = orb_cmd(dir.path()).args(["send", "--help"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let help = stdout(&out);
    for flag in ["--dry-run", "--json", "--wait", "--server", "--token"] {
        assert!(help.contains(flag), "missing {flag} in:\n{help}");
    }

    let out = orb_cmd(dir.path()).arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "stderr: {}", stderr(&out));
    let help = stdout(&out);
    for word in ["serve", "agent", "send", "devices", "demo", "Exit codes"] {
        assert!(help.contains(word), "missing {word} in:\n{help}");
    }

    // An unknown sub-command is a usage error.
    let out = orb_cmd(dir.path()).arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "stderr: {}", stderr(&out));
}

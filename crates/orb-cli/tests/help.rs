//! End-to-end tests of the reference documentation the binary carries: every sub-command's
//! `--help` (an Examples section, environment variables shown truthfully, defaults that match the
//! code) and the man pages of `orb man` and `orb man --out DIR`.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::path::Path;

use common::{orb_cmd, stderr, stdout};

/// `orb ARGS` in `cwd`, which must exit 0; its stdout.
fn run_ok(cwd: &Path, args: &[&str]) -> String {
    let out = orb_cmd(cwd).args(args).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "orb {}: {}", args.join(" "), stderr(&out));
    stdout(&out)
}

/// The sub-commands listed under `Commands:` in a help text (without `help`).
fn listed_commands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| *l != "Commands:")
        .skip(1)
        .take_while(|l| !l.trim().is_empty())
        .filter(|l| l.starts_with("  ") && !l.starts_with("   "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// Every visible sub-command path (`["devices", "show"]`), found by walking the help texts.
fn all_paths(cwd: &Path) -> Vec<Vec<String>> {
    let mut found = Vec::new();
    let mut todo: Vec<Vec<String>> = vec![Vec::new()];
    while let Some(path) = todo.pop() {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        for name in listed_commands(&run_ok(cwd, &args)) {
            let mut sub = path.clone();
            sub.push(name);
            todo.push(sub.clone());
            found.push(sub);
        }
    }
    found.sort();
    found
}

/// The `[env: ...]` annotations in a help text.
fn env_annotations(help: &str) -> Vec<&str> {
    help.match_indices("[env: ").map(|(i, _)| &help[i..i + help[i..].find(']').unwrap() + 1]).collect()
}

#[test]
fn every_sub_command_help_has_examples_and_no_empty_env_value() {
    let dir = tempfile::tempdir().unwrap();
    let paths = all_paths(dir.path());
    let names: BTreeSet<String> = paths.iter().map(|p| p.join(" ")).collect();
    for want in [
        "serve",
        "agent",
        "send",
        "devices",
        "devices show",
        "devices add",
        "devices rm",
        "devices revoke",
        "devices tag",
        "devices untag",
        "jobs",
        "jobs show",
        "jobs cancel",
        "audit",
        "commands",
        "signal",
        "schedule",
        "schedule preview",
        "config",
        "config check",
        "demo",
        "bench",
        "bench fanout",
        "version",
        "completions",
        "man",
    ] {
        assert!(names.contains(want), "`orb {want}` not found by walking the help; found {names:?}");
    }
    assert!(!names.iter().any(|n| n.contains("swarm")), "hidden commands stay hidden: {names:?}");

    let mut with_env = 0;
    for path in std::iter::once(Vec::new()).chain(paths) {
        let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
        args.push("--help");
        let help = run_ok(dir.path(), &args);
        let what = format!("orb {}", args.join(" "));
        let examples = help.find("\nExamples:\n").unwrap_or_else(|| panic!("{what}: no Examples section:\n{help}"));
        let first = help[examples..].lines().nth(2).unwrap_or_default();
        assert!(first.trim_start().starts_with("orb ") || first.contains(" orb "), "{what}: first example: {first}");
        for env in env_annotations(&help) {
            with_env += 1;
            assert!(!env.ends_with("=]"), "{what}: {env} reads as set but empty (the variable is not set)");
        }
        // `-h` shows the same sections.
        args.pop();
        args.push("-h");
        assert!(run_ok(dir.path(), &args).contains("\nExamples:\n"), "orb {} has no Examples", args.join(" "));
    }
    assert!(with_env > 0, "no [env: ...] annotation seen at all; the check above checked nothing");
}

#[test]
fn a_set_environment_variable_is_shown_with_its_value() {
    let dir = tempfile::tempdir().unwrap();
    let out = orb_cmd(dir.path()).args(["agent", "--help"]).env("ORB_SERVER", "tcp://10.1.2.3:7700").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let help = stdout(&out);
    assert!(help.contains("[env: ORB_SERVER=tcp://10.1.2.3:7700]"), "{help}");
    // Token values stay hidden, set or not.
    let out = orb_cmd(dir.path()).args(["agent", "--help"]).env("ORB_TOKEN", "s3cret-token").output().unwrap();
    let help = stdout(&out);
    assert!(help.contains("[env: ORB_TOKEN]") && !help.contains("s3cret"), "{help}");
}

/// What a help text says about option `flag`: its line and, in clap's long format, the lines of
/// description under it, joined.
fn option_text(help: &str, flag: &str) -> String {
    let mut lines = help.lines().skip_while(|l| {
        let t = l.trim_start();
        t != flag && !t.starts_with(&format!("{flag} "))
    });
    let first = lines.next().unwrap_or_else(|| panic!("no {flag} in:\n{help}"));
    let rest = lines.take_while(|l| {
        let t = l.trim_start();
        let heading = l.ends_with(':') && !l.starts_with(' ');
        !t.starts_with('-') && !heading
    });
    std::iter::once(first).chain(rest).map(str::trim).collect::<Vec<_>>().join(" ")
}

#[test]
fn defaults_claimed_in_help_are_the_defaults_in_force() {
    let dir = tempfile::tempdir().unwrap();
    let config = run_ok(dir.path(), &["config", "default"]);
    let serve = run_ok(dir.path(), &["serve", "--help"]);
    for (flag, key, value) in
        [("--listen", "listen", "127.0.0.1:7700"), ("--http", "http", "127.0.0.1:7780"), ("--data", "data", "orb-data")]
    {
        let text = option_text(&serve, flag);
        assert!(text.contains(&format!("[default: {value}]")), "orb serve {text}");
        assert!(config.contains(&format!("\n{key} = \"{value}\"\n")), "orb config default has no {key} = {value}");
    }
    let agent = run_ok(dir.path(), &["agent", "--help"]);
    let text = option_text(&agent, "--server");
    assert!(text.contains("[default: tcp://127.0.0.1:7700]"), "orb agent {text}");
    assert!(config.contains("\nserver = [\"tcp://127.0.0.1:7700\"]\n"), "{config}");

    // `orb send --json` prints JSON lines, not one array.
    let send = run_ok(dir.path(), &["send", "--help"]);
    let text = option_text(&send, "-o,");
    assert!(text.contains("json (one object per target per line") && !text.contains("array"), "orb send {text}");
    // `orb devices --json` and `orb jobs --json` do print one array.
    for cmd in ["devices", "jobs"] {
        let help = run_ok(dir.path(), &[cmd, "--help"]);
        assert!(option_text(&help, "--json").contains("-o json"), "orb {cmd} --help");
    }
    // The built-in commands are documented where agents are started.
    for builtin in ["ping", "echo", "sleep", "sys.info", "exec"] {
        assert!(agent.contains(&format!("\n  {builtin} ")), "orb agent --help does not document {builtin}");
    }
}

#[test]
fn man_writes_one_roff_page_per_command_and_prints_any_one() {
    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("man1");
    let listed = run_ok(dir.path(), &["man", "--out", pages.to_str().unwrap()]);

    let mut expected: BTreeSet<String> = all_paths(dir.path()).iter().map(|p| format!("orb-{}", p.join("-"))).collect();
    expected.insert("orb".into());
    let written: BTreeSet<String> = std::fs::read_dir(&pages)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .map(|f| f.strip_suffix(".1").unwrap_or_else(|| panic!("not a section 1 page: {f}")).to_owned())
        .collect();
    assert_eq!(written, expected, "one page per command and sub-command");
    assert_eq!(listed.lines().count(), expected.len(), "one line per file written: {listed}");

    for name in &expected {
        let text = std::fs::read_to_string(pages.join(format!("{name}.1"))).unwrap();
        assert!(text.contains(&format!("\n.TH {name} 1 ")), "{name}.1 has no .TH title naming it");
        let roff_name = name.replace('-', "\\-");
        assert!(text.contains(&format!(".SH NAME\n{roff_name} \\- ")), "{name}.1 NAME section");
        for section in [".SH SYNOPSIS", ".SH DESCRIPTION", ".SH EXAMPLES\n.nf\n"] {
            assert!(text.contains(section), "{name}.1 has no {section:?}");
        }
    }
    let top = std::fs::read_to_string(pages.join("orb.1")).unwrap();
    assert!(top.contains(".SH EXIT CODES"), "orb.1 documents the exit codes");

    // `orb man` prints the top page, `orb man devices show` that sub-command's, identical to the files.
    assert_eq!(run_ok(dir.path(), &["man"]), top);
    let show = std::fs::read_to_string(pages.join("orb-devices-show.1")).unwrap();
    assert_eq!(run_ok(dir.path(), &["man", "devices", "show"]), show);
    assert_eq!(
        run_ok(dir.path(), &["man", "devices", "remove"]),
        std::fs::read_to_string(pages.join("orb-devices-rm.1")).unwrap()
    );

    // An unknown page names the ones there are.
    let out = orb_cmd(dir.path()).args(["man", "devices", "frobnicate"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("show") && stderr(&out).contains("untag"), "{}", stderr(&out));
}

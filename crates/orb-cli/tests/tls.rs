//! TLS end to end through the binary: `orb cert dev` writes files (keys 0600) that
//! `orb serve --tls-cert ... --tls-client-ca ... --require-client-cert` and
//! `orb agent --ca-cert ... --cert ... --key ...` use as they are; the agent is the device its
//! certificate names without any token; a CA in the folder is reused for clients added later;
//! a context keeps the TLS files; operators without a client certificate, or trusting another CA,
//! get a clear error (exit 69);
//! SIGHUP re-reads the certificate while connections stay up; a certificate that cannot be used
//! at start is exit 78 naming it.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{ADMIN, AGENT, Proc, STARTUP, orb, orb_cmd, stderr, stdout};

/// `orb serve` with TLS from `certs`, on OS-chosen ports; returns it with its TCP and HTTP
/// `HOST:PORT` from the banner.
fn serve_tls(cwd: &Path, extra: &[&str]) -> (Proc, String, String) {
    let mut cmd = orb(cwd);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--data", "server-data"])
        .args(["--admin-token", ADMIN, "--agent-token", AGENT])
        .args(["--tls-cert", "certs/server.crt", "--tls-key", "certs/server.key"])
        .args(extra);
    let mut proc = Proc::spawn("orb serve", cmd);
    let banner = proc.wait_for_line(STARTUP, |l| l.starts_with("orb server: agents "));
    let words: Vec<&str> = banner.split_whitespace().collect();
    let tcp = words[3].strip_prefix("tls://").unwrap_or_else(|| panic!("banner: {banner}")).to_owned();
    let ws = words[5].strip_prefix("wss://").unwrap_or_else(|| panic!("banner: {banner}"));
    let http = ws.strip_suffix("/v1/ws").unwrap().to_owned();
    (proc, tcp, http)
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn orb_cert_dev_files_serve_mtls_and_an_agent_with_its_certificate_runs_a_job() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let out = orb_cmd(cwd).args(["cert", "dev", "--out", "certs", "--client", "cam-1"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("orb serve --tls-cert certs/server.crt"), "{}", stdout(&out));
    for key in ["ca.key", "server.key", "client-cam-1.key"] {
        assert_eq!(mode(&cwd.join("certs").join(key)), 0o600, "{key}");
    }
    assert_eq!(mode(&cwd.join("certs/ca.crt")), 0o644);

    let (_server, tcp, http) = serve_tls(cwd, &["--tls-client-ca", "certs/ca.crt", "--require-client-cert"]);
    let port = tcp.rsplit_once(':').unwrap().1;
    // The agent: its certificate and no token; connected by host name (localhost).
    let mut agent = orb(cwd);
    agent.args(["agent", "--server", &format!("tls://localhost:{port}"), "--data", "agent-data"]).args([
        "--ca-cert",
        "certs/ca.crt",
        "--cert",
        "certs/client-cam-1.crt",
        "--key",
        "certs/client-cam-1.key",
    ]);
    let mut agent = Proc::spawn("orb agent cam-1", agent);
    let line = agent.wait_for_line(STARTUP, |l| l.contains("agent connected"));
    assert!(line.contains("cam-1"), "{line}");

    // An operator needs a client certificate too here: one added later from the same CA.
    let out = orb_cmd(cwd).args(["cert", "dev", "--out", "certs", "--client", "ops"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("reusing the CA"), "{}", stderr(&out));
    let tls_args = ["--ca-cert", "certs/ca.crt", "--cert", "certs/client-ops.crt", "--key", "certs/client-ops.key"];
    let out = orb_cmd(cwd)
        .args(["send", "cam-1", "ping", "--json", "--server", &format!("tls://{tcp}"), "--token", ADMIN])
        .args(tls_args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("\"pong\":true"), "{}", stdout(&out));
    let out = orb_cmd(cwd)
        .args(["devices", "--json", "--server", &format!("wss://{http}/v1/ws"), "--token", ADMIN])
        .args(tls_args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("\"transport\":\"tls\""), "{}", stdout(&out));

    // A context keeps the TLS files (absolute paths) beside the server and the token file.
    std::fs::write(cwd.join("admin.token"), ADMIN).unwrap();
    std::fs::set_permissions(cwd.join("admin.token"), std::fs::Permissions::from_mode(0o600)).unwrap();
    let out = orb_cmd(cwd)
        .args(["context", "add", "secure", "--server", &format!("tls://{tcp}"), "--token-file", "admin.token"])
        .args(tls_args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = orb_cmd(cwd).args(["devices", "--json", "--context", "secure"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("\"id\":\"cam-1\""), "{}", stdout(&out));

    // Without a client certificate: refused, saying what is missing.
    let out = orb_cmd(cwd)
        .args(["send", "cam-1", "ping", "--server", &format!("tls://{tcp}"), "--token", ADMIN])
        .args(["--ca-cert", "certs/ca.crt"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69), "{}", stderr(&out));
    assert!(stderr(&out).contains("requires a client certificate"), "{}", stderr(&out));
    // A missing file is a configuration error naming it, before connecting.
    let out = orb_cmd(cwd)
        .args(["devices", "--server", &format!("tls://{tcp}"), "--token", ADMIN, "--ca-cert", "certs/nope.crt"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(stderr(&out).contains("certs/nope.crt"), "{}", stderr(&out));
    // Running it again would replace the server's files: refused.
    let out = orb_cmd(cwd).args(["cert", "dev", "--out", "certs"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("server.crt exists"), "{}", stderr(&out));
}

#[test]
fn sighup_reloads_the_certificate_while_the_agent_stays_connected() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let out = orb_cmd(cwd).args(["cert", "dev", "--out", "certs"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let out = orb_cmd(cwd).args(["cert", "dev", "--out", "next"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let (mut server, tcp, _http) = serve_tls(cwd, &[]);
    let mut agent = orb(cwd);
    agent.args(["agent", "--server", &format!("tls://{tcp}"), "--ca-cert", "certs/ca.crt"]).args([
        "--token",
        AGENT,
        "--id",
        "web-1",
        "--data",
        "agent-data",
    ]);
    let mut agent = Proc::spawn("orb agent web-1", agent);
    agent.wait_for_line(STARTUP, |l| l.contains("agent connected"));

    let send = |ca: &str| {
        orb_cmd(cwd)
            .args(["send", "web-1", "ping", "--server", &format!("tls://{tcp}"), "--token", ADMIN, "--ca-cert", ca])
            .output()
            .unwrap()
    };
    let wrong = send("next/ca.crt");
    assert_eq!(wrong.status.code(), Some(69));
    assert!(stderr(&wrong).contains("not signed by a CA this client trusts"), "{}", stderr(&wrong));

    std::fs::copy(cwd.join("next/server.crt"), cwd.join("certs/server.crt")).unwrap();
    std::fs::copy(cwd.join("next/server.key"), cwd.join("certs/server.key")).unwrap();
    let hup = std::process::Command::new("kill").args(["-HUP", &server.pid().to_string()]).status().unwrap();
    assert!(hup.success());
    server.wait_for_line(STARTUP, |l| l.contains("TLS certificate, key and client CA reloaded"));

    assert_eq!(send("certs/ca.crt").status.code(), Some(69), "the old certificate is gone for new connections");
    let ok = send("next/ca.crt");
    assert!(ok.status.success(), "{}", stderr(&ok));
    assert!(
        stdout(&ok).contains("1 of 1 targets answered ok"),
        "the agent connected before the reload: {}",
        stdout(&ok)
    );
    assert!(!agent.stderr().contains("connection lost"), "{}", agent.stderr());
}

#[test]
fn a_certificate_that_cannot_be_used_at_start_is_a_configuration_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = dir.path();
    let out = orb_cmd(cwd).args(["cert", "dev", "--out", "certs"]).output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    for (cert, key, expected) in [
        ("certs/missing.crt", "certs/server.key", "cannot read certificate certs/missing.crt"),
        ("certs/server.crt", "certs/ca.key", "KeyMismatch"),
        ("certs/server.key", "certs/server.key", "no certificate in it"),
    ] {
        let out = orb_cmd(cwd)
            .args(["serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--data", "server-data"])
            .args(["--tls-cert", cert, "--tls-key", key])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(78), "{cert} {key}: {}", stderr(&out));
        assert!(stderr(&out).contains(expected), "{}", stderr(&out));
        assert!(!stderr(&out).contains("orb server: agents"), "it must not bind: {}", stderr(&out));
    }
    // --require-client-cert without the CA to check them against.
    let out = orb_cmd(cwd)
        .args(["serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0", "--data", "server-data"])
        .args(["--tls-cert", "certs/server.crt", "--tls-key", "certs/server.key", "--require-client-cert"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78), "{}", stderr(&out));
    assert!(stderr(&out).contains("tls.client_ca"), "{}", stderr(&out));
}

//! `orb serve --store postgres://...` end to end, as a new user would try it: a fresh database
//! (`orb_test_<random>` on the server at `ORB_TEST_POSTGRES_URL`, dropped afterwards), an agent
//! that enrolls, a job, a pre-registered device, then a server restart that keeps all of it.
//! Skipped with a message when `ORB_TEST_POSTGRES_URL` is unset (never under `CI=true`).
#![allow(clippy::unwrap_used)]

mod common;

use common::{EVENT, FAST_BACKOFF, Proc, Server, free_port, json_lines, orb, send_signal, serve_cmd, stderr, stdout};
use orb_store::StoreUrl;
use orb_store::testkit::TempPostgres;
use serde_json::{Value, json};

fn one_json(out: &std::process::Output) -> Value {
    assert_eq!(out.status.code(), Some(0), "{}", stderr(out));
    let lines = json_lines(out);
    assert_eq!(lines.len(), 1, "{}", stdout(out));
    lines.into_iter().next().unwrap()
}

#[test]
fn a_postgres_store_keeps_devices_credentials_and_jobs_across_a_restart() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let Some(db) = rt.block_on(TempPostgres::create()) else {
        eprintln!("skipped: ORB_TEST_POSTGRES_URL is not set");
        return;
    };
    let StoreUrl::Postgres(url) = db.url() else { panic!("not a postgres url") };

    let listen = format!("127.0.0.1:{}", free_port());
    let dir = tempfile::tempdir().unwrap();
    let serve = |dir: &std::path::Path| {
        let mut cmd = serve_cmd(dir, &listen);
        cmd.args(["--store", &url]);
        cmd
    };
    let cmd = serve(dir.path());
    let mut server = Server::spawn(dir, cmd);
    assert!(server.proc.stderr().contains("store postgres://"), "{}", server.proc.stderr());
    assert!(!server.cwd().join("server-data").join("orb.db").exists(), "no SQLite file beside PostgreSQL");

    let data = server.cwd().join("agent");
    let mut agent_cmd = orb(server.cwd());
    agent_cmd.args(["agent", "--server", &server.tcp, "--token", common::AGENT]).arg("--data").arg(&data);
    agent_cmd.envs(FAST_BACKOFF);
    let mut agent = Proc::spawn("orb agent", agent_cmd);
    agent.wait_for_line(EVENT, |l| l.contains("enrolled as"));
    agent.wait_for_line(EVENT, |l| l.contains("agent connected"));
    let creds: Value = serde_json::from_str(&std::fs::read_to_string(data.join("credentials.json")).unwrap()).unwrap();
    let id = creds["id"].as_str().unwrap().to_owned();
    server.wait_connected(&[&id]);

    let out = server.client("send").args(["*", "ping", "--json"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let lines = json_lines(&out);
    let job = lines[1]["job"].as_str().unwrap().to_owned();
    let out = server.client("devices").args(["add", "spare-1", "--tag", "role=spare"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));

    // Restart on the same port and database.
    send_signal(server.proc.pid(), "TERM");
    assert!(server.proc.wait_exit(EVENT).success(), "{}", server.proc.stderr());
    let Server { proc, dir, .. } = server;
    drop(proc);
    let cmd = serve(dir.path());
    let server = Server::spawn(dir, cmd);
    agent.wait_for_line(EVENT, |l| l.contains("welcomed back"));
    server.wait_connected(&[&id]);

    let summary = one_json(&server.client("devices").args(["--summary", "--json"]).output().unwrap());
    assert_eq!(summary, json!({"known": 2, "connected": 1, "revoked": 0}));
    let spare = one_json(&server.client("devices").args(["show", "spare-1", "--json"]).output().unwrap());
    assert_eq!(spare["operator_tags"], json!({"role": "spare"}), "{spare}");
    let detail = one_json(&server.client("jobs").args(["show", &job, "--json"]).output().unwrap());
    assert_eq!(detail["job"]["state"], "done", "{detail}");
    assert_eq!(detail["results"][0], lines[0], "{detail}");

    drop(agent);
    drop(server);
    rt.block_on(db.drop_db());
}

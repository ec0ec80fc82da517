//! `orb tokens` from the binary: a token made with a role and an expiry is printed once, listed
//! with its expiry (table and JSON) and never shown again, admits its holder with its role, and
//! is refused once revoked; a bad lifetime is a usage error and makes nothing.
#![allow(clippy::unwrap_used)]

mod common;

use common::{Server, orb_cmd, stderr, stdout};
use serde_json::Value;

fn json(out: &std::process::Output) -> Value {
    assert_eq!(out.status.code(), Some(0), "{}", stderr(out));
    serde_json::from_str(&stdout(out)).unwrap()
}

#[test]
fn tokens_are_made_with_an_expiry_listed_used_and_revoked() {
    let server = Server::start();
    let made = json(
        &server
            .client("tokens")
            .args(["add", "deploy-42", "--role", "viewer", "--expires", "2h", "-o", "json"])
            .output()
            .unwrap(),
    );
    let token = made["token"].as_str().unwrap().to_owned();
    assert_eq!((made["name"].as_str(), made["role"].as_str()), (Some("deploy-42"), Some("viewer")));
    let expires = made["expires_at"].as_str().unwrap().to_owned();
    let at = chrono::DateTime::parse_from_rfc3339(&expires).unwrap();
    let ahead = at.signed_duration_since(chrono::Utc::now());
    assert!(ahead > chrono::Duration::minutes(119) && ahead <= chrono::Duration::hours(2), "{expires}");

    let listed = json(&server.client("tokens").args(["-o", "json"]).output().unwrap());
    assert_eq!(listed[0]["expires_at"].as_str(), Some(expires.as_str()));
    assert!(!listed.to_string().contains(&token), "the list never shows a token");
    let table = server.client("tokens").output().unwrap();
    let text = stdout(&table);
    assert!(text.lines().next().unwrap().contains("EXPIRES"), "{text}");
    assert!(text.contains(&expires), "{text}");

    // The holder reads with it; sending is not a viewer's.
    let as_viewer = |sub: &str| {
        let mut c = orb_cmd(server.cwd());
        c.args([sub, "--server", &server.tcp, "--token", &token]);
        c
    };
    assert_eq!(as_viewer("devices").output().unwrap().status.code(), Some(0));
    let send = as_viewer("send").args(["*", "ping"]).output().unwrap();
    assert_eq!(send.status.code(), Some(77), "{}", stderr(&send));

    let revoked = server.client("tokens").args(["revoke", "deploy-42"]).output().unwrap();
    assert_eq!(revoked.status.code(), Some(0), "{}", stderr(&revoked));
    let refused = as_viewer("devices").output().unwrap();
    assert_ne!(refused.status.code(), Some(0), "a revoked token admits nobody");

    let bad = server.client("tokens").args(["add", "never", "--role", "viewer", "--expires", "0s"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2), "{}", stderr(&bad));
    let listed = json(&server.client("tokens").args(["-o", "json"]).output().unwrap());
    assert_eq!(listed.as_array().unwrap().len(), 1, "nothing made: {listed}");
}

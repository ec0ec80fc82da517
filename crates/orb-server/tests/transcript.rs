//! The compatibility guard: a recorded conversation of a protocol v1 agent
//! (`fixtures/v1_agent_transcript.jsonl`) replayed byte for byte against the current server.
//!
//! NEVER EDIT THE FIXTURE WHEN THE PROTOCOL CHANGES. It stands for agents already deployed, which
//! cannot be changed either. If this test fails, an old agent in the field would break against
//! this server: fix the server (or make the change a new protocol version, still accepting v1),
//! not the transcript. Add new transcripts for new behaviour instead.
//!
//! Fixture format: one JSON object per line, `{"dir":"send","frame":{...}}` for a frame the old
//! agent sent (sent exactly as written, after placeholder substitution) or
//! `{"dir":"expect","frame":{...}}` for a frame the server must send next. Expected frames are
//! partial: every field they give must match (objects recursively, other values exactly); fields
//! they leave out are not checked, so servers may add fields. Placeholders (whole JSON strings):
//! `"$NUMBER"` / `"$STRING"` match any non-negative integer / any string; any other `"$NAME"`
//! is a variable: bound on its first occurrence in an expected frame (e.g. `$CMD_ID`, the id of
//! the command the server sends), then compared, and substituted into sent frames.
//! `$AGENT_TOKEN` is bound to the server's agent token from the start.
//!
//! Meanwhile an operator, connected with the current client library, submits a `ping` job to the
//! legacy agent once it is welcomed, and must get the legacy agent's answer as an `ok` result.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use bytes::Bytes;
use orb_client::JobRequest;
use orb_proto::Status;
use orb_proto::message::{DeviceInfo, DevicesQuery, commands};
use orb_testkit::{RawTcp, TestServer, Transport, WAIT, finish_job, within};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::sync::oneshot;

const TRANSCRIPT: &str = include_str!("fixtures/v1_agent_transcript.jsonl");

/// One line of the fixture; `frame` is kept as written.
#[derive(Deserialize)]
struct Step<'a> {
    dir: String,
    #[serde(borrow)]
    frame: &'a RawValue,
}

/// Just the parts of a recorded frame this test looks at.
#[derive(Deserialize)]
struct RecordedFrame<'a> {
    kind: String,
    #[serde(borrow, default)]
    body: Option<&'a RawValue>,
}

fn steps() -> Vec<Step<'static>> {
    TRANSCRIPT
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| serde_json::from_str(l).unwrap_or_else(|e| panic!("fixture line {}: {e}", i + 1)))
        .collect()
}

/// Whether `s` is a placeholder: `$` followed by upper-case letters, digits and `_`.
fn placeholder(s: &str) -> Option<&str> {
    let name = s.strip_prefix('$')?;
    let ok = !name.is_empty() && name.chars().all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
    ok.then_some(s)
}

/// Checks `actual` against the partial `expected`, binding unbound variables.
fn matches(expected: &Value, actual: &Value, vars: &mut HashMap<String, String>, path: &str) -> Result<(), String> {
    match expected {
        Value::String(s) if placeholder(s).is_some() => match s.as_str() {
            "$NUMBER" if actual.is_u64() => Ok(()),
            "$STRING" if actual.is_string() => Ok(()),
            "$NUMBER" | "$STRING" => Err(format!("{path}: {actual} is not a {s}")),
            var => {
                let Some(got) = actual.as_str() else {
                    return Err(format!("{path}: {actual} is not a string for {var}"));
                };
                match vars.get(var) {
                    Some(bound) if bound == got => Ok(()),
                    Some(bound) => Err(format!("{path}: {got:?} is not {var} = {bound:?}")),
                    None => {
                        vars.insert(var.to_owned(), got.to_owned());
                        Ok(())
                    }
                }
            }
        },
        Value::Object(fields) => {
            let Some(object) = actual.as_object() else {
                return Err(format!("{path}: expected an object, got {actual}"));
            };
            for (k, want) in fields {
                let Some(got) = object.get(k) else {
                    return Err(format!("{path}.{k}: missing"));
                };
                matches(want, got, vars, &format!("{path}.{k}"))?;
            }
            Ok(())
        }
        other if other == actual => Ok(()),
        other => Err(format!("{path}: expected {other}, got {actual}")),
    }
}

/// The recorded frame text with every `"$NAME"` replaced by its bound value.
fn substitute(raw: &str, vars: &HashMap<String, String>) -> String {
    let mut text = raw.to_owned();
    for (name, value) in vars {
        text = text.replace(&format!("\"{name}\""), &serde_json::to_string(value).unwrap());
    }
    let left: Value = serde_json::from_str(&text).unwrap();
    assert!(!contains_placeholder(&left), "unbound placeholder in a sent frame: {text}");
    text
}

fn contains_placeholder(v: &Value) -> bool {
    match v {
        Value::String(s) => placeholder(s).is_some(),
        Value::Object(m) => m.values().any(contains_placeholder),
        Value::Array(a) => a.iter().any(contains_placeholder),
        _ => false,
    }
}

/// Plays the old agent: sends its frames exactly, checks the server's, answers the server's
/// heartbeat pings wherever they fall (timing is not part of the recording). Signals `welcomed`
/// after the welcome. Returns the bound variables and every frame received.
async fn replay(server: &TestServer, welcomed: oneshot::Sender<()>) -> (HashMap<String, String>, Vec<Value>) {
    let mut vars = HashMap::from([("$AGENT_TOKEN".to_owned(), server.server.agent_token().expose().to_owned())]);
    let mut welcomed = Some(welcomed);
    let mut received = Vec::new();
    let mut raw: RawTcp = server.raw_tcp().await;
    for (n, step) in steps().iter().enumerate() {
        let line = n + 1;
        match step.dir.as_str() {
            "send" => {
                let text = substitute(step.frame.get(), &vars);
                raw.send_frame(text.as_bytes()).await.unwrap_or_else(|e| panic!("line {line}: send failed: {e}"));
            }
            "expect" => {
                let expected: Value = serde_json::from_str(step.frame.get()).unwrap();
                let got = loop {
                    let f = raw.read_json().await.unwrap_or_else(|| panic!("line {line}: closed; expected {expected}"));
                    if f["kind"] == "ping" && expected["kind"] != "ping" {
                        let pong = json!({"kind": "pong", "re": f["id"]});
                        raw.send_json(&pong).await.unwrap();
                        continue;
                    }
                    break f;
                };
                if let Err(e) = matches(&expected, &got, &mut vars, "frame") {
                    panic!("line {line}: {e}\n  expected (partial): {expected}\n  received: {got}");
                }
                if got["kind"] == "welcome"
                    && let Some(tx) = welcomed.take()
                {
                    let _ = tx.send(());
                }
                received.push(got);
            }
            other => panic!("line {line}: unknown dir {other:?}"),
        }
    }
    // The transcript ends with the agent's bye: the server closes the connection.
    raw.expect_closed().await;
    (vars, received)
}

#[tokio::test]
async fn a_recorded_v1_agent_still_works_with_this_server() {
    let server = TestServer::start().await;
    let (welcomed_tx, welcomed_rx) = oneshot::channel();

    let operator = async {
        within("the legacy agent's welcome", welcomed_rx).await.expect("the replay reached the welcome");
        let op = server.operator(Transport::Tcp).await;
        // The inventory shows what the old hello declared (unknown fields ignored).
        let listed: Vec<DeviceInfo> = op
            .call_json(
                commands::DEVICES_LIST,
                &DevicesQuery { selector: Some("legacy-1".into()), connected: false, schemas: false },
                WAIT,
            )
            .await
            .unwrap();
        let job = op
            .submit(JobRequest::new("legacy-1", "ping").args(Bytes::from_static(b"null")).deadline(WAIT))
            .await
            .unwrap();
        (listed, finish_job(job).await)
    };
    let ((vars, received), (listed, outcome)) = tokio::join!(replay(&server, welcomed_tx), operator);

    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].id, "legacy-1");
    assert_eq!(listed[0].tags.get("role").map(String::as_str), Some("legacy"), "{listed:?}");
    assert_eq!(listed[0].agent_version.as_deref(), Some("legacy-agent/0.9.0"), "{listed:?}");
    assert_eq!(listed[0].commands, ["ping", "echo"], "{listed:?}");

    // The command the legacy agent received belonged to the operator's job...
    assert_eq!(outcome.accepted.targets, ["legacy-1"]);
    assert_eq!(vars["$CMD_ID"], outcome.accepted.job, "the cmd's id is the job id");
    let cmd = received.iter().find(|f| f["kind"] == "cmd").unwrap();
    assert!(cmd["from"].as_str().unwrap().starts_with("op-"), "{cmd}");

    // ... and its recorded answer came back as the result, byte for byte.
    let reply = steps()
        .iter()
        .filter(|s| s.dir == "send")
        .map(|s| serde_json::from_str::<RecordedFrame<'_>>(s.frame.get()).unwrap())
        .find(|f| f.kind == "reply")
        .and_then(|f| f.body.map(|b| b.get().to_owned()))
        .expect("the transcript has a reply with a body");
    let result = outcome.result("legacy-1");
    assert_eq!(result.status, Status::Ok, "{result:?}");
    assert_eq!(result.result.as_ref().map(|r| r.get()), Some(reply.as_str()), "{result:?}");
    assert_eq!(outcome.ok_json("legacy-1"), serde_json::from_str::<Value>(&reply).unwrap());
    assert_eq!(outcome.count(Status::Ok), 1);

    // The agent said bye; it is gone from the inventory.
    server.wait_for_agents(0).await;
}

#[test]
fn the_matcher_binds_and_checks_variables() {
    let mut vars = HashMap::new();
    let expected = json!({"kind": "cmd", "id": "$X", "job": "$X", "n": "$NUMBER"});
    assert!(
        matches(&expected, &json!({"kind": "cmd", "id": "a", "job": "a", "n": 3, "extra": 1}), &mut vars, "f").is_ok()
    );
    assert_eq!(vars["$X"], "a");
    let mut vars = HashMap::new();
    assert!(matches(&expected, &json!({"kind": "cmd", "id": "a", "job": "b", "n": 3}), &mut vars, "f").is_err());
    assert!(matches(&expected, &json!({"kind": "cmd", "id": "a", "job": "a"}), &mut HashMap::new(), "f").is_err());
    assert!(
        matches(&expected, &json!({"kind": "cmd", "id": "a", "job": "a", "n": "3"}), &mut HashMap::new(), "f").is_err()
    );
    let vars = HashMap::from([("$T".to_owned(), "tok\"en".to_owned())]);
    assert_eq!(substitute(r#"{"token":"$T"}"#, &vars), r#"{"token":"tok\"en"}"#);
}

//! `orb pub`, `orb sub` and `orb tail`: publish one message on a topic (retained or not); print
//! the messages published on topics matching a pattern as they arrive (the retained ones a new
//! subscription gets first included), one per line (`TOPIC  BODY`, or with `--json` one object
//! per line), until `--count` of them or `--timeout`; `orb tail` does that for the server's own
//! events (`$orb.>`), presence and job progress told in words.

use std::time::Duration;

use orb_proto::topic::{Pattern, Topic};

use crate::cli::{FollowArgs, PubArgs, SubArgs, TailArgs};
use crate::connect;
use crate::exit::{self, Failure};
use crate::input;

/// How long the server gets to answer.
const ANSWER: Duration = Duration::from_secs(15);

/// `orb pub TOPIC [BODY] [--retain]`: exits 0 once the server has queued it (for however many
/// subscribers, none included), and with `--retain` stored it (a `null` body clears the topic's
/// retained message).
pub async fn publish(args: PubArgs) -> Result<u8, Failure> {
    let topic = Topic::parse(&args.topic).map_err(|e| Failure::usage(format!("{}: {}", e.code, e.message)))?;
    if topic.is_reserved() {
        return Err(Failure::usage(format!(
            "topic '{}': topics starting with $ ($orb.* and any other) are the server's own; publish on another",
            args.topic
        )));
    }
    let body = input::json_value(args.body.as_deref(), "BODY")?;
    let clears = args.retain && body.as_ref() == b"null";
    let client = connect::operator(&args.connect).await?;
    let delivered = if args.retain {
        client.publish_retained(&args.topic, body, ANSWER).await
    } else {
        client.publish(&args.topic, body, ANSWER).await
    };
    client.close().await;
    let delivered = delivered?;
    if clears {
        eprintln!("cleared the retained message of {} (published to {delivered} subscriber(s))", args.topic);
    } else {
        let retained = if args.retain { " (retained)" } else { "" };
        eprintln!("published on {} to {delivered} subscriber(s){retained}", args.topic);
    }
    Ok(exit::OK)
}

/// `orb sub PATTERN`: exits 0 after `--count` messages, or at `--timeout` when no count was
/// asked for; 1 when the timeout came first or the connection closed.
pub async fn subscribe(args: SubArgs) -> Result<u8, Failure> {
    Pattern::parse(&args.pattern).map_err(|e| Failure::usage(format!("{}: {}", e.code, e.message)))?;
    follow(&args.pattern, args.follow, plain_line).await
}

/// `orb tail`: `orb sub '$orb.>'` with presence and job events in words.
pub async fn tail(args: TailArgs) -> Result<u8, Failure> {
    follow("$orb.>", args.follow, event_line).await
}

/// `TOPIC  BODY`, control characters escaped; a retained message (sent first, published before
/// the subscription) ends with `  (retained)`.
fn plain_line(m: &orb_client::Message) -> String {
    let body = String::from_utf8_lossy(&m.body);
    let retained = if m.retained { "  (retained)" } else { "" };
    format!("{}  {}{retained}", m.topic, escaped(&body))
}

/// A server event in words: `2026-12-06T21:30:00.123Z  gw-1 offline (heartbeat_timeout)`;
/// a job's progress (`$orb.job.<id>`, which carries no time: the time it was received)
/// `...Z  job J: web-1 ok (3 ms)`, `job J: moved from w-1 to w-2 (connection_lost)`,
/// `job J: ended, 2 ok, 1 timeout`. Other events as `TOPIC  BODY`.
fn event_line(m: &orb_client::Message) -> String {
    let v: serde_json::Value = serde_json::from_slice(&m.body).unwrap_or(serde_json::Value::Null);
    let text = |k: &str| v[k].as_str().unwrap_or("?").to_owned();
    if m.topic.starts_with("$orb.presence.") {
        let reason = v["reason"].as_str().map(|r| format!(" ({r})")).unwrap_or_default();
        return format!("{}  {} {}{reason}", text("at"), text("id"), text("status"));
    }
    if m.topic.starts_with("$orb.job.")
        && let Some(words) = job_event(&v)
    {
        let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        return format!("{now}  job {}: {}", text("job"), escaped(&words));
    }
    plain_line(m)
}

/// A job event's body in words; `None` for a shape this version does not know.
fn job_event(v: &serde_json::Value) -> Option<String> {
    if let Some(moved) = v.get("moved") {
        let (from, to, reason) = (moved["from"].as_str()?, moved["to"].as_str()?, moved["reason"].as_str()?);
        return Some(format!("moved from {from} to {to} ({reason})"));
    }
    if v["ended"] == true {
        let counts = v["summary"].as_object()?;
        // `ok` first, then the other statuses (in the summary's order) that happened.
        let ok = counts.get("ok").into_iter().map(|n| ("ok", n));
        let others = counts.iter().filter(|(k, _)| *k != "ok").map(|(k, n)| (k.as_str(), n));
        let mut parts: Vec<String> = ok
            .chain(others)
            .filter(|(_, n)| n.as_u64().is_some_and(|n| n > 0))
            .map(|(k, n)| format!("{n} {k}"))
            .collect();
        if parts.is_empty() {
            parts.push("no targets".to_owned());
        }
        if let Some(skipped) = v["skipped"].as_u64().filter(|n| *n > 0) {
            parts.push(format!("{skipped} skipped (offline)"));
        }
        if let Some(aborted) = v["aborted"].as_str() {
            parts.push(format!("aborted: {aborted}"));
        }
        return Some(format!("ended, {}", parts.join(", ")));
    }
    let (device, status) = (v["device"].as_str()?, v["status"].as_str()?);
    let elapsed = v["elapsed_ms"].as_u64().map(|ms| format!(" ({ms} ms)")).unwrap_or_default();
    let error = match (v["error"]["code"].as_str(), v["error"]["message"].as_str()) {
        (Some(code), Some(message)) if code != status => format!(": {code}: {message}"),
        (_, Some(message)) => format!(": {message}"),
        _ => String::new(),
    };
    Some(format!("{device} {status}{elapsed}{error}"))
}

/// `text` with control characters escaped (a device's error message is its own).
fn escaped(text: &str) -> String {
    if text.chars().any(char::is_control) { text.escape_debug().to_string() } else { text.to_owned() }
}

/// Subscribes to `pattern` and prints each message with `line` (or as JSON) as `args` say.
/// Messages the client library dropped because this reader fell behind (its inbox holds
/// [`orb_client::INBOX`] unread) are reported where they were lost: a line on stderr, and with
/// `--json` a `{"dropped": N}` line in the stream; then the command exits 1.
async fn follow(pattern: &str, args: FollowArgs, line: fn(&orb_client::Message) -> String) -> Result<u8, Failure> {
    let client = connect::operator(&args.connect).await?;
    let mut sub = client.subscribe(pattern, ANSWER).await?;
    // On stderr, so scripts know from when on publications reach them.
    eprintln!("subscribed to {pattern}");
    let json = args.json();
    let deadline = args.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut seen = 0u64;
    let mut dropped = 0u64;
    let outcome = loop {
        if args.count.is_some_and(|n| seen >= n) {
            break Ok(exit::OK);
        }
        let next = match deadline {
            Some(at) => match tokio::time::timeout_at(at, sub.next()).await {
                Ok(next) => next,
                Err(_) if args.count.is_none() => break Ok(exit::OK),
                Err(_) => {
                    let n = args.count.unwrap_or(0);
                    break Err(Failure::new(exit::FAILED, format!("{seen} of {n} messages before the timeout")));
                }
            },
            None => sub.next().await,
        };
        let Some(m) = next else {
            break Err(Failure::new(exit::FAILED, closed_because(&client.closed().await)));
        };
        if m.dropped_before > 0 {
            dropped += m.dropped_before;
            report_dropped(m.dropped_before, json);
        }
        seen += 1;
        if json {
            let body: serde_json::Value = serde_json::from_slice(&m.body).unwrap_or(serde_json::Value::Null);
            let object = serde_json::json!({"topic": m.topic, "body": body, "from": m.from, "retained": m.retained, "seq": m.seq});
            outln!("{object}");
        } else {
            outln!("{}", line(&m));
        }
    };
    // Dropped after the last message printed, with nothing let in since: lost all the same, unless
    // the command stopped at its count (it would not have printed them).
    let trailing = sub.dropped().saturating_sub(dropped);
    if trailing > 0 && args.count.is_none_or(|n| seen < n) {
        dropped += trailing;
        report_dropped(trailing, json);
    }
    drop(sub);
    client.close().await;
    if dropped == 0 {
        return outcome;
    }
    let lost = format!(
        "{dropped} message(s) dropped: this reader fell behind (more than {} unread); read the output faster",
        orb_client::INBOX
    );
    match outcome {
        Ok(_) => Err(Failure::new(exit::FAILED, lost)),
        Err(mut f) => {
            f.message = format!("{}; {lost}", f.message);
            Err(f)
        }
    }
}

/// Why the connection ended, in words: the reason the server gave in its `bye` (explained where
/// a user may wonder), or what the client saw.
fn closed_because(reason: &str) -> String {
    let explained = match reason {
        "slow_consumer" => " (this client read too slowly: the server's queue for it filled)",
        "server_shutdown" => " (the server is stopping)",
        "heartbeat_timeout" => " (the server heard nothing from this client within its heartbeat timeout)",
        "server closed the connection" => {
            return "the server closed the connection without a goodbye (the link broke, or this client \
                    stopped reading, e.g. suspended, and was closed as a slow consumer)"
                .to_owned();
        }
        _ => "",
    };
    // A `bye` gives a bare snake_case reason; anything else is the client's own account.
    if !reason.is_empty() && reason.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
        format!("closed by the server: {reason}{explained}")
    } else {
        format!("the connection closed: {reason}")
    }
}

/// Says that `n` messages were dropped here: on stderr, and in a `--json` stream as a line of
/// its own, so a program reading it sees the gap where it is.
fn report_dropped(n: u64, json: bool) {
    eprintln!("warning: {n} message(s) dropped here: this reader fell behind");
    if json {
        outln!("{}", serde_json::json!({ "dropped": n }));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn job_events_read_as_words() {
        let words = |v: serde_json::Value| job_event(&v).unwrap();
        let ok = serde_json::json!({"job": "J", "device": "web-1", "status": "ok", "elapsed_ms": 3, "error": null});
        assert_eq!(words(ok), "web-1 ok (3 ms)");
        let e = serde_json::json!({"job": "J", "device": "web-2", "status": "error", "elapsed_ms": 5,
            "error": {"code": "bad_args", "message": "sleep: 'soon': expected"}});
        assert_eq!(words(e), "web-2 error (5 ms): bad_args: sleep: 'soon': expected");
        let t = serde_json::json!({"job": "J", "device": "web-3", "status": "timeout", "elapsed_ms": null,
            "error": {"code": "timeout", "message": "no answer within 10s"}});
        assert_eq!(words(t), "web-3 timeout: no answer within 10s");
        let moved = serde_json::json!({"job": "J", "moved": {"from": "w-1", "to": "w-2", "reason": "connection_lost"}});
        assert_eq!(words(moved), "moved from w-1 to w-2 (connection_lost)");
        let ended = serde_json::json!({"job": "J", "ended": true, "skipped": 2, "aborted": null,
            "summary": {"cancelled": 0, "error": 0, "offline": 0, "ok": 2, "timeout": 1}});
        assert_eq!(words(ended), "ended, 2 ok, 1 timeout, 2 skipped (offline)");
        let none = serde_json::json!({"job": "J", "ended": true, "summary": {"ok": 0}, "skipped": 0, "aborted": "x"});
        assert_eq!(words(none), "ended, no targets, aborted: x");
        assert!(job_event(&serde_json::json!({"job": "J", "new": 1})).is_none(), "an unknown shape");
    }

    #[test]
    fn a_close_says_why_in_words() {
        assert_eq!(
            closed_because("slow_consumer"),
            "closed by the server: slow_consumer (this client read too slowly: the server's queue for it filled)"
        );
        assert_eq!(closed_because("revoked"), "closed by the server: revoked");
        assert!(closed_because("server closed the connection").contains("without a goodbye"));
        assert_eq!(
            closed_because("frame_too_large: the server sent a frame above the limit"),
            "the connection closed: frame_too_large: the server sent a frame above the limit"
        );
    }
}

//! `orb pub`, `orb sub` and `orb tail`: publish one message on a topic (retained or not); print
//! the messages published on topics matching a pattern as they arrive (the retained ones a new
//! subscription gets first included), one per line (`TOPIC  BODY`, or with `--json` one object
//! per line), until `--count` of them or `--timeout`; `orb tail` does that for the server's own
//! events (`$orb.>`), presence told in words.

use std::time::Duration;

use orb_proto::topic::{Pattern, Topic};

use crate::cli::{FollowArgs, PubArgs, SubArgs, TailArgs};
use crate::connect;
use crate::exit::{self, Failure};
use crate::input;
use crate::output::Format;

/// How long the server gets to answer.
const ANSWER: Duration = Duration::from_secs(15);

/// `orb pub TOPIC [BODY] [--retain]`: exits 0 once the server has queued it (for however many
/// subscribers, none included), and with `--retain` stored it.
pub async fn publish(args: PubArgs) -> Result<u8, Failure> {
    Topic::parse(&args.topic).map_err(|e| Failure::usage(format!("{}: {}", e.code, e.message)))?;
    let body = input::command_args(args.body.as_deref())?;
    let client = connect::operator(&args.connect).await?;
    let delivered = if args.retain {
        client.publish_retained(&args.topic, body, ANSWER).await
    } else {
        client.publish(&args.topic, body, ANSWER).await
    };
    client.close().await;
    let delivered = delivered?;
    let retained = if args.retain { " (retained)" } else { "" };
    eprintln!("published on {} to {delivered} subscriber(s){retained}", args.topic);
    Ok(exit::OK)
}

/// `orb sub PATTERN`: exits 0 after `--count` messages, or at `--timeout` when no count was
/// asked for; 1 when the timeout came first or the connection closed.
pub async fn subscribe(args: SubArgs) -> Result<u8, Failure> {
    Pattern::parse(&args.pattern).map_err(|e| Failure::usage(format!("{}: {}", e.code, e.message)))?;
    follow(&args.pattern, args.follow, plain_line).await
}

/// `orb tail`: `orb sub '$orb.>'` with presence events in words.
pub async fn tail(args: TailArgs) -> Result<u8, Failure> {
    follow("$orb.>", args.follow, event_line).await
}

/// `TOPIC  BODY`, control characters escaped.
fn plain_line(m: &orb_client::Message) -> String {
    let body = String::from_utf8_lossy(&m.body);
    let text = if body.chars().any(char::is_control) { body.escape_debug().to_string() } else { body.into_owned() };
    format!("{}  {text}", m.topic)
}

/// A server event in words: `2026-12-06T21:30:00.123Z  gw-1 offline (heartbeat_timeout)`.
fn event_line(m: &orb_client::Message) -> String {
    let v: serde_json::Value = serde_json::from_slice(&m.body).unwrap_or(serde_json::Value::Null);
    let text = |k: &str| v[k].as_str().unwrap_or("?").to_owned();
    if m.topic.starts_with("$orb.presence.") {
        let reason = v["reason"].as_str().map(|r| format!(" ({r})")).unwrap_or_default();
        return format!("{}  {} {}{reason}", text("at"), text("id"), text("status"));
    }
    plain_line(m)
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
    let json = args.output.format() == Format::Json;
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
    if trailing > 0 && !args.count.is_some_and(|n| seen >= n) {
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
mod tests {
    use super::*;

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

//! `orb pub` and `orb sub`: publish one message on a topic; print the messages published on
//! topics matching a pattern as they arrive, one per line (`TOPIC  BODY`, or with `--json` one
//! object per line), until `--count` of them or `--timeout`.

use std::time::Duration;

use orb_proto::topic::{Pattern, Topic};

use crate::cli::{PubArgs, SubArgs};
use crate::connect;
use crate::exit::{self, Failure};
use crate::input;
use crate::output::Format;

/// How long the server gets to answer.
const ANSWER: Duration = Duration::from_secs(15);

/// `orb pub TOPIC [BODY]`: exits 0 once the server has queued it (for however many subscribers,
/// none included).
pub async fn publish(args: PubArgs) -> Result<u8, Failure> {
    Topic::parse(&args.topic).map_err(|e| Failure::usage(format!("{}: {}", e.code, e.message)))?;
    let body = input::command_args(args.body.as_deref())?;
    let client = connect::operator(&args.connect).await?;
    let delivered = client.publish(&args.topic, body, ANSWER).await;
    client.close().await;
    let delivered = delivered?;
    eprintln!("published on {} to {delivered} subscriber(s)", args.topic);
    Ok(exit::OK)
}

/// `orb sub PATTERN`: exits 0 after `--count` messages, or at `--timeout` when no count was
/// asked for; 1 when the timeout came first or the connection closed.
pub async fn subscribe(args: SubArgs) -> Result<u8, Failure> {
    Pattern::parse(&args.pattern).map_err(|e| Failure::usage(format!("{}: {}", e.code, e.message)))?;
    let client = connect::operator(&args.connect).await?;
    let mut sub = client.subscribe(&args.pattern, ANSWER).await?;
    // On stderr, so scripts know from when on publications reach them.
    eprintln!("subscribed to {}", args.pattern);
    let json = args.output.format() == Format::Json;
    let deadline = args.timeout.map(|t| tokio::time::Instant::now() + t);
    let mut seen = 0u64;
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
            break Err(Failure::new(exit::FAILED, "the connection closed".to_owned()));
        };
        seen += 1;
        let body = String::from_utf8_lossy(&m.body);
        if json {
            let body: serde_json::Value = serde_json::from_slice(&m.body).unwrap_or(serde_json::Value::Null);
            let line =
                serde_json::json!({"topic": m.topic, "body": body, "from": m.from, "retained": false, "seq": m.seq});
            outln!("{line}");
        } else {
            let text =
                if body.chars().any(char::is_control) { body.escape_debug().to_string() } else { body.into_owned() };
            outln!("{}  {text}", m.topic);
        }
    };
    drop(sub);
    client.close().await;
    outcome
}

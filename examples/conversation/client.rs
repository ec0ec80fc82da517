//! The client side of the eventdispatcher seed's scripted conversation, built on `orb-client`:
//! a permanent connection (it keeps trying until the server is there, so either side may start
//! first) that enrolls as a new device and answers the server's lines: `HI` → `DAD`,
//! `CLIMB` → `TOP`, `WHO` → `MOM`, and on `BYE` it answers `quit`, waits for that answer to be
//! written, and quits. See `server.rs` for the other side.

use std::time::Duration;

use clap::Parser;
use orb_client::{Backoff, ClientConfig, Context, Handlers, LinkEvent, Persistent, ServerUrl};
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What the client answers to each line of the server's.
const ANSWERS: [(&str, &str); 4] = [("HI", "DAD"), ("CLIMB", "TOP"), ("WHO", "MOM"), ("BYE", "quit")];

#[derive(Parser)]
#[command(about = "The conversation's client: answers the server's lines, then quits")]
struct Args {
    /// The conversation server.
    #[arg(long, default_value = "tcp://127.0.0.1:7710")]
    server: ServerUrl,
    /// The server's agent token.
    #[arg(long, default_value = "conversation-agent-token")]
    agent_token: String,
    /// Give up when no server answered for this long.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    give_up_after: Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (said, mut heard) = mpsc::unbounded_channel::<&'static str>();
    let mut handlers = Handlers::new();
    for (line, answer) in ANSWERS {
        let said = said.clone();
        handlers = handlers.on(line, move |_c: Context| {
            let said = said.clone();
            async move {
                println!("server: {line}");
                println!("client: {answer}");
                // The main task is told once this handler runs as a task of the client's own
                // (after its first wait): `drain` then waits for it and for its answer to be
                // queued. Told before, `drain` could close the connection ahead of the answer.
                tokio::task::yield_now().await;
                let _ = said.send(line);
                Ok(json!(answer))
            }
        });
    }

    // A new device each run: the server assigns its id at enrollment.
    let mut config = ClientConfig::agent(args.server.clone(), Some(args.agent_token), "");
    config.id = None;
    config.enroll = true;
    config.agent = "conversation-client/0.1.0".into();
    let backoff = Backoff {
        min: Duration::from_millis(50),
        max: Duration::from_secs(1),
        give_up_after: Some(args.give_up_after),
    };
    let link = Persistent::new(config, vec![args.server], handlers, backoff);
    let mut current = link.current();
    let stop = CancellationToken::new();

    let run = link.run(&stop, |event| match event {
        LinkEvent::Connected { id, .. } => println!("client: connected as {id}"),
        LinkEvent::Failed { .. } => println!("client: no server yet; trying again"),
        _ => {}
    });
    tokio::pin!(run);
    loop {
        tokio::select! {
            ended = &mut run => {
                ended?;
                anyhow::bail!("the link ended before the conversation did");
            }
            line = heard.recv() => {
                if line == Some("BYE") {
                    break;
                }
            }
        }
    }
    // The answer to BYE is written, the connection closes with a `bye` of its own, and only then
    // does the link stop (stopping it first would close the connection under the answer).
    let client = current.borrow_and_update().clone();
    if let Some(client) = client {
        client.drain(Duration::from_secs(5)).await;
    }
    stop.cancel();
    run.await?;
    Ok(())
}

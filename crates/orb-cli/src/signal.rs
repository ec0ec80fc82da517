//! `orb signal MESSAGE [name=value]...`: one admin message (`QUIT`, `RELOAD`, `LOG_ROTATE`,
//! `PING`) to a server over the ordinary protocol; prints the server's answer.

use std::time::Duration;

use orb_proto::message::{SignalRequest, commands};

use crate::cli::SignalArgs;
use crate::connect;
use crate::exit::{self, Failure};
use crate::input;

/// Sends the message; exit 0 when the server accepted it.
pub async fn run(args: SignalArgs) -> Result<u8, Failure> {
    let message = args.message.to_ascii_uppercase();
    if !["QUIT", "RELOAD", "LOG_ROTATE", "PING"].contains(&message.as_str()) {
        return Err(Failure::usage(format!(
            "unknown message '{}': use QUIT, RELOAD, LOG_ROTATE or PING",
            args.message
        )));
    }
    let params = input::pairs(&args.params, "parameter")?;
    let client = connect::operator(&args.connect).await?;
    let req = SignalRequest { message, params };
    let answer: serde_json::Value = client.call_json(commands::SIGNAL, &req, Duration::from_secs(15)).await?;
    client.close().await;
    outln!("{answer}");
    Ok(exit::OK)
}

//! Admin messages (`orb signal`): `PING` is answered here; `QUIT`, `RELOAD` and `LOG_ROTATE`
//! concern the process embedding the server (its configuration file, its log file, its exit),
//! so they are handed to it as [`AdminRequest`]s through [`crate::Server::take_admin_requests`].

use std::time::Duration;

use orb_io::handler::{Context, HandlerResult};
use orb_proto::message::SignalRequest;
use orb_proto::{ErrorBody, ErrorCode};
use tokio::sync::{mpsc, oneshot};

use crate::router::Router;

/// An admin message the embedding process acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminMessage {
    /// Stop gracefully.
    Quit,
    /// Re-read the configuration and apply what can change live.
    Reload,
    /// Reopen the log file.
    LogRotate,
}

/// One admin message and where its answer goes.
#[derive(Debug)]
pub struct AdminRequest {
    /// The message.
    pub message: AdminMessage,
    /// `name=value` parameters given with it.
    pub params: std::collections::BTreeMap<String, String>,
    /// The answer sent back to `orb signal`.
    pub reply: oneshot::Sender<HandlerResult>,
}

/// How long `orb signal` waits for the embedding process to act on a message.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers a `$orb.signal` command.
pub(crate) async fn signal(router: &Router, admin_tx: &mpsc::Sender<AdminRequest>, ctx: &Context) -> HandlerResult {
    let req: SignalRequest = ctx.args()?;
    let message = match req.message.to_ascii_uppercase().as_str() {
        "PING" => {
            let (agents, operators) = router.counts();
            return Ok(serde_json::json!({
                "pong": true,
                "agents": agents,
                "operators": operators,
                "jobs_in_flight": router.jobs_in_flight(),
                "draining": router.is_draining(),
            }));
        }
        "QUIT" => AdminMessage::Quit,
        "RELOAD" => AdminMessage::Reload,
        "LOG_ROTATE" => AdminMessage::LogRotate,
        other => {
            return Err(ErrorBody::new(
                ErrorCode::BadArgs,
                format!("unknown signal '{other}'; use QUIT, RELOAD, LOG_ROTATE or PING"),
            ));
        }
    };
    let (reply, answer) = oneshot::channel();
    let unavailable = || ErrorBody::new(ErrorCode::Unsupported, "this server does not handle admin messages");
    admin_tx.try_send(AdminRequest { message, params: req.params, reply }).map_err(|_| unavailable())?;
    match tokio::time::timeout(ANSWER_TIMEOUT, answer).await {
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err(unavailable()),
        Err(_) => Err(ErrorBody::new(ErrorCode::Timeout, "the server did not act on the message in time")),
    }
}

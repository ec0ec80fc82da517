//! Admin messages (`orb signal`): `QUIT`, `RELOAD` and `LOG_ROTATE` concern the process
//! embedding the server (its configuration file, its log file, its exit), so the broker hands
//! them to it as [`AdminRequest`]s through [`crate::Server::take_admin_requests`]; `PING` is
//! answered by the broker itself.

use orb_io::handler::HandlerResult;
use tokio::sync::oneshot;

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

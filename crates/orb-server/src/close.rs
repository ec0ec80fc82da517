//! Why a session ended ([`CloseReason`]) and the [`Closer`] other tasks use to end it: the router
//! closes a slow consumer or a replaced session; the session's own loop records every other reason.

use std::sync::{Arc, OnceLock};

use orb_io::signal::Signal;

/// The typed reason a session closed. Logged and (with the lifecycle issue) counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum CloseReason {
    /// The peer closed the connection (or it broke).
    PeerClosed,
    /// No `hello` within the handshake timeout.
    HandshakeTimeout,
    /// The `hello` was refused.
    AuthFailed,
    /// The peer broke the protocol (bad frame, first frame not hello).
    ProtocolViolation,
    /// The outbound queue was full.
    SlowConsumer,
    /// Nothing received within the heartbeat timeout.
    HeartbeatTimeout,
    /// The server is stopping.
    ServerShutdown,
    /// A newer session with the same device id replaced this one.
    Replaced,
    /// The peer sent a frame above the size limit.
    FrameTooLarge,
    /// The connection limit (total or per address) was reached.
    ConnectionLimit,
    /// An operator revoked the device's credential.
    Revoked,
    /// An operator removed the device from the registry.
    Removed,
    /// The hello was refused because its address enrolled too many new devices just now.
    RateLimited,
    /// The server could not serve the connection (its store failed during the handshake).
    ServerError,
}

impl CloseReason {
    /// Every reason, in declaration order (the index is `reason as usize`).
    pub const ALL: [CloseReason; 14] = [
        CloseReason::PeerClosed,
        CloseReason::HandshakeTimeout,
        CloseReason::AuthFailed,
        CloseReason::ProtocolViolation,
        CloseReason::SlowConsumer,
        CloseReason::HeartbeatTimeout,
        CloseReason::ServerShutdown,
        CloseReason::Replaced,
        CloseReason::FrameTooLarge,
        CloseReason::ConnectionLimit,
        CloseReason::Revoked,
        CloseReason::Removed,
        CloseReason::RateLimited,
        CloseReason::ServerError,
    ];

    /// The snake_case name used in logs, `bye` bodies and docs.
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::PeerClosed => "peer_closed",
            CloseReason::HandshakeTimeout => "handshake_timeout",
            CloseReason::AuthFailed => "auth_failed",
            CloseReason::ProtocolViolation => "protocol_violation",
            CloseReason::SlowConsumer => "slow_consumer",
            CloseReason::HeartbeatTimeout => "heartbeat_timeout",
            CloseReason::ServerShutdown => "server_shutdown",
            CloseReason::Replaced => "replaced",
            CloseReason::FrameTooLarge => "frame_too_large",
            CloseReason::Revoked => "revoked",
            CloseReason::Removed => "removed",
            CloseReason::ConnectionLimit => "connection_limit",
            CloseReason::RateLimited => "rate_limited",
            CloseReason::ServerError => "server_error",
        }
    }
}

impl std::fmt::Display for CloseReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Ends a session from outside its task. The first reason given wins.
///
/// Cloning is one reference-count increment: outboxes (and so closers) are cloned on every
/// forwarded request.
#[derive(Clone, Default)]
pub struct Closer(Arc<CloserInner>);

#[derive(Default)]
struct CloserInner {
    signal: Signal,
    reason: OnceLock<CloseReason>,
    /// The reason as presence and job events tell it, when it differs from `reason`'s name.
    told: OnceLock<&'static str>,
}

impl Closer {
    /// Asks the session to close for `reason` (ignored if a reason was already given).
    pub fn close(&self, reason: CloseReason) {
        let _ = self.0.reason.set(reason);
        self.0.signal.raise();
    }

    /// [`Closer::close`] by the session itself as it ends, with the reason told in events
    /// (`connection_lost` for a peer that closed without a `bye`); see [`Closer::told`].
    pub fn close_told(&self, reason: CloseReason, told: &'static str) {
        if self.0.reason.set(reason).is_ok() {
            let _ = self.0.told.set(told);
        }
        self.0.signal.raise();
    }

    /// The reason as presence and job events tell it: what [`Closer::close_told`] gave with
    /// the reason that won, else the reason's name (`server_shutdown` when none was given).
    pub fn told(&self) -> &'static str {
        match (self.0.told.get(), self.0.reason.get()) {
            (Some(told), _) => told,
            (None, Some(reason)) => reason.as_str(),
            (None, None) => CloseReason::ServerShutdown.as_str(),
        }
    }

    /// Resolves once [`Closer::close`] was called, with the reason.
    ///
    /// # Cancel safety
    /// Cancel-safe.
    pub async fn closed(&self) -> CloseReason {
        self.0.signal.raised().await;
        self.0.reason.get().copied().unwrap_or(CloseReason::ServerShutdown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_reason_wins_and_is_told_as_given_with_it() {
        let closer = Closer::default();
        closer.close_told(CloseReason::PeerClosed, "connection_lost");
        closer.close(CloseReason::SlowConsumer);
        assert_eq!(closer.told(), "connection_lost");
        let closer = Closer::default();
        closer.close(CloseReason::SlowConsumer);
        closer.close_told(CloseReason::PeerClosed, "connection_lost");
        assert_eq!(closer.told(), "slow_consumer");
    }

    #[test]
    fn all_lists_every_reason_at_its_index() {
        for (i, r) in CloseReason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r}");
        }
    }
}

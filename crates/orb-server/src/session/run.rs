//! An established wire session's read loop: reads frames and acts on each (commands through
//! `commands`, device replies to the broker, pings, goodbyes), pings the peer every heartbeat
//! interval, and applies backpressure: while the session's own outbound queue is full, or it has
//! as many commands in flight as allowed, the loop stops reading from the connection (TCP then
//! slows the sender) instead of failing anything. A peer whose queue stays full for the
//! heartbeat timeout has stopped reading: it is closed as a slow consumer.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use orb_io::transport::{FrameSource, LinkStats, TransportError};
use orb_proto::{Codec, Envelope, ErrorBody, ErrorCode, Kind};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::Shared;
use crate::close::CloseReason;
use crate::identity::Requester;
use crate::router::delivery::{Outbox, trace_envelope};
use crate::router::sessions::{DeviceRecord, OperatorGuard, Registration};

/// Keeps a session listed while it lives.
pub(super) enum Registered {
    Device(Registration),
    Operator { _guard: OperatorGuard },
}

/// Commands a session has sent (forms 1 and 2) that are not answered yet. A [`Ticket`] holds one
/// until the answer is queued.
#[derive(Default)]
pub(super) struct InFlight {
    count: AtomicUsize,
    freed: Notify,
}

impl InFlight {
    pub(super) fn ticket(self: &Arc<Self>) -> Ticket {
        self.count.fetch_add(1, Ordering::AcqRel);
        Ticket(Arc::clone(self))
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    /// Resolves once fewer than `limit` are in flight.
    async fn below(&self, limit: usize) {
        loop {
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if self.count() < limit {
                return;
            }
            freed.await;
        }
    }
}

/// One command in flight; released when dropped.
pub(super) struct Ticket(Arc<InFlight>);

impl Drop for Ticket {
    fn drop(&mut self) {
        self.0.count.fetch_sub(1, Ordering::AcqRel);
        self.0.freed.notify_waiters();
    }
}

/// An established session.
pub(super) struct Session {
    pub(super) shared: Arc<Shared>,
    pub(super) outbox: Outbox,
    pub(super) requester: Requester,
    registered: Registered,
    /// The device's record (agents), where the measured RTT is kept.
    record: Option<Arc<DeviceRecord>>,
    /// The frame to send last (an error explaining the close), set when a frame ends the session.
    last: Option<Bytes>,
    /// Traffic counters of the connection (the writer counts what it sends).
    stats: Arc<LinkStats>,
    pub(super) inflight: Arc<InFlight>,
    /// The server's outstanding ping: its id and when it was sent (for RTT).
    ping: Option<(u64, Instant)>,
    pings_sent: u64,
}

/// Why the read loop is not reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Paused {
    /// Reading.
    No,
    /// The session's own queue is full: the peer reads slower than it asks.
    QueueFull,
    /// As many commands in flight as allowed.
    InFlight,
}

impl Session {
    pub(super) fn new(
        shared: Arc<Shared>,
        outbox: Outbox,
        requester: Requester,
        registered: Registered,
        record: Option<Arc<DeviceRecord>>,
        stats: Arc<LinkStats>,
    ) -> Session {
        Session {
            shared,
            outbox,
            requester,
            registered,
            record,
            last: None,
            stats,
            inflight: Arc::default(),
            ping: None,
            pings_sent: 0,
        }
    }

    /// The session's name (device id or `op-N`).
    pub(super) fn name(&self) -> &str {
        &self.requester.identity.name
    }

    /// The codec of the session's frames.
    pub(super) fn codec(&self) -> Codec {
        self.outbox.codec
    }

    /// The frame to send last, if a frame ended the session.
    pub(super) fn take_last(&mut self) -> Option<Bytes> {
        self.last.take()
    }

    /// The session ended for `reason`: a device's disconnection is recorded (a replaced session's
    /// end is not the device's: its successor is connected).
    pub(super) fn ended(&self, reason: CloseReason) {
        if let Registered::Device(r) = &self.registered
            && reason != CloseReason::Replaced
        {
            self.shared.broker.registry().disconnected(r.id().as_str(), chrono::Utc::now());
        }
    }

    pub(super) async fn run<R: FrameSource>(&mut self, source: &mut R) -> CloseReason {
        let limits = self.shared.broker.limits();
        // One timer: every heartbeat interval the server pings (measuring RTT) and checks that the
        // peer said something within the timeout. Idle sessions wake only this often, and the
        // frame path reads no clock: silence is counted in intervals.
        // At least 1 ms: limits built through the library API are not validated like the config.
        let every = limits.heartbeat.min(limits.heartbeat_timeout / 2).max(Duration::from_millis(1));
        let mut heartbeat = tokio::time::interval_at(Instant::now() + every, every);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (mut heard, mut silent) = (true, 0u32);
        let max_inflight = limits.max_inflight_requests.max(1);
        // Created once, not per frame: each `cancelled()` registers a waiter.
        let closer = self.outbox.closer.clone();
        let closed = closer.closed();
        tokio::pin!(closed);
        let shutdown = self.shared.broker.shutdown_token().clone();
        let stopping = shutdown.cancelled();
        tokio::pin!(stopping);
        loop {
            let paused = if self.outbox.tx.is_full() {
                Paused::QueueFull
            } else if self.inflight.count() >= max_inflight {
                Paused::InFlight
            } else {
                Paused::No
            };
            tokio::select! {
                biased;
                reason = &mut closed => return reason,
                () = &mut stopping => return CloseReason::ServerShutdown,
                _ = self.outbox.tx.space(), if paused == Paused::QueueFull => {}
                () = self.inflight.below(max_inflight), if paused == Paused::InFlight => {}
                frame = source.next_frame(), if paused == Paused::No => match frame {
                    Ok(Some(f)) => {
                        heard = true;
                        self.stats.received(f.len());
                        if let Err(reason) = self.on_frame(&f) {
                            return reason;
                        }
                    }
                    Ok(None) | Err(TransportError::Io(_)) => return CloseReason::PeerClosed,
                    Err(e @ TransportError::FrameTooLarge { .. }) => {
                        self.last = Some(self.error_frame(None, ErrorCode::FrameTooLarge, e.to_string()));
                        return CloseReason::FrameTooLarge;
                    }
                    Err(e @ TransportError::Protocol(_)) => {
                        self.last = Some(self.error_frame(None, ErrorCode::BadFrame, e.to_string()));
                        return CloseReason::ProtocolViolation;
                    }
                },
                _ = heartbeat.tick() => {
                    // Waiting on its own commands is not silence; a peer that does not read its
                    // answers is (nothing it sends is read meanwhile).
                    if heard || paused == Paused::InFlight {
                        (heard, silent) = (false, 0);
                    } else {
                        silent += 1;
                        if every * silent >= limits.heartbeat_timeout {
                            return if paused == Paused::QueueFull {
                                CloseReason::SlowConsumer
                            } else {
                                CloseReason::HeartbeatTimeout
                            };
                        }
                    }
                    self.send_ping();
                }
            }
        }
    }

    /// Acts on one frame. `Err` ends the session with that reason.
    fn on_frame(&mut self, frame: &Bytes) -> Result<(), CloseReason> {
        let env = match self.outbox.codec.decode(frame) {
            Ok(env) => env,
            Err(e) => {
                self.last = Some(self.error_frame(None, ErrorCode::BadFrame, e.to_string()));
                return Err(CloseReason::ProtocolViolation);
            }
        };
        if tracing::enabled!(tracing::Level::TRACE) {
            trace_envelope("in", self.outbox.conn, &env, frame.len());
        }
        match env.kind {
            Kind::Cmd => self.on_cmd(env),
            Kind::Reply => self.on_reply(env),
            Kind::Ping => {
                let mut pong = Envelope::new(Kind::Pong);
                pong.re = env.id;
                self.answer(&pong);
            }
            Kind::Pong => self.on_pong(env.re.as_deref(), Instant::now()),
            Kind::Bye => return Err(CloseReason::PeerClosed),
            // Answering an error with an error could loop between two peers: it is only logged.
            Kind::Error => tracing::debug!(error = ?env.error, "peer reported an error"),
            Kind::Hello | Kind::Welcome | Kind::Ack | Kind::Event | Kind::Cancel => {
                let msg = format!("{} is not valid from a client on an established session", env.kind.as_str());
                self.answer(&Envelope::error(env.id, ErrorCode::BadRequest, msg));
            }
            Kind::Pub | Kind::Sub | Kind::Unsub | Kind::Config | Kind::Unknown => {
                let msg = "this message kind is not supported by this server".to_owned();
                self.answer(&Envelope::error(env.id, ErrorCode::Unsupported, msg));
            }
        }
        Ok(())
    }

    /// A device's answer to a command the broker sent it.
    fn on_reply(&self, env: Envelope) {
        let Registered::Device(registration) = &self.registered else {
            tracing::debug!("reply from an operator session ignored: operators are sent no commands");
            return;
        };
        let Some(re) = env.re.as_deref() else {
            tracing::debug!(agent.id = %registration.id(), "reply without re ignored");
            return;
        };
        let answer = match env.error {
            Some(e) => Err(e),
            None => Ok(env.body.unwrap_or_else(|| Bytes::from_static(b"null"))),
        };
        self.shared.broker.reply_from(registration.id(), re, answer);
    }

    fn send_ping(&mut self) {
        self.pings_sent += 1;
        let mut ping = Envelope::new(Kind::Ping);
        ping.id = Some(format!("s{}", self.pings_sent));
        self.answer(&ping);
        self.ping = Some((self.pings_sent, Instant::now()));
    }

    fn on_pong(&mut self, re: Option<&str>, at: Instant) {
        let Some((id, sent)) = &self.ping else { return };
        if re.and_then(|r| r.strip_prefix('s')).and_then(|n| n.parse::<u64>().ok()) != Some(*id) {
            return;
        }
        let rtt = at.saturating_duration_since(*sent);
        if let Some(record) = &self.record {
            let us = u64::try_from(rtt.as_micros()).unwrap_or(u64::MAX).max(1);
            record.rtt_us.store(us, Ordering::Relaxed);
        }
        self.ping = None;
    }

    /// Queues `env` (a pong, a ping, an error answering a frame) as an answer: admitted above the
    /// queue's limits, which the read loop's backpressure bounds.
    pub(super) fn answer(&self, env: &Envelope) {
        let _ = self.outbox.reply_env(env);
    }

    fn error_frame(&self, re: Option<String>, code: ErrorCode, message: impl Into<String>) -> Bytes {
        self.outbox.codec.encode(&Envelope::error(re, code, message))
    }

    /// Answers command `re` with an error `reply`.
    pub(super) fn reply_err(&self, re: String, e: ErrorBody) {
        self.answer(&Envelope::reply_err(re, e.code, e.message));
    }
}

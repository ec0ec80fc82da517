//! An established wire session's read loop: reads frames and acts on each (commands through
//! `commands`, device replies to the broker, pings, goodbyes), pings the peer every heartbeat
//! interval, and applies backpressure: while the session's own outbound queue is full, it has
//! as many commands in flight as allowed, or a frame it sent waits for its message rate (`pace`),
//! the loop stops reading from the connection (TCP then slows the sender) instead of failing
//! anything. A peer whose queue stays full for the heartbeat timeout has stopped reading: it is
//! closed as a slow consumer.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use orb_io::transport::{FrameSource, LinkStats, TransportError};
use orb_proto::{Codec, Envelope, ErrorBody, ErrorCode, Kind};
use tokio::time::Instant;

use super::Shared;
use super::pace::Pace;
use crate::close::CloseReason;
use crate::identity::Requester;
use crate::metrics::RateLimit;
use crate::router::delivery::{Outbox, trace_envelope};
use crate::router::sessions::{DeviceRecord, OperatorGuard, Registration};

/// Keeps a session listed while it lives.
pub(super) enum Registered {
    Device(Registration),
    Operator { _guard: OperatorGuard },
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
    /// The server's outstanding ping: its id and when it was sent (for RTT).
    ping: Option<(u64, Instant)>,
    pings_sent: u64,
    /// Outbox messages on their way to the store, in arrival order (started with the first).
    pub(super) messages: Option<super::commands::MessageQueue>,
    /// The client's last will, published if the connection ends without a `bye`.
    pub(super) will: Option<orb_proto::message::Will>,
    /// The client said `bye`: its end is normal, whatever the socket does next.
    said_bye: bool,
    /// The session's message rate.
    pace: Pace,
}

/// Two clocks counted in heartbeat intervals (the frame path reads no clock for them; an idle
/// session wakes once an interval): how long the peer has said nothing, and how long frames have
/// waited for it without the writer getting any out. Waiting for the message rate is a pause of
/// the reader, not silence.
struct Silence {
    /// The interval: the heartbeat, at most half the timeout, at least 1 ms (limits built
    /// through the library API are not validated like the configuration).
    every: Duration,
    timeout: Duration,
    /// A frame arrived since the last tick.
    heard: bool,
    /// Intervals without a frame from the peer.
    silent: u32,
    /// Frames written by the last tick.
    sent: u64,
    /// Intervals with frames queued and none written.
    stuck: u32,
}

impl Silence {
    fn new(heartbeat: Duration, timeout: Duration) -> Silence {
        let every = heartbeat.min(timeout / 2).max(Duration::from_millis(1));
        Silence { every, timeout, heard: true, silent: 0, sent: 0, stuck: 0 }
    }

    /// One interval passed while the reader was `paused`, the writer had written `sent` frames
    /// in all, and frames were `queued`; `Some` when the session must end. A peer that takes
    /// nothing queued for it for the timeout stopped reading (`slow_consumer`), however much
    /// it sends; one that says nothing for the timeout while read is gone (`heartbeat_timeout`).
    /// Waiting, unread, for its own answers to be taken is not silence.
    fn tick(&mut self, paused: Paused, sent: u64, queued: bool) -> Option<CloseReason> {
        let wrote = std::mem::replace(&mut self.sent, sent) != sent;
        self.stuck = if queued && !wrote { self.stuck + 1 } else { 0 };
        if self.every * self.stuck >= self.timeout {
            return Some(CloseReason::SlowConsumer);
        }
        if self.heard || paused != Paused::No {
            (self.heard, self.silent) = (false, 0);
            return None;
        }
        self.silent += 1;
        (self.every * self.silent >= self.timeout).then_some(CloseReason::HeartbeatTimeout)
    }
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
    /// A frame read waits for its token of the message rate, there after this long.
    Rate(Duration),
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
        let pace = Pace::new(requester.identity.role, &shared.broker.limits());
        Session {
            shared,
            outbox,
            requester,
            registered,
            record,
            last: None,
            stats,
            ping: None,
            pings_sent: 0,
            messages: None,
            will: None,
            said_bye: false,
            pace,
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
        // Without a `bye` the client vanished: its will is published (a server stopping, or an
        // operator ending the session, is not the client's failure).
        let vanished = !self.said_bye
            && matches!(
                reason,
                CloseReason::PeerClosed
                    | CloseReason::HeartbeatTimeout
                    | CloseReason::ProtocolViolation
                    | CloseReason::SlowConsumer
                    | CloseReason::FrameTooLarge
            );
        // How presence and job events (an "any one of" job's `moved`) tell it.
        let told = if vanished && reason == CloseReason::PeerClosed { "connection_lost" } else { reason.as_str() };
        // Whoever watches this session (an "any one of" job) learns it ended, whatever ended it.
        self.outbox.closer.close_told(reason, told);
        let broker = &self.shared.broker;
        broker.connection_closed(self.outbox.conn);
        if let Some(will) = self.will.as_ref().filter(|_| vanished) {
            broker.publish_will(&self.requester, will);
        }
        if let Registered::Device(r) = &self.registered {
            broker.held_session_ended(r.id(), self.outbox.conn);
        }
        if let Registered::Device(r) = &self.registered
            && reason != CloseReason::Replaced
        {
            broker.registry().disconnected(r.id().as_str(), chrono::Utc::now());
            broker.publish_presence(r.id(), Some(told));
        }
    }

    pub(super) async fn run<R: FrameSource>(&mut self, source: &mut R) -> CloseReason {
        let limits = self.shared.broker.limits();
        let mut silence = Silence::new(limits.heartbeat, limits.heartbeat_timeout);
        let mut heartbeat = tokio::time::interval_at(Instant::now() + silence.every, silence.every);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let max_inflight = limits.max_inflight_requests.max(1);
        // Created once, not per frame: each `cancelled()` registers a waiter.
        let closer = self.outbox.closer.clone();
        let closed = closer.closed();
        tokio::pin!(closed);
        let shutdown = self.shared.broker.shutdown_token().clone();
        let stopping = shutdown.cancelled();
        tokio::pin!(stopping);
        // A frame read before its token of the message rate was there.
        let mut held: Option<Bytes> = None;
        loop {
            let mut paused = if self.outbox.tx.is_full() {
                Paused::QueueFull
            } else if self.requester.commands_open() >= max_inflight {
                Paused::InFlight
            } else {
                Paused::No
            };
            if paused == Paused::No
                && let Some(frame) = held.take()
            {
                match self.pace.take() {
                    Ok(()) => {
                        if let Err(reason) = self.on_frame(&frame) {
                            return reason;
                        }
                        continue;
                    }
                    Err(wait) => {
                        held = Some(frame);
                        paused = Paused::Rate(wait);
                    }
                }
            }
            if paused != Paused::No {
                // The rare path, in a select of its own with its wait boxed: kept out of the
                // reading select, it costs idle sessions no memory.
                let tx = self.outbox.tx.clone();
                let requester = self.requester.clone();
                let resume = Box::pin(async move {
                    match paused {
                        Paused::QueueFull => drop(tx.space().await),
                        Paused::InFlight => requester.commands_below(max_inflight).await,
                        Paused::Rate(wait) => tokio::time::sleep(wait).await,
                        Paused::No => {}
                    }
                });
                tokio::select! {
                    biased;
                    reason = &mut closed => return reason,
                    () = &mut stopping => return CloseReason::ServerShutdown,
                    () = resume => {}
                    _ = heartbeat.tick() => {
                        if let Some(reason) = self.heartbeat(&mut silence, paused) {
                            return reason;
                        }
                    }
                }
                continue;
            }
            tokio::select! {
                biased;
                reason = &mut closed => return reason,
                () = &mut stopping => return CloseReason::ServerShutdown,
                frame = source.next_frame() => match frame {
                    Ok(Some(f)) => {
                        silence.heard = true;
                        self.stats.received(f.len());
                        if self.pace.take().is_err() {
                            self.rate_limited();
                            held = Some(f);
                        } else if let Err(reason) = self.on_frame(&f) {
                            return reason;
                        }
                    }
                    Ok(None) | Err(TransportError::Io(_)) => return CloseReason::PeerClosed,
                    Err(e @ TransportError::FrameTooLarge { .. }) => {
                        self.last = Some(self.error_frame(None, ErrorCode::FrameTooLarge, e.to_string()));
                        return CloseReason::FrameTooLarge;
                    }
                    Err(e @ (TransportError::Protocol(_) | TransportError::Http(_))) => {
                        self.last = Some(self.error_frame(None, ErrorCode::BadFrame, e.to_string()));
                        return CloseReason::ProtocolViolation;
                    }
                },
                _ = heartbeat.tick() => {
                    if let Some(reason) = self.heartbeat(&mut silence, Paused::No) {
                        return reason;
                    }
                }
            }
        }
    }

    /// Acts on one frame. `Err` ends the session with that reason.
    fn on_frame(&mut self, frame: &Bytes) -> Result<(), CloseReason> {
        let metrics = self.shared.broker.metrics();
        let env = match self.outbox.codec.decode(frame) {
            Ok(env) => {
                metrics.received(env.kind, frame.len());
                env
            }
            Err(e) => {
                metrics.received(Kind::Unknown, frame.len());
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
            Kind::Progress => self.on_progress(env),
            Kind::Ping => {
                let mut pong = Envelope::new(Kind::Pong);
                pong.re = env.id;
                self.answer(&pong);
            }
            Kind::Pong => self.on_pong(env.re.as_deref(), Instant::now()),
            Kind::Bye => {
                self.said_bye = true;
                return Err(CloseReason::PeerClosed);
            }
            // Answering an error with an error could loop between two peers: it is only logged.
            Kind::Error => tracing::debug!(error = ?env.error, "peer reported an error"),
            Kind::Hello | Kind::Welcome | Kind::Ack | Kind::Event | Kind::Cancel | Kind::Config => {
                let msg = format!("{} is not valid from a client on an established session", env.kind.as_str());
                self.answer(&Envelope::error(env.id, ErrorCode::BadRequest, msg));
            }
            Kind::Pub => self.on_pub(env),
            Kind::Sub => self.on_sub(env),
            Kind::Unsub => self.on_unsub(env),
            Kind::Unknown => {
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

    /// A device's progress on a command the broker sent it: passed on best effort, or dropped.
    fn on_progress(&self, env: Envelope) {
        let Registered::Device(registration) = &self.registered else {
            tracing::debug!("progress from an operator session ignored: operators are sent no commands");
            return;
        };
        let Some(re) = env.re.as_deref() else {
            tracing::debug!(agent.id = %registration.id(), "progress without re ignored");
            return;
        };
        let body = env.body.unwrap_or_else(|| Bytes::from_static(b"null"));
        // What reaches a requester is held to the body limits, like a result.
        if orb_proto::body::check(&body).is_err() {
            tracing::debug!(agent.id = %registration.id(), "progress beyond the body limits dropped");
            return;
        }
        self.shared.broker.progress_from(registration.id(), re, body);
    }

    /// A frame read waits for its token of the message rate: counted, and logged the first time.
    fn rate_limited(&mut self) {
        self.shared.broker.metrics().rate_limited(RateLimit::Messages);
        if self.pace.slowed() {
            let per_second = self.pace.per_second();
            tracing::info!(
                limit = per_second,
                "the client sends more than {per_second} frames a second: the server reads from it at that rate \
                 (counted in orb_rate_limited_total; not logged again for this session)"
            );
        }
    }

    /// An interval passed: check the peer's silence and reading, then ping it (measuring RTT).
    /// A reloaded message rate applies from here.
    fn heartbeat(&mut self, silence: &mut Silence, paused: Paused) -> Option<CloseReason> {
        self.pace.reload(self.requester.identity.role, &self.shared.broker.limits());
        let sent = self.stats.sent_messages.load(Ordering::Relaxed);
        let reason = silence.tick(paused, sent, !self.outbox.tx.is_empty());
        if reason.is_none() {
            self.send_ping();
        }
        reason
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
        if let Ok(len) = self.outbox.reply_env(env) {
            self.shared.broker.metrics().sent(env.kind, len);
        }
    }

    fn error_frame(&self, re: Option<String>, code: ErrorCode, message: impl Into<String>) -> Bytes {
        self.outbox.codec.encode(&Envelope::error(re, code, message))
    }

    /// Answers command `re` with an error `reply`.
    pub(super) fn reply_err(&self, re: String, e: ErrorBody) {
        self.answer(&Envelope::reply_error(re, e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_silent_peer_times_out_but_one_waiting_for_its_answers_does_not() {
        let mut s = Silence::new(Duration::from_secs(15), Duration::from_secs(45));
        assert_eq!(s.every, Duration::from_secs(15));
        assert_eq!(s.tick(Paused::No, 1, false), None, "heard at the start");
        assert_eq!(s.tick(Paused::No, 2, false), None);
        assert_eq!(s.tick(Paused::No, 3, false), None);
        assert_eq!(s.tick(Paused::No, 4, false), Some(CloseReason::HeartbeatTimeout));
        let mut s = Silence::new(Duration::from_secs(15), Duration::from_secs(45));
        for sent in 0..10 {
            assert_eq!(s.tick(Paused::InFlight, sent, false), None);
        }
    }

    #[test]
    fn a_peer_that_takes_nothing_queued_is_a_slow_consumer_even_while_it_talks() {
        let mut s = Silence::new(Duration::from_secs(15), Duration::from_secs(45));
        for _ in 0..3 {
            s.heard = true;
            assert_eq!(s.tick(Paused::No, 5, true), None, "the first tick sees the frames written so far");
        }
        s.heard = true;
        assert_eq!(s.tick(Paused::No, 5, true), Some(CloseReason::SlowConsumer));
        // One that reads, however slowly, is not.
        let mut s = Silence::new(Duration::from_secs(15), Duration::from_secs(45));
        for sent in 0..10 {
            assert_eq!(s.tick(Paused::QueueFull, sent, true), None);
        }
    }
}

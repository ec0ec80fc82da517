//! How a frame reaches one connection: its [`Outbox`] (bounded outbound queue, closer, codec and
//! the frame limit its peer accepts). Every frame for a session goes through here: commands to a
//! device (the one place a remote node will later stand behind), answers to a requester, and
//! control frames. A full queue never makes a sender wait: the session is closed as a slow
//! consumer instead, except for answers, which [`Outbox::reply`] admits above the limits (their
//! number is bounded by what the session's reader read, and it stops reading while full).

use std::sync::Arc;

use bytes::Bytes;
use orb_io::queue::{QueueTx, TrySendError, Undelivered};
use orb_proto::{Codec, Envelope, ErrorCode};

use crate::close::{CloseReason, Closer};

/// A way to reach one session.
#[derive(Clone)]
pub struct Outbox {
    /// Connection id (unique per server process).
    pub conn: u64,
    /// Encoded frames for the session's writer.
    pub tx: QueueTx,
    /// Ends the session (slow consumer, replaced, revoked).
    pub closer: Closer,
    /// The envelope codec negotiated in the session's handshake (JSON until the welcome is sent).
    pub codec: Codec,
    /// The largest frame the peer accepts: the server's `max_frame`, announced in `welcome`.
    pub max_frame: usize,
}

/// Why a frame could not be queued for a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryError {
    /// The queue was full: the session is being closed as a slow consumer.
    SlowConsumer,
    /// The session is gone.
    Closed,
}

impl Outbox {
    /// Queues a frame without waiting. A full queue closes the session with `slow_consumer`:
    /// nothing is dropped silently, and a slow peer never stalls the sender.
    ///
    /// # Errors
    /// [`DeliveryError`] when the frame was not queued.
    pub fn deliver(&self, frame: Bytes) -> Result<(), DeliveryError> {
        self.trace_out(&frame);
        self.outcome(self.tx.try_send(frame))
    }

    /// [`Outbox::deliver`] for a command that someone waits for: if the session closes with the
    /// frame still queued, `notice` is told (the command never reached the device).
    ///
    /// # Errors
    /// [`DeliveryError`] when the frame was not queued (the notice is not called then).
    pub fn deliver_noticed(&self, frame: Bytes, notice: Arc<dyn Undelivered>, slot: u32) -> Result<(), DeliveryError> {
        self.trace_out(&frame);
        self.outcome(self.tx.try_send_noticed(frame, notice, slot))
    }

    /// Queues an answer to something this session asked (a reply, a pong, an error), admitted
    /// above the queue's limits by its answers' allowance (as many frames as the session may have
    /// commands open); beyond that the peer is not reading and is closed as a slow consumer.
    ///
    /// # Errors
    /// [`DeliveryError`] when the frame was not queued.
    pub fn reply(&self, frame: Bytes) -> Result<(), DeliveryError> {
        self.trace_out(&frame);
        self.outcome(self.tx.send_reply(frame))
    }

    /// Encodes `env` with this session's codec and queues it as an answer ([`Outbox::reply`]);
    /// answers the frame's length. A frame above the peer's limit is replaced by a
    /// `frame_too_large` error answering the same `re` (same kind), so the peer never receives a
    /// frame it must refuse.
    ///
    /// # Errors
    /// [`DeliveryError`] when the frame was not queued.
    pub fn reply_env(&self, env: &Envelope) -> Result<usize, DeliveryError> {
        let frame = self.encode_within_limit(env);
        let len = frame.len();
        self.reply(frame).map(|()| len)
    }

    /// `env` encoded with this session's codec; when that exceeds the peer's frame limit, the
    /// answer it carried is replaced by a `frame_too_large` error (same kind, `re`, `job` and
    /// `device`), which always fits.
    pub fn encode_within_limit(&self, env: &Envelope) -> Bytes {
        let frame = self.codec.encode(env);
        if frame.len() <= self.max_frame {
            return frame;
        }
        let mut small = Envelope::new(env.kind);
        small.re = env.re.clone();
        small.job = env.job.clone();
        small.device = env.device.clone();
        small.status = env.status.map(|_| orb_proto::Status::Error);
        small.error = Some(orb_proto::ErrorBody::new(
            ErrorCode::FrameTooLarge,
            format!("the answer ({} bytes) is larger than the frame limit of {} bytes", frame.len(), self.max_frame),
        ));
        self.codec.encode(&small)
    }

    fn outcome(&self, sent: Result<(), TrySendError>) -> Result<(), DeliveryError> {
        match sent {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => {
                self.closer.close(CloseReason::SlowConsumer);
                Err(DeliveryError::SlowConsumer)
            }
            Err(TrySendError::Closed(_)) => Err(DeliveryError::Closed),
        }
    }

    /// Logs a frame queued for this session at TRACE (`--trace`), naming the connection.
    pub fn trace_out(&self, frame: &Bytes) {
        if !tracing::enabled!(tracing::Level::TRACE) {
            return;
        }
        match self.codec.decode(frame) {
            Ok(env) => trace_envelope("out", self.conn, &env, frame.len()),
            Err(_) => tracing::trace!(dir = "out", conn = self.conn, len = frame.len(), "undecodable frame"),
        }
    }
}

/// Logs one frame at TRACE: direction, connection, kind, command, id, correlation, size.
pub(crate) fn trace_envelope(dir: &'static str, conn: u64, env: &Envelope, len: usize) {
    tracing::trace!(
        dir,
        conn,
        kind = env.kind.as_str(),
        cmd = env.cmd.as_deref(),
        id = env.id.as_deref(),
        re = env.re.as_deref(),
        len,
        "frame"
    );
}

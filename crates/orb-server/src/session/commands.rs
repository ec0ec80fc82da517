//! `cmd` frames of a wire session as broker calls, and the broker's typed answers as frames: a
//! job (`target`) becomes [`Broker::submit`](crate::broker::Broker::submit) and its events are
//! forwarded by a task that encodes them and paces them to the requester's queue (a job's results
//! use at most half of it, so a large job never makes its own requester a slow consumer); a
//! request to one device (`to`) becomes `Broker::request` with a sink that encodes the reply; a
//! command to the server becomes `Broker::call` on its own task.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use orb_io::queue::TrySendError;
use orb_proto::rollout::Rollout;
use orb_proto::{DeviceId, Envelope, ErrorBody, ErrorCode, Kind};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::run::Session;
use crate::broker::{CallSpec, MessageSpec, RequestSpec, Stored};
use crate::identity::OpenCommand;
use crate::jobs::{JobEvent, JobEvents, JobSpec};
use crate::metrics::Metrics;
use crate::router::correlation::{ProgressSink, Progressed, Reply, ReplySink};
use crate::router::delivery::Outbox;

impl Session {
    pub(super) fn on_cmd(&mut self, env: Envelope) {
        // Read before the envelope is taken apart (a few absent fields on every other command).
        let rollout = Rollout::from_envelope(&env);
        let progress = env.progress == Some(true);
        let Some(id) = env.id else {
            // Nothing to answer with `re`: an error frame without it, the connection stays open.
            self.answer(&Envelope::error(None, ErrorCode::BadRequest, "cmd needs an id"));
            return;
        };
        let Some(command) = env.cmd.filter(|c| !c.is_empty()) else {
            return self.reply_err(id, ErrorBody::new(ErrorCode::BadRequest, "cmd needs a command name"));
        };
        if let Some(msg) = env.msg {
            if env.target.is_some() || env.to.is_some() {
                let e = ErrorBody::new(
                    ErrorCode::BadRequest,
                    "an outbox message (cmd with msg) goes to the server: no to or target",
                );
                return self.reply_err(id, e);
            }
            let sent_at = env
                .at_ms
                .and_then(|ms| i64::try_from(ms).ok())
                .and_then(chrono::DateTime::from_timestamp_millis)
                .unwrap_or_else(chrono::Utc::now);
            return self.store_message(id, MessageSpec { msg, command, body: env.body, sent_at });
        }
        // `deadline_ms: 0` is the same as no deadline: the server's default applies.
        let deadline = env.deadline_ms.filter(|ms| *ms > 0).map(Duration::from_millis);
        match (env.target, env.to) {
            (Some(_), Some(_)) => {
                self.reply_err(id, ErrorBody::new(ErrorCode::BadRequest, "cmd has both to and target; use one"))
            }
            (Some(target), None) => match orb_proto::message::Select::from_wire(env.select.as_deref()) {
                Ok(select) => {
                    let ttl = env.ttl_ms.filter(|ms| *ms > 0).map(Duration::from_millis);
                    let rollout = match rollout {
                        Ok(r) => r,
                        Err(e) => return self.reply_err(id, e),
                    };
                    let spec =
                        JobSpec { command, target, args: env.body, deadline, select, ttl, firing: None, rollout };
                    self.submit(id, spec, progress);
                }
                Err(e) => self.reply_err(id, e),
            },
            (None, _) if env.select.is_some() => self.reply_err(
                id,
                ErrorBody::new(ErrorCode::BadRequest, "select applies to jobs only (a cmd with target)"),
            ),
            (None, _) if !matches!(rollout, Ok(r) if r.is_default()) => self.reply_err(
                id,
                ErrorBody::new(
                    ErrorCode::BadRequest,
                    "splay_ms, batch, batch_wait_ms and abort_on_failure_pct apply to jobs only (a cmd with target)",
                ),
            ),
            (None, Some(to)) => self.request(id, RequestSpec { to, command, args: env.body, deadline }, progress),
            (None, None) => self.call(id, CallSpec { command, args: env.body, deadline }),
        }
    }

    /// A job: `ack` now, then its events, then the summary `reply`, paced by a forwarding task.
    /// With `progress`, the targets' progress frames come too, whenever they arrive (best
    /// effort: see [`WireProgress`]).
    fn submit(&self, re: String, spec: JobSpec, progress: bool) {
        let sink = progress.then(|| {
            Arc::new(WireProgress {
                outbox: self.outbox.clone(),
                re: re.clone(),
                metrics: Arc::clone(self.shared.broker.metrics()),
            }) as Arc<dyn ProgressSink>
        });
        let handle = match self.shared.broker.submit_with_progress(&self.requester, spec, sink) {
            Ok(h) => h,
            Err(e) => return self.reply_err(re, e),
        };
        let job = handle.accepted.job.clone();
        let mut ack = Envelope::new(Kind::Ack).with_json_body(&handle.accepted);
        ack.re = Some(re.clone());
        ack.job = Some(job.clone());
        // The server's own answer, listing every target: like a `$orb.` listing it may exceed
        // the frame limit on a large fleet (operator tools accept up to 64 MiB from the server).
        let ack = self.outbox.codec.encode(&ack);
        let outbox = self.outbox.clone();
        let metrics = Arc::clone(self.shared.broker.metrics());
        match handle.committed {
            None => {
                reply_counted(&outbox, &metrics, Kind::Ack, ack);
                self.shared.broker.tracker().spawn(forward(handle.events, outbox, metrics, re, job));
            }
            // A job with a TTL is acknowledged once what it holds for offline targets is on disk.
            Some(committed) => {
                self.shared.broker.tracker().spawn(async move {
                    let _ = committed.await;
                    reply_counted(&outbox, &metrics, Kind::Ack, ack);
                    forward(handle.events, outbox, metrics, re, job).await;
                });
            }
        }
    }

    /// An outbox message: queued, in arrival order, for a task that stores what has arrived in
    /// one call and acknowledges each once committed. Each counts as an open command until
    /// acknowledged, so a device that sends faster than the store commits is read more slowly.
    fn store_message(&mut self, re: String, spec: MessageSpec) {
        let open = self.requester.open_command();
        let queue = self.messages.get_or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            let (broker, requester, outbox) = (self.shared.broker.clone(), self.requester.clone(), self.outbox.clone());
            self.shared.broker.tracker().spawn(store_in_order(broker, requester, outbox, rx));
            MessageQueue(tx)
        });
        // The task lives as long as the session's sender does.
        let _ = queue.0.send((re, spec, open));
    }

    /// A request to one device: the reply is encoded by a [`WireReply`] when it comes (and,
    /// with `progress`, the device's progress frames meanwhile).
    fn request(&self, re: String, spec: RequestSpec, progress: bool) {
        let sink = WireReply {
            outbox: self.outbox.clone(),
            progress: progress.then(|| WireProgress {
                outbox: self.outbox.clone(),
                re: re.clone(),
                metrics: Arc::clone(self.shared.broker.metrics()),
            }),
            re,
            metrics: Arc::clone(self.shared.broker.metrics()),
            sent: Instant::now(),
            _open: self.requester.open_command(),
        };
        self.shared.broker.request(&self.requester, spec, Box::new(sink));
    }

    /// A command to the server, answered from its own task.
    fn call(&self, re: String, spec: CallSpec) {
        let query = spec.command.starts_with(orb_proto::RESERVED_PREFIX);
        let broker = self.shared.broker.clone();
        let requester = self.requester.clone();
        let outbox = self.outbox.clone();
        let open = self.requester.open_command();
        self.shared.broker.tracker().spawn(async move {
            let env = match broker.call(&requester, spec).await {
                Ok(body) => Envelope::reply_ok(re, body),
                Err(e) => Envelope::reply_error(re, e),
            };
            // The server's own answers to `$orb.` queries may exceed the frame limit (a listing
            // of a large fleet: operator tools accept up to 64 MiB from the server); an
            // application handler's answer is held to it like any relayed result.
            let frame = if query { outbox.codec.encode(&env) } else { outbox.encode_within_limit(&env) };
            reply_counted(&outbox, broker.metrics(), Kind::Reply, frame);
            drop(open);
        });
    }
}

/// Outbox messages waiting to be stored, each with the id to answer and its open-command mark.
/// Unbounded, yet bounded by the session's limit of open commands (the read loop pauses there).
pub(crate) struct MessageQueue(mpsc::UnboundedSender<(String, MessageSpec, OpenCommand)>);

/// Outbox messages stored per store call at most.
const MESSAGE_BATCH: usize = 512;

/// Stores a session's outbox messages in arrival order, what has arrived together in one call
/// (one commit), and acknowledges each: `{"stored": true}` when new, `{"duplicate": true}` for
/// a resend of one stored before.
async fn store_in_order(
    broker: crate::broker::Broker,
    requester: crate::identity::Requester,
    outbox: Outbox,
    mut rx: mpsc::UnboundedReceiver<(String, MessageSpec, OpenCommand)>,
) {
    let mut batch = Vec::with_capacity(MESSAGE_BATCH);
    while rx.recv_many(&mut batch, MESSAGE_BATCH).await > 0 {
        let specs = batch.iter().map(|(_, spec, _)| spec.clone()).collect();
        let answers = broker.store_messages(&requester, specs).await;
        for ((re, _, open), answer) in batch.drain(..).zip(answers) {
            let env = match answer {
                Ok(Stored::New) => Envelope::reply_ok(re, bytes::Bytes::from_static(br#"{"stored":true}"#)),
                Ok(Stored::Duplicate) => Envelope::reply_ok(re, bytes::Bytes::from_static(br#"{"duplicate":true}"#)),
                Err(e) => Envelope::reply_error(re, e),
            };
            if let Ok(len) = outbox.reply_env(&env) {
                broker.metrics().sent(Kind::Reply, len);
            }
            drop(open);
        }
    }
}

/// Queues `frame`, an answer of `kind`, for the session and counts it.
fn reply_counted(outbox: &Outbox, metrics: &Metrics, kind: Kind, frame: bytes::Bytes) {
    let len = frame.len();
    if outbox.reply(frame).is_ok() {
        metrics.sent(kind, len);
    }
}

/// The reply of a request to one device, encoded for the requester's session.
struct WireReply {
    outbox: Outbox,
    /// Where the device's progress goes, when the requester asked for it.
    progress: Option<WireProgress>,
    re: String,
    /// Where the reply and the time it took are counted.
    metrics: Arc<Metrics>,
    /// When the request was made.
    sent: Instant,
    /// The request counts as open until its reply is queued.
    _open: OpenCommand,
}

impl ReplySink for WireReply {
    fn complete(self: Box<Self>, reply: Reply) {
        // A device's reply (the broker answers the others: refusals, timeouts).
        if reply.from.is_some() {
            self.metrics.request_answered(self.sent.elapsed());
        }
        let mut env = match reply.answer {
            Ok(body) => Envelope::reply_ok(self.re, body),
            Err(e) => Envelope::reply_error(self.re, e),
        };
        env.from = reply.from.map(|d| d.to_string());
        if let Ok(len) = self.outbox.reply_env(&env) {
            self.metrics.sent(Kind::Reply, len);
        }
    }

    fn is_gone(&self) -> bool {
        self.outbox.tx.is_closed()
    }

    fn wants_progress(&self) -> bool {
        self.progress.is_some()
    }

    fn progress(&self, from: &DeviceId, body: Bytes) -> Progressed {
        self.progress.as_ref().map_or(Progressed::NotPending, |p| p.progress(None, from, body))
    }
}

/// A command's progress, encoded for the requester's session as `progress` frames answering its
/// `cmd` (`re`), with `job` and `device`. Best effort and bounded: a frame is queued only while
/// the session's queue is less than half full (what a job's events may use) and fits the frame
/// limit; otherwise it is dropped (counted) and the session stays open: progress never makes
/// its requester a slow consumer and never waits.
struct WireProgress {
    outbox: Outbox,
    re: String,
    metrics: Arc<Metrics>,
}

impl ProgressSink for WireProgress {
    fn progress(&self, job: Option<&str>, from: &DeviceId, body: Bytes) -> Progressed {
        let mut env = Envelope::new(Kind::Progress);
        env.re = Some(self.re.clone());
        env.job = job.map(str::to_owned);
        env.device = Some(from.to_string());
        env.body = Some(body);
        let frame = self.outbox.codec.encode(&env);
        if frame.len() > self.outbox.max_frame {
            return Progressed::Dropped;
        }
        let len = frame.len();
        match self.outbox.tx.try_send_half(frame) {
            Ok(()) => {
                self.metrics.sent(Kind::Progress, len);
                Progressed::Passed
            }
            Err(TrySendError::Full(_)) => Progressed::Dropped,
            // The requester is gone: nobody waits for it any more.
            Err(TrySendError::Closed(_)) => Progressed::NotPending,
        }
    }
}

/// Forwards a job's events to its requester: encoded with the session's codec, each within the
/// frame limit, using at most half the requester's queue. One event at a time leaves the job's
/// buffer, so what waits here is bounded by that buffer. Ends with the job's last event, or when
/// the session closes (the job runs on, unreported).
async fn forward(mut events: JobEvents, outbox: Outbox, metrics: Arc<Metrics>, re: String, job: String) {
    loop {
        let event = tokio::select! {
            biased;
            () = outbox.tx.closed() => return,
            event = events.next() => event,
        };
        let Some(event) = event else { return };
        let env = event_envelope(event, &re, &job);
        let mut frame = outbox.encode_within_limit(&env);
        outbox.trace_out(&frame);
        let len = frame.len();
        loop {
            match outbox.tx.try_send_half(frame) {
                Ok(()) => {
                    metrics.sent(env.kind, len);
                    break;
                }
                Err(TrySendError::Closed(_)) => return,
                Err(TrySendError::Full(f)) => {
                    if outbox.tx.space_half_for(f.len()).await.is_err() {
                        return;
                    }
                    frame = f;
                }
            }
        }
    }
}

/// A job event as the frame the requester receives: `event` per target, `reply` at the end.
fn event_envelope(event: JobEvent, re: &str, job: &str) -> Envelope {
    match event {
        JobEvent::Settled(s) => {
            let mut ev = Envelope::new(Kind::Event);
            ev.re = Some(re.to_owned());
            ev.job = Some(job.to_owned());
            ev.device = Some(s.device.to_string());
            ev.status = Some(s.status);
            ev.elapsed_ms = s.elapsed_ms;
            ev.body = s.result;
            ev.error = s.error;
            ev
        }
        JobEvent::Batch(batch) => {
            let mut ev = Envelope::new(Kind::Event).with_json_body(&batch);
            ev.re = Some(re.to_owned());
            ev.job = Some(job.to_owned());
            ev
        }
        JobEvent::Ended(summary) => {
            let mut env = Envelope::new(Kind::Reply).with_json_body(&summary);
            env.re = Some(re.to_owned());
            env.job = Some(job.to_owned());
            env
        }
        JobEvent::Lagged { limit } => {
            let msg = format!(
                "the results of job {job} were read too slowly (more than {limit} bytes waited); \
                 the job runs on and its results are stored: see $orb.jobs.show"
            );
            let mut env = Envelope::reply_err(re.to_owned(), ErrorCode::Lagged, msg);
            env.job = Some(job.to_owned());
            env
        }
    }
}

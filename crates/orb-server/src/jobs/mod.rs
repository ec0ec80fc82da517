//! Jobs: one command fanned out to every known device a selector matched. `Jobs::start`
//! takes the resolved targets (offline ones end at once as `offline`), encodes the command frame
//! once per codec in use among them, checks it against the frame limit, and queues the shared
//! bytes to each connected target; replies reach the job's inbox through the correlation table;
//! one task per job (`run.rs`) turns them into typed [`JobEvent`]s for the requester and records
//! the job and every outcome in the store. A requester that goes away stops receiving events; the
//! job runs to its end and its results are stored.
//!
//! A staged job (a rollout with a splay or batches, decision 0015) sends nothing from `start`:
//! its task dispatches each target when its timetable says (`stages`, `staged`).
//!
//! An "any one of" job (`select: one`) has one target, chosen and moved on by `one`.
//!
//! Modules: `state` (the pure target state machine), `inbox` (first answer per target wins),
//! `events` (the bounded event stream), `run` (the job's task), `stages` (a staged job's pure
//! timetable), `staged` (its dispatch), `one` ("any one of").

mod events;
mod handover;
mod inbox;
mod one;
mod progress;
mod run;
mod staged;
mod stages;
mod state;

pub use events::{JobEvent, JobEvents, JobHandle, Settled};
pub(crate) use run::HeldNotice;

use crate::broker::Delivering;
use crate::broker::tally::Tally;
pub use state::JobState;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use dashmap::DashMap;
use orb_proto::message::{JobAccepted, Select};
use orb_proto::rollout::Rollout;
use orb_proto::{Codec, DeviceId, Envelope, ErrorBody, ErrorCode, Kind};
use orb_store::{NewJob, NewQueued, QueueLimits, Recorder, Store};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::broker::gate::Gate;
use crate::config::Limits;
use crate::identity::Requester;
use crate::metrics::Metrics;
use crate::node::NodeId;
use crate::router::correlation::{Answer, Correlations, ProgressSink};
use crate::router::sessions::{Sessions, Target};
#[cfg(test)]
pub(crate) use inbox::JobMsg;
pub(crate) use inbox::{JobInbox, Outcome};
use run::{HeldRow, Hold, HoldTemplate, JobRun};

/// Bytes (command, arguments, requester per target) one job may hold for its offline targets.
pub const MAX_HELD_BYTES_PER_JOB: u64 = 64 << 20;

/// What a job is: a command with arguments for every device a selector matches, with a deadline.
/// Every adapter (wire session, HTTP API, scheduler) submits this through the broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSpec {
    /// Command name.
    pub command: String,
    /// Target selector (section 9 of the protocol).
    pub target: String,
    /// Arguments as JSON bytes (`None`: no arguments).
    pub args: Option<Bytes>,
    /// Time until pending targets become `timeout` (`None`: the server's default; capped at
    /// the server's maximum).
    pub deadline: Option<Duration>,
    /// Which matched devices become targets: all of them, or only those connected now.
    pub select: Select,
    /// How long the command waits, stored, for targets that are not connected (`None`: they end
    /// `offline`); capped at `limits.max_ttl`.
    pub ttl: Option<Duration>,
    /// The schedule firing this job is (its id and row were stored with the firing), if any.
    pub firing: Option<FiringRef>,
    /// How the job reaches its targets: all at once (the default), spread over a splay window,
    /// or in batches with an abort threshold.
    pub rollout: Rollout,
}

/// A schedule's firing that a job carries out: the job's id (its row stored with the firing)
/// and the schedule's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FiringRef {
    /// The job id the firing stored.
    pub job: String,
    /// The schedule.
    pub schedule: String,
}

/// The jobs this server runs, by id: to cancel them and to wait for them at shutdown.
#[derive(Clone, Default)]
pub(crate) struct RunningJobs(Arc<RunningInner>);

#[derive(Default)]
struct RunningInner {
    jobs: DashMap<String, Arc<JobInbox>>,
    ended: Notify,
}

impl RunningJobs {
    fn insert(&self, job: String, inbox: Arc<JobInbox>) {
        self.0.jobs.insert(job, inbox);
    }

    /// A job's task ended.
    pub(crate) fn finish(&self, job: &str) {
        if self.0.jobs.remove(job).is_some() {
            self.0.ended.notify_waiters();
        }
    }
}

/// The jobs subsystem of a broker.
pub struct Jobs {
    /// Cleared when the server starts draining: no job starts after that.
    accepting: std::sync::atomic::AtomicBool,
    node: NodeId,
    correlations: Arc<Correlations>,
    running: RunningJobs,
    recorder: Recorder,
    /// Where commands held for devices go (jobs with a TTL).
    store: Arc<dyn Store>,
    /// Told each device a command was held for (the broker delivers at once if it is connected).
    held_tx: mpsc::UnboundedSender<HeldNotice>,
    /// Which devices have held commands or a delivery loop: a job reserves a connected device
    /// that has neither, and hands its command over in the commit that holds it.
    delivering: Arc<Delivering>,
    /// Where devices' delivery counts are kept.
    tally: Arc<Tally>,
    tracker: TaskTracker,
    stop: CancellationToken,
    /// Cancelled when the server starts draining (staged jobs start no more targets).
    draining: CancellationToken,
    readers: Arc<events::Readers>,
    /// Where a staged job finds its targets' sessions when it dispatches to them.
    sessions: Arc<Sessions>,
    /// Where jobs publish their progress.
    topics: Arc<crate::router::topics::Topics>,
    /// "Any one of" commands in flight per device.
    one_load: Arc<one::OneLoad>,
    /// Where commands sent and targets' outcomes are counted.
    metrics: Arc<Metrics>,
}

/// What [`Jobs::new`] is made of.
pub(crate) struct JobsParts {
    pub(crate) node: NodeId,
    /// Where answers are routed to their jobs.
    pub(crate) correlations: Arc<Correlations>,
    /// Where jobs and outcomes are recorded.
    pub(crate) recorder: Recorder,
    /// Where commands are held (jobs with a TTL).
    pub(crate) store: Arc<dyn Store>,
    /// Told each device a command was held for.
    pub(crate) held_tx: mpsc::UnboundedSender<HeldNotice>,
    /// Reservations of connected devices' delivery loops.
    pub(crate) delivering: Arc<Delivering>,
    /// Devices' delivery counts.
    pub(crate) tally: Arc<Tally>,
    /// The connected sessions (a staged job looks its targets up at dispatch).
    pub(crate) sessions: Arc<Sessions>,
    /// Pub/sub subscriptions: each job publishes its progress on `$orb.job.<id>`.
    pub(crate) topics: Arc<crate::router::topics::Topics>,
    /// Where job tasks run.
    pub(crate) tracker: TaskTracker,
    /// The server's metrics.
    pub(crate) metrics: Arc<Metrics>,
}

impl Jobs {
    /// The jobs subsystem made of `parts`.
    pub(crate) fn new(parts: JobsParts) -> Jobs {
        let JobsParts {
            node,
            correlations,
            recorder,
            store,
            held_tx,
            delivering,
            tally,
            sessions,
            topics,
            tracker,
            metrics,
        } = parts;
        Jobs {
            accepting: std::sync::atomic::AtomicBool::new(true),
            node,
            correlations,
            running: RunningJobs::default(),
            recorder,
            store,
            held_tx,
            delivering,
            tally,
            tracker,
            stop: CancellationToken::new(),
            draining: CancellationToken::new(),
            readers: Arc::default(),
            sessions,
            topics,
            one_load: Arc::default(),
            metrics,
        }
    }

    /// Starts a job on `targets` (resolved, sorted, not empty) for `requester`; `skipped`
    /// matched devices were left out (not connected, with [`Select::Online`]).
    ///
    /// # Errors
    /// `bad_rollout` when the rollout's options are out of bounds; `too_many_jobs` when the
    /// requester is at its limit; `frame_too_large` when the command frame would exceed the
    /// frame limit. Nothing is sent then.
    pub(crate) fn start(
        &self,
        requester: &Requester,
        spec: JobSpec,
        resolved: Resolved,
        limits: &Limits,
        gate: Gate,
        progress: Option<Arc<dyn ProgressSink>>,
    ) -> Result<JobHandle, ErrorBody> {
        let Resolved { targets, skipped, mut settled } = resolved;
        spec.rollout.check()?;
        let slot = Arc::new(requester.job_slot(limits.max_inflight_jobs)?);
        let deadline = spec.deadline.unwrap_or(limits.default_job_deadline).min(limits.max_deadline);
        let deadline_ms = u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX);
        let job_id = spec.firing.as_ref().map_or_else(|| uuid::Uuid::now_v7().to_string(), |f| f.job.clone());
        let (tx, rx) = mpsc::unbounded_channel();
        let one = spec.select == Select::One;
        // Progress goes only to a requester that asked, and only for commands sent now: a held
        // command (TTL) is delivered later, from the store, without it.
        let progress = progress.filter(|_| spec.ttl.is_none_or(|t| t.is_zero()));
        let wants_progress = progress.is_some();
        let inbox = Arc::new(
            if one {
                JobInbox::one_of(targets[0].id.clone(), tx)
            } else {
                JobInbox::new(targets.iter().map(|t| t.id.clone()), tx)
            }
            .with_progress(progress),
        );
        let correlation = self.correlations.open_job(&job_id, Arc::clone(&inbox) as _);

        let mut cmd = Envelope::new(Kind::Cmd);
        cmd.id = Some(correlation.to_string());
        cmd.job = Some(job_id.clone());
        cmd.cmd = Some(spec.command.clone());
        cmd.from = Some(requester.identity.name.clone());
        cmd.deadline_ms = Some(deadline_ms);
        cmd.progress = wants_progress.then_some(true);
        cmd.body = spec.args.clone();
        // A job with a TTL hands its command over to connected targets itself, as attempt 1 of
        // a held command (a device with a journal records it).
        let hands_over = spec.ttl.is_some_and(|t| !t.is_zero()) && !one && !spec.rollout.is_staged();
        cmd.attempt = hands_over.then_some(1);
        // One encoding per codec in use among the connected targets, shared by all of them, and
        // checked against each target's frame limit (the one its welcome announced) before
        // anything is sent.
        let mut frames: [Option<Bytes>; 2] = [None, None];
        for t in &targets {
            if let Some(s) = &t.session {
                let codec = s.outbox.codec;
                let frame = frames[codec_slot(codec)].get_or_insert_with(|| codec.encode(&cmd));
                if frame.len() > s.outbox.max_frame {
                    self.correlations.close(&correlation);
                    return Err(ErrorBody::new(
                        ErrorCode::FrameTooLarge,
                        format!(
                            "the command frame would be {} bytes, above the frame limit of {} bytes",
                            frame.len(),
                            s.outbox.max_frame
                        ),
                    ));
                }
            }
        }
        self.running.insert(job_id.clone(), Arc::clone(&inbox));
        // Checked after the job is listed as running, so that a drain either sees it running
        // (and waits for it) or this sees the drain (and nothing is sent).
        if !self.accepting.load(std::sync::atomic::Ordering::SeqCst) {
            self.running.finish(&job_id);
            self.correlations.close(&correlation);
            return Err(ErrorBody::new(ErrorCode::ServerShutdown, "the server is stopping and accepts no new work"));
        }

        // "Any one of": the command goes to one of the candidates now; the job's one target is
        // that device (or, when every candidate has gone meanwhile, the first, `offline`).
        let mut one_of = None;
        let targets = if one {
            let candidates: Vec<DeviceId> = targets.iter().map(|t| t.id.clone()).collect();
            let first = candidates[0].clone();
            let mut o = one::OneOf::new(
                candidates,
                Arc::clone(&self.one_load),
                Arc::clone(&inbox),
                cmd.clone(),
                frames.clone(),
                Arc::clone(&self.sessions),
                Arc::clone(&self.metrics),
            );
            let id = o.dispatch().map_or(first, |(id, _)| id);
            one_of = Some(o);
            vec![Target { id, session: None }]
        } else {
            targets
        };

        let started = Instant::now();
        let ttl = spec.ttl.filter(|t| !t.is_zero()).map(|t| t.min(limits.max_ttl));
        // With a TTL every target's command is held, committed before the ack, and delivered by
        // its device's delivery loop (in order with what is held for it already, journaled by
        // agents that keep one); one not connected is reported `queued` at once.
        // A staged job's task dispatches each target when its timetable says.
        let staged = spec.rollout.is_staged();
        let mut held = Vec::new();
        let mut delivered = Vec::with_capacity(targets.len());
        // Commands queued, and their bytes: counted once for the whole fan-out.
        let (mut sent, mut sent_bytes) = (0_u64, 0_u64);
        for (i, t) in targets.iter().enumerate() {
            if let Some(outcome) = settled.remove(&t.id) {
                inbox.settle(i, None, outcome);
                delivered.push(None);
                continue;
            }
            if let Some(o) = &one_of {
                delivered.push(o.current.as_ref().map(|(_, outbox)| outbox.clone()));
                if o.current.is_none() {
                    inbox.settle(i, None, Outcome::Offline);
                }
                continue;
            }
            if staged {
                delivered.push(None);
                continue;
            }
            if ttl.is_some() {
                let hand_to = t.session.as_ref().map(|s| handover::HandTo {
                    frame: frames[codec_slot(s.outbox.codec)]
                        .clone()
                        .expect("every connected target's codec was encoded"),
                    outbox: s.outbox.clone(),
                });
                held.push((i, t.session.is_some(), hand_to));
                delivered.push(None);
                continue;
            }
            let Some(session) = &t.session else {
                inbox.settle(i, None, Outcome::Offline);
                delivered.push(None);
                continue;
            };
            let frame = frames[codec_slot(session.outbox.codec)]
                .clone()
                .expect("every connected target's codec was encoded above");
            let slot = u32::try_from(i).unwrap_or(u32::MAX);
            let len = frame.len() as u64;
            match session.outbox.deliver_noticed(frame, Arc::clone(&inbox) as _, slot) {
                Ok(()) => {
                    (sent, sent_bytes) = (sent + 1, sent_bytes + len);
                    delivered.push(Some(session.outbox.clone()));
                }
                Err(crate::router::delivery::DeliveryError::Closed) => {
                    inbox.settle(i, None, Outcome::Offline);
                    delivered.push(None);
                }
                Err(crate::router::delivery::DeliveryError::SlowConsumer) => {
                    let e = ErrorBody::new(ErrorCode::SlowConsumer, "the device's queue was full; it was disconnected");
                    inbox.settle(i, None, Outcome::Error(e));
                    delivered.push(None);
                }
            }
        }

        self.metrics.sent_many(Kind::Cmd, sent, sent_bytes);
        self.metrics.job_started();
        let devices: Vec<DeviceId> = targets.into_iter().map(|t| t.id).collect();
        let accepted = JobAccepted {
            job: job_id.clone(),
            targets: devices.iter().map(ToString::to_string).collect(),
            deadline_ms,
            skipped,
        };
        let created_at = Utc::now();
        // The latest a staged job's last target can time out: each batch lasts at most the splay
        // window plus the deadline, with the batch wait between batches.
        let batches = spec.rollout.batch.map_or(1, |b| devices.len().div_ceil(b.of(devices.len())).max(1));
        let per_batch = spec.rollout.splay() + deadline;
        let last_deadline = per_batch
            .saturating_mul(u32::try_from(batches).unwrap_or(u32::MAX))
            .saturating_add(spec.rollout.batch_wait().saturating_mul(u32::try_from(batches - 1).unwrap_or(u32::MAX)));
        let record = NewJob {
            id: job_id.clone(),
            node: self.node.to_string(),
            requester: requester.identity.name.clone(),
            selector: spec.target,
            command: spec.command,
            args: spec.args.as_ref().map(|b| String::from_utf8_lossy(b).into_owned()),
            created_at,
            deadline_at: chrono::Duration::from_std(last_deadline)
                .ok()
                .and_then(|d| created_at.checked_add_signed(d))
                .unwrap_or(chrono::DateTime::<Utc>::MAX_UTC),
            // Filled by the job's task, after the command has gone out.
            targets: Vec::new(),
            skipped,
            schedule: spec.firing.map(|f| f.schedule),
            rollout: spec.rollout.stored(),
        };
        let (events_tx, events) =
            events::channel(limits.job_buffer_bytes, Arc::clone(&self.readers), Arc::clone(&slot));
        // With a TTL: what a held command of this job looks like (its device set per target),
        // and the commands held for its targets.
        let template = ttl.map(|ttl| {
            let now = Utc::now();
            let command = NewQueued {
                job_id: job_id.clone(),
                device: String::new(),
                command: record.command.clone(),
                args: record.args.clone(),
                sender: record.requester.clone(),
                credential: Some(requester.identity.credential()),
                wait_ms: deadline_ms,
                queued_at: now,
                expires_at: chrono::Duration::from_std(ttl)
                    .ok()
                    .and_then(|d| now.checked_add_signed(d))
                    .unwrap_or(chrono::DateTime::<Utc>::MAX_UTC),
                handed_over: false,
            };
            let limits = QueueLimits {
                max_commands: limits.max_queued_per_device as u64,
                max_bytes: limits.max_queued_bytes_per_device as u64,
            };
            HoldTemplate { command, limits, bytes: 0 }
        });
        let (hold, committed) = match &template {
            Some(template) if !held.is_empty() => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                let mut template = template.clone();
                let rows = held
                    .into_iter()
                    .filter_map(|(i, online, hand_to)| match template.for_device(&devices[i]) {
                        Ok(command) => Some(HeldRow { slot: i, command, online, hand_to }),
                        Err(e) => {
                            inbox.settle(i, None, Outcome::Error(e));
                            None
                        }
                    })
                    .collect();
                (Some(Hold { rows, committed: tx }), Some(rx))
            }
            _ => (None, None),
        };
        let staged = staged.then(|| {
            let to =
                staged::Outgoing { cmd, frames, sessions: Arc::clone(&self.sessions), inbox: Arc::clone(&inbox), gate };
            staged::Staged::new(spec.rollout, deadline, started, to)
        });
        let progress = progress::Progress::new(Arc::clone(&self.topics), &job_id);
        let targets = devices.len();
        let run = JobRun {
            job_id,
            correlation,
            record: Some(record),
            devices,
            skipped,
            delivered,
            started,
            deadline: instant_after(started, deadline),
            rx,
            events: events_tx,
            recorder: self.recorder.clone(),
            correlations: Arc::clone(&self.correlations),
            running: self.running.clone(),
            stop: self.stop.clone(),
            draining: self.draining.clone(),
            hold,
            handover: template.is_some().then(|| {
                let parts = handover::HandOverParts {
                    store: Arc::clone(&self.store),
                    delivering: Arc::clone(&self.delivering),
                    held_tx: self.held_tx.clone(),
                    tally: Arc::clone(&self.tally),
                    metrics: Arc::clone(&self.metrics),
                };
                handover::HandOvers::new(parts, targets)
            }),
            template,
            inbox: Arc::clone(&inbox),
            staged,
            one: one_of,
            progress,
            metrics: Arc::clone(&self.metrics),
            _slot: slot,
        };
        drop(inbox);
        self.tracker.spawn(run.run());
        Ok(JobHandle { accepted, events, committed })
    }

    /// Cancels running job `job` (full id): the receiver gets the targets that were pending.
    /// `None` when this server runs no such job.
    pub(crate) fn cancel(&self, job: &str) -> Option<oneshot::Receiver<Vec<String>>> {
        let inbox = self.running.0.jobs.get(job).map(|e| Arc::clone(e.value()))?;
        Some(inbox.cancel())
    }

    /// Tells running job `job` the outcome of its held command for `device` (delivered by the
    /// device's delivery loop, and already recorded): its requester hears it like any answer.
    /// Nothing when the job's live part is over.
    pub(crate) fn held_answered(&self, job: &str, device: &DeviceId, outcome: Outcome, at: Option<Instant>) {
        if let Some(inbox) = self.running.0.jobs.get(job).map(|e| Arc::clone(e.value())) {
            inbox.settle_recorded(device, at, outcome);
        }
    }

    /// Jobs running now.
    pub fn in_flight(&self) -> usize {
        self.running.0.jobs.len()
    }

    /// Resolves when no job is running.
    ///
    /// # Cancel safety
    /// Cancel-safe.
    pub async fn finished(&self) {
        loop {
            let ended = self.running.0.ended.notified();
            tokio::pin!(ended);
            ended.as_mut().enable();
            if self.in_flight() == 0 {
                return;
            }
            ended.await;
        }
    }

    /// Resolves when every job's event stream has been read to its end or dropped: every
    /// requester has what it will get.
    ///
    /// # Cancel safety
    /// Cancel-safe.
    pub async fn streams_finished(&self) {
        self.readers.none().await;
    }

    /// No job starts from now on (the server is draining).
    pub(crate) fn stop_accepting(&self) {
        self.accepting.store(false, std::sync::atomic::Ordering::SeqCst);
        self.draining.cancel();
    }

    /// Ends every running job now (the server is stopping): pending targets become `timeout`.
    pub(crate) fn stop_all(&self) {
        self.stop.cancel();
    }
}

/// The devices a job goes to, as the broker resolved its selector and judged its requester's
/// rights.
pub(crate) struct Resolved {
    /// The targets, in device id order.
    pub targets: Vec<Target>,
    /// Devices the selector matched that were not targeted because they were not connected.
    pub skipped: u64,
    /// Targets that end at once with this outcome, nothing sent to them: `denied` (the
    /// requester's access rules do not reach them), or `error` `unknown_command` (they do not
    /// declare the command).
    pub settled: std::collections::HashMap<DeviceId, Outcome>,
}

/// `start + d`, or a year after `start` when that cannot be represented (a deadline of
/// centuries from an embedder's unchecked limits must not panic).
pub(crate) fn instant_after(start: Instant, d: Duration) -> Instant {
    start.checked_add(d).unwrap_or_else(|| start + Duration::from_secs(365 * 24 * 3600))
}

/// A device's answer that came after its job ended, as the store keeps it (beside the target's
/// outcome). An answer `timeout` (the device gave up) is status `timeout`, as on time.
pub(crate) fn late_outcome(job: String, device: &DeviceId, answer: Answer) -> orb_store::TargetOutcome {
    let outcome = Outcome::of_answer(answer);
    let (status, error) = (outcome.status(), outcome.error());
    let result = match outcome {
        Outcome::Ok(body) => Some(String::from_utf8_lossy(&body).into_owned()),
        _ => None,
    };
    orb_store::TargetOutcome {
        job,
        device: device.to_string(),
        status,
        result,
        error,
        elapsed_ms: None,
        at: Utc::now(),
        late: true,
    }
}

pub(crate) fn codec_slot(codec: Codec) -> usize {
    match codec {
        Codec::Json => 0,
        Codec::MsgPack => 1,
    }
}

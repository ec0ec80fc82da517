//! Agent-local schedules (decision 0016), the server's side. A device runs the active
//! `on_agent` schedules whose selector matches it; the server pushes that whole set to it
//! (`$orb.schedules.sync`, a request like any other) when it connects, when its operator tags
//! change, and to every connected device when such a schedule is created, paused, resumed or
//! removed. Only devices that declare the command get it (agents with a data folder, where they
//! keep the set and run it while disconnected). Each firing a device reports through its outbox
//! (`$orb.schedules.ran`) is stored as a job of one target, linked to its schedule, so
//! `orb jobs --schedule ID` lists the local runs like the server's firings.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use orb_proto::history::JobPhase;
use orb_proto::message::commands;
use orb_proto::schedule::{AgentSchedule, ScheduleRan};
use orb_proto::{DeviceId, ErrorBody, ErrorCode, Status};
use orb_store::{JobEnd, NewJob, NewTarget, Record, TargetOutcome};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::services::raw_json;
use super::services::schedules::{missed_of, spec_of};
use super::{Broker, RequestSpec};
use crate::identity::{Identity, Requester};
use crate::router::correlation::{Reply, ReplySink};

/// How long a device has to answer a sync.
const SYNC_DEADLINE: Duration = Duration::from_secs(30);

/// Devices owed a sync, pushed by one task ([`run`]) so pushes never overtake each other: what
/// is asked while one runs is coalesced into the next, which reads the store afresh.
#[derive(Default)]
pub(crate) struct SyncQueue {
    owed: Mutex<Owed>,
    wake: Notify,
    /// The version of the last push (each push's is higher; it starts from the clock, so a
    /// restarted server's are higher than before).
    version: AtomicU64,
}

#[derive(Default)]
struct Owed {
    all: bool,
    devices: HashSet<DeviceId>,
}

impl Broker {
    /// Pushes their agent-local schedules to `device`, or to every connected device when
    /// `None` (those that declare `$orb.schedules.sync`): soon, from the one sync task.
    pub(crate) fn sync_agent_schedules(&self, device: Option<DeviceId>) {
        let queue = &self.0.agent_sync;
        {
            let mut owed = queue.owed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            match device {
                Some(d) => {
                    owed.devices.insert(d);
                }
                None => owed.all = true,
            }
        }
        queue.wake.notify_one();
    }

    async fn push_agent_schedules(&self, owed: Owed) {
        let stored = match self.registry().store().agent_schedules().await {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the agent-local schedules; devices keep the ones they have");
                return;
            }
        };
        let schedules: Vec<_> = stored
            .iter()
            .filter_map(|s| {
                let selector = match self.parse_selector(&s.schedule.selector) {
                    Ok(sel) => sel,
                    Err(e) => {
                        tracing::warn!(schedule = s.schedule.id, error = %e, "an agent-local schedule's selector does not resolve; no device runs it");
                        return None;
                    }
                };
                let local = AgentSchedule {
                    id: s.schedule.id.clone(),
                    spec: spec_of(s)?,
                    missed: missed_of(s),
                    command: s.schedule.command.clone(),
                    args: s.schedule.args.as_deref().and_then(raw_json),
                    deadline_ms: s.schedule.wait_ms,
                };
                Some((selector, local))
            })
            .collect();
        let devices: Vec<DeviceId> = if owed.all {
            self.sessions().all().into_iter().map(|s| s.record.id.clone()).collect()
        } else {
            owed.devices.into_iter().collect()
        };
        let floor = u64::try_from(Utc::now().timestamp_millis()).unwrap_or(0).saturating_mul(1000);
        let queue = &self.0.agent_sync;
        let version = queue.version.load(Ordering::Acquire).max(floor) + 1;
        queue.version.store(version, Ordering::Release);
        let server = Requester::new(Identity::admin("$server"));
        for id in devices {
            let Some(known) = self.registry().get(id.as_str()) else { continue };
            if !self.sessions().is_connected(id.as_str())
                || !known.commands.iter().any(|c| c == commands::SCHEDULES_SYNC)
            {
                continue;
            }
            let set: Vec<&AgentSchedule> =
                schedules.iter().filter(|(sel, _)| sel.matches(&*known)).map(|(_, s)| s).collect();
            let body = serde_json::to_vec(&serde_json::json!({ "version": version, "schedules": set }))
                .expect("agent schedules always serialise");
            let spec = RequestSpec {
                to: id.to_string(),
                command: commands::SCHEDULES_SYNC.to_owned(),
                args: Some(Bytes::from(body)),
                deadline: Some(SYNC_DEADLINE),
            };
            self.send_request(&server, spec, Box::new(SyncAnswer { device: id, count: set.len() }));
        }
    }

    /// Records the firing `ran` that `device` reported (outbox message `msg`, sent at
    /// `sent_at`, received at `received_at`) as a job of one target, linked to its schedule. The
    /// job's id comes from the device and the message, so a resent report records the same job.
    /// Its time is the device's, never later than when the server received it (a device clock
    /// ahead must not put runs in the future).
    pub(crate) async fn record_local_run(
        &self,
        device: &DeviceId,
        msg: &str,
        sent_at: DateTime<Utc>,
        received_at: DateTime<Utc>,
        ran: &ScheduleRan,
    ) {
        let reported = DateTime::parse_from_rfc3339(&ran.fired_at).map_or(sent_at, |t| t.with_timezone(&Utc));
        let fired_at = reported.min(received_at);
        let ended_at = fired_at
            .checked_add_signed(chrono::Duration::milliseconds(i64::try_from(ran.elapsed_ms).unwrap_or(i64::MAX)))
            .unwrap_or(fired_at);
        // From what the device sent, so every resend names the same job.
        let id = run_job_id(device, msg, reported);
        let job = NewJob {
            id: id.clone(),
            node: self.node().to_string(),
            requester: format!("schedule:{}", ran.schedule),
            selector: device.to_string(),
            command: ran.command.clone(),
            args: None,
            created_at: fired_at,
            deadline_at: ended_at,
            targets: vec![NewTarget { device: device.to_string(), status: None, error: None }],
            skipped: 0,
            schedule: Some(ran.schedule.clone()),
            rollout: None,
        };
        let outcome = TargetOutcome {
            job: id.clone(),
            device: device.to_string(),
            status: ran.status,
            result: ran.result.as_ref().map(|r| r.get().to_owned()),
            error: ran.error.clone(),
            elapsed_ms: Some(ran.elapsed_ms),
            at: ended_at,
            late: false,
        };
        let recorder = self.registry().recorder();
        recorder.record(Record::JobCreated(job)).await;
        recorder.record(Record::TargetsSettled(vec![outcome])).await;
        let end = JobEnd { job: id, at: ended_at, state: JobPhase::Done, pending_become: None };
        recorder.record(Record::JobEnded(end)).await;
    }
}

/// The id of the job recording a device's report `msg`: a UUID v7 at the reported firing time
/// whose other bits come from the device and the message (FNV-1a), the same for every resend.
fn run_job_id(device: &DeviceId, msg: &str, fired_at: DateTime<Utc>) -> String {
    let fnv = |seed: u64| {
        let mut h = seed;
        for b in device.as_str().bytes().chain([0]).chain(msg.bytes()) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        h
    };
    let (a, b) = (fnv(0xcbf2_9ce4_8422_2325), fnv(0x8422_2325_cbf2_9ce4));
    let mut bits = [0u8; 10];
    bits[..8].copy_from_slice(&a.to_be_bytes());
    bits[8..].copy_from_slice(&b.to_be_bytes()[..2]);
    let ms = u64::try_from(fired_at.timestamp_millis()).unwrap_or(0);
    uuid::Builder::from_unix_timestamp_millis(ms, &bits).into_uuid().to_string()
}

/// The one task that pushes syncs, until `shutdown`.
pub(crate) async fn run(broker: Weak<super::Inner>, queue: Arc<SyncQueue>, shutdown: CancellationToken) {
    loop {
        let wake = queue.wake.notified();
        tokio::pin!(wake);
        wake.as_mut().enable();
        let owed = std::mem::take(&mut *queue.owed.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        if owed.all || !owed.devices.is_empty() {
            let Some(inner) = broker.upgrade() else { return };
            Broker(inner).push_agent_schedules(owed).await;
            continue;
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = wake => {}
        }
    }
}

/// Checks a local firing's report before it is stored.
///
/// # Errors
/// `bad_body` naming what is wrong.
pub(crate) fn check_local_run(body: Option<&Bytes>) -> Result<ScheduleRan, ErrorBody> {
    let bad = |why: String| ErrorBody::new(ErrorCode::BadBody, format!("{}: {why}", commands::SCHEDULES_RAN));
    let ran: ScheduleRan =
        serde_json::from_slice(body.map_or(&b"null"[..], |b| b.as_ref())).map_err(|e| bad(e.to_string()))?;
    if ran.schedule.is_empty() || ran.schedule.len() > 64 || ran.schedule.chars().any(char::is_control) {
        return Err(bad("schedule must be an id of 1 to 64 bytes".to_owned()));
    }
    super::check_command_name(&ran.command)?;
    if !matches!(ran.status, Status::Ok | Status::Error | Status::Timeout) {
        return Err(bad(format!("status {} is not an outcome of a run (ok, error, timeout)", ran.status)));
    }
    Ok(ran)
}

/// Logs a device's answer to a sync.
struct SyncAnswer {
    device: DeviceId,
    count: usize,
}

impl ReplySink for SyncAnswer {
    fn complete(self: Box<Self>, reply: Reply) {
        match reply.answer {
            Ok(_) => tracing::debug!(agent.id = %self.device, schedules = self.count, "agent-local schedules synced"),
            Err(e) => tracing::warn!(
                agent.id = %self.device,
                code = %e.code,
                "agent-local schedules not synced: {}", e.message
            ),
        }
    }

    fn is_gone(&self) -> bool {
        false
    }
}

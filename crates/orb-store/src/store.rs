//! [`SqlStore`], the one [`Store`] implementation: writes go to the writer task (`writer.rs`)
//! and wait for its commit, reads go to the read pool (`query.rs`). `close` flushes, stops the
//! writer and closes the pools; every call after it is `Unavailable`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::backend::Pools;
use crate::writer::{self, Op, Write, Written};
use crate::{DeliveryCount, Firing, HeldOutcome, NewSchedule, ScheduleCreated, ScheduleLimits, ScheduleRecord};
use crate::{
    Device, Enqueued, JobRecord, MessageLimits, NewDevice, NewMessage, NewQueued, QueueCounts, QueueLimits, Queued,
    Recorder, Store, StoreError, StoredMessage, TargetRecord, query,
};

/// A store over SQLite or PostgreSQL.
pub(crate) struct SqlStore {
    pools: Pools,
    tx: mpsc::Sender<Op>,
    writer_task: Mutex<Option<JoinHandle<()>>>,
    closed: AtomicBool,
}

impl SqlStore {
    /// Starts the writer over `pools`.
    pub(crate) fn start(pools: Pools) -> SqlStore {
        let (tx, task) = writer::spawn(pools.write.clone());
        SqlStore { pools, tx, writer_task: Mutex::new(Some(task)), closed: AtomicBool::new(false) }
    }

    fn check_open(&self) -> Result<(), StoreError> {
        if self.closed.load(Ordering::Acquire) { Err(writer::closed()) } else { Ok(()) }
    }

    async fn write(&self, write: Write) -> Result<Written, StoreError> {
        self.check_open()?;
        writer::write(&self.tx, write).await
    }

    async fn write_device(&self, write: Write) -> Result<Device, StoreError> {
        match self.write(write).await? {
            Written::Device(device) => Ok(*device),
            other => Err(unexpected(&other)),
        }
    }

    async fn write_nothing(&self, write: Write) -> Result<(), StoreError> {
        match self.write(write).await? {
            Written::Nothing => Ok(()),
            other => Err(unexpected(&other)),
        }
    }

    async fn write_count(&self, write: Write) -> Result<u64, StoreError> {
        match self.write(write).await? {
            Written::Count(n) => Ok(n),
            other => Err(unexpected(&other)),
        }
    }
}

/// The most steps one `prune_jobs` takes (each deletes up to 10,000 jobs): a bound, not a limit
/// any real history reaches.
const MAX_PRUNE_STEPS: usize = 100_000;

/// A writer answer of the wrong shape: a bug, reported rather than panicking.
fn unexpected(answer: &Written) -> StoreError {
    StoreError::Unavailable(format!("internal error: unexpected store answer {answer:?}"))
}

#[async_trait::async_trait]
impl Store for SqlStore {
    fn backend(&self) -> &'static str {
        self.pools.backend.name()
    }

    fn durability(&self) -> &str {
        &self.pools.durability
    }

    fn recorder(&self) -> Recorder {
        Recorder { tx: self.tx.clone() }
    }

    async fn flush(&self) -> Result<(), StoreError> {
        self.check_open()?;
        writer::flush(&self.tx).await
    }

    async fn devices(&self) -> Result<Vec<Device>, StoreError> {
        self.check_open()?;
        query::devices(&self.pools.read).await
    }

    async fn device(&self, id: &str) -> Result<Option<Device>, StoreError> {
        self.check_open()?;
        query::device(&self.pools.read, id).await
    }

    async fn add_device(&self, device: NewDevice) -> Result<Device, StoreError> {
        self.write_device(Write::AddDevice(device)).await
    }

    async fn set_secret(&self, id: &str, secret_hash: [u8; 32]) -> Result<(), StoreError> {
        self.write_nothing(Write::SetSecret { id: id.to_owned(), hash: secret_hash }).await
    }

    async fn revoke_device(&self, id: &str) -> Result<Device, StoreError> {
        self.write_device(Write::Revoke(id.to_owned())).await
    }

    async fn remove_device(&self, id: &str) -> Result<(), StoreError> {
        self.write_nothing(Write::Remove(id.to_owned())).await
    }

    async fn set_operator_tags(
        &self,
        id: &str,
        set: &BTreeMap<String, String>,
        remove: &[String],
    ) -> Result<Device, StoreError> {
        let write = Write::SetOperatorTags { id: id.to_owned(), set: set.clone(), remove: remove.to_vec() };
        self.write_device(write).await
    }

    async fn jobs(&self, limit: u32) -> Result<Vec<JobRecord>, StoreError> {
        self.check_open()?;
        query::jobs(&self.pools.read, limit, None).await
    }

    async fn schedule_jobs(&self, schedule: &str, limit: u32) -> Result<Vec<JobRecord>, StoreError> {
        self.check_open()?;
        query::jobs(&self.pools.read, limit, Some(schedule)).await
    }

    async fn job_schedules(&self, prefix: &str, limit: u32) -> Result<Vec<String>, StoreError> {
        self.check_open()?;
        query::job_schedules(&self.pools.read, self.pools.backend, prefix, limit).await
    }

    async fn job(&self, id_or_prefix: &str) -> Result<(JobRecord, Vec<TargetRecord>), StoreError> {
        self.check_open()?;
        query::job(&self.pools.read, self.pools.backend, id_or_prefix).await
    }

    async fn cancel_job(&self, id: &str, at: DateTime<Utc>) -> Result<Vec<String>, StoreError> {
        match self.write(Write::CancelJob { id: id.to_owned(), at }).await? {
            Written::Ids(ids) => Ok(ids),
            other => Err(unexpected(&other)),
        }
    }

    async fn recover_jobs(&self, node: &str, at: DateTime<Utc>, message: &str) -> Result<u64, StoreError> {
        self.write_count(Write::RecoverJobs { node: node.to_owned(), at, message: message.to_owned() }).await
    }

    async fn enqueue(&self, commands: Vec<NewQueued>, limits: QueueLimits) -> Result<Vec<Enqueued>, StoreError> {
        if commands.is_empty() {
            return Ok(Vec::new());
        }
        match self.write(Write::Enqueue { commands, limits }).await? {
            Written::Enqueued(out) => Ok(out),
            other => Err(unexpected(&other)),
        }
    }

    async fn queued_for(&self, device: &str, limit: u32) -> Result<Vec<Queued>, StoreError> {
        self.check_open()?;
        crate::queue::queued_for(&self.pools.read, device, limit).await
    }

    async fn delivered(&self, id: i64, at: DateTime<Utc>, again: bool) -> Result<u64, StoreError> {
        self.write_count(Write::Delivered { id, at, again }).await
    }

    async fn store_messages(&self, messages: Vec<NewMessage>, limits: MessageLimits) -> Result<Vec<bool>, StoreError> {
        match self.write(Write::StoreMessages { messages, limits }).await? {
            Written::Stored(fresh) => Ok(fresh),
            other => Err(unexpected(&other)),
        }
    }

    async fn messages_for(&self, device: &str, limit: u32) -> Result<Vec<StoredMessage>, StoreError> {
        self.check_open()?;
        crate::messages::newest(&self.pools.read, device, limit).await
    }

    async fn retain(&self, changes: Vec<crate::RetainedChange>) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        self.write_nothing(Write::Retain(changes)).await
    }

    async fn retained(&self) -> Result<Vec<crate::Retained>, StoreError> {
        self.check_open()?;
        crate::retained::all(&self.pools.read).await
    }

    async fn add_token(&self, token: crate::OperatorToken) -> Result<(), StoreError> {
        self.write_nothing(Write::AddToken(token)).await
    }

    async fn revoke_token(&self, name: &str, at: DateTime<Utc>) -> Result<(), StoreError> {
        self.write_nothing(Write::RevokeToken { name: name.to_owned(), at }).await
    }

    async fn tokens(&self) -> Result<Vec<crate::OperatorToken>, StoreError> {
        self.check_open()?;
        crate::tokens::all(&self.pools.read).await
    }

    async fn audit(&self, since: Option<DateTime<Utc>>, limit: u32) -> Result<Vec<crate::AuditRecord>, StoreError> {
        self.check_open()?;
        crate::audit::newest(&self.pools.read, since, limit).await
    }

    async fn prune_audit(&self, before: DateTime<Utc>, keep: u64) -> Result<u64, StoreError> {
        // Step by step, each its own write (and transaction), so other writes go between steps.
        let mut total = 0_u64;
        for _ in 0..MAX_PRUNE_STEPS {
            let deleted = self.write_count(Write::PruneAudit { before, keep }).await?;
            total = total.saturating_add(deleted);
            if deleted < crate::audit::PRUNE_STEP {
                return Ok(total);
            }
        }
        tracing::warn!(deleted = total, "audit pruning stopped after {MAX_PRUNE_STEPS} steps; the next prune goes on");
        Ok(total)
    }

    async fn undelivered(&self, id: i64) -> Result<bool, StoreError> {
        Ok(self.write_count(Write::Undelivered(id)).await? > 0)
    }

    async fn settle_held(&self, settled: Vec<HeldOutcome>) -> Result<Vec<bool>, StoreError> {
        if settled.is_empty() {
            return Ok(Vec::new());
        }
        match self.write(Write::SettleHeld { settled, at: Utc::now() }).await? {
            Written::Stored(held) => Ok(held),
            other => Err(unexpected(&other)),
        }
    }

    async fn count_deliveries(&self, counts: Vec<DeliveryCount>) -> Result<(), StoreError> {
        if counts.is_empty() {
            return Ok(());
        }
        self.write_count(Write::CountDeliveries(counts)).await.map(drop)
    }

    async fn create_schedule(
        &self,
        schedule: NewSchedule,
        limits: ScheduleLimits,
    ) -> Result<ScheduleCreated, StoreError> {
        match self.write(Write::CreateSchedule { schedule, limits }).await? {
            Written::ScheduleCreated(created) => Ok(created),
            other => Err(unexpected(&other)),
        }
    }

    async fn schedules(&self) -> Result<Vec<ScheduleRecord>, StoreError> {
        self.check_open()?;
        crate::schedules::all(&self.pools.read).await
    }

    async fn agent_schedules(&self) -> Result<Vec<ScheduleRecord>, StoreError> {
        self.check_open()?;
        crate::schedules::on_agents(&self.pools.read).await
    }

    async fn due_schedules(&self, before: DateTime<Utc>, limit: u32) -> Result<Vec<ScheduleRecord>, StoreError> {
        self.check_open()?;
        crate::schedules::due(&self.pools.read, before, limit).await
    }

    async fn next_firing(&self) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.check_open()?;
        crate::schedules::earliest(&self.pools.read).await
    }

    async fn schedule(&self, id_or_prefix: &str) -> Result<ScheduleRecord, StoreError> {
        self.check_open()?;
        crate::schedules::one(&self.pools.read, self.pools.backend, id_or_prefix).await
    }

    async fn pause_schedule(
        &self,
        id: &str,
        paused_at: Option<DateTime<Utc>>,
        next_fire_at: Option<DateTime<Utc>>,
    ) -> Result<bool, StoreError> {
        let write = Write::PauseSchedule { id: id.to_owned(), paused_at, next_fire_at };
        Ok(self.write_count(write).await? > 0)
    }

    async fn remove_schedule(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self.write_count(Write::RemoveSchedule(id.to_owned())).await? > 0)
    }

    async fn advance_schedule(&self, firing: Firing) -> Result<bool, StoreError> {
        Ok(self.write_count(Write::AdvanceSchedule(Box::new(firing))).await? > 0)
    }

    async fn dispatch_firing(&self, job: &str) -> Result<bool, StoreError> {
        Ok(self.write_count(Write::DispatchFiring(job.to_owned())).await? > 0)
    }

    async fn undispatched_firings(&self, node: &str) -> Result<Vec<crate::FiredJob>, StoreError> {
        self.check_open()?;
        crate::schedules::undispatched(&self.pools.read, node).await
    }

    async fn schedule_error(&self, id: &str, error: Option<String>) -> Result<(), StoreError> {
        self.write_count(Write::ScheduleError { id: id.to_owned(), error }).await.map(drop)
    }

    async fn expire_queued(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<Queued>, StoreError> {
        match self.write(Write::ExpireQueued { now, limit }).await? {
            Written::Queued(out) => Ok(out),
            other => Err(unexpected(&other)),
        }
    }

    async fn queue_counts(&self) -> Result<BTreeMap<String, QueueCounts>, StoreError> {
        self.check_open()?;
        crate::queue::counts(&self.pools.read).await
    }

    async fn prune_jobs(&self, before: DateTime<Utc>, keep: u64) -> Result<u64, StoreError> {
        // Step by step, each its own write (and transaction), so other writes go between steps.
        let mut step = Write::PruneJobs { before, keep };
        let mut total = 0_u64;
        for _ in 0..MAX_PRUNE_STEPS {
            match self.write(step).await? {
                Written::Pruned { deleted, more } => {
                    total = total.saturating_add(deleted);
                    match more {
                        Some(bound) => step = Write::PruneMore(bound),
                        None => return Ok(total),
                    }
                }
                other => return Err(unexpected(&other)),
            }
        }
        tracing::warn!(deleted = total, "pruning stopped after {MAX_PRUNE_STEPS} steps; the next prune goes on");
        Ok(total)
    }

    async fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        let (done_tx, done_rx) = oneshot::channel();
        if self.tx.send(Op::Close(done_tx)).await.is_ok() {
            // The writer commits everything queued before the close, then answers.
            let _ = done_rx.await;
        }
        let task = self.writer_task.lock().ok().and_then(|mut task| task.take());
        if let Some(task) = task
            && let Err(e) = task.await
        {
            tracing::error!(error = %e, "the store writer ended abnormally");
        }
        self.pools.close().await;
        tracing::info!(backend = self.pools.backend.name(), "store closed");
    }
}

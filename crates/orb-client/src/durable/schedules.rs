//! Agent-local schedules (decision 0016): the schedules the server keeps for this device, synced
//! to it whole (`$orb.schedules.sync`) and kept in the agent store, and the task that fires them
//! on the device's own clock, connected or not. Each firing runs the command's handler here and
//! sends its outcome through the outbox (`$orb.schedules.ran`), which reaches the server when the
//! link is up. A firing's next time is committed before the handler runs, so a crash never
//! repeats one; a firing while the schedule's previous one still runs is skipped (logged).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use orb_io::clock::Clock;
use orb_io::handler::{self, Context, Handlers};
use orb_proto::Status;
use orb_proto::message::commands;
use orb_proto::schedule::{AgentSchedule, ScheduleRan};
use sqlx::Row;
use sqlx::sqlite::SqlitePool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{DurableError, Outbox, ms};

/// The longest the firing task sleeps: a changed system clock is noticed within it.
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// How late a firing may be and still count as on time (as on the server).
const GRACE: Duration = Duration::from_secs(60);
/// How long the task waits before reading its schedules again after the store failed.
const RETRY: Duration = Duration::from_secs(5);

/// The schedules this device runs on its own clock.
#[derive(Debug, Clone)]
pub struct LocalSchedules {
    pool: SqlitePool,
    /// Told when the set changed: the firing task reads it again.
    changed: Arc<Notify>,
    /// The version of the last set applied (syncs are applied one at a time, never an older one
    /// over a newer one).
    applied: Arc<tokio::sync::Mutex<u64>>,
}

/// The firings running now (by schedule id: one at a time per schedule), ended when the firing
/// task stops.
#[derive(Default)]
struct Firings {
    ids: Mutex<HashSet<String>>,
    stop: CancellationToken,
}

/// One stored local schedule and when it fires next.
#[derive(Debug, Clone)]
pub struct LocalSchedule {
    /// What the server sent.
    pub schedule: AgentSchedule,
    /// Its next firing (`None`: it fires no more, e.g. an `at` schedule that fired).
    pub next_fire_at: Option<DateTime<Utc>>,
}

impl LocalSchedules {
    pub(crate) fn new(pool: SqlitePool) -> LocalSchedules {
        LocalSchedules { pool, changed: Arc::default(), applied: Arc::default() }
    }

    /// Makes `list` the set this device runs, in one transaction, unless a set of a newer
    /// `version` was applied already (then nothing changes: `Ok(None)`): a schedule kept
    /// unchanged keeps its next firing, a new or changed one starts from its first firing after
    /// `now`, one not in `list` is removed. Returns how many are kept.
    ///
    /// # Errors
    /// [`DurableError::Storage`] when the store fails (nothing changed).
    pub async fn sync(
        &self,
        version: u64,
        list: &[AgentSchedule],
        now: DateTime<Utc>,
    ) -> Result<Option<usize>, DurableError> {
        let mut applied = self.applied.lock().await;
        if version < *applied {
            return Ok(None);
        }
        let mut tx = self.pool.begin().await?;
        let stored: Vec<(String, String)> = sqlx::query("SELECT id, definition FROM local_schedules")
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| Ok((r.try_get("id")?, r.try_get("definition")?)))
            .collect::<Result<_, sqlx::Error>>()?;
        let wanted: HashSet<&str> = list.iter().map(|s| s.id.as_str()).collect();
        for (id, _) in stored.iter().filter(|(id, _)| !wanted.contains(id.as_str())) {
            sqlx::query("DELETE FROM local_schedules WHERE id = ?").bind(id).execute(&mut *tx).await?;
        }
        for s in list {
            let definition = serde_json::to_string(s).map_err(|e| DurableError::Invalid(e.to_string()))?;
            if stored.iter().any(|(id, d)| *id == s.id && *d == definition) {
                continue;
            }
            let next = orb_schedule::next_after(&s.spec, now).map(ms);
            sqlx::query(
                "INSERT INTO local_schedules (id, definition, next_fire_at) VALUES (?, ?, ?) \
                 ON CONFLICT (id) DO UPDATE SET definition = excluded.definition, next_fire_at = excluded.next_fire_at",
            )
            .bind(&s.id)
            .bind(&definition)
            .bind(next)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        *applied = version;
        self.changed.notify_one();
        Ok(Some(list.len()))
    }

    /// Every stored schedule, by id; one that cannot be read is left out (logged).
    ///
    /// # Errors
    /// [`DurableError::Storage`] when the store fails.
    pub async fn all(&self) -> Result<Vec<LocalSchedule>, DurableError> {
        let rows = sqlx::query("SELECT id, definition, next_fire_at FROM local_schedules ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let id: String = r.try_get("id")?;
            let definition: String = r.try_get("definition")?;
            match serde_json::from_str::<AgentSchedule>(&definition) {
                Ok(schedule) => {
                    let next: Option<i64> = r.try_get("next_fire_at")?;
                    out.push(LocalSchedule { schedule, next_fire_at: next.and_then(DateTime::from_timestamp_millis) });
                }
                Err(e) => {
                    tracing::warn!(schedule = id, error = %e, "a local schedule cannot be read; it does not fire")
                }
            }
        }
        Ok(out)
    }

    /// Moves schedule `id` on from `expected` to `next`, once (false when it was not there).
    async fn advance(
        &self,
        id: &str,
        expected: DateTime<Utc>,
        next: Option<DateTime<Utc>>,
    ) -> Result<bool, DurableError> {
        let done = sqlx::query("UPDATE local_schedules SET next_fire_at = ? WHERE id = ? AND next_fire_at = ?")
            .bind(next.map(ms))
            .bind(id)
            .bind(ms(expected))
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Fires the schedules as they come due, by `clock`, until `stop`: each firing runs its
    /// command's handler from `handlers` and sends the outcome through `outbox`.
    pub async fn run(&self, handlers: Handlers, outbox: Outbox, clock: Clock, stop: CancellationToken) {
        let running = Arc::new(Firings { ids: Mutex::default(), stop: stop.child_token() });
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let wait = match self.fire_due(&handlers, &outbox, &clock, &running).await {
                Ok(wait) => wait,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the local schedules; trying again");
                    RETRY
                }
            };
            tokio::select! {
                () = stop.cancelled() => return,
                () = &mut changed => {}
                () = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Fires what is due now; returns how long to sleep until the next firing (at most
    /// [`MAX_SLEEP`]).
    async fn fire_due(
        &self,
        handlers: &Handlers,
        outbox: &Outbox,
        clock: &Clock,
        running: &Arc<Firings>,
    ) -> Result<Duration, DurableError> {
        let now = clock.now();
        let mut earliest: Option<DateTime<Utc>> = None;
        for local in self.all().await? {
            let Some(expected) = local.next_fire_at else { continue };
            let s = local.schedule;
            if expected > now {
                earliest = Some(earliest.map_or(expected, |e| e.min(expected)));
                continue;
            }
            let due = orb_schedule::due(&s.spec, s.missed, expected, now, GRACE);
            if !self.advance(&s.id, expected, due.next).await? {
                continue;
            }
            if let Some(next) = due.next {
                earliest = Some(earliest.map_or(next, |e| e.min(next)));
            }
            if due.missed > 0 {
                tracing::info!(
                    schedule = s.id,
                    missed = due.missed,
                    "local firings missed while the agent was not running"
                );
            }
            if !due.fire_now {
                continue;
            }
            if !running.ids.lock().unwrap_or_else(std::sync::PoisonError::into_inner).insert(s.id.clone()) {
                tracing::warn!(schedule = s.id, "a local firing skipped: the previous one still runs");
                continue;
            }
            let (handlers, outbox, running) = (handlers.clone(), outbox.clone(), Arc::clone(running));
            tokio::spawn(async move {
                // Stopped with the firing task (the agent is stopping): the run ends unreported,
                // as if the agent had crashed; its next firing time is committed already.
                tokio::select! {
                    () = fire(&s, now, &handlers, &outbox) => {}
                    () = running.stop.cancelled() => {}
                }
                running.ids.lock().unwrap_or_else(std::sync::PoisonError::into_inner).remove(&s.id);
            });
        }
        let wait = earliest.map_or(MAX_SLEEP, |t| (t - now).to_std().unwrap_or(Duration::ZERO));
        Ok(wait.min(MAX_SLEEP))
    }
}

/// Runs one firing of `s` (due at `fired_at`) and sends its outcome through the outbox.
async fn fire(s: &AgentSchedule, fired_at: DateTime<Utc>, handlers: &Handlers, outbox: &Outbox) {
    let ctx = Context {
        cmd: s.command.clone(),
        from: format!("schedule:{}", s.id),
        args: s.args.as_ref().map_or_else(|| Bytes::from_static(b"null"), |a| Bytes::from(a.get().to_owned())),
        job: None,
        deadline: Duration::from_millis(s.deadline_ms),
        cancel: CancellationToken::new(),
        progress: orb_io::handler::Progress::off(),
    };
    let started = tokio::time::Instant::now();
    let outcome = handler::run(handlers.get(&s.command), ctx).await;
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let fired = fired_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let ran = ScheduleRan::new(&s.id, &s.command, fired, elapsed_ms, outcome);
    if ran.status != Status::Ok {
        tracing::info!(schedule = s.id, command = s.command, status = %ran.status, "a local firing did not succeed");
    }
    let body = Bytes::from(serde_json::to_vec(&ran).expect("a firing's report always serialises"));
    if let Err(e) = outbox.send_reserved(commands::SCHEDULES_RAN, body).await {
        tracing::warn!(schedule = s.id, error = %e, "a local firing's outcome could not be kept for the server");
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::durable::{AgentStore, DurableLimits};
    use orb_proto::schedule::MissedPolicy;
    use orb_schedule::Spec;
    use tokio::sync::mpsc;

    /// A clock the test moves by hand, starting at `t0`.
    fn hand_clock(t0: DateTime<Utc>) -> (Clock, Arc<Mutex<DateTime<Utc>>>) {
        let now = Arc::new(Mutex::new(t0));
        let read = Arc::clone(&now);
        (Clock::from_fn(move || *read.lock().unwrap()), now)
    }

    fn every(id: &str, every_ms: u64, anchor: DateTime<Utc>, missed: MissedPolicy) -> AgentSchedule {
        AgentSchedule {
            id: id.to_owned(),
            spec: Spec::Every { every_ms, anchor },
            missed,
            command: "probe".to_owned(),
            args: serde_json::value::to_raw_value(&serde_json::json!({"n": 1})).ok(),
            deadline_ms: 5_000,
        }
    }

    fn every_10s(id: &str, anchor: DateTime<Utc>, missed: MissedPolicy) -> AgentSchedule {
        every(id, 10_000, anchor, missed)
    }

    /// Waits (bounded) until the outbox holds `n` reports, and returns them.
    async fn outbox_holds(store: &AgentStore, n: u64) -> Vec<ScheduleRan> {
        for _ in 0..400 {
            if store.outbox().len() >= n {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        reports(store).await
    }

    /// `probe` tells the test each run (who asked) and answers its arguments.
    fn probe() -> (Handlers, mpsc::UnboundedReceiver<String>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let handlers = Handlers::new().on("probe", move |c: Context| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(c.from.clone());
                c.args::<serde_json::Value>()
            }
        });
        (handlers, rx)
    }

    async fn store() -> (tempfile::TempDir, AgentStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = AgentStore::open(&dir.path().join("agent.db"), DurableLimits::default()).await.unwrap();
        (dir, store)
    }

    /// The reports the outbox holds, oldest first.
    async fn reports(store: &AgentStore) -> Vec<ScheduleRan> {
        let rows =
            sqlx::query("SELECT cmd, body FROM outbox ORDER BY seq").fetch_all(&store.schedules.pool).await.unwrap();
        rows.iter()
            .map(|r| {
                assert_eq!(r.get::<String, _>("cmd"), commands::SCHEDULES_RAN);
                serde_json::from_str(&r.get::<String, _>("body")).unwrap()
            })
            .collect()
    }

    #[tokio::test]
    async fn a_sync_keeps_unchanged_schedules_where_they_were_and_drops_the_rest() {
        let (_dir, store) = store().await;
        let t0 = "2026-12-06T10:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let a = every_10s("a", t0, MissedPolicy::Skip);
        let b = every_10s("b", t0, MissedPolicy::Skip);
        assert_eq!(store.schedules().sync(1, &[a.clone(), b.clone()], t0).await.unwrap(), Some(2));
        let next = |all: &[LocalSchedule], id: &str| all.iter().find(|s| s.schedule.id == id).unwrap().next_fire_at;
        let all = store.schedules().all().await.unwrap();
        assert_eq!(next(&all, "a"), Some(t0 + chrono::Duration::seconds(10)));

        // Later, `a` unchanged keeps its next firing; `b` changed starts again; `c` is gone.
        let later = t0 + chrono::Duration::seconds(25);
        let b2 = AgentSchedule { command: "other".to_owned(), ..b };
        store.schedules().sync(2, &[a, b2], later).await.unwrap();
        assert_eq!(store.schedules().sync(1, &[], later).await.unwrap(), None, "an older set is ignored");
        let all = store.schedules().all().await.unwrap();
        assert_eq!(next(&all, "a"), Some(t0 + chrono::Duration::seconds(10)), "kept");
        assert_eq!(next(&all, "b"), Some(t0 + chrono::Duration::seconds(30)), "changed: from now");
        store.schedules().sync(3, &[], later).await.unwrap();
        assert!(store.schedules().all().await.unwrap().is_empty(), "removed");
    }

    #[tokio::test]
    async fn firings_follow_the_injected_clock_and_report_through_the_outbox() {
        let (_dir, store) = store().await;
        let t0 = "2026-12-06T10:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let (clock, now) = hand_clock(t0);
        let (handlers, mut ran) = probe();
        let set = |t: DateTime<Utc>| *now.lock().unwrap() = t;
        let mins = chrono::Duration::minutes;
        store.schedules().sync(1, &[every("s-1", 600_000, t0, MissedPolicy::Skip)], t0).await.unwrap();
        let running = Arc::default();
        let (local, outbox) = (store.schedules(), store.outbox());

        set(t0 + mins(5));
        let wait = local.fire_due(&handlers, outbox, &clock, &running).await.unwrap();
        assert_eq!(wait, MAX_SLEEP, "asleep until the first firing, a minute at most");
        assert!(ran.try_recv().is_err(), "not due yet");

        set(t0 + mins(10));
        local.fire_due(&handlers, outbox, &clock, &running).await.unwrap();
        assert_eq!(ran.recv().await.as_deref(), Some("schedule:s-1"));
        // A second wake-up at the same time fires nothing more (the next firing was committed).
        local.fire_due(&handlers, outbox, &clock, &running).await.unwrap();

        // Three hours with the agent stopped, woken 3 minutes after a firing time (past the 60 s
        // grace): `skip` fires none of the 18 it missed and goes on from the grid.
        set(t0 + mins(183));
        let wait = local.fire_due(&handlers, outbox, &clock, &running).await.unwrap();
        assert_eq!(wait, MAX_SLEEP);
        set(t0 + mins(190));
        let wait = local.fire_due(&handlers, outbox, &clock, &running).await.unwrap();
        assert_eq!(wait, MAX_SLEEP);
        assert_eq!(ran.recv().await.as_deref(), Some("schedule:s-1"));
        let sent = outbox_holds(&store, 2).await;
        assert_eq!(sent.len(), 2, "{sent:?}");
        assert!(ran.try_recv().is_err(), "nothing else ran: the missed firings were skipped");
        assert_eq!((sent[0].status, sent[0].result.as_ref().map(|r| r.get())), (Status::Ok, Some(r#"{"n":1}"#)));
        assert_eq!(sent[0].fired_at, "2026-12-06T10:10:00.000Z");
        assert_eq!(sent[1].fired_at, "2026-12-06T13:10:00.000Z");

        // A firing 5 s away: the task sleeps exactly until it.
        store
            .schedules()
            .sync(2, &[every_10s("s-2", t0 + mins(190), MissedPolicy::Skip)], t0 + mins(190))
            .await
            .unwrap();
        set(t0 + mins(190) + chrono::Duration::seconds(5));
        let wait = local.fire_due(&handlers, outbox, &clock, &running).await.unwrap();
        assert_eq!(wait, Duration::from_secs(5));
    }

    #[tokio::test]
    async fn run_once_makes_up_for_a_stopped_agent_and_an_unknown_command_is_reported() {
        let (_dir, store) = store().await;
        let t0 = "2026-12-06T10:00:00Z".parse::<DateTime<Utc>>().unwrap();
        let (clock, now) = hand_clock(t0);
        let (handlers, mut ran) = probe();
        let missing = AgentSchedule { command: "nope".to_owned(), ..every("s-2", 600_000, t0, MissedPolicy::Skip) };
        store.schedules().sync(1, &[every("s-1", 600_000, t0, MissedPolicy::RunOnce), missing], t0).await.unwrap();
        *now.lock().unwrap() = t0 + chrono::Duration::minutes(122);
        let running = Arc::default();
        store.schedules().fire_due(&handlers, store.outbox(), &clock, &running).await.unwrap();
        assert_eq!(ran.recv().await.as_deref(), Some("schedule:s-1"), "run-once fires once when back");
        let sent = outbox_holds(&store, 1).await;
        assert_eq!(sent.len(), 1, "skip drops s-2's missed firings: {sent:?}");
        assert!(ran.try_recv().is_err());

        *now.lock().unwrap() = t0 + chrono::Duration::minutes(130);
        store.schedules().fire_due(&handlers, store.outbox(), &clock, &running).await.unwrap();
        let sent = outbox_holds(&store, 3).await;
        let nope = sent.iter().find(|r| r.schedule == "s-2").unwrap();
        assert_eq!(nope.status, Status::Error);
        assert_eq!(nope.error.as_ref().map(|e| e.code.as_str()), Some("unknown_command"));
    }
}

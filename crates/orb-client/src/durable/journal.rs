//! The journal of held commands (those the server delivers from its queue, with an `attempt`):
//! `started` is committed before the handler runs and the outcome when it finishes, so a command
//! delivered again is answered from here. One started without an outcome (the agent died while
//! running it) answers `interrupted`: neither lost nor run twice. Bounded by age and count.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use orb_io::handler::HandlerResult;
use orb_proto::{ErrorBody, ErrorCode};
use sqlx::Row;
use sqlx::sqlite::SqlitePool;
use tokio::sync::watch;

use super::{DurableError, ms};

/// How much of its history the journal keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalLimits {
    /// Entries older than this are forgotten. Keep it at least the server's `max_ttl`: a held
    /// command redelivered after its entry was forgotten would run again.
    pub max_age: Duration,
    /// Entries kept at most (the oldest are forgotten first).
    pub max_entries: u64,
}

impl Default for JournalLimits {
    fn default() -> Self {
        JournalLimits { max_age: Duration::from_secs(8 * 24 * 3600), max_entries: 100_000 }
    }
}

/// What the journal knew about a command before this delivery.
#[derive(Debug, Clone, PartialEq)]
pub enum Journaled {
    /// Never seen: now recorded as started; run the handler, then [`Journal::finish`].
    New,
    /// Run before, with this outcome: send it again.
    Finished(HandlerResult),
    /// Started before without an outcome (the agent stopped while running it): not run again.
    Interrupted,
}

impl Journaled {
    /// The answer for a command that must not run again (`None` for [`Journaled::New`]).
    pub fn answer(self) -> Option<HandlerResult> {
        match self {
            Journaled::New => None,
            Journaled::Finished(result) => Some(result),
            Journaled::Interrupted => Some(Err(ErrorBody::new(
                ErrorCode::Interrupted,
                "the agent stopped while running this command; it is not run again",
            ))),
        }
    }
}

/// The journal (a cheap handle).
#[derive(Debug, Clone)]
pub struct Journal {
    pub(super) pool: SqlitePool,
    limits: JournalLimits,
    /// Held commands running in this process, by job: a redelivery that comes while one still
    /// runs (the link dropped and came back) waits for its outcome instead of answering
    /// `interrupted`.
    running: Arc<Mutex<HashMap<String, watch::Receiver<Option<HandlerResult>>>>>,
}

/// Entries over the count limit are pruned once this many more have been added.
const PRUNE_EVERY: u64 = 1000;

impl Journal {
    pub(super) fn new(pool: SqlitePool, limits: JournalLimits) -> Journal {
        Journal { pool, limits, running: Arc::default() }
    }

    /// Runs held command `job` at most once: when it ran before, its recorded outcome is
    /// answered; when it runs in this process now, its outcome once it finishes; when it was
    /// started by an earlier process that stopped before it finished, `interrupted`. Otherwise it
    /// is recorded as started, `run` is awaited and its outcome recorded. A journal that cannot be
    /// written runs nothing (the answer says why).
    pub async fn run_once(
        &self,
        job: &str,
        cmd: &str,
        run: impl std::future::Future<Output = HandlerResult>,
    ) -> HandlerResult {
        let in_progress = self.lock_running().get(job).cloned();
        if let Some(mut outcome) = in_progress
            && let Ok(done) = outcome.wait_for(Option::is_some).await
        {
            return done.clone().unwrap_or_else(|| unreachable_outcome(cmd));
        }
        match self.begin(job, cmd).await {
            Ok(known) => {
                if let Some(answer) = known.answer() {
                    return answer;
                }
            }
            Err(e) => {
                tracing::error!(job, error = %e, "cannot journal a held command; not running it");
                return Err(ErrorBody::new(
                    ErrorCode::Internal,
                    format!("{cmd}: the agent cannot write its journal ({e}); the command did not run"),
                ));
            }
        }
        let (tx, rx) = watch::channel(None);
        self.lock_running().insert(job.to_owned(), rx);
        // Removes the entry however this ends (a dropped task included).
        let _entry = RunningEntry { journal: self, job };
        let result = run.await;
        if let Err(e) = self.finish(job, &result).await {
            tracing::error!(job, error = %e, "cannot journal a held command's outcome");
        }
        tx.send_replace(Some(result.clone()));
        result
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Receiver<Option<HandlerResult>>>> {
        // Never held across an await.
        self.running.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Looks command `job` up and, when it is new, commits it as started (`cmd` is recorded for
    /// people reading the file).
    ///
    /// # Errors
    /// [`DurableError::Storage`]: then nothing was recorded and the handler must not run.
    pub async fn begin(&self, job: &str, cmd: &str) -> Result<Journaled, DurableError> {
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query("SELECT finished_at, ok, result, error_code, error_message FROM journal WHERE job = $1")
            .bind(job)
            .fetch_optional(&mut *tx)
            .await?;
        let known = match row {
            None => {
                sqlx::query("INSERT INTO journal (job, cmd, started_at) VALUES ($1, $2, $3)")
                    .bind(job)
                    .bind(cmd)
                    .bind(ms(Utc::now()))
                    .execute(&mut *tx)
                    .await?;
                Journaled::New
            }
            Some(row) => match row.try_get::<Option<i64>, _>("finished_at")? {
                None => Journaled::Interrupted,
                Some(_) => Journaled::Finished(outcome(&row)?),
            },
        };
        tx.commit().await?;
        if known == Journaled::New {
            self.prune_now_and_then().await;
        }
        Ok(known)
    }

    /// Commits the outcome of command `job`, started with [`Journal::begin`].
    ///
    /// # Errors
    /// [`DurableError::Storage`]: the outcome is not kept (a redelivery answers `interrupted`).
    pub async fn finish(&self, job: &str, result: &HandlerResult) -> Result<(), DurableError> {
        let (ok, value, code, message) = match result {
            Ok(v) => (1_i64, Some(v.to_string()), None, None),
            Err(e) => (0, None, Some(e.code.as_str().to_owned()), Some(e.message.clone())),
        };
        sqlx::query(
            "UPDATE journal SET finished_at = $2, ok = $3, result = $4, error_code = $5, error_message = $6 \
             WHERE job = $1",
        )
        .bind(job)
        .bind(ms(Utc::now()))
        .bind(ok)
        .bind(value)
        .bind(code)
        .bind(message)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Forgets entries older than `max_age` before `now`, then the oldest beyond `max_entries`;
    /// answers how many.
    ///
    /// # Errors
    /// [`DurableError::Storage`].
    pub async fn prune(&self, now: DateTime<Utc>) -> Result<u64, DurableError> {
        let age = chrono::Duration::from_std(self.limits.max_age).unwrap_or(chrono::Duration::MAX);
        let cutoff = now.checked_sub_signed(age).map_or(i64::MIN, ms);
        let old = sqlx::query("DELETE FROM journal WHERE started_at < $1").bind(cutoff).execute(&self.pool).await?;
        let keep = i64::try_from(self.limits.max_entries).unwrap_or(i64::MAX);
        let over = sqlx::query(
            "DELETE FROM journal WHERE job IN \
             (SELECT job FROM journal ORDER BY started_at DESC, rowid DESC LIMIT -1 OFFSET $1)",
        )
        .bind(keep)
        .execute(&self.pool)
        .await?;
        Ok(old.rows_affected() + over.rows_affected())
    }

    /// Entries kept.
    ///
    /// # Errors
    /// [`DurableError::Storage`].
    pub async fn len(&self) -> Result<u64, DurableError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM journal").fetch_one(&self.pool).await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// Whether the journal is empty.
    ///
    /// # Errors
    /// [`DurableError::Storage`].
    pub async fn is_empty(&self) -> Result<bool, DurableError> {
        Ok(self.len().await? == 0)
    }

    /// Prunes after every [`PRUNE_EVERY`] new entries (by rowid), so the journal stays within its
    /// bounds without a timer. A failed prune is logged; the next one catches up.
    async fn prune_now_and_then(&self) {
        let last: Result<i64, _> = sqlx::query_scalar("SELECT last_insert_rowid()").fetch_one(&self.pool).await;
        if last.is_ok_and(|n| u64::try_from(n).unwrap_or(0) % PRUNE_EVERY == 0)
            && let Err(e) = self.prune(Utc::now()).await
        {
            tracing::warn!(error = %e, "cannot prune the agent journal");
        }
    }
}

/// Removes a running command's entry when dropped.
struct RunningEntry<'a> {
    journal: &'a Journal,
    job: &'a str,
}

impl Drop for RunningEntry<'_> {
    fn drop(&mut self) {
        self.journal.lock_running().remove(self.job);
    }
}

/// What a waiter answers if a running command's outcome never came (its task was dropped).
fn unreachable_outcome(cmd: &str) -> HandlerResult {
    Err(ErrorBody::new(ErrorCode::Interrupted, format!("{cmd}: the agent stopped running this command")))
}

/// The stored outcome of a finished entry.
fn outcome(row: &sqlx::sqlite::SqliteRow) -> Result<HandlerResult, DurableError> {
    let ok: Option<i64> = row.try_get("ok")?;
    if ok == Some(1) {
        let text: Option<String> = row.try_get("result")?;
        let value = serde_json::from_str(text.as_deref().unwrap_or("null"))
            .map_err(|e| DurableError::Storage(format!("a journaled result does not parse: {e}")))?;
        return Ok(Ok(value));
    }
    let code: Option<String> = row.try_get("error_code")?;
    let message: Option<String> = row.try_get("error_message")?;
    Ok(Err(ErrorBody::new(
        ErrorCode::from_wire(code.as_deref().unwrap_or("handler_error")),
        message.unwrap_or_default(),
    )))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::durable::{AgentStore, DurableLimits};

    async fn open(dir: &std::path::Path, limits: JournalLimits) -> Journal {
        let limits = DurableLimits { journal: limits, ..DurableLimits::default() };
        AgentStore::open(&dir.join("agent.db"), limits).await.unwrap().journal().clone()
    }

    #[tokio::test]
    async fn a_command_is_new_once_then_answered_from_the_journal_even_after_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let j = open(dir.path(), JournalLimits::default()).await;
        assert_eq!(j.begin("job-1", "ping").await.unwrap(), Journaled::New);
        assert_eq!(j.begin("job-1", "ping").await.unwrap(), Journaled::Interrupted, "started, no outcome yet");
        j.finish("job-1", &Ok(serde_json::json!({"pong": true}))).await.unwrap();
        let err = ErrorBody::new(ErrorCode::BadArgs, "no");
        assert_eq!(j.begin("job-2", "echo").await.unwrap(), Journaled::New);
        j.finish("job-2", &Err(err.clone())).await.unwrap();
        drop(j);
        let j = open(dir.path(), JournalLimits::default()).await;
        assert_eq!(j.begin("job-1", "ping").await.unwrap(), Journaled::Finished(Ok(serde_json::json!({"pong": true}))));
        assert_eq!(j.begin("job-2", "echo").await.unwrap(), Journaled::Finished(Err(err)));
        assert_eq!(j.begin("job-3", "ping").await.unwrap(), Journaled::New);
        assert_eq!(j.len().await.unwrap(), 3);
    }

    #[tokio::test]
    async fn an_entry_started_before_a_crash_answers_interrupted() {
        let dir = tempfile::tempdir().unwrap();
        let j = open(dir.path(), JournalLimits::default()).await;
        assert_eq!(j.begin("job-1", "sleep").await.unwrap(), Journaled::New);
        drop(j); // the agent dies before the handler finished
        let j = open(dir.path(), JournalLimits::default()).await;
        let answer = j.begin("job-1", "sleep").await.unwrap().answer().unwrap();
        assert_eq!(answer.unwrap_err().code, ErrorCode::Interrupted);
    }

    #[tokio::test]
    async fn the_journal_forgets_by_age_and_keeps_at_most_max_entries() {
        let dir = tempfile::tempdir().unwrap();
        let limits = JournalLimits { max_age: Duration::from_secs(3600), max_entries: 3 };
        let j = open(dir.path(), limits).await;
        for n in 0..5 {
            assert_eq!(j.begin(&format!("job-{n}"), "ping").await.unwrap(), Journaled::New);
            j.finish(&format!("job-{n}"), &Ok(serde_json::json!(n))).await.unwrap();
        }
        assert_eq!(j.prune(Utc::now()).await.unwrap(), 2);
        assert_eq!(j.len().await.unwrap(), 3);
        assert_eq!(j.begin("job-0", "ping").await.unwrap(), Journaled::New, "the oldest was forgotten");
        assert!(matches!(j.begin("job-4", "ping").await.unwrap(), Journaled::Finished(_)));
        let later = Utc::now() + chrono::Duration::hours(2);
        assert_eq!(j.prune(later).await.unwrap(), 4, "all older than an hour by then");
        assert!(j.is_empty().await.unwrap());
    }
}

//! The store conformance suite (feature `testkit`): every [`Store`] behaviour the server relies
//! on, as `pub async fn` cases over a [`Harness`], run against each backend by
//! [`conformance_tests!`](crate::conformance_tests), plus throwaway databases ([`TempSqlite`],
//! [`TempPostgres`]) other crates' tests can use.
//!
//! ```ignore
//! mod sqlite { orb_store::conformance_tests!(sqlite); }
//! mod postgres { orb_store::conformance_tests!(postgres); } // needs ORB_TEST_POSTGRES_URL
//! ```
//! Each case becomes its own `#[tokio::test]`, so a failure names the case and the backend.
//! PostgreSQL cases print a line and pass when `ORB_TEST_POSTGRES_URL` is unset, and panic when
//! it is unset under `CI=true`.

mod audit;
mod devices;
mod jobs;
mod queue;
mod retained;
mod schedules;
mod stored;
mod temp;
mod tokens;

pub use audit::*;
pub use devices::*;
pub use jobs::*;
pub use queue::*;
pub use retained::*;
pub use schedules::*;
pub use stored::*;
pub use temp::{POSTGRES_URL_VAR, TempPostgres, TempSqlite};
pub use tokens::*;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};

use crate::{NewDevice, Store, StoreUrl};

/// One case's store, on a throwaway database, which it can close and open again.
pub struct Harness {
    url: StoreUrl,
    store: Mutex<Arc<dyn Store>>,
    _sqlite: Option<TempSqlite>,
    postgres: Option<TempPostgres>,
}

impl Harness {
    /// A store on a fresh SQLite file (never skipped; `case` names the test).
    ///
    /// # Panics
    /// When the store cannot be opened.
    pub async fn sqlite(_case: &str) -> Option<Harness> {
        let temp = TempSqlite::new();
        let url = temp.url();
        let store = open(&url).await;
        Some(Harness { url, store: Mutex::new(store), _sqlite: Some(temp), postgres: None })
    }

    /// A store on a fresh PostgreSQL database; `None` (after printing why) when
    /// `ORB_TEST_POSTGRES_URL` is unset.
    ///
    /// # Panics
    /// When the variable is unset under `CI=true`, or the store cannot be opened.
    pub async fn postgres(case: &str) -> Option<Harness> {
        let Some(temp) = TempPostgres::create().await else {
            eprintln!("skipped postgres::{case}: {POSTGRES_URL_VAR} is not set");
            return None;
        };
        let url = temp.url();
        let store = open(&url).await;
        Some(Harness { url, store: Mutex::new(store), _sqlite: None, postgres: Some(temp) })
    }

    /// The current store.
    pub fn store(&self) -> Arc<dyn Store> {
        self.store.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The database URL.
    pub fn url(&self) -> &StoreUrl {
        &self.url
    }

    /// Closes the current store and opens a new one on the same database (a restart).
    pub async fn reopen(&self) -> Arc<dyn Store> {
        self.store().close().await;
        let store = open(&self.url).await;
        *self.store.lock().unwrap_or_else(|e| e.into_inner()) = store.clone();
        store
    }

    /// Closes the store and drops the database.
    pub async fn finish(self) {
        self.store().close().await;
        if let Some(pg) = self.postgres {
            pg.drop_db().await;
        }
    }
}

async fn open(url: &StoreUrl) -> Arc<dyn Store> {
    crate::open(url).await.unwrap_or_else(|e| panic!("opening {}: {e}", url.redacted()))
}

/// Runs each named case against one backend (`sqlite` or `postgres`), one test per case.
/// With no case list, runs the whole suite.
#[macro_export]
macro_rules! conformance_tests {
    ($backend:ident) => {
        $crate::conformance_tests!($backend:
            devices_add_get_list,
            duplicate_add_conflicts,
            unknown_device_is_not_found,
            revoke_erases_secret_and_remove_forgets,
            operator_tags_set_and_remove,
            connection_records_update_inventory,
            commits_are_durable,
            flush_makes_records_visible,
            group_commit_concurrent_writes,
            failing_record_does_not_sink_its_batch,
            restart_keeps_everything,
            calls_after_close_are_unavailable,
            one_store_per_sqlite_database,
            debug_output_hides_secrets,
            failures_are_told_apart,
            job_created_and_settled,
            job_skipped_count_is_kept,
            job_ended_settles_pending,
            jobs_ordering_limit_summary,
            job_by_id_or_prefix,
            cancel_job_by_state,
            recover_jobs_ends_running,
            recover_jobs_ends_only_its_nodes_jobs,
            prune_jobs_by_age_and_count,
            prune_never_deletes_running_jobs,
            prune_jobs_in_chunks,
            settled_outcomes_for_unknown_jobs_are_skipped,
            job_prefix_ignores_case,
            big_job_round_trip,
            jobs_stored_with_pending_rows_still_work,
            pending_targets_get_rows_when_settled,
            late_answers_are_kept_beside_the_timeout,
            error_data_is_kept_in_time_and_late,
            late_rows_written_over_a_timeout_stay_readable,
            an_old_database_upgrades_in_place,
            delivery_counts_move_to_their_own_table,
            damaged_rows_never_fail_a_whole_read,
            queue_keeps_order_per_device,
            queue_limits_refuse_per_device,
            queue_delivery_and_settling,
            queue_holds_handed_over_and_settles_in_bulk,
            delivery_counts_add_up,
            queue_expiry_takes_what_is_over,
            queue_survives_a_restart,
            device_messages_are_stored_once_and_trimmed,
            a_job_with_held_commands_ends_when_they_settle,
            an_expired_command_settles_its_target,
            cancelling_a_job_drops_its_waiting_held_commands,
            schedules_are_stored_within_limits,
            a_firing_is_stored_once,
            a_paused_schedule_does_not_fire,
            agent_schedules_are_listed_while_active,
            retained_messages_are_set_replaced_cleared_and_kept,
            operator_tokens_are_added_revoked_and_kept,
            audit_entries_are_appended_filtered_bounded_and_pruned,
        );
    };
    ($backend:ident: $($case:ident),+ $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(harness) = $crate::testkit::Harness::$backend(stringify!($case)).await else {
                    return;
                };
                $crate::testkit::$case(&harness).await;
                harness.finish().await;
            }
        )+
    };
}

/// A raw connection to the harness's database, for cases that look under the store.
pub(crate) async fn raw(h: &Harness) -> sqlx::AnyConnection {
    raw_at(h.url()).await
}

/// A raw connection to the database at `url` (a SQLite file must exist).
pub(crate) async fn raw_at(url: &StoreUrl) -> sqlx::AnyConnection {
    use sqlx::{ConnectOptions as _, Connection as _};
    crate::backend::install_drivers();
    let text = match url {
        StoreUrl::Sqlite(path) => sqlx::sqlite::SqliteConnectOptions::new().filename(path).to_url_lossy().to_string(),
        StoreUrl::Postgres(url) => url.clone(),
    };
    sqlx::AnyConnection::connect(&text).await.unwrap()
}

/// Runs `sql` (one or more statements) on `conn`.
pub(crate) async fn exec(conn: &mut sqlx::AnyConnection, sql: &str) {
    sqlx::raw_sql(sqlx::AssertSqlSafe(sql.to_owned())).execute(conn).await.unwrap();
}

/// A fixed instant plus `ms` milliseconds (stored times have millisecond precision).
pub fn t(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(1_750_000_000_000 + ms).expect("a time in range")
}

/// A string map from pairs.
pub fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
}

/// A device to register at `t(0)`, without secret or tags.
pub fn new_device(id: &str) -> NewDevice {
    NewDevice { id: id.to_owned(), secret_hash: None, operator_tags: BTreeMap::new(), registered_at: t(0) }
}

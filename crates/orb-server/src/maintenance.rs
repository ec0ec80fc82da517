//! Background upkeep of the store: job retention (by age and count) and a coarse `last_seen`
//! for connected devices, so a `kill -9` loses at most a minute of it. Both run until shutdown.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::config::StoreConfig;
use crate::router::Router;

/// How often retention runs.
const RETENTION_EVERY: Duration = Duration::from_secs(60);
/// How often connected devices' `last_seen` is stored (when they were heard from meanwhile).
const SEEN_EVERY: Duration = Duration::from_secs(60);

/// Runs retention and the `last_seen` sweep until `shutdown`.
pub(crate) async fn run(router: Arc<Router>, store: StoreConfig, shutdown: CancellationToken) {
    let mut retention = tokio::time::interval(RETENTION_EVERY);
    retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut seen = tokio::time::interval_at(tokio::time::Instant::now() + SEEN_EVERY, SEEN_EVERY);
    seen.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_sweep = Utc::now();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = retention.tick() => prune(&router, &store).await,
            _ = seen.tick() => {
                let now = Utc::now();
                sweep_seen(&router, last_sweep);
                last_sweep = now;
            }
        }
    }
}

/// Deletes jobs older than the retention age, then all but the newest `job_retention_count`.
pub(crate) async fn prune(router: &Router, cfg: &StoreConfig) {
    let age = chrono::Duration::from_std(cfg.job_retention).unwrap_or(chrono::Duration::MAX);
    let before = Utc::now().checked_sub_signed(age).unwrap_or(DateTime::<Utc>::MIN_UTC);
    match router.registry().store().prune_jobs(before, cfg.job_retention_count).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(jobs = n, "job retention deleted old jobs"),
        Err(e) => tracing::warn!(error = %e, "job retention failed; retrying later"),
    }
}

/// Records `last_seen` for every connected device that sent something since `since`.
fn sweep_seen(router: &Router, since: DateTime<Utc>) {
    let since_ms = u64::try_from(since.timestamp_millis()).unwrap_or(0);
    for session in router.all_devices() {
        let last = session.record.stats.last_received_ms.load(Ordering::Relaxed);
        if last > since_ms
            && let Some(at) = DateTime::from_timestamp_millis(last as i64)
        {
            router.registry().seen(session.record.id.as_str(), at);
        }
    }
}

//! Background upkeep until shutdown: every second, requests past their deadline are answered
//! `timeout`, ended jobs past their late window forgotten and held commands past their TTL
//! ended `expired` (the client library enforces its own
//! deadline precisely; this frees the server's records); every five seconds, the delivery counts
//! gathered in memory written to the store; every minute, job and audit log retention (by age
//! and count) and a coarse `last_seen` for connected devices, so a `kill -9` loses at most a minute
//! of it. Every second too, the frame counters are sampled for the message rates of
//! `GET /v1/status` (`crate::metrics`).

use std::sync::atomic::Ordering;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::broker::Broker;
use crate::config::StoreConfig;

/// How often expired correlations are swept.
const EXPIRE_EVERY: Duration = Duration::from_secs(1);
/// How often retention runs.
const RETENTION_EVERY: Duration = Duration::from_secs(60);
/// How often connected devices' `last_seen` is stored (when they were heard from meanwhile).
const SEEN_EVERY: Duration = Duration::from_secs(60);

/// Runs the sweeps until `shutdown`; retention reads `store` each time (a reload replaces it).
pub(crate) async fn run(broker: Broker, store: Arc<RwLock<StoreConfig>>, shutdown: CancellationToken) {
    let every = |d: Duration| {
        let mut t = tokio::time::interval_at(tokio::time::Instant::now() + d, d);
        t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        t
    };
    let (mut expire, mut seen, mut sample) = (every(EXPIRE_EVERY), every(SEEN_EVERY), every(crate::metrics::TICK));
    let mut samples = 0_u64;
    let mut retention = tokio::time::interval(RETENTION_EVERY);
    retention.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_sweep = Utc::now();
    // Held commands are swept (and delivery counts written) by a task of their own: a slow store
    // never delays request timeouts.
    let held = {
        let (broker, shutdown) = (broker.clone(), shutdown.clone());
        let (mut tick, mut counts) = (every(EXPIRE_EVERY), every(crate::broker::tally::WRITE_EVERY));
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    _ = tick.tick() => broker.expire_held().await,
                    _ = counts.tick() => broker.write_delivery_counts().await,
                }
            }
        })
    };
    let _stop_held = StopOnDrop(held);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            now = expire.tick() => broker.expire(now),
            now = sample.tick() => {
                samples += 1;
                broker.metrics().tick(now, samples);
            }
            _ = retention.tick() => {
                let cfg = store.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
                prune(&broker, &cfg).await;
            }
            _ = seen.tick() => {
                let now = Utc::now();
                sweep_seen(&broker, last_sweep);
                last_sweep = now;
            }
        }
    }
}

/// Deletes jobs older than the retention age, then all but the newest `job_retention_count`;
/// the same for audit log entries (`audit_retention`, `audit_retention_count`).
pub(crate) async fn prune(broker: &Broker, cfg: &StoreConfig) {
    let store = broker.registry().store();
    match store.prune_jobs(older_than(cfg.job_retention), cfg.job_retention_count).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(jobs = n, "job retention deleted old jobs"),
        Err(e) => tracing::warn!(error = %e, "job retention failed; retrying later"),
    }
    match store.prune_audit(older_than(cfg.audit_retention), cfg.audit_retention_count).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(entries = n, "audit retention deleted old audit log entries"),
        Err(e) => tracing::warn!(error = %e, "audit retention failed; retrying later"),
    }
}

/// The time `age` ago (the earliest time when that is out of range).
fn older_than(age: Duration) -> DateTime<Utc> {
    let age = chrono::Duration::from_std(age).unwrap_or(chrono::Duration::MAX);
    Utc::now().checked_sub_signed(age).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// Records `last_seen` for every connected device that sent something since `since`.
fn sweep_seen(broker: &Broker, since: DateTime<Utc>) {
    let since_ms = u64::try_from(since.timestamp_millis()).unwrap_or(0);
    for session in broker.sessions().all() {
        let last = session.record.stats.last_received_ms.load(Ordering::Relaxed);
        if last > since_ms
            && let Some(at) = DateTime::from_timestamp_millis(last as i64)
        {
            broker.registry().seen(session.record.id.as_str(), at);
        }
    }
}

/// Aborts a task when dropped (the held-command sweep ends with the maintenance loop).
struct StopOnDrop(tokio::task::JoinHandle<()>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

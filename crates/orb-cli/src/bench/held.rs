//! `orb bench held`: one job sent with a TTL to N registered devices that are all offline, so
//! every target's command is held: the time from submitting to the ack, which the server sends
//! only once every held command is committed (group commit), gives held commands per second.
//! The jobs are cancelled after the last trial, which drops what they hold.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use orb_client::JobRequest;
use orb_proto::history::{JobCancelled, JobRef};
use orb_proto::message::commands;
use orb_proto::registry::{DeviceAdd, DeviceCredential};
use serde::Serialize;

use super::stats::Spread;
use super::{CommonArgs, Target, fail, ms, report};
use crate::exit::{self, Failure};

/// Registrations in flight while the devices are added.
const ADDING: usize = 64;

/// The figures.
#[derive(Debug, Serialize)]
pub struct Held {
    /// Milliseconds from submit to ack (every command held and committed).
    pub ack_ms: Spread,
    /// Held commands committed per second (devices / median time to ack).
    pub per_second: f64,
}

/// Runs the scenario.
pub async fn run(n: usize, trials: usize, common: &CommonArgs) -> Result<u8, Failure> {
    if common.vs.is_some() {
        return Err(Failure::usage("held has no NATS counterpart: run it without --vs"));
    }
    let target = Target::start(common).await?;
    let op = target.operator().await?;
    let answer = Duration::from_secs(60);
    // Registered, never connected: every one of them is offline, so each gets its command held.
    let mut adds = futures_util::stream::iter((0..n).map(|i| {
        let op = &op;
        async move {
            let add = DeviceAdd { id: format!("h-{i}"), tags: Default::default() };
            op.call_json::<_, DeviceCredential>(commands::DEVICES_ADD, &add, answer).await
        }
    }))
    .buffer_unordered(ADDING);
    while let Some(added) = adds.next().await {
        added.map_err(fail)?;
    }
    drop(adds);
    // Jobs are cancelled after the last trial, not between trials: a cancel deletes what its
    // job held, and that work would land in the next trial's commit.
    let mut times = Vec::with_capacity(trials);
    let mut held_jobs = Vec::with_capacity(trials);
    for _ in 0..trials {
        let request = JobRequest::new("h-*", "ping").deadline(Duration::from_secs(10)).ttl(Duration::from_secs(3600));
        let start = Instant::now();
        let job = op.submit(request).await.map_err(fail)?;
        times.push(ms(start.elapsed()));
        held_jobs.push(job.id().to_owned());
    }
    for id in held_jobs {
        let _: JobCancelled = op.call_json(commands::JOBS_CANCEL, &JobRef { id }, answer).await.map_err(fail)?;
    }
    op.close().await;
    let ack_ms = Spread::of(&times);
    let per_second = n as f64 / (ack_ms.median / 1000.0);
    let held = Held { ack_ms, per_second };
    let lines = vec![
        format!(
            "held: one job with a TTL to {n} offline devices, acknowledged once every held command is committed; \
             {trials} trials (server: {})",
            target.mode()
        ),
        format!("  ack after {} ms: {:.0} held commands per second", held.ack_ms, held.per_second),
    ];
    let json = serde_json::json!({"scenario": "held", "devices": n, "trials": trials, "result": held});
    report(common, &lines, &json);
    Ok(exit::OK)
}

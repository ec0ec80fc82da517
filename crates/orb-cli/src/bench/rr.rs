//! `orb bench rr`: unicast request/reply to one agent with K requests in flight, timed at the
//! requester: throughput and latency percentiles; with `--vs nats`, the same against one NATS
//! responder (async-nats `request`).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;

use super::stats::{Spread, quantile};
use super::{CommonArgs, Target, fail, nats_client, nats_swarm, report, swarm};
use crate::exit::{self, Failure};

/// A 32-byte JSON payload (a string), like the peers' measurements.
const PAYLOAD: &[u8] = br#""0123456789abcdefghijklmnopqrst""#;

/// One side's figures.
#[derive(Debug, Serialize)]
pub struct Side {
    /// Requests per second.
    pub per_second: Spread,
    /// Latency percentiles in microseconds.
    pub p50_us: Spread,
    /// 99th percentile.
    pub p99_us: Spread,
    /// 99.9th percentile.
    pub p999_us: Spread,
    /// Wall time of one trial in milliseconds.
    pub trial_ms: Spread,
}

struct Trial {
    elapsed: Duration,
    latencies_us: Vec<f64>,
}

fn summarise(count: usize, trials: &[Trial]) -> Side {
    let mut rate = Vec::new();
    let (mut p50, mut p99, mut p999, mut wall) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for t in trials {
        let mut l = t.latencies_us.clone();
        l.sort_by(f64::total_cmp);
        rate.push(count as f64 / t.elapsed.as_secs_f64());
        p50.push(quantile(&l, 0.5));
        p99.push(quantile(&l, 0.99));
        p999.push(quantile(&l, 0.999));
        wall.push(t.elapsed.as_secs_f64() * 1000.0);
    }
    Side {
        per_second: Spread::of(&rate),
        p50_us: Spread::of(&p50),
        p99_us: Spread::of(&p99),
        p999_us: Spread::of(&p999),
        trial_ms: Spread::of(&wall),
    }
}

/// Runs `count` calls of `call` with `inflight` workers; returns wall time and latencies.
async fn drive<F, Fut>(inflight: usize, count: usize, call: F) -> Result<Trial, Failure>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<(), Failure>> + Send,
{
    let call = Arc::new(call);
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let mut workers = Vec::with_capacity(inflight);
    for _ in 0..inflight {
        let (call, next) = (Arc::clone(&call), Arc::clone(&next));
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(count / inflight + 1);
            while next.fetch_add(1, Ordering::Relaxed) < count {
                let t = Instant::now();
                call().await?;
                lat.push(t.elapsed().as_secs_f64() * 1e6);
            }
            Ok::<_, Failure>(lat)
        }));
    }
    let mut latencies_us = Vec::with_capacity(count);
    for w in workers {
        latencies_us.extend(w.await.map_err(fail)??);
    }
    Ok(Trial { elapsed: start.elapsed(), latencies_us })
}

async fn orb_side(
    inflight: usize,
    count: usize,
    trials: usize,
    common: &CommonArgs,
) -> Result<(Vec<Trial>, &'static str), Failure> {
    let target = Target::start(common).await?;
    let _swarm = target.orb_swarm(1, "rr-", false)?;
    let op = target.operator().await?;
    let mut results = Vec::new();
    for t in 0..=trials {
        let op = op.clone();
        let trial = drive(inflight, count, move || {
            let op = op.clone();
            async move {
                op.request("rr-0", "echo", Bytes::from_static(PAYLOAD), Duration::from_secs(10)).await.map_err(fail)?;
                Ok(())
            }
        })
        .await?;
        if t > 0 {
            results.push(trial);
        }
    }
    op.close().await;
    Ok((results, target.mode()))
}

async fn nats_side(inflight: usize, count: usize, trials: usize) -> Result<Vec<Trial>, Failure> {
    let _swarm = nats_swarm(1, "rr")?;
    let nc = nats_client().await?;
    let mut results = Vec::new();
    for t in 0..=trials {
        let nc = nc.clone();
        let trial = drive(inflight, count, move || {
            let nc = nc.clone();
            async move {
                nc.request(swarm::NATS_RR, Bytes::from_static(PAYLOAD)).await.map_err(fail)?;
                Ok(())
            }
        })
        .await?;
        if t > 0 {
            results.push(trial);
        }
    }
    Ok(results)
}

fn line(name: &str, s: &Side) -> String {
    format!(
        "  {name:<5} {:>9.0} req/s (min {:.0}, max {:.0})   p50 {:.1} µs  p99 {:.1} µs  p999 {:.1} µs",
        s.per_second.median, s.per_second.min, s.per_second.max, s.p50_us.median, s.p99_us.median, s.p999_us.median
    )
}

/// Runs the scenario.
pub async fn run(inflight: usize, count: usize, trials: usize, common: &CommonArgs) -> Result<u8, Failure> {
    let (mut orb_trials, mut nats_trials, mut mode) = (Vec::new(), Vec::new(), "");
    for _ in 0..common.rounds {
        let (t, m) = orb_side(inflight, count, trials, common).await?;
        orb_trials.extend(t);
        mode = m;
        if common.vs.is_some() {
            nats_trials.extend(nats_side(inflight, count, trials).await?);
        }
    }
    let orb = summarise(count, &orb_trials);
    let nats = common.vs.map(|_| summarise(count, &nats_trials));
    // Time for the same work: orb's trial time over NATS's (below 1.0: orb is faster).
    let ratio = nats.as_ref().map(|x| orb.trial_ms.median / x.trial_ms.median);
    let p50_ratio = nats.as_ref().map(|x| orb.p50_us.median / x.p50_us.median);
    let mut lines = vec![format!(
        "rr: {count} requests of 32 B to one agent, {inflight} in flight; {} round(s) of {trials} trials after a warm-up (server: {mode}, codec {})",
        common.rounds, common.codec
    )];
    lines.push(line("orb", &orb));
    if let Some(x) = &nats {
        lines.push(line("nats", x));
    }
    if let (Some(r), Some(p)) = (ratio, p50_ratio) {
        lines.push(format!(
            "  ratio {r:.3} (orb time / NATS time for the same requests; below 1.0 orb is faster)  p50 ratio {p:.3}"
        ));
    }
    let json = serde_json::json!({
        "scenario": "rr", "inflight": inflight, "count": count, "trials": trials, "rounds": common.rounds, "server": mode, "codec": common.codec,
        "orb": orb, "nats": nats, "ratio": ratio, "p50_ratio": p50_ratio,
    });
    report(common, &lines, &json);
    Ok(exit::OK)
}

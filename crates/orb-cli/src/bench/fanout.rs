//! `orb bench fanout`: one job to N agents, every reply back, timed at the requester; the same
//! work against NATS (a request published to one subject N subscribers share, replies to the
//! requester's inbox) when `--vs nats` is given. The two connection sets never coexist.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use orb_client::{JobRequest, JobUpdate};
use orb_proto::Status;
use serde::Serialize;

use super::stats::{Spread, quantile};
use super::{CommonArgs, Target, fail, ms, nats_client, nats_swarm, report, swarm};
use crate::exit::{self, Failure};

/// One side's figures (times in milliseconds).
#[derive(Debug, Serialize)]
pub struct Side {
    /// Time from sending the command to the first reply.
    pub first_ms: Spread,
    /// Time from sending the command to the last reply.
    pub last_ms: Spread,
    /// Median per-device reply time within a trial.
    pub device_p50_ms: Spread,
    /// 99th percentile per-device reply time within a trial.
    pub device_p99_ms: Spread,
    /// Replies that were not ok (all trials).
    pub errors: u64,
    /// Server CPU time per job, when the server process is known.
    pub server_cpu_ms_per_job: Option<f64>,
    /// Server resident memory after the trials.
    pub server_rss_mib: Option<f64>,
}

struct Trial {
    latencies: Vec<f64>,
    errors: u64,
}

fn summarise(trials: &[Trial]) -> Side {
    let mut first = Vec::new();
    let mut last = Vec::new();
    let mut p50 = Vec::new();
    let mut p99 = Vec::new();
    let mut errors = 0;
    for t in trials {
        let mut l = t.latencies.clone();
        l.sort_by(f64::total_cmp);
        first.push(l.first().copied().unwrap_or(0.0));
        last.push(l.last().copied().unwrap_or(0.0));
        p50.push(quantile(&l, 0.5));
        p99.push(quantile(&l, 0.99));
        errors += t.errors;
    }
    Side {
        first_ms: Spread::of(&first),
        last_ms: Spread::of(&last),
        device_p50_ms: Spread::of(&p50),
        device_p99_ms: Spread::of(&p99),
        errors,
        server_cpu_ms_per_job: None,
        server_rss_mib: None,
    }
}

/// One round of the orb side: its trials, where the server ran, and (when measurable) the
/// server's CPU time per job and resident memory.
struct OrbRound {
    trials: Vec<Trial>,
    mode: &'static str,
    cpu_ms_per_job: Option<f64>,
    rss_mib: Option<f64>,
}

async fn orb_side(n: usize, trials: usize, ttl: Option<Duration>, common: &CommonArgs) -> Result<OrbRound, Failure> {
    let target = Target::start(common).await?;
    let _swarm = target.orb_swarm(n, "f-", false)?;
    let op = target.operator().await?;
    let mut results = Vec::with_capacity(trials);
    let mut cpu_before = None;
    for t in 0..=trials {
        if t == 1 {
            cpu_before = target.pid().and_then(super::proc::cpu_time);
        }
        let mut request =
            JobRequest::new("f-*", "ping").args(Bytes::from_static(b"null")).deadline(Duration::from_secs(60));
        if let Some(ttl) = ttl {
            request = request.ttl(ttl);
        }
        let start = Instant::now();
        let mut job = op.submit(request).await.map_err(fail)?;
        let mut trial = Trial { latencies: Vec::with_capacity(n), errors: 0 };
        while let Some(u) = job.next().await {
            match u {
                JobUpdate::Result(r) if r.status == Status::Ok => trial.latencies.push(ms(start.elapsed())),
                JobUpdate::Result(_) => trial.errors += 1,
                JobUpdate::Done(_) => break,
                JobUpdate::Batch(_) | JobUpdate::Progress { .. } => {}
            }
        }
        if trial.latencies.len() + trial.errors as usize != n {
            return Err(fail(format!("expected {n} results, got {}", trial.latencies.len() + trial.errors as usize)));
        }
        if t > 0 {
            results.push(trial);
        }
    }
    let pid = target.pid();
    let cpu_ms_per_job = pid.zip(cpu_before).and_then(|(pid, before)| {
        super::proc::cpu_time(pid).map(|after| ms(after.saturating_sub(before)) / trials as f64)
    });
    let rss_mib = pid.and_then(super::proc::rss_bytes).map(|b| b as f64 / 1048576.0);
    op.close().await;
    Ok(OrbRound { trials: results, mode: target.mode(), cpu_ms_per_job, rss_mib })
}

async fn nats_side(n: usize, trials: usize) -> Result<Vec<Trial>, Failure> {
    let _swarm = nats_swarm(n, "fanout")?;
    let nc = nats_client().await?;
    let mut results = Vec::with_capacity(trials);
    for t in 0..=trials {
        let inbox = nc.new_inbox();
        let mut sub = nc.subscribe(inbox.clone()).await.map_err(fail)?;
        nc.flush().await.map_err(fail)?;
        let start = Instant::now();
        nc.publish_with_reply(swarm::NATS_FANOUT, inbox, Bytes::from_static(b"null")).await.map_err(fail)?;
        nc.flush().await.map_err(fail)?;
        let mut trial = Trial { latencies: Vec::with_capacity(n), errors: 0 };
        while trial.latencies.len() < n {
            match tokio::time::timeout(Duration::from_secs(60), sub.next()).await {
                Ok(Some(_)) => trial.latencies.push(ms(start.elapsed())),
                _ => return Err(fail(format!("NATS: {} of {n} replies arrived", trial.latencies.len()))),
            }
        }
        let _ = sub.unsubscribe().await;
        if t > 0 {
            results.push(trial);
        }
    }
    Ok(results)
}

fn line(name: &str, s: &Side) -> String {
    let mut out = format!(
        "  {name:<5} first {:>8.2} ms   last {:>8.2} ms (min {:.2}, max {:.2})   device p50 {:.2} ms  p99 {:.2} ms",
        s.first_ms.median,
        s.last_ms.median,
        s.last_ms.min,
        s.last_ms.max,
        s.device_p50_ms.median,
        s.device_p99_ms.median
    );
    if let Some(cpu) = s.server_cpu_ms_per_job {
        out.push_str(&format!("   server cpu {cpu:.1} ms/job"));
    }
    if let Some(rss) = s.server_rss_mib {
        out.push_str(&format!("  rss {rss:.1} MiB"));
    }
    if s.errors > 0 {
        out.push_str(&format!("   errors {}", s.errors));
    }
    out
}

/// Runs the scenario.
pub async fn run(n: usize, trials: usize, ttl: Option<Duration>, common: &CommonArgs) -> Result<u8, Failure> {
    let (mut orb_trials, mut nats_trials, mut cpu, mut rss, mut mode) = (Vec::new(), Vec::new(), Vec::new(), None, "");
    for _ in 0..common.rounds {
        let round = orb_side(n, trials, ttl, common).await?;
        orb_trials.extend(round.trials);
        cpu.extend(round.cpu_ms_per_job);
        rss = round.rss_mib.or(rss);
        mode = round.mode;
        if common.vs.is_some() {
            nats_trials.extend(nats_side(n, trials).await?);
        }
    }
    let mut orb = summarise(&orb_trials);
    orb.server_cpu_ms_per_job = (!cpu.is_empty()).then(|| Spread::of(&cpu).median);
    orb.server_rss_mib = rss;
    let nats = common.vs.map(|_| summarise(&nats_trials));
    let ratio = nats.as_ref().map(|x| orb.last_ms.median / x.last_ms.median);
    let held = ttl.map(|t| format!(", sent with --ttl {}", humantime::format_duration(t))).unwrap_or_default();
    let mut lines = vec![format!(
        "fanout: one command to {n} agents, all replies back{held}; {} round(s) of {trials} trials after a warm-up (server: {mode}, codec {})",
        common.rounds, common.codec
    )];
    lines.push(line("orb", &orb));
    if let Some(x) = &nats {
        lines.push(line("nats", x));
    }
    if let Some(r) = ratio {
        lines.push(format!("  ratio {r:.3} (orb time to last reply / NATS time; below 1.0 orb is faster)"));
    }
    let json = serde_json::json!({
        "scenario": "fanout", "agents": n, "trials": trials, "ttl_ms": ttl.map(|t| t.as_millis() as u64), "rounds": common.rounds, "server": mode, "codec": common.codec,
        "orb": orb, "nats": nats, "ratio": ratio,
    });
    report(common, &lines, &json);
    Ok(if orb.errors == 0 { exit::OK } else { exit::FAILED })
}

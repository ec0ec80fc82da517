//! `orb bench pubsub`: one publisher (a connection of this process) and N subscribers of its topic
//! (connections of an `orb bench-swarm --pubsub` process); with `--vs nats`, the same against NATS:
//! N connections subscribed to one subject, one connection publishing. Every trial has two parts.
//!
//! **Throughput.** M messages (JSON bodies of [`BODY_BYTES`] bytes) published as fast as the
//! publisher can, in bursts of [`BURST`]; the last message of a burst asks the subscribers to
//! report. A burst starts only once every subscriber has the burst [`WINDOW`] bursts before it, so
//! at most `WINDOW × BURST` messages are on their way to any subscriber: below orb's outbound queue
//! (1024 frames by default), so no subscriber is closed as a slow consumer; NATS is paced the
//! same way. The trial's time runs from the first publish until every subscriber has message M;
//! deliveries per second are `M × N` over it, messages per second `M` over it. Every subscriber
//! checks that it received every message of the trial, in order.
//!
//! **Latency.** P probes, one at a time: the publisher writes the wall-clock time (microseconds
//! since the epoch: one clock for every process of the machine) into a probe and publishes it; each
//! subscriber subtracts it from its own reading of the clock when the probe comes out of its
//! client library; the next probe is published once every subscriber has the last. Reported:
//! percentiles over all deliveries of a trial, and per probe the time until the last subscriber
//! had it.
//!
//! The subscribers report to the swarm process's tally, which writes one line on stdout per burst
//! and per probe once all N have it (see [`super::swarm`]): the same path for both brokers, and
//! outside both. orb's publisher uses `Client::publish`, which is answered once the message is
//! queued for every subscriber, with up to [`BURST`] unanswered; NATS's publisher uses
//! `publish` (never answered) and flushes after each burst's last message and each probe.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::TryStreamExt;
use orb_client::Client;
use serde::Serialize;
use tokio::sync::mpsc::UnboundedReceiver;

use super::stats::{Spread, quantile};
use super::swarm::PUBSUB_TOPIC;
use super::{CommonArgs, Target, fail, nats_client, nats_pubsub_swarm, report};
use crate::exit::{self, Failure};

/// Body kind: a message of a burst.
pub const DATA: u8 = b'd';
/// Body kind: the last message of a burst (subscribers report it).
pub const LAST: u8 = b'l';
/// Body kind: a latency probe (its `x` is the publisher's clock in microseconds).
pub const PROBE: u8 = b'p';
/// Size of every body, on both sides.
pub const BODY_BYTES: usize = 100;
/// Messages per burst.
pub const BURST: usize = 256;
/// Bursts a subscriber may be behind before the publisher waits.
pub const WINDOW: u64 = 2;
/// Longest wait for one report of the swarm.
const WAIT: Duration = Duration::from_secs(30);
/// Timeout of one orb publish.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(30);

/// Messages per trial when `--messages` is not given: about a million deliveries.
pub fn default_messages(subscribers: usize) -> usize {
    (1_000_000 / subscribers.max(1)).clamp(1_000, 100_000)
}

/// Wall-clock microseconds since the Unix epoch.
pub fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

/// The body of message `n` of kind `kind` carrying `x` (its burst, or a probe's clock), padded to
/// [`BODY_BYTES`]: `{"k":"d","n":1,"x":1,"pad":"....."}`.
pub fn body(kind: u8, n: u64, x: u64) -> Bytes {
    let mut s = format!(r#"{{"k":"{}","n":{n},"x":{x},"pad":""#, kind as char);
    let pad = BODY_BYTES.saturating_sub(s.len() + 2);
    s.extend(std::iter::repeat_n('.', pad));
    s.push_str("\"}");
    Bytes::from(s)
}

/// Kind, `n` and `x` of a body [`body`] made (bodies are relayed verbatim by both brokers).
pub fn parse(b: &[u8]) -> Option<(u8, u64, u64)> {
    let rest = b.strip_prefix(br#"{"k":""#)?;
    let (&kind, rest) = rest.split_first()?;
    let (n, rest) = number(rest.strip_prefix(br#"","n":"#)?)?;
    let (x, _) = number(rest.strip_prefix(br#","x":"#)?)?;
    Some((kind, n, x))
}

fn number(b: &[u8]) -> Option<(u64, &[u8])> {
    let len = b.iter().take_while(|c| c.is_ascii_digit()).count();
    let n = std::str::from_utf8(&b[..len]).ok()?.parse().ok()?;
    Some((n, &b[len..]))
}

/// Burst of message `n` (1-based) of `m`, and its kind.
fn place(n: u64, m: u64) -> (u64, u8) {
    let burst = (n - 1) / BURST as u64 + 1;
    let kind = if n.is_multiple_of(BURST as u64) || n == m { LAST } else { DATA };
    (burst, kind)
}

/// One line of the swarm's tally.
enum Line {
    Burst { burst: u64, min: u64, max: u64, disorder: u64 },
    Probe { probe: u64, us: Vec<f64> },
}

/// The swarm's reports, read as they come.
struct Reports {
    lines: UnboundedReceiver<String>,
    broker: &'static str,
}

impl Reports {
    async fn next(&mut self, waiting_for: &str) -> Result<Line, Failure> {
        let broker = self.broker;
        let line = match tokio::time::timeout(WAIT, self.lines.recv()).await {
            Ok(Some(line)) => line,
            Ok(None) => return Err(fail(format!("{broker}: the swarm process ended while waiting for {waiting_for}"))),
            Err(_) => {
                return Err(fail(format!(
                    "{broker}: not every subscriber had {waiting_for} within {WAIT:?} (a message was lost or the broker stalled)"
                )));
            }
        };
        let bad = || fail(format!("{broker}: unexpected report from the swarm: {line}"));
        let mut words = line.split(' ');
        match words.next() {
            Some("burst") => {
                let v: Vec<u64> = words.map(str::parse).collect::<Result<_, _>>().map_err(|_| bad())?;
                let [burst, min, max, disorder] = v[..] else { return Err(bad()) };
                Ok(Line::Burst { burst, min, max, disorder })
            }
            Some("probe") => {
                let probe = words.next().and_then(|w| w.parse().ok()).ok_or_else(bad)?;
                let us = words.next().unwrap_or_default().split(',').map(str::parse::<f64>);
                Ok(Line::Probe { probe, us: us.collect::<Result<_, _>>().map_err(|_| bad())? })
            }
            Some("lost") => Err(fail(format!("{broker}: subscriber {}", &line["lost ".len()..]))),
            _ => Err(bad()),
        }
    }
}

/// Flow control of one trial's throughput part: which bursts every subscriber has.
struct Flow<'a> {
    reports: &'a mut Reports,
    m: u64,
    done: u64,
}

impl Flow<'_> {
    /// Waits until every subscriber has burst `burst`, checking what they hold.
    async fn until(&mut self, burst: u64) -> Result<(), Failure> {
        let broker = self.reports.broker;
        while self.done < burst {
            match self.reports.next(&format!("the end of burst {burst}")).await? {
                Line::Burst { burst: b, min, max, disorder } => {
                    let want = (b * BURST as u64).min(self.m);
                    if disorder > 0 {
                        return Err(fail(format!("{broker}: subscribers received {disorder} messages out of order")));
                    }
                    if b != self.done + 1 || min != want || max != want {
                        return Err(fail(format!(
                            "{broker}: at the end of burst {b} the subscribers held {min} to {max} of the {want} messages published (expected burst {})",
                            self.done + 1
                        )));
                    }
                    self.done = b;
                }
                Line::Probe { probe, .. } => {
                    return Err(fail(format!("{broker}: a report of probe {probe} during the throughput part")));
                }
            }
        }
        Ok(())
    }
}

/// The publishing connection.
enum Publisher {
    Orb { client: Client, subscribers: u64 },
    Nats(async_nats::Client),
}

impl Publisher {
    /// Publishes messages 1..=m as fast as the window allows; the time until every subscriber
    /// has all of them.
    async fn throughput(&self, reports: &mut Reports, m: u64) -> Result<Duration, Failure> {
        let bursts = m.div_ceil(BURST as u64);
        let mut flow = Flow { reports, m, done: 0 };
        let start = Instant::now();
        match self {
            Publisher::Orb { client, subscribers } => {
                // The next body is made only once the window allows it; meanwhile up to BURST
                // publishes wait for their answers, in the order made (one connection, one queue).
                let bodies = futures_util::stream::try_unfold((1u64, &mut flow), move |(n, flow)| async move {
                    if n > m {
                        return Ok(None);
                    }
                    let (burst, kind) = place(n, m);
                    if (n - 1).is_multiple_of(BURST as u64) && burst > WINDOW {
                        flow.until(burst - WINDOW).await?;
                    }
                    Ok::<_, Failure>(Some((body(kind, n, burst), (n + 1, flow))))
                });
                bodies
                    .map_ok(|b| async move { client.publish(PUBSUB_TOPIC, b, PUBLISH_TIMEOUT).await.map_err(fail) })
                    .try_buffered(BURST)
                    .try_for_each(|delivered| async move {
                        if delivered == *subscribers {
                            Ok(())
                        } else {
                            Err(fail(format!("orb: a message was queued for {delivered} of {subscribers} subscribers")))
                        }
                    })
                    .await?;
            }
            Publisher::Nats(nc) => {
                for n in 1..=m {
                    let (burst, kind) = place(n, m);
                    if (n - 1).is_multiple_of(BURST as u64) && burst > WINDOW {
                        flow.until(burst - WINDOW).await?;
                    }
                    nc.publish(PUBSUB_TOPIC, body(kind, n, burst)).await.map_err(fail)?;
                    if kind == LAST {
                        nc.flush().await.map_err(fail)?;
                    }
                }
            }
        }
        flow.until(bursts).await?;
        Ok(start.elapsed())
    }

    /// Publishes one probe.
    async fn probe(&self, body: Bytes) -> Result<(), Failure> {
        match self {
            Publisher::Orb { client, .. } => {
                client.publish(PUBSUB_TOPIC, body, PUBLISH_TIMEOUT).await.map_err(fail)?;
            }
            Publisher::Nats(nc) => {
                nc.publish(PUBSUB_TOPIC, body).await.map_err(fail)?;
                nc.flush().await.map_err(fail)?;
            }
        }
        Ok(())
    }

    /// Publishes `probes` probes one at a time; every delivery's latency and, per probe, the
    /// latency of its last delivery (microseconds).
    async fn latency(&self, reports: &mut Reports, probes: u64) -> Result<(Vec<f64>, Vec<f64>), Failure> {
        let (mut all, mut last) = (Vec::new(), Vec::with_capacity(probes as usize));
        for p in 1..=probes {
            self.probe(body(PROBE, p, now_us())).await?;
            match reports.next(&format!("probe {p}")).await? {
                Line::Probe { probe, us } if probe == p => {
                    last.push(us.iter().copied().fold(0.0, f64::max));
                    all.extend(us);
                }
                _ => return Err(fail(format!("{}: expected the report of probe {p}", reports.broker))),
            }
        }
        Ok((all, last))
    }
}

/// One trial's measurements.
struct Trial {
    elapsed: Duration,
    latencies_us: Vec<f64>,
    last_us: Vec<f64>,
}

/// One side's figures.
#[derive(Debug, Serialize)]
pub struct Side {
    /// Deliveries (messages × subscribers) per second in the throughput part.
    pub deliveries_per_second: Spread,
    /// Messages published per second, counted until every subscriber had them.
    pub messages_per_second: Spread,
    /// Wall time of the throughput part in milliseconds.
    pub trial_ms: Spread,
    /// Median delivery latency of a probe over all deliveries of a trial, microseconds.
    pub p50_us: Spread,
    /// 99th percentile.
    pub p99_us: Spread,
    /// Per probe, the latency of its last delivery: median over the probes of a trial.
    pub last_p50_us: Spread,
    /// Per probe, the latency of its last delivery: 99th percentile over the probes of a trial.
    pub last_p99_us: Spread,
    /// CPU time of the server process per delivery in the throughput parts (child server only).
    pub server_cpu_us_per_delivery: Option<f64>,
    /// CPU time of the subscribers' process per delivery in the throughput parts.
    pub swarm_cpu_us_per_delivery: Option<f64>,
}

fn summarise(n: usize, m: usize, trials: &[Trial], cpu: &Cpu) -> Side {
    let (mut rate, mut msgs, mut wall) = (Vec::new(), Vec::new(), Vec::new());
    let (mut p50, mut p99, mut last50, mut last99) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for t in trials {
        let secs = t.elapsed.as_secs_f64();
        rate.push((m * n) as f64 / secs);
        msgs.push(m as f64 / secs);
        wall.push(secs * 1000.0);
        let mut l = t.latencies_us.clone();
        l.sort_by(f64::total_cmp);
        p50.push(quantile(&l, 0.5));
        p99.push(quantile(&l, 0.99));
        let mut l = t.last_us.clone();
        l.sort_by(f64::total_cmp);
        last50.push(quantile(&l, 0.5));
        last99.push(quantile(&l, 0.99));
    }
    let deliveries = (m * n * trials.len()) as f64;
    let per_delivery = |d: Option<Duration>| d.filter(|_| deliveries > 0.0).map(|d| d.as_secs_f64() * 1e6 / deliveries);
    Side {
        deliveries_per_second: Spread::of(&rate),
        messages_per_second: Spread::of(&msgs),
        trial_ms: Spread::of(&wall),
        p50_us: Spread::of(&p50),
        p99_us: Spread::of(&p99),
        last_p50_us: Spread::of(&last50),
        last_p99_us: Spread::of(&last99),
        server_cpu_us_per_delivery: per_delivery(cpu.server),
        swarm_cpu_us_per_delivery: per_delivery(cpu.swarm),
    }
}

/// CPU time of the server and the subscribers' process in the measured throughput parts; `None`
/// when it was not measurable in every one of them.
#[derive(Clone, Copy)]
struct Cpu {
    server: Option<Duration>,
    swarm: Option<Duration>,
}

impl Cpu {
    const ZERO: Cpu = Cpu { server: Some(Duration::ZERO), swarm: Some(Duration::ZERO) };

    fn plus(self, other: Cpu) -> Cpu {
        let add = |a: Option<Duration>, b: Option<Duration>| a.zip(b).map(|(a, b)| a + b);
        Cpu { server: add(self.server, other.server), swarm: add(self.swarm, other.swarm) }
    }

    /// The CPU time `pid` used since it had used `before`.
    fn since(pid: Option<u32>, before: Option<Duration>) -> Option<Duration> {
        let after = pid.and_then(super::proc::cpu_time)?;
        Some(after.saturating_sub(before?))
    }
}

/// The trials of one side, a warm-up and then `count` measured ones, with the CPU time used by
/// the `server` and `swarm` processes (when known) in the measured throughput parts.
async fn trials(
    publisher: &Publisher,
    reports: &mut Reports,
    (server, swarm): (Option<u32>, Option<u32>),
    m: usize,
    probes: usize,
    count: usize,
) -> Result<(Vec<Trial>, Cpu), Failure> {
    let mut out = Vec::with_capacity(count);
    let mut cpu = Cpu::ZERO;
    for t in 0..=count {
        let before = (server.and_then(super::proc::cpu_time), swarm.and_then(super::proc::cpu_time));
        let elapsed = publisher.throughput(reports, m as u64).await?;
        let used = Cpu { server: Cpu::since(server, before.0), swarm: Cpu::since(swarm, before.1) };
        let (latencies_us, last_us) = publisher.latency(reports, probes as u64).await?;
        if t > 0 {
            out.push(Trial { elapsed, latencies_us, last_us });
            cpu = cpu.plus(used);
        }
    }
    Ok((out, cpu))
}

async fn orb_side(
    n: usize,
    m: usize,
    probes: usize,
    count: usize,
    common: &CommonArgs,
) -> Result<(Vec<Trial>, Cpu, &'static str), Failure> {
    let target = Target::start(common).await?;
    let mut swarm = target.orb_pubsub_swarm(n)?;
    let mut reports = Reports { lines: swarm.follow(), broker: "orb" };
    let client = target.operator().await?;
    let publisher = Publisher::Orb { client: client.clone(), subscribers: n as u64 };
    let pids = (target.child.as_ref().map(super::proc::ChildGuard::pid), Some(swarm.pid()));
    let (out, cpu) = trials(&publisher, &mut reports, pids, m, probes, count).await?;
    client.close().await;
    Ok((out, cpu, target.mode()))
}

async fn nats_side(n: usize, m: usize, probes: usize, count: usize) -> Result<(Vec<Trial>, Cpu), Failure> {
    let mut swarm = nats_pubsub_swarm(n)?;
    let mut reports = Reports { lines: swarm.follow(), broker: "NATS" };
    let publisher = Publisher::Nats(nats_client().await?);
    trials(&publisher, &mut reports, (None, Some(swarm.pid())), m, probes, count).await
}

fn line(name: &str, s: &Side) -> String {
    let mut out = format!(
        "  {name:<5} {:>10.0} deliveries/s (min {:.0}, max {:.0})  {:>8.0} msg/s   latency p50 {:.1} µs  p99 {:.1} µs   last of N p50 {:.1} µs  p99 {:.1} µs",
        s.deliveries_per_second.median,
        s.deliveries_per_second.min,
        s.deliveries_per_second.max,
        s.messages_per_second.median,
        s.p50_us.median,
        s.p99_us.median,
        s.last_p50_us.median,
        s.last_p99_us.median,
    );
    if let Some(cpu) = s.server_cpu_us_per_delivery {
        out.push_str(&format!("   server cpu {cpu:.2} µs/delivery"));
    }
    if let Some(cpu) = s.swarm_cpu_us_per_delivery {
        out.push_str(&format!("  subscribers cpu {cpu:.2} µs/delivery"));
    }
    out
}

/// Runs the scenario: `n` subscribers, `m` messages and `probes` probes per trial.
pub async fn run(n: usize, m: usize, probes: usize, trials: usize, common: &CommonArgs) -> Result<u8, Failure> {
    let (mut orb_trials, mut nats_trials, mut mode) = (Vec::new(), Vec::new(), "");
    let (mut orb_cpu, mut nats_cpu) = (Cpu::ZERO, Cpu::ZERO);
    for _ in 0..common.rounds {
        let (t, cpu, md) = orb_side(n, m, probes, trials, common).await?;
        orb_trials.extend(t);
        orb_cpu = orb_cpu.plus(cpu);
        mode = md;
        if common.vs.is_some() {
            let (t, cpu) = nats_side(n, m, probes, trials).await?;
            nats_trials.extend(t);
            nats_cpu = nats_cpu.plus(cpu);
        }
    }
    let orb = summarise(n, m, &orb_trials, &orb_cpu);
    let nats = common.vs.map(|_| summarise(n, m, &nats_trials, &nats_cpu));
    // Time for the same work: orb's over NATS's (below 1.0: orb is faster).
    let ratio = nats.as_ref().map(|x| orb.trial_ms.median / x.trial_ms.median);
    let p50_ratio = nats.as_ref().map(|x| orb.p50_us.median / x.p50_us.median);
    let mut lines = vec![format!(
        "pubsub: 1 publisher, {n} subscribers, {m} messages of {BODY_BYTES} B per trial (bursts of {BURST}, at most {} on their way), {probes} latency probes; {} round(s) of {trials} trials after a warm-up (server: {mode}, codec {})",
        WINDOW as usize * BURST,
        common.rounds,
        common.codec
    )];
    lines.push(line("orb", &orb));
    if let Some(x) = &nats {
        lines.push(line("nats", x));
    }
    if let (Some(r), Some(p)) = (ratio, p50_ratio) {
        lines.push(format!(
            "  ratio {r:.3} (orb time / NATS time to deliver the same messages; below 1.0 orb is faster)  latency p50 ratio {p:.3}"
        ));
    }
    let json = serde_json::json!({
        "scenario": "pubsub", "subscribers": n, "messages": m, "probes": probes, "trials": trials,
        "rounds": common.rounds, "server": mode, "codec": common.codec, "body_bytes": BODY_BYTES,
        "burst": BURST, "window_bursts": WINDOW, "orb": orb, "nats": nats, "ratio": ratio, "p50_ratio": p50_ratio,
    });
    report(common, &lines, &json);
    Ok(exit::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_one_size_parse_back_and_are_json() {
        for (kind, n, x) in [(DATA, 1, 1), (LAST, 256, 1), (PROBE, 7, now_us()), (LAST, 100_000, 391)] {
            let b = body(kind, n, x);
            assert_eq!(b.len(), BODY_BYTES);
            assert_eq!(parse(&b), Some((kind, n, x)));
            let _: serde_json::Value = serde_json::from_slice(&b).expect("JSON");
        }
        assert_eq!(parse(b"{\"k\":\"d\"}"), None);
        assert_eq!(parse(b"null"), None);
    }

    #[test]
    fn bursts_end_on_their_last_message_and_the_trial_on_its_last() {
        assert_eq!(place(1, 1000), (1, DATA));
        assert_eq!(place(256, 1000), (1, LAST));
        assert_eq!(place(257, 1000), (2, DATA));
        assert_eq!(place(1000, 1000), (4, LAST));
        assert_eq!(place(1, 1), (1, LAST));
        assert_eq!(default_messages(100), 10_000);
        assert_eq!(default_messages(1), 100_000);
        assert_eq!(default_messages(10_000), 1_000);
    }
}

//! The server's Prometheus metrics: one [`Metrics`] per server (never the process-wide recorder:
//! several servers share a test process), built on its own `PrometheusRecorder` whose handles
//! are registered once at start. Sessions, jobs, the router and the broker count into it; the
//! `/metrics` route (`crate::api`) renders it after the broker fills in what is sampled at scrape
//! time ([`Sampled`]); `rates` turns the frame counters into the per-second rates of
//! `GET /v1/status`.
//!
//! Hot path: a frame in or out is two relaxed atomic adds into [`Traffic`] (an array indexed by
//! kind, no lookup, no formatting); those counters reach the exporter's handles only when
//! rendered. Everything else (connections, job outcomes, latencies) updates a registered handle
//! directly, at most once per connection, target or request.

mod rates;

pub(crate) use rates::Rates;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use orb_proto::message::Role;
use orb_proto::{Kind, Status};
use tokio::time::Instant;

use crate::close::CloseReason;
use rates::{Sample, Window};

/// Every frame kind, at its index in the per-kind counters ([`kind_index`]).
pub(crate) const KINDS: [Kind; 17] = Kind::ALL;

/// The index of `kind` in [`KINDS`]. An exhaustive match: a kind added to the protocol fails to
/// compile here rather than indexing out of bounds.
#[inline]
pub(crate) fn kind_index(kind: Kind) -> usize {
    match kind {
        Kind::Hello => 0,
        Kind::Welcome => 1,
        Kind::Cmd => 2,
        Kind::Reply => 3,
        Kind::Ack => 4,
        Kind::Pub => 5,
        Kind::Sub => 6,
        Kind::Unsub => 7,
        Kind::Event => 8,
        Kind::Config => 9,
        Kind::Ping => 10,
        Kind::Pong => 11,
        Kind::Error => 12,
        Kind::Bye => 13,
        Kind::Cancel => 14,
        Kind::Progress => 15,
        Kind::Unknown => 16,
    }
}

/// The index of `status` in [`Status::ALL`] (exhaustive, like [`kind_index`]).
#[inline]
fn status_index(status: Status) -> usize {
    match status {
        Status::Ok => 0,
        Status::Error => 1,
        Status::Timeout => 2,
        Status::Offline => 3,
        Status::Queued => 4,
        Status::Expired => 5,
        Status::Denied => 6,
        Status::Cancelled => 7,
    }
}

/// Transports of wire sessions, by the name [`crate::session`] gives them.
const TRANSPORTS: [&str; 2] = ["tcp", "ws"];
/// Roles of wire sessions.
const ROLES: [Role; 2] = [Role::Agent, Role::Operator];

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Agent => "agent",
        Role::Operator => "operator",
    }
}

/// Why a `progress` frame was dropped, counted in `orb_progress_dropped_total` by its `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ProgressDrop {
    /// The requester's queue had no room, or the frame exceeds its limit (progress never
    /// waits and never closes a session).
    QueueFull,
    /// Its command was answered, timed out, unknown, or its requester is gone or did not ask
    /// for progress.
    NotPending,
}

impl ProgressDrop {
    const ALL: [ProgressDrop; 2] = [ProgressDrop::QueueFull, ProgressDrop::NotPending];

    fn as_str(self) -> &'static str {
        match self {
            ProgressDrop::QueueFull => "queue_full",
            ProgressDrop::NotPending => "not_pending",
        }
    }
}

/// The rate limits counted in `orb_rate_limited_total`, by its `limit` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RateLimit {
    /// A session's message rate delayed the reading of its next frame.
    Messages = 0,
    /// The agent connection rate refused a hello.
    Connections = 1,
}

impl RateLimit {
    const ALL: [RateLimit; 2] = [RateLimit::Messages, RateLimit::Connections];

    fn as_str(self) -> &'static str {
        match self {
            RateLimit::Messages => "messages",
            RateLimit::Connections => "connections",
        }
    }
}

/// Upper bounds (seconds) of the latency histograms' buckets: loopback answers take well under
/// a millisecond, commands on a device may run for minutes.
const LATENCY_BUCKETS: [f64; 17] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

/// Frames and bytes read from wire sessions and queued for connections, counted where frames are
/// read and where they are queued. Plain atomics (the exporter's handles would add a generation
/// count and an indirect call per frame); the two directions are kept on separate cache lines.
#[derive(Default)]
struct Traffic {
    received: Direction,
    sent: Direction,
}

/// One direction's counters.
#[derive(Default)]
#[repr(align(64))]
struct Direction {
    frames: [AtomicU64; KINDS.len()],
    bytes: AtomicU64,
}

impl Direction {
    #[inline]
    fn add(&self, kind: Kind, frames: u64, bytes: u64) {
        self.frames[kind_index(kind)].fetch_add(frames, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    fn frames(&self) -> [u64; KINDS.len()] {
        std::array::from_fn(|i| self.frames[i].load(Ordering::Relaxed))
    }
}

/// The exporter's handles of one direction's counters, set from [`Traffic`] when rendered.
struct TrafficHandles {
    frames: [Counter; KINDS.len()],
    bytes: Counter,
}

/// Values read from the broker when `/metrics` is scraped (cheap to read then, costly or
/// impossible to keep current on every change).
#[derive(Debug, Clone, Default)]
pub(crate) struct Sampled {
    /// Sessions closed since start, by [`CloseReason`] index.
    pub(crate) closed: [u64; CloseReason::ALL.len()],
    /// Devices the registry knows.
    pub(crate) devices_known: u64,
    /// Jobs running now.
    pub(crate) jobs_in_flight: u64,
    /// Pub/sub subscriptions held.
    pub(crate) subscriptions: u64,
    /// Topics with a retained publication, and their bytes.
    pub(crate) retained_topics: u64,
    pub(crate) retained_bytes: u64,
    /// Held commands (jobs with a TTL) waiting, handed over without an answer yet, and their
    /// bytes; `None` when the store could not be read (the gauges keep their last values).
    pub(crate) held: Option<(u64, u64, u64)>,
    /// Frames and bytes queued for device sessions, summed over them.
    pub(crate) outbound_frames: u64,
    pub(crate) outbound_bytes: u64,
    /// Whether the server is draining.
    pub(crate) draining: bool,
}

/// Gauges set from [`Sampled`].
struct SampledHandles {
    closed: [Counter; CloseReason::ALL.len()],
    devices_known: Gauge,
    jobs_in_flight: Gauge,
    subscriptions: Gauge,
    retained_topics: Gauge,
    retained_bytes: Gauge,
    held_waiting: Gauge,
    held_in_flight: Gauge,
    held_bytes: Gauge,
    outbound_frames: Gauge,
    outbound_bytes: Gauge,
    draining: Gauge,
}

/// One server's metrics.
pub(crate) struct Metrics {
    /// Renders what the recorder the handles were registered with holds.
    handle: PrometheusHandle,
    traffic: Traffic,
    received: TrafficHandles,
    sent: TrafficHandles,
    /// Established wire sessions by transport and role.
    connections: [[Gauge; ROLES.len()]; TRANSPORTS.len()],
    jobs_started: Counter,
    /// Job targets by the outcome the job settled them with.
    targets: [Counter; Status::ALL.len()],
    /// Held commands (jobs with a TTL) by the outcome they were stored with.
    held_settled: [Counter; Status::ALL.len()],
    command_seconds: Histogram,
    request_seconds: Histogram,
    /// Interventions of the rate limits, by [`RateLimit`].
    rate_limited: [Counter; RateLimit::ALL.len()],
    /// `progress` frames dropped on their way to a requester, by reason.
    progress_dropped: [Counter; ProgressDrop::ALL.len()],
    sampled: SampledHandles,
    /// The frame counters of the last seconds, for [`Metrics::rates`].
    window: Mutex<Window>,
    /// `[http] metrics_public`: `/metrics` is served without a token (replaced on reload).
    public: AtomicBool,
}

/// How often [`Metrics::tick`] is called (by the maintenance task).
pub(crate) const TICK: Duration = Duration::from_secs(1);
/// Histogram samples are folded into their buckets every this many ticks (each scrape does it
/// too): unscraped, they would pile up.
const UPKEEP_EVERY: u64 = 5;

impl Metrics {
    /// Registers every metric with a recorder of its own. `public`: `/metrics` needs no token.
    pub(crate) fn new(public: bool) -> Metrics {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &LATENCY_BUCKETS)
            .expect("the latency buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        let r = Registrar(&recorder);
        let by_kind = |name: &'static str| std::array::from_fn(|i| r.counter(name, &[("kind", KINDS[i].as_str())]));
        let by_status =
            |name: &'static str| std::array::from_fn(|i| r.counter(name, &[("status", Status::ALL[i].as_str())]));
        r.describe_counter("orb_frames_received_total", Unit::Count, "frames read from wire sessions, by kind");
        r.describe_counter(
            "orb_frames_sent_total",
            Unit::Count,
            "frames queued for connections (wire sessions, event streams), by kind",
        );
        r.describe_counter("orb_received_bytes_total", Unit::Bytes, "bytes of frames read from wire sessions");
        r.describe_counter("orb_sent_bytes_total", Unit::Bytes, "bytes of frames queued for connections");
        r.describe_gauge("orb_connections", Unit::Count, "established wire sessions, by transport and role");
        r.describe_counter("orb_sessions_closed_total", Unit::Count, "wire sessions closed, by reason");
        r.describe_counter("orb_jobs_started_total", Unit::Count, "jobs started");
        r.describe_counter("orb_job_targets_total", Unit::Count, "job targets settled, by the outcome told");
        r.describe_counter(
            "orb_held_commands_settled_total",
            Unit::Count,
            "held commands (jobs with a TTL) settled after delivery or expiry, by outcome",
        );
        r.describe_histogram(
            "orb_command_duration_seconds",
            Unit::Seconds,
            "a job's command from dispatch to the device's answer, per target",
        );
        r.describe_histogram(
            "orb_request_duration_seconds",
            Unit::Seconds,
            "a plain request to one device from dispatch to its reply",
        );
        r.describe_counter(
            "orb_rate_limited_total",
            Unit::Count,
            "frames whose reading a session's message rate delayed (limit messages), agent hellos the connection \
             rate refused (limit connections)",
        );
        r.describe_counter(
            "orb_progress_dropped_total",
            Unit::Count,
            "progress frames a device sent that did not reach their requester: its queue was half full or \
             the frame above its limit (reason queue_full), or the command was no longer pending, unknown, or \
             its requester gone or not asking (reason not_pending)",
        );
        r.describe_gauge("orb_devices_known", Unit::Count, "devices the registry knows");
        r.describe_gauge("orb_jobs_in_flight", Unit::Count, "jobs running");
        r.describe_gauge("orb_subscriptions", Unit::Count, "pub/sub subscriptions held");
        r.describe_gauge("orb_retained_topics", Unit::Count, "topics with a retained publication");
        r.describe_gauge("orb_retained_bytes", Unit::Bytes, "bytes of retained publications");
        r.describe_gauge("orb_held_commands", Unit::Count, "held commands (jobs with a TTL), by state");
        r.describe_gauge("orb_held_bytes", Unit::Bytes, "bytes of held commands");
        r.describe_gauge("orb_outbound_queue_frames", Unit::Count, "frames queued for device sessions");
        r.describe_gauge("orb_outbound_queue_bytes", Unit::Bytes, "bytes queued for device sessions");
        r.describe_gauge("orb_draining", Unit::Count, "1 while the server drains");
        r.describe_gauge("orb_build_info", Unit::Count, "1, labelled with the server's version");
        r.gauge("orb_build_info", &[("version", env!("CARGO_PKG_VERSION"))]).set(1.0);
        let first = Sample::zero(Instant::now());
        Metrics {
            traffic: Traffic::default(),
            received: TrafficHandles {
                frames: by_kind("orb_frames_received_total"),
                bytes: r.counter("orb_received_bytes_total", &[]),
            },
            sent: TrafficHandles {
                frames: by_kind("orb_frames_sent_total"),
                bytes: r.counter("orb_sent_bytes_total", &[]),
            },
            connections: std::array::from_fn(|t| {
                std::array::from_fn(|role| {
                    r.gauge("orb_connections", &[("transport", TRANSPORTS[t]), ("role", role_name(ROLES[role]))])
                })
            }),
            jobs_started: r.counter("orb_jobs_started_total", &[]),
            targets: by_status("orb_job_targets_total"),
            held_settled: by_status("orb_held_commands_settled_total"),
            command_seconds: r.histogram("orb_command_duration_seconds"),
            request_seconds: r.histogram("orb_request_duration_seconds"),
            rate_limited: std::array::from_fn(|i| {
                r.counter("orb_rate_limited_total", &[("limit", RateLimit::ALL[i].as_str())])
            }),
            progress_dropped: std::array::from_fn(|i| {
                r.counter("orb_progress_dropped_total", &[("reason", ProgressDrop::ALL[i].as_str())])
            }),
            sampled: SampledHandles {
                closed: std::array::from_fn(|i| {
                    r.counter("orb_sessions_closed_total", &[("reason", CloseReason::ALL[i].as_str())])
                }),
                devices_known: r.gauge("orb_devices_known", &[]),
                jobs_in_flight: r.gauge("orb_jobs_in_flight", &[]),
                subscriptions: r.gauge("orb_subscriptions", &[]),
                retained_topics: r.gauge("orb_retained_topics", &[]),
                retained_bytes: r.gauge("orb_retained_bytes", &[]),
                held_waiting: r.gauge("orb_held_commands", &[("state", "waiting")]),
                held_in_flight: r.gauge("orb_held_commands", &[("state", "in_flight")]),
                held_bytes: r.gauge("orb_held_bytes", &[]),
                outbound_frames: r.gauge("orb_outbound_queue_frames", &[]),
                outbound_bytes: r.gauge("orb_outbound_queue_bytes", &[]),
                draining: r.gauge("orb_draining", &[]),
            },
            window: Mutex::new(Window::new(first)),
            public: AtomicBool::new(public),
            handle,
        }
    }

    // === the hot path ===

    /// A frame of `kind` and `bytes` was read from a wire session.
    #[inline]
    pub(crate) fn received(&self, kind: Kind, bytes: usize) {
        self.traffic.received.add(kind, 1, bytes as u64);
    }

    /// A frame of `kind` and `bytes` was queued for a connection.
    #[inline]
    pub(crate) fn sent(&self, kind: Kind, bytes: usize) {
        self.traffic.sent.add(kind, 1, bytes as u64);
    }

    /// `frames` frames of `kind`, `bytes` in all, were queued (a fan-out counts once).
    #[inline]
    pub(crate) fn sent_many(&self, kind: Kind, frames: u64, bytes: u64) {
        if frames > 0 {
            self.traffic.sent.add(kind, frames, bytes);
        }
    }

    // === per connection, job, target, request ===

    /// A wire session was established on `transport` (`tcp` or `ws`) for `role`: counted in
    /// `orb_connections` until the guard drops.
    pub(crate) fn connected(&self, transport: &str, role: Role) -> Connected<'_> {
        let t = usize::from(transport == TRANSPORTS[1]);
        let r = usize::from(role == ROLES[1]);
        let gauge = &self.connections[t][r];
        gauge.increment(1.0);
        Connected(gauge)
    }

    /// A job started.
    pub(crate) fn job_started(&self) {
        self.jobs_started.increment(1);
    }

    /// A job settled one of its targets with `status` (once per target).
    pub(crate) fn job_target(&self, status: Status) {
        self.targets[status_index(status)].increment(1);
    }

    /// A job's command was answered `took` after it was sent.
    pub(crate) fn command_answered(&self, took: Duration) {
        self.command_seconds.record(took.as_secs_f64());
    }

    /// A held command was stored with its outcome `status`, `n` of them.
    pub(crate) fn held_settled(&self, status: Status, n: u64) {
        self.held_settled[status_index(status)].increment(n);
    }

    /// A plain request was answered by its device `took` after it was sent.
    pub(crate) fn request_answered(&self, took: Duration) {
        self.request_seconds.record(took.as_secs_f64());
    }

    /// A `progress` frame was dropped for `why`.
    pub(crate) fn progress_dropped(&self, why: ProgressDrop) {
        self.progress_dropped[why as usize].increment(1);
    }

    /// A rate limit intervened: a frame's reading delayed, or a hello refused.
    pub(crate) fn rate_limited(&self, limit: RateLimit) {
        self.rate_limited[limit as usize].increment(1);
    }

    // === exposition ===

    /// Whether `/metrics` is served without a token (`[http] metrics_public`).
    pub(crate) fn is_public(&self) -> bool {
        self.public.load(Ordering::Relaxed)
    }

    /// Sets `[http] metrics_public` (configuration reload).
    pub(crate) fn set_public(&self, public: bool) {
        self.public.store(public, Ordering::Relaxed);
    }

    /// The Prometheus text exposition, with `sampled` as the values read at scrape time.
    pub(crate) fn render(&self, sampled: &Sampled) -> String {
        for (dir, handles) in [(&self.traffic.received, &self.received), (&self.traffic.sent, &self.sent)] {
            for (handle, n) in handles.frames.iter().zip(dir.frames()) {
                handle.absolute(n);
            }
            handles.bytes.absolute(dir.bytes.load(Ordering::Relaxed));
        }
        let s = &self.sampled;
        for (handle, n) in s.closed.iter().zip(sampled.closed) {
            handle.absolute(n);
        }
        s.devices_known.set(sampled.devices_known as f64);
        s.jobs_in_flight.set(sampled.jobs_in_flight as f64);
        s.subscriptions.set(sampled.subscriptions as f64);
        s.retained_topics.set(sampled.retained_topics as f64);
        s.retained_bytes.set(sampled.retained_bytes as f64);
        if let Some((waiting, in_flight, bytes)) = sampled.held {
            s.held_waiting.set(waiting as f64);
            s.held_in_flight.set(in_flight as f64);
            s.held_bytes.set(bytes as f64);
        }
        s.outbound_frames.set(sampled.outbound_frames as f64);
        s.outbound_bytes.set(sampled.outbound_bytes as f64);
        s.draining.set(if sampled.draining { 1.0 } else { 0.0 });
        in_order(&self.handle.render())
    }

    /// Frames per second by kind, each direction, over the last [`rates::WINDOW`] (since start
    /// when younger).
    pub(crate) fn rates(&self) -> Rates {
        let now = self.sample(Instant::now());
        self.window.lock().unwrap_or_else(std::sync::PoisonError::into_inner).rates(&now)
    }

    /// Called every [`TICK`]: keeps the frame counters of the last seconds for [`Metrics::rates`],
    /// and now and then folds histogram samples into their buckets.
    pub(crate) fn tick(&self, now: Instant, n: u64) {
        let sample = self.sample(now);
        self.window.lock().unwrap_or_else(std::sync::PoisonError::into_inner).push(sample);
        if n.is_multiple_of(UPKEEP_EVERY) {
            self.handle.run_upkeep();
        }
    }

    fn sample(&self, at: Instant) -> Sample {
        Sample { at, received: self.traffic.received.frames(), sent: self.traffic.sent.frames() }
    }
}

/// The exporter's text with its metric families sorted by name, and the samples of counters and
/// gauges by labels (it writes them in hash order): the same series on the same line every time,
/// for people reading or diffing it. Histograms keep the exporter's order (buckets ascending).
fn in_order(text: &str) -> String {
    let mut families: Vec<(&str, Vec<&str>)> = text
        .split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut lines: Vec<&str> = block.lines().collect();
            let kind = lines.iter().find_map(|l| l.strip_prefix("# TYPE ")).unwrap_or_default();
            let mut words = kind.split(' ');
            let (name, kind) = (words.next().unwrap_or_default(), words.next().unwrap_or_default());
            if kind == "counter" || kind == "gauge" {
                let header = lines.iter().take_while(|l| l.starts_with('#')).count();
                lines[header..].sort_unstable();
            }
            (name, lines)
        })
        .collect();
    families.sort_by_key(|(name, _)| *name);
    let mut out = String::with_capacity(text.len());
    for (_, lines) in families {
        for line in lines {
            out.push_str(line);
            out.push('\n');
        }
        out.push('\n');
    }
    out
}

/// Counts one established session in `orb_connections` while alive.
pub(crate) struct Connected<'a>(&'a Gauge);

impl Drop for Connected<'_> {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

/// Registers handles with one recorder.
struct Registrar<'a>(&'a PrometheusRecorder);

/// What the registrations are attributed to (the exporter ignores it).
const METADATA: Metadata<'static> = Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));

impl Registrar<'_> {
    fn key(name: &'static str, labels: &[(&'static str, &'static str)]) -> Key {
        Key::from_parts(name, labels.iter().map(|(k, v)| Label::from_static_parts(k, v)).collect::<Vec<_>>())
    }

    fn counter(&self, name: &'static str, labels: &[(&'static str, &'static str)]) -> Counter {
        self.0.register_counter(&Self::key(name, labels), &METADATA)
    }

    fn gauge(&self, name: &'static str, labels: &[(&'static str, &'static str)]) -> Gauge {
        self.0.register_gauge(&Self::key(name, labels), &METADATA)
    }

    fn histogram(&self, name: &'static str) -> Histogram {
        self.0.register_histogram(&Self::key(name, &[]), &METADATA)
    }

    fn describe_counter(&self, name: &'static str, unit: Unit, help: &'static str) {
        self.0.describe_counter(KeyName::from_const_str(name), Some(unit), SharedString::const_str(help));
    }

    fn describe_gauge(&self, name: &'static str, unit: Unit, help: &'static str) {
        self.0.describe_gauge(KeyName::from_const_str(name), Some(unit), SharedString::const_str(help));
    }

    fn describe_histogram(&self, name: &'static str, unit: Unit, help: &'static str) {
        self.0.describe_histogram(KeyName::from_const_str(name), Some(unit), SharedString::const_str(help));
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_and_status_sits_at_its_index() {
        for (i, k) in KINDS.iter().enumerate() {
            assert_eq!(kind_index(*k), i, "{}", k.as_str());
        }
        for (i, s) in Status::ALL.iter().enumerate() {
            assert_eq!(status_index(*s), i, "{s}");
        }
    }

    /// The metric names of a rendering: every sample line's and every `# HELP`/`# TYPE` line's.
    fn names(text: &str) -> Vec<&str> {
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                let l = l.strip_prefix("# HELP ").or_else(|| l.strip_prefix("# TYPE ")).unwrap_or(l);
                assert!(!l.starts_with('#'), "an unexpected comment: {l}");
                l.split(['{', ' ']).next().unwrap()
            })
            .collect()
    }

    #[test]
    fn every_name_starts_with_orb_and_every_series_is_there_from_the_start() {
        let m = Metrics::new(false);
        let text = m.render(&Sampled::default());
        let names = names(&text);
        assert!(names.len() > 100, "{text}");
        for n in &names {
            assert!(n.starts_with("orb_"), "{n} in:\n{text}");
        }
        for series in [
            r#"orb_frames_received_total{kind="cmd"} 0"#,
            r#"orb_frames_sent_total{kind="unknown"} 0"#,
            r#"orb_connections{transport="ws",role="operator"} 0"#,
            r#"orb_sessions_closed_total{reason="slow_consumer"} 0"#,
            r#"orb_job_targets_total{status="cancelled"} 0"#,
            r#"orb_held_commands{state="in_flight"} 0"#,
            r#"orb_command_duration_seconds_bucket{le="0.0005"} 0"#,
            r#"orb_request_duration_seconds_count 0"#,
            r#"orb_rate_limited_total{limit="connections"} 0"#,
            "# HELP orb_frames_sent_total frames queued for connections (wire sessions, event streams), by kind",
            "# TYPE orb_command_duration_seconds histogram",
        ] {
            assert!(text.contains(series), "{series} missing from:\n{text}");
        }
    }

    #[test]
    fn counts_reach_the_rendering() {
        let m = Metrics::new(false);
        m.received(Kind::Cmd, 100);
        m.received(Kind::Cmd, 50);
        m.sent_many(Kind::Cmd, 3, 300);
        m.sent(Kind::Reply, 10);
        m.job_started();
        m.job_target(Status::Ok);
        m.job_target(Status::Ok);
        m.job_target(Status::Offline);
        m.held_settled(Status::Expired, 4);
        m.command_answered(Duration::from_millis(3));
        m.request_answered(Duration::from_secs(2));
        m.rate_limited(RateLimit::Messages);
        m.rate_limited(RateLimit::Messages);
        let live = m.connected("ws", Role::Agent);
        let mut sampled = Sampled { devices_known: 7, held: Some((2, 1, 512)), draining: true, ..Sampled::default() };
        sampled.closed[CloseReason::SlowConsumer as usize] = 5;
        let text = m.render(&sampled);
        for series in [
            r#"orb_frames_received_total{kind="cmd"} 2"#,
            "orb_received_bytes_total 150",
            r#"orb_frames_sent_total{kind="cmd"} 3"#,
            r#"orb_frames_sent_total{kind="reply"} 1"#,
            "orb_sent_bytes_total 310",
            r#"orb_connections{transport="ws",role="agent"} 1"#,
            r#"orb_connections{transport="tcp",role="agent"} 0"#,
            "orb_jobs_started_total 1",
            r#"orb_job_targets_total{status="ok"} 2"#,
            r#"orb_job_targets_total{status="offline"} 1"#,
            r#"orb_held_commands_settled_total{status="expired"} 4"#,
            r#"orb_command_duration_seconds_bucket{le="0.005"} 1"#,
            r#"orb_command_duration_seconds_bucket{le="0.0025"} 0"#,
            r#"orb_request_duration_seconds_bucket{le="2.5"} 1"#,
            r#"orb_sessions_closed_total{reason="slow_consumer"} 5"#,
            "orb_devices_known 7",
            r#"orb_held_commands{state="waiting"} 2"#,
            "orb_held_bytes 512",
            "orb_draining 1",
            r#"orb_rate_limited_total{limit="messages"} 2"#,
            r#"orb_rate_limited_total{limit="connections"} 0"#,
        ] {
            assert!(text.contains(series), "{series} missing from:\n{text}");
        }
        drop(live);
        // The store could not be read: the held gauges keep their values.
        let text = m.render(&Sampled::default());
        assert!(text.contains(r#"orb_connections{transport="ws",role="agent"} 0"#), "{text}");
        assert!(text.contains("orb_held_bytes 512"), "{text}");
        assert!(text.contains("orb_draining 0"), "{text}");
    }

    #[test]
    fn families_come_sorted_by_name_and_series_by_labels() {
        let text = Metrics::new(false).render(&Sampled::default());
        let families: Vec<&str> = text.lines().filter_map(|l| l.strip_prefix("# TYPE ")).collect();
        let mut sorted = families.clone();
        sorted.sort_unstable();
        assert_eq!(families, sorted);
        let kinds: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix(r#"orb_frames_sent_total{kind=""#))
            .map(|l| l.split('"').next().unwrap())
            .collect();
        assert_eq!(kinds.len(), KINDS.len());
        assert!(kinds.windows(2).all(|w| w[0] < w[1]), "{kinds:?}");
        let le: Vec<&str> = text.lines().filter(|l| l.starts_with("orb_command_duration_seconds_bucket")).collect();
        assert!(le[0].contains(r#"le="0.0005""#) && le[le.len() - 1].contains(r#"le="+Inf""#), "{le:?}");
        assert!(text.ends_with("\n\n") && !text.contains("\n\n\n"), "{text}");
    }

    #[test]
    fn two_servers_count_apart() {
        let (a, b) = (Metrics::new(false), Metrics::new(true));
        a.sent(Kind::Pong, 20);
        assert!(a.render(&Sampled::default()).contains(r#"orb_frames_sent_total{kind="pong"} 1"#));
        assert!(b.render(&Sampled::default()).contains(r#"orb_frames_sent_total{kind="pong"} 0"#));
        assert!(!a.is_public() && b.is_public());
        a.set_public(true);
        assert!(a.is_public());
    }
}

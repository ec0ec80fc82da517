//! Frames per second by kind over the last few seconds, for `GET /v1/status`: the maintenance
//! task samples the frame counters every second into a [`Window`]; a rate is the difference
//! between the counters now and the oldest sample kept (the one at least [`WINDOW`] old), over
//! the time between them. Pure: the caller supplies the samples and the clock.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::KINDS;

/// The span rates are measured over (once the server has run that long).
pub(crate) const WINDOW: Duration = Duration::from_secs(10);

/// The frame counters at one moment.
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    pub(crate) at: Instant,
    /// Frames read so far, by kind index.
    pub(crate) received: [u64; KINDS.len()],
    /// Frames queued so far, by kind index.
    pub(crate) sent: [u64; KINDS.len()],
}

impl Sample {
    /// Nothing counted yet, at `at`.
    pub(crate) fn zero(at: Instant) -> Sample {
        Sample { at, received: [0; KINDS.len()], sent: [0; KINDS.len()] }
    }
}

/// The samples of the last [`WINDOW`], oldest first, and the newest one older than that (the
/// baseline). Never empty.
#[derive(Debug)]
pub(crate) struct Window(VecDeque<Sample>);

/// Frames per second by kind, each direction (`rates` in `GET /v1/status`).
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub(crate) struct Rates {
    /// Seconds the rates are measured over: [`WINDOW`], or less just after start.
    pub(crate) window_s: f64,
    /// Frames per second read from wire sessions, by kind (every kind listed).
    #[schema(value_type = BTreeMap<String, f64>)]
    pub(crate) received: BTreeMap<&'static str, f64>,
    /// Frames per second queued for connections, by kind.
    #[schema(value_type = BTreeMap<String, f64>)]
    pub(crate) sent: BTreeMap<&'static str, f64>,
}

impl Window {
    /// A window starting with `first` (the counters at start).
    pub(crate) fn new(first: Sample) -> Window {
        Window(VecDeque::from([first]))
    }

    /// Adds a sample (not older than the last one) and forgets those no longer needed: the
    /// oldest kept is the newest that is at least [`WINDOW`] old.
    pub(crate) fn push(&mut self, s: Sample) {
        let at = s.at;
        self.0.push_back(s);
        while self.0.len() > 1 && self.0.get(1).is_some_and(|next| at.saturating_duration_since(next.at) >= WINDOW) {
            self.0.pop_front();
        }
    }

    /// The rates from the oldest sample kept to `now` (the counters at this moment); zero when
    /// no time has passed.
    pub(crate) fn rates(&self, now: &Sample) -> Rates {
        let base = self.0.front().expect("a window is never empty");
        let secs = now.at.saturating_duration_since(base.at).as_secs_f64();
        let per_second = |now: &[u64; KINDS.len()], then: &[u64; KINDS.len()]| {
            KINDS
                .iter()
                .enumerate()
                .map(|(i, k)| {
                    let n = now[i].saturating_sub(then[i]) as f64;
                    let rate = if secs > 0.0 { n / secs } else { 0.0 };
                    (k.as_str(), round(rate))
                })
                .collect()
        };
        Rates {
            window_s: round(secs),
            received: per_second(&now.received, &base.received),
            sent: per_second(&now.sent, &base.sent),
        }
    }
}

/// Three decimals are plenty for a rate read by people and dashboards.
fn round(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::kind_index;
    use orb_proto::Kind;

    fn sample(start: Instant, secs: u64, cmds_in: u64, replies_out: u64) -> Sample {
        let mut s = Sample::zero(start + Duration::from_secs(secs));
        s.received[kind_index(Kind::Cmd)] = cmds_in;
        s.sent[kind_index(Kind::Reply)] = replies_out;
        s
    }

    #[test]
    fn young_servers_rate_since_start_then_over_the_last_ten_seconds() {
        let start = Instant::now();
        let mut w = Window::new(Sample::zero(start));
        let r = w.rates(&sample(start, 0, 0, 0));
        assert_eq!(r.window_s, 0.0);
        assert_eq!(r.received["cmd"], 0.0, "no time passed: no rate, no division by zero");
        assert_eq!(r.received.len(), KINDS.len(), "every kind is listed");

        // Two seconds in, 10 cmds read and 4 replies sent: over two seconds.
        w.push(sample(start, 1, 5, 2));
        let r = w.rates(&sample(start, 2, 10, 4));
        assert_eq!((r.window_s, r.received["cmd"], r.sent["reply"], r.sent["cmd"]), (2.0, 5.0, 2.0, 0.0));

        // A burst of 1000 cmds in the first second, then 10 a second: after 30 s the burst is
        // out of the window, which spans 10 s.
        let mut w = Window::new(Sample::zero(start));
        let mut total = 1000;
        w.push(sample(start, 1, total, 0));
        for t in 2..=30 {
            total += 10;
            w.push(sample(start, t, total, 0));
        }
        let r = w.rates(&sample(start, 30, total, 0));
        assert_eq!((r.window_s, r.received["cmd"]), (10.0, 10.0));
        assert!(w.0.len() <= 11, "only the samples of the window are kept: {}", w.0.len());
    }

    #[test]
    fn a_late_tick_widens_the_window_rather_than_losing_its_start() {
        let start = Instant::now();
        let mut w = Window::new(Sample::zero(start));
        w.push(sample(start, 5, 50, 0));
        // The next tick comes 12 s later: the sample at 5 s is the newest at least 10 s old.
        w.push(sample(start, 17, 170, 0));
        let r = w.rates(&sample(start, 17, 170, 0));
        assert_eq!((r.window_s, r.received["cmd"]), (12.0, 10.0));
    }
}

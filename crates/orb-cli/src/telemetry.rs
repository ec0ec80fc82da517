//! The agent's telemetry: every interval it samples the machine ([`SysMetrics`], the same object
//! `sys.info` answers), keeps the parts its [`Plan`] names, and publishes it on
//! `telemetry.<id>.sys`, `<id>` being the id the server welcomed it with. The plan comes from a
//! watch channel: the agent's `[telemetry]` section, or what the server pushes
//! (`crate::pushed`). Samples taken while disconnected go to the agent's outbox (`$orb.telemetry`,
//! at most half of it), which the server publishes once it has them.

use std::time::Duration;

use bytes::Bytes;
use orb_client::durable::Outbox;
use orb_client::{Client, ClientError};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::sysmetrics::SysMetrics;

/// The topic device `id` publishes its system metrics on.
pub fn topic(id: &str) -> String {
    format!("telemetry.{id}.sys")
}

/// How often to publish, and which parts of a sample.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The interval (`None`: not at all).
    pub every: Option<Duration>,
    /// The measured parts to keep (`orb_proto::agent_config::TELEMETRY_METRICS`).
    pub metrics: std::sync::Arc<[String]>,
}

/// The keys of a sample each metric name stands for.
const METRIC_KEYS: &[(&str, &[&str])] = &[
    ("cpu", &["cpu_percent", "cpus"]),
    ("load", &["load_avg"]),
    ("memory", &["memory"]),
    ("swap", &["swap"]),
    ("disks", &["disks"]),
    ("network", &["network"]),
];

/// Removes from `sample` the measured parts `metrics` does not name.
pub fn keep_metrics(sample: &mut serde_json::Value, metrics: &[String]) {
    let Some(object) = sample.as_object_mut() else { return };
    for (name, keys) in METRIC_KEYS {
        if !metrics.iter().any(|m| m == name) {
            for key in *keys {
                object.remove(*key);
            }
        }
    }
}

/// Waits until `due`, or for ever when there is none (telemetry is off).
pub async fn until(due: Option<tokio::time::Instant>) {
    match due {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Shortest interval accepted (a shorter one would mostly measure the agent itself).
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

/// How long the server has to acknowledge one publication.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads `[telemetry] interval`: a duration (at least [`MIN_INTERVAL`]), or `0` / `off` for none.
///
/// # Errors
/// A message naming the key, for anything else.
pub fn parse_interval(text: &str) -> Result<Option<Duration>, String> {
    let text = text.trim();
    if text == "0" || text.eq_ignore_ascii_case("off") {
        return Ok(None);
    }
    match humantime::parse_duration(text) {
        Ok(d) if d.is_zero() => Ok(None),
        Ok(d) if d < MIN_INTERVAL => Err(format!(
            "'telemetry.interval' = \"{text}\" is shorter than {}; use 0 or \"off\" to turn telemetry off",
            humantime::format_duration(MIN_INTERVAL)
        )),
        Ok(d) => Ok(Some(d)),
        Err(e) => Err(format!("'telemetry.interval' = \"{text}\" is not a duration like 60s, nor 0 or \"off\": {e}")),
    }
}

/// Samples and publishes until `stop` is cancelled. `current` is the live connection (`None`
/// while offline); `plan` says how often (`None`: not at all, until it changes) and what.
pub async fn run(
    metrics: SysMetrics,
    mut current: watch::Receiver<Option<Client>>,
    mut plan: watch::Receiver<Plan>,
    outbox: Option<Outbox>,
    stop: CancellationToken,
) {
    // The latest sample not published yet: one at most; an older one goes to the outbox first.
    let mut pending: Option<Bytes> = None;
    let mut stash = Stash { outbox, full: false };
    let mut refusal: Option<String> = None;
    let mut every = plan.borrow_and_update().every;
    let mut next = every.map(|every| tokio::time::Instant::now() + every);
    // False once nobody can change the interval any more: the last value stands.
    let mut watching = true;
    loop {
        let tick = until(next);
        tokio::select! {
            () = stop.cancelled() => return,
            changed = plan.changed(), if watching => {
                match changed {
                    // A new interval starts now; new metrics alone apply from the next sample.
                    Ok(()) => {
                        let now = plan.borrow_and_update().every;
                        if now != every {
                            every = now;
                            next = every.map(|every| tokio::time::Instant::now() + every);
                        }
                    }
                    Err(_) => watching = false,
                }
                continue;
            }
            changed = current.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = tick => {
                stash.keep(&mut pending).await;
                let mut sample = metrics.sample().await;
                keep_metrics(&mut sample, &plan.borrow().metrics);
                pending = Some(Bytes::from(serde_json::to_vec(&sample).expect("a JSON value serialises")));
                next = every.map(|every| tokio::time::Instant::now() + every);
            }
        }
        let live = current.borrow_and_update().clone();
        match (live, &pending) {
            (Some(client), Some(_)) => publish(&client, &mut pending, &mut refusal).await,
            (None, Some(_)) => stash.keep(&mut pending).await,
            (_, None) => {}
        }
    }
}

/// Where samples taken while disconnected go: the agent's outbox, which sends them when it is
/// connected again (`$orb.telemetry`), up to half its limits; without one, or past that, only the
/// latest sample is kept.
struct Stash {
    outbox: Option<Outbox>,
    /// The outbox refused the last sample (said once until one is taken again).
    full: bool,
}

impl Stash {
    /// Commits `pending` to the outbox, if there is one and it takes it; otherwise `pending`
    /// stays, to be replaced by a newer sample.
    async fn keep(&mut self, pending: &mut Option<Bytes>) {
        let (Some(outbox), Some(body)) = (&self.outbox, pending.clone()) else { return };
        match outbox.send_telemetry(body).await {
            Ok(_) => {
                *pending = None;
                self.full = false;
                tracing::debug!("telemetry sample kept in the outbox until the agent is connected");
            }
            Err(e) => {
                if !std::mem::replace(&mut self.full, true) {
                    tracing::warn!(
                        "telemetry taken offline is no longer kept in the outbox: {e}; only the latest sample is"
                    );
                }
            }
        }
    }
}

/// Publishes the pending sample on `client`. Kept when the connection failed (sent after the
/// next reconnect); dropped when the server refused it (the next sample is tried anyway).
async fn publish(client: &Client, pending: &mut Option<Bytes>, refusal: &mut Option<String>) {
    let Some(body) = pending.clone() else { return };
    let topic = topic(&client.welcome().id);
    match client.publish(&topic, body, PUBLISH_TIMEOUT).await {
        Ok(_) => {
            *pending = None;
            if refusal.take().is_some() {
                tracing::info!(topic, "telemetry is accepted again");
            }
        }
        Err(ClientError::Remote(e)) => {
            *pending = None;
            let message = format!("{}: {}", e.code, e.message);
            // Said once per distinct refusal, not once per sample.
            if refusal.as_deref() != Some(message.as_str()) {
                tracing::warn!(topic, code = %e.code, "the server refused telemetry: {}", e.message);
                *refusal = Some(message);
            }
        }
        Err(e) => tracing::debug!(topic, error = %e, "telemetry not published; kept for the next connection"),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_the_named_metrics_are_kept() {
        let mut sample = serde_json::json!({
            "hostname": "h", "uptime_s": 5, "cpu_percent": 1.5, "cpus": 2, "load_avg": null,
            "memory": {}, "swap": {}, "disks": [], "network": []
        });
        keep_metrics(&mut sample, &["cpu".to_owned(), "disks".to_owned()]);
        let mut keys: Vec<&str> = sample.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["cpu_percent", "cpus", "disks", "hostname", "uptime_s"]);
        let names: Vec<&str> = METRIC_KEYS.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, orb_proto::agent_config::TELEMETRY_METRICS);
    }

    #[test]
    fn the_interval_is_a_duration_or_off() {
        assert_eq!(parse_interval("60s"), Ok(Some(Duration::from_secs(60))));
        assert_eq!(parse_interval("200ms"), Ok(Some(Duration::from_millis(200))));
        for off in ["0", "0s", "off", "OFF"] {
            assert_eq!(parse_interval(off), Ok(None), "{off}");
        }
        for bad in ["soon", "50ms", "-1s", ""] {
            let e = parse_interval(bad).unwrap_err();
            assert!(e.contains("'telemetry.interval'"), "{bad}: {e}");
        }
    }
}

//! The latest telemetry of each device: the body of its last publication on exactly
//! `telemetry.<its own id>.sys` (the agent's system metrics), with the time the server received
//! it (for a sample taken offline and sent through the outbox: when the device took it). Noted on the publish path (one prefix check for every other topic), in memory only: one
//! value per known device, each within the frame limit, forgotten when the device is removed
//! and on restart. Shown by `$orb.devices.show` and the dashboard.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use dashmap::DashMap;

use crate::identity::Identity;
use crate::registry::Registry;

/// The topic's first segment, with its dot.
const PREFIX: &str = "telemetry.";
/// The topic's last segment, with its dot.
const SUFFIX: &str = ".sys";

/// One device's latest sample.
#[derive(Debug, Clone)]
pub struct Sample {
    /// When the server received it.
    pub at: DateTime<Utc>,
    /// The publication's JSON body (a copy: it never holds a connection's read buffer).
    pub body: Bytes,
}

/// Every device's latest sample.
#[derive(Default)]
pub(crate) struct Latest(DashMap<String, Sample>);

/// The device `topic` is the system telemetry of: `telemetry.<id>.sys` with `<id>` one segment.
fn device_of(topic: &str) -> Option<&str> {
    topic.strip_prefix(PREFIX)?.strip_suffix(SUFFIX).filter(|id| !id.is_empty() && !id.contains('.'))
}

impl Latest {
    /// Keeps `body`, taken `at`, as the latest sample of the publisher when `topic` is its own
    /// `telemetry.<id>.sys`, it is a known device, the body is not `null`, and no later sample is
    /// kept (one taken offline may arrive after a live one). Anything else is left alone (a
    /// device cannot set another's, nor can an operator).
    pub(crate) fn note(
        &self,
        registry: &Registry,
        who: &Identity,
        topic: &str,
        body: Option<&Bytes>,
        at: DateTime<Utc>,
    ) {
        let Some(id) = device_of(topic) else { return };
        if who.device.as_ref().is_none_or(|d| d.as_str() != id) {
            return;
        }
        let Some(body) = body.filter(|b| b.as_ref() != b"null") else { return };
        if registry.get(id).is_none() {
            return;
        }
        let sample = Sample { at, body: Bytes::copy_from_slice(body) };
        match self.0.entry(id.to_owned()) {
            dashmap::Entry::Occupied(mut kept) if kept.get().at <= at => {
                kept.insert(sample);
            }
            dashmap::Entry::Occupied(_) => {}
            dashmap::Entry::Vacant(slot) => {
                slot.insert(sample);
            }
        }
    }

    /// Device `id`'s latest sample.
    pub(crate) fn get(&self, id: &str) -> Option<Sample> {
        self.0.get(id).map(|s| s.value().clone())
    }

    /// Device `id` was removed: its sample goes too.
    pub(crate) fn forget(&self, id: &str) {
        self.0.remove(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_sys_topic_of_one_device_counts() {
        assert_eq!(device_of("telemetry.web-1.sys"), Some("web-1"));
        for other in
            ["telemetry.web-1.cpu", "telemetry.web-1.sys.x", "telemetry..sys", "telemetry.a.b.sys", "x.web-1.sys"]
        {
            assert_eq!(device_of(other), None, "{other}");
        }
    }
}

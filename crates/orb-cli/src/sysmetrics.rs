//! One long-lived collector of the machine's metrics (`sysinfo`'s `System`, `Disks` and
//! `Networks`), refreshed on demand, shared by the `sys.info` command and the telemetry loop.
//! CPU usage is measured between two refreshes, so it is only as fresh as the previous sample;
//! refreshes run on the blocking pool (a stalled mount must not hold up a runtime thread).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use sysinfo::{Disks, Networks, System};

use crate::agent::AGENT_NAME;

/// Disks and network interfaces reported at most (each list is sorted by name first).
pub const MAX_LISTED: usize = 32;

/// The collector (a cheap handle; clones share it).
#[derive(Clone)]
pub struct SysMetrics {
    inner: Arc<Mutex<Collector>>,
    /// When this agent process started collecting (`agent_uptime_s`).
    started: Instant,
}

/// What `sysinfo` could open on this platform (`None` where it cannot).
struct Collector {
    system: Option<System>,
    disks: Option<Disks>,
    networks: Option<Networks>,
    /// When CPU usage was last refreshed, and the usage measured then (percent of all CPUs).
    cpu_refreshed: Instant,
    cpu_percent: Option<f64>,
}

impl SysMetrics {
    /// Opens the collector and takes the first CPU reading (usage is known from the next sample
    /// taken at least `sysinfo::MINIMUM_CPU_UPDATE_INTERVAL` later).
    pub fn open() -> SysMetrics {
        let mut system = System::new().ok();
        if let Some(s) = &mut system {
            s.refresh_cpu_usage();
        }
        let collector = Collector {
            system,
            disks: Disks::new().ok(),
            networks: Networks::new_with_refreshed_list().ok(),
            cpu_refreshed: Instant::now(),
            cpu_percent: None,
        };
        SysMetrics { inner: Arc::new(Mutex::new(collector)), started: Instant::now() }
    }

    /// Refreshes what changes and answers the `sys.info` object (documented in
    /// docs/agent-commands.md).
    pub async fn sample(&self) -> serde_json::Value {
        let (inner, started) = (Arc::clone(&self.inner), self.started);
        let taken = tokio::task::spawn_blocking(move || {
            let mut c = inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            c.sample(started)
        })
        .await;
        // The closure does not panic; should it, the answer is the static part alone.
        taken.unwrap_or_else(|_| static_part(self.started))
    }
}

impl Collector {
    fn sample(&mut self, started: Instant) -> serde_json::Value {
        let mut v = static_part(started);
        if let Some(s) = &mut self.system {
            // Usage between two refreshes closer than the minimum interval is meaningless: the
            // previous measurement stands until the interval passed.
            if self.cpu_refreshed.elapsed() >= sysinfo::MINIMUM_CPU_UPDATE_INTERVAL {
                s.refresh_cpu_usage();
                self.cpu_refreshed = Instant::now();
                self.cpu_percent = Some(round2(f64::from(s.global_cpu_usage())));
            }
            s.refresh_memory();
        }
        let system = self.system.as_ref();
        v["cpu_percent"] = self.cpu_percent.into();
        v["cpus"] = system.map(|s| s.cpus().len()).filter(|n| *n > 0).into();
        v["load_avg"] = System::load_average().map_or(
            serde_json::Value::Null,
            |l| serde_json::json!({"one": round2(l.one), "five": round2(l.five), "fifteen": round2(l.fifteen)}),
        );
        v["memory"] = system.filter(|s| s.total_memory() > 0).map_or(serde_json::Value::Null, |s| {
            serde_json::json!({
                "total_bytes": s.total_memory(),
                "used_bytes": s.used_memory(),
                "available_bytes": s.available_memory(),
            })
        });
        v["swap"] = system.filter(|s| s.total_memory() > 0).map_or(
            serde_json::Value::Null,
            |s| serde_json::json!({"total_bytes": s.total_swap(), "used_bytes": s.used_swap()}),
        );
        v["disks"] = self.disks.as_mut().map_or_else(Vec::new, disks).into();
        v["network"] = self.networks.as_mut().map_or_else(Vec::new, networks).into();
        v
    }
}

/// The keys that need no collector: identity, versions, uptimes, the clock.
fn static_part(started: Instant) -> serde_json::Value {
    serde_json::json!({
        "hostname": System::host_name().ok(),
        "os": std::env::consts::OS,
        "os_version": System::long_os_version().ok(),
        "arch": std::env::consts::ARCH,
        "agent_version": AGENT_NAME,
        "uptime_s": System::uptime().ok(),
        "agent_uptime_s": started.elapsed().as_secs(),
        "clock": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    })
}

/// Mounted file systems by mount point, at most [`MAX_LISTED`].
fn disks(d: &mut Disks) -> Vec<serde_json::Value> {
    d.refresh(true);
    let mut list: Vec<&sysinfo::Disk> = d.iter().collect();
    list.sort_by(|a, b| a.mount_point().cmp(b.mount_point()));
    list.iter()
        .take(MAX_LISTED)
        .map(|disk| {
            serde_json::json!({
                "mount": disk.mount_point().to_string_lossy(),
                "fs": disk.file_system().to_string_lossy(),
                "total_bytes": disk.total_space(),
                "available_bytes": disk.available_space(),
            })
        })
        .collect()
}

/// Network interfaces by name with their byte counters since boot, at most [`MAX_LISTED`].
fn networks(n: &mut Networks) -> Vec<serde_json::Value> {
    n.refresh(true);
    let mut list: Vec<_> = n.iter().collect();
    list.sort_by(|a, b| a.0.cmp(b.0));
    list.iter()
        .take(MAX_LISTED)
        .map(|(name, data)| {
            serde_json::json!({
                "interface": name.to_string_lossy(),
                "rx_bytes": data.total_received(),
                "tx_bytes": data.total_transmitted(),
            })
        })
        .collect()
}

/// Two decimals are plenty for percentages and load averages (and keep the JSON short).
fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_sample_has_every_documented_key_with_its_shape() {
        let m = SysMetrics::open();
        let v = m.sample().await;
        let mut keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "agent_uptime_s",
                "agent_version",
                "arch",
                "clock",
                "cpu_percent",
                "cpus",
                "disks",
                "hostname",
                "load_avg",
                "memory",
                "network",
                "os",
                "os_version",
                "swap",
                "uptime_s"
            ]
        );
        assert_eq!(v["agent_version"], AGENT_NAME);
        assert!(v["disks"].as_array().unwrap().len() <= MAX_LISTED);
        assert!(v["network"].as_array().unwrap().len() <= MAX_LISTED);
        for d in v["disks"].as_array().unwrap() {
            let mut k: Vec<&str> = d.as_object().unwrap().keys().map(String::as_str).collect();
            k.sort_unstable();
            assert_eq!(k, ["available_bytes", "fs", "mount", "total_bytes"], "{d}");
        }
        for n in v["network"].as_array().unwrap() {
            let mut k: Vec<&str> = n.as_object().unwrap().keys().map(String::as_str).collect();
            k.sort_unstable();
            assert_eq!(k, ["interface", "rx_bytes", "tx_bytes"], "{n}");
        }
        if cfg!(target_os = "linux") {
            let mem = &v["memory"];
            assert!(mem["total_bytes"].as_u64().unwrap() >= mem["used_bytes"].as_u64().unwrap(), "{mem}");
            assert!(mem["available_bytes"].is_u64() && v["swap"]["total_bytes"].is_u64(), "{v}");
            assert!(v["cpus"].as_u64().unwrap() >= 1, "{v}");
            assert!(v["load_avg"]["one"].is_f64() && v["load_avg"]["fifteen"].is_f64(), "{v}");
        }
    }

    #[tokio::test]
    async fn cpu_usage_is_measured_between_samples_at_least_the_minimum_interval_apart() {
        let m = SysMetrics::open();
        // At once: no interval passed since the collector opened.
        assert!(m.sample().await["cpu_percent"].is_null());
        if cfg!(target_os = "linux") {
            tokio::time::sleep(sysinfo::MINIMUM_CPU_UPDATE_INTERVAL).await;
            let cpu = m.sample().await["cpu_percent"].as_f64().unwrap();
            assert!((0.0..=100.0).contains(&cpu), "{cpu}");
            // Sampled again at once: the last measurement stands.
            assert_eq!(m.sample().await["cpu_percent"].as_f64(), Some(cpu));
        }
    }
}

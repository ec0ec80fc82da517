//! `orb bench idle`: server memory per idle connection (resident memory with N agents connected
//! minus before, over N; the kernel's socket buffers are not in it) and the resident memory of
//! one real `orb agent` process.

use std::process::Command;
use std::time::Duration;

use serde::Serialize;

use super::proc::{self, ChildGuard};
use super::stats::Spread;
use super::{CommonArgs, Target, report};
use crate::exit::{self, Failure};

/// The figures.
#[derive(Debug, Serialize)]
pub struct Idle {
    /// Server resident memory before the agents connected (MiB; 5 samples).
    pub server_rss_before_mib: Spread,
    /// Server resident memory with every agent connected (MiB; 5 samples).
    pub server_rss_after_mib: Spread,
    /// (after − before) / connections, in KiB.
    pub server_kib_per_connection: f64,
    /// Resident memory of one idle `orb agent` process, in MiB.
    pub agent_rss_mib: Option<f64>,
    /// Size of this `orb` binary, in MiB.
    pub binary_mib: Option<f64>,
}

async fn samples(pid: u32) -> Spread {
    let mut v = Vec::new();
    for _ in 0..5 {
        if let Some(b) = proc::rss_bytes(pid) {
            v.push(b as f64 / 1048576.0);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Spread::of(&v)
}

/// Starts one `orb agent` and measures it once it is connected.
async fn agent_rss(target: &Target) -> Result<Option<f64>, Failure> {
    let data = proc::temp_dir()?;
    let mut cmd = Command::new(proc::orb_exe()?);
    cmd.args(["agent", "--server", &target.url, "--token", &target.agent, "--id", "idle-probe"])
        .arg("--data")
        .arg(data.path())
        .env("ORB_LOG", "info")
        .env_remove("ORB_CONFIG");
    if let Some(ca) = target.ca_cert() {
        cmd.arg("--ca-cert").arg(ca);
    }
    let agent = ChildGuard::spawn(cmd, false)?;
    agent.wait_line("agent connected", Duration::from_secs(20))?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(proc::rss_bytes(agent.pid()).map(|b| b as f64 / 1048576.0))
}

/// Runs the scenario.
pub async fn run(n: usize, common: &CommonArgs) -> Result<u8, Failure> {
    let target = Target::start(common).await?;
    let Some(pid) = target.pid() else {
        return Err(Failure::usage("idle measures the server's memory: run without --server"));
    };
    // Let the server settle after start, then measure.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = samples(pid).await;
    let swarm = target.orb_swarm(n, "i-", false)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = samples(pid).await;
    let per_conn = (after.median - before.median) * 1024.0 / n as f64;
    let agent = agent_rss(&target).await?;
    drop(swarm);
    let binary_mib = proc::orb_exe().ok().and_then(|p| std::fs::metadata(p).ok()).map(|m| m.len() as f64 / 1048576.0);
    let idle = Idle {
        server_rss_before_mib: before,
        server_rss_after_mib: after,
        server_kib_per_connection: per_conn,
        agent_rss_mib: agent,
        binary_mib,
    };
    let mut lines = vec![format!("idle: {n} idle agent connections (server: {})", target.mode())];
    lines.push(format!(
        "  server rss {:.1} MiB before, {:.1} MiB with {n} connections: {per_conn:.2} KiB per connection (kernel socket memory not included)",
        before.median, after.median
    ));
    if let Some(a) = agent {
        lines.push(format!("  one idle orb agent process: {a:.1} MiB resident"));
    }
    if let Some(b) = binary_mib {
        lines.push(format!("  this orb binary: {b:.1} MiB"));
    }
    let json = serde_json::json!({"scenario": "idle", "connections": n, "server": target.mode(), "result": idle});
    report(common, &lines, &json);
    Ok(exit::OK)
}

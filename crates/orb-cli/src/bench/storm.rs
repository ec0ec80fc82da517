//! `orb bench storm`: N agents connected, the server killed and started again on the same port;
//! time from the new server listening until every agent is back online.

use std::time::{Duration, Instant};

use orb_proto::message::{ServerInfo, commands};
use serde::Serialize;

use super::stats::Spread;
use super::{CommonArgs, Target, fail, ms, report};
use crate::exit::{self, Failure};

/// The figures.
#[derive(Debug, Serialize)]
pub struct Storm {
    /// Milliseconds from the restarted server listening to all agents registered.
    pub all_back_ms: Spread,
}

async fn agents_online(target: &Target) -> Result<u64, Failure> {
    let op = target.operator().await?;
    let info: ServerInfo =
        op.call_json(commands::SERVER_INFO, &serde_json::Value::Null, Duration::from_secs(5)).await.map_err(fail)?;
    op.close().await;
    Ok(info.agents)
}

/// Runs the scenario.
pub async fn run(n: usize, trials: usize, common: &CommonArgs) -> Result<u8, Failure> {
    if common.server.is_some() || common.embedded {
        return Err(Failure::usage("storm restarts the server: run it without --server and --embedded"));
    }
    let mut target = Target::start(common).await?;
    let _swarm = target.orb_swarm(n, "s-", true)?;
    let mut times = Vec::with_capacity(trials);
    for _ in 0..trials {
        target.restart()?;
        let start = Instant::now();
        let deadline = start + Duration::from_secs(120);
        loop {
            let online = agents_online(&target).await.unwrap_or(0);
            if online as usize >= n {
                break;
            }
            if Instant::now() > deadline {
                return Err(fail(format!("only {online} of {n} agents came back within 120 s")));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        times.push(ms(start.elapsed()));
    }
    let storm = Storm { all_back_ms: Spread::of(&times) };
    let lines = vec![
        format!(
            "storm: {n} agents reconnect after a server restart (kill -9, start on the same port); {trials} trials"
        ),
        format!("  all back online after {} ms", storm.all_back_ms),
    ];
    let json = serde_json::json!({"scenario": "storm", "agents": n, "trials": trials, "result": storm});
    report(common, &lines, &json);
    Ok(exit::OK)
}

//! `orb crashcheck`: the Jepsen-style durability check. Starts `orb serve` and several crash
//! agents as processes ([`cluster`]), submits numbered `--ttl` commands to them while they send
//! numbered events through their outboxes ([`operator`], [`agent`]), SIGKILLs the server and
//! agents at moments drawn from a seed (`--seed`, `ORB_CRASH_SEED`) and starts them again, then
//! waits for everything to settle and judges the histories the processes wrote themselves
//! ([`history`]) with the queue checker ([`checker`]): nothing acknowledged lost, nothing run or
//! stored twice, nothing out of order, nothing unexpected.

pub mod agent;
mod checker;
mod cluster;
mod history;
mod operator;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use clap::Args;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use self::checker::{DeviceHistory, Outcome, Report, Submission};
use self::cluster::{Cluster, Setup, Victims, agent_id};
use self::operator::{Operator, Submitted};
use crate::exit::{self, Failure};

/// `orb crashcheck` arguments.
#[derive(Debug, Args)]
pub struct CrashArgs {
    /// Agents (processes). Default 3 (4 with --long).
    #[arg(long)]
    pub agents: Option<usize>,
    /// Kill cycles. Default 5 (30 with --long).
    #[arg(long)]
    pub cycles: Option<u32>,
    /// Commands to submit, spread over the agents. Default 2000 (20000 with --long).
    #[arg(long)]
    pub commands: Option<u64>,
    /// Events the agents send through their outboxes, in all. Default 2000 (20000 with --long).
    #[arg(long)]
    pub events: Option<u64>,
    /// Length of one kill cycle.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "2s")]
    pub cycle: Duration,
    /// How long to wait, after the last kill, for every command to end and every event to arrive.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "3m")]
    pub settle: Duration,
    /// The kill schedule's seed (default: $ORB_CRASH_SEED, else random; printed at the start).
    #[arg(long)]
    pub seed: Option<u64>,
    /// The larger run whose results docs/reliability.md records.
    #[arg(long)]
    pub long: bool,
    /// Keep the data folders and logs here, a new or empty folder (default: a temporary folder, kept only on
    /// failure).
    #[arg(long)]
    pub dir: Option<PathBuf>,
    /// Print the report as one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// The sizes of one run.
#[derive(Debug, Clone, Serialize)]
struct Plan {
    seed: u64,
    agents: usize,
    cycles: u32,
    commands_per_agent: u64,
    events_per_agent: u64,
    cycle_ms: u64,
}

impl Plan {
    fn from(args: &CrashArgs) -> Result<Plan, Failure> {
        let pick = |v: Option<u64>, short: u64, long: u64| v.unwrap_or(if args.long { long } else { short });
        let agents = pick(args.agents.map(|a| a as u64), 3, 4) as usize;
        let cycles = pick(args.cycles.map(u64::from), 5, 30) as u32;
        let commands = pick(args.commands, 2000, 20_000);
        let events = pick(args.events, 2000, 20_000);
        if !(1..=64).contains(&agents) {
            return Err(Failure::usage("--agents must be 1 to 64"));
        }
        if cycles == 0 || args.cycle < Duration::from_millis(100) {
            return Err(Failure::usage("--cycles must be at least 1 and --cycle at least 100ms"));
        }
        let commands_per_agent = commands.div_ceil(agents as u64);
        let events_per_agent = events.div_ceil(agents as u64);
        let max = u64::from(orb_proto::registry::MessagesQuery::MAX_LIMIT);
        if events_per_agent > max {
            return Err(Failure::usage(format!(
                "at most {max} events per agent (the server keeps that many per device): use more --agents"
            )));
        }
        let seed = match args.seed {
            Some(s) => s,
            None => match std::env::var("ORB_CRASH_SEED") {
                Ok(s) => s.trim().parse().map_err(|_| Failure::usage(format!("ORB_CRASH_SEED={s} is not a number")))?,
                Err(_) => rand::random(),
            },
        };
        Ok(Plan { seed, agents, cycles, commands_per_agent, events_per_agent, cycle_ms: args.cycle.as_millis() as u64 })
    }

    fn cycle(&self) -> Duration {
        Duration::from_millis(self.cycle_ms)
    }

    /// The time the kills take: commands and events are paced to spread over it.
    fn active(&self) -> Duration {
        self.cycle() * self.cycles
    }
}

/// What the kills did.
#[derive(Debug, Default, Serialize)]
struct Kills {
    server: u32,
    agents: u32,
}

/// Runs the check; exit 0 when it passed, 1 when it found an anomaly.
pub async fn run(args: CrashArgs) -> Result<u8, Failure> {
    let plan = Plan::from(&args)?;
    if let Some(dir) = &args.dir
        && std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_some())
    {
        // Logs of an earlier run would be judged as this run's.
        return Err(Failure::usage(format!("--dir {} is not empty: give a new or empty folder", dir.display())));
    }
    let started = Instant::now();
    eprintln!(
        "orb crashcheck: seed {} (ORB_CRASH_SEED={} replays this kill schedule); {} agents, {} kill cycles of {:?}, \
         {} commands and {} events per agent",
        plan.seed,
        plan.seed,
        plan.agents,
        plan.cycles,
        plan.cycle(),
        plan.commands_per_agent,
        plan.events_per_agent
    );
    let temp = match &args.dir {
        Some(_) => None,
        None => Some(tempfile::tempdir().map_err(|e| fail(e.to_string()))?),
    };
    let dir = args.dir.clone().or_else(|| temp.as_ref().map(|t| t.path().to_owned())).unwrap_or_default();
    std::fs::create_dir_all(&dir).map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
    let setup = Setup {
        dir: dir.clone(),
        port: crate::bench::proc::free_port()?,
        admin: format!("admin-{}", plan.seed),
        agent_token: format!("agent-{}", plan.seed),
        agents: plan.agents,
        events_per_agent: plan.events_per_agent,
        event_every_ms: (plan.active().as_millis() as u64 / plan.events_per_agent.max(1)).max(1),
        max_queued: plan.commands_per_agent.max(1000) + 1,
    };
    let mut cluster = Cluster::start(setup)?;
    let devices: Vec<String> = (0..plan.agents).map(agent_id).collect();
    let url = cluster.setup().url();
    let admin = cluster.setup().admin.clone();
    let pace = plan.active() / (plan.commands_per_agent * plan.agents as u64).max(1) as u32;
    let submitter =
        tokio::spawn(Operator::new(&url, &admin)?.submit_all(devices.clone(), plan.commands_per_agent, pace));

    let kills = kill_cycles(&plan, &mut cluster).await?;
    let submitted = submitter.await.map_err(|e| fail(e.to_string()))??;
    eprintln!("orb crashcheck: kills done after {:.1} s; waiting for everything to settle", secs(started));
    let mut op = Operator::new(&url, &admin)?;
    let histories = settle(&mut op, &mut cluster, &devices, submitted, args.settle).await?;
    op.close().await;
    drop(cluster);
    let report = checker::check(&histories);
    let passed = report.passed();
    print_report(&args, &plan, &kills, &report, secs(started));
    if !passed {
        if let Some(t) = temp {
            let kept = t.keep();
            eprintln!("orb crashcheck: the folders and logs are kept in {}", kept.display());
        }
        return Ok(exit::FAILED);
    }
    Ok(exit::OK)
}

/// Kills and restarts processes, once per cycle, at moments and in combinations drawn from
/// the seed.
async fn kill_cycles(plan: &Plan, cluster: &mut Cluster) -> Result<Kills, Failure> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(plan.seed);
    let mut kills = Kills::default();
    for cycle in 1..=plan.cycles {
        let at = plan.cycle().mul_f64(rng.random_range(0.2..1.0));
        let down = Duration::from_millis(rng.random_range(0..300));
        let victims = choose(&mut rng, plan.agents);
        tokio::time::sleep(at).await;
        cluster.check_alive()?;
        cluster.kill(&victims);
        kills.server += u32::from(victims.server);
        kills.agents += victims.agents.len() as u32;
        eprintln!(
            "orb crashcheck: cycle {cycle}/{}: SIGKILL {victims}; restarting after {} ms",
            plan.cycles,
            down.as_millis()
        );
        tokio::time::sleep(down).await;
        cluster.restart()?;
        tokio::time::sleep(plan.cycle().saturating_sub(at)).await;
    }
    cluster.check_alive()?;
    Ok(kills)
}

/// The server with probability ½, each agent with probability ½; at least one of them.
fn choose(rng: &mut impl Rng, agents: usize) -> Victims {
    let mut v =
        Victims { server: rng.random_bool(0.5), agents: (0..agents).filter(|_| rng.random_bool(0.5)).collect() };
    if !v.server && v.agents.is_empty() {
        let pick = rng.random_range(0..=agents);
        if pick == agents {
            v.server = true;
        } else {
            v.agents.push(pick);
        }
    }
    v
}

/// Waits (at most `limit`) until every acknowledged job has ended and every event each agent's
/// outbox accepted is stored, then gathers the histories (as they are, if the limit passed).
async fn settle(
    op: &mut Operator,
    cluster: &mut Cluster,
    devices: &[String],
    submitted: Vec<BTreeMap<u64, Submitted>>,
    limit: Duration,
) -> Result<Vec<DeviceHistory>, Failure> {
    let deadline = Instant::now() + limit;
    let events_per_agent = cluster.setup().events_per_agent;
    let mut outcomes: HashMap<String, Outcome> = HashMap::new();
    loop {
        cluster.check_alive()?;
        let mut settled = true;
        let mut histories = Vec::with_capacity(devices.len());
        for (d, device) in devices.iter().enumerate() {
            let agent_dir = cluster.setup().agent_dir(d);
            let mut numbered = BTreeMap::new();
            for (&n, s) in &submitted[d] {
                let submission = match s {
                    Submitted::Acked(job) => {
                        let known = outcomes.get(job).filter(|o| **o != Outcome::Unfinished).cloned();
                        let outcome = match known {
                            Some(o) => o,
                            None => op.outcome(job, device).await?,
                        };
                        settled &= outcome != Outcome::Unfinished;
                        outcomes.insert(job.clone(), outcome.clone());
                        Submission::Acked(outcome)
                    }
                    Submitted::Unsure => Submission::Unsure,
                    Submitted::Refused(why) => Submission::Refused(why.clone()),
                };
                numbered.insert(n, submission);
            }
            // Read after the outcomes: an agent writes its run before it answers, so every run
            // whose outcome was just seen is in the file (read first, a command finishing in
            // between would look answered but never run).
            let executed = history::read_executed(&history::executed_path(&agent_dir)).map_err(fail)?;
            let events = history::read_events(&history::events_path(&agent_dir)).map_err(fail)?;
            let stored = op.stored_events(device).await?;
            let all_generated = events.sent.contains(&events_per_agent) || events_per_agent == 0;
            let stored_set: HashSet<u64> = stored.iter().copied().collect();
            let all_stored = events.sent.iter().all(|n| stored_set.contains(n));
            settled &= all_generated && all_stored;
            histories.push(DeviceHistory { device: device.clone(), submitted: numbered, executed, events, stored });
        }
        if settled || Instant::now() >= deadline {
            if !settled {
                eprintln!("orb crashcheck: still unsettled after {limit:?}; judging what there is");
            }
            return Ok(histories);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn print_report(args: &CrashArgs, plan: &Plan, kills: &Kills, r: &Report, took: f64) {
    if args.json {
        let json = serde_json::json!({
            "passed": r.passed(), "plan": plan, "kills": kills, "report": r, "seconds": took,
        });
        outln!("{json}");
        return;
    }
    outln!(
        "crashcheck, seed {}: {} agents, {} kill cycles (server killed {} times, agents {} times), {:.1} s",
        plan.seed,
        plan.agents,
        plan.cycles,
        kills.server,
        kills.agents,
        took
    );
    outln!(
        "  commands: {} acknowledged, {} unsure, {} refused; {} runs; {} interrupted ({} after running)",
        r.commands_acknowledged,
        r.commands_unsure,
        r.commands_refused,
        r.executions,
        r.interrupted,
        r.interrupted_after_running
    );
    outln!(
        "    lost {}, executed twice {}, reordered {}, unexpected {}",
        r.lost,
        r.executed_twice,
        r.reordered,
        r.unexpected
    );
    outln!(
        "  events: {} accepted by the outbox, {} unsure; {} stored",
        r.events_sent,
        r.events_unsure,
        r.events_stored
    );
    outln!(
        "    lost {}, stored twice {}, reordered {}, unexpected {}",
        r.events_lost,
        r.events_duplicated,
        r.events_reordered,
        r.events_unexpected
    );
    for e in &r.examples {
        outln!("  ! {e}");
    }
    outln!("{}", if r.passed() { "PASS" } else { "FAIL" });
}

fn secs(since: Instant) -> f64 {
    since.elapsed().as_secs_f64()
}

fn fail(m: String) -> Failure {
    Failure::new(exit::FAILED, format!("crashcheck: {m}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seed_fixes_the_kill_schedule_and_every_cycle_kills_something() {
        let draw = |seed| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            (0..50).map(|_| choose(&mut rng, 3)).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        for v in draw(9) {
            assert!(v.server || !v.agents.is_empty(), "{v:?}");
            assert!(v.agents.iter().all(|&i| i < 3));
        }
    }
}

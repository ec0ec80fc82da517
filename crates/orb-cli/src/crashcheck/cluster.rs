//! The processes under test: one `orb serve` on a fixed port with its data folder, and the
//! crash agents (`orb crashcheck-agent`), each with its own folder; killed with SIGKILL and
//! started again on the same port and folders.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::bench::proc::{ChildGuard, orb_exe};
use crate::exit::{self, Failure};

/// How long a start may take before the harness gives up.
const START: Duration = Duration::from_secs(30);

/// Who to kill in one cycle.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Victims {
    /// The server.
    pub server: bool,
    /// Indexes of agents.
    pub agents: Vec<usize>,
}

impl std::fmt::Display for Victims {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<String> = self.agents.iter().map(|i| agent_id(*i)).collect();
        if self.server {
            names.insert(0, "server".into());
        }
        f.write_str(&names.join(", "))
    }
}

/// The device id of agent `i`.
pub fn agent_id(i: usize) -> String {
    format!("crash-{}", i + 1)
}

/// What the processes need to start.
pub struct Setup {
    /// The folder holding `server/` and one folder per agent.
    pub dir: PathBuf,
    /// The server's agent port.
    pub port: u16,
    /// Admin token.
    pub admin: String,
    /// Agent token.
    pub agent_token: String,
    /// Agents.
    pub agents: usize,
    /// Events each agent sends.
    pub events_per_agent: u64,
    /// Milliseconds between an agent's events.
    pub event_every_ms: u64,
    /// Held commands one device may have (the server's `limits.max_queued_per_device`).
    pub max_queued: u64,
}

impl Setup {
    /// The server's URL.
    pub fn url(&self) -> String {
        format!("tcp://127.0.0.1:{}", self.port)
    }

    /// Agent `i`'s folder.
    pub fn agent_dir(&self, i: usize) -> PathBuf {
        self.dir.join(agent_id(i))
    }
}

/// The running processes.
pub struct Cluster {
    setup: Setup,
    server: Option<ChildGuard>,
    agents: Vec<Option<ChildGuard>>,
}

impl Cluster {
    /// Starts the server, then every agent, and waits until each agent is connected (so each
    /// has enrolled and saved its credential before any kill).
    pub fn start(setup: Setup) -> Result<Cluster, Failure> {
        let mut cluster = Cluster { agents: (0..setup.agents).map(|_| None).collect(), server: None, setup };
        cluster.server = Some(cluster.start_server()?);
        for i in 0..cluster.setup.agents {
            let agent = cluster.start_agent(i)?;
            tokio::task::block_in_place(|| agent.wait_line("connected", START))?;
            cluster.agents[i] = Some(agent);
        }
        Ok(cluster)
    }

    /// The setup it runs with.
    pub fn setup(&self) -> &Setup {
        &self.setup
    }

    /// SIGKILLs the victims.
    pub fn kill(&mut self, victims: &Victims) {
        if victims.server
            && let Some(mut s) = self.server.take()
        {
            s.kill();
        }
        for &i in &victims.agents {
            if let Some(mut a) = self.agents[i].take() {
                a.kill();
            }
        }
    }

    /// Starts again whatever is not running (the server first, waiting until it listens).
    pub fn restart(&mut self) -> Result<(), Failure> {
        if self.server.is_none() {
            self.server = Some(self.start_server()?);
        }
        for i in 0..self.agents.len() {
            if self.agents[i].is_none() {
                self.agents[i] = Some(self.start_agent(i)?);
            }
        }
        Ok(())
    }

    /// Fails when a process the harness did not kill has exited.
    pub fn check_alive(&mut self) -> Result<(), Failure> {
        if let Some(status) = self.server.as_mut().and_then(ChildGuard::exited) {
            return Err(fail(format!("the server exited by itself ({status})")));
        }
        for (i, agent) in self.agents.iter_mut().enumerate() {
            if let Some(status) = agent.as_mut().and_then(ChildGuard::exited) {
                return Err(fail(format!("{} exited by itself ({status})", agent_id(i))));
            }
        }
        Ok(())
    }

    fn start_server(&self) -> Result<ChildGuard, Failure> {
        let s = &self.setup;
        let mut cmd = Command::new(orb_exe()?);
        cmd.arg("serve")
            .args(["--listen", &format!("127.0.0.1:{}", s.port), "--http", "127.0.0.1:0"])
            .arg("--data")
            .arg(s.dir.join("server"))
            .args(["--admin-token", &s.admin, "--agent-token", &s.agent_token])
            .env("ORB_LOG", "error")
            .env("ORB_LIMITS__MAX_QUEUED_PER_DEVICE", s.max_queued.to_string())
            .env_remove("ORB_CONFIG");
        let child = ChildGuard::spawn(cmd, false)?;
        // The port is fixed: a restart right after a kill binds it again (SO_REUSEADDR).
        tokio::task::block_in_place(|| child.wait_line("orb server: agents tcp://", START))?;
        Ok(child)
    }

    fn start_agent(&self, i: usize) -> Result<ChildGuard, Failure> {
        let s = &self.setup;
        let mut cmd = Command::new(orb_exe()?);
        cmd.arg("crashcheck-agent")
            .args(["--server", &s.url(), "--token", &s.agent_token, "--id", &agent_id(i)])
            .arg("--data")
            .arg(s.agent_dir(i))
            .args(["--events", &s.events_per_agent.to_string()])
            .args(["--event-every-ms", &s.event_every_ms.to_string()])
            .env_remove("ORB_CONFIG");
        let child = ChildGuard::spawn(cmd, true)?;
        Ok(child)
    }
}

fn fail(m: String) -> Failure {
    Failure::new(exit::FAILED, format!("crashcheck: {m}"))
}

//! Settings the server pushes to `orb agent` (`welcome.config`, then `config` frames; decision
//! 0031), merged with the agent's own configuration and applied while it runs: the telemetry
//! plan (to `crate::telemetry`), the log filter, and the `exec` allow list (to the `exec`
//! handler). The last settings pushed are kept in the data folder (`pushed-settings.json`), so
//! an agent restarted while its server is unreachable keeps behaving as it was told. The
//! `agent.config` built-in answers [`Applier::effective`].

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use orb_client::Client;
use orb_proto::agent_config::AgentSettings;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::exec::Policy;
use crate::logging::LogHandle;
use crate::telemetry::Plan;

/// The file in the agent's data folder holding the last settings pushed.
pub const SAVED: &str = "pushed-settings.json";

/// The agent's own settings, which pushed ones override.
pub struct Local {
    /// `[telemetry]`.
    pub telemetry: Plan,
    /// `[log] level`.
    pub log_level: String,
    /// What fixed the log filter for this run (`ORB_LOG`, `-v`), if anything: then pushed
    /// levels are not applied.
    pub log_pinned_by: Option<&'static str>,
    /// `[exec] allow` as written.
    pub exec_allow: Vec<String>,
    /// The checked `[exec]` section (`None`: exec is off).
    pub exec: Option<Arc<Policy>>,
}

/// Applies pushed settings over [`Local`] ones.
pub struct Applier {
    local: Local,
    data: PathBuf,
    log: LogHandle,
    telemetry: watch::Sender<Plan>,
    exec: Option<watch::Sender<Arc<Policy>>>,
    pushed: Mutex<Arc<AgentSettings>>,
}

impl Applier {
    /// Starts from the local settings; [`Applier::telemetry`] and [`Applier::exec`] follow what
    /// is applied from then on.
    pub fn new(local: Local, data: PathBuf, log: LogHandle) -> Applier {
        let telemetry = watch::Sender::new(local.telemetry.clone());
        let exec = local.exec.clone().map(watch::Sender::new);
        Applier { local, data, log, telemetry, exec, pushed: Mutex::new(Arc::default()) }
    }

    /// The telemetry plan in force.
    pub fn telemetry(&self) -> watch::Receiver<Plan> {
        self.telemetry.subscribe()
    }

    /// The `exec` policy in force (`None`: exec is off).
    pub fn exec(&self) -> Option<watch::Receiver<Arc<Policy>>> {
        self.exec.as_ref().map(watch::Sender::subscribe)
    }

    /// Applies the settings saved by an earlier run, if any (a file that cannot be read or holds
    /// settings out of bounds is ignored, with a warning).
    pub fn load_saved(&self) {
        let path = self.data.join(SAVED);
        let text = match std::fs::read(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
            Err(e) => {
                tracing::warn!(file = %path.display(), "cannot read the saved server settings: {e}");
                return;
            }
        };
        match serde_json::from_slice::<AgentSettings>(&text) {
            Ok(s) => {
                tracing::info!(file = %path.display(), "applying the settings the server pushed last time");
                self.apply(Arc::new(s));
            }
            Err(e) => tracing::warn!(file = %path.display(), "ignoring the saved server settings: {e}"),
        }
    }

    /// Applies `pushed` (replacing what was pushed before) and saves it. Settings out of the
    /// protocol's bounds are refused as a whole: the ones before stay.
    pub fn apply(&self, pushed: Arc<AgentSettings>) {
        let mut current = self.pushed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if **current == *pushed {
            return;
        }
        if let Err(problems) = pushed.check() {
            tracing::warn!("ignoring settings pushed by the server: {}", problems.join("; "));
            return;
        }
        let plan = self.plan(&pushed);
        self.telemetry.send_if_modified(|p| {
            let changed = *p != plan;
            *p = plan;
            changed
        });
        if self.local.log_pinned_by.is_none() {
            let level = pushed.log_level.as_deref().unwrap_or(&self.local.log_level);
            if let Err(e) = self.log.set_filter(level) {
                tracing::warn!("cannot apply the log filter the server pushed: {e}");
            }
        }
        if let (Some(tx), Some(own)) = (&self.exec, &self.local.exec) {
            tx.send_replace(Arc::new(own.with_additions(&pushed.exec_allow)));
            if !own.accepts_additions() && !pushed.exec_allow.is_empty() {
                tracing::warn!(
                    patterns = pushed.exec_allow.len(),
                    "the server pushed exec_allow patterns; [exec] accept_server_additions is off, so they are ignored"
                );
            }
        }
        match serde_json::to_vec_pretty(&*pushed) {
            Ok(bytes) => {
                if let Err(e) = crate::private_file::write(&self.data, SAVED, &bytes) {
                    tracing::warn!("cannot save the pushed settings in {}: {e}", self.data.display());
                }
            }
            Err(e) => tracing::warn!("cannot encode the pushed settings: {e}"),
        }
        tracing::info!(settings = %serde_json::to_string(&*pushed).unwrap_or_default(), "applied settings pushed by the server");
        *current = pushed;
    }

    /// The telemetry plan `pushed` gives: its values where it has them, the agent's elsewhere.
    fn plan(&self, pushed: &AgentSettings) -> Plan {
        Plan {
            every: match pushed.telemetry_interval_ms {
                Some(0) => None,
                Some(ms) => Some(Duration::from_millis(ms)),
                None => self.local.telemetry.every,
            },
            metrics: pushed
                .telemetry_metrics
                .as_ref()
                .map_or_else(|| self.local.telemetry.metrics.clone(), |m| m.as_slice().into()),
        }
    }

    /// The effective configuration and where each part comes from (`agent.config`).
    pub fn effective(&self) -> serde_json::Value {
        let pushed = Arc::clone(&self.pushed.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        let source = |from_server: bool| if from_server { "server" } else { "agent" };
        let plan = self.plan(&pushed);
        let (level, level_source) = match (self.local.log_pinned_by, &pushed.log_level) {
            (Some(by), _) => (self.local.log_level.clone(), by),
            (None, Some(l)) => (l.clone(), "server"),
            (None, None) => (self.local.log_level.clone(), "agent"),
        };
        let accepts = self.local.exec.as_ref().is_some_and(|p| p.accepts_additions());
        let added: &[String] = if accepts { &pushed.exec_allow } else { &[] };
        serde_json::json!({
            "telemetry": {
                "interval_ms": plan.every.map(|d| d.as_millis() as u64),
                "interval_source": source(pushed.telemetry_interval_ms.is_some()),
                "metrics": &*plan.metrics,
                "metrics_source": source(pushed.telemetry_metrics.is_some()),
            },
            "log": {"level": level, "source": level_source},
            "exec": {
                "enabled": self.local.exec.is_some(),
                "allow": self.local.exec_allow,
                "server_additions": added,
                "accept_server_additions": accepts,
                "ignored_server_additions": if accepts { &[][..] } else { &pushed.exec_allow[..] },
            },
            "pushed": &*pushed,
        })
    }
}

/// Applies the settings of each connection as the server pushes them, until `stop`. Between
/// connections the last ones stay in force.
pub async fn follow(applier: Arc<Applier>, mut current: watch::Receiver<Option<Client>>, stop: CancellationToken) {
    loop {
        let client = current.borrow_and_update().clone();
        if let Some(client) = client {
            let mut settings = client.agent_settings();
            drop(client);
            applier.apply(settings.borrow_and_update().clone());
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    changed = settings.changed() => match changed {
                        Ok(()) => applier.apply(settings.borrow_and_update().clone()),
                        Err(_) => break,
                    },
                    changed = current.changed() => {
                        if changed.is_err() {
                            return;
                        }
                        break;
                    }
                }
            }
            continue;
        }
        tokio::select! {
            () = stop.cancelled() => return,
            changed = current.changed() => if changed.is_err() { return },
        }
    }
}

//! `orb crashcheck-agent`: the agent the crash checker starts, kills and restarts. A durable
//! agent on the client library (journal and outbox in `agent.db`) whose handler `crash.job`
//! records each run in its own `executed.log` before answering, and whose event generator sends
//! numbered `crash.event` messages through the outbox, recording `intend N` / `sent N` around
//! each send. It prints `connected` on stdout each time it is welcomed and runs until killed.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use clap::Args;
use orb_client::durable::{AgentStore, DurableLimits, Outbox};
use orb_client::{Backoff, ClientConfig, Context, Handlers, LinkEvent, Persistent, ServerUrl};
use orb_proto::{ErrorBody, ErrorCode};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::history::{self, AppendLog};
use crate::credentials::{self, Credentials};
use crate::exit::{self, Failure};

/// The command the harness submits.
pub const JOB: &str = "crash.job";
/// The outbox message the agent sends.
pub const EVENT: &str = "crash.event";

/// The numbered body of a [`JOB`] and of an [`EVENT`].
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Numbered {
    /// The number (per device, from 1).
    pub n: u64,
}

/// `orb crashcheck-agent` arguments (set by `orb crashcheck`).
#[derive(Debug, Args)]
pub struct CrashAgentArgs {
    /// The server.
    #[arg(long)]
    pub server: String,
    /// The agent token (used to enroll the first time).
    #[arg(long)]
    pub token: String,
    /// Device id.
    #[arg(long)]
    pub id: String,
    /// The agent's folder: agent.db, credentials, its logs.
    #[arg(long)]
    pub data: PathBuf,
    /// Events to send in all (across restarts).
    #[arg(long, default_value_t = 0)]
    pub events: u64,
    /// Milliseconds between two events.
    #[arg(long, default_value_t = 5)]
    pub event_every_ms: u64,
}

/// Runs until killed.
pub async fn run(args: CrashAgentArgs) -> Result<u8, Failure> {
    let fail = |m: String| Failure::new(exit::FAILED, format!("crashcheck-agent {}: {m}", args.id));
    let url = ServerUrl::parse(&args.server).map_err(|e| Failure::usage(e.to_string()))?;
    std::fs::create_dir_all(&args.data).map_err(|e| fail(e.to_string()))?;
    let saved = credentials::load(&args.data).map_err(fail)?;
    let mut base = ClientConfig::agent(url.clone(), None, args.id.clone());
    match saved {
        Some(c) => base.secret = Some(c.secret),
        None => base.token = Some(args.token.clone()),
    }
    base.enroll = base.secret.is_none();
    let store = AgentStore::open(&args.data.join("agent.db"), DurableLimits::default())
        .await
        .map_err(|e| fail(e.to_string()))?;
    let executed = AppendLog::open(&history::executed_path(&args.data)).map_err(|e| fail(e.to_string()))?;
    let handlers = job_handler(Arc::new(Mutex::new(executed)));
    let backoff = Backoff { min: Duration::from_millis(20), max: Duration::from_millis(250), give_up_after: None };
    let outbox = store.outbox().clone();
    let link = Persistent::new(base, vec![url], handlers, backoff).durable(store);

    let stop = CancellationToken::new();
    let generator = tokio::spawn(generate_events(outbox, args.data.clone(), args.events, args.event_every_ms));
    let data = args.data.clone();
    let linked = link.run(&stop, |event| match event {
        LinkEvent::Enrolled { url, id, secret } => {
            let c = Credentials { id, secret, server: Some(url), enrolled_at: None };
            if let Err(e) = credentials::save(&data, &c) {
                eprintln!("crashcheck-agent: cannot save the credential: {e}");
                stop.cancel();
            }
        }
        LinkEvent::Connected { .. } => println!("connected"),
        LinkEvent::Lost { .. } | LinkEvent::Failed { .. } => {}
    });
    // The generator ending well leaves the link running until the kill; only its failure ends the agent.
    let generating = async {
        match generator.await {
            Ok(Ok(())) => std::future::pending().await,
            Ok(Err(e)) => fail(e),
            Err(e) => fail(e.to_string()),
        }
    };
    tokio::select! {
        r = linked => Err(match r {
            Ok(()) => fail("stopped: the credential could not be saved".into()),
            Err(e) => fail(e.to_string()),
        }),
        failure = generating => Err(failure),
    }
}

/// `crash.job {"n": N}`: records the run (on disk) and answers `{"n": N}`.
fn job_handler(executed: Arc<Mutex<AppendLog>>) -> Handlers {
    Handlers::new().on(JOB, move |c: Context| {
        let executed = Arc::clone(&executed);
        async move {
            let job: Numbered = c.args()?;
            let record = tokio::task::spawn_blocking(move || {
                executed.lock().unwrap_or_else(std::sync::PoisonError::into_inner).record(&job.n.to_string())
            });
            match record.await {
                Ok(Ok(())) => Ok(serde_json::json!(job)),
                Ok(Err(e)) => Err(ErrorBody::new(ErrorCode::Internal, format!("cannot record the run: {e}"))),
                Err(e) => Err(ErrorBody::new(ErrorCode::Internal, format!("cannot record the run: {e}"))),
            }
        }
    })
}

/// Sends events `next..=total` through the outbox, one every `every_ms`, recording each
/// before and after; then returns.
async fn generate_events(outbox: Outbox, data: PathBuf, total: u64, every_ms: u64) -> Result<(), String> {
    let path = history::events_path(&data);
    let next = history::read_events(&path)?.next();
    let mut log = AppendLog::open(&path).map_err(|e| e.to_string())?;
    let mut tick = tokio::time::interval(Duration::from_millis(every_ms.max(1)));
    for n in next..=total {
        tick.tick().await;
        record(&mut log, &path, &format!("intend {n}"))?;
        let body = Bytes::from(serde_json::to_vec(&Numbered { n }).map_err(|e| e.to_string())?);
        outbox.send(EVENT, body).await.map_err(|e| format!("outbox: {e}"))?;
        record(&mut log, &path, &format!("sent {n}"))?;
    }
    Ok(())
}

fn record(log: &mut AppendLog, path: &Path, line: &str) -> Result<(), String> {
    log.record(line).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

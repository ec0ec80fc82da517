//! The harness's side of the wire: an operator connection that reconnects after each server
//! kill, the paced submitter of numbered `--ttl` commands (each recorded acknowledged or
//! unsure), and the reads of how jobs ended and which events the server stored.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use orb_client::{Client, ClientConfig, ClientError, JobRequest, ServerUrl};
use orb_proto::history::{JobDetail, JobRef};
use orb_proto::message::commands;
use orb_proto::registry::{DeviceMessage, MessagesQuery};
use orb_proto::{ErrorCode, Status};

use super::agent::{EVENT, JOB, Numbered};
use super::checker::Outcome;
use crate::exit::{self, Failure};

/// How long the harness keeps trying to reach a server that was just restarted.
const RECONNECT: Duration = Duration::from_secs(60);
/// How long one submit or query may take before it counts as unanswered.
const ANSWER: Duration = Duration::from_secs(10);
/// Each command's time to live: far beyond the run, so none may expire.
const TTL: Duration = Duration::from_secs(3600);
/// Each delivery's deadline.
const DEADLINE: Duration = Duration::from_secs(30);

/// What became of one submit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submitted {
    /// Acknowledged as job `id`.
    Acked(String),
    /// No answer (the connection died): the job may exist.
    Unsure,
    /// The server refused it: it must never run.
    Refused(String),
}

/// An operator connection made again whenever it breaks.
pub struct Operator {
    url: ServerUrl,
    token: String,
    client: Option<Client>,
}

impl Operator {
    /// Not connected yet.
    pub fn new(url: &str, token: &str) -> Result<Operator, Failure> {
        let url = ServerUrl::parse(url).map_err(|e| Failure::usage(e.to_string()))?;
        Ok(Operator { url, token: token.to_owned(), client: None })
    }

    /// The live connection, connecting (every 50 ms, for at most [`RECONNECT`]) when there is none.
    async fn client(&mut self) -> Result<Client, Failure> {
        if let Some(c) = self.client.as_ref().filter(|c| !c.is_closed()) {
            return Ok(c.clone());
        }
        let started = tokio::time::Instant::now();
        loop {
            let config = ClientConfig::operator(self.url.clone(), Some(self.token.clone()));
            match Client::connect(config, orb_client::Handlers::new()).await {
                Ok(c) => {
                    self.client = Some(c.clone());
                    return Ok(c);
                }
                Err(e) if started.elapsed() > RECONNECT => {
                    return Err(fail(format!("the server stayed unreachable for {RECONNECT:?}: {e}")));
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Forgets a connection that failed.
    fn broken(&mut self) {
        self.client = None;
    }

    /// Calls a server query, reconnecting and retrying (a few times) when the connection breaks.
    async fn query<A: serde::Serialize, T: serde::de::DeserializeOwned>(
        &mut self,
        cmd: &str,
        args: &A,
    ) -> Result<T, Failure> {
        let mut tries = 0;
        loop {
            let client = self.client().await?;
            match client.call_json(cmd, args, ANSWER).await {
                Ok(v) => return Ok(v),
                Err(ClientError::Remote(e)) => return Err(fail(format!("{cmd}: {e}"))),
                Err(e) if tries >= 20 => return Err(fail(format!("{cmd}: {e}"))),
                Err(_) => {
                    tries += 1;
                    self.broken();
                }
            }
        }
    }

    /// Submits commands 1..=`per_device` to every device in turn, one every `pace`.
    pub async fn submit_all(
        mut self,
        devices: Vec<String>,
        per_device: u64,
        pace: Duration,
    ) -> Result<Vec<BTreeMap<u64, Submitted>>, Failure> {
        let mut submitted = vec![BTreeMap::new(); devices.len()];
        let mut tick = tokio::time::interval(pace.max(Duration::from_micros(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        for n in 1..=per_device {
            for (d, device) in devices.iter().enumerate() {
                tick.tick().await;
                let outcome = self.submit_one(device, n).await?;
                submitted[d].insert(n, outcome);
            }
        }
        if let Some(c) = self.client.take() {
            c.close().await;
        }
        Ok(submitted)
    }

    /// Submits command `n` for `device`. A refusal for having too many jobs running (the
    /// server's per-requester limit; jobs stay running while their held commands wait for
    /// killed agents) is definite, so the same command is submitted again a little later.
    async fn submit_one(&mut self, device: &str, n: u64) -> Result<Submitted, Failure> {
        let args = Bytes::from(serde_json::to_vec(&Numbered { n }).map_err(|e| fail(e.to_string()))?);
        let started = tokio::time::Instant::now();
        loop {
            let client = self.client().await?;
            let request = JobRequest::new(device, JOB).args(args.clone()).deadline(DEADLINE).ttl(TTL);
            return Ok(match tokio::time::timeout(ANSWER, client.submit(request)).await {
                Ok(Ok(job)) => Submitted::Acked(job.id().to_owned()),
                Ok(Err(ClientError::Remote(e)))
                    if e.code == ErrorCode::TooManyJobs && started.elapsed() < RECONNECT =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
                Ok(Err(ClientError::Remote(e))) => Submitted::Refused(e.to_string()),
                Ok(Err(_)) | Err(_) => {
                    self.broken();
                    Submitted::Unsure
                }
            });
        }
    }

    /// How `device`'s target of job `id` ended so far.
    pub async fn outcome(&mut self, id: &str, device: &str) -> Result<Outcome, Failure> {
        let detail: JobDetail = self.query(commands::JOBS_SHOW, &JobRef { id: id.to_owned() }).await?;
        let Some(result) = detail.results.iter().find(|r| r.device == device) else {
            return Ok(Outcome::Unfinished);
        };
        let code = result.error.as_ref().map(|e| e.code.clone());
        Ok(match (result.status, code) {
            (Status::Ok, _) => Outcome::Ok,
            (Status::Error, Some(ErrorCode::Interrupted)) => Outcome::Interrupted,
            (Status::Queued, _) => Outcome::Unfinished,
            (status, Some(code)) => Outcome::Other(format!("{}/{}", status.as_str(), code.as_str())),
            (status, None) => Outcome::Other(status.as_str().to_owned()),
        })
    }

    /// The numbers of the events the server stored for `device`, oldest first.
    pub async fn stored_events(&mut self, device: &str) -> Result<Vec<u64>, Failure> {
        let query = MessagesQuery { id: device.to_owned(), limit: Some(MessagesQuery::MAX_LIMIT) };
        let messages: Vec<DeviceMessage> = self.query(commands::DEVICES_MESSAGES, &query).await?;
        messages
            .iter()
            .map(|m| {
                let body = m.body.as_ref().map_or("null", |b| b.get());
                match serde_json::from_str::<Numbered>(body) {
                    Ok(e) if m.command == EVENT => Ok(e.n),
                    _ => Err(fail(format!("{device} stored an unexpected message: {} {body}", m.command))),
                }
            })
            .collect()
    }

    /// Closes the connection.
    pub async fn close(mut self) {
        if let Some(c) = self.client.take() {
            c.close().await;
        }
    }
}

fn fail(m: String) -> Failure {
    Failure::new(exit::FAILED, format!("crashcheck: {m}"))
}

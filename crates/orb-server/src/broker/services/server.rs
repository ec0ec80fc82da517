//! Services about the server itself: information and counters, its Prometheus metrics, selector
//! dry runs, and admin messages for the process that embeds it (`orb signal`).

use std::time::Duration;

use orb_proto::message::{ResolveQuery, Resolved, ServerInfo, SignalRequest};
use orb_proto::{ErrorBody, ErrorCode, PROTOCOL_VERSION};
use tokio::sync::oneshot;

use super::rfc3339;
use crate::admin::{AdminMessage, AdminRequest};
use crate::broker::{Action, Audited, Broker};
use crate::identity::Requester;
use crate::metrics::Sampled;

/// The server's software name and version, as sent in `welcome`.
pub const SERVER_NAME: &str = concat!("orb/", env!("CARGO_PKG_VERSION"));

/// How long `orb signal` waits for the embedding process to act on a message.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a scrape waits for the store's count of held commands (the gauges keep their last
/// values when it takes longer).
const HELD_COUNT_TIMEOUT: Duration = Duration::from_secs(2);

impl Broker {
    /// `$orb.server.info`: version, connections, known devices, jobs in flight, close counts.
    ///
    /// # Errors
    /// `forbidden`.
    pub fn server_info(&self, who: &Requester) -> Result<ServerInfo, ErrorBody> {
        self.policy().check(&who.identity, &Action::Query { name: "$orb.server.info" })?;
        let (agents, operators) = self.sessions().counts();
        Ok(ServerInfo {
            server: SERVER_NAME.to_owned(),
            version: PROTOCOL_VERSION,
            agents,
            operators,
            devices_known: self.registry().counts().0,
            jobs_in_flight: self.jobs().in_flight() as u64,
            started_at: rfc3339(self.stats().started_at()),
            closed: self.stats().close_counts().into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            draining: self.is_draining(),
        })
    }

    /// The Prometheus text exposition of the server's metrics (`GET /metrics`), with the gauges
    /// read now: devices known, jobs in flight, subscriptions, retained publications, held
    /// commands (one store query), queued frames of device sessions, close counts.
    pub async fn metrics_text(&self) -> String {
        let held = match tokio::time::timeout(HELD_COUNT_TIMEOUT, self.registry().store().queue_counts()).await {
            Ok(Ok(counts)) => Some(counts.values().fold((0, 0, 0), |(queued, in_flight, bytes), c| {
                (queued + c.queued, in_flight + c.in_flight, bytes + c.bytes)
            })),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "metrics: cannot count held commands");
                None
            }
            Err(_) => {
                tracing::debug!("metrics: the count of held commands took too long");
                None
            }
        };
        let (retained_topics, retained_bytes) = self.retained();
        let (outbound_frames, outbound_bytes) = self.sessions().queued();
        let sampled = Sampled {
            closed: self.stats().closed(),
            devices_known: self.registry().counts().0,
            jobs_in_flight: self.jobs().in_flight() as u64,
            subscriptions: self.subscriptions() as u64,
            retained_topics: retained_topics as u64,
            retained_bytes: retained_bytes as u64,
            held,
            outbound_frames,
            outbound_bytes,
            draining: self.is_draining(),
        };
        self.metrics().render(&sampled)
    }

    /// `$orb.selector.resolve`: the devices a job on this selector would target; nothing is sent.
    ///
    /// # Errors
    /// `forbidden`, `bad_selector`, `unknown_group`.
    pub fn resolve_selector(&self, who: &Requester, q: &ResolveQuery) -> Result<Resolved, ErrorBody> {
        self.policy().check(&who.identity, &Action::Query { name: "$orb.selector.resolve" })?;
        let sel = self.parse_selector(&q.selector)?;
        let devices = self.resolve(&sel).into_iter().map(|t| t.id.to_string()).collect();
        let canonical =
            orb_proto::Selector::parse(&q.selector).map(|s| s.to_string()).unwrap_or_else(|_| q.selector.clone());
        Ok(Resolved { selector: canonical, devices })
    }

    /// `$orb.signal`: `PING` is answered here; `QUIT`, `RELOAD` and `LOG_ROTATE` are handed to
    /// the process embedding the server, which answers.
    ///
    /// # Errors
    /// `forbidden`, `bad_args` (unknown message), `unsupported` (nobody takes admin messages),
    /// `timeout`, or the embedding process's answer.
    pub async fn signal(&self, who: &Requester, req: SignalRequest) -> Result<serde_json::Value, ErrorBody> {
        let signal = orb_proto::excerpt(&req.message).to_ascii_uppercase();
        let result: Result<serde_json::Value, ErrorBody> = async {
            self.policy().check(&who.identity, &Action::Signal)?;
            let message = match req.message.to_ascii_uppercase().as_str() {
                "PING" => {
                    let (agents, operators) = self.sessions().counts();
                    return Ok(serde_json::json!({
                        "pong": true,
                        "agents": agents,
                        "operators": operators,
                        "jobs_in_flight": self.jobs().in_flight(),
                        "draining": self.is_draining(),
                    }));
                }
                "QUIT" => AdminMessage::Quit,
                "RELOAD" => AdminMessage::Reload,
                "LOG_ROTATE" => AdminMessage::LogRotate,
                other => {
                    return Err(ErrorBody::new(
                        ErrorCode::BadArgs,
                        format!("unknown signal '{}'; use QUIT, RELOAD, LOG_ROTATE or PING", orb_proto::excerpt(other)),
                    ));
                }
            };
            let (reply, answer) = oneshot::channel();
            let unavailable = || ErrorBody::new(ErrorCode::Unsupported, "this server does not handle admin messages");
            self.admin_tx().try_send(AdminRequest { message, params: req.params, reply }).map_err(|_| unavailable())?;
            match tokio::time::timeout(ANSWER_TIMEOUT, answer).await {
                Ok(Ok(result)) => result,
                Ok(Err(_)) => Err(unavailable()),
                Err(_) => Err(ErrorBody::new(ErrorCode::Timeout, "the server did not act on the message in time")),
            }
        }
        .await;
        if signal != "PING" {
            self.audit(who, Audited::Signal, &signal, serde_json::Value::Null, &result);
        }
        result
    }
}

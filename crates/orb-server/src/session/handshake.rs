//! The handshake of a wire session: the first frame must be a `hello` (JSON) within the
//! handshake timeout; it is checked against the protocol's limits, the server's rate of new agent
//! sessions, the enrollment rate of its address and the authenticator, the device is registered,
//! and the `welcome` (or an `error` and a close reason) is the answer. The welcome is queued
//! before the session is registered, so nothing routed to the session can reach the client ahead
//! of it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use orb_io::transport::{FrameSource, LinkStats, TransportError, WrongProtocol};
use orb_proto::message::{Hello, Role, Welcome};
use orb_proto::{Codec, Envelope, ErrorBody, ErrorCode, Kind, MIN_PROTOCOL_VERSION, PROTOCOL_VERSION};
use tokio::time::Instant;

use super::run::{Registered, Session};
use super::{Peer, Shared, error_frame, goodbye, refusal_reason};
use crate::broker::services::{rfc3339, server::SERVER_NAME};
use crate::close::CloseReason;
use crate::identity::{Identity, Requester};
use crate::metrics::RateLimit;
use crate::router::delivery::Outbox;
use crate::router::sessions::{DeviceRecord, DeviceSession};

/// Why a handshake failed: the close reason and the frame to send last, with its kind.
pub(super) type Refusal = (CloseReason, Option<(Kind, Bytes)>);

fn refuse(e: ErrorBody) -> Refusal {
    (refusal_reason(&e.code), Some((Kind::Error, error_frame(Codec::Json, e))))
}

/// Waits for the `hello` and answers it.
pub(super) async fn handshake<R: FrameSource>(
    shared: &Arc<Shared>,
    source: &mut R,
    outbox: &Outbox,
    peer: Peer,
    stats: Arc<LinkStats>,
) -> Result<Session, Refusal> {
    let broker = &shared.broker;
    let limits = broker.limits();
    let hello = read_hello(shared, source, limits.handshake_timeout, &stats).await?;
    let will = hello.will.clone();
    // The hello is held to the protocol's limits (tags, commands, lengths) before anything else
    // looks at it.
    hello.check().map_err(refuse)?;
    if !(MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&hello.version) {
        let msg = format!(
            "protocol version {} is not supported (this server speaks {MIN_PROTOCOL_VERSION} to {PROTOCOL_VERSION})",
            hello.version
        );
        return Err(refuse(ErrorBody::new(ErrorCode::UnsupportedVersion, msg)));
    }
    // An agent's hello takes one of the new agent sessions the server admits per second before
    // anything costly (authentication may write to the store), and gives it back unless it
    // authenticates: hellos without valid credentials cannot keep the fleet out (the failed-auth
    // limiter deals with them). The role is the hello's claim until then; operator hellos are not
    // counted (a false claim fails authentication).
    let agent_session = match hello.role {
        Role::Agent => broker
            .admission()
            .agent_session(limits.agent_connections_per_second, Instant::now())
            .inspect_err(|_| broker.metrics().rate_limited(RateLimit::Connections))
            .map_err(refuse)?,
        Role::Operator => None,
    };
    // An agent's schemas are compiled (and so checked) once it holds an admitted session, before
    // anything is registered: a hello refused here has changed nothing. Operators declare none.
    let schemas = match hello.role {
        Role::Agent => compile_schemas(&hello).map_err(refuse)?,
        Role::Operator => Default::default(),
    };
    let registry = broker.registry();
    // A hello that would register a new device id counts against its address's enrollment rate.
    // (A device with a verified client certificate is vouched for by the client CA: not counted.)
    let enrolls = hello.role == Role::Agent
        && hello.secret.is_none()
        && peer.credentials.client_cert.is_none()
        && hello.id.as_deref().is_none_or(|id| registry.get(id).is_none());
    if enrolls {
        broker.admission().enroll(peer.addr.ip(), limits.enrollments_per_ip, Instant::now()).map_err(refuse)?;
    }
    // A custom authenticator may do I/O: it gets the handshake timeout too.
    let authenticated =
        tokio::time::timeout(limits.handshake_timeout, shared.auth.authenticate_peer(&hello, &peer.credentials))
            .await
            .unwrap_or_else(|_| Err(ErrorBody::new(ErrorCode::HandshakeTimeout, "authentication took too long")));
    let principal = match authenticated {
        Ok(p) => {
            if let Some(token) = agent_session {
                token.keep();
            }
            p
        }
        Err(e) => {
            // Given back now, not after the failed-auth penalty's wait.
            drop(agent_session);
            // A wrong credential counts against its address (slowed, then `rate_limited`).
            if e.code == ErrorCode::AuthFailed {
                return Err(refuse(broker.admission().refuse_failed_auth(peer.addr.ip(), &limits, e).await));
            }
            return Err(refuse(e));
        }
    };
    // The registry knows every device that connects (an authenticator other than the default
    // registers nothing itself); a revoked one is refused whatever authenticated it.
    let known = match &principal.device {
        Some(id) if principal.role == Role::Agent => Some(match registry.get(id.as_str()) {
            Some(k) if k.revoked => return Err(refuse(crate::registry::revoked(id.as_str()))),
            Some(k) => k,
            None => registry.add(id, None, Default::default()).await.map_err(refuse)?,
        }),
        _ => None,
    };
    let now = chrono::Utc::now();

    // The codec of every frame after the welcome, both ways; the first the client listed that we speak.
    let codec = Codec::negotiate(&hello.codecs);
    let announced = if hello.codecs.is_empty() { String::new() } else { codec.as_str().to_owned() };
    let outbox = Outbox { codec, ..outbox.clone() };
    let identity = match (&principal.role, &principal.device) {
        (Role::Agent, Some(id)) => Identity::device(id.clone()),
        _ => match (&principal.token, principal.access) {
            (Some(token), Some(access)) => Identity::token(token, access),
            _ => Identity {
                name: format!("op-{}", outbox.conn),
                role: principal.role,
                device: None,
                access: principal.access,
                token: None,
            },
        },
    };
    // A last will is published as this client: it must be allowed to publish there.
    if let Some(will) = &will {
        broker.policy().check(&identity, &crate::broker::Action::Publish { topic: &will.topic }).map_err(refuse)?;
        if will.retain {
            broker.policy().check(&identity, &crate::broker::Action::Retain { topic: &will.topic }).map_err(refuse)?;
        }
    }
    // What the `[[fleet.agents]]` rules tell this device, judged by the tags its hello reports
    // (the registry takes them only below).
    let settings = match (&identity.device, &known) {
        (Some(id), Some(k)) => broker.agent_settings_for(&crate::broker::HelloSubject {
            id: id.as_str(),
            operator_tags: &k.operator_tags,
            reported_tags: &hello.tags,
        }),
        _ => orb_proto::agent_config::AgentSettings::default(),
    };
    let settings_told = crate::broker::settings_digest(&settings);
    let welcome = Welcome {
        version: hello.version,
        id: identity.name.clone(),
        session: outbox.conn,
        heartbeat_ms: millis(limits.heartbeat),
        heartbeat_timeout_ms: millis(limits.heartbeat_timeout),
        max_frame: limits.max_frame as u64,
        server: SERVER_NAME.to_owned(),
        codec: announced,
        secret: principal.issued_secret.clone(),
        known: known.as_ref().is_some_and(|k| k.first_seen.is_some()),
        first_seen: known.as_ref().map(|k| rfc3339(k.first_seen.unwrap_or(now))),
        config: (!settings.is_empty()).then_some(settings),
    };
    // The welcome itself is JSON, so the client can read the choice before switching. Nothing
    // else can be queued yet: the session is not registered.
    let frame = orb_proto::encode(&Envelope::new(Kind::Welcome).with_json_body(&welcome));
    let len = frame.len();
    if outbox.reply(frame).is_ok() {
        broker.metrics().sent(Kind::Welcome, len);
    }
    let sessions = broker.sessions();
    let (registered, record) = match identity.device.clone() {
        Some(id) => {
            tracing::Span::current().record("agent.id", id.as_str());
            let record = Arc::new(DeviceRecord {
                id: id.clone(),
                conn: outbox.conn,
                remote_addr: peer.addr,
                connected_since: now,
                transport: peer.transport,
                rtt_us: std::sync::atomic::AtomicU64::new(0),
                stats: Arc::clone(&stats),
                durable: hello.durable,
                settings_told: std::sync::Mutex::new(settings_told),
            });
            let registration = sessions.register(DeviceSession { outbox: outbox.clone(), record: Arc::clone(&record) });
            registry.connected(orb_store::Connection {
                id: id.to_string(),
                at: now,
                remote_addr: peer.addr.to_string(),
                user_agent: peer.user_agent.or_else(|| hello.agent.clone()),
                agent_version: hello.agent,
                commands: hello.commands,
                schemas,
                reported_tags: hello.tags,
                transport: peer.transport.to_owned(),
            });
            // Revoked or removed between the check above and the registration: close now.
            match registry.get(id.as_str()) {
                None => outbox.closer.close(CloseReason::Removed),
                Some(k) if k.revoked => outbox.closer.close(CloseReason::Revoked),
                Some(k) => {
                    broker.publish_presence(&id, None);
                    // Rules reloaded since the welcome was written reach the device now.
                    broker.push_agent_settings(&id);
                    broker.deliver_held(id.clone());
                    if k.commands.iter().any(|c| c == orb_proto::message::commands::SCHEDULES_SYNC) {
                        broker.sync_agent_schedules(Some(id.clone()));
                    }
                }
            }
            (Registered::Device(registration), Some(record))
        }
        None => (Registered::Operator { _guard: sessions.register_operator() }, None),
    };
    tracing::debug!(name = identity.name, codec = codec.as_str(), "session established");
    let mut session = Session::new(
        Arc::clone(shared),
        outbox,
        Requester::new(identity).from_addr(peer.transport, peer.addr),
        registered,
        record,
        stats,
    );
    session.will = will;
    Ok(session)
}

/// Compiles the JSON Schemas a hello declares (already held to their limits by
/// [`Hello::check`]): the schemas as values, to keep with the declared commands.
///
/// # Errors
/// `bad_request` naming the first command whose schema is not a valid JSON Schema, and why.
fn compile_schemas(hello: &Hello) -> Result<std::collections::BTreeMap<String, serde_json::Value>, ErrorBody> {
    hello
        .schemas
        .iter()
        .map(|(name, raw)| {
            orb_io::schema::ArgsSchema::parse(raw.0.get()).map(|s| (name.clone(), s.source().clone())).map_err(|e| {
                let msg = format!("hello schema for '{}' {e}", orb_proto::excerpt(name).escape_debug());
                ErrorBody::new(ErrorCode::BadRequest, orb_proto::bounded(msg))
            })
        })
        .collect()
}

/// Reads the first frame and decodes it as a `hello`.
async fn read_hello<R: FrameSource>(
    shared: &Shared,
    source: &mut R,
    timeout: Duration,
    stats: &LinkStats,
) -> Result<Hello, Refusal> {
    let first = tokio::select! {
        () = tokio::time::sleep(timeout) => {
            let msg = format!("no hello within {} ms", timeout.as_millis());
            return Err(refuse(ErrorBody::new(ErrorCode::HandshakeTimeout, msg)));
        }
        () = shared.broker.shutdown_token().cancelled() => {
            let bye = goodbye(CloseReason::ServerShutdown, Codec::Json).map(|f| (Kind::Bye, f));
            return Err((CloseReason::ServerShutdown, bye));
        }
        f = source.next_frame() => f,
    };
    let frame = match first {
        Ok(Some(f)) => f,
        Ok(None) | Err(TransportError::Io(_)) => return Err((CloseReason::PeerClosed, None)),
        Err(e @ TransportError::FrameTooLarge { .. }) => {
            return Err(refuse(ErrorBody::new(ErrorCode::FrameTooLarge, e.to_string())));
        }
        Err(e @ TransportError::Protocol(_)) => return Err(refuse(ErrorBody::new(ErrorCode::BadFrame, e.to_string()))),
        // An HTTP or WebSocket client on the TCP port: told so in HTTP (the TCP transport writes
        // this answer as it is; counted as the error it is).
        Err(TransportError::Http(WrongProtocol::Request)) => {
            return Err((
                CloseReason::ProtocolViolation,
                Some((Kind::Error, orb_io::sniff::bad_request(orb_io::sniff::TCP_PORT_ANSWER))),
            ));
        }
        Err(e @ TransportError::Http(_)) => return Err(refuse(ErrorBody::new(ErrorCode::BadFrame, e.to_string()))),
    };
    stats.received(frame.len());
    // The hello is JSON whatever the client will ask for.
    let env = orb_proto::decode(&frame);
    let kind = env.as_ref().map_or(Kind::Unknown, |env| env.kind);
    shared.broker.metrics().received(kind, frame.len());
    let env = env.map_err(|e| refuse(ErrorBody::new(ErrorCode::BadFrame, e.to_string())))?;
    if env.kind != Kind::Hello {
        let msg = format!("the first frame must be hello, not {}", env.kind.as_str());
        return Err(refuse(ErrorBody::new(ErrorCode::HandshakeRequired, msg)));
    }
    env.json_body().map_err(refuse)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

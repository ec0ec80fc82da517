//! A permanent connection: connect to the first reachable of several servers, reconnect with
//! exponential backoff and full jitter when the link drops, reset the backoff after a success,
//! and give up only when told to. `orb agent` runs on this; the live [`Client`] is published
//! through a watch channel for code that sends commands. When a welcome issues a device secret
//! (enrollment), later attempts connect with that id and secret instead of the shared token, and
//! the caller hears of it ([`LinkEvent::Enrolled`]) before anything else, so it can save it.
//! A server refusing the device's credential is skipped like an unreachable one (a backup may
//! have its own store); only a full round of such refusals, or an operator ending the session
//! (`bye` `revoked` / `removed`), stops the link for good.

use std::time::Duration;

use orb_proto::{ErrorBody, ErrorCode};
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::client::{Client, ClientConfig};
use crate::durable::{AgentStore, LocalSchedules};
use crate::error::ClientError;
use crate::url::ServerUrl;
use orb_io::clock::Clock;
use orb_io::handler::Context;
use orb_io::handler::Handlers;
use orb_proto::message::commands;
use orb_proto::schedule::AgentSchedules;

/// Reconnect timing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Shortest delay between attempts.
    pub min: Duration,
    /// Longest delay between attempts (also the delay after `auth_failed`).
    pub max: Duration,
    /// Stop after this long without a connection; `None` never stops.
    pub give_up_after: Option<Duration>,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff { min: Duration::from_millis(250), max: Duration::from_secs(30), give_up_after: None }
    }
}

impl Backoff {
    /// The delay before attempt `n` (0-based): uniform in `[min, min(max, min·2ⁿ)]` ("full jitter"
    /// above the floor), so a fleet reconnecting after an outage spreads out.
    pub fn delay(&self, n: u32, rng: &mut impl Rng) -> Duration {
        let cap = self.min.saturating_mul(1u32.checked_shl(n.min(31)).unwrap_or(u32::MAX)).min(self.max);
        if cap <= self.min {
            return self.min;
        }
        let span = (cap - self.min).as_micros() as u64;
        self.min + Duration::from_micros(rng.random_range(0..=span))
    }
}

/// What happened to the link, for logging (and, for [`LinkEvent::Enrolled`], for keeping).
#[derive(Clone)]
pub enum LinkEvent {
    /// The server registered this device and issued its secret (sent once, just before the
    /// matching `Connected`). The caller must store it: the shared token no longer connects as
    /// this id. Later attempts of this [`Persistent`] already use it.
    Enrolled {
        /// The server that enrolled it.
        url: String,
        /// The device id (the server's choice when the hello had none).
        id: String,
        /// The device secret.
        secret: String,
    },
    /// Connected and welcomed.
    Connected {
        /// The server.
        url: String,
        /// Id the server confirmed.
        id: String,
        /// The server knew this device before this connection.
        known: bool,
        /// RFC 3339 UTC time the server first saw this device, when it says.
        first_seen: Option<String>,
    },
    /// A live connection closed. A reconnect follows, except after reason `revoked` or `removed`
    /// (an operator ended the session), when [`Persistent::run`] returns an error.
    Lost {
        /// The server.
        url: String,
        /// Why.
        reason: String,
    },
    /// An attempt failed; the next one follows after `retry_in`.
    Failed {
        /// The server tried.
        url: String,
        /// What went wrong.
        error: String,
        /// The server's code when it refused the hello (`auth_failed`, `id_taken`, ...).
        code: Option<ErrorCode>,
        /// Delay before the next attempt.
        retry_in: Duration,
    },
}

impl std::fmt::Debug for LinkEvent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            // Never print the secret.
            LinkEvent::Enrolled { url, id, .. } => {
                f.debug_struct("Enrolled").field("url", url).field("id", id).finish_non_exhaustive()
            }
            LinkEvent::Connected { url, id, known, first_seen } => f
                .debug_struct("Connected")
                .field("url", url)
                .field("id", id)
                .field("known", known)
                .field("first_seen", first_seen)
                .finish(),
            LinkEvent::Lost { url, reason } => {
                f.debug_struct("Lost").field("url", url).field("reason", reason).finish()
            }
            LinkEvent::Failed { url, error, code, retry_in } => f
                .debug_struct("Failed")
                .field("url", url)
                .field("error", error)
                .field("code", code)
                .field("retry_in", retry_in)
                .finish(),
        }
    }
}

/// A connection that keeps itself up.
pub struct Persistent {
    base: ClientConfig,
    urls: Vec<ServerUrl>,
    handlers: Handlers,
    backoff: Backoff,
    current: watch::Sender<Option<Client>>,
    /// The agent's journal, outbox and local schedules, when it has a data folder.
    store: Option<AgentStore>,
    /// What time it is, for the local schedules.
    clock: Clock,
}

impl Persistent {
    /// `urls` are tried in order (backups after the first); `base` supplies everything else.
    ///
    /// # Panics
    /// When `urls` is empty.
    pub fn new(base: ClientConfig, urls: Vec<ServerUrl>, handlers: Handlers, backoff: Backoff) -> Persistent {
        assert!(!urls.is_empty(), "a persistent connection needs at least one server");
        Persistent {
            base,
            urls,
            handlers,
            backoff,
            current: watch::channel(None).0,
            store: None,
            clock: Clock::system(),
        }
    }

    /// Makes the link durable with `store`: every connection journals held commands (so a
    /// redelivered one never runs twice) and flushes the outbox while it lives; the agent-local
    /// schedules the server syncs (`$orb.schedules.sync`, declared in the hello) are kept there
    /// and fire while [`Persistent::run`] runs, connected or not.
    #[must_use]
    pub fn durable(mut self, store: AgentStore) -> Persistent {
        self.base.journal = Some(store.journal().clone());
        self.store = Some(store);
        self
    }

    /// Reads the time for the local schedules from `clock` (tests drive it with paused time).
    #[must_use]
    pub fn clock(mut self, clock: Clock) -> Persistent {
        self.clock = clock;
        self
    }

    /// The live connection, `None` while disconnected.
    pub fn current(&self) -> watch::Receiver<Option<Client>> {
        self.current.subscribe()
    }

    /// Keeps the connection up until `stop` is cancelled (then returns `Ok` with the connection
    /// still open, so the caller can drain it) or until giving up.
    ///
    /// # Errors
    /// - the last error when `give_up_after` passed without a connection;
    /// - at once when a server refuses the hello for a reason retrying cannot fix (`bad_id`,
    ///   `unsupported_version`, `bad_request`);
    /// - when every server of a full round, one after the other, refused this device's
    ///   credential (`id_taken`: the id has its own secret; `revoked`; `device_not_found`). A
    ///   refusal by one server alone moves on to the next, like a connection failure: backups may
    ///   have their own store, where the device is known;
    /// - at once when an operator ends the live session: a `bye` with reason `revoked` gives
    ///   [`ClientError::Remote`] with code `revoked`, reason `removed` one with `device_not_found`.
    ///
    /// `auth_failed` (which is also what a server answers a device secret it does not accept,
    /// whether the id is unknown, revoked or the secret wrong) is retried every `backoff.max`;
    /// `rate_limited` (the server admits new agent sessions at a limited rate) with the growing,
    /// jittered backoff, like a connection failure.
    pub async fn run(&self, stop: &CancellationToken, mut events: impl FnMut(LinkEvent)) -> Result<(), ClientError> {
        // A Send rng: this future runs on any worker thread.
        let mut rng = rand::rngs::StdRng::from_rng(&mut rand::rng());
        let mut attempt: u32 = 0;
        let mut index = 0usize;
        let mut since = Instant::now();
        // Servers in a row that refused this device's credential (see `credential_refused`).
        let mut refusals = 0usize;
        // Changes once, when a welcome issues a device secret.
        let mut base = self.base.clone();
        // A durable agent runs its local schedules for as long as the link runs, connected or not.
        let mut handlers = self.handlers.clone();
        let _local_schedules = self.store.as_ref().map(|store| {
            handlers = with_schedule_sync(handlers.clone(), store.schedules().clone(), self.clock.clone());
            let local = stop.child_token();
            let (schedules, outbox, clock) = (store.schedules().clone(), store.outbox().clone(), self.clock.clone());
            let (own, firing) = (self.handlers.clone(), local.clone());
            tokio::spawn(async move { schedules.run(own, outbox, clock, firing).await });
            local.drop_guard()
        });
        loop {
            let url = self.urls[index].clone();
            let config = ClientConfig { url: url.clone(), ..base.clone() };
            let result = tokio::select! {
                () = stop.cancelled() => return Ok(()),
                r = Client::connect(config, handlers.clone()) => r,
            };
            let delay = match result {
                Ok(client) => {
                    attempt = 0;
                    refusals = 0;
                    let welcome = client.welcome();
                    if let Some(secret) = &welcome.secret {
                        base = enrolled(base, &welcome.id, secret);
                        events(LinkEvent::Enrolled {
                            url: url.to_string(),
                            id: welcome.id.clone(),
                            secret: secret.clone(),
                        });
                    }
                    events(LinkEvent::Connected {
                        url: url.to_string(),
                        id: welcome.id.clone(),
                        known: welcome.known,
                        first_seen: welcome.first_seen.clone(),
                    });
                    self.current.send_replace(Some(client.clone()));
                    // Ends by itself when the connection closes.
                    if let Some(store) = &self.store {
                        let (outbox, client) = (store.outbox().clone(), client.clone());
                        tokio::spawn(async move { outbox.flush(&client).await });
                    }
                    let reason = tokio::select! {
                        () = stop.cancelled() => return Ok(()),
                        r = client.closed() => r,
                    };
                    self.current.send_replace(None);
                    since = Instant::now();
                    let ended = ended_by_operator(&reason);
                    events(LinkEvent::Lost { url: url.to_string(), reason });
                    if let Some(e) = ended {
                        return Err(e);
                    }
                    // The server's hint (e.g. during its restart), else a short jittered pause.
                    client.reconnect_hint().unwrap_or_else(|| self.backoff.delay(0, &mut rng))
                }
                Err(e) => {
                    if e.code().is_some_and(fatal_at_once) {
                        return Err(e);
                    }
                    // Another server may have its own store: a credential one server refuses may
                    // be good on the next. Only a refusal by every server in a row is final.
                    if e.code().is_some_and(credential_refused) {
                        refusals += 1;
                        if refusals >= self.urls.len() {
                            return Err(e);
                        }
                    } else {
                        refusals = 0;
                    }
                    if let Some(limit) = self.backoff.give_up_after
                        && since.elapsed() >= limit
                    {
                        return Err(e);
                    }
                    let refused = matches!(e.code(), Some(ErrorCode::AuthFailed | ErrorCode::Forbidden));
                    // Try the next address at once; pause only after every address failed.
                    index = (index + 1) % self.urls.len();
                    let delay = if refused {
                        self.backoff.max
                    } else if index != 0 {
                        Duration::ZERO
                    } else {
                        let d = self.backoff.delay(attempt, &mut rng);
                        attempt = attempt.saturating_add(1);
                        d
                    };
                    // Never sleep past the moment we would give up.
                    let delay = match self.backoff.give_up_after {
                        Some(limit) => delay.min(limit.saturating_sub(since.elapsed())),
                        None => delay,
                    };
                    events(LinkEvent::Failed {
                        url: url.to_string(),
                        error: e.to_string(),
                        code: e.code().cloned(),
                        retry_in: delay,
                    });
                    delay
                }
            };
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                () = tokio::time::sleep(delay) => {}
            }
        }
    }
}

/// Refusals that no retry can fix.
fn fatal_at_once(code: &ErrorCode) -> bool {
    matches!(code, ErrorCode::BadId | ErrorCode::UnsupportedVersion | ErrorCode::BadRequest | ErrorCode::IdMismatch)
}

/// `handlers` with the one the server calls to set this device's local schedules
/// (`$orb.schedules.sync`: the whole set, kept in `schedules`).
fn with_schedule_sync(handlers: Handlers, schedules: LocalSchedules, clock: Clock) -> Handlers {
    handlers.on(commands::SCHEDULES_SYNC, move |c: Context| {
        let (schedules, clock) = (schedules.clone(), clock.clone());
        async move {
            let set: AgentSchedules = c.args()?;
            let kept = schedules
                .sync(set.version, &set.schedules, clock.now())
                .await
                .map_err(|e| ErrorBody::new(ErrorCode::Internal, format!("the local schedules were not kept: {e}")))?;
            Ok(match kept {
                Some(n) => serde_json::json!({ "schedules": n }),
                None => serde_json::json!({ "stale": true }),
            })
        }
    })
}

/// Refusals of this device's credential by one server, which another server (with another store)
/// may still accept.
fn credential_refused(code: &ErrorCode) -> bool {
    matches!(code, ErrorCode::IdTaken | ErrorCode::Revoked | ErrorCode::DeviceNotFound)
}

/// The error to stop with when the server closed the live session because an operator revoked
/// (`bye` reason `revoked`) or removed (`removed`) this device; `None` for any other reason.
fn ended_by_operator(reason: &str) -> Option<ClientError> {
    let (code, what) = match reason {
        "revoked" => (ErrorCode::Revoked, "an operator revoked this device's credential"),
        "removed" => (ErrorCode::DeviceNotFound, "an operator removed this device from the registry"),
        _ => return None,
    };
    Some(ClientError::Remote(ErrorBody::new(code, format!("{what}; the server ended its session"))))
}

/// The configuration for every later attempt once the server issued `secret` for `id`: that id
/// and secret, no shared token, nothing more to enroll.
fn enrolled(base: ClientConfig, id: &str, secret: &str) -> ClientConfig {
    ClientConfig { id: Some(id.to_owned()), secret: Some(secret.to_owned()), token: None, enroll: false, ..base }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn delays_grow_then_cap_and_stay_above_the_floor() {
        let b = Backoff { min: Duration::from_millis(100), max: Duration::from_secs(2), give_up_after: None };
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for n in 0..40 {
            let d = b.delay(n, &mut rng);
            assert!(d >= b.min && d <= b.max, "attempt {n}: {d:?}");
            let cap = Duration::from_millis(100u64.saturating_mul(1 << n.min(20))).min(b.max);
            assert!(d <= cap, "attempt {n}: {d:?} above {cap:?}");
        }
        assert_eq!(b.delay(0, &mut rng), b.min);
    }

    #[tokio::test]
    async fn an_issued_secret_is_reported_first_and_used_for_every_later_attempt() {
        use crate::client::scripted::Scripted;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url: ServerUrl = format!("tcp://{}", listener.local_addr().unwrap()).parse().unwrap();
        let base = ClientConfig { id: None, ..ClientConfig::agent(url.clone(), Some("shared".into()), "unused") };
        let backoff = Backoff { min: Duration::from_millis(1), max: Duration::from_millis(10), give_up_after: None };
        let link = Persistent::new(base, vec![url], Handlers::new(), backoff);
        let server = tokio::spawn(async move {
            let mut first = Scripted::accept(&listener).await;
            let h = first.hello.clone();
            assert!(h.enroll && h.id.is_none() && h.secret.is_none(), "{h:?}");
            assert_eq!(h.token.as_deref(), Some("shared"));
            first.welcome("dev-7", Some("s3cret")).await;
            drop(first); // the link drops; the agent reconnects
            let mut second = Scripted::accept(&listener).await;
            let h = second.hello.clone();
            assert_eq!(
                (h.id.as_deref(), h.secret.as_deref(), h.token.as_deref()),
                (Some("dev-7"), Some("s3cret"), None)
            );
            second.refuse(ErrorCode::Revoked).await;
        });
        let stop = CancellationToken::new();
        let mut events = Vec::new();
        let run = link.run(&stop, |e| events.push(e));
        let err = tokio::time::timeout(Duration::from_secs(10), run).await.unwrap().unwrap_err();
        server.await.unwrap();
        assert_eq!(err.code(), Some(&ErrorCode::Revoked), "with one server, its refusal is final: {err}");
        let kinds: Vec<String> = events.iter().map(|e| format!("{e:?}")).collect();
        assert!(
            matches!(&events[0], LinkEvent::Enrolled { id, secret, .. } if id == "dev-7" && secret == "s3cret"),
            "{kinds:?}"
        );
        assert!(matches!(&events[1], LinkEvent::Connected { id, known: false, .. } if id == "dev-7"), "{kinds:?}");
        assert!(matches!(&events[2], LinkEvent::Lost { .. }), "{kinds:?}");
        assert_eq!(events.len(), 3, "{kinds:?}");
        assert!(!kinds.join(" ").contains("s3cret"), "Debug never shows the secret: {kinds:?}");
    }

    async fn listen() -> (tokio::net::TcpListener, ServerUrl) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("tcp://{}", listener.local_addr().unwrap()).parse().unwrap();
        (listener, url)
    }

    /// A link for device `dev-1` holding a secret, fast backoff, over `urls`.
    fn device_link(urls: Vec<ServerUrl>) -> Persistent {
        let base = enrolled(ClientConfig::agent(urls[0].clone(), None, "dev-1"), "dev-1", "s3cret");
        let backoff = Backoff { min: Duration::from_millis(1), max: Duration::from_millis(10), give_up_after: None };
        Persistent::new(base, urls, Handlers::new(), backoff)
    }

    /// Runs `link` until it connects (within 10 s): every event it reported.
    async fn run_until_connected(link: &Persistent) -> Vec<LinkEvent> {
        let stop = CancellationToken::new();
        let mut events = Vec::new();
        let run = link.run(&stop, |e| {
            if matches!(e, LinkEvent::Connected { .. }) {
                stop.cancel();
            }
            events.push(e);
        });
        tokio::time::timeout(Duration::from_secs(10), run).await.unwrap().unwrap();
        events
    }

    /// The failed attempts among `events`: their codes and the wait before the next.
    fn failures(events: &[LinkEvent]) -> Vec<(Option<ErrorCode>, Duration)> {
        events
            .iter()
            .filter_map(|e| match e {
                LinkEvent::Failed { code, retry_in, .. } => Some((code.clone(), *retry_in)),
                _ => None,
            })
            .collect()
    }

    fn describe(events: &[LinkEvent]) -> Vec<String> {
        events.iter().map(|e| format!("{e:?}")).collect()
    }

    #[tokio::test]
    async fn a_credential_refused_by_one_server_tries_the_next_and_only_a_full_round_of_refusals_is_final() {
        use crate::client::scripted::Scripted;
        let (a, url_a) = listen().await;
        let (b, url_b) = listen().await;
        let link = device_link(vec![url_a, url_b]);
        let server = tokio::spawn(async move {
            // Enrolled on A; A restarts with another store: B (which knows it) takes over.
            let mut s = Scripted::accept(&a).await;
            assert_eq!(s.hello.secret.as_deref(), Some("s3cret"));
            s.welcome("dev-1", None).await;
            drop(s);
            Scripted::accept(&a).await.refuse(ErrorCode::DeviceNotFound).await;
            let mut s = Scripted::accept(&b).await;
            s.welcome("dev-1", None).await;
            drop(s);
            // Refusals separated by a failure that is not a refusal are not a full round.
            Scripted::accept(&b).await.refuse(ErrorCode::IdTaken).await;
            drop(Scripted::accept(&a).await); // closes during the handshake
            Scripted::accept(&b).await.refuse(ErrorCode::Revoked).await;
            let mut s = Scripted::accept(&a).await;
            s.welcome("dev-1", None).await;
            drop(s);
            // Now A, then B: every server refused in a row, so the agent stops.
            Scripted::accept(&a).await.refuse(ErrorCode::IdTaken).await;
            Scripted::accept(&b).await.refuse(ErrorCode::Revoked).await;
        });
        let stop = CancellationToken::new();
        let mut events = Vec::new();
        let run = link.run(&stop, |e| events.push(e));
        let err = tokio::time::timeout(Duration::from_secs(10), run).await.unwrap().unwrap_err();
        server.await.unwrap();
        assert_eq!(err.code(), Some(&ErrorCode::Revoked), "the last refusal: {err}");
        let connected = events.iter().filter(|e| matches!(e, LinkEvent::Connected { .. })).count();
        assert_eq!(connected, 3, "{:?}", describe(&events));
        let codes: Vec<Option<ErrorCode>> = events
            .iter()
            .filter_map(|e| match e {
                LinkEvent::Failed { code, .. } => Some(code.clone()),
                _ => None,
            })
            .collect();
        assert_eq!(
            codes,
            [
                Some(ErrorCode::DeviceNotFound),
                Some(ErrorCode::IdTaken),
                None,
                Some(ErrorCode::Revoked),
                Some(ErrorCode::IdTaken)
            ],
            "{:?}",
            describe(&events)
        );
    }

    #[tokio::test]
    async fn bad_id_is_final_at_once_even_with_a_backup_server() {
        use crate::client::scripted::Scripted;
        let (a, url_a) = listen().await;
        let (_b, url_b) = listen().await;
        let link = device_link(vec![url_a, url_b]);
        let server = tokio::spawn(async move { Scripted::accept(&a).await.refuse(ErrorCode::BadId).await });
        let mut events = Vec::new();
        let stop = CancellationToken::new();
        let run = link.run(&stop, |e| events.push(e));
        let err = tokio::time::timeout(Duration::from_secs(10), run).await.unwrap().unwrap_err();
        server.await.unwrap();
        assert_eq!(err.code(), Some(&ErrorCode::BadId), "{err}");
        assert!(events.is_empty(), "{:?}", describe(&events));
    }

    #[tokio::test]
    async fn a_session_ended_by_revoke_or_remove_stops_the_link_with_the_matching_code() {
        use crate::client::scripted::Scripted;
        for (reason, code) in [("revoked", ErrorCode::Revoked), ("removed", ErrorCode::DeviceNotFound)] {
            // A backup server would accept it: the operator's decision stands anyway.
            let (a, url_a) = listen().await;
            let (b, url_b) = listen().await;
            let link = device_link(vec![url_a, url_b]);
            let server = tokio::spawn(async move {
                let mut s = Scripted::accept(&a).await;
                s.welcome("dev-1", None).await;
                s.bye(reason).await;
                // Keep both ends open until the client has reacted.
                let next = tokio::time::timeout(Duration::from_millis(300), async {
                    tokio::select! { _ = a.accept() => (), _ = b.accept() => () }
                });
                assert!(next.await.is_err(), "{reason}: no reconnect");
                drop(s);
            });
            let mut events = Vec::new();
            let stop = CancellationToken::new();
            let run = link.run(&stop, |e| events.push(e));
            let err = tokio::time::timeout(Duration::from_secs(10), run).await.unwrap().unwrap_err();
            assert_eq!(err.code(), Some(&code), "{reason}: {err}");
            assert!(matches!(&err, ClientError::Remote(_)), "{err:?}");
            assert!(
                matches!(events.last(), Some(LinkEvent::Lost { reason: r, .. }) if r == reason),
                "{:?}",
                describe(&events)
            );
            assert!(link.current().borrow().is_none(), "no live client is published after the stop");
            server.await.unwrap();
        }
    }

    #[tokio::test]
    async fn a_rate_limited_hello_is_retried_with_the_growing_backoff_not_given_up() {
        use crate::client::scripted::Scripted;
        let (a, url_a) = listen().await;
        let link = device_link(vec![url_a]);
        let server = tokio::spawn(async move {
            for _ in 0..3 {
                Scripted::accept(&a).await.refuse(ErrorCode::RateLimited).await;
            }
            let mut s = Scripted::accept(&a).await;
            s.welcome("dev-1", None).await;
            s
        });
        let events = run_until_connected(&link).await;
        drop(server.await.unwrap());
        let failed = failures(&events);
        assert_eq!(failed.len(), 3, "{:?}", describe(&events));
        assert!(failed.iter().all(|(c, _)| *c == Some(ErrorCode::RateLimited)), "{:?}", describe(&events));
        // The jittered exponential backoff (not the fixed delay of a refused credential): the first
        // retry waits the floor.
        assert_eq!(failed[0].1, Duration::from_millis(1), "{:?}", describe(&events));
        assert!(matches!(events.last(), Some(LinkEvent::Connected { .. })), "{:?}", describe(&events));
    }

    #[tokio::test]
    async fn a_refused_secret_is_retried_after_backoff_max() {
        use crate::client::scripted::Scripted;
        let (a, url_a) = listen().await;
        let link = device_link(vec![url_a]);
        let server = tokio::spawn(async move {
            Scripted::accept(&a).await.refuse(ErrorCode::AuthFailed).await;
            Scripted::accept(&a).await.refuse(ErrorCode::AuthFailed).await;
            let mut s = Scripted::accept(&a).await;
            s.welcome("dev-1", None).await;
            s
        });
        let events = run_until_connected(&link).await;
        drop(server.await.unwrap());
        let failed = failures(&events);
        let max = Duration::from_millis(10);
        assert_eq!(
            failed,
            [(Some(ErrorCode::AuthFailed), max), (Some(ErrorCode::AuthFailed), max)],
            "{:?}",
            describe(&events)
        );
    }
}

//! A permanent connection: connect to the first reachable of several servers, reconnect with
//! exponential backoff and full jitter when the link drops, reset the backoff after a success,
//! and give up only when told to. `orb agent` runs on this; the live [`Client`] is published
//! through a watch channel for code that sends commands. When a welcome issues a device secret
//! (enrollment), later attempts connect with that id and secret instead of the shared token, and
//! the caller hears of it ([`LinkEvent::Enrolled`]) before anything else, so it can save it.

use std::time::Duration;

use orb_proto::ErrorCode;
use rand::{Rng, SeedableRng};
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::client::{Client, ClientConfig};
use crate::error::ClientError;
use crate::handler::Handlers;
use crate::url::ServerUrl;

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
    /// A live connection closed.
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
            LinkEvent::Failed { url, error, retry_in } => {
                f.debug_struct("Failed").field("url", url).field("error", error).field("retry_in", retry_in).finish()
            }
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
}

impl Persistent {
    /// `urls` are tried in order (backups after the first); `base` supplies everything else.
    ///
    /// # Panics
    /// When `urls` is empty.
    pub fn new(base: ClientConfig, urls: Vec<ServerUrl>, handlers: Handlers, backoff: Backoff) -> Persistent {
        assert!(!urls.is_empty(), "a persistent connection needs at least one server");
        Persistent { base, urls, handlers, backoff, current: watch::channel(None).0 }
    }

    /// The live connection, `None` while disconnected.
    pub fn current(&self) -> watch::Receiver<Option<Client>> {
        self.current.subscribe()
    }

    /// Keeps the connection up until `stop` is cancelled (then returns `Ok` with the connection
    /// still open, so the caller can drain it) or until giving up.
    ///
    /// # Errors
    /// The last error when `give_up_after` passed without a connection, or at once when the
    /// server refuses the hello for a reason retrying cannot fix (`bad_id`, `unsupported_version`,
    /// `id_taken`: the id has its own secret, `revoked`: an operator disabled it).
    pub async fn run(&self, stop: &CancellationToken, mut events: impl FnMut(LinkEvent)) -> Result<(), ClientError> {
        // A Send rng: this future runs on any worker thread.
        let mut rng = rand::rngs::StdRng::from_rng(&mut rand::rng());
        let mut attempt: u32 = 0;
        let mut index = 0usize;
        let mut since = Instant::now();
        // Changes once, when a welcome issues a device secret.
        let mut base = self.base.clone();
        loop {
            let url = self.urls[index].clone();
            let config = ClientConfig { url: url.clone(), ..base.clone() };
            let result = tokio::select! {
                () = stop.cancelled() => return Ok(()),
                r = Client::connect(config, self.handlers.clone()) => r,
            };
            let delay = match result {
                Ok(client) => {
                    attempt = 0;
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
                    let reason = tokio::select! {
                        () = stop.cancelled() => return Ok(()),
                        r = client.closed() => r,
                    };
                    self.current.send_replace(None);
                    since = Instant::now();
                    events(LinkEvent::Lost { url: url.to_string(), reason });
                    // The server's hint (e.g. during its restart), else a short jittered pause.
                    client.reconnect_hint().unwrap_or_else(|| self.backoff.delay(0, &mut rng))
                }
                Err(e) => {
                    let fatal = matches!(
                        e.code(),
                        Some(
                            ErrorCode::BadId
                                | ErrorCode::UnsupportedVersion
                                | ErrorCode::BadRequest
                                | ErrorCode::IdTaken
                                | ErrorCode::Revoked
                                | ErrorCode::DeviceNotFound
                        )
                    );
                    if fatal {
                        return Err(e);
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
                    events(LinkEvent::Failed { url: url.to_string(), error: e.to_string(), retry_in: delay });
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
        assert_eq!(err.code(), Some(&ErrorCode::Revoked), "revoked is fatal at once: {err}");
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
}

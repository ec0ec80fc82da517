//! Admission: who may hold a connection (total and per-address limits, counted once per
//! connection whichever port it came in on), how fast one address may enroll new devices, and how
//! fast agents may start sessions server-wide. A [`ConnectionGuard`] holds a connection's place
//! until it is dropped. Failed authentications per address are counted by `failed_auth` (the
//! failed-auth limiter). `Bucket` is the token bucket of these rates and of each session's
//! message rate (`crate::session`).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::DashMap;
use orb_proto::{ErrorBody, ErrorCode};
use tokio::time::Instant;

use super::failed_auth::FailedAuth;
use crate::config::Limits;

/// Addresses remembered by the enrollment limiter before idle ones are forgotten.
const ENROLL_TABLE_MAX: usize = 10_000;
/// The connection-rate limiter warns at most this often while it refuses hellos.
const WARN_EVERY: Duration = Duration::from_secs(60);

/// Connection counts and the enrollment and connection-rate limiters.
#[derive(Default)]
pub struct Admission {
    connections: AtomicUsize,
    per_ip: DashMap<IpAddr, usize>,
    enrollments: Mutex<HashMap<IpAddr, Bucket>>,
    agent_sessions: Mutex<AgentSessions>,
    failed_auth: FailedAuth,
}

/// The server-wide rate of new agent sessions: its bucket (created full at the first hello) and
/// when the last warning about it was logged.
#[derive(Default)]
struct AgentSessions {
    bucket: Option<Bucket>,
    warned: Option<Instant>,
}

/// A token bucket holding at most `rate` tokens (a second's worth: bursts of `rate`), refilled at
/// `rate` a second. The rate is passed to every call, so a reloaded limit applies at once.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bucket {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// A full bucket at `now`.
    pub(crate) fn full(rate: f64, now: Instant) -> Bucket {
        Bucket { tokens: rate, at: now }
    }

    /// The tokens there would be at `now`.
    fn level(&self, rate: f64, now: Instant) -> f64 {
        (self.tokens + now.saturating_duration_since(self.at).as_secs_f64() * rate).min(rate)
    }

    /// Takes one token at `now`; without one, `Err` is how long until there is one.
    pub(crate) fn take(&mut self, rate: f64, now: Instant) -> Result<(), Duration> {
        self.tokens = self.level(rate, now);
        self.at = now;
        if self.tokens < 1.0 {
            return Err(Duration::from_secs_f64((1.0 - self.tokens) / rate));
        }
        self.tokens -= 1.0;
        Ok(())
    }

    /// Gives back a token taken for something that did not happen.
    fn give_back(&mut self, rate: f64) {
        self.tokens = (self.tokens + 1.0).min(rate);
    }
}

impl Admission {
    /// Admits a connection from `ip` under the total and per-address limits of `limits`.
    ///
    /// # Errors
    /// `too_many_connections` naming the limit that was hit.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, limits: &Limits) -> Result<ConnectionGuard, ErrorBody> {
        let total = self.connections.fetch_add(1, Ordering::Relaxed) + 1;
        let at_ip = {
            let mut n = self.per_ip.entry(ip).or_insert(0);
            *n += 1;
            *n
        };
        let guard = ConnectionGuard { admission: Arc::clone(self), ip };
        if limits.max_connections > 0 && total > limits.max_connections {
            return Err(ErrorBody::new(
                ErrorCode::TooManyConnections,
                format!("the server holds its maximum of {} connections", limits.max_connections),
            ));
        }
        if limits.max_connections_per_ip > 0 && at_ip > limits.max_connections_per_ip {
            return Err(ErrorBody::new(
                ErrorCode::TooManyConnections,
                format!("{ip} holds the maximum of {} connections per address", limits.max_connections_per_ip),
            ));
        }
        Ok(guard)
    }

    /// Answers a refused credential from `ip`: counted against `limits.auth_failures_per_ip`,
    /// it is `refusal` (at once, or after a second once the address failed often) or
    /// `rate_limited` once the address failed too often (see `failed_auth`).
    pub async fn refuse_failed_auth(&self, ip: IpAddr, limits: &Limits, refusal: ErrorBody) -> ErrorBody {
        self.failed_auth.refuse(ip, limits.auth_failures_per_ip, refusal).await
    }

    /// Connections held now.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::Relaxed)
    }

    /// Takes one enrollment (a new device id registered) for `ip`: at most `per_second` a second
    /// on average, in bursts of up to `per_second` (0: unlimited).
    ///
    /// # Errors
    /// `rate_limited` when the address enrolled too many devices just now.
    pub fn enroll(&self, ip: IpAddr, per_second: u32, now: Instant) -> Result<(), ErrorBody> {
        if per_second == 0 {
            return Ok(());
        }
        let rate = f64::from(per_second);
        let mut table = self.enrollments.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if table.len() >= ENROLL_TABLE_MAX {
            // Forget addresses whose bucket has refilled: they are as good as new.
            table.retain(|_, b| b.level(rate, now) < rate);
        }
        table.entry(ip).or_insert_with(|| Bucket::full(rate, now)).take(rate, now).map_err(|wait| {
            ErrorBody::new(
                ErrorCode::RateLimited,
                format!(
                    "{ip} enrolled more than {per_second} new devices per second; try again in {} ms",
                    wait.as_millis().max(1)
                ),
            )
        })
    }

    /// Takes one of the new agent sessions the server admits per second (`per_second`, in bursts
    /// of as many; 0: unlimited), for an agent's hello. The token is given back when the returned
    /// [`AgentSessionToken`] drops without [`AgentSessionToken::keep`]: a hello refused before it
    /// authenticated does not use up the agents' rate (hellos without valid credentials are the
    /// failed-auth limiter's).
    ///
    /// # Errors
    /// `rate_limited` when agents started more sessions than that just now.
    pub fn agent_session(&self, per_second: u32, now: Instant) -> Result<Option<AgentSessionToken<'_>>, ErrorBody> {
        if per_second == 0 {
            return Ok(None);
        }
        let rate = f64::from(per_second);
        let mut state = self.agent_sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let taken = state.bucket.get_or_insert_with(|| Bucket::full(rate, now)).take(rate, now);
        match taken {
            Ok(()) => Ok(Some(AgentSessionToken { admission: self, rate, kept: false })),
            Err(wait) => {
                if state.warned.is_none_or(|at| now.saturating_duration_since(at) >= WARN_EVERY) {
                    state.warned = Some(now);
                    tracing::warn!(
                        limit = per_second,
                        "agents start more than {per_second} sessions a second: their hellos are refused with \
                         rate_limited and retried by the agents (counted in orb_rate_limited_total; logged at most \
                         once a minute)"
                    );
                }
                Err(ErrorBody::new(
                    ErrorCode::RateLimited,
                    format!(
                        "the server admits at most {per_second} new agent sessions per second; try again in {} ms or \
                         later",
                        wait.as_millis().max(1)
                    ),
                ))
            }
        }
    }
}

/// One new agent session's token of the connection rate, given back on drop unless kept.
#[must_use = "dropped, the token is given back"]
pub struct AgentSessionToken<'a> {
    admission: &'a Admission,
    rate: f64,
    kept: bool,
}

impl AgentSessionToken<'_> {
    /// The hello authenticated: the session counts against the rate.
    pub fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for AgentSessionToken<'_> {
    fn drop(&mut self) {
        if !self.kept {
            let mut state = self.admission.agent_sessions.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some(bucket) = &mut state.bucket {
                bucket.give_back(self.rate);
            }
        }
    }
}

/// Holds one admitted connection's place in the connection limits; released on drop.
pub struct ConnectionGuard {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.admission.connections.fetch_sub(1, Ordering::Relaxed);
        self.admission.per_ip.remove_if_mut(&self.ip, |_, n| {
            *n -= 1;
            *n == 0
        });
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn limits_count_every_connection_once_and_release_on_drop() {
        let a = Arc::new(Admission::default());
        let limits = Limits { max_connections: 2, max_connections_per_ip: 1, ..Limits::default() };
        let (x, y) = ("127.0.0.1".parse().unwrap(), "127.0.0.2".parse().unwrap());
        let g1 = a.admit(x, &limits).unwrap();
        assert_eq!(a.admit(x, &limits).err().unwrap().code, ErrorCode::TooManyConnections);
        let _g2 = a.admit(y, &limits).unwrap();
        assert_eq!(a.connections(), 2);
        drop(g1);
        assert!(a.admit(x, &limits).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn enrollments_are_limited_per_address_and_refill() {
        let a = Admission::default();
        let (x, y): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let now = Instant::now();
        for _ in 0..5 {
            a.enroll(x, 5, now).unwrap();
        }
        assert_eq!(a.enroll(x, 5, now).unwrap_err().code, ErrorCode::RateLimited);
        a.enroll(y, 5, now).unwrap();
        a.enroll(x, 5, now + Duration::from_millis(250)).unwrap();
        assert!(a.enroll(x, 0, now).is_ok(), "0 is unlimited");
    }

    #[tokio::test(start_paused = true)]
    async fn a_bucket_holds_a_second_and_says_how_long_to_wait() {
        let now = Instant::now();
        let mut b = Bucket::full(4.0, now);
        for _ in 0..4 {
            b.take(4.0, now).unwrap();
        }
        let ms = |d: Duration| (d.as_secs_f64() * 1e3).round();
        assert_eq!(b.take(4.0, now).map_err(ms), Err(250.0));
        assert_eq!(b.take(4.0, now + Duration::from_millis(100)).map_err(ms), Err(150.0));
        b.take(4.0, now + Duration::from_millis(250)).unwrap();
        // An idle bucket fills up to one second's worth, no more.
        let later = now + Duration::from_secs(60);
        assert!((0..4).all(|_| b.take(4.0, later).is_ok()));
        assert!(b.take(4.0, later).is_err());
        b.give_back(4.0);
        b.take(4.0, later).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn agent_sessions_are_limited_server_wide_refunded_unless_kept_and_refill() {
        let a = Admission::default();
        let now = Instant::now();
        a.agent_session(2, now).unwrap().unwrap().keep();
        // A hello refused before it authenticated gives its token back.
        drop(a.agent_session(2, now).unwrap().unwrap());
        a.agent_session(2, now).unwrap().unwrap().keep();
        let refused = a.agent_session(2, now).err().unwrap();
        assert_eq!(refused.code, ErrorCode::RateLimited);
        assert!(refused.message.contains("try again in 500 ms"), "{}", refused.message);
        assert!(a.agent_session(2, now + Duration::from_millis(400)).is_err());
        a.agent_session(2, now + Duration::from_millis(500)).unwrap().unwrap().keep();
        assert!(a.agent_session(0, now).unwrap().is_none(), "0 is unlimited");
    }
}

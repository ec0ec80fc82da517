//! Admission: who may hold a connection (total and per-address limits, counted once per
//! connection whichever port it came in on) and how fast one address may enroll new devices.
//! A [`ConnectionGuard`] holds a connection's place until it is dropped. Failed authentications
//! per address are counted by `failed_auth` (the failed-auth limiter).

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

/// Connection counts and the enrollment limiter.
#[derive(Default)]
pub struct Admission {
    connections: AtomicUsize,
    per_ip: DashMap<IpAddr, usize>,
    enrollments: Mutex<HashMap<IpAddr, Bucket>>,
    failed_auth: FailedAuth,
}

/// A token bucket: `tokens` left, refilled at the configured rate.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
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
            table.retain(|_, b| b.tokens + now.saturating_duration_since(b.at).as_secs_f64() * rate < rate);
        }
        let bucket = table.entry(ip).or_insert(Bucket { tokens: rate, at: now });
        bucket.tokens = (bucket.tokens + now.saturating_duration_since(bucket.at).as_secs_f64() * rate).min(rate);
        bucket.at = now;
        if bucket.tokens < 1.0 {
            let wait = Duration::from_secs_f64((1.0 - bucket.tokens) / rate);
            return Err(ErrorBody::new(
                ErrorCode::RateLimited,
                format!(
                    "{ip} enrolled more than {per_second} new devices per second; try again in {} ms",
                    wait.as_millis().max(1)
                ),
            ));
        }
        bucket.tokens -= 1.0;
        Ok(())
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
}

//! Failed authentications per source address (issue 15): every refused credential adds one to
//! its address's level, which drains at the configured rate per minute. Past half the rate, the
//! refusal waits a second before it is sent; past the rate, failing attempts are answered
//! `rate_limited` (after the same second) until the level drains. Credentials are always checked
//! first and valid ones are always admitted, so one bad device behind a site's NAT cannot lock the
//! site out. Logging is per episode: the first failure of an address and the moment it is
//! refused, not every attempt. The table is bounded (`TABLE_MAX` addresses).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use orb_proto::{ErrorBody, ErrorCode};
use tokio::time::Instant;

/// Addresses remembered before idle ones are forgotten.
const TABLE_MAX: usize = 10_000;
/// How long a slowed or refused failure waits before its answer.
pub(crate) const PENALTY: Duration = Duration::from_secs(1);
/// The level is capped at this many times the rate, so an address that stops failing is
/// admitted to fail again within two minutes at most.
const CAP: f64 = 2.0;

/// What a failed authentication costs its address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Penalty {
    /// Answered at once with the refusal it earned.
    None,
    /// Answered after [`PENALTY`] with the refusal it earned.
    Slowed,
    /// Answered after [`PENALTY`] with `rate_limited` instead (the given error).
    Refused(ErrorBody),
}

/// One address's recent failures.
#[derive(Debug, Clone, Copy)]
struct Level {
    failures: f64,
    at: Instant,
    refused: bool,
}

/// The table of addresses that failed recently.
#[derive(Default)]
pub(crate) struct FailedAuth {
    table: Mutex<HashMap<IpAddr, Level>>,
}

impl FailedAuth {
    /// Counts one failed authentication from `ip` against `per_minute` (0: no limit) and says
    /// what it costs.
    pub(crate) fn failed(&self, ip: IpAddr, per_minute: u32, now: Instant) -> Penalty {
        if per_minute == 0 {
            return Penalty::None;
        }
        let rate = f64::from(per_minute);
        let drain = |l: &Level| (l.failures - now.saturating_duration_since(l.at).as_secs_f64() * rate / 60.0).max(0.0);
        let mut table = self.table.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if table.len() >= TABLE_MAX && !table.contains_key(&ip) {
            table.retain(|_, l| drain(l) > 0.0);
            if table.len() >= TABLE_MAX
                && let Some(lowest) = table.iter().min_by(|a, b| drain(a.1).total_cmp(&drain(b.1))).map(|(k, _)| *k)
            {
                table.remove(&lowest);
            }
        }
        let level = table.entry(ip).or_insert(Level { failures: 0.0, at: now, refused: false });
        let first = level.failures == 0.0;
        level.failures = (drain(level) + 1.0).min(rate * CAP);
        level.at = now;
        if first {
            tracing::info!(peer.ip = %ip, "authentication failed");
        }
        if level.failures > rate {
            if !level.refused {
                level.refused = true;
                tracing::warn!(
                    peer.ip = %ip,
                    limit = per_minute,
                    "more than {per_minute} failed authentications a minute: further failing attempts are refused \
                     (valid credentials are still admitted); not logged again until it stops"
                );
            }
            let msg = format!(
                "too many failed authentications from {ip} (more than {per_minute} a minute); wait and check the credential"
            );
            return Penalty::Refused(ErrorBody::new(ErrorCode::RateLimited, msg));
        }
        if level.failures <= rate / 2.0 {
            level.refused = false;
        }
        if level.failures > rate / 2.0 { Penalty::Slowed } else { Penalty::None }
    }

    /// Applies the penalty of a failed authentication from `ip`: waits if it is slowed or
    /// refused, and answers the refusal to send (`refusal`, or `rate_limited`).
    pub(crate) async fn refuse(&self, ip: IpAddr, per_minute: u32, refusal: ErrorBody) -> ErrorBody {
        match self.failed(ip, per_minute, Instant::now()) {
            Penalty::None => refusal,
            Penalty::Slowed => {
                tokio::time::sleep(PENALTY).await;
                refusal
            }
            Penalty::Refused(e) => {
                tokio::time::sleep(PENALTY).await;
                e
            }
        }
    }

    /// Addresses remembered now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.table.lock().unwrap_or_else(std::sync::PoisonError::into_inner).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap_or_else(|_| unreachable!())
    }

    #[tokio::test(start_paused = true)]
    async fn failures_are_free_then_slowed_then_refused_and_drain() {
        let f = FailedAuth::default();
        let (a, b) = (ip("10.0.0.1"), ip("10.0.0.2"));
        let now = Instant::now();
        let penalties: Vec<Penalty> = (0..30).map(|_| f.failed(a, 10, now)).collect();
        assert!(penalties[..5].iter().all(|p| *p == Penalty::None), "{penalties:?}");
        assert!(penalties[5..10].iter().all(|p| *p == Penalty::Slowed), "{penalties:?}");
        assert!(penalties[10..].iter().all(|p| matches!(p, Penalty::Refused(e) if e.code == ErrorCode::RateLimited)));
        // Another address is not affected.
        assert_eq!(f.failed(b, 10, now), Penalty::None);
        // The level drains at the rate from its cap (twice the rate): a minute later a failing
        // attempt is still refused; once drained, failures are free again.
        assert!(matches!(f.failed(a, 10, now + Duration::from_secs(60)), Penalty::Refused(_)));
        assert_eq!(f.failed(a, 10, now + Duration::from_secs(240)), Penalty::None);
        // 0 is no limit.
        assert!((0..100).all(|_| f.failed(a, 0, now) == Penalty::None));
    }

    #[tokio::test(start_paused = true)]
    async fn the_table_is_bounded() {
        let f = FailedAuth::default();
        let now = Instant::now();
        for i in 0..(TABLE_MAX as u32 + 10) {
            f.failed(IpAddr::from(i.to_be_bytes()), 30, now);
        }
        assert_eq!(f.len(), TABLE_MAX);
    }

    #[tokio::test(start_paused = true)]
    async fn a_refusal_waits_before_it_is_answered() {
        let f = FailedAuth::default();
        let a = ip("10.0.0.1");
        let refusal = ErrorBody::new(ErrorCode::AuthFailed, "token is not valid");
        let start = Instant::now();
        assert_eq!(f.refuse(a, 2, refusal.clone()).await.code, ErrorCode::AuthFailed);
        assert_eq!(start.elapsed(), Duration::ZERO);
        assert_eq!(f.refuse(a, 2, refusal.clone()).await.code, ErrorCode::AuthFailed);
        assert_eq!(start.elapsed(), PENALTY);
        assert_eq!(f.refuse(a, 2, refusal).await.code, ErrorCode::RateLimited);
    }
}

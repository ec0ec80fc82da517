//! A session's message rate (issue 15): every frame a client sends after its hello takes a token
//! from the session's own bucket (`limits.agent_messages_per_second` or
//! `limits.operator_messages_per_second` by its role, in bursts of as many; 0: unlimited). A
//! frame read without a token waits for one before it is acted on, and the read loop reads
//! nothing more meanwhile: TCP slows the client, nothing is dropped or refused. The session loop
//! owns its [`Pace`]: no lock, and no clock read while the rate is unlimited (one per frame while
//! it is limited).

use std::time::Duration;

use orb_proto::message::Role;
use tokio::time::Instant;

use crate::config::Limits;
use crate::router::admission::Bucket;

/// The message rate of one session.
#[derive(Debug)]
pub(super) struct Pace {
    /// Frames a second; 0: unlimited.
    per_second: u32,
    bucket: Bucket,
    /// The session has been slowed at least once (logged once per session).
    slowed: bool,
}

impl Pace {
    /// The pace of a session with `role` under `limits`.
    pub(super) fn new(role: Role, limits: &Limits) -> Pace {
        let per_second = Pace::rate(role, limits);
        Pace { per_second, bucket: Bucket::full(f64::from(per_second), Instant::now()), slowed: false }
    }

    fn rate(role: Role, limits: &Limits) -> u32 {
        match role {
            Role::Agent => limits.agent_messages_per_second,
            Role::Operator => limits.operator_messages_per_second,
        }
    }

    /// Applies reloaded `limits`: a changed rate starts over with a full bucket.
    pub(super) fn reload(&mut self, role: Role, limits: &Limits) {
        if Pace::rate(role, limits) != self.per_second {
            *self = Pace { slowed: self.slowed, ..Pace::new(role, limits) };
        }
    }

    /// Takes the token of a frame just read; `Err` is how long until there is one.
    pub(super) fn take(&mut self) -> Result<(), Duration> {
        if self.per_second == 0 {
            return Ok(());
        }
        self.bucket.take(f64::from(self.per_second), Instant::now())
    }

    /// A frame waits for its token: whether it is the session's first (to be logged).
    pub(super) fn slowed(&mut self) -> bool {
        !std::mem::replace(&mut self.slowed, true)
    }

    /// Frames a second (0: unlimited).
    pub(super) fn per_second(&self) -> u32 {
        self.per_second
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn limits(agent: u32, operator: u32) -> Limits {
        Limits { agent_messages_per_second: agent, operator_messages_per_second: operator, ..Limits::default() }
    }

    /// Takes as many tokens as there are now.
    fn burst(p: &mut Pace) -> u32 {
        let mut n = 0;
        while p.take().is_ok() && n < 1_000_000 {
            n += 1;
        }
        n
    }

    #[tokio::test(start_paused = true)]
    async fn an_agent_gets_a_second_s_worth_then_one_frame_per_token() {
        let mut p = Pace::new(Role::Agent, &limits(10, 0));
        assert_eq!(burst(&mut p), 10);
        let wait = p.take().unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        assert!(p.slowed(), "the first time is logged");
        assert!(!p.slowed(), "once");
        tokio::time::advance(wait).await;
        assert_eq!(p.take(), Ok(()));
        assert!(p.take().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn operators_are_unlimited_by_default_and_reloads_apply() {
        let mut p = Pace::new(Role::Operator, &Limits::default());
        assert_eq!(p.per_second(), 0);
        assert_eq!(burst(&mut p), 1_000_000);
        p.reload(Role::Operator, &limits(1000, 5));
        assert_eq!(burst(&mut p), 5);
        p.reload(Role::Operator, &limits(1000, 5));
        assert_eq!(burst(&mut p), 0, "an unchanged rate keeps its bucket");
        p.reload(Role::Operator, &limits(1000, 0));
        assert_eq!(burst(&mut p), 1_000_000);
        assert_eq!(Pace::new(Role::Agent, &Limits::default()).per_second(), 1000);
    }
}

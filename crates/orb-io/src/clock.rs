//! The wall clock, injectable: [`Clock::system`] reads the system time; [`Clock::from_fn`] reads
//! it from anywhere (a test's hand-moved time), so schedulers are tested across hours and days
//! without waiting for them.

use std::sync::Arc;

use chrono::{DateTime, Utc};

/// Where the current UTC time comes from.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>);

impl Clock {
    /// The system's clock.
    pub fn system() -> Clock {
        Clock(Arc::new(Utc::now))
    }

    /// A clock that reads `now` (a test moves it by hand).
    pub fn from_fn(now: impl Fn() -> DateTime<Utc> + Send + Sync + 'static) -> Clock {
        Clock(Arc::new(now))
    }

    /// The current time.
    pub fn now(&self) -> DateTime<Utc> {
        (self.0)()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

impl Default for Clock {
    fn default() -> Clock {
        Clock::system()
    }
}

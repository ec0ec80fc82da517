//! orb schedules, as pure functions: no I/O, no clock, no runtime. The CLI parses
//! `orb send --at/--in/--every/--cron [--tz]` and `orb schedule preview` with it; the server's
//! scheduler stores the resulting [`Spec`] and asks [`due`] what to do at each wake-up.
//!
//! - stored forms: [`Spec`] (when a schedule fires) and [`MissedPolicy`].
//! - parsing: [`parse_at`], [`parse_in`], [`parse_every`], [`parse_cron`], [`parse_zone`],
//!   [`parse_time`], with a typed [`ScheduleError`] whose message names the value or cron field
//!   at fault.
//! - firing times: [`next_after`] (DST rules documented there) and [`preview`].
//! - downtime: [`due`], with the per-schedule [`MissedPolicy`].
//!
//! Cron expressions are evaluated by croner, in IANA zones from chrono-tz.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod cron;
mod due;
mod error;
mod next;
mod parse;
mod spec;

pub use cron::MAX_CRON_LEN;
pub use due::{Due, MISSED_CAP, due};
pub use error::ScheduleError;
pub use next::{MAX_PREVIEW, next_after, preview};
pub use parse::{parse_at, parse_cron, parse_every, parse_in, parse_time, parse_zone};
pub use spec::{MAX_EVERY, MIN_EVERY, MissedPolicy, Spec};

/// An IANA time zone, as [`parse_zone`] returns it.
pub use chrono_tz::Tz;

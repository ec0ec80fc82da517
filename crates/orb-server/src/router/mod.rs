//! Routing, split by concern: [`sessions`] (who is connected), [`delivery`] (how a frame reaches
//! a session), [`correlation`] (what a reply answers), [`admission`] (who may connect and
//! enroll), [`stats`] (counters), `topics` (pub/sub subscriptions) and `retained` (the last
//! publication kept per topic). These parts know nothing of jobs, sessions' protocol or the
//! broker above them; the broker (`crate::broker`) puts them together.

pub mod admission;
pub mod correlation;
pub mod delivery;
pub(crate) mod failed_auth;
pub(crate) mod retained;
pub mod sessions;
pub mod stats;
pub(crate) mod topics;

//! Routing, split by concern: [`sessions`] (who is connected), [`delivery`] (how a frame reaches
//! a session), [`correlation`] (what a reply answers), [`admission`] (who may connect and
//! enroll) and [`stats`] (counters). These parts know nothing of jobs, sessions' protocol or the
//! broker above them; the broker (`crate::broker`) puts them together.

pub mod admission;
pub mod correlation;
pub mod delivery;
pub mod sessions;
pub mod stats;
pub(crate) mod topics;

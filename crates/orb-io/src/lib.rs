//! orb's shared I/O, used by the server and the client library alike, so both speak one framing
//! and one writer:
//!
//! - [`transport`]: a [`transport::FrameSource`] yields whole frame payloads, a
//!   [`transport::FrameSink`] writes batches of encoded frames; TCP (u32 length prefix) here,
//!   WebSocket in [`ws`]; [`transport::write_loop`] drains a connection's queue into its sink.
//! - [`queue`]: the bounded outbound queue of one connection (frames from any task to its writer).
//! - [`signal`]: a light one-shot stop flag.
//! - [`secret`]: a credential that never shows itself in logs or printed configuration.
//! - [`sniff`]: HTTP recognised where orb frames were expected (a client on the wrong port), and
//!   the plain HTTP answer the TCP port gives an HTTP client.
//! - [`clock`]: the wall clock, injectable, so schedulers can be tested with paused time.
//! - [`handler`]: command handlers by name and [`handler::run`], which runs one with its deadline
//!   and survives its panic.
//! - [`progress`]: a running command's best-effort, rate-limited reports to its requester.
//! - [`schema`]: JSON Schemas for command arguments, compiled once, checked before a handler.
//! - `tls` (feature `tls`): rustls configurations from PEM files, the device identity of a client
//!   certificate; with `dev-certs`, a development CA.
//!
//! No protocol logic lives here beyond framing: envelopes and codecs are `orb-proto`'s.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod clock;
pub mod handler;
pub mod progress;
pub mod queue;
pub mod schema;
pub mod secret;
pub mod signal;
pub mod sniff;
#[cfg(feature = "tls")]
pub mod tls;
pub mod transport;
pub mod ws;

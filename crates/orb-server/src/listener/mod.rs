//! Accept loops. [`tcp`] takes length-prefixed TCP connections; [`ws`] adapts WebSocket messages
//! (served by the HTTP listener at `/v1/ws`) to the same frame interface, so a session never
//! knows which transport it runs on.

pub mod tcp;
pub mod ws;

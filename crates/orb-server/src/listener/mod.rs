//! Accept loops. [`tcp`] takes length-prefixed TCP connections; WebSocket connections arrive
//! through the HTTP listener (`crate::http`) at `/v1/ws` and are adapted to the same frame
//! interface by `orb_io::ws::server`, so a session never knows which transport it runs on.

pub mod tcp;

//! WebSocket adapters to the frame interface of [`crate::transport`]: one WebSocket message per
//! frame, no length prefix. [`client`] (feature `ws-client`) wraps tokio-tungstenite for agents
//! and operator tools; [`server`] (feature `ws-server`) wraps an upgraded axum socket for the
//! broker's HTTP listener.

#[cfg(feature = "ws-client")]
pub mod client;
#[cfg(feature = "ws-server")]
pub mod server;

//! The server side of WebSocket: an upgraded axum socket as a frame source and sink, one binary
//! (or text) message per frame. Ping/pong control messages are handled by the library.

use std::io;

use crate::transport::{CloseCode, FrameSink, FrameSource, TransportError};
use axum::extract::ws::{Message, WebSocket};
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};

/// Splits an upgraded WebSocket into a frame source and sink.
pub fn split(socket: WebSocket, max_frame: usize) -> (WsSource, WsSink) {
    let (sink, stream) = socket.split();
    (WsSource { inner: stream, max_frame }, WsSink { inner: sink })
}

/// Read half of a server WebSocket.
pub struct WsSource {
    inner: SplitStream<WebSocket>,
    max_frame: usize,
}

impl FrameSource for WsSource {
    async fn next_frame(&mut self) -> Result<Option<Bytes>, TransportError> {
        loop {
            let msg = match self.inner.next().await {
                None => return Ok(None),
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    // tungstenite reports an oversized message as a capacity error.
                    let text = e.to_string();
                    if text.contains("Space limit exceeded") || text.contains("too long") {
                        return Err(TransportError::FrameTooLarge { max: self.max_frame });
                    }
                    return Err(TransportError::Io(io::Error::other(text)));
                }
            };
            match msg {
                Message::Binary(b) => return Ok(Some(b)),
                Message::Text(t) => return Ok(Some(Bytes::from(t))),
                Message::Close(_) => return Ok(None),
                Message::Ping(_) | Message::Pong(_) => {}
            }
        }
    }
}

/// Write half of a server WebSocket.
pub struct WsSink {
    inner: SplitSink<WebSocket, Message>,
}

impl FrameSink for WsSink {
    async fn send_batch(&mut self, batch: &[Bytes]) -> io::Result<()> {
        for frame in batch {
            self.inner.feed(Message::Binary(frame.clone())).await.map_err(io::Error::other)?;
        }
        self.inner.flush().await.map_err(io::Error::other)
    }

    async fn close(&mut self, code: CloseCode) {
        let frame = axum::extract::ws::CloseFrame { code: code.websocket(), reason: "".into() };
        let _ = self.inner.send(Message::Close(Some(frame))).await;
        let _ = self.inner.close().await;
    }
}

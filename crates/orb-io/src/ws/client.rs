//! The client side of WebSocket (tokio-tungstenite): one binary message per frame.

use std::io;

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::sniff::WrongProtocol;
use crate::transport::{CloseCode, FrameSink, FrameSource, TransportError};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connects to `url` and splits the socket into a frame source and sink.
pub async fn connect(url: &str, max_frame: usize) -> Result<(WsSource, WsSink), TransportError> {
    let config = WebSocketConfig::default().max_message_size(Some(max_frame)).max_frame_size(Some(max_frame));
    let (ws, _resp) =
        tokio_tungstenite::connect_async_with_config(url, Some(config), true).await.map_err(|e| match e {
            // Answered, but not with a WebSocket: say what the server said (an orb TCP port says
            // which port to use instead).
            tokio_tungstenite::tungstenite::Error::Http(resp) => TransportError::Http(WrongProtocol::Refused {
                status: resp.status().as_u16(),
                body: resp.body().as_deref().map(crate::sniff::body_text).unwrap_or_default(),
            }),
            e => TransportError::Io(io::Error::new(io::ErrorKind::ConnectionRefused, e.to_string())),
        })?;
    let (sink, stream) = ws.split();
    Ok((WsSource { inner: stream, max_frame }, WsSink { inner: sink }))
}

/// Read half of a client WebSocket.
pub struct WsSource {
    inner: SplitStream<Ws>,
    max_frame: usize,
}

impl FrameSource for WsSource {
    async fn next_frame(&mut self) -> Result<Option<Bytes>, TransportError> {
        loop {
            match self.inner.next().await {
                None => return Ok(None),
                Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(_))) => {
                    return Err(TransportError::FrameTooLarge { max: self.max_frame });
                }
                Some(Err(e)) => return Err(TransportError::Io(io::Error::other(e.to_string()))),
                Some(Ok(Message::Binary(b))) => return Ok(Some(b)),
                Some(Ok(Message::Text(t))) => return Ok(Some(Bytes::from(t))),
                Some(Ok(Message::Close(_))) => return Ok(None),
                Some(Ok(_)) => {}
            }
        }
    }
}

/// Write half of a client WebSocket.
pub struct WsSink {
    inner: SplitSink<Ws, Message>,
}

impl FrameSink for WsSink {
    async fn send_batch(&mut self, batch: &[Bytes]) -> io::Result<()> {
        for f in batch {
            self.inner.feed(Message::Binary(f.clone())).await.map_err(io::Error::other)?;
        }
        self.inner.flush().await.map_err(io::Error::other)
    }

    async fn close(&mut self, code: CloseCode) {
        use tokio_tungstenite::tungstenite::protocol::CloseFrame;
        let frame = CloseFrame { code: code.websocket().into(), reason: "".into() };
        let _ = self.inner.send(Message::Close(Some(frame))).await;
        let _ = self.inner.close().await;
    }
}

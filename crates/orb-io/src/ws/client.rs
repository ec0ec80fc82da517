//! The client side of WebSocket (tokio-tungstenite): one binary message per frame, over any
//! connected byte stream (plain TCP for `ws://`, a TLS stream for `wss://`): the caller connects
//! (trying every address of the host) and secures the stream, this module does the upgrade.

use std::io;

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::sniff::WrongProtocol;
use crate::transport::{CloseCode, FrameSink, FrameSource, TransportError};

/// A byte stream a WebSocket can run over.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for S {}

/// Upgrades `stream`, already connected to `url`'s host, to a WebSocket at `url` and splits it
/// into a frame source and sink.
pub async fn connect<S: Stream>(
    stream: S,
    url: &str,
    max_frame: usize,
) -> Result<(WsSource<S>, WsSink<S>), TransportError> {
    let config = WebSocketConfig::default().max_message_size(Some(max_frame)).max_frame_size(Some(max_frame));
    let (ws, _resp) =
        tokio_tungstenite::client_async_with_config(url, stream, Some(config)).await.map_err(|e| match e {
            // Answered, but not with a WebSocket: say what the server said (an orb TCP port says
            // which port to use instead).
            tokio_tungstenite::tungstenite::Error::Http(resp) => TransportError::Http(WrongProtocol::Refused {
                status: resp.status().as_u16(),
                body: resp.body().as_deref().map(crate::sniff::body_text).unwrap_or_default(),
            }),
            // Kept as it is: a TLS alert inside says why the server refused us.
            tokio_tungstenite::tungstenite::Error::Io(e) => TransportError::Io(e),
            e => TransportError::Io(io::Error::new(io::ErrorKind::ConnectionRefused, e.to_string())),
        })?;
    let (sink, stream) = ws.split();
    Ok((WsSource { inner: stream, max_frame }, WsSink { inner: sink }))
}

/// Read half of a client WebSocket.
pub struct WsSource<S> {
    inner: SplitStream<WebSocketStream<S>>,
    max_frame: usize,
}

impl<S: Stream> FrameSource for WsSource<S> {
    async fn next_frame(&mut self) -> Result<Option<Bytes>, TransportError> {
        loop {
            match self.inner.next().await {
                None => return Ok(None),
                Some(Err(tokio_tungstenite::tungstenite::Error::Capacity(_))) => {
                    return Err(TransportError::FrameTooLarge { max: self.max_frame });
                }
                Some(Err(tokio_tungstenite::tungstenite::Error::Io(e))) => return Err(TransportError::Io(e)),
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
pub struct WsSink<S> {
    inner: SplitSink<WebSocketStream<S>, Message>,
}

impl<S: Stream> FrameSink for WsSink<S> {
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

//! Frame transports shared by the client and the server: a [`FrameSource`] yields whole frame
//! payloads, a [`FrameSink`] writes batches of already-encoded frames. TCP (u32 length prefix)
//! lives here; WebSocket adapters live beside their WebSocket library (client: `ws.rs`, server:
//! `listener/ws.rs`). [`write_loop`] drains a bounded queue into a sink, several frames per syscall.

use std::future::Future;
use std::io;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec, length_delimited::LengthDelimitedCodecError};
use tokio_util::sync::CancellationToken;

/// Why reading the next frame failed.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The peer announced a frame larger than the limit; nothing was allocated for it.
    #[error("frame larger than {max} bytes")]
    FrameTooLarge {
        /// The limit in force.
        max: usize,
    },
    /// The connection failed.
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
    /// The peer sent something that is not a frame (for WebSocket: a non-data message we refuse).
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// Reads whole frame payloads.
pub trait FrameSource: Send + 'static {
    /// The next frame, or `None` when the peer closed cleanly.
    ///
    /// # Cancel safety
    /// Cancel-safe: partial input stays buffered for the next call.
    fn next_frame(&mut self) -> impl Future<Output = Result<Option<Bytes>, TransportError>> + Send;
}

/// Writes batches of encoded frame payloads (without length prefixes).
pub trait FrameSink: Send + 'static {
    /// Writes every frame of `batch` in order, then flushes.
    ///
    /// # Cancel safety
    /// Not cancel-safe: a cancelled write may leave a partial frame; close the connection after.
    fn send_batch(&mut self, batch: &[Bytes]) -> impl Future<Output = io::Result<()>> + Send;
    /// Closes the write side.
    fn close(&mut self) -> impl Future<Output = ()> + Send;
}

/// Splits a TCP stream into a length-prefixed frame source and sink, with `TCP_NODELAY` set
/// (we batch writes ourselves, so Nagle's algorithm would only add latency).
pub fn tcp(stream: TcpStream, max_frame: usize) -> io::Result<(TcpSource, TcpSink)> {
    stream.set_nodelay(true)?;
    let (r, w) = stream.into_split();
    let codec =
        LengthDelimitedCodec::builder().big_endian().length_field_length(4).max_frame_length(max_frame).new_codec();
    Ok((
        TcpSource { inner: FramedRead::with_capacity(r, codec, 1024), max_frame },
        TcpSink { inner: w, buf: BytesMut::new() },
    ))
}

/// Read half of a TCP connection, yielding frame payloads.
pub struct TcpSource {
    inner: FramedRead<OwnedReadHalf, LengthDelimitedCodec>,
    max_frame: usize,
}

impl FrameSource for TcpSource {
    async fn next_frame(&mut self) -> Result<Option<Bytes>, TransportError> {
        match self.inner.next().await {
            None => Ok(None),
            Some(Ok(frame)) => Ok(Some(frame.freeze())),
            Some(Err(e)) => {
                if e.get_ref().is_some_and(|inner| inner.is::<LengthDelimitedCodecError>()) {
                    Err(TransportError::FrameTooLarge { max: self.max_frame })
                } else {
                    Err(TransportError::Io(e))
                }
            }
        }
    }
}

/// Write half of a TCP connection. Its buffer grows only while a large batch is written and is
/// released afterwards, so idle connections stay small.
pub struct TcpSink {
    inner: OwnedWriteHalf,
    buf: BytesMut,
}

/// Batches larger than this are written in several syscalls; the buffer is freed above it.
const WRITE_BUF_KEEP: usize = 64 * 1024;

impl FrameSink for TcpSink {
    async fn send_batch(&mut self, batch: &[Bytes]) -> io::Result<()> {
        for frame in batch {
            let len = u32::try_from(frame.len())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame exceeds u32"))?;
            self.buf.reserve(4 + frame.len());
            self.buf.put_u32(len);
            self.buf.extend_from_slice(frame);
            if self.buf.len() >= WRITE_BUF_KEEP {
                self.inner.write_all(&self.buf).await?;
                self.buf.clear();
            }
        }
        if !self.buf.is_empty() {
            self.inner.write_all(&self.buf).await?;
            self.buf.clear();
        }
        if self.buf.capacity() > WRITE_BUF_KEEP {
            self.buf = BytesMut::new();
        }
        Ok(())
    }

    async fn close(&mut self) {
        let _ = self.inner.shutdown().await;
    }
}

/// Most frames taken from the queue for one write.
const MAX_BATCH: usize = 128;

/// Drains `rx` into `sink` until `stop` is cancelled or every sender is gone, writing all frames
/// that are ready in one batch (one syscall for TCP) and flushing as soon as the queue is empty.
///
/// After `stop`, frames already queued are written too (bounded by the queue's capacity), then
/// `last` (a goodbye frame) if one is given, all within `linger`; then the sink is closed.
/// A batch being written when `stop` comes is finished within `linger` rather than abandoned,
/// because an abandoned write leaves a partial frame on the wire and anything written after it
/// would be garbage to the peer; if it cannot finish in time, nothing more is written.
/// Returns the write error that ended the loop, if any.
pub async fn write_loop<S: FrameSink>(
    mut sink: S,
    mut rx: mpsc::Receiver<Bytes>,
    stop: CancellationToken,
    last: tokio::sync::oneshot::Receiver<Bytes>,
    linger: std::time::Duration,
) -> Option<io::Error> {
    let mut batch: Vec<Bytes> = Vec::new();
    let mut failure = None;
    // When the goodbye must be written by; set when `stop` interrupts a write.
    let mut linger_until = None;
    // Created once: a fresh `cancelled()` per frame would register a waiter each time.
    let stopped = stop.cancelled();
    tokio::pin!(stopped);
    loop {
        let first = tokio::select! {
            biased;
            () = &mut stopped => break,
            f = rx.recv() => match f { Some(f) => f, None => break },
        };
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(f) => batch.push(f),
                Err(_) => break,
            }
        }
        let res = {
            let write = sink.send_batch(&batch);
            tokio::pin!(write);
            tokio::select! {
                biased;
                r = &mut write => r,
                () = &mut stopped => {
                    let until = tokio::time::Instant::now() + linger;
                    linger_until = Some(until);
                    tokio::time::timeout_at(until, write).await.unwrap_or_else(|_| {
                        Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "the peer did not take a pending write within the linger time",
                        ))
                    })
                }
            }
        };
        batch.clear();
        if batch.capacity() > MAX_BATCH {
            batch = Vec::new();
        }
        if let Err(e) = res {
            failure = Some(e);
            break;
        }
        if linger_until.is_some() {
            break;
        }
    }
    if failure.is_none() {
        // Goodbye: what was already queued, then the last frame, within `linger`.
        let until = linger_until.unwrap_or_else(|| tokio::time::Instant::now() + linger);
        let _ = tokio::time::timeout_at(until, async {
            while let Ok(f) = rx.try_recv() {
                batch.push(f);
            }
            if let Ok(f) = last.await {
                batch.push(f);
            }
            if !batch.is_empty() {
                let _ = sink.send_batch(&batch).await;
            }
        })
        .await;
    }
    sink.close().await;
    failure
}

/// Logs one frame at TRACE (`--trace`): direction, kind, command, id and correlation. The
/// caller's span supplies the peer. Decodes the frame, with the connection's `codec`, only when
/// TRACE is enabled.
pub fn trace_frame(dir: &'static str, frame: &Bytes, codec: orb_proto::Codec) {
    if !tracing::enabled!(tracing::Level::TRACE) {
        return;
    }
    match codec.decode(frame) {
        Ok(env) => tracing::trace!(
            dir,
            kind = env.kind.as_str(),
            cmd = env.cmd.as_deref(),
            id = env.id.as_deref(),
            re = env.re.as_deref(),
            len = frame.len(),
            codec = codec.as_str(),
            "frame"
        ),
        Err(_) => tracing::trace!(dir, len = frame.len(), "undecodable frame"),
    }
}
